//! The change feed in SQL: writes publish rows into `cache_events` in their own
//! transaction; each instance polls the rows past the last it saw. A poll is one small
//! indexed query, the same on SQLite and PostgreSQL.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use account_domain::{Change, ChangeFeed, KeyHash, OrgId};
use anyhow::Context as _;
use async_trait::async_trait;
use diesel::prelude::*;
use time::OffsetDateTime;

use crate::connection::DbConnection;
use crate::database::Database;
use crate::repo_error::RepoError;
use crate::rows::to_micros;
use crate::schema::cache_events;

/// On PostgreSQL, ids come from a sequence when a row is inserted but become visible when
/// its transaction commits, so a lower id can appear after a higher one. A gap is waited
/// for this long before it is taken for a rolled-back transaction.
const GAP_PATIENCE: Duration = Duration::from_secs(10);
/// Rows read per poll at most; the rest come with the next poll.
const POLL_LIMIT: i64 = 1000;

/// Records a change in the caller's transaction.
pub(crate) fn publish_change(
    conn: &mut DbConnection,
    key_hash: Option<&str>,
    org_id: Option<&str>,
    at: OffsetDateTime,
) -> Result<(), RepoError> {
    diesel::insert_into(cache_events::table)
        .values((
            cache_events::key_hash.eq(key_hash),
            cache_events::org_id.eq(org_id),
            cache_events::created_at.eq(to_micros(at)),
        ))
        .execute(conn)?;
    Ok(())
}

#[derive(Debug)]
struct Cursor {
    /// Every id up to this one has been seen (or given up on).
    low_water: i32,
    /// Ids above `low_water` seen already.
    seen: BTreeSet<i32>,
    /// Since when the id after `low_water` is missing while later ones were seen.
    gap_since: Option<Instant>,
}

impl Cursor {
    fn advance(&mut self, now: Instant) {
        loop {
            let next = self.low_water + 1;
            if self.seen.remove(&next) {
                self.low_water = next;
                self.gap_since = None;
                continue;
            }
            let Some(&first) = self.seen.first() else {
                break;
            };
            let since = *self.gap_since.get_or_insert(now);
            if now.duration_since(since) < GAP_PATIENCE {
                break;
            }
            self.low_water = first - 1;
            self.gap_since = None;
        }
    }
}

/// Polls `cache_events` for the changes other instances (or this one) committed.
#[derive(Debug)]
pub struct SqlChangeFeed {
    db: Database,
    cursor: Mutex<Cursor>,
}

impl SqlChangeFeed {
    /// Starts after the newest change: a new instance's cache is empty, nothing to forget.
    pub async fn start(db: Database) -> anyhow::Result<Self> {
        let newest = db
            .read(|conn| {
                Ok(cache_events::table.select(diesel::dsl::max(cache_events::id)).first::<Option<i32>>(conn)?)
            })
            .await
            .map_err(|e| e.into_anyhow("could not read the change feed"))?
            .unwrap_or(0);
        Ok(Self { db, cursor: Mutex::new(Cursor { low_water: newest, seen: BTreeSet::new(), gap_since: None }) })
    }

    /// Deletes changes older than `age`: every instance has long applied them.
    pub async fn prune(&self, age: Duration, now: OffsetDateTime) -> anyhow::Result<usize> {
        let cutoff = to_micros(now - age);
        self.db
            .write(move |conn| {
                Ok(diesel::delete(cache_events::table.filter(cache_events::created_at.lt(cutoff))).execute(conn)?)
            })
            .await
            .map_err(|e| e.into_anyhow("could not prune the change feed"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ChangeFeed for SqlChangeFeed {
    async fn poll(&self) -> anyhow::Result<Vec<Change>> {
        let low_water = self.lock().low_water;
        let rows = self
            .db
            .read(move |conn| {
                Ok(cache_events::table
                    .filter(cache_events::id.gt(low_water))
                    .order(cache_events::id.asc())
                    .limit(POLL_LIMIT)
                    .select((cache_events::id, cache_events::key_hash, cache_events::org_id))
                    .load::<(i32, Option<String>, Option<String>)>(conn)?)
            })
            .await
            .map_err(|e| e.into_anyhow("could not poll the change feed"))?;
        let mut cursor = self.lock();
        let mut changes = Vec::new();
        for (id, key_hash, org_id) in rows {
            if id <= cursor.low_water || !cursor.seen.insert(id) {
                continue;
            }
            if let Some(hash) = key_hash {
                changes.push(Change::Key(
                    KeyHash::from_hex(&hash).map_err(|e| anyhow::anyhow!(e)).context("stored key hash")?,
                ));
            }
            if let Some(org) = org_id {
                changes.push(Change::Organization(OrgId::new(&org).context("stored organization id")?));
            }
        }
        cursor.advance(Instant::now());
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(low_water: i32) -> Cursor {
        Cursor { low_water, seen: BTreeSet::new(), gap_since: None }
    }

    #[test]
    fn contiguous_ids_advance_the_low_water_mark() {
        let mut c = cursor(4);
        c.seen.extend([5, 6, 7]);
        c.advance(Instant::now());
        assert_eq!((c.low_water, c.seen.len()), (7, 0));
    }

    #[test]
    fn a_gap_is_waited_for_then_given_up() {
        let start = Instant::now();
        let mut c = cursor(4);
        c.seen.extend([6, 7]);
        c.advance(start);
        assert_eq!(c.low_water, 4, "id 5 may still commit");
        c.advance(start + GAP_PATIENCE / 2);
        assert_eq!(c.low_water, 4);
        c.advance(start + GAP_PATIENCE + Duration::from_millis(1));
        assert_eq!(c.low_water, 7, "id 5 was rolled back");
    }

    #[test]
    fn a_late_id_filling_the_gap_is_taken() {
        let mut c = cursor(4);
        c.seen.extend([6]);
        c.advance(Instant::now());
        c.seen.insert(5);
        c.advance(Instant::now());
        assert_eq!(c.low_water, 6);
    }
}
