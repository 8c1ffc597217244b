//! `POST /v1/signup`: a new organization and its first key.

use account_domain::{AccountService, EmailAddress, OrgName, PlanId, SignupError, SignupRequest};
use actix_web::web::{Data, Payload};
use actix_web::{post, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::account::AccountDto;
use super::api_keys::CreatedKeyDto;
use super::shared_responses::{BodyErrors, Unavailable};
use crate::body::{read_body, required_json};
use crate::client_ip::request_meta;
use crate::envelope::{created, envelope_schemas};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::limits::AbuseLimits;

/// `POST /v1/signup`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SignupRequest)]
pub(crate) struct SignupBody {
    /// Organization name: 1 to 200 characters once leading and trailing spaces are trimmed
    /// (the length is checked after trimming), no control characters.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f]*$", example = "My Company")]
    name: String,
    /// Contact email; unique ignoring case. The domain's rule as a pattern (stricter than
    /// `format: email`): a dot-atom local part of RFC 5322 characters, then two or more labels
    /// of letters, digits and inner hyphens, the last holding a letter; spaces around are
    /// trimmed. Beyond the pattern: at most 254 characters, the part before the `@` at most
    /// 64, each label after it at most 63.
    #[schema(
        max_length = 254,
        pattern = "^\\s*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*\\s*$",
        example = "admin@mycompany.com"
    )]
    email: String,
    /// Initial plan (default `free`); see `GET /v1/plans`.
    #[serde(default)]
    #[schema(example = "starter")]
    plan_id: Option<String>,
}

impl SignupBody {
    pub(crate) fn into_domain(self) -> Result<SignupRequest, ApiError> {
        let name = OrgName::new(&self.name).map_err(|e| ApiError::validation("name", e))?;
        let email = EmailAddress::new(&self.email).map_err(|e| ApiError::validation("email", e))?;
        let plan_id = self
            .plan_id
            // A malformed id is just as unknown; what was sent is not repeated.
            .map(|p| PlanId::new(&p).map_err(|_| ApiError::unknown_plan()))
            .transpose()?;
        Ok(SignupRequest::new(name, email, plan_id))
    }
}

/// A new organization and its first key.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Signup)]
pub(crate) struct SignupDto<'a> {
    account: AccountDto<'a>,
    api_key: CreatedKeyDto<'a>,
}

envelope_schemas! {
    /// The new account and its first key, shown this once.
    SignupResponse => SignupDto<'static>;
}

impl From<SignupError> for ApiError {
    fn from(e: SignupError) -> Self {
        match e {
            // Answered without the id sent, as for a malformed one.
            SignupError::UnknownPlan(_) => Self::unknown_plan(),
            SignupError::EmailTaken => Self::new(ErrorCode::EmailTaken, e.to_string()).with_field("email"),
            SignupError::Unknown(cause) => cause.into(),
        }
    }
}

/// Creates an organization and its first key ("Default Key", live, read and write).
#[utoipa::path(tag = "accounts", operation_id = "sign_up", request_body = SignupBody, security(()), responses(
    (status = 201, description = "The account, and its first key shown this once", body = SignupResponse),
    (status = 400, description = "Invalid body, or unknown plan", body = ErrorBody),
    (status = 409, description = "The email is taken", body = ErrorBody),
    (status = 429, description = "Too many signups from this address", body = ErrorBody),
    BodyErrors, Unavailable,
))]
#[post("/v1/signup")]
pub(crate) async fn signup(
    service: Data<AccountService>,
    limits: Data<AbuseLimits>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    if let Some(ip) = limits.client_ip(&req) {
        limits.check_signup(ip)?;
    }
    let body = read_body(&req, payload).await?;
    let request = required_json::<SignupBody>(&req, &body)?.into_domain()?;
    let signup = service.signup(request, &request_meta(&req)).await?;
    tracing::info!(org_id = %signup.organization.id, key_id = %signup.key.key.id, "organization signed up");
    Ok(created(SignupDto {
        account: AccountDto::from(&signup.organization),
        api_key: CreatedKeyDto::from(&signup.key),
    }))
}
