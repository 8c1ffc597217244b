//! The framework's own errors, in the envelope too.

use reqwest::Method;

use crate::helpers::{on_both_backends, TestApp};

on_both_backends!(
    unknown_routes_get_404_in_the_envelope,
    wrong_methods_get_405_with_allow,
    bodies_over_64_kib_get_413,
    bodies_that_are_not_json_get_415,
);

async fn unknown_routes_get_404_in_the_envelope(app: TestApp) {
    for path in ["/", "/v1", "/v1/accounts", "/v1/account/api-keys/key_x/extra", "/healthz/"] {
        app.request(Method::GET, path, None, None).await.assert_error(404, "not_found");
    }
}

async fn wrong_methods_get_405_with_allow(app: TestApp) {
    for (method, path, allow) in [
        (Method::PUT, "/v1/account", "GET"),
        (Method::DELETE, "/v1/account/api-keys", "GET, POST"),
        (Method::GET, "/v1/signup", "POST"),
        (Method::POST, "/v1/account/api-keys/key_abc", "DELETE, PATCH"),
        (Method::POST, "/healthz", "GET"),
    ] {
        let reply = app.request(method, path, None, None).await;
        reply.assert_error(405, "method_not_allowed");
        assert_eq!(reply.headers["allow"], allow);
    }
}

async fn bodies_over_64_kib_get_413(app: TestApp) {
    let name = "a".repeat(70 * 1024);
    let body = format!(r#"{{"name": "{name}", "email": "big@acme.test"}}"#).into_bytes();
    let reply = app.send_raw(Method::POST, "/v1/signup", None, "application/json", body).await;
    reply.assert_error(413, "payload_too_large");
    // Nothing was stored.
    app.signup_org("big@acme.test").await;
}

async fn bodies_that_are_not_json_get_415(app: TestApp) {
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/xml"] {
        let body = br#"{"name": "Acme", "email": "type@acme.test"}"#.to_vec();
        let reply = app.send_raw(Method::POST, "/v1/signup", None, content_type, body).await;
        reply.assert_error(415, "unsupported_media_type");
    }
    let reply = app
        .send_raw(
            Method::POST,
            "/v1/signup",
            None,
            "application/json; charset=utf-8",
            br#"{"name": "Acme", "email": "type@acme.test"}"#.to_vec(),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 201, "{}", reply.body);
}
