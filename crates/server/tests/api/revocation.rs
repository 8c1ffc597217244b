//! The revocation promise under attack: a client that holds its body back, a burst of
//! changes, a transaction that commits late, a change made by SQL by hand, an expiring key
//! that tries to outlive itself. Each is checked through an instance that did not see the
//! change itself, where one is involved.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{on_both_backends, spawn_app_on, TestApp};

on_both_backends!(
    a_revoked_key_cannot_finish_a_write_whose_body_it_held_back,
    a_burst_of_changes_does_not_hide_a_revocation_from_another_instance,
    a_revocation_committed_late_by_hand_is_applied_everywhere,
    an_expiring_key_creates_and_rolls_only_keys_that_expire_no_later;
    backend: a_key_revoked_by_sql_by_hand_is_refused_everywhere_within_the_cache_lifetime,
);

pub(crate) async fn key_id_of(app: &TestApp, owner: &str, name: &str) -> String {
    let keys = app.list_keys(owner).await;
    let found = keys.data().as_array().expect("array").iter().find(|k| k["name"] == json!(name)).cloned();
    found.expect("listed")["id"].as_str().expect("id").to_owned()
}

/// Sends a request's head at once and its body only after `meanwhile` has run.
pub(crate) async fn send_body_after(
    app: &TestApp,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
    meanwhile: impl std::future::Future<Output = ()>,
) -> (u16, Value) {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head sent");
    // Long enough for the server to have authenticated the key and to wait for the body.
    tokio::time::sleep(Duration::from_millis(300)).await;
    meanwhile.await;
    stream.write_all(body.as_bytes()).await.expect("body sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("an answer");
    let status = response[9..12].parse().expect("a status");
    let json = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
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

async fn a_burst_of_changes_does_not_hide_a_revocation_from_another_instance(app: TestApp) {
    let other = spawn_app_on(app.db.clone()).await;
    let org = app.signup_org("burst@acme.test").await;
    let doomed = app.new_key(&org.key, json!({"name": "Doomed"})).await;
    let doomed_id = key_id_of(&app, &org.key, "Doomed").await;
    assert_eq!(other.get_account(&doomed).await.status, StatusCode::OK, "cached by the other instance");
    // 30,000 changes committed at once by our own SQL session (a script renaming keys).
    let burst = match app.db.target() {
        account_infra::DatabaseTarget::Sqlite(_) => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000) \
             INSERT INTO cache_events (key_hash, created_at) SELECT printf('%064x', i), 1 FROM n;"
        }
        account_infra::DatabaseTarget::Postgres(_) => {
            "INSERT INTO cache_events (key_hash, created_at) \
             SELECT md5(i::text) || md5(i::text), 1 FROM generate_series(1, 30000) AS i;"
        }
    };
    app.execute_sql(burst);
    assert_eq!(app.revoke_key(&org.key, &doomed_id).await.status, StatusCode::OK);
    let revoked = Instant::now();
    while other.get_account(&doomed).await.status == StatusCode::OK {
        assert!(revoked.elapsed() < Duration::from_secs(1), "the burst hid the revocation for over a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    other.get_account(&doomed).await.assert_error(401, "revoked_api_key");
}

async fn a_revocation_committed_late_by_hand_is_applied_everywhere(app: TestApp) {
    let other = spawn_app_on(app.db.clone()).await;
    let org = app.signup_org("late@acme.test").await;
    let doomed = app.new_key(&org.key, json!({"name": "Doomed"})).await;
    let doomed_id = key_id_of(&app, &org.key, "Doomed").await;
    let mut bystanders = Vec::new();
    for i in 0..4 {
        let name = format!("Bystander {i}");
        let key = app.new_key(&org.key, json!({ "name": name })).await;
        bystanders.push((key_id_of(&app, &org.key, &name).await, key));
    }
    for instance in [&app, &other] {
        assert_eq!(instance.get_account(&doomed).await.status, StatusCode::OK, "cached");
    }
    for (_, key) in &bystanders {
        assert_eq!(other.get_account(key).await.status, StatusCode::OK, "cached");
    }
    // Past both instances' usage flushes (every second here): a flush still holding the
    // doomed key's use would wait on the held row with the owner's key row locked, and the
    // writes below would time out behind it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The operator's procedure (docs/operations.md), in a transaction held open for 11 s.
    let sql = format!(
        "UPDATE api_keys SET revoked_at = 1 WHERE id = '{doomed_id}'; \
         INSERT INTO cache_events (key_hash, created_at) SELECT key_hash, 1 FROM api_keys WHERE id = '{doomed_id}';"
    );
    let postgres = matches!(app.db.target(), account_infra::DatabaseTarget::Postgres(_));
    let mut session = app.db_session();
    let (opened_tx, opened) = std::sync::mpsc::channel();
    let held = tokio::task::spawn_blocking(move || {
        use diesel::connection::SimpleConnection as _;
        session
            .batch_execute(&format!("{} {sql}", if postgres { "BEGIN;" } else { "BEGIN IMMEDIATE;" }))
            .expect("open");
        opened_tx.send(()).expect("told");
        std::thread::sleep(Duration::from_secs(11));
        session.batch_execute("COMMIT").expect("committed late");
    });
    if postgres {
        // Later changes that publish feed rows (ids past the held one's) commit meanwhile, and
        // the other instance applies them: a feed read past the last id seen would now have
        // passed the held row for good.
        tokio::task::spawn_blocking(move || opened.recv().expect("the change is in flight")).await.expect("joined");
        for (i, (id, key)) in bystanders.iter().enumerate() {
            let path = format!("/v1/account/api-keys/{id}");
            let renamed =
                app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"name": format!("Renamed {i}")})));
            let renamed = renamed.await;
            assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
            let revoked = app.revoke_key(&org.key, id).await;
            assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
            let revoked = Instant::now();
            while other.get_account(key).await.status == StatusCode::OK {
                assert!(revoked.elapsed() < Duration::from_secs(1), "a later revocation was not applied");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    while !held.is_finished() {
        for instance in [&app, &other] {
            assert_eq!(instance.get_account(&doomed).await.status, StatusCode::OK, "not revoked before its commit");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    held.await.expect("joined");
    let committed = Instant::now();
    for instance in [&app, &other] {
        while instance.get_account(&doomed).await.status == StatusCode::OK {
            assert!(committed.elapsed() < Duration::from_secs(1), "a late commit was lost");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
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

/// No change row: only the cache entries' lifetime (`CACHE_TTL_SECS`) bounds it.
async fn a_key_revoked_by_sql_by_hand_is_refused_everywhere_within_the_cache_lifetime(
    backend: account_infra::testing::Backend,
) {
    let settings = [("CACHE_TTL_SECS", "3")];
    let Some(app) = crate::helpers::spawn_app_with(backend, &settings).await else { return };
    let other = crate::helpers::spawn_app_on_with(app.db.clone(), &settings).await;
    let org = app.signup_org("by-hand@acme.test").await;
    let doomed = app.new_key(&org.key, json!({"name": "Doomed"})).await;
    let doomed_id = key_id_of(&app, &org.key, "Doomed").await;
    for instance in [&app, &other] {
        assert_eq!(instance.get_account(&doomed).await.status, StatusCode::OK, "cached");
    }
    app.execute_sql(&format!("UPDATE api_keys SET revoked_at = 1 WHERE id = '{doomed_id}'"));
    let revoked = Instant::now();
    for instance in [&app, &other] {
        while instance.get_account(&doomed).await.status == StatusCode::OK {
            assert!(revoked.elapsed() < Duration::from_secs(4), "a cached key outlived its lifetime");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        instance.get_account(&doomed).await.assert_error(401, "revoked_api_key");
    }
}
