//! `POST /v1/api-keys/revoke-leaked`: anyone holding a key may kill it.

use account_domain::AccountService;
use actix_web::http::StatusCode;
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};

use super::shared_responses::{BodyErrors, Unavailable};
use crate::body::{read_body, required_json};
use crate::client_ip::request_meta;
use crate::dto::{LeakReportBody, LeakReportDto};
use crate::envelope::{respond, Envelope};
use crate::error::{ApiError, ErrorBody};
use crate::limits::AbuseLimits;

/// Revokes every valid key among those reported, as GitHub's credential revocation does:
/// holding a key is proof enough. Answers how many were revoked, nothing about the rest.
#[utoipa::path(post, path = "/v1/api-keys/revoke-leaked", tag = "api-keys", security(()),
    request_body = LeakReportBody,
    responses(
    (status = 200, description = "How many of the reported keys were revoked now", body = Envelope<LeakReportDto>),
    (status = 400, description = "Invalid body", body = ErrorBody),
    (status = 429, description = "Too many reports from this address", body = ErrorBody),
    BodyErrors, Unavailable,
))]
pub(crate) async fn revoke_leaked(
    service: Data<AccountService>,
    limits: Data<AbuseLimits>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    if let Some(ip) = limits.client_ip(&req) {
        limits.check_leak_report(ip)?;
    }
    let body = read_body(&req, payload).await?;
    let report = required_json::<LeakReportBody>(&req, &body)?;
    let revoked = service.report_leaked_keys(&report.keys, &request_meta(&req)).await?;
    tracing::info!(reported = report.keys.len(), revoked, "leaked keys reported");
    Ok(respond(StatusCode::OK, LeakReportDto { revoked }))
}
