//! The warm start: a starting instance loads the credentials of recently used keys before
//! it says it is ready, so that a restart or a rolling deploy does not send every key's
//! first request to the store at once.

use std::time::Duration;

use super::AccountService;
use crate::ports::StoreResult;

impl AccountService {
    /// Loads into the cache the credentials of the keys used within `window` (by the last
    /// uses the store holds), most recent first, at most `max_keys`. It takes its place in
    /// the change feed before loading and reads the feed to its end after, so that a change
    /// committed while it loads is applied. Returns how many it loaded: none without a
    /// cache or with an empty window.
    pub async fn warm_cache(&self, window: Duration, max_keys: u64) -> StoreResult<usize> {
        let Some(cache) = &self.runtime.cache else { return Ok(0) };
        if window.is_zero() || max_keys == 0 {
            return Ok(0);
        }
        let since = self.clock.now().checked_sub(time::Duration::try_from(window).unwrap_or(time::Duration::MAX));
        let since = since.unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let limit = u32::try_from(max_keys).unwrap_or(u32::MAX);
        cache.warm(self.keys.recently_used_credentials(since, limit)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use crate::service::test_support::*;

    fn recently_used() -> (String, KeyHash) {
        let key = PlaintextKey::assemble(Environment::Live, &secret_body());
        (key.expose().to_owned(), key.hash())
    }

    /// A feed that reports `change` on the poll after the first one, and nothing else.
    fn feed_with_change_after_first_poll(change: Option<Change>) -> MockChangeFeed {
        let polls = AtomicUsize::new(0);
        let mut feed = MockChangeFeed::new();
        feed.expect_poll().returning(move || {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            let changes = if n == 1 { change.clone().into_iter().collect() } else { vec![] };
            Ok(FeedPoll { changes, caught_up: true, missed: n == 0 })
        });
        feed
    }

    /// A cache that is a real map: the warm start's effect is what it holds after.
    fn map_cache(entries: Arc<Mutex<Vec<KeyHash>>>) -> MockCredentialCache {
        let mut cache = MockCredentialCache::new();
        let (puts, forgets, reads) = (entries.clone(), entries.clone(), entries);
        cache.expect_put().returning(move |hash, _| puts.lock().expect("map").push(hash));
        cache.expect_forget().returning(move |hash| forgets.lock().expect("map").retain(|h| h != hash));
        cache.expect_get().returning(move |hash, _| {
            reads.lock().expect("map").contains(hash).then(|| CachedLookup::Found(Arc::new(credential())))
        });
        cache.expect_clear().return_const(());
        cache
    }

    #[tokio::test]
    async fn a_warmed_key_is_answered_without_reading_the_store() {
        let (key, hash) = recently_used();
        let mut ports = Ports::new();
        ports.keys.expect_recently_used_credentials().times(1).returning(move |since, limit| {
            assert_eq!((since, limit), (NOW - time::Duration::hours(1), 500));
            Ok(vec![(hash, credential())])
        });
        ports.keys.expect_find_credential().never();
        let entries = Arc::new(Mutex::new(Vec::new()));
        let service = ports.service_with_cache(map_cache(entries), feed_with_change_after_first_poll(None));
        let warmed = service.warm_cache(std::time::Duration::from_secs(3600), 500).await.expect("warmed");
        assert_eq!(warmed, 1);
        assert!(service.authenticate(key.as_bytes(), None).await.is_ok());
        assert_eq!(service.credential_store_reads(), 0);
    }

    #[tokio::test]
    async fn a_change_committed_while_the_keys_load_is_applied_after() {
        let (key, hash) = recently_used();
        let mut ports = Ports::new();
        ports.keys.expect_recently_used_credentials().returning(move |_, _| Ok(vec![(hash, credential())]));
        // The change forgot the warmed entry: the next request reads the store.
        ports.keys.expect_find_credential().times(1).returning(|_| Ok(Some(credential())));
        let entries = Arc::new(Mutex::new(Vec::new()));
        let feed = feed_with_change_after_first_poll(Some(Change::Key(hash)));
        let service = ports.service_with_cache(map_cache(entries.clone()), feed);
        service.warm_cache(std::time::Duration::from_secs(3600), 500).await.expect("warmed");
        assert!(entries.lock().expect("map").is_empty(), "the changed key is not kept");
        assert!(service.authenticate(key.as_bytes(), None).await.is_ok());
    }

    #[tokio::test]
    async fn no_window_or_no_cache_loads_nothing() {
        let mut ports = Ports::new();
        ports.keys.expect_recently_used_credentials().never();
        let service = ports.service();
        assert_eq!(service.warm_cache(std::time::Duration::from_secs(3600), 500).await.expect("no cache"), 0);
        let mut ports = Ports::new();
        ports.keys.expect_recently_used_credentials().never();
        let service = ports.service_with_cache(MockCredentialCache::new(), MockChangeFeed::new());
        assert_eq!(service.warm_cache(std::time::Duration::ZERO, 500).await.expect("no window"), 0);
    }
}
