//! Credential reads in batches: a task on the blocking pool takes every read waiting and
//! answers them all with one connection checkout and, on PostgreSQL, one round trip, where
//! each request would otherwise pay its own (docs/performance.md, "The cold path"). While
//! it works, new reads queue for it instead of starting tasks of their own. The query of
//! credentials is written here once, for these reads and for the warm start's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use account_domain::{KeyCredential, KeyHash, StoreError, StoreResult};
use diesel::prelude::*;
use tokio::sync::oneshot;

use crate::connection::DbConnection;
use crate::database::Database;
use crate::repo_error::RepoError;
use crate::rows::CredentialRow;
use crate::schema::{api_keys, organizations, plans};
use crate::unique_row::unique_row;

/// Reads answered together at most: bounds one PostgreSQL query's array.
const MAX_BATCH: usize = 128;

type Answer = Result<Option<KeyCredential>, StoreError>;

struct Read {
    hash_hex: String,
    reply: oneshot::Sender<Answer>,
}

/// The batched reads of one database.
pub(crate) struct CredentialReads {
    db: Database,
    waiting: Mutex<Vec<Read>>,
    /// A task is answering the waiting reads: a new read only joins the queue.
    draining: AtomicBool,
}

impl std::fmt::Debug for CredentialReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialReads").finish_non_exhaustive()
    }
}

impl CredentialReads {
    pub(crate) fn new(db: Database) -> Self {
        Self { db, waiting: Mutex::new(Vec::new()), draining: AtomicBool::new(false) }
    }

    /// The key with this hash, with its organization and plan; `None` when no key has it.
    pub(crate) async fn find(self: &Arc<Self>, hash: &KeyHash) -> StoreResult<Option<KeyCredential>> {
        let (reply, answer) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).push(Read { hash_hex: hash.to_hex(), reply });
        if !self.draining.swap(true, Ordering::AcqRel) {
            let task = Drainer { reads: self.clone(), ran: false };
            tokio::task::spawn_blocking(move || {
                let mut task = task;
                task.ran = true;
                task.reads.drain();
            });
        }
        answer.await.map_err(|_| StoreError::Failed(anyhow::anyhow!("the credential read was dropped")))?
    }

    /// Answers batches until none waits. A read queued just as the queue was found empty
    /// is not stranded: the queue is looked at again after saying so.
    fn drain(&self) {
        loop {
            let batch: Vec<Read> = {
                let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                let take = waiting.len().min(MAX_BATCH);
                waiting.drain(..take).collect()
            };
            if batch.is_empty() {
                self.draining.store(false, Ordering::Release);
                let more = !self.waiting.lock().unwrap_or_else(PoisonError::into_inner).is_empty();
                if more && !self.draining.swap(true, Ordering::AcqRel) {
                    continue;
                }
                return;
            }
            // A panic must not leave `draining` set with reads queued: its batch's readers
            // are told (their replies dropped), and the loop goes on.
            let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(&self.db, batch)));
            if answered.is_err() {
                tracing::error!("a batch of credential reads panicked");
            }
        }
    }
}

/// The blocking task that drains the queue. If it never runs (the runtime is shutting
/// down), dropping it tells the waiting readers (their replies dropped) and lets the next
/// read start a task again.
struct Drainer {
    reads: Arc<CredentialReads>,
    ran: bool,
}

impl Drop for Drainer {
    fn drop(&mut self) {
        if !self.ran {
            self.reads.waiting.lock().unwrap_or_else(PoisonError::into_inner).clear();
            self.reads.draining.store(false, Ordering::Release);
        }
    }
}

/// Reads one batch and gives each read its answer.
fn answer(db: &Database, batch: Vec<Read>) {
    let hashes: Vec<&str> = batch.iter().map(|r| r.hash_hex.as_str()).collect();
    match db.with_connection(|conn| read_rows(conn, &hashes)) {
        Ok(rows) => {
            // A hash may be asked for more than once in a batch: each read gets its answer.
            let found: HashMap<String, Result<KeyCredential, String>> = rows
                .into_iter()
                .map(|row| {
                    let hash = row.key.key_hash.clone();
                    (hash, row.into_domain().map(|(_, credential)| credential).map_err(|e| format!("{e:#}")))
                })
                .collect();
            for read in batch {
                let answer = match found.get(&read.hash_hex) {
                    None => Ok(None),
                    Some(Ok(credential)) => Ok(Some(credential.clone())),
                    Some(Err(cause)) => Err(StoreError::Failed(anyhow::anyhow!("could not look the key up: {cause}"))),
                };
                // A request that gave up no longer waits: nothing to tell it.
                let _ = read.reply.send(answer);
            }
        }
        Err(e) => {
            let failure = e.into_store_error("could not look the key up");
            let unavailable = matches!(failure, StoreError::Unavailable(_));
            let message = format!("{failure:#}");
            for read in batch {
                let cause = anyhow::anyhow!("{message}");
                let error = if unavailable { StoreError::Unavailable(cause) } else { StoreError::Failed(cause) };
                let _ = read.reply.send(Err(error));
            }
        }
    }
}

/// Keys joined to their organization and plan: the one query of credentials. A macro, so
/// that each use is typed for the connection it runs on.
macro_rules! credentials {
    () => {
        api_keys::table.inner_join(organizations::table.inner_join(plans::table)).select(CredentialRow::as_select())
    };
}

/// The rows of these hashes: on SQLite one cached statement run for each (no round
/// trip to save), on PostgreSQL one query for all. The query is typed for each backend's own
/// connection: the MultiConnection's wrapper builds the SQL text again on every run.
fn read_rows(conn: &mut DbConnection, hashes: &[&str]) -> Result<Vec<CredentialRow>, RepoError> {
    let rows: Vec<CredentialRow> = match conn {
        DbConnection::Sqlite(sqlite) => {
            let mut rows = Vec::with_capacity(hashes.len());
            for hash in hashes {
                rows.extend(unique_row(credentials!().filter(api_keys::key_hash.eq(hash)), sqlite)?);
            }
            rows
        }
        DbConnection::Postgres(pg) => credentials!().filter(api_keys::key_hash.eq_any(hashes)).load(pg)?,
    };
    Ok(rows)
}

/// The credentials of the keys last used at or after `since` (microseconds), most recent
/// first, at most `limit`, with their hashes: what the warm start loads.
pub(crate) fn recently_used(
    conn: &mut DbConnection,
    since: i64,
    limit: u32,
) -> Result<Vec<(KeyHash, KeyCredential)>, RepoError> {
    let rows: Vec<CredentialRow> = credentials!()
        .filter(api_keys::last_used_at.ge(since))
        .order(api_keys::last_used_at.desc())
        .limit(i64::from(limit))
        .load(conn)?;
    Ok(rows.into_iter().map(CredentialRow::into_domain).collect::<anyhow::Result<Vec<_>>>()?)
}
