//! `GET /v1/account`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{field_names, is_rfc3339_utc, on_both_backends, TestApp};

on_both_backends!(the_account_shows_the_documented_fields_and_only_the_callers_own);

async fn the_account_shows_the_documented_fields_and_only_the_callers_own(app: TestApp) {
    let ours = app.signup_org("ours@acme.test").await;
    let theirs = app.signup_org("theirs@acme.test").await;
    let reply = app.get_account(&ours.key).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["success"], true);
    let data = reply.data();
    assert_eq!(field_names(data), ["created_at", "email", "is_active", "name", "org_id", "plan"]);
    assert_eq!(data["org_id"], json!(ours.id));
    assert_eq!(data["email"], "ours@acme.test");
    assert!(is_rfc3339_utc(&data["created_at"]));
    assert_eq!(app.get_account(&theirs.key).await.data()["org_id"], json!(theirs.id));
}
