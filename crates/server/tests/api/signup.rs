//! `POST /v1/signup`: the account and its first key, plans, taken emails, invalid bodies,
//! and the per-address signup limit.

use account_infra::testing::Backend;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{is_rfc3339_utc, on_both_backends, spawn_app_with, TestApp};

on_both_backends!(
    signup_returns_the_account_and_a_first_key_that_works,
    signup_defaults_to_the_free_plan_and_accepts_a_named_one,
    signup_with_an_unknown_plan_is_400_and_stores_nothing,
    a_taken_email_is_409_whatever_its_case,
    concurrent_signups_with_one_email_let_exactly_one_win,
    invalid_signups_get_400_and_store_nothing,
    markup_and_sql_in_names_are_stored_and_returned_verbatim,
);

async fn signup_returns_the_account_and_a_first_key_that_works(app: TestApp) {
    let reply = app.signup(json!({"name": "My Company", "email": "admin@mycompany.com"})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let account = &reply.data()["account"];
    assert!(account["org_id"].as_str().is_some_and(|id| id.starts_with("org_")));
    assert_eq!(account["name"], "My Company");
    assert_eq!(account["email"], "admin@mycompany.com");
    assert_eq!(
        account["plan"],
        json!({"id": "free", "name": "Free", "base_price_cents": 0, "included_requests_per_month": 10_000, "over_limit": "block"})
    );
    assert_eq!(account["is_active"], true);
    assert!(is_rfc3339_utc(&account["created_at"]), "{}", account["created_at"]);

    let key = &reply.data()["api_key"];
    let secret = key["key"].as_str().expect("the full key, this once");
    assert!(secret.starts_with("mem_live_") && secret.len() == "mem_live_".len() + 38, "{secret}");
    assert_eq!(key["name"], "Default Key");
    assert_eq!(key["environment"], "live");
    assert_eq!(key["scopes"], json!(["read", "write"]));
    assert_eq!(key["expires_at"], json!(null));
    assert_eq!(key["key_prefix"], json!(format!("{}...", &secret[..15])));
    assert!(key["id"].as_str().is_some_and(|id| id.starts_with("key_")));

    let me = app.get_account(secret).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.data(), account);
}

async fn signup_defaults_to_the_free_plan_and_accepts_a_named_one(app: TestApp) {
    let reply = app.signup(json!({"name": "Big", "email": "big@corp.test", "plan_id": "starter"})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(
        reply.data()["account"]["plan"],
        json!({"id": "starter", "name": "Starter", "base_price_cents": 4900, "included_requests_per_month": 1_000_000, "over_limit": "bill"})
    );
    let pro = app.signup(json!({"name": "Pro", "email": "pro@corp.test", "plan_id": "pro"})).await;
    assert_eq!(pro.data()["account"]["plan"]["base_price_cents"], 19900);
    let null_plan = app.signup(json!({"name": "Null", "email": "null@corp.test", "plan_id": null})).await;
    assert_eq!(null_plan.data()["account"]["plan"]["id"], "free");
}

async fn signup_with_an_unknown_plan_is_400_and_stores_nothing(app: TestApp) {
    for plan in ["platinum", "FREE", "", "free; DROP TABLE plans"] {
        let reply = app.signup(json!({"name": "Acme", "email": "plan@acme.test", "plan_id": plan})).await;
        reply.assert_error(400, "unknown_plan");
        assert_eq!(reply.body["error"]["field"], "plan_id");
    }
    // Nothing was stored: the email is still free.
    app.signup_org("plan@acme.test").await;
}

async fn a_taken_email_is_409_whatever_its_case(app: TestApp) {
    app.signup_org("Admin@Acme.test").await;
    for email in ["Admin@Acme.test", "admin@acme.test", "ADMIN@ACME.TEST", "  admin@acme.test "] {
        let reply = app.signup(json!({"name": "Copycat", "email": email})).await;
        reply.assert_error(409, "email_taken");
    }
}

async fn concurrent_signups_with_one_email_let_exactly_one_win(app: TestApp) {
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let email = if i % 2 == 0 { "race@acme.test" } else { "RACE@acme.test" };
                app.signup(json!({"name": format!("Racer {i}"), "email": email})).await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let reply = task.await.expect("joined");
        match reply.status.as_u16() {
            201 => created += 1,
            _ => reply.assert_error(409, "email_taken"),
        }
    }
    assert_eq!(created, 1);
}

async fn invalid_signups_get_400_and_store_nothing(app: TestApp) {
    let long = "x".repeat(201);
    let cases = [
        (json!({"email": "bad@acme.test"}), "invalid_request", Some("name")),
        (json!({"name": "Acme"}), "invalid_request", Some("email")),
        (json!({"name": "", "email": "bad@acme.test"}), "validation_error", Some("name")),
        (json!({"name": "   ", "email": "bad@acme.test"}), "validation_error", Some("name")),
        (json!({"name": long, "email": "bad@acme.test"}), "validation_error", Some("name")),
        (json!({"name": "a\u{0}b", "email": "bad@acme.test"}), "validation_error", Some("name")),
        (json!({"name": null, "email": "bad@acme.test"}), "invalid_request", Some("name")),
        (json!({"name": 42, "email": "bad@acme.test"}), "invalid_request", Some("name")),
        (json!({"name": ["Acme"], "email": "bad@acme.test"}), "invalid_request", Some("name")),
        (json!({"name": {"a": 1}, "email": "bad@acme.test"}), "invalid_request", Some("name")),
        (json!({"name": "Acme", "email": "not-an-email"}), "validation_error", Some("email")),
        (json!({"name": "Acme", "email": "a@b"}), "validation_error", Some("email")),
        (json!({"name": "Acme", "email": format!("{}@acme.test", "a".repeat(300))}), "validation_error", Some("email")),
        (json!({"name": "Acme", "email": "bad@acme.test", "plan": "pro"}), "invalid_request", Some("plan")),
        (json!(["name", "Acme"]), "invalid_request", None),
        (json!("Acme"), "invalid_request", None),
        (json!(null), "invalid_request", None),
    ];
    for (body, code, field) in cases {
        let reply = app.signup(body.clone()).await;
        reply.assert_error(400, code);
        if let Some(field) = field {
            assert_eq!(reply.body["error"]["field"], field, "{body} -> {}", reply.body);
        }
    }
    for raw in [
        &b"{\"name\": \"Acme\", "[..],
        b"",
        b"{}}",
        b"\xff\xfe{\"name\":1}",
        b"{\"name\":\"\xc3\x28\",\"email\":\"bad@acme.test\"}",
    ] {
        let reply = app.send_raw(Method::POST, "/v1/signup", None, "application/json", raw.to_vec()).await;
        assert_eq!(reply.status.as_u16(), 400, "{raw:?} -> {}", reply.body);
        assert_eq!(reply.body["success"], false);
    }
    // None of that stored anything.
    app.signup_org("bad@acme.test").await;
}

async fn markup_and_sql_in_names_are_stored_and_returned_verbatim(app: TestApp) {
    let name = "<script>alert('x')</script> Robert'); DROP TABLE organizations;-- Ünïcødé 🚀";
    let reply = app.signup(json!({"name": name, "email": "o'brien+tag@acme.test"})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let key = reply.data()["api_key"]["key"].as_str().expect("key").to_owned();
    let me = app.get_account(&key).await;
    assert_eq!(me.data()["name"], name);
    assert_eq!(me.data()["email"], "o'brien+tag@acme.test");
}

/// A signup from this test's address, or forwarded for `forwarded_for` (each one a new email).
pub(crate) async fn signup_from(app: &TestApp, n: usize, forwarded_for: Option<&str>) -> crate::helpers::Reply {
    let mut request = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"name": "Acme", "email": format!("limit{n}-{}@acme.test", forwarded_for.unwrap_or("none"))}));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    crate::helpers::Reply::read(request.send().await.expect("sent")).await
}

#[tokio::test]
async fn the_eleventh_signup_from_one_address_in_an_hour_gets_429() {
    let app = spawn_app_with(Backend::Sqlite, &[("RATE_LIMIT_SIGNUPS_PER_HOUR", "10")]).await.expect("sqlite");
    for n in 0..10 {
        assert_eq!(signup_from(&app, n, None).await.status, StatusCode::CREATED);
    }
    let refused = signup_from(&app, 10, None).await;
    refused.assert_error(429, "rate_limited");
    let retry_after: u64 = refused.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
}
