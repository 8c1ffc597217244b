//! The key routes under `/v1/account/api-keys`, one file per route; `writes.rs` holds what
//! every key write shares. Here: the few steps their tests (and others') take with keys.

mod change;
mod create;
mod list;
mod read;
mod revoke;
pub(crate) mod roll;
mod writes;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Org, Reply, TestApp};

/// Creates a key and returns its full secret and its id.
pub(crate) async fn created(app: &TestApp, key: &str, body: Value) -> (String, String) {
    let reply = app.create_key(key, Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    (reply.data()["key"].as_str().expect("key").to_owned(), reply.data()["id"].as_str().expect("id").to_owned())
}

/// `PATCH /v1/account/api-keys/{key_id}` with `body`.
pub(crate) async fn patch(app: &TestApp, key: &str, key_id: &str, body: Value) -> Reply {
    app.request(Method::PATCH, &format!("/v1/account/api-keys/{key_id}"), Some(key), Some(body)).await
}

/// The id of the key of that name, as the owner lists it.
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

/// The allowlist of `key_id`, as the owner reads it.
pub(crate) async fn allowlist_of(app: &TestApp, org: &Org, key_id: &str) -> Value {
    let key = app.request(Method::GET, &format!("/v1/account/api-keys/{key_id}"), Some(&org.key), None).await;
    key.data()["allowed_ips"].clone()
}

/// The owner limits `key_id` to 192.0.2.1, and sees the key refused from here at once.
pub(crate) async fn owner_narrows(app: &TestApp, org: &Org, key_id: &str, key: &str) {
    let path = format!("/v1/account/api-keys/{key_id}");
    let narrowed = app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"allowed_ips": ["192.0.2.1"]}))).await;
    assert_eq!(narrowed.status, StatusCode::OK, "{}", narrowed.body);
    app.get_account(key).await.assert_error(403, "ip_not_allowed");
}
