//! What the HTTP layer answers before any route decides, on every route, in the envelope
//! too: unknown routes, wrong methods, bodies too large, not JSON or never finished,
//! oversized headers; and no error answer repeats a key that was sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{on_both_backends, spawn_app_with, TestApp};

on_both_backends!(
    unknown_routes_get_404_in_the_envelope,
    wrong_methods_get_405_with_allow,
    bodies_over_64_kib_get_413,
    bodies_that_are_not_json_get_415,
    error_answers_never_repeat_a_key_that_was_sent,
);

async fn unknown_routes_get_404_in_the_envelope(app: TestApp) {
    for path in ["/", "/v1", "/v1/accounts", "/v1/account/api-keys/key_x/extra", "/healthz/"] {
        app.request(Method::GET, path, None, None).await.assert_error(404, "not_found");
    }
}

/// Every path of the served document, asked with a method it does not list, answers 405
/// and lists in `Allow` exactly the methods the document gives it.
async fn wrong_methods_get_405_with_allow(app: TestApp) {
    let doc = app.request(Method::GET, "/openapi.json", None, None).await.body;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let mut documented: Vec<String> = item.as_object().expect("item").keys().map(|m| m.to_uppercase()).collect();
        documented.sort();
        let unlisted = ["PUT", "DELETE", "POST", "PATCH", "GET"]
            .into_iter()
            .find(|m| !documented.iter().any(|d| d == m))
            .expect("a method the path does not take");
        let path = path.replace("{key_id}", "key_abc");
        let reply = app.request(Method::from_bytes(unlisted.as_bytes()).expect("method"), &path, None, None).await;
        reply.assert_error(405, "method_not_allowed");
        assert_eq!(reply.headers["allow"], documented.join(", "), "{unlisted} {path}");
    }
}

async fn bodies_over_64_kib_get_413(app: TestApp) {
    let name = "a".repeat(70 * 1024);
    let body = format!(r#"{{"name": "{name}", "email": "big@acme.test"}}"#).into_bytes();
    let reply = app.send_raw(Method::POST, "/v1/signup", None, "application/json", body).await;
    reply.assert_error(413, "payload_too_large");
    // Nothing was stored.
    app.signup_org("big@acme.test").await;
}

async fn bodies_that_are_not_json_get_415(app: TestApp) {
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/xml"] {
        let body = br#"{"name": "Acme", "email": "type@acme.test"}"#.to_vec();
        let reply = app.send_raw(Method::POST, "/v1/signup", None, content_type, body).await;
        reply.assert_error(415, "unsupported_media_type");
    }
    let reply = app
        .send_raw(
            Method::POST,
            "/v1/signup",
            None,
            "application/json; charset=utf-8",
            br#"{"name": "Acme", "email": "type@acme.test"}"#.to_vec(),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 201, "{}", reply.body);
}

#[tokio::test]
async fn a_body_that_never_finishes_arriving_is_cut_off_with_408() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await.expect("sqlite");
    let port: u16 = app.address.rsplit(':').next().expect("port").parse().expect("port");
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        stream
            .write_all(b"POST /v1/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"name\"")
            .expect("sent");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    })
    .await
    .expect("joined");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains(r#""code":"request_timeout""#), "{response}");
}

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await.expect("sqlite");
    let response = app.client.get(app.url("/healthz")).header("x-padding", "a".repeat(128 * 1024)).send().await;
    match response {
        Ok(r) => assert!(r.status().is_client_error(), "{}", r.status()),
        // The server may also close the connection on a head this large.
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    assert_eq!(app.request(Method::GET, "/healthz", None, None).await.status, StatusCode::OK);
}

async fn error_answers_never_repeat_a_key_that_was_sent(app: TestApp) {
    let org = app.signup_org("echo@acme.test").await;
    let key = org.key.as_str();
    let leak = "/v1/api-keys/revoke-leaked";
    let create = "/v1/account/api-keys";
    let mut as_field_name = serde_json::Map::new();
    as_field_name.insert(key.to_owned(), json!(["mem_live_x"]));
    let cases: Vec<(&str, Option<&str>, Value, Option<&str>)> = vec![
        // A key where a list of keys belongs.
        (leak, None, json!({ "keys": key }), Some("keys")),
        (leak, None, json!({ "keys": [[key]] }), Some("keys[0]")),
        // A key as the name of an unknown field.
        (leak, None, Value::Object(as_field_name.clone()), None),
        (create, Some(key), Value::Object(as_field_name), None),
        // A key in fields of create key that want another type, or another word.
        (create, Some(key), json!({ "name": [key] }), Some("name")),
        (create, Some(key), json!({ "name": { key: key } }), Some("name")),
        (create, Some(key), json!({ "expires_in_days": key }), Some("expires_in_days")),
        (create, Some(key), json!({ "scopes": key }), Some("scopes")),
        (create, Some(key), json!({ "scopes": [key] }), Some("scopes")),
        (create, Some(key), json!({ "environment": key }), Some("environment")),
        // A key as a plan.
        ("/v1/signup", None, json!({"name": "Acme", "email": "echo2@acme.test", "plan_id": key}), Some("plan_id")),
        (
            "/v1/signup",
            None,
            json!({"name": "Acme", "email": "echo2@acme.test", "plan_id": key.to_lowercase()}),
            Some("plan_id"),
        ),
    ];
    for (path, auth, body, field) in cases {
        let reply = app.request(Method::POST, path, auth, Some(body.clone())).await;
        reply.assert_error_status(400);
        let content_type = reply.headers["content-type"].to_str().expect("ascii");
        assert!(content_type.starts_with("application/json"), "{content_type}");
        assert!(!holds_part_of(&reply, key), "{body} -> {}", reply.body);
        assert_eq!(reply.body["error"]["field"].as_str(), field, "{body} -> {}", reply.body);
    }
    for query in [format!("{key}=1"), format!("limit={key}"), format!("before={key}")] {
        let reply = app.request(Method::GET, &format!("/v1/account/audit-log?{query}"), Some(key), None).await;
        reply.assert_error_status(400);
        assert!(!holds_part_of(&reply, key), "{query} -> {}", reply.body);
    }
    // None of it revoked the key.
    assert_eq!(app.get_account(key).await.status, StatusCode::OK);
}

/// Whether any 10 characters of the key's secret (past `mem_live_`) are in the answer, in
/// any case.
fn holds_part_of(reply: &crate::helpers::Reply, key: &str) -> bool {
    let secret = key["mem_live_".len()..].to_lowercase();
    let mut answer = reply.body.to_string().to_lowercase();
    for value in reply.headers.values() {
        answer.push_str(&String::from_utf8_lossy(value.as_bytes()).to_lowercase());
    }
    (0..=secret.len() - 10).any(|i| answer.contains(&secret[i..i + 10]))
}
