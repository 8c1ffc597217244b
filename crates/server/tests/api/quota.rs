//! The quota held across instances (`POST /v1/internal/verify-key`, the `Verifier`, and the
//! operator's `plans set-included` / `plans set-over-limit`): a `block` plan refuses
//! verification past what its period includes on every instance, within the documented
//! overshoot, test keys have a cap of their own, the account routes keep working, and a
//! change of the plan's terms lifts the block everywhere within a second.

use std::time::{Duration, Instant};

use account_domain::{Environment, VerificationCode};
use account_infra::{Settings, Verifier};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{on_both_backends, spawn_app_on, Org, Reply, TestApp, SERVICE_TOKEN};
use crate::process::account_api;

on_both_backends!(
    a_block_plan_refuses_verification_past_its_quota_on_two_instances_within_the_bound,
    test_keys_are_capped_apart_from_live_keys_and_their_answers_say_test,
    raising_what_the_plan_includes_or_billing_past_it_lifts_the_block_within_a_second_on_every_instance,
    a_verifier_beside_the_server_refuses_past_the_quota_too,
    an_upgrade_by_the_owner_lifts_the_block_within_a_second_on_every_instance,
);

/// Flushes in these tests: every instance writes its counts every second (`spawn_app`'s
/// `LAST_USED_FLUSH_SECS`).
const FLUSH: Duration = Duration::from_secs(1);

/// Runs `account-api plans ARGS…` on the test's database, as an operator does.
fn plans(app: &TestApp, args: &[&str]) {
    let output = account_api().env("DATABASE_URL", app.db.url()).arg("plans").args(args).output().expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Sets the free plan's requests a month so that the current period (signed up today: the
/// days left of the month) includes at least `at_least`, and returns what it includes.
async fn include_about(app: &TestApp, org: &Org, at_least: i64) -> i64 {
    let today = time::OffsetDateTime::now_utc().date();
    let month_days = i64::from(today.month().length(today.year()));
    let days_left = month_days - i64::from(today.day()) + 1;
    let per_month = (at_least * month_days + days_left - 1) / days_left;
    plans(app, &["set-included", "free", &per_month.to_string()]);
    let included = month_to_date(app, org).await["included"].as_i64().expect("included");
    assert!(included >= at_least, "{included}");
    included
}

async fn month_to_date(app: &TestApp, org: &Org) -> Value {
    let reply = app.request(Method::GET, "/v1/account/usage?days=1", Some(&org.key), None).await;
    reply.data()["month_to_date"].clone()
}

/// The whole verdict of `POST /v1/internal/verify-key`.
async fn verdict(app: &TestApp, key: &str) -> Value {
    let request = app.client.post(app.url("/v1/internal/verify-key")).bearer_auth(SERVICE_TOKEN);
    let reply = Reply::read(request.json(&json!({"key": key})).send().await.expect("sent")).await;
    reply.data().clone()
}

/// Until `done` holds of the period's figures read through `app` (its own counts, and those
/// other instances have written), for at most 5 s.
async fn until_written(app: &TestApp, org: &Org, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let period = month_to_date(app, org).await;
        if done(&period) {
            return period;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never written: {period}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Verifies on every instance until each answers `expected`, for at most `within`.
async fn until_every_instance_answers(instances: &[&TestApp], key: &str, expected: &str, within: Duration) {
    let started = Instant::now();
    for instance in instances {
        while instance.verify(key).await != expected {
            assert!(started.elapsed() < within, "an instance does not answer {expected} after {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The first instance uses all but 3 of the period; once that is written, the second reads it
/// at its first verification and allows exactly the 3 left; the first, which has not yet read
/// the second's, allows at most those 3 more (the overshoot: what the other instance counted
/// within two flush intervals), then refuses within two flush intervals, and both refuse
/// from then on. The account routes keep working meanwhile.
async fn a_block_plan_refuses_verification_past_its_quota_on_two_instances_within_the_bound(app: TestApp) {
    let org = app.signup_org("quota@acme.test").await;
    let included = include_about(&app, &org, 12).await;
    let second = spawn_app_on(app.db.clone()).await;
    for _ in 0..included - 3 {
        assert_eq!(app.verify(&org.key).await, "valid");
    }
    until_written(&second, &org, |p| p["valid"] == included - 3).await;
    for _ in 0..3 {
        assert_eq!(second.verify(&org.key).await, "valid");
    }
    let refused = verdict(&second, &org.key).await;
    assert_eq!((refused["valid"].clone(), refused["code"].clone()), (json!(false), json!("quota_exceeded")));
    assert_eq!((refused["org_id"].clone(), refused["environment"].clone()), (json!(org.id), json!("live")));
    // The first instance learns of the second's 3 once the second has flushed and it has
    // flushed since: within two flush intervals.
    let learning = Instant::now();
    let mut overshoot = 0;
    loop {
        match app.verify(&org.key).await.as_str() {
            "valid" => overshoot += 1,
            "quota_exceeded" => break,
            other => panic!("{other}"),
        }
        assert!(learning.elapsed() < 2 * FLUSH + Duration::from_millis(500), "still valid past two flushes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(overshoot <= 3, "past the bound: {overshoot} more than the 3 the other instance counted");
    // From then on, both refuse: nothing more is counted valid.
    let until = Instant::now() + 2 * FLUSH + Duration::from_millis(500);
    while Instant::now() < until {
        for instance in [&app, &second] {
            assert_eq!(instance.verify(&org.key).await, "quota_exceeded");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let period = until_written(&second, &org, |p| p["valid"] == included + overshoot).await;
    assert_eq!(period["blocked"], true, "{period}");
    // The account API is never blocked: the organization sees its usage, manages its keys.
    for instance in [&app, &second] {
        assert_eq!(instance.get_account(&org.key).await.status.as_u16(), 200);
        assert_eq!(instance.list_keys(&org.key).await.status.as_u16(), 200);
    }
    let created = app.create_key(&org.key, Some(json!({"name": "while blocked"}))).await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    let new_key = created.data()["key"].as_str().expect("key").to_owned();
    assert_eq!(second.verify(&new_key).await, "quota_exceeded", "the organization's quota, not the key's");
    let refused = until_written(&app, &org, |p| p["valid"] == included + overshoot).await;
    assert_eq!(refused["over_limit"], "block");
}

async fn test_keys_are_capped_apart_from_live_keys_and_their_answers_say_test(app: TestApp) {
    let org = app.signup_org("sandbox@acme.test").await;
    let included = include_about(&app, &org, 5).await;
    let test_key = app.new_key(&org.key, json!({"name": "sandbox", "environment": "test"})).await;
    for _ in 0..included {
        let answer = verdict(&app, &test_key).await;
        assert_eq!((answer["code"].clone(), answer["environment"].clone()), (json!("valid"), json!("test")));
    }
    let answer = verdict(&app, &test_key).await;
    assert_eq!(answer["valid"], false, "{answer}");
    assert_eq!((answer["code"].clone(), answer["environment"].clone()), (json!("quota_exceeded"), json!("test")));
    // The live keys' quota is their own: untouched by the test keys'.
    for _ in 0..included {
        assert_eq!(app.verify(&org.key).await, "valid");
    }
    assert_eq!(app.verify(&org.key).await, "quota_exceeded");
    assert_eq!(app.verify(&test_key).await, "quota_exceeded");
    // Not billed: the period counts the live keys' valid verifications only.
    let period = until_written(&app, &org, |p| p["valid"] == included).await;
    assert_eq!(period["blocked"], true, "{period}");
}

/// Blocked on both instances, the block is lifted on both within a second of each change of
/// the plan's terms, made by an operator's command (another process).
async fn raising_what_the_plan_includes_or_billing_past_it_lifts_the_block_within_a_second_on_every_instance(
    app: TestApp,
) {
    let org = app.signup_org("lifted@acme.test").await;
    let included = include_about(&app, &org, 3).await;
    let second = spawn_app_on(app.db.clone()).await;
    for _ in 0..included {
        assert_eq!(app.verify(&org.key).await, "valid");
    }
    until_written(&second, &org, |p| p["valid"] == included).await;
    until_every_instance_answers(&[&app, &second], &org.key, "quota_exceeded", 2 * FLUSH).await;

    plans(&app, &["set-included", "free", "1000000"]);
    until_every_instance_answers(&[&app, &second], &org.key, "valid", Duration::from_secs(1)).await;

    plans(&app, &["set-included", "free", "0"]);
    until_every_instance_answers(&[&app, &second], &org.key, "quota_exceeded", Duration::from_secs(1)).await;
    plans(&app, &["set-over-limit", "free", "bill"]);
    until_every_instance_answers(&[&app, &second], &org.key, "valid", Duration::from_secs(1)).await;
    assert_eq!(month_to_date(&app, &org).await["over_limit"], "bill");
    plans(&app, &["set-over-limit", "free", "block"]);
    until_every_instance_answers(&[&app, &second], &org.key, "quota_exceeded", Duration::from_secs(1)).await;
}

/// Blocked on both instances, the owner (whose account routes still work) upgrades with
/// `PATCH /v1/account`: a new period on a `bill` plan, lifted on both within a second.
async fn an_upgrade_by_the_owner_lifts_the_block_within_a_second_on_every_instance(app: TestApp) {
    let org = app.signup_org("upgrade@acme.test").await;
    let included = include_about(&app, &org, 3).await;
    let second = spawn_app_on(app.db.clone()).await;
    for _ in 0..included {
        assert_eq!(app.verify(&org.key).await, "valid");
    }
    until_written(&second, &org, |p| p["valid"] == included).await;
    until_every_instance_answers(&[&app, &second], &org.key, "quota_exceeded", 2 * FLUSH).await;
    assert_eq!(month_to_date(&second, &org).await["blocked"], true);

    let upgraded = crate::account_changes::patch_account(&second, &org.key, json!({"plan_id": "starter"})).await;
    assert_eq!(upgraded.status.as_u16(), 200, "{}", upgraded.body);
    until_every_instance_answers(&[&app, &second], &org.key, "valid", Duration::from_secs(1)).await;
    let period = month_to_date(&app, &org).await;
    assert_eq!((&period["over_limit"], &period["blocked"]), (&json!("bill"), &json!(false)), "{period}");
}

/// The embedded `Verifier` keeps the same quota: it reads what the server wrote.
async fn a_verifier_beside_the_server_refuses_past_the_quota_too(app: TestApp) {
    let org = app.signup_org("verifier-quota@acme.test").await;
    let included = include_about(&app, &org, 3).await;
    for _ in 0..included - 1 {
        assert_eq!(app.verify(&org.key).await, "valid");
    }
    // Read where none is counted unwritten: another instance's report.
    until_written(&spawn_app_on(app.db.clone()).await, &org, |p| p["valid"] == included - 1).await;
    let mut settings = Settings::for_url(&app.db.url()).expect("a database URL");
    settings.usage_flush_interval = FLUSH;
    let verifier = Verifier::connect_with(settings).await.expect("the verifier connects");
    assert_eq!(verifier.verify(&org.key, &[], None).await.expect("a verdict").code, VerificationCode::Valid);
    let refused = verifier.verify(&org.key, &[], None).await.expect("a verdict");
    assert_eq!(refused.code, VerificationCode::QuotaExceeded);
    assert!(!refused.is_valid());
    assert_eq!(refused.principal.expect("the key's identity").environment(), Environment::Live);
    // The server learns of the verifier's once it has written it.
    until_every_instance_answers(&[&app], &org.key, "quota_exceeded", 2 * FLUSH + Duration::from_millis(500)).await;
    verifier.shutdown().await.expect("shuts down");
    until_written(&app, &org, |p| p["valid"].as_i64() >= Some(included)).await;
}

#[test]
fn plans_set_over_limit_takes_block_or_bill_and_a_known_plan() {
    let db = account_infra::testing::TestDatabase::sqlite();
    let run = |args: &[&str]| account_api().env("DATABASE_URL", db.url()).args(args).output().expect("runs");
    let set = run(&["plans", "set-over-limit", "starter", "block"]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "starter now does block past what it includes");
    let unknown = run(&["plans", "set-over-limit", "gold", "bill"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("gold"));
    let wrong = run(&["plans", "set-over-limit", "free", "maybe"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("block or bill"));
}
