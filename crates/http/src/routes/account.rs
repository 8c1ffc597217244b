//! `GET /v1/account`.

use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::HttpResponse;

use super::shared_responses::{AuthErrors, Unavailable};
use crate::account_render::account_body;
use crate::auth::Caller;
use crate::dto::AccountDto;
use crate::envelope::Envelope;
use crate::error::ApiError;

/// A constant header: no per-request parsing of a MIME type.
const JSON_CONTENT_TYPE: (actix_web::http::header::HeaderName, HeaderValue) =
    (CONTENT_TYPE, HeaderValue::from_static("application/json"));

/// The caller's organization and plan. Needs the `read` scope.
#[utoipa::path(get, path = "/v1/account", tag = "accounts", security(("bearer" = [])), responses(
    (status = 200, description = "The account", body = Envelope<AccountDto>),
    AuthErrors, Unavailable,
))]
pub(crate) async fn get_account(Caller { principal: caller, service }: Caller) -> Result<HttpResponse, ApiError> {
    let org = service.get_account(&caller).await?;
    Ok(HttpResponse::Ok().insert_header(JSON_CONTENT_TYPE).body(account_body(org)))
}
