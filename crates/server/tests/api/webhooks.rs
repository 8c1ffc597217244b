//! `/v1/account/webhooks`: an organization registers, lists, reads, changes and deletes its
//! webhook endpoints and rotates their signing secrets; non-public targets are refused.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{audit_actions_by_sql, on_both_backends, spawn_app_with, Reply, TestApp};
use account_infra::testing::Backend;

on_both_backends!(
    backend:
    an_endpoint_is_registered_listed_read_changed_and_deleted_and_its_secret_shown_once,
    rotating_a_secret_shows_the_new_one_once_and_keeps_the_previous_for_a_day,
    an_organization_has_at_most_ten_endpoints,
    bad_urls_and_event_lists_are_refused_and_store_nothing,
    without_private_targets_allowed_every_spelling_of_a_non_public_address_is_refused,
    without_a_secret_key_the_webhook_routes_answer_503,
    only_a_live_key_with_the_scope_manages_endpoints_and_only_its_own,
    webhook_writes_count_against_the_organizations_write_limit,
    a_key_revoked_or_narrowed_while_its_webhook_write_holds_its_body_back_cannot_finish_it,
    a_webhook_write_waiting_for_its_organization_sees_its_key_revoked_meanwhile,
);

/// A `WEBHOOK_SECRET_KEY`: 32 bytes, base64.
const SECRET_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// An instance with webhooks on, allowed to target loopback (the tests' receivers).
async fn app_with_webhooks(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, &[("WEBHOOK_SECRET_KEY", SECRET_KEY), ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "1")]).await
}

async fn create(app: &TestApp, key: &str, body: Value) -> Reply {
    app.request(Method::POST, "/v1/account/webhooks", Some(key), Some(body)).await
}

async fn registered(app: &TestApp, key: &str) -> Value {
    let reply = create(app, key, json!({"url": "http://127.0.0.1:9/hook", "events": ["key.created"]})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.data().clone()
}

/// The secret's 32 bytes, checked to be `whsec_` and base64.
fn secret_bytes(data: &Value) -> Vec<u8> {
    let secret = data["secret"].as_str().expect("a secret");
    let bytes = BASE64.decode(secret.strip_prefix("whsec_").expect("whsec_ prefix")).expect("base64");
    assert_eq!(bytes.len(), 32);
    bytes
}

async fn delete(app: &TestApp, key: &str, id: &str) -> StatusCode {
    let url = app.url(&format!("/v1/account/webhooks/{id}"));
    app.client.delete(url).bearer_auth(key).send().await.expect("sent").status()
}

/// Every stored sealed secret of the test database, as text.
fn stored_secrets(app: &TestApp) -> String {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        secret_sealed: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        previous_secret_sealed: Option<String>,
    }
    let mut conn = app.db_session();
    let rows: Vec<Row> = diesel::RunQueryDsl::load(
        diesel::sql_query("SELECT secret_sealed, previous_secret_sealed FROM webhook_endpoints"),
        &mut conn,
    )
    .expect("read");
    rows.iter().map(|r| format!("{} {}", r.secret_sealed, r.previous_secret_sealed.as_deref().unwrap_or(""))).collect()
}

async fn an_endpoint_is_registered_listed_read_changed_and_deleted_and_its_secret_shown_once(backend: Backend) {
    let Some(app) = app_with_webhooks(backend).await else { return };
    let org = app.signup_org("hooks@acme.test").await;
    let reply = create(
        &app,
        &org.key,
        json!({"url": "http://127.0.0.1:9/hook", "events": ["key.revoked", "key.created", "key.revoked"], "description": "ops"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let data = reply.data();
    let id = data["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("wh_"), "{id}");
    assert_eq!(data["url"], "http://127.0.0.1:9/hook");
    assert_eq!(data["events"], json!(["key.created", "key.revoked"]), "each once");
    assert_eq!((&data["enabled"], &data["description"]), (&json!(true), &json!("ops")));
    let secret = secret_bytes(data);
    // Stored sealed: neither the secret's text nor its bytes' base64 is in the database.
    let stored = stored_secrets(&app);
    assert!(!stored.contains(data["secret"].as_str().expect("secret")));
    assert!(!stored.contains(&BASE64.encode(&secret)));

    // Never shown again.
    let listed = app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None).await;
    let endpoints = listed.data().as_array().expect("a list");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["id"], id.as_str());
    assert!(endpoints[0].get("secret").is_none(), "{}", endpoints[0]);
    let one = app.request(Method::GET, &format!("/v1/account/webhooks/{id}"), Some(&org.key), None).await;
    assert_eq!(one.data(), &endpoints[0]);

    let path = format!("/v1/account/webhooks/{id}");
    let changed = app
        .request(
            Method::PATCH,
            &path,
            Some(&org.key),
            Some(json!({"events": ["account.closed"], "enabled": false, "description": null})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let c = changed.data();
    assert_eq!(
        (&c["events"], &c["enabled"], &c["description"]),
        (&json!(["account.closed"]), &json!(false), &Value::Null)
    );
    assert_eq!(c["url"], "http://127.0.0.1:9/hook", "unchanged");

    assert_eq!(delete(&app, &org.key, &id).await, StatusCode::NO_CONTENT);
    app.request(Method::GET, &path, Some(&org.key), None).await.assert_error(404, "webhook_not_found");
    assert_eq!(delete(&app, &org.key, &id).await, StatusCode::NOT_FOUND);

    let actions: Vec<_> = audit_actions_by_sql(&app.db, &org.id)
        .into_iter()
        .filter(|(action, _)| action.starts_with("webhook."))
        .collect();
    assert_eq!(
        actions,
        [
            ("webhook.created".to_owned(), None),
            ("webhook.updated".to_owned(), Some(r#"{"fields":["events","description","enabled"]}"#.to_owned())),
            ("webhook.deleted".to_owned(), None),
        ]
    );
}

async fn rotating_a_secret_shows_the_new_one_once_and_keeps_the_previous_for_a_day(backend: Backend) {
    let Some(app) = app_with_webhooks(backend).await else { return };
    let org = app.signup_org("rotate@acme.test").await;
    let first = registered(&app, &org.key).await;
    assert_eq!(first["previous_secret_expires_at"], Value::Null);
    let id = first["id"].as_str().expect("id");
    let rotated =
        app.request(Method::POST, &format!("/v1/account/webhooks/{id}/rotate-secret"), Some(&org.key), None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let data = rotated.data();
    assert_ne!(secret_bytes(data), secret_bytes(&first), "a new secret");
    let until = time::OffsetDateTime::parse(
        data["previous_secret_expires_at"].as_str().expect("the previous one still signs"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("a time");
    let left = until - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::hours(23) && left <= time::Duration::hours(24), "{left}");
    let read = app.request(Method::GET, &format!("/v1/account/webhooks/{id}"), Some(&org.key), None).await;
    assert!(read.data().get("secret").is_none());
    assert_eq!(read.data()["previous_secret_expires_at"], data["previous_secret_expires_at"]);
    let actions = audit_actions_by_sql(&app.db, &org.id);
    assert!(actions.iter().any(|(action, _)| action == "webhook.secret_rotated"), "{actions:?}");
    app.request(Method::POST, "/v1/account/webhooks/wh_unknown/rotate-secret", Some(&org.key), None)
        .await
        .assert_error(404, "webhook_not_found");
}

async fn an_organization_has_at_most_ten_endpoints(backend: Backend) {
    let Some(app) = app_with_webhooks(backend).await else { return };
    let org = app.signup_org("ten@acme.test").await;
    for _ in 0..10 {
        registered(&app, &org.key).await;
    }
    let refused = create(&app, &org.key, json!({"url": "http://127.0.0.1:9/x", "events": ["key.created"]})).await;
    refused.assert_error(409, "webhook_limit_reached");
    let listed = app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None).await;
    assert_eq!(listed.data().as_array().expect("list").len(), 10);
    // Another organization has its own ten.
    let other = app.signup_org("other@acme.test").await;
    registered(&app, &other.key).await;
}

async fn bad_urls_and_event_lists_are_refused_and_store_nothing(backend: Backend) {
    let Some(app) = app_with_webhooks(backend).await else { return };
    let org = app.signup_org("bad@acme.test").await;
    for (body, field) in [
        (json!({"url": "ftp://127.0.0.1/x", "events": ["key.created"]}), "url"),
        (json!({"url": "http://user:pw@127.0.0.1/x", "events": ["key.created"]}), "url"),
        (json!({"url": "not a url", "events": ["key.created"]}), "url"),
        (json!({"url": format!("http://127.0.0.1/{}", "a".repeat(2048)), "events": ["key.created"]}), "url"),
        (json!({"url": "http://127.0.0.1/x", "events": []}), "events"),
        (json!({"url": "http://127.0.0.1/x", "events": ["key.deleted"]}), "events"),
        (
            json!({"url": "http://127.0.0.1/x", "events": ["key.created"], "description": "x".repeat(257)}),
            "description",
        ),
    ] {
        let reply = create(&app, &org.key, body.clone()).await;
        reply.assert_error(400, "validation_error");
        assert_eq!(reply.body["error"]["field"], field, "{body}");
    }
    create(&app, &org.key, json!({"url": "http://127.0.0.1/x"})).await.assert_error_status(400);
    let listed = app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None).await;
    assert_eq!(listed.data(), &json!([]));
    let id = registered(&app, &org.key).await["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/account/webhooks/{id}");
    app.request(Method::PATCH, &path, Some(&org.key), Some(json!({}))).await.assert_error(400, "validation_error");
    app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"url": "gopher://x"})))
        .await
        .assert_error(400, "validation_error");
}

async fn without_private_targets_allowed_every_spelling_of_a_non_public_address_is_refused(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[("WEBHOOK_SECRET_KEY", SECRET_KEY)]).await else { return };
    let org = app.signup_org("ssrf@acme.test").await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://2130706433/hook",
        "http://0x7f.0.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://198.18.0.1/hook",
        "http://[fd00::1]/hook",
    ] {
        let reply = create(&app, &org.key, json!({"url": url, "events": ["key.created"]})).await;
        reply.assert_error(400, "validation_error");
        assert_eq!(reply.body["error"]["field"], "url", "{url}");
    }
    let listed = app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None).await;
    assert_eq!(listed.data(), &json!([]));
}

async fn without_a_secret_key_the_webhook_routes_answer_503(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[("WEBHOOK_ALLOW_PRIVATE_TARGETS", "1")]).await else { return };
    let org = app.signup_org("off@acme.test").await;
    create(&app, &org.key, json!({"url": "http://127.0.0.1:9/hook", "events": ["key.created"]}))
        .await
        .assert_error(503, "webhooks_not_configured");
    app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None)
        .await
        .assert_error(503, "webhooks_not_configured");
    app.request(Method::GET, "/v1/account/webhooks/wh_abc", Some(&org.key), None)
        .await
        .assert_error(503, "webhooks_not_configured");
}

async fn only_a_live_key_with_the_scope_manages_endpoints_and_only_its_own(backend: Backend) {
    let Some(app) = app_with_webhooks(backend).await else { return };
    let org = app.signup_org("scopes@acme.test").await;
    let id = registered(&app, &org.key).await["id"].as_str().expect("id").to_owned();
    let reader = app.new_key(&org.key, json!({"scopes": ["read"]})).await;
    let listed = app.request(Method::GET, "/v1/account/webhooks", Some(&reader), None).await;
    assert_eq!(listed.data().as_array().expect("list").len(), 1);
    create(&app, &reader, json!({"url": "http://127.0.0.1:9/x", "events": ["key.created"]}))
        .await
        .assert_error(403, "insufficient_scope");
    app.request(Method::POST, &format!("/v1/account/webhooks/{id}/rotate-secret"), Some(&reader), None)
        .await
        .assert_error(403, "insufficient_scope");
    let test_key = app.new_key(&org.key, json!({"environment": "test"})).await;
    create(&app, &test_key, json!({"url": "http://127.0.0.1:9/x", "events": ["key.created"]}))
        .await
        .assert_error(403, "environment_escalation");
    app.request(Method::GET, "/v1/account/webhooks", Some(&test_key), None)
        .await
        .assert_error(403, "environment_escalation");
    // Another organization's endpoint does not exist for this one.
    let other = app.signup_org("other-scopes@acme.test").await;
    let path = format!("/v1/account/webhooks/{id}");
    app.request(Method::GET, &path, Some(&other.key), None).await.assert_error(404, "webhook_not_found");
    app.request(Method::PATCH, &path, Some(&other.key), Some(json!({"enabled": false})))
        .await
        .assert_error(404, "webhook_not_found");
    assert_eq!(delete(&app, &other.key, &id).await, StatusCode::NOT_FOUND);
    let still = app.request(Method::GET, &path, Some(&org.key), None).await;
    assert_eq!(still.data()["enabled"], true);
}

async fn webhook_writes_count_against_the_organizations_write_limit(backend: Backend) {
    let settings = [
        ("WEBHOOK_SECRET_KEY", SECRET_KEY),
        ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "1"),
        ("RATE_LIMIT_WRITES_PER_MINUTE", "2"),
    ];
    let Some(app) = spawn_app_with(backend, &settings).await else { return };
    let org = app.signup_org("limit@acme.test").await;
    let id = registered(&app, &org.key).await["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/account/webhooks/{id}");
    let changed = app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"enabled": false}))).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    app.request(Method::POST, &format!("{path}/rotate-secret"), Some(&org.key), None)
        .await
        .assert_error(429, "rate_limited");
    // Reads are not writes.
    assert_eq!(app.request(Method::GET, &path, Some(&org.key), None).await.status, StatusCode::OK);
}

/// The organization's endpoints, as its owner lists them: `(url, previous_secret_expires_at)`.
async fn endpoints(app: &TestApp, key: &str) -> Vec<(Value, Value)> {
    let listed = app.request(Method::GET, "/v1/account/webhooks", Some(key), None).await;
    let list = listed.data().as_array().expect("a list").clone();
    list.iter().map(|e| (e["url"].clone(), e["previous_secret_expires_at"].clone())).collect()
}

async fn a_key_revoked_or_narrowed_while_its_webhook_write_holds_its_body_back_cannot_finish_it(backend: Backend) {
    use crate::keys::{key_id_of, owner_narrows, send_body_after};
    let Some(app) = app_with_webhooks(backend).await else { return };
    let org = app.signup_org("slow-hook@acme.test").await;
    let id = registered(&app, &org.key).await["id"].as_str().expect("id").to_owned();
    let before = endpoints(&app, &org.key).await;
    let writes = [
        (
            "POST",
            "/v1/account/webhooks".to_owned(),
            r#"{"url": "http://127.0.0.1:9/other", "events": ["key.created"]}"#,
        ),
        ("PATCH", format!("/v1/account/webhooks/{id}"), r#"{"url": "http://127.0.0.1:9/taken-over"}"#),
    ];
    for (i, (method, path, body)) in writes.iter().enumerate() {
        // Authenticated, then revoked by its owner while it holds its body back.
        let name = format!("Leaked {i}");
        let leaked = app.new_key(&org.key, json!({ "name": name })).await;
        let leaked_id = key_id_of(&app, &org.key, &name).await;
        let owner_revokes = async {
            assert_eq!(app.revoke_key(&org.key, &leaked_id).await.status, StatusCode::OK);
            app.get_account(&leaked).await.assert_error(401, "revoked_api_key");
        };
        let (status, answer) = send_body_after(&app, method, path, &leaked, body, owner_revokes).await;
        assert_eq!((status, &answer["error"]["code"]), (401, &json!("revoked_api_key")), "{method} {path}: {answer}");
        // Narrowed to another address meanwhile.
        let name = format!("Narrowed {i}");
        let narrowed = app.new_key(&org.key, json!({ "name": name })).await;
        let narrowed_id = key_id_of(&app, &org.key, &name).await;
        let narrowing = owner_narrows(&app, &org, &narrowed_id, &narrowed);
        let (status, answer) = send_body_after(&app, method, path, &narrowed, body, narrowing).await;
        assert_eq!((status, &answer["error"]["code"]), (403, &json!("ip_not_allowed")), "{method} {path}: {answer}");
    }
    // Nothing was written: one endpoint still, its URL as it was.
    assert_eq!(endpoints(&app, &org.key).await, before);
}

/// The writes without a body: each waits for the organization's row, which the test holds
/// while it revokes the calling key (as a slow revocation would), then must find it revoked.
async fn a_webhook_write_waiting_for_its_organization_sees_its_key_revoked_meanwhile(backend: Backend) {
    use diesel::connection::SimpleConnection as _;
    let Some(app) = app_with_webhooks(backend).await else { return };
    let org = app.signup_org("held-hook@acme.test").await;
    let id = registered(&app, &org.key).await["id"].as_str().expect("id").to_owned();
    let before = endpoints(&app, &org.key).await;
    let writes = [
        (Method::DELETE, format!("/v1/account/webhooks/{id}")),
        (Method::POST, format!("/v1/account/webhooks/{id}/rotate-secret")),
        (Method::POST, format!("/v1/account/webhooks/{id}/test")),
    ];
    for (i, (method, path)) in writes.iter().enumerate() {
        let name = format!("Held {i}");
        let key = app.new_key(&org.key, json!({ "name": name })).await;
        let key_id = crate::keys::key_id_of(&app, &org.key, &name).await;
        assert_eq!(app.get_account(&key).await.status, StatusCode::OK);
        let mut session = app.db_session();
        let at = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
        let revoke = format!("UPDATE api_keys SET revoked_at = {at} WHERE id = '{key_id}';");
        let hold = match backend {
            Backend::Sqlite => "BEGIN IMMEDIATE;".to_owned(),
            Backend::Postgres => format!("BEGIN; SELECT id FROM organizations WHERE id = '{}' FOR UPDATE;", org.id),
        };
        session.batch_execute(&format!("{hold} {revoke}")).expect("the revocation in flight");
        let request = app.client.request(method.clone(), app.url(path)).bearer_auth(&key).send();
        let answer = tokio::spawn(async move {
            let response = request.await.expect("sent");
            (response.status(), response.text().await.expect("a body"))
        });
        // Authenticated by now (the revocation is not committed), and waiting for the row.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        session.batch_execute("COMMIT;").expect("revoked");
        let (status, body) = answer.await.expect("answered");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        let code = serde_json::from_str::<Value>(&body).map(|b| b["error"]["code"].clone()).ok();
        assert_eq!(code, Some(json!("revoked_api_key")), "{method} {path}: {body}");
    }
    // Nothing was written: not deleted, not rotated, no test event.
    assert_eq!(endpoints(&app, &org.key).await, before);
    let mut conn = app.db_session();
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let outbox: Count = diesel::RunQueryDsl::get_result(
        diesel::sql_query("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE event_type = 'webhook.test'"),
        &mut conn,
    )
    .expect("counted");
    assert_eq!(outbox.n, 0);
}
