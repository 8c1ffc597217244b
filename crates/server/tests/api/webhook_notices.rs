//! The scheduled webhook notices (`key.expiring` 7 days and 1 day ahead, `key.expired`,
//! `usage.threshold` at 80% and 100% of the plan period's included requests): each reaches a
//! receiver on loopback signed per the Standard Webhooks specification, once, however many
//! instances look for them; none for a revoked key nor for stale news.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{on_both_backends, spawn_app_on_with, spawn_app_with, Org, TestApp};
use crate::webhook_deliveries::{register, verified, Received, Receiver, SECRET_KEY};
use account_infra::testing::Backend;

on_both_backends!(
    backend:
    each_scheduled_notice_arrives_once_signed_and_holds_no_key,
    two_instances_send_each_scheduled_notice_once,
);

/// Webhooks on, loopback allowed, the scheduled pass every second.
const SETTINGS: [(&str, &str); 3] =
    [("WEBHOOK_SECRET_KEY", SECRET_KEY), ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "1"), ("WEBHOOK_SCHEDULE_SECS", "1")];

const SCHEDULED: [&str; 3] = ["key.expiring", "key.expired", "usage.threshold"];

/// The free plan includes 5 requests a day of the month: a period of any length includes at
/// least 5 (so that 80% and 100% are reached apart).
fn five_a_day(app: &TestApp) {
    app.execute_sql("UPDATE plans SET included_requests_per_month = 155 WHERE id = 'free'");
}

/// What the organization's current period includes, as its usage report says.
async fn included(app: &TestApp, org: &Org) -> i64 {
    let usage = app.request(Method::GET, "/v1/account/usage", Some(&org.key), None).await;
    usage.data()["month_to_date"]["included"].as_i64().expect("a count")
}

/// Moves a key's expiry to `ahead` of now (negative: in the past), as time passing would.
fn expire_in(app: &TestApp, key_id: &str, ahead: time::Duration) {
    let at = (time::OffsetDateTime::now_utc() + ahead).unix_timestamp() * 1_000_000;
    app.execute_sql(&format!("UPDATE api_keys SET expires_at = {at} WHERE id = '{key_id}'"));
}

/// The received events of the scheduled types, verified, as `(type, data)`.
fn scheduled(secret: &str, got: &[Received]) -> Vec<(String, Value)> {
    got.iter()
        .map(|r| verified(secret, r))
        .filter(|body| SCHEDULED.contains(&body["type"].as_str().expect("a type")))
        .map(|body| (body["type"].as_str().expect("a type").to_owned(), body["data"].clone()))
        .collect()
}

fn count(got: &[Received], kind: &str, field: &str, value: &Value) -> usize {
    got.iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .filter(|b| b["type"] == kind && &b["data"][field] == value)
        .count()
}

async fn key_expiring_in_days(app: &TestApp, org: &Org, name: &str, days: u32) -> String {
    let created = app.create_key(&org.key, Some(json!({"name": name, "expires_in_days": days}))).await;
    created.data()["id"].as_str().expect("id").to_owned()
}

async fn each_scheduled_notice_arrives_once_signed_and_holds_no_key(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &SETTINGS).await else { return };
    five_a_day(&app);
    let receiver = Receiver::start(0).await;
    let org = app.signup_org("scheduled@acme.test").await;
    let (_, secret) = register(&app, &org.key, &receiver.url, json!(SCHEDULED)).await;

    // A key revoked before its expiry, and one that expired days ago: never told of.
    let revoked = key_expiring_in_days(&app, &org, "Revoked", 30).await;
    app.revoke_key(&org.key, &revoked).await;
    expire_in(&app, &revoked, time::Duration::hours(12));
    let stale = key_expiring_in_days(&app, &org, "Stale", 30).await;
    expire_in(&app, &stale, -time::Duration::days(3));

    // Created 3 days before its expiry: the 7-day notice once, then 1 day before, then expired.
    let soon = key_expiring_in_days(&app, &org, "Soon", 3).await;
    let id = json!(soon);
    receiver.until(Duration::from_secs(15), |got| count(got, "key.expiring", "key_id", &id) == 1).await;
    expire_in(&app, &soon, time::Duration::hours(12));
    receiver.until(Duration::from_secs(15), |got| count(got, "key.expiring", "key_id", &id) == 2).await;
    expire_in(&app, &soon, -time::Duration::minutes(1));
    receiver.until(Duration::from_secs(15), |got| count(got, "key.expired", "key_id", &id) == 1).await;

    // Valid verifications of a live key, flushed, reach 80% then 100% of the period's share.
    let included = included(&app, &org).await;
    let eighty = (included * 4 + 4) / 5;
    for _ in 0..eighty {
        assert_eq!(app.verify(&org.key).await, "valid");
    }
    receiver.until(Duration::from_secs(15), |got| count(got, "usage.threshold", "percent", &json!(80)) == 1).await;
    for _ in eighty..included {
        assert_eq!(app.verify(&org.key).await, "valid");
    }
    receiver.until(Duration::from_secs(15), |got| count(got, "usage.threshold", "percent", &json!(100)) == 1).await;

    // A few passes more: nothing is sent twice, nothing for the other keys.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = receiver.received();
    let events = scheduled(&secret, &got);
    let expiry = |kind: &str, data: &Value| {
        let expires_at = data["expires_at"].as_str().expect("an expiry").to_owned();
        assert!(expires_at.ends_with('Z'), "{data}");
        (kind.to_owned(), data["key_id"].clone(), data["name"].clone(), data["within_days"].clone())
    };
    let keys: Vec<_> = events.iter().filter(|(kind, _)| kind.starts_with("key.")).map(|(k, d)| expiry(k, d)).collect();
    assert_eq!(
        keys,
        [
            ("key.expiring".to_owned(), id.clone(), json!("Soon"), json!(7)),
            ("key.expiring".to_owned(), id.clone(), json!("Soon"), json!(1)),
            ("key.expired".to_owned(), id.clone(), json!("Soon"), Value::Null),
        ]
    );
    let usage: Vec<Value> =
        events.iter().filter(|(kind, _)| kind == "usage.threshold").map(|(_, d)| d.clone()).collect();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert_eq!(
        usage,
        [
            json!({"percent": 80, "used": eighty, "included": included, "period_start": today}),
            json!({"percent": 100, "used": included, "included": included, "period_start": today}),
        ]
    );
    for r in &got {
        assert!(!r.body.contains(&org.key) && !r.body.contains("whsec_") && !r.body.contains("mem_"), "{}", r.body);
    }
}

async fn two_instances_send_each_scheduled_notice_once(backend: Backend) {
    let Some(first) = spawn_app_with(backend, &SETTINGS).await else { return };
    let second = spawn_app_on_with(first.db.clone(), &SETTINGS).await;
    five_a_day(&first);
    let receiver = Receiver::start(0).await;
    let org = first.signup_org("two-passes@acme.test").await;
    let (_, secret) = register(&first, &org.key, &receiver.url, json!(SCHEDULED)).await;
    // 20 keys expiring in 3 days (the 7-day notice due at once), made through both.
    let mut keys = Vec::new();
    for n in 0..20 {
        let app = if n % 2 == 0 { &first } else { &second };
        keys.push(key_expiring_in_days(app, &org, &format!("Key {n}"), 3).await);
    }
    receiver.until(Duration::from_secs(20), |got| count_type(got, "key.expiring") >= 20).await;
    // Then all of them expire, and the period's requests are used up.
    for key in &keys {
        expire_in(&first, key, -time::Duration::minutes(1));
    }
    for n in 0..included(&first, &org).await {
        let app = if n % 2 == 0 { &first } else { &second };
        assert_eq!(app.verify(&org.key).await, "valid");
    }
    receiver
        .until(Duration::from_secs(20), |got| {
            count_type(got, "key.expired") >= 20 && count_type(got, "usage.threshold") >= 1
        })
        .await;
    // Both instances keep looking every second: give a duplicate the time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = receiver.received();
    let mut sent: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (kind, data) in scheduled(&secret, &got) {
        let subject = data["key_id"].as_str().map_or_else(|| data["percent"].to_string(), str::to_owned);
        *sent.entry((kind, subject)).or_default() += 1;
    }
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!("two instances: {} scheduled notices, {} sent more than once", sent.len(), twice.len());
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let of = |kind: &str| sent.keys().filter(|(k, _)| k == kind).count();
    assert_eq!((of("key.expiring"), of("key.expired")), (20, 20), "{sent:?}");
    // The 80% notice too, when a pass saw the usage between the thresholds.
    assert!(sent.contains_key(&("usage.threshold".to_owned(), "100".to_owned())), "{sent:?}");
}

fn count_type(got: &[Received], kind: &str) -> usize {
    got.iter().filter(|r| r.body.contains(&format!("\"type\":\"{kind}\""))).count()
}
