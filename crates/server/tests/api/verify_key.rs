//! `POST /v1/internal/verify-key`: verification for other services, with the same rules as
//! the API's own; the service token, its absence and guesses of it; the allowlist applied to
//! the address the service passes.

use account_infra::testing::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Reply, TestApp};
use crate::keys::created;

use crate::helpers::SERVICE_TOKEN;

async fn verify(app: &TestApp, token: &str, body: Value) -> crate::helpers::Reply {
    let response =
        app.client.post(app.url("/v1/internal/verify-key")).bearer_auth(token).json(&body).send().await.expect("sent");
    crate::helpers::Reply::read(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_services_verify_keys_with_the_same_rules() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = spawn_app_with(backend, &[("INTERNAL_SERVICE_TOKEN", SERVICE_TOKEN)]).await else { continue };
        let org = app.signup_org("verify@acme.test").await;
        let read_only = app.new_key(&org.key, json!({"scopes": ["read"]})).await;
        let valid = verify(&app, SERVICE_TOKEN, json!({"key": org.key})).await;
        assert_eq!(valid.status, StatusCode::OK, "{}", valid.body);
        assert_eq!(valid.data()["valid"], true);
        assert_eq!(valid.data()["code"], "valid");
        assert_eq!(valid.data()["org_id"], json!(org.id));
        assert_eq!(valid.data()["key_id"], json!(org.key_id));
        assert_eq!(valid.data()["plan_id"], "free");
        assert_eq!(valid.data()["scopes"], json!(["read", "write"]));
        let lacking = verify(&app, SERVICE_TOKEN, json!({"key": read_only, "scopes": ["write"]})).await;
        assert_eq!(
            (lacking.data()["valid"].clone(), lacking.data()["code"].clone()),
            (json!(false), json!("insufficient_scope"))
        );
        app.revoke_key(&org.key, &org.key_id).await;
        assert_eq!(verify(&app, SERVICE_TOKEN, json!({"key": org.key})).await.data()["code"], "revoked");
        let unknown = verify(&app, SERVICE_TOKEN, json!({"key": "mem_live_nope"})).await;
        assert_eq!(unknown.data()["code"], "not_found");
        assert_eq!(unknown.data()["org_id"], Value::Null);
        verify(&app, "wrong-token-wrong-token", json!({"key": read_only}))
            .await
            .assert_error(401, "invalid_service_token");
        verify(&app, SERVICE_TOKEN, json!({"key": read_only, "scopes": ["admin"]}))
            .await
            .assert_error(400, "validation_error");
    }
}

/// The route is in the document whatever the configuration, so it exists in every one: off,
/// it admits no token.
#[tokio::test]
async fn without_a_service_token_every_verification_is_refused_as_unauthenticated() {
    let settings = [("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "3"), ("INTERNAL_SERVICE_TOKEN", "")];
    let app = spawn_app_with(Backend::Sqlite, &settings).await.expect("sqlite");
    let org = app.signup_org("verify-off@acme.test").await;
    verify(&app, SERVICE_TOKEN, json!({"key": org.key})).await.assert_error(401, "invalid_service_token");
    verify(&app, "", json!({"key": org.key})).await.assert_error(401, "invalid_service_token");
    // Without any Authorization header: refused, and not counted (it guesses nothing).
    for _ in 0..3 {
        let bare = app.client.post(app.url("/v1/internal/verify-key")).json(&json!({"key": org.key}));
        crate::helpers::Reply::read(bare.send().await.expect("sent")).await.assert_error(401, "invalid_service_token");
    }
    // Each token presented counted as a failed authentication, as a wrong token is (an empty
    // one, like no header, guesses nothing): two more, then the limit of 3 is reached.
    for _ in 0..2 {
        verify(&app, SERVICE_TOKEN, json!({"key": org.key})).await.assert_error(401, "invalid_service_token");
    }
    verify(&app, SERVICE_TOKEN, json!({"key": org.key})).await.assert_error(429, "rate_limited");
}

/// Guessing the service token is guessing a key: wrong tokens count against the address's
/// failed-authentication limit and in the metrics, and a correct token is never slowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_service_tokens_count_as_failed_authentications() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("INTERNAL_SERVICE_TOKEN", SERVICE_TOKEN), ("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "2")],
    )
    .await
    .expect("sqlite");
    let org = app.signup_org("token-guess@acme.test").await;
    for _ in 0..2 {
        verify(&app, "wrong-token-wrong-token", json!({"key": org.key}))
            .await
            .assert_error(401, "invalid_service_token");
    }
    let limited = verify(&app, "wrong-token-wrong-token", json!({"key": org.key})).await;
    limited.assert_error(429, "rate_limited");
    // The limit is the address's, as for keys: a wrong API key is refused the same way now.
    app.get_account(&crate::helpers::unknown_key()).await.assert_error(429, "rate_limited");
    let correct = verify(&app, SERVICE_TOKEN, json!({"key": org.key})).await;
    assert_eq!(correct.status, StatusCode::OK, "{}", correct.body);
    let metrics = app.client.get(app.url("/metrics")).send().await.expect("sent");
    let text = metrics.text().await.expect("text");
    assert!(text.contains(r#"auth_failures_total{reason="invalid_service_token"} 2"#), "{text}");
    assert!(text.contains(r#"auth_failures_total{reason="rate_limited"} 2"#), "{text}");
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
