//! `POST /v1/account/api-keys/{key_id}/roll`: the successor, the grace period and its
//! bounds, which keys can be rolled, and the active-key cap.

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{field_names, on_both_backends, spawn_app_with, TestApp};

on_both_backends!(
    a_rolled_key_replaces_the_old_one_which_stops_after_the_grace_period,
    the_default_grace_period_is_a_day_and_never_extends_an_expiry,
    only_active_keys_can_be_rolled,
);

/// `POST /v1/account/api-keys/{key_id}/roll` with `body`.
pub(crate) async fn roll(app: &TestApp, key: &str, key_id: &str, body: Option<Value>) -> crate::helpers::Reply {
    app.request(Method::POST, &format!("/v1/account/api-keys/{key_id}/roll"), Some(key), body).await
}

fn key_named<'a>(list: &'a crate::helpers::Reply, id: &str) -> &'a Value {
    list.data().as_array().expect("array").iter().find(|k| k["id"] == id).expect("listed")
}

async fn a_rolled_key_replaces_the_old_one_which_stops_after_the_grace_period(app: TestApp) {
    let org = app.signup_org("roll@acme.test").await;
    let ci = app.create_key(&org.key, Some(json!({"name": "CI", "scopes": ["read"], "expires_in_days": 30}))).await;
    let (ci_key, ci_id) =
        (ci.data()["key"].as_str().expect("key").to_owned(), ci.data()["id"].as_str().expect("id").to_owned());
    assert_eq!(app.get_account(&ci_key).await.status, StatusCode::OK, "cached before the roll");

    let rolled = roll(&app, &org.key, &ci_id, Some(json!({"expires_in_hours": 0}))).await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.body);
    let data = rolled.data();
    assert_eq!(
        field_names(data),
        [
            "allowed_ips",
            "created_at",
            "environment",
            "expires_at",
            "id",
            "key",
            "key_prefix",
            "name",
            "rolled_from",
            "scopes"
        ]
    );
    assert_eq!(data["rolled_from"], json!(ci_id));
    assert_eq!(data["name"], "CI");
    assert_eq!(data["scopes"], json!(["read"]));
    assert_eq!(data["expires_at"], ci.data()["expires_at"], "the same absolute expiry");
    let new_key = data["key"].as_str().expect("key");
    assert_ne!(new_key, ci_key);
    assert_eq!(app.get_account(new_key).await.status, StatusCode::OK);
    app.get_account(&ci_key).await.assert_error(401, "expired_api_key");
    let list = app.list_keys(&org.key).await;
    assert_eq!(key_named(&list, &ci_id)["is_active"], false);
}

async fn the_default_grace_period_is_a_day_and_never_extends_an_expiry(app: TestApp) {
    let org = app.signup_org("grace@acme.test").await;
    // Made before the roll: afterwards the rolled key expires within a day and may create
    // no key that outlives it.
    let short = app.create_key(&org.key, Some(json!({"name": "Short", "expires_in_days": 1}))).await;
    let rolled = roll(&app, &org.key, &org.key_id, None).await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.body);
    assert_eq!(app.get_account(&org.key).await.status, StatusCode::OK, "the old key works during the grace period");
    let list = app.list_keys(&org.key).await;
    let old = key_named(&list, &org.key_id);
    let expires = time::OffsetDateTime::parse(
        old["expires_at"].as_str().expect("set"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    let hours = (expires - time::OffsetDateTime::now_utc()).whole_minutes();
    assert!((23 * 60..=24 * 60).contains(&hours), "{hours} minutes");

    let short_id = short.data()["id"].as_str().expect("id").to_owned();
    roll(&app, &org.key, &short_id, Some(json!({"expires_in_hours": 168}))).await;
    let list = app.list_keys(&org.key).await;
    assert_eq!(key_named(&list, &short_id)["expires_at"], short.data()["expires_at"], "not extended");
    roll(&app, &org.key, &org.key_id, Some(json!({"expires_in_hours": 169})))
        .await
        .assert_error(400, "validation_error");
    roll(&app, &org.key, &org.key_id, Some(json!({"expires_in_hours": -1})))
        .await
        .assert_error(400, "validation_error");
}

async fn only_active_keys_can_be_rolled(app: TestApp) {
    let org = app.signup_org("roll409@acme.test").await;
    let other = app.new_key(&org.key, json!({"name": "Doomed"})).await;
    let doomed_id = app.list_keys(&org.key).await.data()[0]["id"].as_str().expect("id").to_owned();
    let _ = other;
    app.revoke_key(&org.key, &doomed_id).await;
    roll(&app, &org.key, &doomed_id, None).await.assert_error(409, "key_not_active");
    roll(&app, &org.key, "key_missing", None).await.assert_error(404, "key_not_found");
    let stranger = app.signup_org("roll-stranger@acme.test").await;
    roll(&app, &stranger.key, &org.key_id, None).await.assert_error(404, "key_not_found");
    let read_only = app.new_key(&org.key, json!({"scopes": ["read"]})).await;
    roll(&app, &read_only, &org.key_id, None).await.assert_error(403, "insufficient_scope");
}

/// Rolling with a grace period leaves two keys active for a while: at the limit, that would
/// exceed it, so only a roll that ends the old key at once is allowed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_key_limit_only_a_roll_that_ends_the_old_key_at_once_is_allowed() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = spawn_app_with(backend, &[("MAX_ACTIVE_KEYS_PER_ORG", "2")]).await else {
            continue;
        };
        let org = app.signup_org("roll-cap@acme.test").await;
        let second = app.new_key(&org.key, json!({"name": "Second"})).await;
        for body in [None, Some(json!({"expires_in_hours": 1}))] {
            roll(&app, &org.key, &org.key_id, body).await.assert_error(409, "key_limit_reached");
        }
        assert_eq!(app.key_count(&org.key).await, 2, "the refused rolls stored nothing");
        let listed = app.list_keys(&org.key).await;
        assert_eq!(key_named(&listed, &org.key_id)["expires_at"], json!(null), "no expiry was moved");
        let rolled = roll(&app, &org.key, &org.key_id, Some(json!({"expires_in_hours": 0}))).await;
        assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.body);
        let new_key = rolled.data()["key"].as_str().expect("key").to_owned();
        app.get_account(&org.key).await.assert_error(401, "expired_api_key");
        assert_eq!(app.get_account(&new_key).await.status, StatusCode::OK);
        app.create_key(&second, None).await.assert_error(409, "key_limit_reached");
    }
}
