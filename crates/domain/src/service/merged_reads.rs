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
