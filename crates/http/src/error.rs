//! The error envelope, and the one table of what the API answers when it refuses: every
//! error code with its status. Each resource module maps its domain errors by picking a
//! row of [`ErrorCode`]; no handler writes an error status or code of its own. The OpenAPI
//! annotations (`responses(...)` on each route, `routes/shared_responses.rs`) restate the
//! statuses for the document; `scripts/fuzz-api.sh` checks the answers against it.

use std::fmt;

use account_domain::StoreError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// Defines [`ErrorCode`] from its table: variant, status, code.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $status:ident, $code:literal;)*) => {
        /// Every error the API answers, each with its status and its stable code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the table's order.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant,)*];

            pub const fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)*
                }
            }

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    /// The body is not JSON.
    InvalidJson => BAD_REQUEST, "invalid_json";
    /// The request's shape is wrong: not an object, a field of the wrong type, unknown...
    InvalidRequest => BAD_REQUEST, "invalid_request";
    /// The body could not be read.
    InvalidBody => BAD_REQUEST, "invalid_body";
    /// A field's value breaks its rule.
    ValidationError => BAD_REQUEST, "validation_error";
    UnknownPlan => BAD_REQUEST, "unknown_plan";
    /// A 4xx of the framework's own that has no code of its own.
    BadRequest => BAD_REQUEST, "bad_request";
    MissingApiKey => UNAUTHORIZED, "missing_api_key";
    InvalidApiKey => UNAUTHORIZED, "invalid_api_key";
    RevokedApiKey => UNAUTHORIZED, "revoked_api_key";
    ExpiredApiKey => UNAUTHORIZED, "expired_api_key";
    InvalidServiceToken => UNAUTHORIZED, "invalid_service_token";
    OrganizationInactive => FORBIDDEN, "organization_inactive";
    InsufficientScope => FORBIDDEN, "insufficient_scope";
    ScopeEscalation => FORBIDDEN, "scope_escalation";
    EnvironmentEscalation => FORBIDDEN, "environment_escalation";
    ExpiryEscalation => FORBIDDEN, "expiry_escalation";
    AddressEscalation => FORBIDDEN, "address_escalation";
    IpNotAllowed => FORBIDDEN, "ip_not_allowed";
    NotFound => NOT_FOUND, "not_found";
    KeyNotFound => NOT_FOUND, "key_not_found";
    WebhookNotFound => NOT_FOUND, "webhook_not_found";
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed";
    RequestTimeout => REQUEST_TIMEOUT, "request_timeout";
    EmailTaken => CONFLICT, "email_taken";
    /// The organization is closed: nothing about it changes any more.
    AccountClosed => CONFLICT, "account_closed";
    KeyLimitReached => CONFLICT, "key_limit_reached";
    KeyNotActive => CONFLICT, "key_not_active";
    /// The organization has the most webhook endpoints allowed (10).
    WebhookLimitReached => CONFLICT, "webhook_limit_reached";
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "payload_too_large";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type";
    HeadersTooLarge => REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large";
    RateLimited => TOO_MANY_REQUESTS, "rate_limited";
    InternalError => INTERNAL_SERVER_ERROR, "internal_error";
    ServiceUnavailable => SERVICE_UNAVAILABLE, "service_unavailable";
    /// The deployment has no `WEBHOOK_SECRET_KEY`.
    WebhooksNotConfigured => SERVICE_UNAVAILABLE, "webhooks_not_configured";
}

/// An error as the API answers it: `{"success": false, "error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    field: Option<String>,
    retry_after_secs: Option<u64>,
}

/// A failed answer: `success` is always false.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody<'a> {
    /// Always false.
    success: bool,
    error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail<'a> {
    /// A stable snake_case code (see docs/api.md for the list).
    #[schema(example = "validation_error")]
    code: &'a str,
    /// For humans; never contains internals, nor any value that was sent.
    message: &'a str,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: None, retry_after_secs: None }
    }

    /// 429 with `Retry-After`: too many `what` from this address.
    pub fn rate_limited(what: &str, retry_after_secs: u64) -> Self {
        Self::new(ErrorCode::RateLimited, format!("too many {what} from this address; retry in {retry_after_secs} s"))
            .retry_after(retry_after_secs)
    }

    /// 429 with `Retry-After`, for a limit counted per organization rather than per address.
    pub fn rate_limited_for_organization(what: &str, retry_after_secs: u64) -> Self {
        let message = format!("too many {what} for this organization; retry in {retry_after_secs} s");
        Self::new(ErrorCode::RateLimited, message).retry_after(retry_after_secs)
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 400 `unknown_plan`: the id sent is not repeated (anything may have been sent).
    pub fn unknown_plan() -> Self {
        Self::new(ErrorCode::UnknownPlan, "no plan has this id").with_field("plan_id")
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }

    /// The message for humans.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Seconds the client should wait, on a 429.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    pub fn validation(field: &str, problem: impl fmt::Display) -> Self {
        Self::new(ErrorCode::ValidationError, format!("`{field}` {problem}")).with_field(field)
    }

    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such route")
    }

    /// A failure whose cause must not reach the client: logged here, answered generically.
    /// A store that cannot be reached answers 503 (retry), anything else 500.
    pub fn internal(cause: &StoreError) -> Self {
        match cause {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = format!("{e:#}"), "database unavailable");
                Self::new(ErrorCode::ServiceUnavailable, "the service is temporarily unavailable; retry shortly")
            }
            StoreError::Failed(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                Self::new(ErrorCode::InternalError, "an internal error occurred")
            }
        }
    }

    /// The envelope for a status the framework produced on its own.
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => (ErrorCode::MethodNotAllowed, "this route does not accept this method"),
            StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::PayloadTooLarge, "the request body is larger than 64 KiB"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                (ErrorCode::UnsupportedMediaType, "send the body as application/json")
            }
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                (ErrorCode::HeadersTooLarge, "the request headers are too large")
            }
            StatusCode::REQUEST_TIMEOUT => (ErrorCode::RequestTimeout, "the request took too long to arrive"),
            StatusCode::TOO_MANY_REQUESTS => (ErrorCode::RateLimited, "too many requests; retry later"),
            StatusCode::SERVICE_UNAVAILABLE => {
                (ErrorCode::ServiceUnavailable, "the service is temporarily unavailable")
            }
            s if s.is_client_error() => (ErrorCode::BadRequest, "the request is not valid"),
            _ => (ErrorCode::InternalError, "an internal error occurred"),
        };
        Self::new(code, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status().as_u16(), self.code(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status());
        if self.status() == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(ErrorBody {
            success: false,
            error: ErrorDetail { code: self.code(), message: &self.message, field: self.field.as_deref() },
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(&e)
    }
}

impl From<account_domain::InsufficientScope> for ApiError {
    fn from(e: account_domain::InsufficientScope) -> Self {
        Self::new(ErrorCode::InsufficientScope, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_is_written_once_and_errors_are_client_or_server_errors() {
        let mut codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        codes.sort_unstable();
        let count = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), count, "a code is in the table twice");
        assert!(ErrorCode::ALL.iter().all(|c| c.status().is_client_error() || c.status().is_server_error()));
    }
}
