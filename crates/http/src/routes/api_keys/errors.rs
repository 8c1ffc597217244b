//! What the key operations' refusals answer: each a row of the error table, mapped once.

use account_domain::{
    CreateKeyError, GetKeyError, KeyAccessError, KeyStoreError, ListKeysError, RevokeKeyError, RollKeyError,
    UpdateKeyError,
};

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

impl From<KeyStoreError> for ApiError {
    fn from(e: KeyStoreError) -> Self {
        let message = e.to_string();
        match e {
            KeyStoreError::NotFound => Self::new(ErrorCode::KeyNotFound, message),
            KeyStoreError::NotActive => Self::new(ErrorCode::KeyNotActive, message),
            KeyStoreError::LimitReached(_) => Self::new(ErrorCode::KeyLimitReached, message),
            KeyStoreError::Actor(refused) => refused.into(),
            KeyStoreError::Access(refused) => refused.into(),
            KeyStoreError::Unknown(cause) => cause.into(),
        }
    }
}

/// Every operation on one key passes on its access refusal or its store's.
macro_rules! from_key_operation_error {
    ($($error:ident),*) => {$(
        impl From<$error> for ApiError {
            fn from(e: $error) -> Self {
                match e {
                    $error::Access(e) => e.into(),
                    $error::Store(e) => e.into(),
                }
            }
        }
    )*};
}

from_key_operation_error!(GetKeyError, CreateKeyError, RollKeyError, UpdateKeyError, RevokeKeyError);

impl From<ListKeysError> for ApiError {
    fn from(e: ListKeysError) -> Self {
        match e {
            ListKeysError::InsufficientScope(e) => e.into(),
            ListKeysError::Unknown(cause) => cause.into(),
        }
    }
}
