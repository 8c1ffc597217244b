//! `POST /v1/api-keys/revoke-leaked`: anyone holding keys revokes them and learns nothing
//! else; reports are limited per address.

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{on_both_backends, spawn_app_with, TestApp};

on_both_backends!(anyone_holding_leaked_keys_can_revoke_them_and_learns_nothing_else);

async fn anyone_holding_leaked_keys_can_revoke_them_and_learns_nothing_else(app: TestApp) {
    let a = app.signup_org("leak-a@acme.test").await;
    let b = app.signup_org("leak-b@acme.test").await;
    let survivor = app.new_key(&a.key, json!({"name": "Survivor"})).await;
    let report =
        |keys: Value| app.request(Method::POST, "/v1/api-keys/revoke-leaked", None, Some(json!({"keys": keys})));
    let reply = report(json!([a.key, b.key, "mem_live_garbage", "not a key"])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.data(), &json!({"revoked": 2}));
    app.get_account(&a.key).await.assert_error(401, "revoked_api_key");
    app.get_account(&b.key).await.assert_error(401, "revoked_api_key");
    assert_eq!(app.get_account(&survivor).await.status, StatusCode::OK);
    assert_eq!(report(json!([a.key])).await.data(), &json!({"revoked": 0}), "already revoked");
    report(json!([])).await.assert_error(400, "validation_error");
    report(json!(vec!["x"; 101])).await.assert_error(400, "validation_error");
}

#[tokio::test]
async fn leak_reports_are_limited_per_address() {
    let app = spawn_app_with(Backend::Sqlite, &[("RATE_LIMIT_LEAK_REPORTS_PER_HOUR", "2")]).await.expect("sqlite");
    let report =
        || app.request(Method::POST, "/v1/api-keys/revoke-leaked", None, Some(json!({"keys": ["mem_live_x"]})));
    assert_eq!(report().await.status, StatusCode::OK);
    assert_eq!(report().await.status, StatusCode::OK);
    report().await.assert_error(429, "rate_limited");
}
