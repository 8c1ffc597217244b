//! Errors inside the adapters, and their translation into what the domain understands.

use account_domain::{AccountOpError, KeyOpError, StoreError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use thiserror::Error;

#[derive(Debug, Error)]
pub(crate) enum RepoError {
    #[error("database query failed")]
    Query(#[from] DieselError),
    #[error("no database connection could be had in time")]
    Pool(#[from] r2d2::Error),
    #[error("email taken")]
    EmailTaken,
    #[error("unknown plan")]
    UnknownPlan,
    /// A key write's own refusal, typed as the domain knows it.
    #[error(transparent)]
    Key(KeyOpError),
    /// An account write's own refusal, typed as the domain knows it.
    #[error(transparent)]
    Account(AccountOpError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl RepoError {
    /// An error for callers outside the adapter: a lost or unobtainable connection is
    /// [`StoreError::Unavailable`] (try again later); anything else keeps its cause for the log.
    pub(crate) fn into_store_error(self, doing: &'static str) -> StoreError {
        match self {
            Self::Pool(e) => StoreError::Unavailable(anyhow::Error::new(e).context(doing)),
            Self::Query(e) if connection_lost(&e) => StoreError::Unavailable(anyhow::Error::new(e).context(doing)),
            Self::Query(e) => StoreError::Failed(anyhow::Error::new(e).context(doing)),
            Self::EmailTaken => StoreError::Failed(anyhow::anyhow!("email taken").context(doing)),
            Self::UnknownPlan => StoreError::Failed(anyhow::anyhow!("unknown plan").context(doing)),
            Self::Key(KeyOpError::Store(e)) => e,
            Self::Key(refused) => StoreError::Failed(anyhow::Error::new(refused).context(doing)),
            Self::Account(AccountOpError::Store(e)) => e,
            Self::Account(refused) => StoreError::Failed(anyhow::Error::new(refused).context(doing)),
            Self::Other(e) => StoreError::Failed(e.context(doing)),
        }
    }
}

impl RepoError {
    /// For the key writes: their refusals stay typed, anything else is unknown.
    pub(crate) fn into_key_store_error(self, doing: &'static str) -> KeyOpError {
        match self {
            Self::Key(refused) => refused,
            other => KeyOpError::Store(other.into_store_error(doing)),
        }
    }
}

impl RepoError {
    /// For the account writes: their refusals stay typed, anything else is a store failure.
    pub(crate) fn into_account_error(self, doing: &'static str) -> AccountOpError {
        match self {
            Self::Account(refused) => refused,
            Self::EmailTaken => AccountOpError::EmailTaken,
            Self::UnknownPlan => AccountOpError::UnknownPlan,
            other => AccountOpError::Store(other.into_store_error(doing)),
        }
    }
}

impl RepoError {
    /// For the webhook endpoint writes: their decision's refusals stay typed, anything
    /// else is a store failure.
    pub(crate) fn into_webhook_error(self, doing: &'static str) -> account_domain::WebhookStoreError {
        match self {
            Self::Account(refused) => account_domain::WebhookStoreError::Refused(refused),
            other => account_domain::WebhookStoreError::Store(other.into_store_error(doing)),
        }
    }
}

impl From<AccountOpError> for RepoError {
    fn from(e: AccountOpError) -> Self {
        Self::Account(e)
    }
}

impl From<KeyOpError> for RepoError {
    fn from(e: KeyOpError) -> Self {
        Self::Key(e)
    }
}

/// Whether the connection itself is gone: it must not serve again.
pub(crate) fn connection_closed(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _)
    )
}

fn connection_lost(e: &DieselError) -> bool {
    match e {
        e if connection_closed(e) => true,
        // SQLite answers "database is locked" only after its busy timeout, PostgreSQL cancels a
        // statement past `statement_timeout`: either way the store is overloaded, try later.
        DieselError::DatabaseError(_, info) => {
            info.message().contains("database is locked") || info.message().contains("statement timeout")
        }
        _ => false,
    }
}

/// Whether an insert failed on a unique constraint.
pub(crate) fn is_unique_violation(e: &DieselError) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
}

/// Whether an insert failed on a foreign key.
pub(crate) fn is_foreign_key_violation(e: &DieselError) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _))
}
