//! The OpenAPI 3.1 document, generated from the handlers' annotations so that it cannot
//! drift from them, and served at `GET /openapi.json`.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Account API",
        description = "Manage your account and API keys. Every response is JSON in an envelope: \
            `{\"success\": true, \"data\": ...}` or `{\"success\": false, \"error\": {\"code\", \"message\", \"field\"?}}`.",
    ),
    paths(
        routes::signup::signup,
        routes::account::get_account,
        routes::keys::list_keys,
        routes::keys::create_key,
        routes::keys::revoke_key,
        routes::key_lifecycle::rename_key,
        routes::key_lifecycle::roll_key,
        routes::leaks::revoke_leaked,
        routes::audit_log::audit_log,
        routes::plans::list_plans,
        routes::verify::verify_key,
        routes::health::healthz,
        routes::health::readyz,
        crate::metrics::metrics,
        serve_openapi,
    ),
    modifiers(&BearerKey),
    tags(
        (name = "accounts", description = "Signup and the caller's account"),
        (name = "api-keys", description = "The caller's organization's API keys"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "internal", description = "For other services of ours; exists only when INTERNAL_SERVICE_TOKEN is set"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` scheme: `Authorization: Bearer mem_live_...`.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("An API key: `mem_live_...` or `mem_test_...`".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
        let mut service = Http::new(HttpAuthScheme::Bearer);
        service.description = Some("The internal service token (INTERNAL_SERVICE_TOKEN)".to_owned());
        components.add_security_scheme("service_token", SecurityScheme::Http(service));
    }
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn openapi_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut json = ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| unreachable!("serializable: {e}"));
        json.push('\n');
        json
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
))]
pub(crate) async fn serve_openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(openapi_json())
}
