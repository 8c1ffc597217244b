//! What instances hold in memory, and how they learn of changes, whatever the route: the
//! cold path (a key no cache holds yet, 32 concurrent misses read the store once), the warm
//! start after a restart, and revocations made elsewhere seen through the change feed (under
//! a burst of changes, committed late by hand) or, with no change row, within the cache's
//! lifetime.

use std::time::{Duration, Instant};

use account_infra::testing::{Backend, TestDatabase};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{on_both_backends, spawn_app, spawn_app_on, spawn_app_on_with, TestApp};
use crate::keys::key_id_of;
use crate::process::{send_signal, sign_up, start_server, wait_with_timeout};

on_both_backends!(
    the_warm_start_window_decides_which_keys_a_starting_instance_loads,
    a_burst_of_changes_does_not_hide_a_revocation_from_another_instance,
    a_revocation_committed_late_by_hand_is_applied_everywhere;
    database: a_restarted_instance_answers_a_recently_used_key_without_reading_the_store;
    backend: a_key_revoked_by_sql_by_hand_is_refused_everywhere_within_the_cache_lifetime,
);

async fn store_reads(app: &TestApp) -> u64 {
    store_reads_at(&app.client, &app.address).await
}

async fn store_reads_at(client: &reqwest::Client, base: &str) -> u64 {
    let text = client.get(format!("{base}/metrics")).send().await.expect("sent").text().await.expect("text");
    let line = text.lines().find(|l| l.starts_with("credential_store_reads_total ")).expect("the metric");
    line.rsplit_once(' ').expect("a value").1.parse().expect("a number")
}

/// The real binary, stopped and started again on its database: once `/readyz` says ready,
/// the key used before the restart is answered from memory; a key never used is not loaded
/// (so the counter does count this process's reads).
async fn a_restarted_instance_answers_a_recently_used_key_without_reading_the_store(db: TestDatabase) {
    let client = reqwest::Client::new();
    let (mut first, port, _logs) = start_server(&db.url(), &[]);
    let base = format!("http://127.0.0.1:{port}");
    let signup = sign_up(&client, &base, "restart@acme.test").await;
    let used = signup["data"]["api_key"]["key"].as_str().expect("key").to_owned();
    let created = client
        .post(format!("{base}/v1/account/api-keys"))
        .bearer_auth(&used)
        .json(&json!({"name": "Never used"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), StatusCode::CREATED);
    let unused =
        created.json::<serde_json::Value>().await.expect("json")["data"]["key"].as_str().expect("key").to_owned();
    send_signal(&first, "TERM");
    assert!(wait_with_timeout(&mut first, Duration::from_secs(15)).success());

    let (mut second, port, logs) = start_server(&db.url(), &[]);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(format!("{base}/readyz")).send().await.expect("sent").status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "the restarted instance never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Logged before the instance says it is ready; the pipe's reader may lag behind a busy machine.
    let warmed = std::iter::from_fn(|| logs.recv_timeout(Duration::from_secs(5)).ok())
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .find(|event| event["message"] == "warm start: recently used keys loaded")
        .expect("the warm start is logged");
    assert_eq!(warmed["keys"], json!(1), "{warmed}");

    let answer = client.get(format!("{base}/v1/account")).bearer_auth(&used).send().await.expect("sent");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(store_reads_at(&client, &base).await, 0, "the recently used key came from memory");
    let answer = client.get(format!("{base}/v1/account")).bearer_auth(&unused).send().await.expect("sent");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(store_reads_at(&client, &base).await, 1, "a key never used is read from the store");
    send_signal(&second, "TERM");
    assert!(wait_with_timeout(&mut second, Duration::from_secs(15)).success());
}

/// The reads are held back by a lock of our own on the keys' table, so that all 32 requests
/// surely miss together; without merging each would read the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_first_requests_for_one_key_read_the_store_once() {
    let Some(app) = spawn_app(Backend::Postgres).await else { return };
    let org = app.signup_org("cold@acme.test").await;
    let fresh = app.new_key(&org.key, json!({"name": "Fresh from a deploy"})).await;
    let before = store_reads(&app).await;
    let mut session = app.db_session();
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let held = tokio::task::spawn_blocking(move || {
        use diesel::connection::SimpleConnection as _;
        session.batch_execute("BEGIN; LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE;").expect("locked");
        locked_tx.send(()).expect("told");
        std::thread::sleep(Duration::from_millis(1500));
        session.batch_execute("COMMIT").expect("released");
    });
    locked.recv().expect("the table is locked");
    let requests: Vec<_> = (0..32)
        .map(|_| {
            let request = app.client.get(app.url("/v1/account")).bearer_auth(&fresh);
            tokio::spawn(async move { request.send().await.expect("sent").status() })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("joined"), StatusCode::OK);
    }
    held.await.expect("the lock was held and released");
    assert_eq!(store_reads(&app).await - before, 1, "32 concurrent misses for one key read the store once");
}

/// `CACHE_WARM_START_SECS` is how far back a starting instance looks: a key last used two
/// hours ago is read from the store by an instance that looks back one hour, and answered
/// from memory by one that looks back three.
async fn the_warm_start_window_decides_which_keys_a_starting_instance_loads(app: TestApp) {
    let org = app.signup_org("window@acme.test").await;
    let created = app.create_key(&org.key, Some(json!({"name": "Used two hours ago"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let (key, key_id) = (created.data()["key"].as_str().expect("key"), created.data()["id"].as_str().expect("id"));
    let two_hours_ago = (time::OffsetDateTime::now_utc() - time::Duration::hours(2)).unix_timestamp() * 1_000_000;
    app.execute_sql(&format!("UPDATE api_keys SET last_used_at = {two_hours_ago} WHERE id = '{key_id}'"));
    for (window, expected_reads) in [("3600", 1), ("10800", 0)] {
        let starting = spawn_app_on_with(app.db.clone(), &[("CACHE_WARM_START_SECS", window)]).await;
        let before = store_reads(&starting).await;
        assert_eq!(starting.get_account(key).await.status, StatusCode::OK);
        assert_eq!(store_reads(&starting).await - before, expected_reads, "CACHE_WARM_START_SECS={window}");
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
