//! Beyond the document: rolling, renaming, leak reports, the audit trail, the plan
//! catalogue, and verification for other services.

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{field_names, is_rfc3339_utc, on_both_backends, spawn_app_with, TestApp};

on_both_backends!(
    a_rolled_key_replaces_the_old_one_which_stops_after_the_grace_period,
    the_default_grace_period_is_a_day_and_never_extends_an_expiry,
    only_active_keys_can_be_rolled,
    keys_can_be_renamed,
    anyone_holding_leaked_keys_can_revoke_them_and_learns_nothing_else,
    the_audit_log_records_every_change_newest_first_in_pages,
    the_plan_catalogue_is_public,
);

async fn roll(app: &TestApp, key: &str, key_id: &str, body: Option<Value>) -> crate::helpers::Reply {
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

async fn the_audit_log_records_every_change_newest_first_in_pages(app: TestApp) {
    let org = app.signup_org("audit@acme.test").await;
    let created = app.create_key(&org.key, Some(json!({"name": "Temp"}))).await;
    let temp_id = created.data()["id"].as_str().expect("id").to_owned();
    let temp_key = created.data()["key"].as_str().expect("key").to_owned();
    app.request(
        Method::PATCH,
        &format!("/v1/account/api-keys/{temp_id}"),
        Some(&org.key),
        Some(json!({"name": "Renamed"})),
    )
    .await;
    let rolled = roll(&app, &org.key, &temp_id, Some(json!({"expires_in_hours": 1}))).await;
    let replacement_id = rolled.data()["id"].as_str().expect("id").to_owned();
    app.revoke_key(&org.key, &temp_id).await;
    app.request(Method::POST, "/v1/api-keys/revoke-leaked", None, Some(json!({"keys": [temp_key]}))).await;

    let reply = app.request(Method::GET, "/v1/account/audit-log", Some(&org.key), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let events = reply.data()["events"].as_array().expect("events").clone();
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().expect("action")).collect();
    assert_eq!(
        actions,
        ["key.revoked", "key.rolled", "key.created", "key.renamed", "key.created", "signup"],
        "the leak report found the key already revoked"
    );
    // A roll names both keys: the old one rolled, and the new one created in its place.
    assert_eq!((&events[1]["target_id"], &events[2]["target_id"]), (&json!(temp_id), &json!(replacement_id)));
    assert_eq!(events[2]["actor_key_id"], json!(org.key_id));
    assert_eq!(reply.data()["has_more"], false);
    let revoked = &events[0];
    assert_eq!(
        field_names(revoked),
        ["action", "actor_key_id", "client_ip", "created_at", "id", "target_id", "user_agent"]
    );
    assert_eq!(revoked["actor_key_id"], json!(org.key_id));
    assert_eq!(revoked["target_id"], json!(temp_id));
    assert_eq!(revoked["client_ip"], "127.0.0.1");
    assert!(is_rfc3339_utc(&revoked["created_at"]));
    assert_eq!(events[5]["actor_key_id"], Value::Null, "nobody was authenticated at signup");

    let page = app.request(Method::GET, "/v1/account/audit-log?limit=2", Some(&org.key), None).await;
    assert_eq!(page.data()["events"].as_array().expect("events").len(), 2);
    assert_eq!(page.data()["has_more"], true);
    let cursor = page.data()["events"][1]["id"].as_str().expect("id").to_owned();
    let next =
        app.request(Method::GET, &format!("/v1/account/audit-log?limit=2&before={cursor}"), Some(&org.key), None).await;
    let next_actions: Vec<&str> =
        next.data()["events"].as_array().expect("events").iter().map(|e| e["action"].as_str().expect("a")).collect();
    assert_eq!(next_actions, ["key.created", "key.renamed"]);
    for bad in ["limit=0", "limit=101", "limit=x", "before=42", "unknown=1"] {
        app.request(Method::GET, &format!("/v1/account/audit-log?{bad}"), Some(&org.key), None)
            .await
            .assert_error_status(400);
    }
    let other = app.signup_org("audit-other@acme.test").await;
    let theirs = app.request(Method::GET, "/v1/account/audit-log", Some(&other.key), None).await;
    assert_eq!(theirs.data()["events"].as_array().expect("events").len(), 1, "only their own signup");
}

async fn the_plan_catalogue_is_public(app: TestApp) {
    let reply = app.request(Method::GET, "/v1/plans", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.data(),
        &json!([
            {"id": "free", "name": "Free", "base_price_cents": 0, "included_requests_per_month": 10_000},
            {"id": "starter", "name": "Starter", "base_price_cents": 4900, "included_requests_per_month": 1_000_000},
            {"id": "pro", "name": "Pro", "base_price_cents": 19900, "included_requests_per_month": 10_000_000},
        ])
    );
}

const SERVICE_TOKEN: &str = "internal-service-token-for-tests";

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
    let app = spawn_app_with(Backend::Sqlite, &[("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "3")]).await.expect("sqlite");
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
