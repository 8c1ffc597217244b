//! `GET /v1/account/usage` and the counting behind it: every verification of a known key
//! counted once, by day and outcome, exactly, across instances and restarts (the billing
//! export agrees), a 429 counted as its reason, and an erased organization's uncounted uses
//! holding back no other's.

use std::time::{Duration, Instant};

use account_infra::testing::TestDatabase;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    on_both_backends, spawn_app_on, spawn_app_with, stored_last_used_at, Reply, TestApp, SERVICE_TOKEN,
};
use crate::process::{account_api, send_signal, sign_up, start_server, wait_with_timeout};

on_both_backends!(
    valid_and_refused_uses_are_counted_exactly_and_read_back_from_the_database,
    two_instances_counting_one_key_add_up,
    days_outside_one_to_ninety_or_not_whole_are_refused,
    an_organization_erased_while_its_uses_wait_to_be_written_holds_back_no_other_organizations_usage,
    the_export_splits_a_month_at_a_plan_change_with_each_periods_counts_and_prorated_figures;
    database: counts_survive_a_sigterm_restart_and_the_export_matches_them,
);

async fn usage(app: &TestApp, key: &str, query: &str) -> Reply {
    app.request(Method::GET, &format!("/v1/account/usage{query}"), Some(key), None).await
}

/// The usage entry of `key_id` in a report, or zeros.
fn key_entry<'a>(report: &'a Value, key_id: &str) -> Option<&'a Value> {
    report["keys"].as_array().expect("keys").iter().find(|k| k["key_id"] == key_id)
}

/// Reads the report from an instance that served none of the counted requests, until
/// `done` holds (flushes are asynchronous) or 5 s pass; with the reads it took (each one a
/// use of `key`, counted too).
async fn report_when(app: &TestApp, key: &str, done: impl Fn(&Value) -> bool) -> (Value, i64) {
    let started = Instant::now();
    for reads in 1.. {
        let reply = usage(app, key, "").await;
        let report = reply.data().clone();
        if done(&report) || started.elapsed() > Duration::from_secs(5) {
            return (report, reads);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!("the loop returns")
}

async fn created(app: &TestApp, key: &str, body: Value) -> (String, String) {
    let reply = app.create_key(key, Some(body)).await;
    assert_eq!(reply.status.as_u16(), 201, "{}", reply.body);
    (reply.data()["key"].as_str().expect("key").to_owned(), reply.data()["id"].as_str().expect("id").to_owned())
}

async fn valid_and_refused_uses_are_counted_exactly_and_read_back_from_the_database(app: TestApp) {
    let org = app.signup_org("usage@acme.test").await;
    let (reader, reader_id) = created(&app, &org.key, json!({"name": "reader", "scopes": ["read"]})).await;
    let (gone, gone_id) = created(&app, &org.key, json!({"name": "gone"})).await;
    assert_eq!(app.revoke_key(&org.key, &gone_id).await.status.as_u16(), 200);
    let (n, m, k) = (7, 5, 3);
    for _ in 0..n {
        assert_eq!(app.verify(&reader).await, "valid");
    }
    // Requests to the account API's own routes: counted apart, never billed.
    for _ in 0..2 {
        assert_eq!(app.get_account(&reader).await.status.as_u16(), 200);
    }
    for _ in 0..m {
        app.get_account(&gone).await.assert_error(401, "revoked_api_key");
    }
    for _ in 0..k {
        // A read key that asks to write: refused for its scope, not counted valid.
        app.create_key(&reader, Some(json!({"name": "x"}))).await.assert_error(403, "insufficient_scope");
    }
    // Another instance, which saw none of these requests, reads what was flushed.
    let other = spawn_app_on(app.db.clone()).await;
    let (report, reads) = report_when(&other, &org.key, |r| {
        key_entry(r, &gone_id).is_some_and(|g| g["refused"] == m) && key_entry(r, &reader_id).is_some()
    })
    .await;
    let reader_usage = key_entry(&report, &reader_id).expect("the reader's usage");
    assert_eq!(reader_usage["valid"], n, "{report}");
    assert_eq!(reader_usage["account_api"], 2, "{report}");
    assert_eq!(reader_usage["refused"], k, "{report}");
    assert_eq!(reader_usage["refused_by_reason"], json!({"insufficient_scope": k}), "{report}");
    assert_eq!(reader_usage["name"], "reader");
    let gone_usage = key_entry(&report, &gone_id).expect("the revoked key's usage");
    assert_eq!((gone_usage["valid"].clone(), gone_usage["refused"].clone()), (json!(0), json!(m)), "{report}");
    assert_eq!(gone_usage["refused_by_reason"], json!({"revoked": m}), "{report}");
    // The first key made 3 requests on the first instance (2 creations, 1 revocation), then
    // the reads of the report, counted by the instance that answered them (not yet flushed):
    // all of them to the account API.
    let first = key_entry(&report, &org.key_id).expect("the first key's usage");
    assert_eq!((first["valid"].clone(), first["account_api"].clone()), (json!(0), json!(3 + reads)), "{report}");
    assert_eq!(report["total"], json!({"valid": n, "refused": m + k, "account_api": 2 + 3 + reads}), "{report}");
    // The default range: 30 days ending today, one entry each, oldest first, zeros included.
    let daily = report["daily"].as_array().expect("daily");
    assert_eq!(daily.len(), 30);
    assert_eq!(daily[0]["date"], report["from"]);
    assert_eq!(daily[29]["date"], report["to"]);
    assert_eq!(daily[29]["valid"], n);
    assert!(daily[..29].iter().all(|d| d["valid"] == 0 && d["refused"] == 0 && d["account_api"] == 0));
    // Busiest first.
    let busy: Vec<i64> = report["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| ["valid", "refused", "account_api"].iter().map(|f| k[f].as_i64().expect("a count")).sum::<i64>())
        .collect();
    assert!(busy.windows(2).all(|w| w[0] >= w[1]), "{report}");
    let today = report["to"].clone();
    let month_start = format!("{}-01", &today.as_str().expect("a day")[..7]);
    let period = &report["month_to_date"];
    // Signed up today: the period is today's to the month's end, its share of 10,000.
    assert_eq!(period["period_start"], json!(today), "{report}");
    assert!(period["period_start"].as_str() >= Some(month_start.as_str()));
    assert_eq!((period["valid"].clone(), period["over_limit"].clone()), (json!(n), json!("block")), "{report}");
    assert_eq!(period["blocked"], false, "{report}");
    assert!(period["included"].as_i64().is_some_and(|i| i > 0 && i <= 10_000), "{report}");
}

async fn two_instances_counting_one_key_add_up(app: TestApp) {
    let org = app.signup_org("twice@acme.test").await;
    let (key, key_id) = created(&app, &org.key, json!({"name": "shared", "scopes": ["read"]})).await;
    let second = spawn_app_on(app.db.clone()).await;
    for _ in 0..6 {
        assert_eq!(app.verify(&key).await, "valid");
    }
    for _ in 0..9 {
        assert_eq!(second.verify(&key).await, "valid");
    }
    let third = spawn_app_on(app.db.clone()).await;
    let (report, _) = report_when(&third, &org.key, |r| key_entry(r, &key_id).is_some_and(|k| k["valid"] == 15)).await;
    assert_eq!(key_entry(&report, &key_id).expect("counted")["valid"], 15, "{report}");
}

async fn days_outside_one_to_ninety_or_not_whole_are_refused(app: TestApp) {
    let org = app.signup_org("days@acme.test").await;
    for query in ["?days=0", "?days=91", "?days=abc", "?days=1.5", "?days=-1", "?days=", "?days=1e1", "?days=%2B5"] {
        let reply = usage(&app, &org.key, query).await;
        reply.assert_error(400, "validation_error");
        assert_eq!(reply.body["error"]["field"], "days", "{query}");
    }
    usage(&app, &org.key, "?weeks=2").await.assert_error_status(400);
    for (query, days) in [("?days=1", 1), ("?days=90", 90), ("", 30)] {
        let reply = usage(&app, &org.key, query).await;
        assert_eq!(reply.data()["daily"].as_array().expect("daily").len(), days, "{query}");
    }
    let writer = app.new_key(&org.key, json!({"name": "w", "scopes": ["write"]})).await;
    usage(&app, &writer, "").await.assert_error(403, "insufficient_scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_answered_429_still_counts_as_why_the_key_was_refused() {
    let app = spawn_app_with(account_infra::testing::Backend::Sqlite, &[("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "2")])
        .await
        .expect("sqlite");
    let org = app.signup_org("limited@acme.test").await;
    let (gone, gone_id) = created(&app, &org.key, json!({"name": "gone"})).await;
    assert_eq!(app.revoke_key(&org.key, &gone_id).await.status.as_u16(), 200);
    let mut limited = 0;
    for _ in 0..5 {
        let reply = app.get_account(&gone).await;
        limited += usize::from(reply.status.as_u16() == 429);
    }
    assert!(limited > 0, "the limit answered 429");
    let report = usage(&app, &org.key, "").await;
    assert_eq!(key_entry(report.data(), &gone_id).expect("counted")["refused_by_reason"], json!({"revoked": 5}));
}

/// Only the final flush at SIGTERM can write the counts (the periodic one is a minute away).
async fn counts_survive_a_sigterm_restart_and_the_export_matches_them(db: TestDatabase) {
    let settings = [("LAST_USED_FLUSH_SECS", "60"), ("INTERNAL_SERVICE_TOKEN", SERVICE_TOKEN)];
    let (mut child, port, _logs) = start_server(&db.url(), &settings);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let signup = sign_up(&client, &base, "restart@acme.test").await;
    let key = signup["data"]["api_key"]["key"].as_str().expect("key").to_owned();
    let key_id = signup["data"]["api_key"]["id"].as_str().expect("id").to_owned();
    let org_id = signup["data"]["account"]["org_id"].as_str().expect("org").to_owned();
    let send = |method: Method, path: &str, key: &str, body: Option<Value>| {
        let mut request = client.request(method, format!("{base}{path}")).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, made) =
        send(Method::POST, "/v1/account/api-keys", &key, Some(json!({"name": "t", "environment": "test"}))).await;
    assert_eq!(status, 201);
    let test_key = made["data"]["key"].as_str().expect("key").to_owned();
    let (status, made) = send(Method::POST, "/v1/account/api-keys", &key, Some(json!({"name": "gone"}))).await;
    assert_eq!(status, 201);
    let (gone, gone_id) =
        (made["data"]["key"].as_str().expect("text").to_owned(), made["data"]["id"].as_str().expect("text").to_owned());
    assert_eq!(send(Method::DELETE, &format!("/v1/account/api-keys/{gone_id}"), &key, None).await.0, 200);
    let verify = |key: &str| {
        let request = client.post(format!("{base}/v1/internal/verify-key")).bearer_auth(SERVICE_TOKEN);
        let request = request.json(&json!({"key": key}));
        async move { request.send().await.expect("sent").json::<Value>().await.expect("json")["data"]["code"].clone() }
    };
    for _ in 0..4 {
        assert_eq!(verify(&key).await, "valid");
    }
    assert_eq!(send(Method::GET, "/v1/account", &key, None).await.0, 200);
    for _ in 0..3 {
        assert_eq!(verify(&test_key).await, "valid");
    }
    for _ in 0..2 {
        assert_eq!(verify(&gone).await, "revoked");
    }
    send_signal(&child, "TERM");
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());

    // The live key: 4 verifications, and 3 writes and a read (the account API: not billed);
    // the test key: 3 verifications; the revoked key: 2 refusals.
    let export = account_api()
        .env("DATABASE_URL", db.url())
        .args(["usage", "export", "--month", &this_month()])
        .output()
        .expect("runs");
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let csv = String::from_utf8_lossy(&export.stdout).into_owned();
    // Signed up today: its free period runs from today to the month's end, prorated.
    let (today, last) = (today_and_month_end().0, today_and_month_end().1);
    let included = prorated(10_000, today, last);
    assert_eq!(
        csv,
        format!(
            "org_id,plan_id,valid,refused,valid_test,period_start,period_end,included,base_price_cents\n\
             {org_id},free,4,2,3,{today},{last},{included},0\n"
        )
    );
    assert!(String::from_utf8_lossy(&export.stderr).contains("not final"), "the current month is not final");

    let (mut child, port, _logs) = start_server(&db.url(), &settings);
    let base = format!("http://127.0.0.1:{port}");
    let report: Value = client
        .get(format!("{base}/v1/account/usage?days=1"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let first = key_entry(&report["data"], &key_id).expect("counted");
    // The 4 verifications and 4 account requests before the restart, and this request itself.
    let counts = (first["valid"].clone(), first["refused"].clone(), first["account_api"].clone());
    assert_eq!(counts, (json!(4), json!(0), json!(5)), "{report}");
    let gone_usage = key_entry(&report["data"], &gone_id).expect("counted");
    assert_eq!(gone_usage["refused_by_reason"], json!({"revoked": 2}), "{report}");
    assert_eq!(report["data"]["month_to_date"]["valid"], 4, "test keys are not billed: {report}");
    send_signal(&child, "TERM");
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
}

/// Today (UTC) and the last day of its month.
fn today_and_month_end() -> (time::Date, time::Date) {
    let today = time::OffsetDateTime::now_utc().date();
    let last = today.replace_day(time::util::days_in_month(today.month(), today.year())).expect("a day");
    (today, last)
}

/// `amount` prorated to the days from `start` to `end` of their month, rounded down.
fn prorated(amount: i64, start: time::Date, end: time::Date) -> i64 {
    let month_days = i64::from(time::util::days_in_month(start.month(), start.year()));
    amount * ((end - start).whole_days() + 1) / month_days
}

/// The export splits a month at a change of plan: each period's days, counts and prorated
/// figures. The organization is set up by SQL as if it had signed up on the month's first
/// day on free and verified on it; it moves to starter today through the API.
async fn the_export_splits_a_month_at_a_plan_change_with_each_periods_counts_and_prorated_figures(app: TestApp) {
    let org = app.signup_org("split@acme.test").await;
    let (today, last) = today_and_month_end();
    let first = today.replace_day(1).expect("a day");
    app.execute_sql(&format!(
        "UPDATE plan_periods SET start_day = '{first}' WHERE org_id = '{org}';
         INSERT INTO key_usage (key_id, day, outcome, uses) VALUES ('{key}', '{first}', 'valid', 40),
             ('{key}', '{first}', 'revoked', 3), ('{key}', '{first}', 'account_api', 9)",
        org = org.id,
        key = org.key_id
    ));
    for _ in 0..6 {
        assert_eq!(app.verify(&org.key).await, "valid");
    }
    let upgraded = crate::account_changes::patch_account(&app, &org.key, json!({"plan_id": "starter"})).await;
    assert_eq!(upgraded.status.as_u16(), 200, "{}", upgraded.body);
    for _ in 0..2 {
        assert_eq!(app.verify(&org.key).await, "valid");
    }
    // Written within a flush interval (1 s here); the export reads the database.
    let started = Instant::now();
    while stored_uses(&app, &org.key_id) < 40 + 3 + 9 + 8 {
        assert!(started.elapsed() < Duration::from_secs(5), "the uses were not written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let export = crate::process::account_api()
        .env("DATABASE_URL", app.db.url())
        .args(["usage", "export", "--month", &this_month()])
        .output()
        .expect("runs");
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let csv = String::from_utf8_lossy(&export.stdout).into_owned();
    let ours: Vec<&str> = csv.lines().filter(|line| line.starts_with(&org.id)).collect();
    // Today's 8 verifications are starter's (the last plan of a day holds for that day).
    let starter = format!(
        "{},starter,8,0,0,{today},{last},{},{}",
        org.id,
        prorated(1_000_000, today, last),
        prorated(4_900, today, last)
    );
    if today == first {
        assert_eq!(ours, [format!("{},starter,48,3,0,{today},{last},1000000,4900", org.id)], "{csv}");
    } else {
        let day_before = today.previous_day().expect("a day");
        let free = format!("{},free,40,3,0,{first},{day_before},{},0", org.id, prorated(10_000, first, day_before));
        assert_eq!(ours, [free, starter], "{csv}");
    }
}

/// The current month, UTC, as `YYYY-MM`.
fn this_month() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}", now.year(), u8::from(now.month()))
}

/// The uses of a key stored in the database (all days and outcomes), read with the test's
/// own SQL session: not through an instance, which would add what it holds in memory.
pub(crate) fn stored_uses(app: &TestApp, key_id: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        uses: i64,
    }
    let sql = format!("SELECT CAST(COALESCE(SUM(uses), 0) AS BIGINT) AS uses FROM key_usage WHERE key_id = '{key_id}'");
    let row: Row = diesel::RunQueryDsl::get_result(diesel::sql_query(sql), &mut app.db_session()).expect("read");
    row.uses
}

async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app.client.get(app.url("/metrics")).send().await.expect("sent").text().await.expect("text");
    crate::health::sample(&text, name, &[]).expect(name).parse().expect("a number")
}

async fn an_organization_erased_while_its_uses_wait_to_be_written_holds_back_no_other_organizations_usage(
    app: TestApp,
) {
    let erased = app.signup_org("erased@acme.test").await;
    let other = app.signup_org("other@acme.test").await;
    // The erased key is read once, so this instance holds it in its cache; that use written.
    assert_eq!(app.get_account(&erased.key).await.status.as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored_last_used_at(&app.db, &erased.key_id).is_none() {
        assert!(Instant::now() < deadline, "the first use was never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An erasure carried out by hand: the organization goes, its keys and counts with it,
    // and nothing tells the instances. Its cached key is still answered for a while: those
    // uses wait to be written for a key that no longer exists.
    app.execute_sql(&format!("DELETE FROM organizations WHERE id = '{}'", erased.id));
    let n = 4;
    for _ in 0..n {
        assert_eq!(app.get_account(&erased.key).await.status.as_u16(), 200);
    }
    for _ in 0..3 {
        assert_eq!(app.get_account(&other.key).await.status.as_u16(), 200);
    }
    // The other organization's uses are written all the same (read from the database).
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored_uses(&app, &other.key_id) < 3 || metric(&app, "usage_counts_dropped_total").await < n {
        assert!(Instant::now() < deadline, "the other organization's uses were never written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored_uses(&app, &other.key_id), 3);
    assert_eq!(metric(&app, "usage_counts_dropped_total").await, n, "the erased key's uses, dropped");
    assert_eq!(stored_uses(&app, &erased.key_id), 0);
    // Nothing held back: what a crash would lose now is under a flush interval old.
    assert!(metric(&app, "usage_unwritten_oldest_seconds").await < 60);
}
