//! The caller's organization's API keys: list and create (the `/v1/account/api-keys` scope),
//! read, rename, revoke and roll one (its `/{key_id}` scope).

pub(crate) mod allowlist_schema;
mod bodies;
mod errors;

use actix_web::web::{Path, Payload};
use actix_web::{delete, get, patch, post, HttpRequest, HttpResponse};

pub(crate) use bodies::{
    optional_scope_list, scope_list, scope_words, scopes_error, CreateKeyBody, CreatedKeyDto, EnvironmentName,
    ScopeName,
};
use bodies::{KeyDto, RollKeyBody, RolledKeyDto, UpdateKeyBody};

use super::count_write;
use super::shared_responses::{AuthErrors, BodyErrors, KeyNotFound, Unavailable, WriteAuthErrors};
use crate::auth::Caller;
use crate::body::{optional_json, read_body, required_json};
use crate::client_ip::request_meta;
use crate::envelope::{created, envelope_schemas, ok};
use crate::error::{ApiError, ErrorBody};

/// The `{key_id}` of the routes of one key.
#[derive(utoipa::IntoParams)]
#[into_params(names("key_id"), parameter_in = Path)]
#[allow(dead_code)] // a schema only: the handlers take the id as a plain string
struct KeyIdPath(#[param(example = "key_01a21a6d57c975bb954804f970546679")] String);

envelope_schemas! {
    /// The organization's keys, newest first.
    ApiKeyList => Vec<KeyDto>;
    /// One key, as listed.
    ApiKeyResponse => KeyDto;
    /// A new key, shown this once.
    CreatedApiKeyResponse => CreatedKeyDto<'static>;
    /// A new key in place of another, shown this once.
    RolledApiKeyResponse => RolledKeyDto<'static>;
}

/// Every key of the caller's organization, newest first, revoked and expired ones included.
/// Needs the `read` scope.
#[utoipa::path(tag = "api-keys", operation_id = "list_api_keys", security(("bearer" = [])), responses(
    (status = 200, description = "The keys", body = ApiKeyList),
    AuthErrors, Unavailable,
))]
#[get("")]
pub(crate) async fn list_keys(Caller { principal: caller, service }: Caller) -> Result<HttpResponse, ApiError> {
    let keys = service.list_keys(&caller).await?;
    let now = service.now();
    Ok(ok(keys.iter().map(|k| KeyDto::new(k, now)).collect::<Vec<_>>()))
}

/// Creates a key; the full key is in this answer only. The body is optional. Needs the
/// `write` scope; a key grants no scope it lacks, a test key creates only test keys, and a
/// key that expires creates only keys that expire no later.
#[utoipa::path(tag = "api-keys", operation_id = "create_api_key", security(("bearer" = [])),
    request_body(content = Option<CreateKeyBody>, description = "All fields optional; no body means all defaults"),
    responses(
    (status = 201, description = "The new key, shown this once", body = CreatedApiKeyResponse),
    (status = 400, description = "Invalid body", body = ErrorBody),
    (status = 409, description = "The organization holds the most active keys allowed", body = ErrorBody),
    BodyErrors, WriteAuthErrors, Unavailable,
))]
#[post("")]
pub(crate) async fn create_key(
    Caller { principal: caller, service }: Caller,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    count_write(&req, &caller)?;
    let body = read_body(&req, payload).await?;
    let request = optional_json::<CreateKeyBody>(&req, &body)?.unwrap_or_default().into_domain()?;
    let new = service.create_key(&caller, request, &request_meta(&req)).await?;
    tracing::info!(org_id = %caller.org_id(), key_id = %new.key.id, by_key = %caller.key_id(), "key created");
    Ok(created(CreatedKeyDto::from(&new)))
}

/// One key of the caller's organization, as listed (never the full key). Needs the `read`
/// scope; any key of the organization may be read, as the list shows them all.
#[utoipa::path(tag = "api-keys", operation_id = "get_api_key", security(("bearer" = [])),
    params(KeyIdPath),
    responses(
    (status = 200, description = "The key as listed", body = ApiKeyResponse),
    KeyNotFound,
    AuthErrors, Unavailable,
))]
#[get("")]
pub(crate) async fn get_key(
    Caller { principal: caller, service }: Caller,
    key_id: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = service.get_key(&caller, &key_id).await?;
    Ok(ok(KeyDto::new(&key, service.now())))
}

/// Changes a key of the caller's organization: its name, its allowlist, or both. Needs the
/// `write` scope; a test key changes only test keys; a key limited to some addresses sets
/// only allowlists within its own.
#[utoipa::path(tag = "api-keys", operation_id = "update_api_key", security(("bearer" = [])),
    params(KeyIdPath),
    request_body = UpdateKeyBody,
    responses(
    (status = 200, description = "The key as listed", body = ApiKeyResponse),
    (status = 400, description = "Invalid body", body = ErrorBody),
    KeyNotFound,
    BodyErrors, WriteAuthErrors, Unavailable,
))]
#[patch("")]
pub(crate) async fn update_key(
    Caller { principal: caller, service }: Caller,
    key_id: Path<String>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    count_write(&req, &caller)?;
    let body = read_body(&req, payload).await?;
    let update = required_json::<UpdateKeyBody>(&req, &body)?.into_domain()?;
    let key = service.update_key(&caller, &key_id, update, &request_meta(&req)).await?;
    Ok(ok(KeyDto::new(&key, service.now())))
}

/// Replaces a key without downtime: a new key with the same name, environment, scopes and
/// expiry (or the caller's, when that comes first), shown once; the old key keeps working for
/// the grace period (never longer than it would have). Needs the `write` scope and the
/// scopes of the key rolled. At the active key limit, only a roll that ends the old key at
/// once is allowed.
#[utoipa::path(tag = "api-keys", operation_id = "roll_api_key", security(("bearer" = [])),
    params(KeyIdPath),
    request_body(content = Option<RollKeyBody>, description = "Optional; no body means a 24-hour grace period"),
    responses(
    (status = 201, description = "The new key, shown this once", body = RolledApiKeyResponse),
    (status = 400, description = "Invalid body", body = ErrorBody),
    KeyNotFound,
    (status = 409, description = "The key is revoked or expired, or a grace period would exceed the active key limit", body = ErrorBody),
    BodyErrors, WriteAuthErrors, Unavailable,
))]
#[post("/roll")]
pub(crate) async fn roll_key(
    Caller { principal: caller, service }: Caller,
    key_id: Path<String>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    count_write(&req, &caller)?;
    let body = read_body(&req, payload).await?;
    let grace = optional_json::<RollKeyBody>(&req, &body)?.unwrap_or_default().into_domain()?;
    let rolled = service.roll_key(&caller, &key_id, grace, &request_meta(&req)).await?;
    tracing::info!(org_id = %caller.org_id(), key_id = %rolled.created.key.id, rolled_from = %rolled.rolled_from, "key rolled");
    Ok(created(RolledKeyDto::from(&rolled)))
}

/// Revokes a key of the caller's organization; it is refused from the next request on.
/// Revoking again answers the same. Revocation is not deletion: the key stays listed and
/// readable (`is_active: false`), and may still be renamed. Needs the `write` scope; a test key revokes only test
/// keys. Never refused by the organization's write limit.
#[utoipa::path(tag = "api-keys", operation_id = "revoke_api_key", security(("bearer" = [])),
    params(KeyIdPath),
    responses(
    (status = 200, description = "The key as listed, now inactive", body = ApiKeyResponse),
    KeyNotFound,
    AuthErrors, Unavailable,
))]
#[delete("")]
pub(crate) async fn revoke_key(
    Caller { principal: caller, service }: Caller,
    key_id: Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let key = service.revoke_key(&caller, &key_id, &request_meta(&req)).await?;
    tracing::info!(org_id = %caller.org_id(), key_id = %key.id, by_key = %caller.key_id(), "key revoked");
    Ok(ok(KeyDto::new(&key, service.now())))
}
