//! The OpenAPI 3.1 document, generated from the handlers' annotations so that it cannot
//! drift from them, and served at `GET /openapi.json`.

use std::sync::OnceLock;

use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::OpenApiFactory as _;

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Account API",
        description = "Manage your account and API keys. Every response is JSON in an envelope: \
            `{\"success\": true, \"data\": ...}` or `{\"success\": false, \"error\": {\"code\", \"message\", \"field\"?}}`.",
    ),
    modifiers(&BearerKey),
    tags(
        (name = "accounts", description = "Signup and the caller's account"),
        (name = "api-keys", description = "The caller's organization's API keys"),
        (name = "webhooks", description = "The caller's organization's webhook endpoints; 503 until WEBHOOK_SECRET_KEY is set"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "internal", description = "For other services of ours; every request is refused (401) until INTERNAL_SERVICE_TOKEN is set"),
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

/// The document, built once from the registered endpoints.
pub(crate) fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let endpoints = routes::endpoints();
        let mut doc = ApiDoc::openapi();
        doc.paths = endpoints.paths();
        let mut schemas = Vec::new();
        endpoints.schemas(&mut schemas);
        let components = doc.components.get_or_insert_with(Default::default);
        components.schemas.extend(schemas);
        components.schemas.insert(
            routes::api_keys::allowlist_schema::NAME.to_owned(),
            routes::api_keys::allowlist_schema::entry().into(),
        );
        // A change sends at least one field: what the derive cannot say.
        for change in ["UpdateApiKeyRequest", "UpdateAccountRequest", "UpdateWebhookRequest"] {
            if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(update))) =
                components.schemas.get_mut(change)
            {
                update.min_properties = Some(1);
            }
        }
        doc
    })
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut json = document().to_pretty_json().unwrap_or_else(|e| unreachable!("serializable: {e}"));
        json.push('\n');
        json
    })
}

/// This document.
#[utoipa::path(tag = "operations", operation_id = "get_openapi_document", responses(
    (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
))]
#[get("/openapi.json")]
pub(crate) async fn serve_openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(openapi_json())
}
