//! What every response carries, whatever the route and the status: `Cache-Control:
//! no-store`, `X-Content-Type-Options: nosniff`, and an `X-Request-Id`.

use account_infra::testing::Backend;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{on_both_backends, spawn_app_with, TestApp};

on_both_backends!(a_valid_request_id_is_echoed_and_a_missing_or_bad_one_replaced);

#[tokio::test]
async fn every_response_forbids_caching_and_sniffing() {
    let app = spawn_app_with(Backend::Sqlite, &[("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "1")]).await.expect("sqlite");
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

async fn a_valid_request_id_is_echoed_and_a_missing_or_bad_one_replaced(app: TestApp) {
    let echoed =
        app.client.get(app.url("/healthz")).header("x-request-id", "trace-42.abc_DEF").send().await.expect("sent");
    assert_eq!(echoed.headers()["x-request-id"], "trace-42.abc_DEF");
    let generated = app.client.get(app.url("/nope")).send().await.expect("sent");
    let id = generated.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(id.len() >= 16, "{id}");
    for bad in ["has space", &"x".repeat(200), "quote\"d"] {
        let replaced = app.client.get(app.url("/healthz")).header("x-request-id", bad).send().await.expect("sent");
        let id = replaced.headers()["x-request-id"].to_str().expect("ascii");
        assert_ne!(id, bad);
        assert!(!id.is_empty());
    }
}
