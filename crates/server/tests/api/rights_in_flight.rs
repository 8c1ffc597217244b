//! A key's rights as its owner last set them hold for a write already in flight: a key
//! narrowed to other addresses, or rolled to expire soon, while it holds a write's body back
//! finishes that write under its new rights; a key cannot widen what it may not copy; and
//! concurrent writes never answer 500 for their own locking.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{on_both_backends, Org, TestApp};
use crate::revocation::{key_id_of, send_body_after};

on_both_backends!(
    a_key_narrowed_while_its_change_is_in_flight_cannot_lift_its_own_allowlist,
    a_key_narrowed_while_its_creation_is_in_flight_cannot_finish_it,
    a_key_rolled_while_its_creation_is_in_flight_makes_no_key_that_outlives_it,
    a_key_cannot_widen_the_addresses_of_a_key_whose_scopes_it_lacks,
);

async fn allowlist_of(app: &TestApp, org: &Org, key_id: &str) -> Value {
    let key = app.request(Method::GET, &format!("/v1/account/api-keys/{key_id}"), Some(&org.key), None).await;
    key.data()["allowed_ips"].clone()
}

/// The owner limits `key_id` to 192.0.2.1, and sees the key refused from here at once.
async fn owner_narrows(app: &TestApp, org: &Org, key_id: &str, key: &str) {
    let path = format!("/v1/account/api-keys/{key_id}");
    let narrowed = app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"allowed_ips": ["192.0.2.1"]}))).await;
    assert_eq!(narrowed.status, StatusCode::OK, "{}", narrowed.body);
    app.get_account(key).await.assert_error(403, "ip_not_allowed");
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
