//! `POST /v1/account/api-keys`: defaults, every field, invalid bodies, what a key may grant,
//! the active-key cap, concurrent creations, and a creation whose maker is narrowed or rolled
//! while its body is in flight.

use std::collections::HashSet;
use std::sync::Arc;

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{key_id_of, owner_narrows, send_body_after};
use crate::helpers::{field_names, is_rfc3339_utc, on_both_backends, spawn_app_with, TestApp};

on_both_backends!(
    a_key_created_without_a_body_takes_the_documented_defaults,
    a_key_created_with_every_field_is_shown_once_in_full,
    invalid_key_requests_get_400_and_create_nothing,
    keys_cannot_grant_more_than_they_hold,
    fifty_concurrent_key_creations_are_all_kept_with_distinct_secrets,
    an_organization_holds_at_most_the_configured_number_of_active_keys,
    a_key_narrowed_while_its_creation_is_in_flight_cannot_finish_it,
    a_key_rolled_while_its_creation_is_in_flight_makes_no_key_that_outlives_it,
);

async fn a_key_created_without_a_body_takes_the_documented_defaults(app: TestApp) {
    let org = app.signup_org("defaults@acme.test").await;
    for body in [None, Some(json!({})), Some(json!(null))] {
        let reply = app.create_key(&org.key, body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let data = reply.data();
        assert_eq!(data["name"], "Default Key");
        assert_eq!(data["environment"], "live");
        assert_eq!(data["scopes"], json!(["read", "write"]));
        assert_eq!(data["expires_at"], json!(null));
    }
}

async fn a_key_created_with_every_field_is_shown_once_in_full(app: TestApp) {
    let org = app.signup_org("full@acme.test").await;
    let reply = app
        .create_key(
            &org.key,
            Some(json!({"name": "CI/CD Key", "environment": "test", "scopes": ["read"], "expires_in_days": 90})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let data = reply.data();
    assert_eq!(
        field_names(data),
        ["allowed_ips", "created_at", "environment", "expires_at", "id", "key", "key_prefix", "name", "scopes"]
    );
    assert_eq!(data["name"], "CI/CD Key");
    assert_eq!(data["environment"], "test");
    assert_eq!(data["scopes"], json!(["read"]));
    let secret = data["key"].as_str().expect("key");
    assert!(secret.starts_with("mem_test_"));
    assert_eq!(data["key_prefix"], json!(format!("{}...", &secret[..15])));
    assert!(is_rfc3339_utc(&data["created_at"]) && is_rfc3339_utc(&data["expires_at"]));
    let created = time::OffsetDateTime::parse(
        data["created_at"].as_str().expect("str"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    let expires = time::OffsetDateTime::parse(
        data["expires_at"].as_str().expect("str"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    assert_eq!(expires - created, time::Duration::days(90));
    // The new key works, with exactly its scopes.
    assert_eq!(app.get_account(secret).await.status, StatusCode::OK);
    app.create_key(secret, None).await.assert_error(403, "insufficient_scope");
}

async fn invalid_key_requests_get_400_and_create_nothing(app: TestApp) {
    let org = app.signup_org("invalid@acme.test").await;
    let cases = [
        (json!({"expire_in_days": 90}), "invalid_request", "expire_in_days"),
        (json!({"scope": ["read"]}), "invalid_request", "scope"),
        (json!({"expires_in_days": 0}), "validation_error", "expires_in_days"),
        (json!({"expires_in_days": -5}), "validation_error", "expires_in_days"),
        (json!({"expires_in_days": 3651}), "validation_error", "expires_in_days"),
        (json!({"expires_in_days": 1.5}), "invalid_request", "expires_in_days"),
        (json!({"expires_in_days": "90"}), "invalid_request", "expires_in_days"),
        (json!({"expires_in_days": 99999999999999999999u128 as f64}), "invalid_request", "expires_in_days"),
        (json!({"name": ""}), "validation_error", "name"),
        (json!({"name": "y".repeat(201)}), "validation_error", "name"),
        (json!({"name": null, "environment": "prod"}), "validation_error", "environment"),
        (json!({"environment": "LIVE"}), "validation_error", "environment"),
        (json!({"scopes": []}), "validation_error", "scopes"),
        (json!({"scopes": ["admin"]}), "validation_error", "scopes"),
        (json!({"scopes": ["read", "read"]}), "validation_error", "scopes"),
        (json!({"scopes": "read"}), "invalid_request", "scopes"),
        (json!({"scopes": [1]}), "invalid_request", "scopes[0]"),
    ];
    for (body, code, field) in cases {
        let reply = app.create_key(&org.key, Some(body.clone())).await;
        reply.assert_error(400, code);
        assert_eq!(reply.body["error"]["field"], field, "{body} -> {}", reply.body);
    }
    for (content_type, raw) in
        [("application/json", &b"[1,2"[..]), ("application/json", b"[]"), ("application/json", b"\"x\"")]
    {
        let reply =
            app.send_raw(Method::POST, "/v1/account/api-keys", Some(&org.key), content_type, raw.to_vec()).await;
        assert_eq!(reply.status.as_u16(), 400, "{raw:?} -> {}", reply.body);
    }
    let reply = app.send_raw(Method::POST, "/v1/account/api-keys", Some(&org.key), "text/plain", b"{}".to_vec()).await;
    reply.assert_error(415, "unsupported_media_type");
    assert_eq!(app.key_count(&org.key).await, 1, "a refused request created a key");
}

async fn keys_cannot_grant_more_than_they_hold(app: TestApp) {
    let org = app.signup_org("escalate@acme.test").await;
    let write_only = app.new_key(&org.key, json!({"scopes": ["write"]})).await;
    let reply = app.create_key(&write_only, Some(json!({"scopes": ["read", "write"]}))).await;
    reply.assert_error(403, "scope_escalation");
    // Defaults are read and write: also an escalation for a write-only key.
    app.create_key(&write_only, None).await.assert_error(403, "scope_escalation");

    let test_key = app.new_key(&org.key, json!({"environment": "test"})).await;
    app.create_key(&test_key, Some(json!({"environment": "live"}))).await.assert_error(403, "environment_escalation");
    app.create_key(&test_key, None).await.assert_error(403, "environment_escalation");
    let created = app.create_key(&test_key, Some(json!({"environment": "test"}))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(app.key_count(&org.key).await, 4);
}

async fn fifty_concurrent_key_creations_are_all_kept_with_distinct_secrets(app: TestApp) {
    let org = app.signup_org("burst@acme.test").await;
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (app, key) = (app.clone(), org.key.clone());
            tokio::spawn(async move { app.new_key(&key, json!({"name": format!("Burst {i}")})).await })
        })
        .collect();
    let mut secrets = HashSet::new();
    for task in tasks {
        secrets.insert(task.await.expect("joined"));
    }
    assert_eq!(secrets.len(), 50);
    assert_eq!(app.key_count(&org.key).await, 51);
    for secret in secrets.iter().take(5) {
        assert_eq!(app.get_account(secret).await.status, StatusCode::OK);
    }
}

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
    let app = spawn_app_with(Backend::Sqlite, &[("MAX_ACTIVE_KEYS_PER_ORG", "2")]).await.expect("sqlite");
    let org = app.signup_org("cap2@acme.test").await;
    app.new_key(&org.key, json!({})).await;
    app.create_key(&org.key, None).await.assert_error(409, "key_limit_reached");
}

async fn a_key_narrowed_while_its_creation_is_in_flight_cannot_finish_it(app: TestApp) {
    let org = app.signup_org("narrow-create@acme.test").await;
    let key = app.new_key(&org.key, json!({"name": "K"})).await;
    let key_id = key_id_of(&app, &org.key, "K").await;
    let before = app.key_count(&org.key).await;
    let narrow = owner_narrows(&app, &org, &key_id, &key);
    let body = r#"{"name": "Made in flight"}"#;
    let (status, answer) = send_body_after(&app, "POST", "/v1/account/api-keys", &key, body, narrow).await;
    assert_eq!((status, &answer["error"]["code"]), (403, &json!("ip_not_allowed")), "{answer}");
    assert_eq!(app.key_count(&org.key).await, before, "nothing was created");
}

async fn a_key_rolled_while_its_creation_is_in_flight_makes_no_key_that_outlives_it(app: TestApp) {
    let org = app.signup_org("roll-create@acme.test").await;
    let key = app.new_key(&org.key, json!({"name": "K"})).await;
    let key_id = key_id_of(&app, &org.key, "K").await;
    let roll_path = format!("/v1/account/api-keys/{key_id}/roll");
    let rolled_expiry = std::sync::Mutex::new(Value::Null);
    let owner_rolls = async {
        let rolled = app.request(Method::POST, &roll_path, Some(&org.key), Some(json!({"expires_in_hours": 1}))).await;
        assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.body);
        let old = app.request(Method::GET, &format!("/v1/account/api-keys/{key_id}"), Some(&org.key), None).await;
        *rolled_expiry.lock().expect("expiry") = old.data()["expires_at"].clone();
    };
    let body = r#"{"name": "Made in flight"}"#;
    let (status, answer) = send_body_after(&app, "POST", "/v1/account/api-keys", &key, body, owner_rolls).await;
    assert_eq!(status, 201, "{answer}");
    let limit = rolled_expiry.lock().expect("expiry").clone();
    assert!(limit.is_string(), "the rolled key expires: {limit}");
    assert_eq!(answer["data"]["expires_at"], limit, "the new key expires with its maker as rolled");
    // Asking for more than the maker now has is refused, and stores nothing.
    let before = app.key_count(&org.key).await;
    let outliving = app.create_key(&key, Some(json!({"name": "Outliving", "expires_in_days": 30}))).await;
    outliving.assert_error(403, "expiry_escalation");
    assert_eq!(app.key_count(&org.key).await, before, "nothing was created");
}
