//! Concurrent cache misses for one key share one store read: after a deploy, a client's 32
//! connections cost one lookup, not 32. A request joins only a read begun at the cache
//! generation it saw, so a read that began before a change applied here never answers a
//! request that arrived after it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{FutureExt, Shared, WeakShared};

use crate::model::KeyHash;
use crate::ports::{KeyCredential, KeyRepository, StoreError, StoreResult};

type Found = Result<Option<Arc<KeyCredential>>, Arc<StoreError>>;
type Read = Pin<Box<dyn Future<Output = Found> + Send>>;
/// The reads in flight. Held weakly: a read every waiter gave up on is dropped, and its
/// entry with it.
type Flights = Mutex<HashMap<KeyHash, (u64, WeakShared<Read>)>>;

#[derive(Default)]
pub(crate) struct MergedReads {
    flights: Arc<Flights>,
    /// Reads of the store begun (merged requests count once).
    pub(crate) reads: AtomicU64,
}

/// Removes its flight's entry when the read ends or is dropped, unless a newer one replaced it.
struct Landing {
    flights: Arc<Flights>,
    hash: KeyHash,
    generation: u64,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if flights.get(&self.hash).is_some_and(|(g, _)| *g == self.generation) {
            flights.remove(&self.hash);
        }
    }
}

impl MergedReads {
    /// The credential of `hash`, read once for every request that asks at `generation`
    /// while the read is in flight.
    pub(crate) async fn find(
        &self,
        keys: &Arc<dyn KeyRepository>,
        hash: KeyHash,
        generation: u64,
    ) -> StoreResult<Option<Arc<KeyCredential>>> {
        let read = {
            let mut flights = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let joined = flights.get(&hash).filter(|(g, _)| *g == generation).and_then(|(_, weak)| weak.upgrade());
            match joined {
                Some(read) => read,
                None => {
                    self.reads.fetch_add(1, Ordering::Relaxed);
                    let (keys, landing) = (keys.clone(), Landing { flights: self.flights.clone(), hash, generation });
                    let read: Shared<Read> = async move {
                        let _landing = landing;
                        keys.find_credential(&hash).await.map(|found| found.map(Arc::new)).map_err(Arc::new)
                    }
                    .boxed()
                    .shared();
                    if let Some(weak) = read.downgrade() {
                        flights.insert(hash, (generation, weak));
                    }
                    read
                }
            }
        };
        read.await.map_err(|e| match &*e {
            StoreError::Unavailable(cause) => StoreError::Unavailable(anyhow::anyhow!("{cause:#}")),
            StoreError::Failed(cause) => StoreError::Failed(anyhow::anyhow!("{cause:#}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;

    use crate::service::test_support::*;

    fn presented() -> (String, KeyHash) {
        let key = PlaintextKey::assemble(Environment::Live, &secret_body());
        (key.expose().to_owned(), key.hash())
    }

    /// A feed that reports a change of `hash` on its second poll, and nothing else.
    fn feed_changing_on_second_poll(hash: KeyHash) -> MockChangeFeed {
        let polls = AtomicUsize::new(0);
        let mut feed = MockChangeFeed::new();
        feed.expect_poll().returning(move || {
            let changes = if polls.fetch_add(1, Ordering::SeqCst) == 1 { vec![Change::Key(hash)] } else { vec![] };
            Ok(FeedPoll { changes, caught_up: true, missed: false })
        });
        feed
    }

    fn empty_cache() -> MockCredentialCache {
        let mut cache = MockCredentialCache::new();
        cache.expect_get().returning(|_, _| None);
        cache.expect_put().return_const(());
        cache.expect_forget().return_const(());
        cache
    }

    /// A store whose credential reads all wait at a gate the test opens, counted as they
    /// begin. Only `find_credential` is used by these tests.
    struct GatedStore {
        gate: tokio::sync::Semaphore,
        reads: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl KeyRepository for GatedStore {
        async fn find_credential(&self, _: &KeyHash) -> StoreResult<Option<KeyCredential>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            drop(self.gate.acquire().await.expect("the gate is never closed"));
            Ok(Some(credential()))
        }
        async fn insert_key(
            &self,
            _: &OrgId,
            _: &Actor,
            _: KeyWriteDecision<NewApiKey>,
            _: u32,
            _: &AuditRecord,
        ) -> Result<ApiKey, KeyOpError> {
            unreachable!("not used by these tests")
        }
        async fn find_key(&self, _: &OrgId, _: &KeyId) -> StoreResult<Option<ApiKey>> {
            unreachable!("not used by these tests")
        }
        async fn update_key(
            &self,
            _: &OrgId,
            _: &KeyId,
            _: &KeyChanges,
            _: &Actor,
            _: KeyWriteDecision<()>,
            _: &[AuditRecord],
        ) -> Result<ApiKey, KeyOpError> {
            unreachable!("not used by these tests")
        }
        async fn roll_key(
            &self,
            _: &OrgId,
            _: &KeyId,
            _: &Actor,
            _: KeyWriteDecision<NewApiKey>,
            _: time::OffsetDateTime,
            _: u32,
            _: &[AuditRecord],
        ) -> Result<ApiKey, KeyOpError> {
            unreachable!("not used by these tests")
        }
        async fn revoke_leaked(&self, _: &[KeyHash], _: time::OffsetDateTime, _: &RequestMeta) -> StoreResult<usize> {
            unreachable!("not used by these tests")
        }
        async fn list_keys(&self, _: &OrgId) -> StoreResult<Vec<ApiKey>> {
            unreachable!("not used by these tests")
        }
        async fn revoke_key(
            &self,
            _: &OrgId,
            _: &KeyId,
            _: time::OffsetDateTime,
            _: &Actor,
            _: KeyWriteDecision<()>,
            _: &AuditRecord,
        ) -> Result<ApiKey, KeyOpError> {
            unreachable!("not used by these tests")
        }
        async fn recently_used_credentials(
            &self,
            _: time::OffsetDateTime,
            _: u32,
        ) -> StoreResult<Vec<(KeyHash, KeyCredential)>> {
            unreachable!("not used by these tests")
        }
        async fn record_usage(&self, _: &UsageBatch) -> StoreResult<UsageRecorded> {
            unreachable!("not used by these tests")
        }
        async fn usage_of(&self, _: &OrgId, _: time::Date, _: time::Date) -> StoreResult<Vec<KeyUsageRow>> {
            unreachable!("not used by these tests")
        }
        async fn monthly_usage(&self, _: time::Date, _: time::Date) -> StoreResult<Vec<OrganizationMonth>> {
            unreachable!("not used by these tests")
        }
        async fn prune_usage(&self, _: time::Date) -> StoreResult<usize> {
            unreachable!("not used by these tests")
        }
        async fn valid_uses_since(&self, _: &[OrgId], _: time::Date) -> StoreResult<Vec<ValidUses>> {
            unreachable!("not used by these tests")
        }
    }

    /// 32 requests for one key the cache does not hold, each polled once (in one task, in
    /// turn) before the store's read may finish: they share one read. No database: the
    /// black-box test of the same needs PostgreSQL to hold the read back.
    #[tokio::test]
    async fn thirty_two_concurrent_misses_for_one_key_read_the_store_once() {
        let (key, hash) = presented();
        let store = Arc::new(GatedStore { gate: tokio::sync::Semaphore::new(0), reads: AtomicUsize::new(0) });
        let service = Ports::new().service_over(store.clone(), empty_cache(), feed_changing_on_second_poll(hash));
        service.sync_changes().await.expect("synced");

        let requests = futures_util::future::join_all((0..32).map(|_| service.authenticate(key.as_bytes(), None)));
        // Polled after every request was: all of them are waiting by then.
        let open = async { store.gate.add_permits(32) };
        let (answers, ()) = futures_util::future::join(requests, open).await;
        assert!(answers.iter().all(Result::is_ok), "every request is answered");
        assert_eq!(store.reads.load(Ordering::SeqCst), 1, "32 concurrent misses for one key read the store once");
        assert_eq!(service.credential_store_reads(), 1);
    }

    /// The first read of the store is held open (released after half a second whatever
    /// happens, so that a wrong join fails instead of hanging); a change is applied
    /// meanwhile; the request after it must read the store itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_begun_before_a_change_does_not_answer_a_request_after_it() {
        let (key, hash) = presented();
        let (started_tx, started) = mpsc::channel::<()>();
        let (release_tx, release) = mpsc::channel::<()>();
        let (started_tx, release) = (Mutex::new(started_tx), Mutex::new(release));
        let reads = Arc::new(AtomicUsize::new(0));
        let mut ports = Ports::new();
        let counted = reads.clone();
        ports.keys.expect_find_credential().returning(move |_| {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                started_tx.lock().expect("sender").send(()).expect("told");
                let _ = release.lock().expect("receiver").recv_timeout(Duration::from_secs(5));
            }
            Ok(Some(credential()))
        });
        let service = ports.service_with_cache(empty_cache(), feed_changing_on_second_poll(hash));
        service.sync_changes().await.expect("synced");

        let first = {
            let (service, key) = (service.clone(), key.clone());
            tokio::spawn(async move { service.authenticate(key.as_bytes(), None).await.is_ok() })
        };
        tokio::task::spawn_blocking(move || started.recv().expect("the first read began")).await.expect("joined");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let _ = release_tx.send(());
        });
        assert_eq!(service.sync_changes().await.expect("synced"), 1, "the change is applied");
        assert!(service.authenticate(key.as_bytes(), None).await.is_ok());
        assert_eq!(reads.load(Ordering::SeqCst), 2, "the request after the change read the store itself");
        assert!(first.await.expect("joined"));
    }
}
