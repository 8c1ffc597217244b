//! `PATCH /v1/account` and `DELETE /v1/account`: the owner changes its name, email and
//! plan, or closes its account; every instance applies either within a second.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{on_both_backends, spawn_app_on, Reply, TestApp};

on_both_backends!(
    each_field_of_the_account_can_be_changed_and_the_answer_is_the_account,
    a_change_of_account_refuses_bad_input_and_stores_nothing,
    an_email_used_by_another_open_organization_is_refused_ignoring_case,
    only_a_live_key_with_write_changes_the_account,
    a_plan_change_is_seen_by_another_instance_within_a_second_and_audited_with_its_details,
    a_downgrade_starts_a_fresh_plan_period,
    closing_revokes_every_key_on_every_instance_within_a_second_and_frees_the_email,
    closing_needs_the_organizations_own_id_and_a_live_key_with_read_and_write,
);

pub(crate) async fn patch_account(app: &TestApp, key: &str, body: Value) -> Reply {
    app.request(Method::PATCH, "/v1/account", Some(key), Some(body)).await
}

pub(crate) async fn close_account(app: &TestApp, key: &str, body: Value) -> Reply {
    app.request(Method::DELETE, "/v1/account", Some(key), Some(body)).await
}

async fn audit_events(app: &TestApp, key: &str) -> Vec<Value> {
    let reply = app.request(Method::GET, "/v1/account/audit-log", Some(key), None).await;
    reply.data()["events"].as_array().expect("events").clone()
}

/// Polls `check` every 10 ms until it holds, for at most `limit`; the time it took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

async fn each_field_of_the_account_can_be_changed_and_the_answer_is_the_account(app: TestApp) {
    let org = app.signup_org("change@acme.test").await;
    let renamed = patch_account(&app, &org.key, json!({"name": "  Acme Renamed  "})).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.data()["name"], "Acme Renamed");
    let moved = patch_account(&app, &org.key, json!({"email": "Billing@Acme.test"})).await;
    assert_eq!(moved.data()["email"], "Billing@Acme.test");
    let upgraded = patch_account(&app, &org.key, json!({"plan_id": "starter"})).await;
    assert_eq!(upgraded.data()["plan"]["id"], "starter");
    assert_eq!(upgraded.data()["plan"]["over_limit"], "bill");
    // The answer is the account as GET shows it, on this instance at once.
    assert_eq!(app.get_account(&org.key).await.data(), upgraded.data());
    let all = patch_account(&app, &org.key, json!({"name": "Acme", "email": "ops@acme.test", "plan_id": "pro"})).await;
    assert_eq!(
        (&all.data()["name"], &all.data()["email"], &all.data()["plan"]["id"]),
        (&json!("Acme"), &json!("ops@acme.test"), &json!("pro"))
    );
    // The old email is free again; the new one is taken.
    app.signup(json!({"name": "Other", "email": "change@acme.test"})).await.data();
    app.signup(json!({"name": "Other", "email": "OPS@acme.test"})).await.assert_error(409, "email_taken");
}

async fn a_change_of_account_refuses_bad_input_and_stores_nothing(app: TestApp) {
    let org = app.signup_org("bad-change@acme.test").await;
    let before = app.get_account(&org.key).await.data().clone();
    for (body, code, field) in [
        (json!({}), "validation_error", None),
        (json!({"name": ""}), "validation_error", Some("name")),
        (json!({"name": null}), "invalid_request", None),
        (json!({"email": "not an email"}), "validation_error", Some("email")),
        (json!({"plan_id": "gold"}), "unknown_plan", Some("plan_id")),
        (json!({"plan_id": "Not An Id!"}), "unknown_plan", Some("plan_id")),
        (json!({"name": "X", "is_active": false}), "invalid_request", None),
        (json!([]), "invalid_request", None),
    ] {
        let reply = patch_account(&app, &org.key, body.clone()).await;
        reply.assert_error(400, code);
        if let Some(field) = field {
            assert_eq!(reply.body["error"]["field"], field, "{body}");
        }
    }
    app.send_raw(Method::PATCH, "/v1/account", Some(&org.key), "application/json", b"{".to_vec())
        .await
        .assert_error(400, "invalid_json");
    assert_eq!(app.get_account(&org.key).await.data(), &before);
    let actions: Vec<Value> = audit_events(&app, &org.key).await.iter().map(|e| e["action"].clone()).collect();
    assert_eq!(actions, [json!("signup")], "nothing recorded");
}

async fn an_email_used_by_another_open_organization_is_refused_ignoring_case(app: TestApp) {
    let ours = app.signup_org("ours-change@acme.test").await;
    app.signup_org("theirs-change@acme.test").await;
    let reply = patch_account(&app, &ours.key, json!({"name": "Kept?", "email": "Theirs-Change@ACME.test"})).await;
    reply.assert_error(409, "email_taken");
    assert_eq!(reply.body["error"]["field"], "email");
    let account = app.get_account(&ours.key).await;
    assert_eq!((&account.data()["name"], &account.data()["email"]), (&json!("Acme"), &json!("ours-change@acme.test")));
}

async fn only_a_live_key_with_write_changes_the_account(app: TestApp) {
    let org = app.signup_org("who-changes@acme.test").await;
    let test = app.new_key(&org.key, json!({"environment": "test"})).await;
    let reader = app.new_key(&org.key, json!({"scopes": ["read"]})).await;
    patch_account(&app, &test, json!({"name": "Test"})).await.assert_error(403, "environment_escalation");
    patch_account(&app, &reader, json!({"name": "Reader"})).await.assert_error(403, "insufficient_scope");
    assert_eq!(app.get_account(&org.key).await.data()["name"], "Acme");
}

async fn a_plan_change_is_seen_by_another_instance_within_a_second_and_audited_with_its_details(app: TestApp) {
    let org = app.signup_org("plan-change@acme.test").await;
    let other = spawn_app_on(app.db.clone()).await;
    // The other instance has the account cached on free.
    assert_eq!(other.get_account(&org.key).await.data()["plan"]["id"], "free");
    let changed = patch_account(&app, &org.key, json!({"plan_id": "pro", "name": "Acme Pro"})).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let took =
        within(Duration::from_secs(1), async || other.get_account(&org.key).await.data()["plan"]["id"] == "pro").await;
    assert!(took < Duration::from_secs(1));
    assert_eq!(other.get_account(&org.key).await.data()["name"], "Acme Pro");
    let events = audit_events(&other, &org.key).await;
    let plan_changed = events.iter().find(|e| e["action"] == "account.plan_changed").expect("audited");
    assert_eq!(plan_changed["details"], json!({"from": "free", "to": "pro"}));
    assert_eq!(plan_changed["actor_key_id"], json!(org.key_id));
    let updated = events.iter().find(|e| e["action"] == "account.updated").expect("audited");
    assert_eq!(updated["details"], json!({"fields": ["name"]}), "the names of the fields, never their values");
    assert!(!updated.to_string().contains("Acme Pro"));
    // The same plan again changes nothing and records nothing.
    patch_account(&app, &org.key, json!({"plan_id": "pro"})).await.data();
    assert_eq!(audit_events(&app, &org.key).await.len(), events.len());
}

async fn a_downgrade_starts_a_fresh_plan_period(app: TestApp) {
    let org = app.signup_org("downgrade@acme.test").await;
    let today = time::OffsetDateTime::now_utc().date();
    let first = today.replace_day(1).expect("a first day");
    // As if it had signed up on the month's first day, on pro, and verified 5 times that day.
    app.execute_sql(&format!(
        "UPDATE plan_periods SET start_day = '{first}', plan_id = 'pro' WHERE org_id = '{}';
         UPDATE organizations SET plan_id = 'pro' WHERE id = '{}';
         INSERT INTO key_usage (key_id, day, outcome, uses) VALUES ('{}', '{first}', 'valid', 5)",
        org.id, org.id, org.key_id
    ));
    let usage = |app: &TestApp| {
        let key = org.key.clone();
        let app_url = app.url("/v1/account/usage");
        let client = app.client.clone();
        async move {
            let reply = Reply::read(client.get(app_url).bearer_auth(key).send().await.expect("sent")).await;
            reply.data()["month_to_date"].clone()
        }
    };
    let before = usage(&app).await;
    assert_eq!((&before["period_start"], &before["valid"]), (&json!(first.to_string()), &json!(5)), "{before}");
    assert_eq!(before["included"], 10_000_000);
    let downgraded = patch_account(&app, &org.key, json!({"plan_id": "starter"})).await;
    assert_eq!(downgraded.status, StatusCode::OK, "{}", downgraded.body);
    let after = usage(&app).await;
    assert_eq!(after["period_start"], json!(today.to_string()), "{after}");
    // The days before today belong to the pro period; today's uses (none) to starter's.
    let expected_valid = if today == first { 5 } else { 0 };
    assert_eq!(after["valid"], expected_valid, "{after}");
    let days_left = i64::from(time::util::days_in_month(today.month(), today.year()) - today.day() + 1);
    let month_days = i64::from(time::util::days_in_month(today.month(), today.year()));
    assert_eq!(after["included"], 1_000_000 * days_left / month_days, "{after}");
    assert_eq!(after["over_limit"], "bill");
}

async fn closing_revokes_every_key_on_every_instance_within_a_second_and_frees_the_email(app: TestApp) {
    let org = app.signup_org("closing@acme.test").await;
    let second_key = app.new_key(&org.key, json!({"name": "second"})).await;
    let other = spawn_app_on(app.db.clone()).await;
    // Both instances have both keys cached.
    for instance in [&app, &other] {
        for key in [&org.key, &second_key] {
            assert_eq!(instance.get_account(key).await.status, StatusCode::OK);
            assert_eq!(instance.verify(key).await, "valid");
        }
    }
    let closed = close_account(&app, &org.key, json!({"confirm": org.id})).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert!(closed.data()["closed_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", closed.body);
    let took = within(Duration::from_secs(1), async || {
        let mut all_refused = true;
        for instance in [&app, &other] {
            for key in [&org.key, &second_key] {
                all_refused &= instance.verify(key).await == "revoked";
            }
        }
        all_refused
    })
    .await;
    assert!(took < Duration::from_secs(1));
    for instance in [&app, &other] {
        instance.get_account(&second_key).await.assert_error(401, "revoked_api_key");
    }
    // The email is free for a new signup, whose keys work.
    let again = app.signup_org("Closing@acme.test").await;
    assert_eq!(other.verify(&again.key).await, "valid");
    // The closing and each key's revocation are in the trail (read through SQL: no key is left).
    let rows = crate::helpers::audit_actions_by_sql(&app.db, &org.id);
    assert!(rows.contains(&("account.closed".to_owned(), None)), "{rows:?}");
    let revoked: Vec<_> = rows.iter().filter(|(action, _)| action == "key.revoked").collect();
    assert_eq!(revoked.len(), 2, "{rows:?}");
    assert!(
        revoked.iter().all(|(_, details)| details.as_deref() == Some(r#"{"reason":"account_closed"}"#)),
        "{rows:?}"
    );
}

async fn closing_needs_the_organizations_own_id_and_a_live_key_with_read_and_write(app: TestApp) {
    let org = app.signup_org("close-refused@acme.test").await;
    let other = app.signup_org("close-other@acme.test").await;
    let writer = app.new_key(&org.key, json!({"scopes": ["write"]})).await;
    let test = app.new_key(&org.key, json!({"environment": "test"})).await;
    for body in [json!({"confirm": other.id}), json!({"confirm": ""}), json!({"confirm": org.id.to_uppercase()})] {
        let reply = close_account(&app, &org.key, body).await;
        reply.assert_error(400, "validation_error");
        assert_eq!(reply.body["error"]["field"], "confirm");
    }
    close_account(&app, &org.key, json!({})).await.assert_error(400, "invalid_request");
    close_account(&app, &org.key, json!({"confirm": org.id, "now": true})).await.assert_error(400, "invalid_request");
    close_account(&app, &writer, json!({"confirm": org.id})).await.assert_error(403, "insufficient_scope");
    close_account(&app, &test, json!({"confirm": org.id})).await.assert_error(403, "environment_escalation");
    // Nothing happened: the keys still work and the account is open.
    let account = app.get_account(&org.key).await;
    assert_eq!(account.data()["closed_at"], json!(null));
    assert_eq!(app.verify(&writer).await, "valid");
}
