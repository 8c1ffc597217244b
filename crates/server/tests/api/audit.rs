//! `GET /v1/account/audit-log`: every change recorded, newest first, in pages; each
//! organization sees only its own.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{field_names, is_rfc3339_utc, on_both_backends, TestApp};
use crate::keys::roll::roll;

on_both_backends!(the_audit_log_records_every_change_newest_first_in_pages);

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
        ["action", "actor_key_id", "client_ip", "created_at", "details", "id", "target_id", "user_agent"]
    );
    assert_eq!(revoked["actor_key_id"], json!(org.key_id));
    assert_eq!(revoked["target_id"], json!(temp_id));
    assert_eq!(revoked["client_ip"], "127.0.0.1");
    assert_eq!(revoked["details"], json!({}));
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
