//! `PATCH /v1/account/api-keys/{key_id}` (rename) and `POST .../{key_id}/roll`.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse};

use super::shared_responses::{BodyErrors, Unavailable, WriteAuthErrors};
use crate::auth::Caller;
use crate::body::{optional_json, read_body, required_json};
use crate::client_ip::request_meta;
use crate::dto::{KeyDto, RenameKeyBody, RollKeyBody, RolledKeyDto};
use crate::envelope::{respond, Envelope};
use crate::error::{ApiError, ErrorBody};
use crate::limits::AbuseLimits;

/// Renames a key of the caller's organization. Needs the `write` scope; a test key renames
/// only test keys. Counts against the organization's write limit.
#[utoipa::path(patch, path = "/v1/account/api-keys/{key_id}", tag = "api-keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "The key's id")),
    request_body = RenameKeyBody,
    responses(
    (status = 200, description = "The key as listed", body = Envelope<KeyDto>),
    (status = 400, description = "Invalid body", body = ErrorBody),
    (status = 404, description = "No such key in this organization", body = ErrorBody),
    BodyErrors, WriteAuthErrors, Unavailable,
))]
pub(crate) async fn rename_key(
    Caller { principal: caller, service }: Caller,
    limits: Data<AbuseLimits>,
    key_id: Path<String>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    limits.check_write(caller.org_id())?;
    let body = read_body(&req, payload).await?;
    let name = required_json::<RenameKeyBody>(&req, &body)?.into_domain()?;
    let key = service.rename_key(&caller, &key_id, name, &request_meta(&req)).await?;
    Ok(respond(StatusCode::OK, KeyDto::new(&key, service.now())))
}

/// Replaces a key without downtime: a new key with the same name, environment, scopes and
/// expiry, shown once; the old key keeps working for the grace period (never longer than it
/// would have). Needs the `write` scope and the scopes of the key rolled. At the active key
/// limit, only a roll that ends the old key at once is allowed. Counts against the
/// organization's write limit.
#[utoipa::path(post, path = "/v1/account/api-keys/{key_id}/roll", tag = "api-keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "The key to replace")),
    request_body(content = Option<RollKeyBody>, description = "Optional; no body means a 24-hour grace period"),
    responses(
    (status = 201, description = "The new key, shown this once", body = Envelope<RolledKeyDto>),
    (status = 400, description = "Invalid body", body = ErrorBody),
    (status = 404, description = "No such key in this organization", body = ErrorBody),
    (status = 409, description = "The key is revoked or expired, or a grace period would exceed the active key limit", body = ErrorBody),
    BodyErrors, WriteAuthErrors, Unavailable,
))]
pub(crate) async fn roll_key(
    Caller { principal: caller, service }: Caller,
    limits: Data<AbuseLimits>,
    key_id: Path<String>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    limits.check_write(caller.org_id())?;
    let body = read_body(&req, payload).await?;
    let grace = optional_json::<RollKeyBody>(&req, &body)?.unwrap_or_default().into_domain()?;
    let rolled = service.roll_key(&caller, &key_id, grace, &request_meta(&req)).await?;
    tracing::info!(org_id = %caller.org_id(), key_id = %rolled.created.key.id, rolled_from = %rolled.rolled_from, "key rolled");
    Ok(respond(StatusCode::CREATED, RolledKeyDto::from(&rolled)))
}
