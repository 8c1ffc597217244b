//! The connection pool, migrations, and running diesel's blocking calls off the async
//! worker threads.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::Connection as _;
use diesel::RunQueryDsl as _;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::connection::{ConnectionManager, DbConnection};
use crate::database_url::DatabaseTarget;
use crate::repo_error::RepoError;

pub(crate) const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
pub(crate) const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
/// Serializes migrations of instances starting together on one PostgreSQL database.
const MIGRATION_LOCK_ID: i64 = 0x6163_636f_756e_7431;

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connections at most.
    pub max_size: u32,
    /// How long a request waits for a connection before it is answered "unavailable".
    pub checkout_timeout: Duration,
}

impl PoolOptions {
    /// Sized for the machine: a few connections per core, within what a small PostgreSQL allows.
    pub fn for_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_size = u32::try_from(cores * 4).unwrap_or(16).clamp(4, 32);
        Self { max_size, checkout_timeout: Duration::from_millis(2000) }
    }
}

/// The shared pool; clones are cheap and share it.
#[derive(Clone)]
pub struct Database {
    pool: r2d2::Pool<ConnectionManager>,
    target: DatabaseTarget,
    /// SQLite has one writer at a time: writers of this process queue here, in order,
    /// instead of in SQLite's busy handler, whose sleeps give poor tail latency.
    write_gate: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("target", &self.target).finish_non_exhaustive()
    }
}

impl Database {
    /// Builds the pool without waiting for any connection: a database that is down now
    /// makes requests fail fast until it is back, never the pool itself.
    pub fn new(target: DatabaseTarget, options: &PoolOptions) -> Self {
        let pool = r2d2::Pool::builder()
            .max_size(options.max_size)
            .min_idle(Some(0))
            .connection_timeout(options.checkout_timeout)
            // Not a round trip at every checkout: `checkout` tests only a connection idle for
            // a while, and one found lost is dropped.
            .test_on_check_out(false)
            .error_handler(Box::new(LogPoolErrors))
            .build_unchecked(ConnectionManager::new(target.clone()));
        Self { pool, target, write_gate: Arc::new(Mutex::new(())) }
    }

    pub fn target(&self) -> &DatabaseTarget {
        &self.target
    }

    /// Opens one connection outside the pool (for migrations and start-up checks).
    pub fn connect_once(&self) -> anyhow::Result<DbConnection> {
        ConnectionManager::new(self.target.clone())
            .open()
            .with_context(|| format!("could not connect to {}", self.target))
    }

    /// Applies every pending migration of the target's backend and returns how many ran.
    pub fn migrate(&self) -> anyhow::Result<usize> {
        let mut conn = self.connect_once()?;
        match &mut conn {
            DbConnection::Sqlite(c) => {
                // WAL lets readers go on while one writer commits; the mode persists in the file.
                c.batch_execute("PRAGMA journal_mode = WAL;").context("could not switch SQLite to WAL mode")?;
                let ran = c.run_pending_migrations(SQLITE_MIGRATIONS).map_err(|e| anyhow::anyhow!(e))?;
                Ok(ran.len())
            }
            DbConnection::Postgres(c) => {
                // A migration may rewrite a big table: the per-statement limit of requests does not apply.
                c.batch_execute(&format!("SET statement_timeout = 0; SELECT pg_advisory_lock({MIGRATION_LOCK_ID});"))
                    .context("could not take the migration lock")?;
                let ran =
                    c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|v| v.len()).map_err(|e| anyhow::anyhow!(e));
                c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID});"))
                    .context("could not release the migration lock")?;
                ran.context("could not apply the PostgreSQL migrations")
            }
        }
    }

    /// Checks, applying no migration, that the database holds every migration of this build:
    /// for services that only read the Account API's database (they must never migrate it).
    /// It writes nothing and needs only `SELECT` on diesel's `__diesel_schema_migrations`
    /// (diesel's own pending-migration check would first create that table, which needs
    /// `CREATE` on the schema); a database never migrated, without that table, lacks them all.
    pub fn check_schema(&self) -> anyhow::Result<()> {
        let mut conn = self.connect_once()?;
        let (expected, exists_query) = match &conn {
            DbConnection::Sqlite(_) => (
                migration_versions::<diesel::sqlite::Sqlite>(&SQLITE_MIGRATIONS)?,
                "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '__diesel_schema_migrations'",
            ),
            DbConnection::Postgres(_) => (
                migration_versions::<diesel::pg::Pg>(&POSTGRES_MIGRATIONS)?,
                "SELECT count(*) AS n FROM pg_catalog.pg_class WHERE oid = to_regclass('__diesel_schema_migrations')",
            ),
        };
        let applied = (|| -> Result<Vec<String>, diesel::result::Error> {
            if diesel::sql_query(exists_query).get_result::<CountRow>(&mut conn)?.n == 0 {
                return Ok(Vec::new());
            }
            let rows: Vec<VersionRow> =
                diesel::sql_query("SELECT version FROM __diesel_schema_migrations").load(&mut conn)?;
            Ok(rows.into_iter().map(|r| r.version).collect())
        })()
        .with_context(|| format!("could not read the migrations applied to {}", self.target))?;
        let pending = expected.iter().any(|version| !applied.contains(version));
        anyhow::ensure!(
            !pending,
            "{} lacks migrations this build expects: run `account-api migrate` against it first",
            self.target
        );
        Ok(())
    }

    /// Connections in use and idle, for readiness and metrics.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections - state.idle_connections, state.idle_connections)
    }

    /// Whether the database answers a trivial query now.
    pub async fn ping(&self) -> bool {
        self.read(|conn| Ok(conn.batch_execute("SELECT 1")?)).await.is_ok()
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, RepoError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, RepoError> + Send + 'static,
    {
        self.on_blocking_thread(None, f).await
    }

    /// Runs `f` in a write transaction: all of it commits, or none of it. A transaction the
    /// database aborted for its own locking (a deadlock, a serialization failure) is run
    /// again, [`LOCKING_RETRIES`] times at most, so `f` must be safe to run again.
    /// On SQLite the transaction takes the write lock at its start (`BEGIN IMMEDIATE`), so
    /// concurrent writers (other processes too) queue on the busy timeout instead of
    /// failing with "locked".
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, RepoError>
    where
        T: Send + 'static,
        F: Fn(&mut DbConnection) -> Result<T, RepoError> + Send + 'static,
    {
        let gate = matches!(self.target, DatabaseTarget::Sqlite(_)).then(|| self.write_gate.clone());
        self.on_blocking_thread(gate, move |conn| {
            let mut retries = 0;
            loop {
                match transaction(conn, &f) {
                    Err(RepoError::Query(e)) if retries < LOCKING_RETRIES && aborted_for_locking(&e) => {
                        retries += 1;
                        tracing::info!(error = %e, retries, "write transaction aborted by the database's locking; retrying");
                    }
                    outcome => return outcome,
                }
            }
        })
        .await
    }

    async fn on_blocking_thread<T, F>(&self, gate: Option<Arc<Mutex<()>>>, f: F) -> Result<T, RepoError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, RepoError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = gate.as_ref().map(|g| g.lock().unwrap_or_else(PoisonError::into_inner));
            db.with_connection(f)
        })
        .await
        .map_err(|e| RepoError::Other(anyhow::Error::new(e).context("database task failed")))?
    }

    /// Runs `f` with a pooled connection on this thread, which must be one that may block.
    pub(crate) fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut DbConnection) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        let mut pooled = checkout(&self.pool)?;
        let outcome = f(&mut pooled.conn);
        pooled.last_used = Instant::now();
        if let Err(RepoError::Query(e)) = &outcome {
            pooled.lost = crate::repo_error::connection_closed(e);
        }
        outcome
    }
}

/// How many times a write aborted for the database's own locking is run again.
pub(crate) const LOCKING_RETRIES: u32 = 3;

fn transaction<T>(
    conn: &mut DbConnection,
    f: &impl Fn(&mut DbConnection) -> Result<T, RepoError>,
) -> Result<T, RepoError> {
    match conn {
        DbConnection::Postgres(_) => conn.transaction(f),
        DbConnection::Sqlite(_) => {
            conn.batch_execute("BEGIN IMMEDIATE")?;
            let outcome =
                f(conn).and_then(|value| conn.batch_execute("COMMIT").map(|()| value).map_err(RepoError::from));
            if outcome.is_err() {
                // Nothing to undo if BEGIN or COMMIT already ended it.
                let _ = conn.batch_execute("ROLLBACK");
            }
            outcome
        }
    }
}

/// Whether PostgreSQL aborted the transaction to resolve a deadlock (SQLSTATE 40P01, which
/// diesel does not name) or a serialization failure (40001): running it again may succeed.
fn aborted_for_locking(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        Error::DatabaseError(_, info) => info.message().starts_with("deadlock detected"),
        _ => false,
    }
}

/// A connection from the pool that answers: one idle for a while is tested first (a round
/// trip), and dropped if it has died; a new or busy one is taken as it is.
fn checkout(pool: &r2d2::Pool<ConnectionManager>) -> Result<r2d2::PooledConnection<ConnectionManager>, RepoError> {
    loop {
        let mut pooled = pool.get()?;
        if !pooled.needs_test() || pooled.conn.batch_execute("SELECT 1").is_ok() {
            return Ok(pooled);
        }
        pooled.lost = true;
    }
}

/// The versions of a backend's embedded migrations, as diesel records them once applied.
fn migration_versions<DB: diesel::backend::Backend>(source: &EmbeddedMigrations) -> anyhow::Result<Vec<String>>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let migrations = source.migrations().map_err(|e| anyhow::anyhow!(e)).context("could not list the migrations")?;
    Ok(migrations.iter().map(|m| m.name().version().to_string()).collect())
}

#[derive(diesel::QueryableByName)]
struct CountRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(diesel::QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

#[derive(Debug)]
struct LogPoolErrors;

impl r2d2::HandleError<diesel::ConnectionError> for LogPoolErrors {
    fn handle_error(&self, error: diesel::ConnectionError) {
        tracing::warn!(%error, "database connection failed");
    }
}
