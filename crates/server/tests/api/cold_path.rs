//! The cold path: requests for a key no cache holds yet.

use std::time::Duration;

use account_infra::testing::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, TestApp};

async fn store_reads(app: &TestApp) -> u64 {
    let text = app.client.get(app.url("/metrics")).send().await.expect("sent").text().await.expect("text");
    let line = text.lines().find(|l| l.starts_with("credential_store_reads_total ")).expect("the metric");
    line.rsplit_once(' ').expect("a value").1.parse().expect("a number")
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
