//! The authentication extractor: `Authorization: Bearer <key>` to a [`Principal`].

use std::future::Future;
use std::pin::Pin;

use account_domain::{AccountService, Principal};
use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpRequest};

use crate::error::ApiError;

/// The authenticated caller of a handler.
#[derive(Debug)]
pub(crate) struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let service = req.app_data::<web::Data<AccountService>>().cloned();
        let token = bearer_token(req);
        Box::pin(async move {
            let token = token?;
            let service = service.ok_or_else(|| {
                ApiError::internal(&anyhow::anyhow!("AccountService is not configured"))
            })?;
            let principal = service.authenticate(&token).await?;
            Ok(Caller(principal))
        })
    }
}

/// The key of an `Authorization: Bearer <key>` header; the scheme word is case-insensitive.
fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let header = req.headers().get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(
            "missing_api_key",
            "send your API key as `Authorization: Bearer <key>`",
        )
    })?;
    let malformed = || {
        ApiError::unauthorized(
            "invalid_api_key",
            "the Authorization header must be `Bearer <key>`",
        )
    };
    let value = header.to_str().map_err(|_| malformed())?.trim();
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token.to_owned())
}
