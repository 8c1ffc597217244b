//! `GET /v1/account`: the caller's organization and plan.

use account_domain::{GetAccountError, Organization};
use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::{get, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::plans::PlanDto;
use super::shared_responses::{AuthErrors, Unavailable};
use crate::account_render::account_body;
use crate::auth::{AccountReader, Caller};
use crate::envelope::envelope_schemas;
use crate::error::ApiError;
use crate::timestamp::rfc3339;

/// The caller's organization.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Account)]
pub(crate) struct AccountDto<'a> {
    #[schema(pattern = "^org_[0-9A-Za-z]+$", example = "org_01a21a32a78e71c8800beb5d0981899c")]
    org_id: &'a str,
    name: &'a str,
    email: &'a str,
    plan: PlanDto<'a>,
    /// False once an operator deactivated the organization.
    is_active: bool,
    #[schema(format = DateTime, example = "2024-01-01T00:00:00Z")]
    created_at: String,
    /// When its owner closed it (`DELETE /v1/account`); null while open.
    #[schema(format = DateTime, example = json!(null))]
    closed_at: Option<String>,
}

impl<'a> From<&'a Organization> for AccountDto<'a> {
    fn from(org: &'a Organization) -> Self {
        Self {
            org_id: org.id.as_str(),
            name: org.name.as_str(),
            email: org.email.as_str(),
            plan: PlanDto::from(&org.plan),
            is_active: org.is_active,
            created_at: rfc3339(org.created_at),
            closed_at: org.closed_at.map(rfc3339),
        }
    }
}

envelope_schemas! {
    /// The caller's account.
    AccountResponse => AccountDto<'static>;
}

impl From<GetAccountError> for ApiError {
    fn from(e: GetAccountError) -> Self {
        match e {
            GetAccountError::InsufficientScope(e) => e.into(),
            GetAccountError::Store(cause) => cause.into(),
        }
    }
}

/// A constant header: no per-request parsing of a MIME type.
const JSON_CONTENT_TYPE: (actix_web::http::header::HeaderName, HeaderValue) =
    (CONTENT_TYPE, HeaderValue::from_static("application/json"));

/// The caller's organization and plan. Needs the `read` scope. A deactivated organization's
/// valid key reads it too (`"is_active": false`); every other route refuses that key.
#[utoipa::path(tag = "accounts", operation_id = "get_account", security(("bearer" = [])), responses(
    (status = 200, description = "The account", body = AccountResponse),
    AuthErrors, Unavailable,
))]
#[get("/v1/account")]
pub(crate) async fn get_account(
    AccountReader(Caller { principal: caller, service }): AccountReader,
) -> Result<HttpResponse, ApiError> {
    let org = service.get_account(&caller).await?;
    Ok(HttpResponse::Ok().insert_header(JSON_CONTENT_TYPE).body(account_body(org)))
}
