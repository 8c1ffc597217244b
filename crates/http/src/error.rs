//! The error envelope, and the single place where domain errors become HTTP statuses.

use std::fmt;

use account_domain::{
    ActorRefused, AuditLogError, AuthenticateError, CreateKeyError, GetAccountError, ListKeysError, RenameKeyError,
    ReportLeakError, RevokeKeyError, RollKeyError, SignupError, StoreUnavailable,
};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// An error as the API answers it: `{"success": false, "error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after_secs: Option<u64>,
}

/// A failed answer: `success` is always false.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody<'a> {
    success: bool,
    error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail<'a> {
    /// A stable snake_case code (see docs/api.md for the list).
    #[schema(example = "validation_error")]
    code: &'a str,
    /// For humans; never contains internals.
    message: &'a str,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, retry_after_secs: None }
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(what: &str, retry_after_secs: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many {what} from this address; retry in {retry_after_secs} s"),
        );
        error.retry_after_secs = Some(retry_after_secs);
        error
    }

    /// 429 with `Retry-After`, for a limit counted per organization rather than per address.
    pub fn rate_limited_for_organization(what: &str, retry_after_secs: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many {what} for this organization; retry in {retry_after_secs} s"),
        );
        error.retry_after_secs = Some(retry_after_secs);
        error
    }

    /// 400 `unknown_plan`: the id sent is not repeated (anything may have been sent).
    pub fn unknown_plan() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unknown_plan", "no plan has this id").with_field("plan_id")
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
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
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after_secs
    }

    pub fn validation(field: &str, problem: impl fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_error", format!("`{field}` {problem}")).with_field(field)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// A failure whose cause must not reach the client: logged here, answered generically.
    pub fn internal(cause: &anyhow::Error) -> Self {
        if cause.chain().any(|e| e.is::<StoreUnavailable>()) {
            tracing::warn!(error = format!("{cause:#}"), "database unavailable");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the service is temporarily unavailable; retry shortly",
            );
        }
        tracing::error!(error = format!("{cause:#}"), "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "an internal error occurred")
    }

    /// The envelope for a status the framework produced on its own.
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this route does not accept this method"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is larger than 64 KiB"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send the body as application/json"),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ("headers_too_large", "the request headers are too large"),
            StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long to arrive"),
            StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests; retry later"),
            StatusCode::SERVICE_UNAVAILABLE => ("service_unavailable", "the service is temporarily unavailable"),
            s if s.is_client_error() => ("bad_request", "the request is not valid"),
            _ => ("internal_error", "an internal error occurred"),
        };
        Self::new(status, code, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(ErrorBody {
            success: false,
            error: ErrorDetail { code: self.code, message: &self.message, field: self.field.as_deref() },
        })
    }
}

fn insufficient_scope(e: &account_domain::InsufficientScope) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", e.to_string())
}

impl From<AuthenticateError> for ApiError {
    fn from(e: AuthenticateError) -> Self {
        match &e {
            AuthenticateError::Malformed(_) | AuthenticateError::UnknownKey => {
                Self::unauthorized("invalid_api_key", "the API key is not valid")
            }
            AuthenticateError::Revoked => Self::unauthorized("revoked_api_key", e.to_string()),
            AuthenticateError::Expired => Self::unauthorized("expired_api_key", e.to_string()),
            AuthenticateError::OrganizationInactive => {
                Self::new(StatusCode::FORBIDDEN, "organization_inactive", e.to_string())
            }
            AuthenticateError::Unknown(cause) => Self::internal(cause),
        }
    }
}

/// A key refused inside its write's transaction answers as it would have at the door.
impl From<ActorRefused> for ApiError {
    fn from(refused: ActorRefused) -> Self {
        Self::from(match refused {
            ActorRefused::Revoked => AuthenticateError::Revoked,
            ActorRefused::Expired => AuthenticateError::Expired,
            ActorRefused::OrganizationInactive => AuthenticateError::OrganizationInactive,
        })
    }
}

impl From<SignupError> for ApiError {
    fn from(e: SignupError) -> Self {
        match &e {
            SignupError::UnknownPlan(_) => {
                Self::new(StatusCode::BAD_REQUEST, "unknown_plan", e.to_string()).with_field("plan_id")
            }
            SignupError::EmailTaken => {
                Self::new(StatusCode::CONFLICT, "email_taken", e.to_string()).with_field("email")
            }
            SignupError::Unknown(cause) => Self::internal(cause),
        }
    }
}

impl From<GetAccountError> for ApiError {
    fn from(e: GetAccountError) -> Self {
        match &e {
            GetAccountError::InsufficientScope(s) => insufficient_scope(s),
            GetAccountError::Unknown(cause) => Self::internal(cause),
        }
    }
}

impl From<ListKeysError> for ApiError {
    fn from(e: ListKeysError) -> Self {
        match &e {
            ListKeysError::InsufficientScope(s) => insufficient_scope(s),
            ListKeysError::Unknown(cause) => Self::internal(cause),
        }
    }
}

impl From<CreateKeyError> for ApiError {
    fn from(e: CreateKeyError) -> Self {
        match &e {
            CreateKeyError::InsufficientScope(s) => insufficient_scope(s),
            CreateKeyError::ScopeEscalation(_) => {
                Self::new(StatusCode::FORBIDDEN, "scope_escalation", e.to_string()).with_field("scopes")
            }
            CreateKeyError::KeyLimitReached(_) => Self::new(StatusCode::CONFLICT, "key_limit_reached", e.to_string()),
            CreateKeyError::EnvironmentEscalation => {
                Self::new(StatusCode::FORBIDDEN, "environment_escalation", e.to_string()).with_field("environment")
            }
            CreateKeyError::ExpiryEscalation => {
                Self::new(StatusCode::FORBIDDEN, "expiry_escalation", e.to_string()).with_field("expires_in_days")
            }
            CreateKeyError::Actor(refused) => Self::from(*refused),
            CreateKeyError::Unknown(cause) => Self::internal(cause),
        }
    }
}

impl From<RevokeKeyError> for ApiError {
    fn from(e: RevokeKeyError) -> Self {
        match &e {
            RevokeKeyError::InsufficientScope(s) => insufficient_scope(s),
            RevokeKeyError::NotFound => Self::new(StatusCode::NOT_FOUND, "key_not_found", e.to_string()),
            RevokeKeyError::EnvironmentEscalation => {
                Self::new(StatusCode::FORBIDDEN, "environment_escalation", e.to_string())
            }
            RevokeKeyError::Actor(refused) => Self::from(*refused),
            RevokeKeyError::Unknown(cause) => Self::internal(cause),
        }
    }
}

impl From<RenameKeyError> for ApiError {
    fn from(e: RenameKeyError) -> Self {
        match &e {
            RenameKeyError::InsufficientScope(s) => insufficient_scope(s),
            RenameKeyError::NotFound => Self::new(StatusCode::NOT_FOUND, "key_not_found", e.to_string()),
            RenameKeyError::EnvironmentEscalation => {
                Self::new(StatusCode::FORBIDDEN, "environment_escalation", e.to_string())
            }
            RenameKeyError::Actor(refused) => Self::from(*refused),
            RenameKeyError::Unknown(cause) => Self::internal(cause),
        }
    }
}

impl From<RollKeyError> for ApiError {
    fn from(e: RollKeyError) -> Self {
        match &e {
            RollKeyError::InsufficientScope(s) => insufficient_scope(s),
            RollKeyError::NotFound => Self::new(StatusCode::NOT_FOUND, "key_not_found", e.to_string()),
            RollKeyError::NotActive => Self::new(StatusCode::CONFLICT, "key_not_active", e.to_string()),
            RollKeyError::KeyLimitReached(_) => Self::new(StatusCode::CONFLICT, "key_limit_reached", e.to_string()),
            RollKeyError::ScopeEscalation(_) => Self::new(StatusCode::FORBIDDEN, "scope_escalation", e.to_string()),
            RollKeyError::EnvironmentEscalation => {
                Self::new(StatusCode::FORBIDDEN, "environment_escalation", e.to_string())
            }
            RollKeyError::Actor(refused) => Self::from(*refused),
            RollKeyError::Unknown(cause) => Self::internal(cause),
        }
    }
}

impl From<ReportLeakError> for ApiError {
    fn from(e: ReportLeakError) -> Self {
        match &e {
            ReportLeakError::InvalidCount => Self::validation("keys", "must hold 1 to 100 keys"),
            ReportLeakError::Unknown(cause) => Self::internal(cause),
        }
    }
}

impl From<AuditLogError> for ApiError {
    fn from(e: AuditLogError) -> Self {
        match &e {
            AuditLogError::InsufficientScope(s) => insufficient_scope(s),
            AuditLogError::InvalidLimit => Self::validation("limit", "must be a whole number from 1 to 100"),
            AuditLogError::InvalidCursor => Self::validation("before", "must be an event id such as evt_42"),
            AuditLogError::Unknown(cause) => Self::internal(cause),
        }
    }
}
