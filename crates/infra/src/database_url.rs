//! Reading `DATABASE_URL`: which backend, and where.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Where the data lives. The URL's scheme chooses the backend.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (it may hold a password: never printed).
    Postgres(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "DATABASE_URL {reason}: use sqlite://PATH, a plain file path (SQLite), or postgres://USER@HOST:PORT/DB (PostgreSQL)"
)]
pub struct InvalidDatabaseUrl {
    reason: String,
}

impl DatabaseTarget {
    pub fn parse(url: &str) -> Result<Self, InvalidDatabaseUrl> {
        let url = url.trim();
        if url.is_empty() {
            return Err(InvalidDatabaseUrl { reason: "is empty".into() });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(InvalidDatabaseUrl { reason: "names no SQLite file".into() });
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(InvalidDatabaseUrl { reason: format!("has the unsupported scheme `{scheme}`") });
        }
        Ok(Self::Sqlite(PathBuf::from(url)))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DatabaseTarget {
    /// Names the database without any password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                let host = host.split_once('?').map_or(host, |(h, _)| h);
                write!(f, "{scheme}://{host}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_chooses_the_backend() {
        assert_eq!(DatabaseTarget::parse("sqlite://data/a.db"), Ok(DatabaseTarget::Sqlite("data/a.db".into())));
        assert_eq!(DatabaseTarget::parse("account-api.db"), Ok(DatabaseTarget::Sqlite("account-api.db".into())));
        assert!(DatabaseTarget::parse("postgres://u@h/db").is_ok_and(|t| t.is_postgres()));
        assert!(DatabaseTarget::parse("postgresql://u@h/db").is_ok_and(|t| t.is_postgres()));
    }

    #[test]
    fn other_schemes_are_refused_with_the_accepted_forms() {
        let err = DatabaseTarget::parse("mysql://root@localhost/db").expect_err("unsupported");
        let message = err.to_string();
        assert!(message.contains("DATABASE_URL") && message.contains("mysql") && message.contains("postgres://"));
        assert!(DatabaseTarget::parse("").is_err());
        assert!(DatabaseTarget::parse("sqlite://").is_err());
    }

    #[test]
    fn passwords_are_never_displayed() {
        let target =
            DatabaseTarget::parse("postgres://user:hunter2@db.internal:5432/app?sslmode=require").expect("valid");
        assert_eq!(target.to_string(), "postgres://db.internal:5432/app");
        assert!(!format!("{target:?}").contains("hunter2"));
    }
}
