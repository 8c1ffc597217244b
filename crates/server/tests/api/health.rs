//! Liveness and readiness.

use reqwest::Method;

use crate::helpers::{on_both_backends, TestApp};

on_both_backends!(healthz_answers_200_in_the_envelope, readyz_answers_200_while_the_database_answers);

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
    // The 17 `#[utoipa::path]` handlers of crates/http/src/routes: one less means one went
    // missing from the document, one more that it describes a route that is not a handler.
    assert_eq!(operations, 17, "the document lists every operation");
}
