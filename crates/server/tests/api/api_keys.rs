//! `GET`/`POST /v1/account/api-keys` and `DELETE /v1/account/api-keys/{key_id}`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{field_names, is_rfc3339_utc, on_both_backends, spawn_app_on, TestApp};

on_both_backends!(
    a_key_created_without_a_body_takes_the_documented_defaults,
    a_key_created_with_every_field_is_shown_once_in_full,
    keys_are_listed_newest_first_with_the_documented_fields_and_no_secret,
    invalid_key_requests_get_400_and_create_nothing,
    keys_cannot_grant_more_than_they_hold,
    a_test_key_cannot_revoke_or_rename_live_keys,
    revoking_answers_the_key_as_listed_and_is_idempotent,
    revoking_an_unknown_or_foreign_key_is_404,
    fifty_concurrent_key_creations_are_all_kept_with_distinct_secrets,
    last_used_at_is_null_until_used_then_written_in_the_background,
    one_key_is_read_as_listed_by_any_key_of_its_organization_and_by_no_other,
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

async fn keys_are_listed_newest_first_with_the_documented_fields_and_no_secret(app: TestApp) {
    let org = app.signup_org("list@acme.test").await;
    let mut secrets = vec![org.key.clone()];
    for name in ["Second", "Third"] {
        secrets.push(app.new_key(&org.key, json!({"name": name})).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reply = app.list_keys(&org.key).await;
    let keys = reply.data().as_array().expect("array");
    let names: Vec<&str> = keys.iter().map(|k| k["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["Third", "Second", "Default Key"]);
    for key in keys {
        assert_eq!(
            field_names(key),
            [
                "allowed_ips",
                "created_at",
                "environment",
                "expires_at",
                "id",
                "is_active",
                "key_prefix",
                "last_used_at",
                "name",
                "scopes"
            ]
        );
        assert_eq!(key["is_active"], true);
        assert!(key["key_prefix"]
            .as_str()
            .is_some_and(|p| p.starts_with("mem_live_") && p.ends_with("...") && p.len() == 18));
    }
    let text = reply.body.to_string();
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a listed key leaks its secret");
        assert!(!text.contains(&secret[15..]), "a listed key leaks part of its secret beyond the prefix");
    }
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

async fn a_test_key_cannot_revoke_or_rename_live_keys(app: TestApp) {
    let org = app.signup_org("test-reach@acme.test").await;
    let test_key = app.new_key(&org.key, json!({"environment": "test", "name": "T"})).await;
    let test_key_id = app.list_keys(&org.key).await.data()[0]["id"].as_str().expect("id").to_owned();
    let live_path = format!("/v1/account/api-keys/{}", org.key_id);
    let live_key = |listed: &crate::helpers::Reply| {
        let keys = listed.data().as_array().expect("array").clone();
        keys.into_iter().find(|k| k["id"] == json!(org.key_id)).expect("listed")
    };
    let before = live_key(&app.list_keys(&org.key).await);
    app.revoke_key(&test_key, &org.key_id).await.assert_error(403, "environment_escalation");
    app.request(Method::PATCH, &live_path, Some(&test_key), Some(json!({"name": "Taken over"})))
        .await
        .assert_error(403, "environment_escalation");
    // The live key is untouched: still working, still named as it was.
    let after = live_key(&app.list_keys(&org.key).await);
    assert_eq!((&after["is_active"], &after["name"]), (&json!(true), &before["name"]));
    // Its own environment stays within reach.
    let test_path = format!("/v1/account/api-keys/{test_key_id}");
    let renamed = app.request(Method::PATCH, &test_path, Some(&test_key), Some(json!({"name": "T2"}))).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(app.revoke_key(&test_key, &test_key_id).await.status, StatusCode::OK);
    // A key of another organization stays 404, not 403: nothing tells it exists.
    let other = app.signup_org("test-reach-other@acme.test").await;
    let other_test = app.new_key(&other.key, json!({"environment": "test"})).await;
    app.revoke_key(&other_test, &org.key_id).await.assert_error(404, "key_not_found");
}

async fn revoking_answers_the_key_as_listed_and_is_idempotent(app: TestApp) {
    let org = app.signup_org("idempotent@acme.test").await;
    let first = app.revoke_key(&org.key, &org.key_id).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.data()["id"], json!(org.key_id));
    assert_eq!(first.data()["is_active"], false);
    assert!(first.data().get("key").is_none());
    // The key revoked itself; revoking again needs another key of the organization.
    let other = app.signup_org("idempotent2@acme.test").await;
    app.revoke_key(&other.key, &org.key_id).await.assert_error(404, "key_not_found");
    let org2_second = app.new_key(&other.key, json!({"name": "Second"})).await;
    let second_id = app.list_keys(&other.key).await.data()[0]["id"].as_str().expect("id").to_owned();
    let once = app.revoke_key(&other.key, &second_id).await;
    let twice = app.revoke_key(&other.key, &second_id).await;
    assert_eq!(once.status, StatusCode::OK);
    assert_eq!(twice.status, StatusCode::OK);
    assert_eq!(once.data(), twice.data());
    app.get_account(&org2_second).await.assert_error(401, "revoked_api_key");
    let listed = app.list_keys(&other.key).await;
    assert_eq!(listed.data().as_array().expect("array").len(), 2, "revoked keys stay listed");
    assert_eq!(listed.data()[0]["is_active"], false);
}

async fn revoking_an_unknown_or_foreign_key_is_404(app: TestApp) {
    let ours = app.signup_org("ours404@acme.test").await;
    let theirs = app.signup_org("theirs404@acme.test").await;
    for id in ["key_doesnotexist", "nonsense", theirs.key_id.as_str(), "key_%27%20OR%201%3D1"] {
        app.revoke_key(&ours.key, id).await.assert_error(404, "key_not_found");
    }
    assert_eq!(app.get_account(&theirs.key).await.status, StatusCode::OK, "the foreign key was not touched");
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

async fn last_used_at_is_null_until_used_then_written_in_the_background(app: TestApp) {
    let org = app.signup_org("usage@acme.test").await;
    let unused = app.new_key(&org.key, json!({"name": "Unused"})).await;
    let _ = unused;
    // A second instance on the same database sees only what was written to it.
    let other = spawn_app_on(app.db.clone()).await;
    let listed = app.list_keys(&org.key).await;
    let find = |reply: &crate::helpers::Reply, name: &str| {
        reply.data().as_array().expect("array").iter().find(|k| k["name"] == name).expect("listed").clone()
    };
    assert_eq!(find(&listed, "Unused")["last_used_at"], json!(null));
    assert!(is_rfc3339_utc(&find(&listed, "Default Key")["last_used_at"]), "the instance knows its own uses at once");
    // Flushed within LAST_USED_FLUSH_SECS (1 s in tests).
    let mut seen = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let elsewhere = other.list_keys(&org.key).await;
        if is_rfc3339_utc(&find(&elsewhere, "Default Key")["last_used_at"])
            && find(&elsewhere, "Unused")["last_used_at"].is_null()
        {
            seen = true;
            break;
        }
    }
    assert!(seen, "last_used_at never reached the database");
}

async fn one_key_is_read_as_listed_by_any_key_of_its_organization_and_by_no_other(app: TestApp) {
    let org = app.signup_org("read-one@acme.test").await;
    let test_reader = app.new_key(&org.key, json!({"environment": "test", "scopes": ["read"]})).await;
    app.get_account(&org.key).await; // a use not yet flushed
    let listed = app.list_keys(&org.key).await;
    let listed = listed.data().as_array().expect("array").iter().find(|k| k["id"] == json!(org.key_id)).cloned();
    let path = format!("/v1/account/api-keys/{}", org.key_id);
    // A test key reads a live key of its organization, as it lists it: the same object.
    let read = app.request(Method::GET, &path, Some(&test_reader), None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(Some(read.data().clone()), listed);
    assert!(read.data().get("key").is_none(), "never the full key");
    // Another organization's key, an unknown id and a malformed one are not found.
    let other = app.signup_org("read-one-other@acme.test").await;
    app.request(Method::GET, &path, Some(&other.key), None).await.assert_error(404, "key_not_found");
    for id in ["key_unknown", "not-an-id"] {
        let path = format!("/v1/account/api-keys/{id}");
        app.request(Method::GET, &path, Some(&org.key), None).await.assert_error(404, "key_not_found");
    }
    // It needs `read`.
    let writer = app.new_key(&org.key, json!({"scopes": ["write"]})).await;
    app.request(Method::GET, &path, Some(&writer), None).await.assert_error(403, "insufficient_scope");
}

/// The document gives `name` of a change as a string or absent: `null` is refused whatever
/// else the change holds, as the document says, and changes nothing.
#[tokio::test]
async fn a_change_with_a_null_name_is_refused_and_changes_nothing() {
    let app = crate::helpers::spawn_app(account_infra::testing::Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("null-name@acme.test").await;
    let path = format!("/v1/account/api-keys/{}", org.key_id);
    for body in [json!({"name": null}), json!({"name": null, "allowed_ips": ["127.0.0.0/8"]})] {
        let reply = app.request(Method::PATCH, &path, Some(&org.key), Some(body)).await;
        reply.assert_error(400, "invalid_request");
        assert_eq!(reply.body["error"]["field"], json!("name"), "{}", reply.body);
    }
    let key = app.request(Method::GET, &path, Some(&org.key), None).await;
    assert_eq!(key.data()["allowed_ips"], json!(null), "the allowlist was not changed");
}
