//! Who may call what: keys, schemes, scopes, revocation, expiry, inactive organizations.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{on_both_backends, spawn_app_on, TestApp};

on_both_backends!(
    requests_without_a_valid_key_get_401,
    the_bearer_scheme_word_is_case_insensitive,
    revoked_keys_are_rejected_on_the_next_request,
    expired_keys_are_rejected,
    keys_of_an_inactive_organization_get_403,
    each_route_needs_its_scope,
    a_key_revoked_on_one_instance_is_refused_by_another_within_a_second,
);

async fn requests_without_a_valid_key_get_401(app: TestApp) {
    let org = app.signup_org("auth@acme.test").await;
    let mut typo = org.key.clone();
    let last = typo.pop().expect("non-empty");
    typo.push(if last == 'a' { 'b' } else { 'a' });
    // Well formed with a valid checksum, but never issued.
    let stranger = account_domain::PlaintextKey::assemble(
        account_domain::Environment::Live,
        &account_domain::Generator::key_secret(&account_infra::OsRandomGenerator),
    );
    let stranger = stranger.expose().to_owned();
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing_api_key"),
        (Some(String::new()), "invalid_api_key"),
        (Some("Bearer".to_owned()), "invalid_api_key"),
        (Some("Bearer ".to_owned()), "invalid_api_key"),
        (Some(format!("Basic {}", org.key)), "invalid_api_key"),
        (Some(format!("Token {}", org.key)), "invalid_api_key"),
        (Some("Bearer mem_live_short".to_owned()), "invalid_api_key"),
        (Some("Bearer sk_live_abcdefghijklmnopqrstuvwxyz0123456789AB".to_owned()), "invalid_api_key"),
        (Some(format!("Bearer {typo}")), "invalid_api_key"),
        (Some(format!("Bearer {stranger}")), "invalid_api_key"),
    ];
    for (header, code) in cases {
        for path in ["/v1/account", "/v1/account/api-keys"] {
            let mut request = app.client.get(app.url(path));
            if let Some(header) = &header {
                request = request.header("authorization", header);
            }
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], code, "{header:?}: {body}");
        }
    }
    // Bytes that are not text (a header may carry them) make a key malformed too.
    let mut bytes = format!("Bearer {}", org.key).into_bytes();
    bytes[12] = 0xff;
    let header = reqwest::header::HeaderValue::from_bytes(&bytes).expect("obs-text is a valid header byte");
    let response = app.client.get(app.url("/v1/account")).header("authorization", header).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    let reply = app.request(Method::POST, "/v1/account/api-keys", Some(&typo), Some(json!({}))).await;
    reply.assert_error(401, "invalid_api_key");
}

async fn the_bearer_scheme_word_is_case_insensitive(app: TestApp) {
    let org = app.signup_org("scheme@acme.test").await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = app
            .client
            .get(app.url("/v1/account"))
            .header("authorization", format!("{scheme} {}", org.key))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }
}

async fn revoked_keys_are_rejected_on_the_next_request(app: TestApp) {
    let org = app.signup_org("revoked@acme.test").await;
    let second = app.new_key(&org.key, json!({"name": "Second"})).await;
    assert_eq!(app.get_account(&second).await.status, StatusCode::OK);
    let list = app.list_keys(&org.key).await;
    let second_id = list.data()[0]["id"].as_str().expect("id").to_owned();
    let revoked = app.revoke_key(&org.key, &second_id).await;
    assert_eq!(revoked.status, StatusCode::OK);
    app.get_account(&second).await.assert_error(401, "revoked_api_key");
    app.list_keys(&second).await.assert_error(401, "revoked_api_key");
    // A key may revoke itself, and is dead right after.
    assert_eq!(app.revoke_key(&org.key, &org.key_id).await.status, StatusCode::OK);
    app.get_account(&org.key).await.assert_error(401, "revoked_api_key");
}

async fn expired_keys_are_rejected(app: TestApp) {
    let org = app.signup_org("expired@acme.test").await;
    let short = app.new_key(&org.key, json!({"name": "Short", "expires_in_days": 1})).await;
    // A day later, as far as the database is concerned (before any use: nothing cached).
    app.execute_sql("UPDATE api_keys SET expires_at = created_at - 1000000 WHERE name = 'Short'");
    app.get_account(&short).await.assert_error(401, "expired_api_key");
    let listed = app.list_keys(&org.key).await;
    let entry = listed.data().as_array().expect("array").iter().find(|k| k["name"] == "Short").expect("listed").clone();
    assert_eq!(entry["is_active"], false);
}

async fn keys_of_an_inactive_organization_get_403(app: TestApp) {
    let org = app.signup_org("inactive@acme.test").await;
    let other = app.signup_org("active@acme.test").await;
    app.execute_sql(&format!("UPDATE organizations SET is_active = false WHERE id = '{}'", org.id));
    // Its account stays readable, showing why (`is_active: false`); nothing else answers.
    let account = app.get_account(&org.key).await;
    assert_eq!(account.data()["is_active"], json!(false), "{}", account.body);
    app.list_keys(&org.key).await.assert_error(403, "organization_inactive");
    app.create_key(&org.key, None).await.assert_error(403, "organization_inactive");
    assert_eq!(app.get_account(&other.key).await.status, StatusCode::OK);
}

async fn each_route_needs_its_scope(app: TestApp) {
    let org = app.signup_org("scopes@acme.test").await;
    let read = app.new_key(&org.key, json!({"scopes": ["read"]})).await;
    let write = app.new_key(&org.key, json!({"scopes": ["write"]})).await;

    assert_eq!(app.get_account(&read).await.status, StatusCode::OK);
    assert_eq!(app.list_keys(&read).await.status, StatusCode::OK);
    app.create_key(&read, None).await.assert_error(403, "insufficient_scope");
    app.revoke_key(&read, &org.key_id).await.assert_error(403, "insufficient_scope");

    app.get_account(&write).await.assert_error(403, "insufficient_scope");
    app.list_keys(&write).await.assert_error(403, "insufficient_scope");
    let created = app.create_key(&write, Some(json!({"scopes": ["write"]}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    // The main key is still alive: nothing was revoked by the refused attempt.
    assert_eq!(app.get_account(&org.key).await.status, StatusCode::OK);
}

async fn a_key_revoked_on_one_instance_is_refused_by_another_within_a_second(app: TestApp) {
    let other = spawn_app_on(app.db.clone()).await;
    let org = app.signup_org("everywhere@acme.test").await;
    let doomed = app.new_key(&org.key, json!({"name": "Doomed"})).await;
    let doomed_id = app.list_keys(&org.key).await.data()[0]["id"].as_str().expect("id").to_owned();
    // Both instances know (and cache) the key.
    for _ in 0..3 {
        assert_eq!(app.get_account(&doomed).await.status, StatusCode::OK);
        assert_eq!(other.get_account(&doomed).await.status, StatusCode::OK);
    }
    assert_eq!(app.revoke_key(&org.key, &doomed_id).await.status, StatusCode::OK);
    let revoked = std::time::Instant::now();
    app.get_account(&doomed).await.assert_error(401, "revoked_api_key");
    loop {
        let reply = other.get_account(&doomed).await;
        if reply.status == StatusCode::UNAUTHORIZED {
            reply.assert_error(401, "revoked_api_key");
            break;
        }
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(1),
            "the other instance still serves the revoked key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The other keys of the organization keep working on both.
    assert_eq!(other.get_account(&org.key).await.status, StatusCode::OK);
}
