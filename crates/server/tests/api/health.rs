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
