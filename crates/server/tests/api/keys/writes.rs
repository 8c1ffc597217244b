//! What every key write (create, change, roll, revoke) shares: a key acts only within its
//! environment, its expiry and its addresses; its rights are those its row has when the
//! write commits, even for a body held back; writes are limited per organization, except
//! revocation; and concurrent writes never answer 500 for their own locking.

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{created, key_id_of, patch, send_body_after};
use crate::helpers::{on_both_backends, spawn_app_with, TestApp};

on_both_backends!(
    a_test_key_cannot_revoke_or_rename_live_keys,
    an_expiring_key_creates_and_rolls_only_keys_that_expire_no_later,
    a_limited_key_never_gives_a_key_more_addresses_than_its_own,
    a_revoked_key_cannot_finish_a_write_whose_body_it_held_back,
);

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

async fn an_expiring_key_creates_and_rolls_only_keys_that_expire_no_later(app: TestApp) {
    let org = app.signup_org("expiry@acme.test").await;
    let contractor = app.new_key(&org.key, json!({"name": "Contractor", "expires_in_days": 1})).await;
    let keys = app.list_keys(&org.key).await;
    let limit = keys.data()[0]["expires_at"].as_str().expect("expires").to_owned();
    // Omitted: the new key takes the creator's expiry.
    let made = app.create_key(&contractor, Some(json!({"name": "Made"}))).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(made.data()["expires_at"], json!(limit));
    // Later than the creator: refused, nothing stored.
    let before = app.key_count(&org.key).await;
    let later = app.create_key(&contractor, Some(json!({"name": "Later", "expires_in_days": 30}))).await;
    later.assert_error(403, "expiry_escalation");
    assert_eq!(later.body["error"]["field"], json!("expires_in_days"));
    assert_eq!(app.key_count(&org.key).await, before);
    // A roll's successor of a key that never expires expires with the roller.
    let rolled = app
        .request(
            Method::POST,
            &format!("/v1/account/api-keys/{}/roll", org.key_id),
            Some(&contractor),
            Some(json!({"expires_in_hours": 0})),
        )
        .await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.body);
    assert_eq!(rolled.data()["expires_at"], json!(limit));
}

async fn a_limited_key_never_gives_a_key_more_addresses_than_its_own(app: TestApp) {
    let org = app.signup_org("no-wider@acme.test").await;
    let (limited, limited_id) = created(&app, &org.key, json!({"allowed_ips": ["127.0.0.0/8"]})).await;
    // Omitted: the creator's allowlist; within it: allowed; anywhere or beyond: refused.
    let inherited = app.create_key(&limited, Some(json!({"name": "Inherited"}))).await;
    assert_eq!(inherited.data()["allowed_ips"], json!(["127.0.0.0/8"]));
    let inherited_id = inherited.data()["id"].as_str().expect("id").to_owned();
    assert_eq!(app.create_key(&limited, Some(json!({"allowed_ips": ["127.0.0.1"]}))).await.status, StatusCode::CREATED);
    for wider in [json!(null), json!([]), json!(["10.0.0.1"]), json!(["126.0.0.0/7"])] {
        let reply = app.create_key(&limited, Some(json!({ "allowed_ips": wider }))).await;
        reply.assert_error(403, "address_escalation");
        assert_eq!(reply.body["error"]["field"], json!("allowed_ips"));
        patch(&app, &limited, &inherited_id, json!({ "allowed_ips": wider }))
            .await
            .assert_error(403, "address_escalation");
    }
    let narrowed = patch(&app, &limited, &inherited_id, json!({"allowed_ips": ["127.0.0.2"], "name": "Narrow"})).await;
    assert_eq!(narrowed.data()["allowed_ips"], json!(["127.0.0.2"]));
    assert_eq!(narrowed.data()["name"], json!("Narrow"));
    // A limited key rolls only keys whose allowlist lies within its own; the successor keeps it.
    let roll = |key_id: &str| format!("/v1/account/api-keys/{key_id}/roll");
    app.request(Method::POST, &roll(&org.key_id), Some(&limited), None).await.assert_error(403, "address_escalation");
    let rolled = app.request(Method::POST, &roll(&limited_id), Some(&org.key), None).await;
    assert_eq!(rolled.data()["allowed_ips"], json!(["127.0.0.0/8"]));
    // The trail records the change of allowlist as its own action.
    let trail = app.request(Method::GET, "/v1/account/audit-log", Some(&org.key), None).await;
    let actions: Vec<&str> =
        trail.data()["events"].as_array().expect("events").iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"key.allowlist_changed") && actions.contains(&"key.renamed"), "{actions:?}");
}

async fn a_revoked_key_cannot_finish_a_write_whose_body_it_held_back(app: TestApp) {
    let org = app.signup_org("slow-body@acme.test").await;
    app.new_key(&org.key, json!({"name": "Target"})).await;
    let target = key_id_of(&app, &org.key, "Target").await;
    let writes = [
        ("POST", "/v1/account/api-keys".to_owned(), r#"{"name": "Backdoor"}"#),
        ("POST", format!("/v1/account/api-keys/{target}/roll"), r#"{"expires_in_hours": 0}"#),
        ("PATCH", format!("/v1/account/api-keys/{target}"), r#"{"name": "Taken over"}"#),
    ];
    for (i, (method, path, body)) in writes.iter().enumerate() {
        let name = format!("Leaked {i}");
        let leaked = app.new_key(&org.key, json!({ "name": name })).await;
        let leaked_id = key_id_of(&app, &org.key, &name).await;
        let before = app.key_count(&org.key).await;
        let owner_revokes = async {
            assert_eq!(app.revoke_key(&org.key, &leaked_id).await.status, StatusCode::OK);
            app.get_account(&leaked).await.assert_error(401, "revoked_api_key");
        };
        let (status, answer) = send_body_after(&app, method, path, &leaked, body, owner_revokes).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], json!("revoked_api_key"), "{answer}");
        // Nothing was written: no new key, the target neither rolled nor renamed.
        assert_eq!(app.key_count(&org.key).await, before, "{method} {path}");
        let keys = app.list_keys(&org.key).await;
        let target_now = keys.data().as_array().expect("array").iter().find(|k| k["id"] == json!(target)).cloned();
        let target_now = target_now.expect("listed");
        assert_eq!(target_now["name"], json!("Target"));
        assert_eq!(target_now["expires_at"], Value::Null, "not rolled");
    }
}

#[tokio::test]
async fn writes_beyond_the_organizations_limit_get_429_but_revocation_always_works() {
    let app = spawn_app_with(Backend::Sqlite, &[("RATE_LIMIT_WRITES_PER_MINUTE", "3")]).await.expect("sqlite");
    let org = app.signup_org("writes@acme.test").await;
    let other = app.signup_org("writes-other@acme.test").await;

    // 1: a creation.
    let created = app.create_key(&org.key, Some(json!({"name": "Spare"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let spare = created.data()["id"].as_str().expect("id").to_owned();
    // Revocations are not counted.
    for _ in 0..5 {
        assert_eq!(app.revoke_key(&org.key, &spare).await.status, StatusCode::OK);
    }
    // 2: a failed write counts as well.
    rename(&app, &org.key, "key_0000").await.assert_error(404, "key_not_found");
    // 3: a roll.
    let rolled =
        app.request(Method::POST, &format!("/v1/account/api-keys/{}/roll", org.key_id), Some(&org.key), None).await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.body);
    let rolled_id = rolled.data()["id"].as_str().expect("id").to_owned();

    let refused = app.create_key(&org.key, None).await;
    refused.assert_error(429, "rate_limited");
    let retry_after: u64 = refused.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(refused.body["error"]["message"].as_str().is_some_and(|m| m.contains("organization")), "{}", refused.body);
    rename(&app, &org.key, &org.key_id).await.assert_error(429, "rate_limited");
    assert_eq!(app.key_count(&org.key).await, 3, "nothing was created past the limit");

    let elsewhere = app.create_key(&other.key, None).await;
    assert_eq!(elsewhere.status, StatusCode::CREATED, "another organization has its own limit: {}", elsewhere.body);
    // Over its limit, the organization can still revoke.
    let revoked = app.revoke_key(&org.key, &rolled_id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.data()["is_active"], false);
}

async fn rename(app: &TestApp, key: &str, key_id: &str) -> crate::helpers::Reply {
    app.request(Method::PATCH, &format!("/v1/account/api-keys/{key_id}"), Some(key), Some(json!({"name": "X"}))).await
}

/// Pairs of concurrent writes that lock the same rows, on PostgreSQL (SQLite has one writer at
/// a time): a key revoking itself twice (a client that retries), two keys revoking each other,
/// the owner and the key revoking it together, a roll against a revocation. None answers 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_revocations_and_rolls_never_answer_500_on_postgres() {
    let settings = [("RATE_LIMIT_WRITES_PER_MINUTE", "0"), ("MAX_ACTIVE_KEYS_PER_ORG", "1000")];
    let Some(app) = crate::helpers::spawn_app_with(account_infra::testing::Backend::Postgres, &settings).await else {
        return;
    };
    let org = app.signup_org("deadlock@acme.test").await;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let new_key = |name: String| {
        let app = &app;
        let owner = org.key.clone();
        async move {
            let made = app.create_key(&owner, Some(json!({ "name": name }))).await;
            assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
            let path = format!("/v1/account/api-keys/{}", made.data()["id"].as_str().expect("id"));
            (made.data()["key"].as_str().expect("key").to_owned(), path)
        }
    };
    let write = |key: &str, method: Method, path: &str| {
        let (app, key, path) = (&app, key.to_owned(), path.to_owned());
        let body = (method == Method::POST).then(|| json!({"expires_in_hours": 0}));
        async move { app.request(method, &path, Some(&key), body).await }
    };
    for round in 0..100 {
        let ((a, a_path), (b, b_path)) = tokio::join!(new_key(format!("A{round}")), new_key(format!("B{round}")));
        let roll_a = format!("{a_path}/roll");
        let pair = match round % 4 {
            // A key revoking itself twice at once (a client that retries).
            0 => tokio::join!(write(&a, Method::DELETE, &a_path), write(&a, Method::DELETE, &a_path)),
            // Two keys revoking each other.
            1 => tokio::join!(write(&a, Method::DELETE, &b_path), write(&b, Method::DELETE, &a_path)),
            // The owner revoking a key while it revokes itself.
            2 => tokio::join!(write(&org.key, Method::DELETE, &a_path), write(&a, Method::DELETE, &a_path)),
            // A roll of a key against its revocation.
            _ => tokio::join!(write(&b, Method::POST, &roll_a), write(&a, Method::DELETE, &a_path)),
        };
        for reply in [pair.0, pair.1] {
            assert!(!reply.status.is_server_error(), "round {round}: {} {}", reply.status, reply.body);
            *statuses.entry(reply.status.as_u16()).or_default() += 1;
        }
    }
    // Every pair was answered by the rules (one of the two first, the other as it then
    // stood: 200/201, or 401 for a key the first revoked, or 409 for a roll of a revoked key).
    assert!(statuses.keys().all(|status| [200, 201, 401, 409].contains(status)), "{statuses:?}");
    assert_eq!(statuses.values().sum::<usize>(), 200);
}
