//! The change feed in SQL: writes publish rows into `cache_events` in their own
//! transaction; each instance polls for the rows it has not read yet. Nothing rests on a
//! timeout: on SQLite one writer at a time commits ids in order, so "past the last id read"
//! is exact; on PostgreSQL ids are taken at insert but seen at commit, so each row carries
//! its transaction's id and a poll reads exactly the rows its previous snapshot could not
//! see (written by transactions then running, or begun since), however late they commit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use account_domain::{Change, ChangeFeed, FeedPoll, KeyHash, OrgId};
use anyhow::Context as _;
use async_trait::async_trait;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text};

use crate::connection::DbConnection;
use crate::database::Database;
use crate::repo_error::RepoError;
use crate::schema::cache_events;

/// SQLite rows read per poll at most; a full page means "not caught up yet, poll again".
const SQLITE_PAGE: i64 = 1000;
/// PostgreSQL rows one poll may hold; beyond, the poll reports them missed (the cache is
/// cleared, which is always safe) instead of holding them all in memory.
const POSTGRES_MAX_ROWS: i64 = 50_000;

/// The database's clock in Unix microseconds, as `cache_events.created_at` holds it: rows are
/// stamped and pruned by it, so no instance's clock (an hour ahead, say) decides when a
/// change is old enough to go.
const PG_NOW_MICROS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)";
const SQLITE_NOW_MICROS: &str = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

/// Records, in the caller's transaction, a change of the key with `key_hash`, or of the
/// organization `org_id`; with neither, a change every cached credential must forget
/// ([`Change::Everything`]). The row is stamped by the database's clock, not the writer's.
pub(crate) fn publish_change(
    conn: &mut DbConnection,
    key_hash: Option<&str>,
    org_id: Option<&str>,
) -> Result<(), RepoError> {
    let row = |now: &'static str| {
        diesel::insert_into(cache_events::table).values((
            cache_events::key_hash.eq(key_hash),
            cache_events::org_id.eq(org_id),
            cache_events::created_at.eq(diesel::dsl::sql::<BigInt>(now)),
        ))
    };
    match conn {
        DbConnection::Postgres(pg) => row(PG_NOW_MICROS).execute(pg)?,
        DbConnection::Sqlite(lite) => row(SQLITE_NOW_MICROS).execute(lite)?,
    };
    Ok(())
}

/// Where the next poll starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    /// SQLite: every row up to this id has been read.
    Id(i64),
    /// PostgreSQL: the previous poll's snapshot. A row it could not see was written by a
    /// transaction it lists as running, or by one that began after it (`xid >= xmax`).
    Snapshot(Snapshot),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    xmax: i64,
    running: Vec<i64>,
}

impl Snapshot {
    /// Parses `pg_current_snapshot()` as text: `xmin:xmax:xip,xip,...`.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts = text.trim().split(':');
        let (Some(_xmin), Some(xmax), Some(xip)) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("unexpected snapshot {text:?}");
        };
        let running = xip
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<i64>, _>>()
            .with_context(|| format!("unexpected snapshot {text:?}"))?;
        Ok(Self { xmax: xmax.parse().with_context(|| format!("unexpected snapshot {text:?}"))?, running })
    }
}

#[derive(Debug, QueryableByName)]
struct SnapshotRow {
    #[diesel(sql_type = Text)]
    snapshot: String,
}

#[derive(Debug, QueryableByName)]
struct FeedRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    key_hash: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    org_id: Option<String>,
}

/// A PostgreSQL poll's row: the snapshot, and a change if there is one.
#[derive(Debug, QueryableByName)]
struct SnapshotAndRow {
    #[diesel(sql_type = Text)]
    snapshot: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    key_hash: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    org_id: Option<String>,
}

#[derive(Debug)]
struct FeedState {
    cursor: Cursor,
    /// When the last successful poll began; `None` before the first.
    last_read: Option<Instant>,
}

/// Polls `cache_events` for the changes other instances (or this one) committed.
#[derive(Debug)]
pub struct SqlChangeFeed {
    db: Database,
    /// How long rows are kept ([`Self::prune`]): an instance away for longer may have
    /// missed some, and says so.
    retention: Duration,
    state: Mutex<FeedState>,
}

impl SqlChangeFeed {
    /// How long changes are kept unless told otherwise.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);

    /// Starts at the feed's present: a new instance's cache is empty, nothing to forget.
    /// On PostgreSQL the present is a snapshot, so a change still being committed now is
    /// read by a later poll.
    pub async fn start(db: Database) -> account_domain::StoreResult<Self> {
        Self::start_with_retention(db, Self::DEFAULT_RETENTION).await
    }

    pub async fn start_with_retention(db: Database, retention: Duration) -> account_domain::StoreResult<Self> {
        let cursor = db
            .read(|conn| match conn {
                DbConnection::Postgres(_) => Ok(Cursor::Snapshot(current_snapshot(conn)?)),
                DbConnection::Sqlite(_) => Ok(Cursor::Id(
                    cache_events::table
                        .select(diesel::dsl::max(cache_events::id))
                        .first::<Option<i64>>(conn)?
                        .unwrap_or(0),
                )),
            })
            .await
            .map_err(|e| e.into_store_error("could not read the change feed"))?;
        Ok(Self { db, retention, state: Mutex::new(FeedState { cursor, last_read: None }) })
    }

    /// Deletes changes older than the retention by the database's clock (the one that
    /// stamped them): every instance has long applied them (one that has not says it may
    /// have missed some). Not cut by the statement timeout.
    pub async fn prune(&self) -> account_domain::StoreResult<usize> {
        let retention = i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX);
        self.db
            .write(move |conn| {
                let older =
                    |now: &'static str| cache_events::created_at.le(diesel::dsl::sql::<BigInt>(now) - retention);
                Ok(match conn {
                    DbConnection::Postgres(pg) => {
                        pg.batch_execute("SET LOCAL statement_timeout = 0")?;
                        diesel::delete(cache_events::table.filter(older(PG_NOW_MICROS))).execute(pg)?
                    }
                    DbConnection::Sqlite(lite) => {
                        diesel::delete(cache_events::table.filter(older(SQLITE_NOW_MICROS))).execute(lite)?
                    }
                })
            })
            .await
            .map_err(|e| e.into_store_error("could not prune the change feed"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The snapshot this connection sees now.
fn current_snapshot(conn: &mut DbConnection) -> Result<Snapshot, RepoError> {
    let row: SnapshotRow = diesel::sql_query("SELECT pg_current_snapshot()::text AS snapshot").get_result(conn)?;
    Ok(Snapshot::parse(&row.snapshot)?)
}

/// One poll's rows and where the next one starts.
struct Read {
    rows: Vec<FeedRow>,
    next: Cursor,
    caught_up: bool,
    overflow: bool,
}

fn read_after(conn: &mut DbConnection, cursor: &Cursor) -> Result<Read, RepoError> {
    match cursor {
        Cursor::Id(after) => {
            let rows: Vec<FeedRow> = cache_events::table
                .filter(cache_events::id.gt(after))
                .order(cache_events::id.asc())
                .limit(SQLITE_PAGE)
                .select((cache_events::id, cache_events::key_hash, cache_events::org_id))
                .load::<(i64, Option<String>, Option<String>)>(conn)?
                .into_iter()
                .map(|(id, key_hash, org_id)| FeedRow { id, key_hash, org_id })
                .collect();
            let caught_up = rows.len() < SQLITE_PAGE as usize;
            let next = Cursor::Id(rows.last().map_or(*after, |r| r.id));
            Ok(Read { rows, next, caught_up, overflow: false })
        }
        Cursor::Snapshot(previous) => {
            let DbConnection::Postgres(conn) = conn else {
                return Err(anyhow::anyhow!("a PostgreSQL feed cursor on another backend").into());
            };
            // One statement, one round trip: `pg_current_snapshot()` is the statement's own
            // snapshot, the one its read sees through, so the rows it could not see are
            // exactly those the next poll reads. With no row to read, one row carries the
            // snapshot alone.
            let read: Vec<SnapshotAndRow> = diesel::sql_query(
                "SELECT s.snapshot::text AS snapshot, e.id, e.key_hash, e.org_id \
                 FROM (SELECT pg_current_snapshot() AS snapshot) s \
                 LEFT JOIN LATERAL (SELECT id, key_hash, org_id FROM cache_events \
                     WHERE xid >= $1 OR xid = ANY($2) ORDER BY xid, id LIMIT $3) e ON TRUE",
            )
            .bind::<BigInt, _>(previous.xmax)
            .bind::<Array<BigInt>, _>(&previous.running)
            .bind::<BigInt, _>(POSTGRES_MAX_ROWS + 1)
            .load(conn)?;
            let snapshot = Snapshot::parse(&read.first().context("the poll returned no snapshot")?.snapshot)?;
            let mut rows: Vec<FeedRow> = read
                .into_iter()
                .filter_map(|r| Some(FeedRow { id: r.id?, key_hash: r.key_hash, org_id: r.org_id }))
                .collect();
            let overflow = rows.len() > POSTGRES_MAX_ROWS as usize;
            if overflow {
                rows.clear();
            }
            Ok(Read { rows, next: Cursor::Snapshot(snapshot), caught_up: true, overflow })
        }
    }
}

#[async_trait]
impl ChangeFeed for SqlChangeFeed {
    async fn poll(&self) -> account_domain::StoreResult<FeedPoll> {
        let began = Instant::now();
        let (cursor, last_read) = {
            let state = self.lock();
            (state.cursor.clone(), state.last_read)
        };
        let read = self
            .db
            .read(move |conn| read_after(conn, &cursor))
            .await
            .map_err(|e| e.into_store_error("could not poll the change feed"))?;
        // The first poll, or one after an outage long enough for rows to have been pruned
        // unread, cannot vouch for what came before it.
        let mut missed = read.overflow || last_read.is_none_or(|at| began.duration_since(at) > self.retention / 2);
        let mut changes = Vec::with_capacity(read.rows.len());
        for row in &read.rows {
            match parse_row(row) {
                Ok(parsed) => changes.extend(parsed),
                Err(e) => {
                    // Logged by id only; the rest of the batch is applied, the cache cleared.
                    tracing::warn!(id = row.id, error = format!("{e:#}"), "unreadable change feed row");
                    missed = true;
                }
            }
        }
        let mut state = self.lock();
        state.cursor = read.next;
        state.last_read = Some(began);
        Ok(FeedPoll { changes, caught_up: read.caught_up, missed })
    }
}

fn parse_row(row: &FeedRow) -> anyhow::Result<Vec<Change>> {
    let mut changes = Vec::with_capacity(1);
    if let Some(hash) = &row.key_hash {
        changes.push(Change::Key(KeyHash::from_hex(hash).map_err(|e| anyhow::anyhow!(e)).context("stored key hash")?));
    }
    if let Some(org) = &row.org_id {
        changes.push(Change::Organization(OrgId::new(org).context("stored organization id")?));
    }
    if changes.is_empty() {
        // Neither a key nor an organization: a change that concerns every credential.
        changes.push(Change::Everything);
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_read_with_and_without_running_transactions() {
        assert_eq!(Snapshot::parse("10:12:").expect("valid"), Snapshot { xmax: 12, running: vec![] });
        assert_eq!(Snapshot::parse("10:15:10,13").expect("valid"), Snapshot { xmax: 15, running: vec![10, 13] });
        assert!(Snapshot::parse("garbage").is_err());
    }
}
