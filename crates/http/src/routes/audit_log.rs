//! `GET /v1/account/audit-log`.

use actix_web::http::StatusCode;
use actix_web::web::Query;
use actix_web::HttpResponse;

use super::shared_responses::{AuthErrors, Unavailable};
use crate::auth::Caller;
use crate::dto::{AuditPageDto, AuditQuery};
use crate::envelope::{respond, Envelope};
use crate::error::{ApiError, ErrorBody};

/// The organization's audit trail, newest first, a page at a time. Needs the `read` scope.
#[utoipa::path(get, path = "/v1/account/audit-log", tag = "accounts", security(("bearer" = [])),
    params(AuditQuery),
    responses(
    (status = 200, description = "A page of events", body = Envelope<AuditPageDto>),
    (status = 400, description = "Invalid limit or cursor", body = ErrorBody),
    AuthErrors, Unavailable,
))]
pub(crate) async fn audit_log(
    Caller { principal: caller, service }: Caller,
    query: Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = service.audit_log(&caller, query.before.as_deref(), query.limit).await?;
    Ok(respond(StatusCode::OK, AuditPageDto::from(&page)))
}
