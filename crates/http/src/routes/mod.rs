//! The route table: which path and method reach which handler.

pub(crate) mod account;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod signup;

use actix_web::http::header;
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::middleware::{envelope_framework_errors, observe_request, security_headers};

pub use health::ReadinessCheck;

/// The largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Registers every route, the envelope for framework errors, and the response headers.
/// Needs `web::Data<AccountService>` and `web::Data<ReadinessCheck>` as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES)).service(
        web::scope("")
            .wrap(ErrorHandlers::new().default_handler(envelope_framework_errors))
            .wrap(security_headers())
            .wrap(from_fn(observe_request))
            .service(resource("/healthz", &["GET"]).route(web::get().to(health::healthz)))
            .service(resource("/readyz", &["GET"]).route(web::get().to(health::readyz)))
            .service(resource("/metrics", &["GET"]).route(web::get().to(crate::metrics::metrics)))
            .service(resource("/openapi.json", &["GET"]).route(web::get().to(crate::openapi::serve_openapi)))
            .service(resource("/v1/signup", &["POST"]).route(web::post().to(signup::signup)))
            .service(resource("/v1/account", &["GET"]).route(web::get().to(account::get_account)))
            .service(
                resource("/v1/account/api-keys", &["GET", "POST"])
                    .route(web::get().to(keys::list_keys))
                    .route(web::post().to(keys::create_key)),
            )
            .service(resource("/v1/account/api-keys/{key_id}", &["DELETE"]).route(web::delete().to(keys::revoke_key)))
            .default_service(web::to(not_found)),
    );
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
