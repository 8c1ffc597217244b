//! `POST /v1/signup`.

use account_domain::AccountService;
use actix_web::http::StatusCode;
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};

use crate::body::{read_body, required_json};
use crate::dto::{AccountDto, CreatedKeyDto, SignupBody, SignupDto};
use crate::envelope::respond;
use crate::error::ApiError;
use crate::limits::AbuseLimits;

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
    let signup = service.signup(request).await?;
    tracing::info!(org_id = %signup.organization.id, key_id = %signup.key.key.id, "organization signed up");
    let data = SignupDto { account: AccountDto::from(&signup.organization), api_key: CreatedKeyDto::from(&signup.key) };
    Ok(respond(StatusCode::CREATED, data))
}
