//! Credential reads in batches: one thread takes every read waiting and answers them all
//! with one connection checkout, one switch of threads and, on PostgreSQL, one round trip,
//! where each request would otherwise pay its own (docs/performance.md, "The cold path").

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::OnceLock;

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

/// The reader of one database; its thread starts with the first read and ends with this.
#[derive(Debug)]
pub(crate) struct CredentialReads {
    db: Database,
    queue: OnceLock<mpsc::Sender<Read>>,
}

impl CredentialReads {
    pub(crate) fn new(db: Database) -> Self {
        Self { db, queue: OnceLock::new() }
    }

    /// The key with this hash, with its organization and plan; `None` when no key has it.
    pub(crate) async fn find(&self, hash: &KeyHash) -> StoreResult<Option<KeyCredential>> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Failed(anyhow::anyhow!("the credential reader stopped"));
        self.queue().send(Read { hash_hex: hash.to_hex(), reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    fn queue(&self) -> &mpsc::Sender<Read> {
        self.queue.get_or_init(|| {
            let (queue, reads) = mpsc::channel();
            let db = self.db.clone();
            std::thread::Builder::new()
                .name("credential-reads".into())
                .spawn(move || serve(&db, &reads))
                .expect("a thread for credential reads");
            queue
        })
    }
}

/// Answers reads until every sender is gone: each wake takes all that wait.
fn serve(db: &Database, reads: &mpsc::Receiver<Read>) {
    while let Ok(first) = reads.recv() {
        let mut batch = vec![first];
        batch.extend(reads.try_iter().take(MAX_BATCH - 1));
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
                        Some(Err(cause)) => {
                            Err(StoreError::Failed(anyhow::anyhow!("could not look the key up: {cause}")))
                        }
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
}

/// The rows of these hashes: on SQLite one cached statement run for each (no round
/// trip to save), on PostgreSQL one query for all. The query is typed for each backend's own
/// connection: the MultiConnection's wrapper builds the SQL text again on every run.
fn read_rows(conn: &mut DbConnection, hashes: &[&str]) -> Result<Vec<CredentialRow>, RepoError> {
    macro_rules! credentials {
        () => {
            api_keys::table.inner_join(organizations::table.inner_join(plans::table)).select(CredentialRow::as_select())
        };
    }
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
