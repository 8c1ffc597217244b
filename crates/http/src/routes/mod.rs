//! The route table: which path and method reach which handler.

pub(crate) mod account;
pub(crate) mod audit_log;
pub(crate) mod health;
pub(crate) mod key_lifecycle;
pub(crate) mod keys;
pub(crate) mod leaks;
pub(crate) mod plans;
mod shared_responses;
pub(crate) mod signup;
pub(crate) mod verify;

use actix_web::http::header;
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::middleware::{envelope_framework_errors, observe_request, security_headers};

pub use health::ReadinessCheck;
pub use verify::InternalToken;

/// The largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Registers every route, the envelope for framework errors, and the response headers.
/// Needs `web::Data` of `AccountService`, `ReadinessCheck`, `AbuseLimits` and `Metrics` as
/// app data. `POST /v1/internal/verify-key` exists only with an `internal_token`.
pub fn configure(cfg: &mut web::ServiceConfig, internal_token: Option<InternalToken>) {
    let query_errors = web::QueryConfig::default().error_handler(|err, _| crate::body::query_error(&err).into());
    let mut scope = web::scope("")
        .wrap(ErrorHandlers::new().default_handler(envelope_framework_errors))
        .wrap(security_headers())
        .wrap(from_fn(observe_request))
        // Matched in this order, one pattern after another: the liveness probe (trivial,
        // so it stays first) and then the authenticated routes, busiest first.
        .service(resource("/healthz", &["GET"]).route(web::get().to(health::healthz)))
        .service(resource("/v1/account", &["GET"]).route(web::get().to(account::get_account)))
        .service(
            resource("/v1/account/api-keys", &["GET", "POST"])
                .route(web::get().to(keys::list_keys))
                .route(web::post().to(keys::create_key)),
        )
        .service(
            resource("/v1/account/api-keys/{key_id}", &["DELETE", "PATCH"])
                .route(web::delete().to(keys::revoke_key))
                .route(web::patch().to(key_lifecycle::rename_key)),
        )
        .service(
            resource("/v1/account/api-keys/{key_id}/roll", &["POST"]).route(web::post().to(key_lifecycle::roll_key)),
        )
        .service(resource("/v1/account/audit-log", &["GET"]).route(web::get().to(audit_log::audit_log)))
        .service(resource("/v1/signup", &["POST"]).route(web::post().to(signup::signup)))
        .service(resource("/v1/plans", &["GET"]).route(web::get().to(plans::list_plans)))
        .service(resource("/v1/api-keys/revoke-leaked", &["POST"]).route(web::post().to(leaks::revoke_leaked)))
        .service(resource("/readyz", &["GET"]).route(web::get().to(health::readyz)))
        .service(resource("/metrics", &["GET"]).route(web::get().to(crate::metrics::metrics)))
        .service(resource("/openapi.json", &["GET"]).route(web::get().to(crate::openapi::serve_openapi)));
    if let Some(token) = internal_token {
        scope = scope.service(
            resource("/v1/internal/verify-key", &["POST"])
                .app_data(web::Data::new(token))
                .route(web::post().to(verify::verify_key)),
        );
    }
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .app_data(query_errors)
        .service(scope.default_service(web::to(not_found)));
}

/// A resource whose other methods get 405 with an `Allow` header.
fn resource(path: &str, allowed: &'static [&'static str]) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        let mut response = actix_web::ResponseError::error_response(&ApiError::from_status(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        ));
        if let Ok(value) = header::HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        response
    }))
}

async fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::not_found())
}
