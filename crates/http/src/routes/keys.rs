//! `GET` and `POST /v1/account/api-keys`, `DELETE /v1/account/api-keys/{key_id}`.

use account_domain::AccountService;
use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse};

use crate::auth::Caller;
use crate::body::{optional_json, read_body};
use crate::dto::{CreateKeyBody, CreatedKeyDto, KeyDto};
use crate::envelope::respond;
use crate::error::ApiError;

pub(crate) async fn list_keys(Caller(caller): Caller, service: Data<AccountService>) -> Result<HttpResponse, ApiError> {
    let keys = service.list_keys(&caller).await?;
    let now = service.now();
    let data: Vec<KeyDto> = keys.iter().map(|k| KeyDto::new(k, now)).collect();
    Ok(respond(StatusCode::OK, data))
}

pub(crate) async fn create_key(
    Caller(caller): Caller,
    service: Data<AccountService>,
    req: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload).await?;
    let request = optional_json::<CreateKeyBody>(&req, &body)?.unwrap_or_default().into_domain()?;
    let created = service.create_key(&caller, request).await?;
    tracing::info!(org_id = %caller.org_id(), key_id = %created.key.id, by_key = %caller.key_id(), "key created");
    Ok(respond(StatusCode::CREATED, CreatedKeyDto::from(&created)))
}

pub(crate) async fn revoke_key(
    Caller(caller): Caller,
    service: Data<AccountService>,
    key_id: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = service.revoke_key(&caller, &key_id).await?;
    tracing::info!(org_id = %caller.org_id(), key_id = %key.id, by_key = %caller.key_id(), "key revoked");
    Ok(respond(StatusCode::OK, KeyDto::new(&key, service.now())))
}
