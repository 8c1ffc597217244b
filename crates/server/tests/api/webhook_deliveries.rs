//! Webhook deliveries: each event an organization subscribes to reaches a receiver the test
//! runs on loopback, signed per the Standard Webhooks specification (verified here by its
//! own algorithm), retried with the same `webhook-id` until it is taken, signed with both
//! secrets after a rotation, and never sent to a non-public address unless allowed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{on_both_backends, spawn_app_on_with, spawn_app_with, TestApp};
use account_infra::testing::Backend;

on_both_backends!(
    database: an_event_claimed_by_a_process_killed_mid_delivery_is_delivered_after_restart;
    backend:
    every_event_arrives_signed_by_the_specifications_algorithm_and_holds_no_key,
    a_receiver_that_fails_gets_the_event_again_with_the_same_webhook_id,
    after_a_rotation_both_secrets_sign_each_delivery,
    a_test_event_reaches_the_endpoint_whatever_it_subscribes_to,
    two_instances_deliver_each_of_200_events_once,
    an_endpoint_failing_for_three_days_is_disabled_audited_and_says_why,
    an_operators_deactivation_and_activation_reach_the_endpoint,
    without_private_targets_allowed_a_name_pointing_at_loopback_is_refused_at_delivery,
);

pub(crate) const SECRET_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// One request the receiver took.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
    at: Instant,
}

/// A raw HTTP receiver on loopback: records every request, answers 500 to the first
/// `failures` of them and 204 to the rest.
pub(crate) struct Receiver {
    pub(crate) url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub(crate) async fn start(failures: usize) -> Self {
        Self::start_with(failures, 0).await
    }

    /// As [`Self::start`], but the first `hangs` requests get no answer at all.
    async fn start_with(failures: usize, hangs: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let (seen, answered) = (got.clone(), Arc::new(AtomicUsize::new(0)));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (seen, answered) = (seen.clone(), answered.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else { return };
                    seen.lock().expect("lock").push(request);
                    let n = answered.load(Ordering::SeqCst);
                    if n < hangs {
                        answered.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(300)).await;
                        return;
                    }
                    let failures = failures + hangs;
                    let status =
                        if answered.fetch_add(1, Ordering::SeqCst) < failures { "500 Oops" } else { "204 No Content" };
                    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { url, got }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until `enough` holds of what was received, for at most `limit`.
    pub(crate) async fn until(&self, limit: Duration, enough: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let got = self.received();
            if enough(&got) {
                return got;
            }
            assert!(started.elapsed() < limit, "not received within {limit:?}: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).to_string();
    Some(Received { headers, body, at: Instant::now() })
}

/// The Standard Webhooks signature of a request by `secret` (`whsec_…`), computed here.
fn expected_signature(secret: &str, received: &Received) -> String {
    let key = BASE64.decode(secret.strip_prefix("whsec_").expect("whsec_")).expect("base64");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
    let (id, timestamp) = (&received.headers["webhook-id"], &received.headers["webhook-timestamp"]);
    mac.update(format!("{id}.{timestamp}.{}", received.body).as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

fn signatures(received: &Received) -> Vec<&str> {
    received.headers["webhook-signature"].split(' ').collect()
}

/// Asserts the headers and the body's shape, and that `secret` signed it; the body parsed.
pub(crate) fn verified(secret: &str, received: &Received) -> Value {
    let id = &received.headers["webhook-id"];
    assert!(id.starts_with("msg_"), "{id}");
    let timestamp: i64 = received.headers["webhook-timestamp"].parse().expect("Unix seconds");
    assert!((timestamp - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 60);
    assert!(signatures(received).contains(&expected_signature(secret, received).as_str()), "{received:?}");
    assert_eq!(received.headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&received.body).expect("JSON");
    assert_eq!(body["id"], id.as_str());
    let fields: Vec<&str> = body.as_object().expect("an object").keys().map(String::as_str).collect();
    assert_eq!(
        fields.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from(["created_at", "data", "id", "org_id", "type"])
    );
    body
}

pub(crate) async fn app_for_webhooks(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, &[("WEBHOOK_SECRET_KEY", SECRET_KEY), ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "1")]).await
}

pub(crate) async fn register(app: &TestApp, key: &str, url: &str, events: Value) -> (String, String) {
    let reply =
        app.request(Method::POST, "/v1/account/webhooks", Some(key), Some(json!({"url": url, "events": events}))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let data = reply.data();
    (data["id"].as_str().expect("id").to_owned(), data["secret"].as_str().expect("secret").to_owned())
}

const ALL_EVENTS: [&str; 13] = [
    "key.created",
    "key.renamed",
    "key.allowlist_changed",
    "key.rolled",
    "key.revoked",
    "key.expiring",
    "key.expired",
    "usage.threshold",
    "account.updated",
    "account.plan_changed",
    "account.closed",
    "organization.deactivated",
    "organization.activated",
];

/// Every event a change sends; the scheduled ones (`key.expiring`, `key.expired`,
/// `usage.threshold`) are `webhook_notices.rs`'s.
async fn every_event_arrives_signed_by_the_specifications_algorithm_and_holds_no_key(backend: Backend) {
    let Some(app) = app_for_webhooks(backend).await else { return };
    let receiver = Receiver::start(0).await;
    let org = app.signup_org("events@acme.test").await;
    let (hook_id, secret) = register(&app, &org.key, &receiver.url, json!(ALL_EVENTS)).await;

    let created = app.create_key(&org.key, Some(json!({"name": "Worker"}))).await;
    let (key_id, plaintext) = (
        created.data()["id"].as_str().expect("id").to_owned(),
        created.data()["key"].as_str().expect("key").to_owned(),
    );
    let path = format!("/v1/account/api-keys/{key_id}");
    app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"name": "Renamed"}))).await;
    app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"allowed_ips": ["10.0.0.0/8"]}))).await;
    let rolled = app.request(Method::POST, &format!("{path}/roll"), Some(&org.key), Some(json!({}))).await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.body);
    let rolled_key = rolled.data()["key"].as_str().expect("key").to_owned();
    app.revoke_key(&org.key, &key_id).await;
    let leaked =
        app.request(Method::POST, "/v1/api-keys/revoke-leaked", None, Some(json!({"keys": [rolled_key]}))).await;
    assert_eq!(leaked.status, StatusCode::OK, "{}", leaked.body);
    app.request(Method::PATCH, "/v1/account", Some(&org.key), Some(json!({"name": "Acme 2", "plan_id": "starter"})))
        .await;
    let closed = app.request(Method::DELETE, "/v1/account", Some(&org.key), Some(json!({"confirm": org.id}))).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);

    // Every change's event, the three revocations included.
    let got = receiver
        .until(Duration::from_secs(20), |got| {
            let has = |text: &str| got.iter().any(|r| r.body.contains(text));
            ["key.renamed", "key.allowlist_changed", "key.rolled", "account.updated", "account.plan_changed"]
                .iter()
                .all(|kind| has(&format!("\"{kind}\"")))
                && ["owner", "leak_reported", "account_closed"].iter().all(|reason| has(&format!("\"{reason}\"")))
                && has("\"account.closed\"")
        })
        .await;
    let bodies: Vec<Value> = got.iter().map(|r| verified(&secret, r)).collect();
    let summary: Vec<(String, Value)> =
        bodies.iter().map(|b| (b["type"].as_str().expect("type").to_owned(), b["data"].clone())).collect();
    let of = |kind: &str| summary.iter().filter(|(t, _)| t == kind).map(|(_, d)| d.clone()).collect::<Vec<_>>();
    assert!(of("key.created").contains(&json!({"key_id": key_id})), "{summary:?}");
    assert_eq!(of("key.renamed"), [json!({"key_id": key_id})]);
    assert_eq!(of("key.allowlist_changed"), [json!({"key_id": key_id})]);
    assert_eq!(of("key.rolled"), [json!({"key_id": key_id})]);
    let reasons: BTreeSet<String> =
        of("key.revoked").iter().map(|d| d["reason"].as_str().expect("reason").to_owned()).collect();
    assert_eq!(reasons, ["account_closed", "leak_reported", "owner"].map(str::to_owned).into_iter().collect());
    assert_eq!(of("account.updated"), [json!({"fields": ["name"]})]);
    assert_eq!(of("account.plan_changed"), [json!({"from": "free", "to": "starter"})]);
    assert_eq!(of("account.closed"), [json!({})]);
    for body in &bodies {
        assert_eq!(body["org_id"], org.id.as_str());
        let text = body.to_string();
        assert!(!text.contains("mem_") && !text.contains(&plaintext) && !text.contains("whsec_"), "{text}");
    }
    // Closing sent account.closed, then disabled the endpoint.
    let mut conn = app.db_session();
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        disabled_reason: Option<String>,
    }
    let rows: Vec<Row> = diesel::RunQueryDsl::load(
        diesel::sql_query(format!("SELECT disabled_reason FROM webhook_endpoints WHERE id = '{hook_id}'")),
        &mut conn,
    )
    .expect("read");
    assert_eq!(rows[0].disabled_reason.as_deref(), Some("account_closed"));
}

async fn a_receiver_that_fails_gets_the_event_again_with_the_same_webhook_id(backend: Backend) {
    let Some(app) = app_for_webhooks(backend).await else { return };
    let receiver = Receiver::start(2).await;
    let org = app.signup_org("retry@acme.test").await;
    let (hook_id, secret) = register(&app, &org.key, &receiver.url, json!(["key.created"])).await;
    app.new_key(&org.key, json!({"name": "Once"})).await;
    let got = receiver.until(Duration::from_secs(20), |got| got.len() >= 3).await;
    let ids: BTreeSet<&String> = got.iter().map(|r| &r.headers["webhook-id"]).collect();
    assert_eq!(ids.len(), 1, "the same event each time: {got:?}");
    for r in &got {
        verified(&secret, r);
    }
    // Backed off: about 1 s, then about 2 s (±20%).
    assert!(got[1].at - got[0].at >= Duration::from_millis(700), "{:?}", got[1].at - got[0].at);
    assert!(got[2].at - got[1].at >= Duration::from_millis(1500), "{:?}", got[2].at - got[1].at);
    // Taken on the third attempt: no fourth.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), 3);

    // The metrics count the attempts by outcome; the outbox is empty again (counted every 5 s).
    let metrics = app.client.get(app.url("/metrics")).send().await.expect("sent").text().await.expect("text");
    for line in
        ["webhook_attempts_delivered_total 1", "webhook_attempts_retried_total 2", "webhook_deliveries_failed_total 0"]
    {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    assert!(metrics.lines().any(|l| l.starts_with("webhook_outbox_oldest_seconds ")), "{metrics}");

    // The attempts, newest first, a page at a time.
    let path = format!("/v1/account/webhooks/{hook_id}/deliveries");
    let page = app.request(Method::GET, &path, Some(&org.key), None).await;
    let attempts = page.data()["attempts"].as_array().expect("attempts").clone();
    let summary: Vec<(u64, Value)> =
        attempts.iter().map(|a| (a["attempt"].as_u64().expect("number"), a["status_code"].clone())).collect();
    assert_eq!(summary, [(3, json!(204)), (2, json!(500)), (1, json!(500))]);
    for attempt in &attempts {
        assert_eq!(attempt["event_id"], got[0].headers["webhook-id"].as_str());
        assert_eq!(attempt["event_type"], "key.created");
        assert_eq!(attempt["error"], Value::Null);
        assert!(attempt["duration_ms"].is_u64());
    }
    let first = app.request(Method::GET, &format!("{path}?limit=2"), Some(&org.key), None).await;
    assert_eq!(
        (first.data()["attempts"].as_array().expect("list").len(), &first.data()["has_more"]),
        (2, &json!(true))
    );
    let last_id = first.data()["attempts"][1]["id"].as_str().expect("id").to_owned();
    let rest = app.request(Method::GET, &format!("{path}?limit=2&before={last_id}"), Some(&org.key), None).await;
    assert_eq!(rest.data()["attempts"].as_array().expect("list").len(), 1);
    assert_eq!(rest.data()["has_more"], false);
    app.request(Method::GET, &format!("{path}?limit=0"), Some(&org.key), None)
        .await
        .assert_error(400, "validation_error");
    app.request(Method::GET, &format!("{path}?before=42"), Some(&org.key), None)
        .await
        .assert_error(400, "validation_error");
    let other = app.signup_org("other-retry@acme.test").await;
    app.request(Method::GET, &path, Some(&other.key), None).await.assert_error(404, "webhook_not_found");
}

async fn a_test_event_reaches_the_endpoint_whatever_it_subscribes_to(backend: Backend) {
    let Some(app) = app_for_webhooks(backend).await else { return };
    let receiver = Receiver::start(0).await;
    let org = app.signup_org("test-event@acme.test").await;
    let (id, secret) = register(&app, &org.key, &receiver.url, json!(["account.closed"])).await;
    let sent = app.request(Method::POST, &format!("/v1/account/webhooks/{id}/test"), Some(&org.key), None).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let event_id = sent.data()["event_id"].as_str().expect("event id").to_owned();
    let got = receiver.until(Duration::from_secs(10), |got| !got.is_empty()).await;
    let body = verified(&secret, &got[0]);
    assert_eq!((&body["id"], &body["type"]), (&json!(event_id), &json!("webhook.test")));
    assert_eq!(body["data"], json!({"webhook_id": id}));
    app.request(Method::POST, "/v1/account/webhooks/wh_missing/test", Some(&org.key), None)
        .await
        .assert_error(404, "webhook_not_found");
}

async fn after_a_rotation_both_secrets_sign_each_delivery(backend: Backend) {
    let Some(app) = app_for_webhooks(backend).await else { return };
    let receiver = Receiver::start(0).await;
    let org = app.signup_org("both@acme.test").await;
    let (id, old) = register(&app, &org.key, &receiver.url, json!(["key.created"])).await;
    let rotated =
        app.request(Method::POST, &format!("/v1/account/webhooks/{id}/rotate-secret"), Some(&org.key), None).await;
    let new = rotated.data()["secret"].as_str().expect("secret").to_owned();
    app.new_key(&org.key, json!({"name": "Signed twice"})).await;
    let got = receiver.until(Duration::from_secs(10), |got| !got.is_empty()).await;
    let both = signatures(&got[0]);
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both.contains(&expected_signature(&old, &got[0]).as_str()));
    assert!(both.contains(&expected_signature(&new, &got[0]).as_str()));
}

async fn without_private_targets_allowed_a_name_pointing_at_loopback_is_refused_at_delivery(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[("WEBHOOK_SECRET_KEY", SECRET_KEY)]).await else { return };
    let receiver = Receiver::start(0).await;
    let org = app.signup_org("rebind@acme.test").await;
    // A public address at registration (no DNS needed), then re-pointed, as a name can be,
    // at the receiver on loopback by name.
    let (id, _) = register(&app, &org.key, "http://93.184.215.14/hook", json!(["key.created"])).await;
    let port = receiver.url.rsplit(':').next().expect("port").trim_end_matches("/hook");
    app.execute_sql(&format!("UPDATE webhook_endpoints SET url = 'http://localhost:{port}/hook' WHERE id = '{id}'"));
    app.new_key(&org.key, json!({"name": "Never sent"})).await;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        error: Option<String>,
    }
    let started = Instant::now();
    let error = loop {
        let mut conn = app.db_session();
        let rows: Vec<Row> =
            diesel::RunQueryDsl::load(diesel::sql_query("SELECT error FROM webhook_attempts"), &mut conn)
                .expect("read");
        if let Some(row) = rows.into_iter().next() {
            break row.error;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no attempt recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.as_deref().is_some_and(|e| e.contains("not a public address")), "{error:?}");
    assert!(receiver.received().is_empty(), "nothing reached loopback");
}

async fn two_instances_deliver_each_of_200_events_once(backend: Backend) {
    let Some(first) = app_for_webhooks(backend).await else { return };
    let settings = [("WEBHOOK_SECRET_KEY", SECRET_KEY), ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "1")];
    let second = spawn_app_on_with(first.db.clone(), &settings).await;
    let receiver = Receiver::start(0).await;
    let org = first.signup_org("two@acme.test").await;
    let (_, secret) = register(&first, &org.key, &receiver.url, json!(["key.renamed"])).await;
    let key_id = first.create_key(&org.key, Some(json!({"name": "Renamed often"}))).await.data()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/v1/account/api-keys/{key_id}");
    // 200 changes, half through each instance; both workers claim from the one outbox.
    for n in 0..200 {
        let app = if n % 2 == 0 { &first } else { &second };
        let reply = app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"name": format!("Name {n}")}))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let got = receiver
        .until(Duration::from_secs(60), |got| {
            got.iter().map(|r| &r.headers["webhook-id"]).collect::<BTreeSet<_>>().len() >= 200
        })
        .await;
    // Give a duplicate the time to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(got);
    let got = receiver.received();
    let distinct = got.iter().map(|r| r.headers["webhook-id"].clone()).collect::<BTreeSet<_>>();
    let duplicates = got.len() - distinct.len();
    eprintln!("two instances: {} events, {} requests, {duplicates} duplicates", distinct.len(), got.len());
    assert_eq!(distinct.len(), 200);
    // Claims commit before sending, so without a crash no event is sent twice.
    assert_eq!(duplicates, 0);
    for r in &got {
        verified(&secret, r);
    }
}

async fn an_event_claimed_by_a_process_killed_mid_delivery_is_delivered_after_restart(
    db: account_infra::testing::TestDatabase,
) {
    use crate::process::{start_server, wait_with_timeout};
    let receiver = Receiver::start_with(0, 1).await;
    let settings = [
        ("WEBHOOK_SECRET_KEY", SECRET_KEY),
        ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "1"),
        ("WEBHOOK_TIMEOUT_MS", "2000"),
        ("RATE_LIMIT_SIGNUPS_PER_HOUR", "0"),
    ];
    let (mut child, port, _log) = start_server(&db.url(), &settings);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let signup = client
        .post(format!("{base}/v1/signup"))
        .json(&json!({"name": "Acme", "email": "kill@acme.test"}))
        .send()
        .await
        .expect("sent");
    let signup: Value = signup.json().await.expect("JSON");
    let key = signup["data"]["api_key"]["key"].as_str().expect("key").to_owned();
    let hook = client
        .post(format!("{base}/v1/account/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": receiver.url, "events": ["key.created"]}))
        .send()
        .await
        .expect("sent");
    let hook: Value = hook.json().await.expect("JSON");
    let secret = hook["data"]["secret"].as_str().expect("secret").to_owned();
    let created = client
        .post(format!("{base}/v1/account/api-keys"))
        .bearer_auth(&key)
        .json(&json!({"name": "Survives"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), StatusCode::CREATED);
    // The delivery is claimed and in flight (the receiver holds it): kill -9 now, before
    // any outcome is recorded.
    let first = receiver.until(Duration::from_secs(10), |got| !got.is_empty()).await;
    child.kill().expect("SIGKILL");
    wait_with_timeout(&mut child, Duration::from_secs(5));
    // Restarted: once the dead process's claim expires (timeout + 30 s) it is sent again.
    let (mut restarted, _, _log) = start_server(&db.url(), &settings);
    let got = receiver.until(Duration::from_secs(60), |got| got.len() >= 2).await;
    assert_eq!(got[1].headers["webhook-id"], first[0].headers["webhook-id"], "the same event");
    verified(&secret, &got[1]);
    restarted.kill().expect("stopped");
    let _ = restarted.wait();
}

async fn an_endpoint_failing_for_three_days_is_disabled_audited_and_says_why(backend: Backend) {
    let Some(app) = app_for_webhooks(backend).await else { return };
    let receiver = Receiver::start(usize::MAX / 2).await;
    let org = app.signup_org("failing@acme.test").await;
    let (id, _) = register(&app, &org.key, &receiver.url, json!(["key.created"])).await;
    // Registered five days ago, its first failure four days ago, none answered since.
    let old = (time::OffsetDateTime::now_utc() - time::Duration::days(4)).unix_timestamp() * 1_000_000;
    let registered_at = old - 86_400_000_000;
    app.execute_sql(&format!(
        "UPDATE webhook_endpoints SET created_at = {registered_at}, updated_at = {registered_at} WHERE id = '{id}'"
    ));
    app.execute_sql(&format!(
        "INSERT INTO webhook_deliveries (endpoint_id, org_id, message_id, event_type, body, created_at, status, \
         attempts, next_attempt_at) VALUES ('{id}', '{}', 'msg_old', 'key.created', '{{}}', {old}, 'failed', 1, {old})",
        org.id
    ));
    app.execute_sql(&format!(
        "INSERT INTO webhook_attempts (delivery_id, endpoint_id, attempt, attempted_at, status_code, duration_ms) \
         VALUES ((SELECT MAX(id) FROM webhook_deliveries), '{id}', 1, {old}, 500, 3)"
    ));
    app.new_key(&org.key, json!({"name": "Fails again"})).await;
    receiver.until(Duration::from_secs(10), |got| !got.is_empty()).await;
    let path = format!("/v1/account/webhooks/{id}");
    let started = Instant::now();
    let endpoint = loop {
        let reply = app.request(Method::GET, &path, Some(&org.key), None).await;
        if reply.data()["enabled"] == false {
            break reply.data().clone();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not disabled: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(endpoint["disabled_reason"], "every delivery failed for 3 days");
    let audit = app.request(Method::GET, "/v1/account/audit-log", Some(&org.key), None).await;
    let disabled = audit.data()["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["action"] == "webhook.disabled")
        .expect("audited")
        .clone();
    assert_eq!((&disabled["target_id"], &disabled["actor_key_id"]), (&json!(id), &Value::Null));
    // Its event is not retried any more; enabling it again clears the reason.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), 1);
    let enabled = app.request(Method::PATCH, &path, Some(&org.key), Some(json!({"enabled": true}))).await;
    assert_eq!((&enabled.data()["enabled"], &enabled.data()["disabled_reason"]), (&json!(true), &Value::Null));
    // Enabled again, its old failures no longer count: a new one does not disable it.
    app.new_key(&org.key, json!({"name": "Fails once more"})).await;
    receiver.until(Duration::from_secs(10), |got| got.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = app.request(Method::GET, &path, Some(&org.key), None).await;
    assert_eq!(still.data()["enabled"], true);
}

/// The operator's command is another process: its change's event is in the outbox the
/// server's worker reads.
async fn an_operators_deactivation_and_activation_reach_the_endpoint(backend: Backend) {
    let Some(app) = app_for_webhooks(backend).await else { return };
    let receiver = Receiver::start(0).await;
    let org = app.signup_org("operator@acme.test").await;
    let (_, secret) =
        register(&app, &org.key, &receiver.url, json!(["organization.deactivated", "organization.activated"])).await;
    for command in ["deactivate", "activate"] {
        let output = crate::process::account_api()
            .env("DATABASE_URL", app.db.url())
            .args(["orgs", command, &org.id])
            .output()
            .expect("runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let got = receiver.until(Duration::from_secs(10), |got| got.len() >= 2).await;
    let kinds: Vec<Value> = got.iter().map(|r| verified(&secret, r)).map(|b| json!([b["type"], b["data"]])).collect();
    assert_eq!(kinds, [json!(["organization.deactivated", {}]), json!(["organization.activated", {}])]);
}
