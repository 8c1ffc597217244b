//! Throwaway databases for tests: a fresh SQLite file in a temporary folder, or a fresh
//! PostgreSQL database that is dropped when the guard goes.
//!
//! PostgreSQL tests run when `TEST_POSTGRES_URL` names a server (an admin database URL such
//! as `postgres://postgres@127.0.0.1:5432/postgres`); with `REQUIRE_POSTGRES=1` a missing
//! URL fails the test instead of skipping it, so a green CI means both backends passed; a
//! skipped test says `SKIPPED <test name>` on stderr.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use crate::database_url::DatabaseTarget;

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    target: DatabaseTarget,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Folder(#[allow(dead_code)] tempfile::TempDir),
    DropDatabase { admin_url: String, name: String },
}

/// The backends the contract suites run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl TestDatabase {
    /// A database of `backend`, or `None` when PostgreSQL is not configured (and not required).
    pub fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => Self::postgres(),
        }
    }

    /// A new SQLite file in its own temporary folder.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        let target = DatabaseTarget::Sqlite(dir.path().join("test.db"));
        Self { target, cleanup: Cleanup::Folder(dir) }
    }

    /// A new database on the server `TEST_POSTGRES_URL` names.
    pub fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("REQUIRE_POSTGRES").map_or(true, |v| v.is_empty() || v == "0"),
                "REQUIRE_POSTGRES is set but TEST_POSTGRES_URL is not: PostgreSQL tests may not be skipped"
            );
            say_skipped();
            return None;
        };
        let name = format!("account_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::establish(&admin_url).expect("connect to TEST_POSTGRES_URL");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create the test database");
        let target = DatabaseTarget::Postgres(with_database(&admin_url, &name));
        Some(Self { target, cleanup: Cleanup::DropDatabase { admin_url, name } })
    }

    pub fn target(&self) -> &DatabaseTarget {
        &self.target
    }

    /// Applies only the migrations older than `version` (a migration folder's date, such as
    /// `2024-01-04-000000`): the database as an older release left it, for a test of the
    /// migrations after it with rows already present. Returns how many ran.
    pub fn migrate_before(&self, version: &str) -> anyhow::Result<usize> {
        use anyhow::Context as _;
        use diesel::migration::MigrationSource;
        use diesel_migrations::MigrationHarness;

        fn run_before<C: MigrationHarness<C::Backend> + Connection>(
            conn: &mut C,
            source: &impl MigrationSource<C::Backend>,
            before: &str,
        ) -> anyhow::Result<usize> {
            let digits = |v: &str| v.chars().filter(char::is_ascii_digit).collect::<String>();
            // Also creates diesel's table of applied migrations.
            let applied = conn.applied_migrations().map_err(|e| anyhow::anyhow!(e))?;
            let applied: Vec<String> = applied.iter().map(|v| digits(&v.to_string())).collect();
            let mut ran = 0;
            let migrations = source.migrations().map_err(|e| anyhow::anyhow!(e))?;
            for migration in &migrations {
                let version = digits(&migration.name().version().to_string());
                if version < digits(before) && !applied.contains(&version) {
                    conn.run_migration(&**migration).map_err(|e| anyhow::anyhow!(e))?;
                    ran += 1;
                }
            }
            Ok(ran)
        }

        match &self.target {
            DatabaseTarget::Sqlite(path) => {
                let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy())
                    .with_context(|| format!("could not open {}", path.display()))?;
                run_before(&mut conn, &crate::database::SQLITE_MIGRATIONS, version)
            }
            DatabaseTarget::Postgres(url) => {
                let mut conn = PgConnection::establish(url).context("could not connect to the test database")?;
                run_before(&mut conn, &crate::database::POSTGRES_MIGRATIONS, version)
            }
        }
    }

    /// The URL to hand to the server as `DATABASE_URL`.
    pub fn url(&self) -> String {
        match &self.target {
            DatabaseTarget::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseTarget::Postgres(url) => url.clone(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::DropDatabase { admin_url, name } = &self.cleanup {
            // FORCE ends the connections a pool may still hold.
            let dropped = PgConnection::establish(admin_url).map_err(|e| e.to_string()).and_then(|mut c| {
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).map_err(|e| e.to_string())
            });
            if let Err(e) = dropped {
                eprintln!("could not drop test database {name}: {e}");
            }
        }
    }
}

/// Writes a usage batch on the caller's own connection, inside whatever transaction it has
/// open, as [`crate::SqlKeyRepository::record_usage`] does in its own: for tests that hold
/// the write's transaction open while another write races it.
pub fn record_usage_on(
    conn: &mut crate::DbConnection,
    batch: &account_domain::UsageBatch,
) -> anyhow::Result<account_domain::UsageRecorded> {
    crate::usage_store::record(conn, batch, time::OffsetDateTime::now_utc()).map_err(anyhow::Error::new)
}

/// Says on stderr that the running test skipped PostgreSQL, so that a run without a server
/// is not read as a pass. Written to the stream itself: the test harness captures `eprintln!`
/// and shows it only for failures. libtest names each test's thread after the test.
fn say_skipped() {
    use std::io::Write as _;
    let thread = std::thread::current();
    let test = thread.name().filter(|name| *name != "main").unwrap_or("a test (unnamed thread)");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: PostgreSQL not tested (TEST_POSTGRES_URL is not set)");
}

/// `url` with its database name replaced by `name`, keeping any query string.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The service built as the server builds it ([`crate::Assembly`], role server, no
/// background task) on `db`, with one organization signed up, and that organization's key.
/// For benchmarks: the cache (when `cached`) is trusted for an hour, so they measure the
/// hit, not the syncer; without a cache every authentication reads the store, as the
/// server does with `CACHE_MAX_KEYS=0`.
pub async fn built_with_a_key(db: &TestDatabase, cached: bool) -> (crate::Assembly, String) {
    use account_domain::{EmailAddress, OrgName, RequestMeta, SignupRequest};

    let mut settings = crate::Settings::new(db.target().clone());
    settings.cache.max_staleness = std::time::Duration::from_secs(3600);
    settings.cache.max_keys = if cached { 10_000 } else { 0 };
    let assembly = crate::Assembly::build(settings, crate::Role::Server).await.expect("built");
    let service = assembly.service();
    let request = SignupRequest::new(
        OrgName::new("Bench").expect("valid"),
        EmailAddress::new("bench@acme.test").expect("valid"),
        None,
    );
    let signup = service.signup(request, &RequestMeta::default()).await.expect("signed up");
    let key = signup.key.plaintext.expose().to_owned();
    service.authenticate(key.as_bytes(), None).await.expect("warms the cache");
    (assembly, key)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
        assert_eq!(with_database("postgresql://u@h/db?sslmode=disable", "t1"), "postgresql://u@h/t1?sslmode=disable");
    }
}
