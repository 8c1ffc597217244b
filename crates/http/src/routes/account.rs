//! `GET /v1/account`.

use account_domain::AccountService;
use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::HttpResponse;

use crate::auth::Caller;
use crate::dto::AccountDto;
use crate::envelope::{respond, Envelope};
use crate::error::{ApiError, ErrorBody};

/// The caller's organization and plan. Needs the `read` scope.
#[utoipa::path(get, path = "/v1/account", tag = "accounts", security(("bearer" = [])), responses(
    (status = 200, description = "The account", body = Envelope<AccountDto>),
    (status = 401, description = "Missing, malformed, unknown, revoked or expired key", body = ErrorBody),
    (status = 403, description = "Organization inactive, or the key lacks the scope", body = ErrorBody),
    (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    (status = 503, description = "The database is unavailable; retry", body = ErrorBody),
))]
pub(crate) async fn get_account(
    Caller(caller): Caller,
    service: Data<AccountService>,
) -> Result<HttpResponse, ApiError> {
    let org = service.get_account(&caller).await?;
    Ok(respond(StatusCode::OK, AccountDto::from(org)))
}
