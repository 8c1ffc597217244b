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
use crate::rows::{CredentialRow, ReadOrganizations};
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
    /// Reads one batch and answers it: [`answer`]. A field so that a test can count the
    /// batches or make one panic.
    answer_batch: fn(&Database, Vec<Read>),
}

impl std::fmt::Debug for CredentialReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialReads").finish_non_exhaustive()
    }
}

impl CredentialReads {
    pub(crate) fn new(db: Database) -> Self {
        Self { db, waiting: Mutex::new(Vec::new()), draining: AtomicBool::new(false), answer_batch: answer }
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
            let answered =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.answer_batch)(&self.db, batch)));
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
            let mut organizations = ReadOrganizations::new();
            let found: HashMap<String, Result<KeyCredential, String>> = rows
                .into_iter()
                .map(|row| {
                    let hash = row.key.key_hash.clone();
                    let credential = row.into_domain(&mut organizations).map(|(_, credential)| credential);
                    (hash, credential.map_err(|e| format!("{e:#}")))
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
/// first, at most `limit`, with their hashes: what the warm start loads. Each row is made a
/// credential as it is read, so the rows' own texts never pile up in memory beside the
/// credentials kept (a million of them would leave the heap fragmented); the credentials of
/// one organization share it.
pub(crate) fn recently_used(
    conn: &mut DbConnection,
    since: i64,
    limit: u32,
) -> Result<Vec<(KeyHash, KeyCredential)>, RepoError> {
    let mut organizations = ReadOrganizations::new();
    let mut credentials = Vec::new();
    let rows = credentials!()
        .filter(api_keys::last_used_at.ge(since))
        .order(api_keys::last_used_at.desc())
        .limit(i64::from(limit))
        .load_iter::<CredentialRow, diesel::connection::DefaultLoadingMode>(conn)?;
    for row in rows {
        credentials.push(row?.into_domain(&mut organizations)?);
    }
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::time::Duration;

    use futures_util::future::{join, join_all};
    use futures_util::FutureExt as _;

    use super::*;
    use crate::testing::TestDatabase;
    use crate::PoolOptions;

    /// Batched reads on a migrated SQLite file, answered by `answer_batch`.
    fn reads_with(answer_batch: fn(&Database, Vec<Read>)) -> (TestDatabase, Arc<CredentialReads>) {
        let test_db = TestDatabase::sqlite();
        let db = Database::new(test_db.target().clone(), &PoolOptions::for_machine());
        db.migrate().expect("migrated");
        (test_db, Arc::new(CredentialReads { answer_batch, ..CredentialReads::new(db) }))
    }

    /// A hash no key has.
    fn hash(n: u32) -> KeyHash {
        KeyHash::from_hex(&format!("{n:064x}")).expect("64 hex digits")
    }

    static BATCH_SIZES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

    fn counting(db: &Database, batch: Vec<Read>) {
        BATCH_SIZES.lock().unwrap_or_else(PoisonError::into_inner).push(batch.len());
        answer(db, batch);
    }

    /// The runtime's one blocking thread is busy until every read has been asked: the drain
    /// task the first read starts then finds all 32 waiting and answers them together.
    #[test]
    fn reads_waiting_together_are_answered_in_one_batch() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (_test_db, reads) = reads_with(counting);
        let answers = runtime.block_on(async {
            let (release_tx, release) = std::sync::mpsc::channel::<()>();
            let busy = tokio::task::spawn_blocking(move || release.recv());
            let hashes: Vec<KeyHash> = (0..32).map(hash).collect();
            // Polled after every read was asked.
            let release = async move { release_tx.send(()).expect("the busy task waits") };
            let (answers, ()) = join(join_all(hashes.iter().map(|h| reads.find(h))), release).await;
            busy.await.expect("joined").expect("released");
            answers
        });
        assert!(answers.iter().all(|a| matches!(a, Ok(None))), "each read gets its answer");
        assert_eq!(*BATCH_SIZES.lock().unwrap_or_else(PoisonError::into_inner), [32], "one batch for 32 reads");
    }

    /// Met twice by the first batch: once it is running, and once the test has queued
    /// another read behind it; then it panics.
    static IN_BATCH: Barrier = Barrier::new(2);
    static PANICKED: AtomicBool = AtomicBool::new(false);

    fn panicking_once(db: &Database, batch: Vec<Read>) {
        if !PANICKED.swap(true, Ordering::SeqCst) {
            IN_BATCH.wait();
            IN_BATCH.wait();
            panic!("a batch of credential reads that panics (the test's)");
        }
        answer(db, batch);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_panics_tells_its_readers_and_the_reads_queued_behind_it_are_answered() {
        let (_test_db, reads) = reads_with(panicking_once);
        let first = tokio::spawn({
            let reads = reads.clone();
            async move { reads.find(&hash(1)).await }
        });
        tokio::task::spawn_blocking(|| IN_BATCH.wait()).await.expect("the first batch runs");
        let second = hash(2);
        let mut queued = Box::pin(reads.find(&second));
        assert!((&mut queued).now_or_never().is_none(), "queued behind the running batch");
        tokio::task::spawn_blocking(|| IN_BATCH.wait()).await.expect("the first batch panics");
        let told = tokio::time::timeout(Duration::from_secs(10), first).await.expect("not left waiting");
        assert!(told.expect("joined").is_err(), "the panicked batch's reader is told it failed");
        let answered = tokio::time::timeout(Duration::from_secs(10), queued).await.expect("the queue is still served");
        assert!(matches!(answered, Ok(None)), "{answered:?}");
        let later = tokio::time::timeout(Duration::from_secs(10), reads.find(&hash(3))).await.expect("served");
        assert!(matches!(later, Ok(None)), "{later:?}");
    }

    /// A read asked on a runtime that is shutting down: its drain task is dropped unrun.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drain_task_that_never_runs_tells_its_reader_and_the_next_read_starts_one_again() {
        let (_test_db, reads) = reads_with(answer);
        let stopping = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("a runtime");
        let handle = stopping.handle().clone();
        stopping.shutdown_background();
        let told = {
            let _on_the_stopped_runtime = handle.enter();
            reads.find(&hash(1)).now_or_never()
        };
        assert!(matches!(told, Some(Err(_))), "the reader is told at once: {told:?}");
        let next = tokio::time::timeout(Duration::from_secs(10), reads.find(&hash(2))).await.expect("not stranded");
        assert!(matches!(next, Ok(None)), "{next:?}");
    }
}
