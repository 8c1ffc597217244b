//! The routes. Each endpoint is registered once, by its handler: the handler's own
//! attributes give its path, its method and its OpenAPI operation. What else the router
//! needs (405 with the `Allow` header, 404) and the OpenAPI paths are derived from that one
//! registration.

pub(crate) mod account;
mod account_changes;
pub(crate) mod api_keys;
pub(crate) mod audit_log;
pub(crate) mod health;
pub(crate) mod leaks;
pub(crate) mod plans;
mod shared_responses;
mod shared_schemas;
pub(crate) mod signup;
pub(crate) mod usage;
pub(crate) mod verify;
pub(crate) mod webhooks;

use std::sync::OnceLock;

use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, HttpRequest, HttpResponse};
use utoipa::openapi::path::Paths;
use utoipa_actix_web::scope::{scope, Scope};

use crate::error::{ApiError, ErrorCode};
use crate::middleware::{envelope_framework_errors, observe_request, security_headers};

pub use health::ReadinessCheck;
pub use verify::InternalToken;

/// The largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every endpoint, in the order they are matched: the liveness probe (trivial, so it stays
/// first), then the account's routes, busiest first. The paths shared by several endpoints
/// (the keys') are scopes, so that each path is written once.
pub(crate) fn endpoints() -> Scope<
    impl ServiceFactory<ServiceRequest, Config = (), Response = ServiceResponse, Error = actix_web::Error, InitError = ()>,
> {
    let one_key = scope("/{key_id}")
        .service(api_keys::get_key)
        .service(api_keys::revoke_key)
        .service(api_keys::update_key)
        .service(api_keys::roll_key)
        .default_service(web::to(unmatched));
    let api_keys = scope("/v1/account/api-keys")
        .service(api_keys::list_keys)
        .service(api_keys::create_key)
        .service(one_key)
        .default_service(web::to(unmatched));
    let one_webhook = scope("/{webhook_id}")
        .service(webhooks::get_webhook)
        .service(webhooks::update_webhook)
        .service(webhooks::delete_webhook)
        .service(webhooks::rotate_webhook_secret)
        .service(webhooks::test_webhook)
        .service(webhooks::list_webhook_deliveries)
        .default_service(web::to(unmatched));
    let webhooks = scope("/v1/account/webhooks")
        .service(webhooks::list_webhooks)
        .service(webhooks::create_webhook)
        .service(one_webhook)
        .default_service(web::to(unmatched));
    // The busiest route is matched second, as a plain resource.
    scope("")
        .service(health::healthz)
        .service(account::get_account)
        .service(account_changes::update_account)
        .service(account_changes::close_account)
        .service(api_keys)
        .service(webhooks)
        .service(audit_log::audit_log)
        .service(usage::usage)
        .service(signup::signup)
        .service(plans::list_plans)
        .service(leaks::revoke_leaked)
        .service(verify::verify_key)
        .service(health::readyz)
        .service(crate::metrics::metrics)
        .service(crate::openapi::serve_openapi)
        // HTML, not JSON: outside the OpenAPI document.
        .map(crate::console::routes)
        .default_service(web::to(unmatched))
}

/// Registers every endpoint, the 405s and 404s, the envelope for framework errors, and the
/// response headers. Needs `web::Data` of `AccountService`, `ReadinessCheck`, `AbuseLimits`
/// and `Metrics` as app data. `POST /v1/internal/verify-key` answers only with an
/// `internal_token`.
pub fn configure(cfg: &mut web::ServiceConfig, internal_token: Option<InternalToken>) {
    let query_errors = web::QueryConfig::default().error_handler(|err, _| crate::body::query_error(&err).into());
    let scope = endpoints()
        .wrap(ErrorHandlers::new().default_handler(envelope_framework_errors))
        .wrap(security_headers())
        .wrap(from_fn(observe_request));
    if let Some(token) = internal_token {
        cfg.app_data(web::Data::new(token));
    }
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES)).app_data(query_errors).service(scope);
}

/// What a request no endpoint took gets: 405 with the `Allow` header when its path is an
/// endpoint's (with other methods), else 404. Derived from the registered endpoints' paths,
/// as the OpenAPI document lists them.
async fn unmatched(req: HttpRequest) -> HttpResponse {
    static ALLOWED: OnceLock<Vec<(Vec<String>, header::HeaderValue)>> = OnceLock::new();
    let allowed = ALLOWED.get_or_init(|| allowed_methods(&crate::openapi::document().paths));
    let segments: Vec<&str> = req.path().split('/').collect();
    let allow = allowed.iter().find_map(|(template, allow)| {
        let matches = template.len() == segments.len()
            && template
                .iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty()));
        matches.then_some(allow)
    });
    let Some(allow) = allow else {
        return actix_web::ResponseError::error_response(&ApiError::not_found());
    };
    let refused = ApiError::new(ErrorCode::MethodNotAllowed, "this route does not accept this method");
    let mut response = actix_web::ResponseError::error_response(&refused);
    response.headers_mut().insert(header::ALLOW, allow.clone());
    response
}

/// Each path's segments and its methods, as the `Allow` header lists them (alphabetically).
fn allowed_methods(paths: &Paths) -> Vec<(Vec<String>, header::HeaderValue)> {
    paths
        .paths
        .iter()
        .filter_map(|(path, item)| {
            let methods = [
                ("DELETE", item.delete.is_some()),
                ("GET", item.get.is_some()),
                ("PATCH", item.patch.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
            ];
            let allow: Vec<&str> = methods.iter().filter(|(_, served)| *served).map(|(m, _)| *m).collect();
            let allow = header::HeaderValue::from_str(&allow.join(", ")).ok()?;
            Some((path.split('/').map(str::to_owned).collect(), allow))
        })
        .collect()
}

/// Counts a write against the organization's limit, before its body is read.
pub(crate) fn count_write(req: &actix_web::HttpRequest, caller: &account_domain::Principal) -> Result<(), ApiError> {
    match req.app_data::<web::Data<crate::limits::AbuseLimits>>() {
        Some(limits) => limits.check_write(caller.org_id()),
        None => Ok(()),
    }
}
