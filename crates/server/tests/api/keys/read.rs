//! `GET /v1/account/api-keys/{key_id}`: one key, as the list shows it.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{on_both_backends, TestApp};

on_both_backends!(one_key_is_read_as_listed_by_any_key_of_its_organization_and_by_no_other);

async fn one_key_is_read_as_listed_by_any_key_of_its_organization_and_by_no_other(app: TestApp) {
    let org = app.signup_org("read-one@acme.test").await;
    let test_reader = app.new_key(&org.key, json!({"environment": "test", "scopes": ["read"]})).await;
    app.get_account(&org.key).await; // a use not yet flushed
    let listed = app.list_keys(&org.key).await;
    let listed = listed.data().as_array().expect("array").iter().find(|k| k["id"] == json!(org.key_id)).cloned();
    let path = format!("/v1/account/api-keys/{}", org.key_id);
    // A test key reads a live key of its organization, as it lists it: the same object.
    let read = app.request(Method::GET, &path, Some(&test_reader), None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(Some(read.data().clone()), listed);
    assert!(read.data().get("key").is_none(), "never the full key");
    // Another organization's key, an unknown id and a malformed one are not found.
    let other = app.signup_org("read-one-other@acme.test").await;
    app.request(Method::GET, &path, Some(&other.key), None).await.assert_error(404, "key_not_found");
    for id in ["key_unknown", "not-an-id"] {
        let path = format!("/v1/account/api-keys/{id}");
        app.request(Method::GET, &path, Some(&org.key), None).await.assert_error(404, "key_not_found");
    }
    // It needs `read`.
    let writer = app.new_key(&org.key, json!({"scopes": ["write"]})).await;
    app.request(Method::GET, &path, Some(&writer), None).await.assert_error(403, "insufficient_scope");
}
