//! One connection type for both backends, and the r2d2 manager that opens it.

use std::time::{Duration, Instant};

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
/// keys, fsync every commit so that an acknowledged write survives a power cut, and zero
/// what an update or delete frees, so that erased data is gone from the file itself.
const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;";

/// Per-connection PostgreSQL settings: no statement may hold a request (and a pooled
/// connection) longer than this.
const POSTGRES_SETTINGS: &str = "SET statement_timeout = 5000;";

/// A connection attempt gives up after this many seconds unless the URL says otherwise, so
/// that an unreachable server cannot stall start-up retries or pool checkouts.
const POSTGRES_CONNECT_TIMEOUT_S: u32 = 3;

fn with_connect_timeout(url: &str) -> String {
    if url.contains("connect_timeout=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}connect_timeout={POSTGRES_CONNECT_TIMEOUT_S}")
}

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
                let mut conn = PgConnection::establish(&with_connect_timeout(url))?;
                conn.batch_execute(POSTGRES_SETTINGS).map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(DbConnection::Postgres(conn))
            }
            DatabaseTarget::Sqlite(path) => {
                let path = path
                    .to_str()
                    .ok_or_else(|| ConnectionError::InvalidConnectionUrl("the SQLite path is not UTF-8".into()))?;
                let mut conn = SqliteConnection::establish(path)?;
                conn.batch_execute(SQLITE_PRAGMAS).map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

/// A connection of the pool, with what the pool needs to judge it without a round trip:
/// when it last served, and whether it was found lost (the pool then drops it).
pub(crate) struct PooledConnection {
    pub(crate) conn: DbConnection,
    pub(crate) last_used: Instant,
    pub(crate) lost: bool,
}

impl PooledConnection {
    /// A connection idle longer than this may have died with the server (a restart, a
    /// failover): it is tested with a round trip before use. A busy one is not.
    pub(crate) const TEST_WHEN_IDLE: Duration = Duration::from_secs(1);

    /// Whether the connection must be tested before use.
    pub(crate) fn needs_test(&self) -> bool {
        matches!(self.conn, DbConnection::Postgres(_)) && self.last_used.elapsed() > Self::TEST_WHEN_IDLE
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = PooledConnection;
    type Error = ConnectionError;

    fn connect(&self) -> Result<PooledConnection, ConnectionError> {
        Ok(PooledConnection { conn: self.open()?, last_used: Instant::now(), lost: false })
    }

    fn is_valid(&self, pooled: &mut PooledConnection) -> Result<(), ConnectionError> {
        pooled.conn.ping().map(|_| ()).map_err(ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, pooled: &mut PooledConnection) -> bool {
        pooled.lost || pooled.conn.is_broken()
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
