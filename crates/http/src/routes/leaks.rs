//! `POST /v1/api-keys/revoke-leaked`: anyone holding a key may kill it.

use account_domain::{AccountService, ReportLeakError};
use actix_web::web::{Data, Payload};
use actix_web::{post, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::shared_responses::{BodyErrors, Unavailable};
use crate::body::{read_body, required_json};
use crate::client_ip::request_meta;
use crate::envelope::{envelope_schemas, ok};
use crate::error::{ApiError, ErrorBody};
use crate::limits::AbuseLimits;

/// `POST /v1/api-keys/revoke-leaked`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LeakReportRequest)]
pub(crate) struct LeakReportBody {
    /// Full keys found exposed, 1 to 100.
    #[schema(min_items = 1, max_items = 100)]
    keys: Vec<String>,
}

impl std::fmt::Debug for LeakReportBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: how many only.
        f.debug_struct("LeakReportBody").field("keys", &format_args!("[{} REDACTED]", self.keys.len())).finish()
    }
}

/// How many of the reported keys were revoked now.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LeakReport)]
pub(crate) struct LeakReportDto {
    #[schema(minimum = 0, maximum = 100)]
    revoked: usize,
}

envelope_schemas! {
    /// What a leak report revoked.
    LeakReportResponse => LeakReportDto;
}

impl From<ReportLeakError> for ApiError {
    fn from(e: ReportLeakError) -> Self {
        match e {
            ReportLeakError::InvalidCount => Self::validation("keys", "must hold 1 to 100 keys"),
            ReportLeakError::Store(cause) => cause.into(),
        }
    }
}

/// Revokes every valid key among those reported, as GitHub's credential revocation does:
/// holding a key is proof enough. Answers how many were revoked, nothing about the rest.
#[utoipa::path(tag = "api-keys", operation_id = "report_leaked_keys", security(()),
    request_body = LeakReportBody,
    responses(
    (status = 200, description = "How many of the reported keys were revoked now", body = LeakReportResponse),
    (status = 400, description = "Invalid body", body = ErrorBody),
    (status = 429, description = "Too many reports from this address", body = ErrorBody),
    BodyErrors, Unavailable,
))]
#[post("/v1/api-keys/revoke-leaked")]
pub(crate) async fn revoke_leaked(
    service: Data<AccountService>,
    limits: Data<AbuseLimits>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    if let Some(ip) = limits.counted_ip(&req) {
        limits.check_leak_report(ip)?;
    }
    let body = read_body(&req, payload).await?;
    let report = required_json::<LeakReportBody>(&req, &body)?;
    let revoked = service.report_leaked_keys(&report.keys, &request_meta(&req)).await?;
    tracing::info!(reported = report.keys.len(), revoked, "leaked keys reported");
    Ok(ok(LeakReportDto { revoked }))
}
