//! `GET /v1/account` and `GET /v1/plans`: the caller's own account, and the plan catalogue
//! with the requests each plan includes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{field_names, is_rfc3339_utc, on_both_backends, TestApp};

on_both_backends!(
    the_account_shows_the_documented_fields_and_only_the_callers_own,
    the_plan_catalogue_is_public,
    plans_state_the_requests_they_include,
);

async fn the_account_shows_the_documented_fields_and_only_the_callers_own(app: TestApp) {
    let ours = app.signup_org("ours@acme.test").await;
    let theirs = app.signup_org("theirs@acme.test").await;
    let reply = app.get_account(&ours.key).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["success"], true);
    let data = reply.data();
    assert_eq!(field_names(data), ["closed_at", "created_at", "email", "is_active", "name", "org_id", "plan"]);
    assert_eq!(data["org_id"], json!(ours.id));
    assert_eq!(data["email"], "ours@acme.test");
    assert!(is_rfc3339_utc(&data["created_at"]));
    assert_eq!(app.get_account(&theirs.key).await.data()["org_id"], json!(theirs.id));
}

async fn the_plan_catalogue_is_public(app: TestApp) {
    let reply = app.request(Method::GET, "/v1/plans", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.data(),
        &json!([
            {"id": "free", "name": "Free", "base_price_cents": 0, "included_requests_per_month": 10_000, "over_limit": "block"},
            {"id": "starter", "name": "Starter", "base_price_cents": 4900, "included_requests_per_month": 1_000_000, "over_limit": "bill"},
            {"id": "pro", "name": "Pro", "base_price_cents": 19900, "included_requests_per_month": 10_000_000, "over_limit": "bill"},
        ])
    );
}

async fn plans_state_the_requests_they_include(app: TestApp) {
    let plans = app.request(Method::GET, "/v1/plans", None, None).await;
    let included: Vec<(String, i64)> = plans
        .data()
        .as_array()
        .expect("plans")
        .iter()
        .map(|p| {
            (p["id"].as_str().expect("text").to_owned(), p["included_requests_per_month"].as_i64().expect("a count"))
        })
        .collect();
    for (id, n) in [("free", 10_000), ("starter", 1_000_000), ("pro", 10_000_000)] {
        assert!(included.contains(&(id.to_owned(), n)), "{included:?}");
    }
    let org = app.signup_org("plan@acme.test").await;
    let account = app.get_account(&org.key).await;
    assert_eq!(account.data()["plan"]["included_requests_per_month"], 10_000);
}
