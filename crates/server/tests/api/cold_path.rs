//! The cold path: requests for a key no cache holds yet.

use std::time::{Duration, Instant};

use account_infra::testing::{Backend, TestDatabase};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{on_both_backends, spawn_app, spawn_app_on_with, TestApp};
use crate::process::{send_signal, sign_up, start_server, wait_with_timeout};

on_both_backends!(
    the_warm_start_window_decides_which_keys_a_starting_instance_loads;
    database: a_restarted_instance_answers_a_recently_used_key_without_reading_the_store,
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
    let warmed = logs
        .try_iter()
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
