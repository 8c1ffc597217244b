//! `POST /v1/signup`.

use account_domain::{AccountService, SignupError};
use actix_web::http::StatusCode;
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};

use super::shared_responses::{BodyErrors, Unavailable};
use crate::body::{read_body, required_json};
use crate::client_ip::request_meta;
use crate::dto::{AccountDto, CreatedKeyDto, SignupBody, SignupDto};
use crate::envelope::{respond, Envelope};
use crate::error::{ApiError, ErrorBody};
use crate::limits::AbuseLimits;

/// Creates an organization and its first key ("Default Key", live, read and write).
#[utoipa::path(post, path = "/v1/signup", tag = "accounts", request_body = SignupBody, security(()), responses(
    (status = 201, description = "The account, and its first key shown this once", body = Envelope<SignupDto>),
    (status = 400, description = "Invalid body, or unknown plan", body = ErrorBody),
    (status = 409, description = "The email is taken", body = ErrorBody),
    (status = 429, description = "Too many signups from this address", body = ErrorBody),
    BodyErrors, Unavailable,
))]
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
    let signup = service.signup(request, &request_meta(&req)).await.map_err(|e| match e {
        // Answered without the id sent, as for a malformed one (`SignupBody::into_domain`).
        SignupError::UnknownPlan(_) => ApiError::unknown_plan(),
        e => ApiError::from(e),
    })?;
    tracing::info!(org_id = %signup.organization.id, key_id = %signup.key.key.id, "organization signed up");
    let data = SignupDto { account: AccountDto::from(&signup.organization), api_key: CreatedKeyDto::from(&signup.key) };
    Ok(respond(StatusCode::CREATED, data))
}
