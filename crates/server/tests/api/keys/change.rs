//! `PATCH /v1/account/api-keys/{key_id}`: renaming, changing the allowlist (seen by every
//! instance within a second), what a key may widen, and a change whose maker is narrowed
//! while its body is in flight.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{allowlist_of, created, key_id_of, owner_narrows, patch, send_body_after};
use crate::helpers::{is_rfc3339_utc, on_both_backends, spawn_app_on, TestApp};

on_both_backends!(
    keys_can_be_renamed,
    an_allowlist_changed_on_one_instance_holds_on_another_within_a_second,
    a_key_narrowed_while_its_change_is_in_flight_cannot_lift_its_own_allowlist,
    a_key_cannot_widen_the_addresses_of_a_key_whose_scopes_it_lacks,
);

async fn keys_can_be_renamed(app: TestApp) {
    let org = app.signup_org("rename@acme.test").await;
    let path = format!("/v1/account/api-keys/{}", org.key_id);
    let renamed = app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"name": "  Production  "}))).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.data()["name"], "Production");
    assert_eq!(app.list_keys(&org.key).await.data()[0]["name"], "Production");
    app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"name": ""})))
        .await
        .assert_error(400, "validation_error");
    app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"nam": "x"})))
        .await
        .assert_error(400, "invalid_request");
    app.request(Method::PATCH, &path, Some(&org.key), None).await.assert_error(400, "invalid_request");
    app.request(Method::PATCH, "/v1/account/api-keys/key_missing", Some(&org.key), Some(json!({"name": "x"})))
        .await
        .assert_error(404, "key_not_found");
    let read_only = app.new_key(&org.key, json!({"scopes": ["read"]})).await;
    app.request(Method::PATCH, &path, Some(&read_only), Some(json!({"name": "Mine now"})))
        .await
        .assert_error(403, "insufficient_scope");
    let stranger = app.signup_org("rename-stranger@acme.test").await;
    app.request(Method::PATCH, &path, Some(&stranger.key), Some(json!({"name": "Mine now"})))
        .await
        .assert_error(404, "key_not_found");
    let listed = app.list_keys(&org.key).await;
    let keys = listed.data().as_array().expect("keys");
    let renamed_key = keys.iter().find(|k| k["id"] == org.key_id.as_str()).expect("listed");
    assert_eq!(renamed_key["name"], "Production", "refused renames change nothing");
    // The key was just used (by these requests): the answer shows it before any flush.
    let again = app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"name": "Again"}))).await;
    assert!(is_rfc3339_utc(&again.data()["last_used_at"]), "{}", again.body);
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

async fn a_key_narrowed_while_its_change_is_in_flight_cannot_lift_its_own_allowlist(app: TestApp) {
    let org = app.signup_org("narrow-patch@acme.test").await;
    let key = app.new_key(&org.key, json!({"name": "K"})).await;
    let key_id = key_id_of(&app, &org.key, "K").await;
    let path = format!("/v1/account/api-keys/{key_id}");
    let narrow = owner_narrows(&app, &org, &key_id, &key);
    let (status, answer) = send_body_after(&app, "PATCH", &path, &key, r#"{"allowed_ips": null}"#, narrow).await;
    assert_eq!((status, &answer["error"]["code"]), (403, &json!("ip_not_allowed")), "{answer}");
    assert_eq!(allowlist_of(&app, &org, &key_id).await, json!(["192.0.2.1"]), "the allowlist stays");
    app.get_account(&key).await.assert_error(403, "ip_not_allowed");
}

async fn a_key_cannot_widen_the_addresses_of_a_key_whose_scopes_it_lacks(app: TestApp) {
    let org = app.signup_org("widen@acme.test").await;
    let writer = app.new_key(&org.key, json!({"name": "W", "scopes": ["write"]})).await;
    app.new_key(&org.key, json!({"name": "R", "allowed_ips": ["192.0.2.0/24"]})).await;
    let reader_id = key_id_of(&app, &org.key, "R").await;
    let path = format!("/v1/account/api-keys/{reader_id}");
    for wider in [json!(null), json!([]), json!(["192.0.0.0/16"]), json!(["198.51.100.1"])] {
        let refused = app.request(Method::PATCH, &path, Some(&writer), Some(json!({ "allowed_ips": wider }))).await;
        refused.assert_error(403, "scope_escalation");
        assert_eq!(refused.body["error"]["field"], json!("allowed_ips"), "{wider}");
        assert_eq!(allowlist_of(&app, &org, &reader_id).await, json!(["192.0.2.0/24"]), "unchanged by {wider}");
    }
    // Narrowing and renaming stay open to any write key.
    let narrower = app.request(Method::PATCH, &path, Some(&writer), Some(json!({"allowed_ips": ["192.0.2.7"]}))).await;
    assert_eq!(narrower.status, StatusCode::OK, "{}", narrower.body);
    let renamed = app.request(Method::PATCH, &path, Some(&writer), Some(json!({"name": "R2"}))).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    // A key holding every scope of it may widen it.
    let widened = app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"allowed_ips": null}))).await;
    assert_eq!(widened.status, StatusCode::OK, "{}", widened.body);
}
