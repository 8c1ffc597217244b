//! Cross-cutting response handling: every framework error in the JSON envelope, and one
//! log line per request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::ResponseError;

use crate::error::ApiError;

/// Rewrites an error response that is not already JSON (the framework's own 404, 405,
/// 413, 415...) into the envelope, keeping its status and headers such as `Allow`.
pub(crate) fn envelope_framework_errors<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (req, original) = res.into_parts();
    let mut replacement = ApiError::from_status(status).error_response();
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replacement.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, replacement).map_into_right_body()))
}

/// Logs each request once: method, route, status and latency (never headers or bodies,
/// which may hold keys).
pub(crate) async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let res = next.call(req).await?;
    let route = res.request().match_pattern().unwrap_or_else(|| "<unmatched>".to_owned());
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(%method, %route, status = res.status().as_u16(), latency_ms, "request");
    Ok(res)
}

/// Headers every response carries: answers hold account data and keys, never cache them.
pub(crate) fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .add((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
}
