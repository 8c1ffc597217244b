//! `POST /v1/internal/verify-key`: other services check keys with the same rules and cache
//! as this API's own authentication. Exists only when `INTERNAL_SERVICE_TOKEN` is set.

use account_domain::{AccountService, Scopes};
use actix_web::http::header::AUTHORIZATION;
use actix_web::http::StatusCode;
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};

use super::shared_responses::{BodyErrors, Unavailable};
use crate::auth::failed_authentication;
use crate::body::{read_body, required_json};
use crate::dto::{VerificationDto, VerifyKeyBody};
use crate::envelope::{respond, Envelope};
use crate::error::{ApiError, ErrorBody};

/// The token other services present; only its hash is kept, and comparing hashes
/// (`blake3::Hash`'s equality) takes constant time.
#[derive(Clone)]
pub struct InternalToken(blake3::Hash);

impl InternalToken {
    pub fn new(token: &str) -> Self {
        Self(blake3::hash(token.as_bytes()))
    }

    fn admits(&self, presented: &str) -> bool {
        blake3::hash(presented.as_bytes()) == self.0
    }
}

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalToken([REDACTED])")
    }
}

/// Verifies a key for another service. Authenticated by the internal service token.
#[utoipa::path(post, path = "/v1/internal/verify-key", tag = "internal", security(("service_token" = [])),
    request_body = VerifyKeyBody,
    responses(
    (status = 200, description = "The verdict (`valid` false says why in `code`)", body = Envelope<VerificationDto>),
    (status = 400, description = "Invalid body", body = ErrorBody),
    (status = 401, description = "Missing or wrong service token", body = ErrorBody),
    BodyErrors, Unavailable,
))]
pub(crate) async fn verify_key(
    service: Data<AccountService>,
    token: Data<InternalToken>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if !presented.is_some_and(|t| token.admits(t)) {
        let refused =
            ApiError::unauthorized("invalid_service_token", "send the internal service token as a Bearer token");
        return Err(failed_authentication(&req, refused));
    }
    let body = read_body(&req, payload).await?;
    let request = required_json::<VerifyKeyBody>(&req, &body)?;
    let required = request.scopes.as_deref().map(|s| Scopes::parse(s).map_err(crate::dto::scopes_error)).transpose()?;
    let verdict = service.verify_key(&request.key, required.as_ref()).await.map_err(|e| ApiError::internal(&e))?;
    Ok(respond(StatusCode::OK, VerificationDto::from(&verdict)))
}
