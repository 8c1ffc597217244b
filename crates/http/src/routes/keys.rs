//! `GET` and `POST /v1/account/api-keys`, `DELETE /v1/account/api-keys/{key_id}`.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse};

use super::shared_responses::{AuthErrors, BodyErrors, Unavailable, WriteAuthErrors};
use crate::auth::Caller;
use crate::body::{optional_json, read_body};
use crate::client_ip::request_meta;
use crate::dto::{CreateKeyBody, CreatedKeyDto, KeyDto};
use crate::envelope::{respond, Envelope};
use crate::error::{ApiError, ErrorBody};
use crate::limits::AbuseLimits;

/// Every key of the caller's organization, newest first, revoked and expired ones included.
/// Needs the `read` scope.
#[utoipa::path(get, path = "/v1/account/api-keys", tag = "api-keys", security(("bearer" = [])), responses(
    (status = 200, description = "The keys", body = Envelope<Vec<KeyDto>>),
    AuthErrors, Unavailable,
))]
pub(crate) async fn list_keys(Caller { principal: caller, service }: Caller) -> Result<HttpResponse, ApiError> {
    let keys = service.list_keys(&caller).await?;
    let now = service.now();
    let data: Vec<KeyDto> = keys.iter().map(|k| KeyDto::new(k, now)).collect();
    Ok(respond(StatusCode::OK, data))
}

/// Creates a key; the full key is in this answer only. The body is optional. Needs the
/// `write` scope; a key grants no scope it lacks, and a test key creates only test keys.
/// Counts against the organization's write limit.
#[utoipa::path(post, path = "/v1/account/api-keys", tag = "api-keys", security(("bearer" = [])),
    request_body(content = Option<CreateKeyBody>, description = "All fields optional; no body means all defaults"),
    responses(
    (status = 201, description = "The new key, shown this once", body = Envelope<CreatedKeyDto>),
    (status = 400, description = "Invalid body", body = ErrorBody),
    (status = 409, description = "The organization holds the most active keys allowed", body = ErrorBody),
    BodyErrors, WriteAuthErrors, Unavailable,
))]
pub(crate) async fn create_key(
    Caller { principal: caller, service }: Caller,
    limits: Data<AbuseLimits>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    limits.check_write(caller.org_id())?;
    let body = read_body(&req, payload).await?;
    let request = optional_json::<CreateKeyBody>(&req, &body)?.unwrap_or_default().into_domain()?;
    let created = service.create_key(&caller, request, &request_meta(&req)).await?;
    tracing::info!(org_id = %caller.org_id(), key_id = %created.key.id, by_key = %caller.key_id(), "key created");
    Ok(respond(StatusCode::CREATED, CreatedKeyDto::from(&created)))
}

/// Revokes a key of the caller's organization; it is refused from the next request on.
/// Revoking again answers the same. Needs the `write` scope; a test key revokes only test
/// keys. Never counted against, nor refused by, the organization's write limit.
#[utoipa::path(delete, path = "/v1/account/api-keys/{key_id}", tag = "api-keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "The key's id, such as key_0192...")),
    responses(
    (status = 200, description = "The key as listed, now inactive", body = Envelope<KeyDto>),
    (status = 404, description = "No such key in this organization", body = ErrorBody),
    AuthErrors, Unavailable,
))]
pub(crate) async fn revoke_key(
    Caller { principal: caller, service }: Caller,
    key_id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let key = service.revoke_key(&caller, &key_id, &request_meta(&req)).await?;
    tracing::info!(org_id = %caller.org_id(), key_id = %key.id, by_key = %caller.key_id(), "key revoked");
    Ok(respond(StatusCode::OK, KeyDto::new(&key, service.now())))
}
