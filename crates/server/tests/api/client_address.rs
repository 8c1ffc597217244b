//! The client's address, as the limits, the allowlists and the audit trail see it, whatever
//! the route: the socket's peer, or behind a trusted proxy (`TRUSTED_PROXIES`) the address it
//! forwards (a hop with a port is its address, any other unreadable hop is no address); IPv6
//! clients and a dual-stack bind.

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Reply, TestApp};
use crate::keys::created;
use crate::signup::signup_from;

#[tokio::test]
async fn a_trusted_proxys_forwarded_address_is_the_client() {
    let app =
        spawn_app_with(Backend::Sqlite, &[("RATE_LIMIT_SIGNUPS_PER_HOUR", "2"), ("TRUSTED_PROXIES", "127.0.0.1")])
            .await
            .expect("sqlite");
    for n in 0..2 {
        assert_eq!(signup_from(&app, n, Some("203.0.113.7")).await.status, StatusCode::CREATED);
    }
    signup_from(&app, 2, Some("203.0.113.7")).await.assert_error(429, "rate_limited");
    assert_eq!(signup_from(&app, 3, Some("203.0.113.8")).await.status, StatusCode::CREATED, "another client");
}

#[tokio::test]
async fn an_untrusted_forwarded_address_is_ignored() {
    let app = spawn_app_with(Backend::Sqlite, &[("RATE_LIMIT_SIGNUPS_PER_HOUR", "2")]).await.expect("sqlite");
    assert_eq!(signup_from(&app, 0, Some("203.0.113.1")).await.status, StatusCode::CREATED);
    assert_eq!(signup_from(&app, 1, Some("203.0.113.2")).await.status, StatusCode::CREATED);
    // Same socket peer, whatever the header claims.
    signup_from(&app, 2, Some("203.0.113.3")).await.assert_error(429, "rate_limited");
}

#[tokio::test]
async fn a_trusted_proxy_on_a_dual_stack_bind_forwards_each_clients_address() {
    // Bound to [::], the server sees the proxy at 127.0.0.1 as ::ffff:127.0.0.1.
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("BIND_ADDR", "[::]:0"), ("TRUSTED_PROXIES", "127.0.0.1"), ("RATE_LIMIT_SIGNUPS_PER_HOUR", "2")],
    )
    .await
    .expect("sqlite");
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
