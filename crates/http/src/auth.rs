//! The authentication extractor: `Authorization: Bearer <key>` to a [`Principal`].

use std::future::Future;
use std::pin::Pin;

use account_domain::{AccountService, Principal};
use actix_web::dev::Payload;
use actix_web::http::header::{HeaderValue, AUTHORIZATION};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};

use crate::error::ApiError;
use crate::limits::AbuseLimits;
use crate::metrics::Metrics;
use crate::middleware::AuthenticatedAs;

/// The authenticated caller of a handler.
#[derive(Debug)]
pub(crate) struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let service = req.app_data::<web::Data<AccountService>>().cloned();
        let req = req.clone();
        // A header value shares its bytes: cloning it copies no key.
        let header = req.headers().get(AUTHORIZATION).cloned();
        Box::pin(async move {
            let outcome = match (bearer_token(header.as_ref()), service) {
                (Err(e), _) => Err(e),
                (Ok(_), None) => Err(ApiError::internal(&anyhow::anyhow!("AccountService is not configured"))),
                (Ok(token), Some(service)) => service.authenticate(token).await.map_err(ApiError::from),
            };
            let outcome = match outcome {
                // Only failures count against the address: a correct key is never slowed.
                Err(e) if e.status_code() == StatusCode::UNAUTHORIZED => {
                    let limits = req.app_data::<web::Data<AbuseLimits>>();
                    match limits.and_then(|l| l.client_ip(&req).map(|ip| (l, ip))) {
                        Some((limits, ip)) => limits.check_auth_failure(ip).and(Err(e)),
                        None => Err(e),
                    }
                }
                other => other,
            };
            match outcome {
                Ok(principal) => {
                    // For the request's log line (shares the credential, copies nothing).
                    if tracing::enabled!(tracing::Level::INFO) {
                        req.extensions_mut().insert(AuthenticatedAs(principal.clone()));
                    }
                    Ok(Caller(principal))
                }
                Err(e) => {
                    let metrics = req.app_data::<web::Data<Metrics>>();
                    if let Some(metrics) = metrics.filter(|_| e.status_code().is_client_error()) {
                        metrics.record_auth_failure(e.code());
                    }
                    Err(e)
                }
            }
        })
    }
}

/// The key of an `Authorization: Bearer <key>` header; the scheme word is case-insensitive.
fn bearer_token(header: Option<&HeaderValue>) -> Result<&str, ApiError> {
    let header = header.ok_or_else(|| {
        ApiError::unauthorized("missing_api_key", "send your API key as `Authorization: Bearer <key>`")
    })?;
    let malformed = || ApiError::unauthorized("invalid_api_key", "the Authorization header must be `Bearer <key>`");
    let value = header.to_str().map_err(|_| malformed())?.trim();
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}
