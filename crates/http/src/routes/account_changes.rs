//! `PATCH /v1/account` and `DELETE /v1/account`: the owner changes its account (name,
//! contact email, plan) or closes it.

use account_domain::{AccountOpError, CloseAccountError, EmailAddress, OrgName, PlanId, UpdateAccountRequest};
use actix_web::web::Payload;
use actix_web::{delete, patch, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::account::{AccountDto, AccountResponse};
use super::count_write;
use super::shared_responses::{BodyErrors, Unavailable, WriteAuthErrors};
use super::signup::PlanName;
use crate::auth::Caller;
use crate::body::{read_body, required_json};
use crate::client_ip::request_meta;
use crate::envelope::ok;
use crate::error::{ApiError, ErrorBody, ErrorCode};

/// `PATCH /v1/account`: at least one field; an omitted one is unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateAccountRequest)]
pub(crate) struct UpdateAccountBody {
    /// The organization's new name, as at signup.
    #[serde(default, deserialize_with = "crate::body::not_null")]
    #[schema(schema_with = crate::routes::shared_schemas::name)]
    name: Option<String>,
    /// The new contact email, as at signup; unique among open organizations ignoring case.
    #[serde(default, deserialize_with = "crate::body::not_null")]
    #[schema(schema_with = super::signup::email_schema)]
    email: Option<String>,
    /// The new plan, as `GET /v1/plans` lists them: a new plan period starts today (UTC).
    #[serde(default, deserialize_with = "crate::body::not_null")]
    #[schema(value_type = PlanName, example = "starter")]
    plan_id: Option<String>,
}

impl UpdateAccountBody {
    fn into_domain(self) -> Result<UpdateAccountRequest, ApiError> {
        let name = self.name.map(|n| OrgName::new(&n).map_err(|e| ApiError::validation("name", e))).transpose()?;
        let email =
            self.email.map(|e| EmailAddress::new(&e).map_err(|err| ApiError::validation("email", err))).transpose()?;
        let plan_id = self.plan_id.map(|p| PlanId::new(&p).map_err(|_| ApiError::unknown_plan())).transpose()?;
        UpdateAccountRequest::new(name, email, plan_id)
            .map_err(|e| ApiError::new(ErrorCode::ValidationError, e.to_string()))
    }
}

/// `DELETE /v1/account`: the organization's own id, to confirm.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CloseAccountRequest)]
pub(crate) struct CloseAccountBody {
    /// The organization's id, exactly as `GET /v1/account` shows it.
    #[schema(pattern = "^org_[0-9A-Za-z]+$", example = "org_01a21a32a78e71c8800beb5d0981899c")]
    confirm: String,
}

impl From<AccountOpError> for ApiError {
    fn from(e: AccountOpError) -> Self {
        let message = e.to_string();
        match e {
            AccountOpError::Actor(refused) => refused.into(),
            AccountOpError::InsufficientScope(e) => e.into(),
            AccountOpError::TestKey => Self::new(ErrorCode::EnvironmentEscalation, message),
            AccountOpError::EmailTaken => Self::new(ErrorCode::EmailTaken, message).with_field("email"),
            AccountOpError::UnknownPlan => Self::unknown_plan(),
            AccountOpError::Closed => Self::new(ErrorCode::AccountClosed, message),
            AccountOpError::Store(cause) => cause.into(),
        }
    }
}

impl From<CloseAccountError> for ApiError {
    fn from(e: CloseAccountError) -> Self {
        match e {
            CloseAccountError::NotConfirmed => Self::validation("confirm", e),
            CloseAccountError::Refused(refused) => refused.into(),
        }
    }
}

/// Changes the caller's organization: its name, contact email and/or plan (at least one).
/// Needs a live key with the `write` scope. Answers the account as `GET /v1/account` shows
/// it; every instance applies the change within a second.
#[utoipa::path(tag = "accounts", operation_id = "update_account", security(("bearer" = [])),
    request_body = UpdateAccountBody,
    responses(
    (status = 200, description = "The account as changed", body = AccountResponse),
    (status = 400, description = "Invalid body, or unknown plan", body = ErrorBody),
    (status = 409, description = "The email is taken, or the organization is closed", body = ErrorBody),
    BodyErrors, WriteAuthErrors, Unavailable,
))]
#[patch("/v1/account")]
pub(crate) async fn update_account(
    Caller { principal: caller, service }: Caller,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    count_write(&req, &caller)?;
    let body = read_body(&req, payload).await?;
    let request = required_json::<UpdateAccountBody>(&req, &body)?.into_domain()?;
    let organization = service.update_account(&caller, request, &request_meta(&req)).await?;
    tracing::info!(org_id = %organization.id, "account changed");
    Ok(ok(AccountDto::from(&organization)))
}

/// Closes the caller's organization: every key revoked (refused everywhere within a second),
/// the email free for a new signup. Needs a live key with `read` and `write`, and the
/// organization's id in `confirm`. Answers the account as closed (`closed_at` set).
#[utoipa::path(tag = "accounts", operation_id = "close_account", security(("bearer" = [])),
    request_body = CloseAccountBody,
    responses(
    (status = 200, description = "The account as closed", body = AccountResponse),
    (status = 400, description = "Invalid body, or `confirm` is not this organization's id", body = ErrorBody),
    (status = 409, description = "The organization is closed already", body = ErrorBody),
    BodyErrors, WriteAuthErrors, Unavailable,
))]
#[delete("/v1/account")]
pub(crate) async fn close_account(
    Caller { principal: caller, service }: Caller,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    count_write(&req, &caller)?;
    let body = read_body(&req, payload).await?;
    let confirm = required_json::<CloseAccountBody>(&req, &body)?.confirm;
    let organization = service.close_account(&caller, &confirm, &request_meta(&req)).await?;
    tracing::info!(org_id = %organization.id, "account closed");
    Ok(ok(AccountDto::from(&organization)))
}
