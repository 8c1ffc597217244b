//! One connection type for both backends, and the r2d2 manager that opens it.

use diesel::connection::SimpleConnection;
use diesel::r2d2::R2D2Connection;
use diesel::{Connection, ConnectionError, MultiConnection, PgConnection, SqliteConnection};

use crate::database_url::DatabaseTarget;

/// A connection to SQLite or PostgreSQL; queries are written to what both accept.
#[derive(MultiConnection)]
pub enum DbConnection {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

/// Per-connection SQLite settings: wait for locks instead of failing, enforce foreign
/// keys, and fsync every commit so that an acknowledged write survives a power cut.
const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;";

/// Opens connections by the target's backend. Unlike diesel's own manager for a
/// `MultiConnection`, it never tries a PostgreSQL URL as a SQLite file name.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionManager {
    target: DatabaseTarget,
}

impl ConnectionManager {
    pub(crate) fn new(target: DatabaseTarget) -> Self {
        Self { target }
    }

    pub(crate) fn open(&self) -> Result<DbConnection, ConnectionError> {
        match &self.target {
            DatabaseTarget::Postgres(url) => {
                PgConnection::establish(url).map(DbConnection::Postgres)
            }
            DatabaseTarget::Sqlite(path) => {
                let path = path.to_str().ok_or_else(|| {
                    ConnectionError::InvalidConnectionUrl("the SQLite path is not UTF-8".into())
                })?;
                let mut conn = SqliteConnection::establish(path)?;
                conn.batch_execute(SQLITE_PRAGMAS)
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = ConnectionError;

    fn connect(&self) -> Result<DbConnection, ConnectionError> {
        self.open()
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), ConnectionError> {
        conn.ping()
            .map(|_| ())
            .map_err(ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

impl std::fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgres(_) => "DbConnection::Postgres",
            Self::Sqlite(_) => "DbConnection::Sqlite",
        })
    }
}
