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

/// The domain's email rule (`EmailAddress`), as closely as JSON Schema can say it: all of
/// three patterns, each a part of the rule.
pub(crate) fn email_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
    const LABEL: &str = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    const ATEXT: &str = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]";
    let string = |pattern: String| ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern));
    AllOfBuilder::new()
        // A string at the top too, so that client generators see one.
        .schema_type(Type::String)
        // A dot-atom local part of RFC 5322 characters, `@`, then two or more labels of
        // letters, digits and inner hyphens, at most 63 each; spaces around are trimmed.
        .item(string(format!(r"^\s*{ATEXT}+(\.{ATEXT}+)*@({LABEL}\.)+{LABEL}\s*$")).max_length(Some(254)))
        // The part before the `@` is at most 64 characters.
        .item(string(r"^\s*[^\s@]{1,64}@".to_owned()))
        // The last label holds a letter.
        .item(string(r"[A-Za-z][A-Za-z0-9-]*\s*$".to_owned()))
        .description(Some(
            "Contact email; unique ignoring case. Spaces around it are trimmed; then at most 254 characters, a \
             dot-atom local part of at most 64, two or more labels of letters, digits and inner hyphens of at most \
             63 each, the last holding a letter (stricter than `format: email`).",
        ))
        .examples([serde_json::json!("admin@mycompany.com")])
        .build()
        .into()
}

/// `POST /v1/signup`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SignupRequest)]
pub(crate) struct SignupBody {
    /// Organization name: 1 to 200 characters once leading and trailing spaces are trimmed
    /// (the length is checked after trimming), no control characters.
    #[schema(schema_with = crate::routes::shared_schemas::name)]
    name: String,
    /// Contact email; unique ignoring case.
    #[schema(schema_with = email_schema)]
    email: String,
    /// Initial plan (default `free`): one of the catalogue's, as `GET /v1/plans` lists them.
    #[serde(default)]
    #[schema(value_type = Option<PlanName>, example = "starter")]
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

/// A plan of the catalogue (this release's migrations seed these three).
#[derive(ToSchema)]
#[schema(as = PlanId, rename_all = "lowercase")]
#[allow(dead_code)] // a schema only
pub(crate) enum PlanName {
    Free,
    Starter,
    Pro,
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
            SignupError::Store(cause) => cause.into(),
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
    if let Some(ip) = limits.counted_ip(&req) {
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
