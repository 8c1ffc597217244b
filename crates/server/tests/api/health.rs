//! `GET /healthz`, `GET /readyz`, `GET /metrics` and `GET /openapi.json`: liveness,
//! readiness, the metrics, and the served document (every operation in it routed, and equal
//! to the committed one).

use reqwest::Method;

use crate::helpers::{on_both_backends, TestApp};

on_both_backends!(
    healthz_answers_200_in_the_envelope,
    readyz_answers_200_while_the_database_answers,
    metrics_count_requests_failures_and_cache_use,
    the_served_openapi_document_is_the_committed_one,
);

async fn healthz_answers_200_in_the_envelope(app: TestApp) {
    let reply = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(reply.data()["status"], "ok");
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");
}

async fn readyz_answers_200_while_the_database_answers(app: TestApp) {
    let reply = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
}

/// The value of the sample `name` with these labels (and none when `labels` is empty).
pub(crate) fn sample<'a>(text: &'a str, name: &str, labels: &[(&str, &str)]) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_part, value) = rest.rsplit_once(' ')?;
        let all = labels.iter().all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")));
        (all && (labels.is_empty() == label_part.is_empty())).then_some(value)
    })
}

async fn metrics_count_requests_failures_and_cache_use(app: TestApp) {
    let org = app.signup_org("metrics@acme.test").await;
    app.get_account(&org.key).await;
    app.get_account(&org.key).await;
    app.get_account("mem_live_nope").await;
    app.request(Method::GET, "/v1/account", None, None).await;
    let response = app.client.get(app.url("/metrics")).send().await.expect("sent");
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/plain"));
    let text = response.text().await.expect("text");

    let get_account = [("route", "/v1/account"), ("method", "GET"), ("status", "200")];
    assert_eq!(sample(&text, "http_requests_total", &get_account), Some("2"), "{text}");
    let signups = [("route", "/v1/signup"), ("method", "POST"), ("status", "201")];
    assert_eq!(sample(&text, "http_requests_total", &signups), Some("1"));
    assert_eq!(sample(&text, "http_requests_total", &[("route", "/v1/account"), ("status", "401")]), Some("2"));
    assert_eq!(sample(&text, "auth_failures_total", &[("reason", "invalid_api_key")]), Some("1"));
    assert_eq!(sample(&text, "auth_failures_total", &[("reason", "missing_api_key")]), Some("1"));
    assert_eq!(sample(&text, "http_request_duration_seconds_count", &[("route", "/v1/account")]), Some("4"));
    assert!(text.contains("http_request_duration_seconds_bucket{"));
    let hits: u64 = sample(&text, "credential_cache_hits_total", &[]).expect("hits").parse().expect("number");
    let misses: u64 = sample(&text, "credential_cache_misses_total", &[]).expect("misses").parse().expect("number");
    assert!(hits >= 1 && misses >= 1, "hits {hits}, misses {misses}");
    assert!(sample(&text, "db_pool_connections_in_use", &[]).is_some());
    assert!(sample(&text, "db_pool_connections_idle", &[]).is_some());
    usage_flushes_are_counted(&app).await;
}

/// The flush runs every second in tests: wait for one, then for its rows.
async fn usage_flushes_are_counted(app: &TestApp) {
    let started = std::time::Instant::now();
    loop {
        let text = app.client.get(app.url("/metrics")).send().await.expect("sent").text().await.expect("text");
        let read = |name: &str| -> u64 { sample(&text, name, &[]).expect(name).parse().expect("number") };
        let (flushes, rows) = (read("usage_flushes_total"), read("usage_flush_rows_total"));
        if flushes >= 1 {
            // The uses above: one key's last use and its valid count at least.
            assert!(rows >= 2, "{flushes} flushes, {rows} rows");
            return;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "no usage flush was counted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn the_served_openapi_document_is_the_committed_one(app: TestApp) {
    let response = app.client.get(app.url("/openapi.json")).send().await.expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    let served = response.text().await.expect("text");
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json")).expect("read");
    assert!(served == committed, "the served document differs from docs/openapi.json: run `just openapi`");
}

/// The document the server serves describes only routes that exist: each operation, called
/// without credentials or body, reaches its handler (never the unknown-route 404 or a 405).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_the_served_document_describes_is_routed() {
    let app = crate::helpers::spawn_app_with(
        account_infra::testing::Backend::Sqlite,
        &[("INTERNAL_SERVICE_TOKEN", "token-for-the-routing-test-0123456789")],
    )
    .await
    .expect("sqlite");
    let doc = app.request(Method::GET, "/openapi.json", None, None).await.body;
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("an HTTP method");
            // Raw: `/metrics` answers text, not JSON.
            let response = app
                .client
                .request(method.clone(), app.url(&path.replace("{key_id}", "key_x")))
                .send()
                .await
                .expect("sent");
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let code = body["error"]["code"].as_str().unwrap_or_default();
            assert!(code != "not_found" && status != 405, "{method} {path} is not routed: {status} {body}");
            operations += 1;
        }
    }
    // The 19 `#[utoipa::path]` handlers of crates/http/src/routes: one less means one went
    // missing from the document, one more that it describes a route that is not a handler.
    assert_eq!(operations, 27, "the document lists every operation");
}
