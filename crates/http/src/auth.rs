//! The authentication extractor: `Authorization: Bearer <key>` to a [`Principal`].

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use account_domain::{AccountService, ActorRefused, AuthenticateError, Principal};
use actix_web::dev::Payload;
use actix_web::http::header::{HeaderValue, AUTHORIZATION};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use futures_util::future::Either;

use crate::client_ip::client_address;
use crate::error::{ApiError, ErrorCode};
use crate::limits::AbuseLimits;
use crate::metrics::Metrics;
use crate::middleware::AuthenticatedAs;

/// The authenticated caller of a handler, with the service that authenticated it: one
/// extractor, one lookup of the service per request.
#[derive(Debug)]
pub(crate) struct Caller {
    pub principal: Principal,
    pub service: web::Data<AccountService>,
}

/// The caller of `GET /v1/account`: as [`Caller`], but a valid key of a deactivated
/// organization is let through, so that it can read `"is_active": false`.
#[derive(Debug)]
pub(crate) struct AccountReader(pub Caller);

impl From<Caller> for AccountReader {
    fn from(caller: Caller) -> Self {
        Self(caller)
    }
}

type Lookup<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;
/// Ready at once when the cache (or the key's format) decides; a boxed future only when the
/// store must be read.
type Extraction<T> = Either<Ready<Result<T, ApiError>>, Lookup<T>>;

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Extraction<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        extract(req, false)
    }
}

impl FromRequest for AccountReader {
    type Error = ApiError;
    type Future = Extraction<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        extract(req, true)
    }
}

fn extract<T: From<Caller> + 'static>(req: &HttpRequest, inactive_allowed: bool) -> Extraction<T> {
    let Some(service) = req.app_data::<web::Data<AccountService>>() else {
        let e = ApiError::internal(&anyhow::anyhow!("AccountService is not configured").into());
        return Either::Left(ready(Err(e)));
    };
    let token = match bearer_token(req.headers().get(AUTHORIZATION)) {
        Ok(token) => token,
        Err(e) => return Either::Left(ready(finish_authentication(req, service, Err(e)).map(T::from))),
    };
    let judged = move |outcome: Result<Principal, AuthenticateError>| match outcome {
        Err(AuthenticateError::OrganizationInactive(principal)) if inactive_allowed => Ok(principal),
        other => other.map_err(ApiError::from),
    };
    // The address is worked out only if the key has an allowlist (or the store is read).
    match service.authenticate(token, || client_address(req)).now_or_later() {
        Ok(outcome) => Either::Left(ready(finish_authentication(req, service, judged(outcome)).map(T::from))),
        Err(lookup) => {
            let (service, req) = (service.clone(), req.clone());
            Either::Right(Box::pin(async move {
                let outcome = judged(lookup.await);
                finish_authentication(&req, &service, outcome).map(T::from)
            }))
        }
    }
}

/// On success, notes the caller for the request's log line; a failure is counted.
fn finish_authentication(
    req: &HttpRequest,
    service: &web::Data<AccountService>,
    outcome: Result<Principal, ApiError>,
) -> Result<Caller, ApiError> {
    match outcome {
        Ok(principal) => {
            // For the request's log line (shares the credential, copies nothing).
            if tracing::enabled!(tracing::Level::INFO) {
                req.extensions_mut().insert(AuthenticatedAs(principal.clone()));
            }
            Ok(Caller { principal, service: service.clone() })
        }
        Err(e) => Err(failed_authentication(req, e)),
    }
}

/// A refused authentication, by key or by service token: a 401, or a 403 `ip_not_allowed`
/// (a key probed from outside its allowlist), counts against the caller's address (the
/// answer becomes 429 once over the limit), and every client error is counted in the
/// metrics. Only guesses are counted: a request with no `Bearer` token, or with an API key
/// that is not even well formed (its checksum checked without any lookup), guesses nothing
/// that could ever succeed and is always answered its 401; a correct key used from where it
/// may be is never slowed.
pub(crate) fn failed_authentication(req: &HttpRequest, e: ApiError) -> ApiError {
    let guessed = match req.headers().get(AUTHORIZATION).and_then(bearer) {
        None => false,
        Some(token) => {
            e.code() != ErrorCode::InvalidApiKey.as_str()
                || account_domain::PlaintextKey::check_presented(token).is_ok()
        }
    };
    let counted =
        guessed && (e.status_code() == StatusCode::UNAUTHORIZED || e.code() == ErrorCode::IpNotAllowed.as_str());
    let e = if counted {
        let limits = req.app_data::<web::Data<AbuseLimits>>();
        match limits.and_then(|l| l.counted_ip(req).map(|ip| (l, ip))) {
            Some((limits, ip)) => limits.check_auth_failure(ip).err().unwrap_or(e),
            None => e,
        }
    } else {
        e
    };
    if let Some(metrics) = req.app_data::<web::Data<Metrics>>().filter(|_| e.status_code().is_client_error()) {
        metrics.record_auth_failure(e.code());
    }
    e
}

/// The key of an `Authorization: Bearer <key>` header, or why there is none.
#[inline]
fn bearer_token(header: Option<&HeaderValue>) -> Result<&[u8], ApiError> {
    let Some(header) = header else {
        return Err(ApiError::new(ErrorCode::MissingApiKey, "send your API key as `Authorization: Bearer <key>`"));
    };
    match bearer(header) {
        Some(token) => Ok(token),
        None => Err(ApiError::new(ErrorCode::InvalidApiKey, "the Authorization header must be `Bearer <key>`")),
    }
}

/// The token of a `Bearer <token>` header value, the one reading of it for API keys and the
/// internal service token alike: the scheme word is case-insensitive and followed by a space,
/// spaces around the token are trimmed, an empty token is none. Stays in bytes: the key's own
/// check rejects anything but its alphabet, so the header's text need not be validated twice
/// (this runs on every request).
#[inline]
pub(crate) fn bearer(header: &HeaderValue) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let value = header.as_bytes().trim_ascii();
    let token = match value.split_at_checked(SCHEME.len()) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(SCHEME) => token.trim_ascii(),
        _ => return None,
    };
    (!token.is_empty()).then_some(token)
}

impl From<AuthenticateError> for ApiError {
    fn from(e: AuthenticateError) -> Self {
        match e {
            // Malformed, wrong checksum or unknown: not told apart.
            AuthenticateError::Malformed(_) | AuthenticateError::UnknownKey => {
                Self::new(ErrorCode::InvalidApiKey, "the API key is not valid")
            }
            AuthenticateError::Refused(refused) => refused.into(),
            AuthenticateError::OrganizationInactive(_) => ActorRefused::OrganizationInactive.into(),
            AuthenticateError::Store(cause) => cause.into(),
        }
    }
}

/// The one mapping of the refusals of a key that may not act, at the door or inside its
/// write's transaction alike.
impl From<ActorRefused> for ApiError {
    fn from(refused: ActorRefused) -> Self {
        let code = match refused {
            ActorRefused::Revoked => ErrorCode::RevokedApiKey,
            ActorRefused::Expired => ErrorCode::ExpiredApiKey,
            ActorRefused::IpNotAllowed => ErrorCode::IpNotAllowed,
            ActorRefused::OrganizationInactive => ErrorCode::OrganizationInactive,
        };
        Self::new(code, refused.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str) -> Result<&[u8], &'static str> {
        let header = HeaderValue::from_str(value).expect("valid header");
        // Leaked so the borrowed token can outlive the header in this test.
        bearer_token(Some(Box::leak(Box::new(header)))).map_err(|e| e.code())
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_spaces_are_trimmed() {
        assert_eq!(token("Bearer mem_live_x"), Ok(&b"mem_live_x"[..]));
        assert_eq!(token("bEaReR   mem_live_x  "), Ok(&b"mem_live_x"[..]));
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_malformed() {
        for value in
            ["Basic abc", "Bearer", "Bearer    ", "Bearermem_live_x", "Bearer\tmem_live_x", "Token x", "é", "Bearé x"]
        {
            assert_eq!(token(value), Err("invalid_api_key"), "{value}");
        }
    }
}
