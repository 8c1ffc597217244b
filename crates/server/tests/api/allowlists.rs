//! Keys limited to addresses (`allowed_ips`): refused elsewhere, IPv4 and IPv6, behind a
//! trusted proxy too (an unreadable forwarded hop is no address); probed from elsewhere,
//! counted as failed authentications; never widened by a limited caller; a change seen by
//! every instance; and a deactivated organization that can still read its account.

use std::time::{Duration, Instant};

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{on_both_backends, spawn_app_on, spawn_app_with, Reply, TestApp};

on_both_backends!(
    a_key_limited_to_addresses_works_only_from_them,
    a_limited_key_never_gives_a_key_more_addresses_than_its_own,
    an_allowlist_changed_on_one_instance_holds_on_another_within_a_second,
    a_deactivated_organization_reads_its_account_and_is_refused_everywhere_else,
);

async fn created(app: &TestApp, key: &str, body: Value) -> (String, String) {
    let reply = app.create_key(key, Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    (reply.data()["key"].as_str().expect("key").to_owned(), reply.data()["id"].as_str().expect("id").to_owned())
}

async fn patch(app: &TestApp, key: &str, key_id: &str, body: Value) -> Reply {
    app.request(Method::PATCH, &format!("/v1/account/api-keys/{key_id}"), Some(key), Some(body)).await
}

async fn a_key_limited_to_addresses_works_only_from_them(app: TestApp) {
    let org = app.signup_org("allowlist@acme.test").await;
    let (here, here_id) = created(&app, &org.key, json!({"allowed_ips": ["127.0.0.1"]})).await;
    let (elsewhere, _) = created(&app, &org.key, json!({"allowed_ips": ["10.0.0.0/8", "2001:db8::/32"]})).await;
    assert_eq!(app.get_account(&here).await.status, StatusCode::OK);
    app.get_account(&elsewhere).await.assert_error(403, "ip_not_allowed");
    let listed = app.list_keys(&org.key).await;
    let entry = listed.data().as_array().expect("array").iter().find(|k| k["id"] == json!(here_id)).cloned();
    assert_eq!(entry.expect("listed")["allowed_ips"], json!(["127.0.0.1"]));
    assert_eq!(app.create_key(&org.key, None).await.data()["allowed_ips"], Value::Null, "anywhere by default");
    let before = app.key_count(&org.key).await;
    let many: Vec<String> = (0..33).map(|i| format!("10.0.0.{i}")).collect();
    for bad in [json!(["10.1.2.3/8"]), json!(["192.0.2.1", "::ffff:192.0.2.1"]), json!(many), json!(["a-host"])] {
        let reply = app.create_key(&org.key, Some(json!({ "allowed_ips": bad }))).await;
        reply.assert_error(400, "validation_error");
        assert_eq!(reply.body["error"]["field"], json!("allowed_ips"));
    }
    patch(&app, &org.key, &here_id, json!({})).await.assert_error(400, "validation_error");
    assert_eq!(app.key_count(&org.key).await, before, "nothing stored");
}

async fn a_limited_key_never_gives_a_key_more_addresses_than_its_own(app: TestApp) {
    let org = app.signup_org("no-wider@acme.test").await;
    let (limited, limited_id) = created(&app, &org.key, json!({"allowed_ips": ["127.0.0.0/8"]})).await;
    // Omitted: the creator's allowlist; within it: allowed; anywhere or beyond: refused.
    let inherited = app.create_key(&limited, Some(json!({"name": "Inherited"}))).await;
    assert_eq!(inherited.data()["allowed_ips"], json!(["127.0.0.0/8"]));
    let inherited_id = inherited.data()["id"].as_str().expect("id").to_owned();
    assert_eq!(app.create_key(&limited, Some(json!({"allowed_ips": ["127.0.0.1"]}))).await.status, StatusCode::CREATED);
    for wider in [json!(null), json!([]), json!(["10.0.0.1"]), json!(["126.0.0.0/7"])] {
        let reply = app.create_key(&limited, Some(json!({ "allowed_ips": wider }))).await;
        reply.assert_error(403, "address_escalation");
        assert_eq!(reply.body["error"]["field"], json!("allowed_ips"));
        patch(&app, &limited, &inherited_id, json!({ "allowed_ips": wider }))
            .await
            .assert_error(403, "address_escalation");
    }
    let narrowed = patch(&app, &limited, &inherited_id, json!({"allowed_ips": ["127.0.0.2"], "name": "Narrow"})).await;
    assert_eq!(narrowed.data()["allowed_ips"], json!(["127.0.0.2"]));
    assert_eq!(narrowed.data()["name"], json!("Narrow"));
    // A limited key rolls only keys whose allowlist lies within its own; the successor keeps it.
    let roll = |key_id: &str| format!("/v1/account/api-keys/{key_id}/roll");
    app.request(Method::POST, &roll(&org.key_id), Some(&limited), None).await.assert_error(403, "address_escalation");
    let rolled = app.request(Method::POST, &roll(&limited_id), Some(&org.key), None).await;
    assert_eq!(rolled.data()["allowed_ips"], json!(["127.0.0.0/8"]));
    // The trail records the change of allowlist as its own action.
    let trail = app.request(Method::GET, "/v1/account/audit-log", Some(&org.key), None).await;
    let actions: Vec<&str> =
        trail.data()["events"].as_array().expect("events").iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"key.allowlist_changed") && actions.contains(&"key.renamed"), "{actions:?}");
}

async fn an_allowlist_changed_on_one_instance_holds_on_another_within_a_second(app: TestApp) {
    let other = spawn_app_on(app.db.clone()).await;
    let org = app.signup_org("allowlist-everywhere@acme.test").await;
    let (key, key_id) = created(&app, &org.key, json!({"name": "Moving"})).await;
    assert_eq!(other.get_account(&key).await.status, StatusCode::OK, "cached by the other instance");
    assert_eq!(patch(&app, &org.key, &key_id, json!({"allowed_ips": ["10.0.0.0/8"]})).await.status, StatusCode::OK);
    let changed = Instant::now();
    while other.get_account(&key).await.status == StatusCode::OK {
        assert!(changed.elapsed() < Duration::from_secs(1), "the other instance still serves the old allowlist");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    other.get_account(&key).await.assert_error(403, "ip_not_allowed");
    assert_eq!(patch(&app, &org.key, &key_id, json!({"allowed_ips": null})).await.status, StatusCode::OK);
    let changed = Instant::now();
    while other.get_account(&key).await.status != StatusCode::OK {
        assert!(changed.elapsed() < Duration::from_secs(1), "the key is not usable from anywhere again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_deactivated_organization_reads_its_account_and_is_refused_everywhere_else(app: TestApp) {
    let org = app.signup_org("deactivated@acme.test").await;
    assert_eq!(app.get_account(&org.key).await.data()["is_active"], json!(true));
    // The operator's procedure by hand: the change and its row in one go.
    app.execute_sql(&format!(
        "UPDATE organizations SET is_active = false WHERE id = '{id}'; \
         INSERT INTO cache_events (org_id, created_at) VALUES ('{id}', 1);",
        id = org.id
    ));
    let deactivated = Instant::now();
    loop {
        let reply = app.get_account(&org.key).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        if reply.data()["is_active"] == json!(false) {
            break;
        }
        assert!(deactivated.elapsed() < Duration::from_secs(1), "still shown active");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.list_keys(&org.key).await.assert_error(403, "organization_inactive");
    app.create_key(&org.key, None).await.assert_error(403, "organization_inactive");
    app.request(Method::GET, "/v1/account/audit-log", Some(&org.key), None)
        .await
        .assert_error(403, "organization_inactive");
}

/// `[::]:0` takes IPv6 and IPv4 clients: `::1` is an IPv6 client, 127.0.0.1 a mapped one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlists_hold_for_ipv6_clients_and_for_clients_behind_a_trusted_proxy() {
    let settings = [("BIND_ADDR", "[::]:0"), ("TRUSTED_PROXIES", "127.0.0.1")];
    let app = spawn_app_with(Backend::Sqlite, &settings).await.expect("sqlite");
    let org = app.signup_org("v6@acme.test").await;
    let port = app.address.rsplit(':').next().expect("port").to_owned();
    let over_v6 = |key: &str| {
        let request = app.client.get(format!("http://[::1]:{port}/v1/account")).bearer_auth(key);
        async move { Reply::read(request.send().await.expect("sent over IPv6")).await }
    };
    let (v6, _) = created(&app, &org.key, json!({"allowed_ips": ["::1"]})).await;
    let (other_v6, _) = created(&app, &org.key, json!({"allowed_ips": ["2001:db8::/32"]})).await;
    assert_eq!(over_v6(&v6).await.status, StatusCode::OK);
    over_v6(&other_v6).await.assert_error(403, "ip_not_allowed");
    app.get_account(&v6).await.assert_error(403, "ip_not_allowed");
    // Behind the trusted proxy (127.0.0.1), the client is the forwarded address.
    let (proxied, _) = created(&app, &org.key, json!({"allowed_ips": ["203.0.113.0/24"]})).await;
    let forwarded = |from: &'static str| {
        let request = app.client.get(app.url("/v1/account")).bearer_auth(&proxied).header("x-forwarded-for", from);
        async move { Reply::read(request.send().await.expect("sent")).await }
    };
    assert_eq!(forwarded("203.0.113.5").await.status, StatusCode::OK);
    forwarded("198.51.100.1").await.assert_error(403, "ip_not_allowed");
    app.get_account(&proxied).await.assert_error(403, "ip_not_allowed");
}

/// Verification by another service applies the allowlist to the address it passes, and
/// refuses a limited key when it passes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_applies_the_allowlist_to_the_client_address_given() {
    const TOKEN: &str = "internal-service-token-for-the-allowlist-test";
    let app = spawn_app_with(Backend::Sqlite, &[("INTERNAL_SERVICE_TOKEN", TOKEN)]).await.expect("sqlite");
    let org = app.signup_org("verify-allowlist@acme.test").await;
    let (limited, _) = created(&app, &org.key, json!({"allowed_ips": ["198.51.100.0/24"]})).await;
    let verify = |body: Value| {
        let request = app.client.post(app.url("/v1/internal/verify-key")).bearer_auth(TOKEN).json(&body);
        async move { Reply::read(request.send().await.expect("sent")).await }
    };
    let code = |reply: Reply| reply.data()["code"].as_str().expect("code").to_owned();
    assert_eq!(code(verify(json!({"key": limited, "client_ip": "198.51.100.7"})).await), "valid");
    assert_eq!(code(verify(json!({"key": limited, "client_ip": "192.0.2.1"})).await), "ip_not_allowed");
    assert_eq!(code(verify(json!({"key": limited})).await), "ip_not_allowed", "omitting the address skips nothing");
    assert_eq!(code(verify(json!({"key": org.key})).await), "valid", "an unlimited key needs no address");
    let bad = verify(json!({"key": limited, "client_ip": "not an address"})).await;
    bad.assert_error(400, "validation_error");
    assert_eq!(bad.body["error"]["field"], json!("client_ip"));
}

/// Behind a trusted proxy, a forwarded hop with a port is its address, and a hop that is
/// no address leaves the client unknown: a limited key is refused and the trail records
/// no address (before, the proxy's own address stood in for the client's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_hop_that_is_not_an_address_is_no_address() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if let Some(app) = spawn_app_with(backend, &[("TRUSTED_PROXIES", "127.0.0.1")]).await {
            forwarded_hops_behind_a_trusted_proxy(app).await;
        }
    }
}

async fn forwarded_hops_behind_a_trusted_proxy(app: TestApp) {
    let org = app.signup_org("unreadable-hop@acme.test").await;
    let (internal, _) = created(&app, &org.key, json!({"allowed_ips": ["127.0.0.1"]})).await;
    let (v6, _) = created(&app, &org.key, json!({"allowed_ips": ["::1"]})).await;
    let forwarded = |key: &str, from: &'static str| {
        let request = app.client.get(app.url("/v1/account")).bearer_auth(key).header("x-forwarded-for", from);
        async move { Reply::read(request.send().await.expect("sent")).await }
    };
    for outside in ["203.0.113.9", "203.0.113.9:40000", "unknown", "[::1]:80", "127.0.0.1:99999"] {
        forwarded(&internal, outside).await.assert_error(403, "ip_not_allowed");
    }
    assert_eq!(forwarded(&internal, "127.0.0.1:5555").await.status, StatusCode::OK, "an allowed address with a port");
    assert_eq!(forwarded(&v6, "[::1]:80").await.status, StatusCode::OK, "a bracketed IPv6 address with a port");
    assert_eq!(app.get_account(&internal).await.status, StatusCode::OK, "no header: the proxy is the client");
    // A write from an unknown address is audited with none; one with a port, with its address.
    let create = |from: &'static str| {
        let request =
            app.client.post(app.url("/v1/account/api-keys")).bearer_auth(&org.key).header("x-forwarded-for", from);
        async move { Reply::read(request.json(&json!({})).send().await.expect("sent")).await }
    };
    let unknown = create("unknown").await;
    let with_port = create("203.0.113.9:40000").await;
    let trail = app.request(Method::GET, "/v1/account/audit-log", Some(&org.key), None).await;
    let address_of = |reply: &Reply| {
        let id = reply.data()["id"].clone();
        let events = trail.data()["events"].as_array().expect("events");
        let event = events.iter().find(|e| e["action"] == json!("key.created") && e["target_id"] == id);
        event.expect("audited")["client_ip"].clone()
    };
    assert_eq!(address_of(&unknown), Value::Null);
    assert_eq!(address_of(&with_port), json!("203.0.113.9"));
}

/// Probing a stolen limited key from elsewhere counts as failed authentications (403s then
/// 429), while verdicts given to another service never count against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_by_address_count_as_failed_authentications_but_verdicts_never_do() {
    const TOKEN: &str = "internal-service-token-for-the-probing-test";
    let settings = [("INTERNAL_SERVICE_TOKEN", TOKEN), ("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "3")];
    let app = spawn_app_with(Backend::Sqlite, &settings).await.expect("sqlite");
    let org = app.signup_org("probing@acme.test").await;
    let (limited, limited_id) = created(&app, &org.key, json!({"allowed_ips": ["192.0.2.1"]})).await;
    // Verdicts first: had they counted, the key's own refusals below would be 429 at once.
    for _ in 0..10 {
        let request = app.client.post(app.url("/v1/internal/verify-key")).bearer_auth(TOKEN);
        let verdict = Reply::read(request.json(&json!({"key": limited})).send().await.expect("sent")).await;
        assert_eq!(verdict.status, StatusCode::OK, "{}", verdict.body);
        assert_eq!(verdict.data()["code"], json!("ip_not_allowed"));
    }
    for _ in 0..3 {
        app.get_account(&limited).await.assert_error(403, "ip_not_allowed");
    }
    let refused = app.get_account(&limited).await;
    refused.assert_error(429, "rate_limited");
    let retry_after: u64 = refused.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        app.get_account(&org.key).await.status,
        StatusCode::OK,
        "a key used from where it may be is never slowed"
    );
    let metrics = app.client.get(app.url("/metrics")).send().await.expect("sent").text().await.expect("text");
    assert!(metrics.contains(r#"auth_failures_total{reason="ip_not_allowed"} 3"#), "{metrics}");
    assert!(metrics.contains(r#"auth_failures_total{reason="rate_limited"} 1"#), "{metrics}");
    // The key's usage counts every refusal as ip_not_allowed, the one answered 429 too.
    let usage = app.request(Method::GET, "/v1/account/usage", Some(&org.key), None).await;
    let keys = usage.data()["keys"].as_array().expect("keys");
    let entry = keys.iter().find(|k| k["key_id"] == json!(limited_id)).expect("counted");
    assert_eq!(entry["refused_by_reason"], json!({"ip_not_allowed": 14}));
}
