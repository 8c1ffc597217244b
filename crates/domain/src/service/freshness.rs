//! The credential cache and the rules that keep it truthful: it is trusted only while the
//! change feed has been read recently, and a lookup that raced with a change is not kept.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::ports::{CachedLookup, Change, ChangeFeed, CredentialCache};
use crate::KeyHash;

pub(crate) struct CacheState {
    pub(crate) cache: Arc<dyn CredentialCache>,
    feed: Arc<dyn ChangeFeed>,
    max_staleness: Duration,
    /// When the last successful poll began, in Unix microseconds (0: never).
    synced_at: AtomicI64,
    /// Bumped by every change applied: a lookup that saw it move must not be cached.
    generation: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

/// Unix microseconds, without the 128-bit division of `unix_timestamp_nanos` (hot path).
fn micros(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().saturating_mul(1_000_000).saturating_add(i64::from(at.microsecond()))
}

impl CacheState {
    pub(crate) fn new(cache: Arc<dyn CredentialCache>, feed: Arc<dyn ChangeFeed>, max_staleness: Duration) -> Self {
        Self {
            cache,
            feed,
            max_staleness,
            synced_at: AtomicI64::new(0),
            generation: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached lookup, if the cache may be trusted now.
    pub(crate) fn get(&self, hash: &KeyHash, now: OffsetDateTime) -> Option<CachedLookup> {
        let limit = i64::try_from(self.max_staleness.as_micros()).unwrap_or(i64::MAX);
        let synced_at = self.synced_at.load(Ordering::Acquire);
        let found =
            if synced_at == 0 || micros(now).saturating_sub(synced_at) > limit { None } else { self.cache.get(hash) };
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps a lookup read from the store when no change was applied since `generation`;
    /// if one slips in while storing, the entry is dropped again.
    pub(crate) fn put(&self, hash: KeyHash, lookup: CachedLookup, generation: u64) {
        if self.generation() != generation {
            return;
        }
        self.cache.put(hash, lookup);
        if self.generation() != generation {
            self.cache.forget(&hash);
        }
    }

    /// Reads the feed and forgets what changed. Returns how many changes were applied.
    pub(crate) async fn sync(&self, now: OffsetDateTime) -> anyhow::Result<usize> {
        let changes = self.feed.poll().await?;
        for change in &changes {
            self.generation.fetch_add(1, Ordering::AcqRel);
            match change {
                Change::Key(hash) => self.cache.forget(hash),
                Change::Organization(org) => self.cache.forget_organization(org),
            }
        }
        // Everything committed before `now` has been applied.
        self.synced_at.fetch_max(micros(now), Ordering::AcqRel);
        Ok(changes.len())
    }

    /// Forgets everything: used when a change could not be confirmed applied.
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::service::test_support::*;
    use crate::service::AuthenticateError;

    fn presented() -> (String, KeyHash) {
        let key = PlaintextKey::assemble(Environment::Live, &secret_body());
        (key.expose().to_owned(), key.hash())
    }

    fn quiet_feed() -> MockChangeFeed {
        let mut feed = MockChangeFeed::new();
        feed.expect_poll().returning(|| Ok(vec![]));
        feed
    }

    #[tokio::test]
    async fn a_cache_hit_costs_no_store_lookup() {
        let (key, hash) = presented();
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().never();
        let mut cache = MockCredentialCache::new();
        cache.expect_get().withf(move |h| *h == hash).returning(|_| Some(CachedLookup::Found(Arc::new(credential()))));
        let service = ports.service_with_cache(cache, quiet_feed());
        service.sync_changes().await.expect("synced");
        let principal = service.authenticate(&key).await.expect("authenticated");
        assert_eq!(principal.organization(), &credential().organization);
    }

    #[tokio::test]
    async fn a_cache_not_synced_recently_is_not_trusted() {
        let (key, _) = presented();
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().times(1).returning(|_| Ok(Some(credential())));
        let mut cache = MockCredentialCache::new();
        cache.expect_get().never();
        cache.expect_put().times(1).return_const(());
        // Never synced: every request goes to the store (and refreshes the cache).
        let service = ports.service_with_cache(cache, quiet_feed());
        assert!(service.authenticate(&key).await.is_ok());
    }

    #[tokio::test]
    async fn an_unknown_key_is_remembered_as_missing() {
        let (key, _) = presented();
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().never();
        let mut cache = MockCredentialCache::new();
        cache.expect_get().returning(|_| Some(CachedLookup::Missing));
        let service = ports.service_with_cache(cache, quiet_feed());
        service.sync_changes().await.expect("synced");
        assert!(matches!(service.authenticate(&key).await, Err(AuthenticateError::UnknownKey)));
    }

    #[tokio::test]
    async fn a_miss_is_stored_as_missing_after_the_lookup() {
        let (key, hash) = presented();
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().times(1).returning(|_| Ok(None));
        let mut cache = MockCredentialCache::new();
        cache.expect_get().returning(|_| None);
        cache.expect_put().withf(move |h, l| *h == hash && *l == CachedLookup::Missing).times(1).return_const(());
        let service = ports.service_with_cache(cache, quiet_feed());
        service.sync_changes().await.expect("synced");
        assert!(matches!(service.authenticate(&key).await, Err(AuthenticateError::UnknownKey)));
    }

    #[tokio::test]
    async fn expiry_is_checked_against_the_clock_on_cached_credentials() {
        let (key, _) = presented();
        let mut cache = MockCredentialCache::new();
        cache
            .expect_get()
            .returning(|_| Some(CachedLookup::Found(Arc::new(credential().with(|c| c.key.expires_at = Some(NOW))))));
        let service = Ports::new().service_with_cache(cache, quiet_feed());
        service.sync_changes().await.expect("synced");
        assert!(matches!(service.authenticate(&key).await, Err(AuthenticateError::Expired)));
    }

    #[tokio::test]
    async fn published_changes_are_forgotten() {
        let (_, hash) = presented();
        let org = OrgId::new("org_abc").expect("valid");
        let mut feed = MockChangeFeed::new();
        let changes = vec![Change::Key(hash), Change::Organization(org.clone())];
        feed.expect_poll().times(1).returning(move || Ok(changes.clone()));
        let mut cache = MockCredentialCache::new();
        cache.expect_forget().withf(move |h| *h == hash).times(1).return_const(());
        cache.expect_forget_organization().withf(move |o| *o == org).times(1).return_const(());
        let service = Ports::new().service_with_cache(cache, feed);
        assert_eq!(service.sync_changes().await.expect("synced"), 2);
    }

    #[tokio::test]
    async fn a_failed_sync_leaves_the_cache_untrusted() {
        let (key, _) = presented();
        let mut feed = MockChangeFeed::new();
        feed.expect_poll().returning(|| Err(anyhow::anyhow!("database gone")));
        let mut cache = MockCredentialCache::new();
        cache.expect_get().never();
        cache.expect_put().return_const(());
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().times(1).returning(|_| Ok(Some(credential())));
        let service = ports.service_with_cache(cache, feed);
        assert!(service.sync_changes().await.is_err());
        assert!(service.authenticate(&key).await.is_ok());
    }

    #[tokio::test]
    async fn a_revocation_made_here_is_applied_before_the_answer() {
        let mut ports = Ports::new();
        ports.keys.expect_revoke_key().returning(|org, id, at, _| {
            let mut key = api_key(id.as_str(), org.as_str());
            key.revoked_at = Some(at);
            Ok(Some(key))
        });
        let mut feed = MockChangeFeed::new();
        feed.expect_poll().times(1).returning(|| Ok(vec![]));
        let service = ports.service_with_cache(MockCredentialCache::new(), feed);
        service
            .revoke_key(&principal(&["write"], Environment::Live), "key_abc", &RequestMeta::default())
            .await
            .expect("revoked");
    }

    #[tokio::test]
    async fn if_a_revocation_cannot_be_applied_the_cache_is_emptied() {
        let mut ports = Ports::new();
        ports.keys.expect_revoke_key().returning(|org, id, _, _| Ok(Some(api_key(id.as_str(), org.as_str()))));
        let mut feed = MockChangeFeed::new();
        feed.expect_poll().returning(|| Err(anyhow::anyhow!("gone")));
        let mut cache = MockCredentialCache::new();
        cache.expect_clear().times(1).return_const(());
        let service = ports.service_with_cache(cache, feed);
        service
            .revoke_key(&principal(&["write"], Environment::Live), "key_abc", &RequestMeta::default())
            .await
            .expect("revoked");
    }

    #[test]
    fn a_lookup_that_raced_a_change_is_not_kept() {
        let (_, hash) = presented();
        let mut cache = MockCredentialCache::new();
        cache.expect_put().never();
        cache.expect_clear().return_const(());
        let state = super::CacheState::new(
            std::sync::Arc::new(cache),
            std::sync::Arc::new(quiet_feed()),
            std::time::Duration::from_secs(1),
        );
        let before = state.generation();
        state.clear(); // a change arrives while the store is read
        state.put(hash, CachedLookup::Missing, before);
    }
}
