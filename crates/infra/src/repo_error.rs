//! Errors inside the adapters, and their translation into what the domain understands.

use account_domain::{ActorRefused, KeyWriteError, StoreUnavailable};
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
    #[error("active key limit reached")]
    KeyLimitReached,
    #[error("not found")]
    NotFound,
    #[error("not active")]
    NotActive,
    #[error(transparent)]
    Actor(ActorRefused),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl RepoError {
    /// An error for callers outside the adapter: a lost or unobtainable connection is marked
    /// [`StoreUnavailable`] (try again later); anything else keeps its cause for the log.
    pub(crate) fn into_anyhow(self, doing: &'static str) -> anyhow::Error {
        match self {
            Self::Pool(e) => anyhow::Error::new(StoreUnavailable(e.to_string())).context(doing),
            Self::Query(e) if connection_lost(&e) => anyhow::Error::new(StoreUnavailable(e.to_string())).context(doing),
            Self::Query(e) => anyhow::Error::new(e).context(doing),
            Self::EmailTaken => anyhow::anyhow!("email taken").context(doing),
            Self::UnknownPlan => anyhow::anyhow!("unknown plan").context(doing),
            Self::KeyLimitReached => anyhow::anyhow!("active key limit reached").context(doing),
            Self::NotFound => anyhow::anyhow!("not found").context(doing),
            Self::NotActive => anyhow::anyhow!("not active").context(doing),
            Self::Actor(refused) => anyhow::Error::new(refused).context(doing),
            Self::Other(e) => e.context(doing),
        }
    }
}

impl RepoError {
    /// For the key writes a caller's key asked for: its refusal stays typed.
    pub(crate) fn into_key_write_error(self, doing: &'static str) -> KeyWriteError {
        match self {
            Self::Actor(refused) => KeyWriteError::Actor(refused),
            other => KeyWriteError::Unknown(other.into_anyhow(doing)),
        }
    }
}

fn connection_lost(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _) => {
            true
        }
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
