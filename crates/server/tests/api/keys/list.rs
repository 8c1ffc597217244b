//! `GET /v1/account/api-keys`: every key of the organization, newest first, without its
//! secret; `last_used_at` as the instance knows it and as it is written.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{field_names, is_rfc3339_utc, on_both_backends, spawn_app_on, TestApp};

on_both_backends!(
    keys_are_listed_newest_first_with_the_documented_fields_and_no_secret,
    last_used_at_is_null_until_used_then_written_in_the_background,
);

async fn keys_are_listed_newest_first_with_the_documented_fields_and_no_secret(app: TestApp) {
    let org = app.signup_org("list@acme.test").await;
    let mut secrets = vec![org.key.clone()];
    for name in ["Second", "Third"] {
        secrets.push(app.new_key(&org.key, json!({"name": name})).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reply = app.list_keys(&org.key).await;
    let keys = reply.data().as_array().expect("array");
    let names: Vec<&str> = keys.iter().map(|k| k["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["Third", "Second", "Default Key"]);
    for key in keys {
        assert_eq!(
            field_names(key),
            [
                "allowed_ips",
                "created_at",
                "environment",
                "expires_at",
                "id",
                "is_active",
                "key_prefix",
                "last_used_at",
                "name",
                "scopes"
            ]
        );
        assert_eq!(key["is_active"], true);
        assert!(key["key_prefix"]
            .as_str()
            .is_some_and(|p| p.starts_with("mem_live_") && p.ends_with("...") && p.len() == 18));
    }
    let text = reply.body.to_string();
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a listed key leaks its secret");
        assert!(!text.contains(&secret[15..]), "a listed key leaks part of its secret beyond the prefix");
    }
}

async fn last_used_at_is_null_until_used_then_written_in_the_background(app: TestApp) {
    let org = app.signup_org("usage@acme.test").await;
    let unused = app.new_key(&org.key, json!({"name": "Unused"})).await;
    let _ = unused;
    // A second instance on the same database sees only what was written to it.
    let other = spawn_app_on(app.db.clone()).await;
    let listed = app.list_keys(&org.key).await;
    let find = |reply: &crate::helpers::Reply, name: &str| {
        reply.data().as_array().expect("array").iter().find(|k| k["name"] == name).expect("listed").clone()
    };
    assert_eq!(find(&listed, "Unused")["last_used_at"], json!(null));
    assert!(is_rfc3339_utc(&find(&listed, "Default Key")["last_used_at"]), "the instance knows its own uses at once");
    // Flushed within LAST_USED_FLUSH_SECS (1 s in tests).
    let mut seen = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let elsewhere = other.list_keys(&org.key).await;
        if is_rfc3339_utc(&find(&elsewhere, "Default Key")["last_used_at"])
            && find(&elsewhere, "Unused")["last_used_at"].is_null()
        {
            seen = true;
            break;
        }
    }
    assert!(seen, "last_used_at never reached the database");
}
