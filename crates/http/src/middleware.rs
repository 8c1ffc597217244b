//! Cross-cutting response handling: every framework error in the JSON envelope, and one
//! log line per request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::ResponseError;
use actix_web::{web, HttpMessage};
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::metrics::Metrics;

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

/// Who a request authenticated as, for its log line (set by the authentication extractor).
#[derive(Debug, Clone)]
pub(crate) struct AuthenticatedAs(pub account_domain::Principal);

const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

fn incoming_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(&REQUEST_ID)?.to_str().ok()?;
    let sane = (1..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    sane.then(|| value.to_owned())
}

/// Gives each request an id (echoed in `X-Request-Id`), records its metrics, and logs it
/// once: method, route, status, latency, request id and, when authenticated, the
/// organization and key ids (never headers or bodies, which may hold keys).
pub(crate) async fn observe_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = incoming_request_id(&req).unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let method = req.method().clone();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    // Whatever the handlers log (errors above all) carries the request id.
    let span = tracing::info_span!("request", request_id = %request_id);
    let mut res = next.call(req).instrument(span).await?;
    let elapsed = started.elapsed();
    let route = res.request().match_pattern().unwrap_or_else(|| "<unmatched>".to_owned());
    let status = res.status();
    if let Some(metrics) = metrics {
        let method = if KNOWN_METHODS.contains(&method.as_str()) { method.as_str() } else { "OTHER" };
        metrics.record_request(&route, method, status, elapsed.as_secs_f64());
    }
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let who = res.request().extensions().get::<AuthenticatedAs>().cloned();
    match who {
        Some(who) => tracing::info!(%method, %route, status = status.as_u16(), latency_ms, %request_id,
            org_id = %who.0.org_id(), key_id = %who.0.key_id(), "request"),
        None => tracing::info!(%method, %route, status = status.as_u16(), latency_ms, %request_id, "request"),
    }
    Ok(res)
}

/// Methods reported as themselves in metrics; others are `OTHER`, to bound label values.
const KNOWN_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Headers every response carries: answers hold account data and keys, never cache them.
pub(crate) fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .add((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
}
