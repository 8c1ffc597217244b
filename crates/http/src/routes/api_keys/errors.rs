//! What the key operations' refusals answer: each a row of the error table, mapped once.

use account_domain::{KeyAccessError, KeyOpError};

use crate::error::{ApiError, ErrorCode};

impl From<KeyAccessError> for ApiError {
    fn from(e: KeyAccessError) -> Self {
        let message = e.to_string();
        match e {
            KeyAccessError::InsufficientScope(e) => e.into(),
            KeyAccessError::NotFound => Self::new(ErrorCode::KeyNotFound, message),
            // A refusal of what the request asked for names its field; one of a stored key's
            // properties (a roll, a rename) names none.
            KeyAccessError::ScopeEscalation { requested, .. } => {
                with_field_if(Self::new(ErrorCode::ScopeEscalation, message), requested, "scopes")
            }
            KeyAccessError::EnvironmentEscalation { requested } => {
                with_field_if(Self::new(ErrorCode::EnvironmentEscalation, message), requested, "environment")
            }
            KeyAccessError::WideningEscalation { .. } => {
                Self::new(ErrorCode::ScopeEscalation, message).with_field("allowed_ips")
            }
            KeyAccessError::ExpiryEscalation => {
                Self::new(ErrorCode::ExpiryEscalation, message).with_field("expires_in_days")
            }
            KeyAccessError::AddressEscalation => {
                Self::new(ErrorCode::AddressEscalation, message).with_field("allowed_ips")
            }
        }
    }
}

fn with_field_if(error: ApiError, named: bool, field: &str) -> ApiError {
    if named {
        error.with_field(field)
    } else {
        error
    }
}

impl From<KeyOpError> for ApiError {
    fn from(e: KeyOpError) -> Self {
        let message = e.to_string();
        match e {
            KeyOpError::NotActive => Self::new(ErrorCode::KeyNotActive, message),
            KeyOpError::LimitReached(_) => Self::new(ErrorCode::KeyLimitReached, message),
            KeyOpError::Actor(refused) => refused.into(),
            KeyOpError::OrganizationClosed => Self::new(ErrorCode::AccountClosed, message),
            KeyOpError::Access(refused) => refused.into(),
            KeyOpError::Store(cause) => cause.into(),
        }
    }
}
