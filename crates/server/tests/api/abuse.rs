//! Abuse resistance: rate limits per address, the active-key cap, response headers,
//! slow and oversized requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{on_both_backends, spawn_app_with, TestApp};

async fn app(settings: &[(&str, &str)]) -> TestApp {
    spawn_app_with(Backend::Sqlite, settings).await.expect("sqlite")
}

async fn signup_from(app: &TestApp, n: usize, forwarded_for: Option<&str>) -> crate::helpers::Reply {
    let mut request = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"name": "Acme", "email": format!("limit{n}-{}@acme.test", forwarded_for.unwrap_or("none"))}));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    crate::helpers::Reply::read(request.send().await.expect("sent")).await
}

#[tokio::test]
async fn the_eleventh_signup_from_one_address_in_an_hour_gets_429() {
    let app = app(&[("RATE_LIMIT_SIGNUPS_PER_HOUR", "10")]).await;
    for n in 0..10 {
        assert_eq!(signup_from(&app, n, None).await.status, StatusCode::CREATED);
    }
    let refused = signup_from(&app, 10, None).await;
    refused.assert_error(429, "rate_limited");
    let retry_after: u64 = refused.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_address_is_the_client() {
    let app = app(&[("RATE_LIMIT_SIGNUPS_PER_HOUR", "2"), ("TRUSTED_PROXIES", "127.0.0.1")]).await;
    for n in 0..2 {
        assert_eq!(signup_from(&app, n, Some("203.0.113.7")).await.status, StatusCode::CREATED);
    }
    signup_from(&app, 2, Some("203.0.113.7")).await.assert_error(429, "rate_limited");
    assert_eq!(signup_from(&app, 3, Some("203.0.113.8")).await.status, StatusCode::CREATED, "another client");
}

#[tokio::test]
async fn an_untrusted_forwarded_address_is_ignored() {
    let app = app(&[("RATE_LIMIT_SIGNUPS_PER_HOUR", "2")]).await;
    assert_eq!(signup_from(&app, 0, Some("203.0.113.1")).await.status, StatusCode::CREATED);
    assert_eq!(signup_from(&app, 1, Some("203.0.113.2")).await.status, StatusCode::CREATED);
    // Same socket peer, whatever the header claims.
    signup_from(&app, 2, Some("203.0.113.3")).await.assert_error(429, "rate_limited");
}

#[tokio::test]
async fn failed_authentications_are_limited_but_a_correct_key_is_never_slowed() {
    let app = app(&[("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "3")]).await;
    let org = app.signup_org("auth-limit@acme.test").await;
    let guess = crate::helpers::unknown_key();
    for _ in 0..3 {
        app.get_account(&guess).await.assert_error(401, "invalid_api_key");
    }
    let refused = app.get_account(&guess).await;
    refused.assert_error(429, "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
    // What could never be a key guesses nothing: never counted, never refused for the others.
    for _ in 0..5 {
        app.get_account("mem_live_guess").await.assert_error(401, "invalid_api_key");
    }
    // A request without a key guesses nothing: never counted, never refused for the others.
    for _ in 0..5 {
        app.request(Method::GET, "/v1/account", None, None).await.assert_error(401, "missing_api_key");
    }
    for _ in 0..50 {
        assert_eq!(app.get_account(&org.key).await.status, StatusCode::OK, "a correct key is never limited");
    }
}

on_both_backends!(an_organization_holds_at_most_the_configured_number_of_active_keys);

async fn an_organization_holds_at_most_the_configured_number_of_active_keys(app: TestApp) {
    let org = app.signup_org("cap@acme.test").await;
    for _ in 0..99 {
        app.new_key(&org.key, json!({"name": "Filler"})).await;
    }
    let refused = app.create_key(&org.key, None).await;
    refused.assert_error(409, "key_limit_reached");
    assert_eq!(app.key_count(&org.key).await, 100, "the refused key was not created");
    let victim = app.list_keys(&org.key).await.data()[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(app.revoke_key(&org.key, &victim).await.status, StatusCode::OK);
    assert_eq!(app.create_key(&org.key, None).await.status, StatusCode::CREATED, "a revoked key frees its place");
}

#[tokio::test]
async fn the_key_cap_is_configurable() {
    let app = app(&[("MAX_ACTIVE_KEYS_PER_ORG", "2")]).await;
    let org = app.signup_org("cap2@acme.test").await;
    app.new_key(&org.key, json!({})).await;
    app.create_key(&org.key, None).await.assert_error(409, "key_limit_reached");
}

#[tokio::test]
async fn every_response_forbids_caching_and_sniffing() {
    let app = app(&[("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "1")]).await;
    let org = app.signup_org("headers@acme.test").await;
    let big = vec![b'a'; 70 * 1024];
    let replies = vec![
        app.request(Method::GET, "/healthz", None, None).await,
        app.get_account(&org.key).await,
        app.list_keys(&org.key).await,
        app.create_key(&org.key, None).await,
        app.signup(json!({"name": ""})).await,
        app.request(Method::GET, "/nope", None, None).await,
        app.request(Method::PUT, "/v1/account", None, None).await,
        app.send_raw(Method::POST, "/v1/signup", None, "application/json", big).await,
        app.send_raw(Method::POST, "/v1/signup", None, "text/plain", b"x".to_vec()).await,
        app.get_account(&crate::helpers::unknown_key()).await,
        app.get_account(&crate::helpers::unknown_key()).await,
    ];
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 201, 400, 404, 405, 413, 415, 401, 429]);
    for reply in replies {
        assert_eq!(reply.headers["cache-control"], "no-store", "{}", reply.status);
        assert_eq!(reply.headers["x-content-type-options"], "nosniff", "{}", reply.status);
    }
}

#[tokio::test]
async fn a_body_that_never_finishes_arriving_is_cut_off_with_408() {
    let app = app(&[]).await;
    let port: u16 = app.address.rsplit(':').next().expect("port").parse().expect("port");
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        stream
            .write_all(b"POST /v1/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"name\"")
            .expect("sent");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    })
    .await
    .expect("joined");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains(r#""code":"request_timeout""#), "{response}");
}

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let app = app(&[]).await;
    let response = app.client.get(app.url("/healthz")).header("x-padding", "a".repeat(128 * 1024)).send().await;
    match response {
        Ok(r) => assert!(r.status().is_client_error(), "{}", r.status()),
        // The server may also close the connection on a head this large.
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    assert_eq!(app.request(Method::GET, "/healthz", None, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn leak_reports_are_limited_per_address() {
    let app = app(&[("RATE_LIMIT_LEAK_REPORTS_PER_HOUR", "2")]).await;
    let report =
        || app.request(Method::POST, "/v1/api-keys/revoke-leaked", None, Some(json!({"keys": ["mem_live_x"]})));
    assert_eq!(report().await.status, StatusCode::OK);
    assert_eq!(report().await.status, StatusCode::OK);
    report().await.assert_error(429, "rate_limited");
}

#[tokio::test]
async fn a_trusted_proxy_on_a_dual_stack_bind_forwards_each_clients_address() {
    // Bound to [::], the server sees the proxy at 127.0.0.1 as ::ffff:127.0.0.1.
    let app =
        app(&[("BIND_ADDR", "[::]:0"), ("TRUSTED_PROXIES", "127.0.0.1"), ("RATE_LIMIT_SIGNUPS_PER_HOUR", "2")]).await;
    let mut first = None;
    for (n, client) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"].into_iter().enumerate() {
        let reply = signup_from(&app, n, Some(client)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{client}: {}", reply.body);
        first.get_or_insert_with(|| reply.data()["api_key"]["key"].as_str().expect("key").to_owned());
    }
    assert_eq!(signup_from(&app, 3, Some("203.0.113.1")).await.status, StatusCode::CREATED, "a second time");
    signup_from(&app, 4, Some("203.0.113.1")).await.assert_error(429, "rate_limited");
    // The audit trail records the client as the limits count it.
    let key = first.expect("a key");
    let log = app.request(Method::GET, "/v1/account/audit-log", Some(&key), None).await;
    assert_eq!(log.data()["events"][0]["client_ip"], "203.0.113.1", "{}", log.body);
    // And the proxy itself, when it forwards nothing, as its IPv4 address.
    let direct = signup_from(&app, 5, None).await;
    assert_eq!(direct.status, StatusCode::CREATED, "{}", direct.body);
    let key = direct.data()["api_key"]["key"].as_str().expect("key").to_owned();
    let log = app.request(Method::GET, "/v1/account/audit-log", Some(&key), None).await;
    assert_eq!(log.data()["events"][0]["client_ip"], "127.0.0.1", "{}", log.body);
}

#[tokio::test]
async fn writes_beyond_the_organizations_limit_get_429_but_revocation_always_works() {
    let app = app(&[("RATE_LIMIT_WRITES_PER_MINUTE", "3")]).await;
    let org = app.signup_org("writes@acme.test").await;
    let other = app.signup_org("writes-other@acme.test").await;

    // 1: a creation.
    let created = app.create_key(&org.key, Some(json!({"name": "Spare"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let spare = created.data()["id"].as_str().expect("id").to_owned();
    // Revocations are not counted.
    for _ in 0..5 {
        assert_eq!(app.revoke_key(&org.key, &spare).await.status, StatusCode::OK);
    }
    // 2: a failed write counts as well.
    rename(&app, &org.key, "key_0000").await.assert_error(404, "key_not_found");
    // 3: a roll.
    let rolled =
        app.request(Method::POST, &format!("/v1/account/api-keys/{}/roll", org.key_id), Some(&org.key), None).await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.body);
    let rolled_id = rolled.data()["id"].as_str().expect("id").to_owned();

    let refused = app.create_key(&org.key, None).await;
    refused.assert_error(429, "rate_limited");
    let retry_after: u64 = refused.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(refused.body["error"]["message"].as_str().is_some_and(|m| m.contains("organization")), "{}", refused.body);
    rename(&app, &org.key, &org.key_id).await.assert_error(429, "rate_limited");
    assert_eq!(app.key_count(&org.key).await, 3, "nothing was created past the limit");

    let elsewhere = app.create_key(&other.key, None).await;
    assert_eq!(elsewhere.status, StatusCode::CREATED, "another organization has its own limit: {}", elsewhere.body);
    // Over its limit, the organization can still revoke.
    let revoked = app.revoke_key(&org.key, &rolled_id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.data()["is_active"], false);
}

async fn rename(app: &TestApp, key: &str, key_id: &str) -> crate::helpers::Reply {
    app.request(Method::PATCH, &format!("/v1/account/api-keys/{key_id}"), Some(key), Some(json!({"name": "X"}))).await
}
