//! Who may call the authenticated routes, whichever route: a key, the `Bearer` scheme, the
//! key's scopes, its expiry, its organization active, its allowlist; failed authentications
//! limited per address, a correct key never.

use std::time::{Duration, Instant};

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{on_both_backends, spawn_app_with, Reply, TestApp};
use crate::keys::{created, patch};

on_both_backends!(
    requests_without_a_valid_key_get_401,
    the_bearer_scheme_word_is_case_insensitive,
    expired_keys_are_rejected,
    keys_of_an_inactive_organization_get_403,
    a_deactivated_organization_reads_its_account_and_is_refused_everywhere_else,
    each_route_needs_its_scope,
    a_key_limited_to_addresses_works_only_from_them,
);

async fn requests_without_a_valid_key_get_401(app: TestApp) {
    let org = app.signup_org("auth@acme.test").await;
    let mut typo = org.key.clone();
    let last = typo.pop().expect("non-empty");
    typo.push(if last == 'a' { 'b' } else { 'a' });
    // Well formed with a valid checksum, but never issued.
    let stranger = account_domain::PlaintextKey::assemble(
        account_domain::Environment::Live,
        &account_domain::Generator::key_secret(&account_infra::OsRandomGenerator),
    );
    let stranger = stranger.expose().to_owned();
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing_api_key"),
        (Some(String::new()), "invalid_api_key"),
        (Some("Bearer".to_owned()), "invalid_api_key"),
        (Some("Bearer ".to_owned()), "invalid_api_key"),
        (Some(format!("Basic {}", org.key)), "invalid_api_key"),
        (Some(format!("Token {}", org.key)), "invalid_api_key"),
        (Some("Bearer mem_live_short".to_owned()), "invalid_api_key"),
        (Some("Bearer sk_live_abcdefghijklmnopqrstuvwxyz0123456789AB".to_owned()), "invalid_api_key"),
        (Some(format!("Bearer {typo}")), "invalid_api_key"),
        (Some(format!("Bearer {stranger}")), "invalid_api_key"),
    ];
    for (header, code) in cases {
        for path in ["/v1/account", "/v1/account/api-keys"] {
            let mut request = app.client.get(app.url(path));
            if let Some(header) = &header {
                request = request.header("authorization", header);
            }
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], code, "{header:?}: {body}");
        }
    }
    // Bytes that are not text (a header may carry them) make a key malformed too.
    let mut bytes = format!("Bearer {}", org.key).into_bytes();
    bytes[12] = 0xff;
    let header = reqwest::header::HeaderValue::from_bytes(&bytes).expect("obs-text is a valid header byte");
    let response = app.client.get(app.url("/v1/account")).header("authorization", header).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    let reply = app.request(Method::POST, "/v1/account/api-keys", Some(&typo), Some(json!({}))).await;
    reply.assert_error(401, "invalid_api_key");
}

async fn the_bearer_scheme_word_is_case_insensitive(app: TestApp) {
    let org = app.signup_org("scheme@acme.test").await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = app
            .client
            .get(app.url("/v1/account"))
            .header("authorization", format!("{scheme} {}", org.key))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }
}

async fn expired_keys_are_rejected(app: TestApp) {
    let org = app.signup_org("expired@acme.test").await;
    let short = app.new_key(&org.key, json!({"name": "Short", "expires_in_days": 1})).await;
    // A day later, as far as the database is concerned (before any use: nothing cached).
    app.execute_sql("UPDATE api_keys SET expires_at = created_at - 1000000 WHERE name = 'Short'");
    app.get_account(&short).await.assert_error(401, "expired_api_key");
    let listed = app.list_keys(&org.key).await;
    let entry = listed.data().as_array().expect("array").iter().find(|k| k["name"] == "Short").expect("listed").clone();
    assert_eq!(entry["is_active"], false);
}

async fn keys_of_an_inactive_organization_get_403(app: TestApp) {
    let org = app.signup_org("inactive@acme.test").await;
    let other = app.signup_org("active@acme.test").await;
    app.execute_sql(&format!("UPDATE organizations SET is_active = false WHERE id = '{}'", org.id));
    // Its account stays readable, showing why (`is_active: false`); nothing else answers.
    let account = app.get_account(&org.key).await;
    assert_eq!(account.data()["is_active"], json!(false), "{}", account.body);
    app.list_keys(&org.key).await.assert_error(403, "organization_inactive");
    app.create_key(&org.key, None).await.assert_error(403, "organization_inactive");
    assert_eq!(app.get_account(&other.key).await.status, StatusCode::OK);
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

async fn each_route_needs_its_scope(app: TestApp) {
    let org = app.signup_org("scopes@acme.test").await;
    let read = app.new_key(&org.key, json!({"scopes": ["read"]})).await;
    let write = app.new_key(&org.key, json!({"scopes": ["write"]})).await;

    assert_eq!(app.get_account(&read).await.status, StatusCode::OK);
    assert_eq!(app.list_keys(&read).await.status, StatusCode::OK);
    app.create_key(&read, None).await.assert_error(403, "insufficient_scope");
    app.revoke_key(&read, &org.key_id).await.assert_error(403, "insufficient_scope");

    app.get_account(&write).await.assert_error(403, "insufficient_scope");
    app.list_keys(&write).await.assert_error(403, "insufficient_scope");
    let created = app.create_key(&write, Some(json!({"scopes": ["write"]}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    // The main key is still alive: nothing was revoked by the refused attempt.
    assert_eq!(app.get_account(&org.key).await.status, StatusCode::OK);
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

#[tokio::test]
async fn failed_authentications_are_limited_but_a_correct_key_is_never_slowed() {
    let app = spawn_app_with(Backend::Sqlite, &[("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "3")]).await.expect("sqlite");
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
