//! The credential cache and the rules that keep it truthful: it is trusted only while the
//! change feed has been read to its end recently (by a monotonic clock), entries live a
//! bounded time, and a lookup that raced with a change is not kept. What it forgets, the
//! quota's terms forget too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::quota::QuotaBook;
use crate::ports::{CachedLookup, ChangeFeed, CredentialCache, KeyCredential};
use crate::KeyHash;

/// Pages one sync reads at most before it gives the feed back to the next tick; until it
/// has caught up, the cache stays untrusted and requests read the store.
const MAX_POLLS_PER_SYNC: usize = 100;

pub(crate) struct TrustedCache {
    pub(crate) cache: Arc<dyn CredentialCache>,
    feed: Arc<dyn ChangeFeed>,
    max_staleness: Duration,
    /// The origin of the monotonic times kept here: a wall-clock step cannot extend trust.
    origin: Instant,
    /// When the last sync that caught up began, in microseconds after `origin`, plus one
    /// (0: never).
    synced_at: AtomicU64,
    /// Bumped by every change applied: a lookup that saw it move must not be cached.
    generation: AtomicU64,
    /// One sync at a time: a sync that found nothing new must not mark the cache fresh
    /// while another is still applying what it read.
    syncing: futures_util::lock::Mutex<()>,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    /// The quota's terms of an organization hold what its credentials carry: told of the same
    /// changes.
    quota: Arc<QuotaBook>,
}

impl TrustedCache {
    pub(crate) fn new(
        cache: Arc<dyn CredentialCache>,
        feed: Arc<dyn ChangeFeed>,
        max_staleness: Duration,
        quota: Arc<QuotaBook>,
    ) -> Self {
        Self {
            cache,
            feed,
            max_staleness,
            origin: Instant::now(),
            synced_at: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            syncing: futures_util::lock::Mutex::new(()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            quota,
        }
    }

    fn micros_since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// The cached lookup, if the cache may be trusted now: its last sync caught up less
    /// than `max_staleness` ago and the entry has not outlived its lifetime.
    pub(crate) fn get(&self, hash: &KeyHash) -> Option<CachedLookup> {
        let now = Instant::now();
        let limit = u64::try_from(self.max_staleness.as_micros()).unwrap_or(u64::MAX);
        let synced_at = self.synced_at.load(Ordering::Acquire);
        let fresh = synced_at != 0 && self.micros_since_origin(now).saturating_sub(synced_at - 1) <= limit;
        let found = if fresh { self.cache.get(hash, now) } else { None };
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Counts an authentication that goes on to read the store (a well-formed key that
    /// [`Self::get`] did not answer).
    pub(crate) fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
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

    /// Reads the feed until it has caught up and forgets what changed; clears the cache
    /// when the feed may have missed something. The cache is trusted again only once a
    /// sync has read everything committed before it began. Returns the changes applied.
    pub(crate) async fn sync(&self) -> crate::ports::StoreResult<usize> {
        let _turn = self.syncing.lock().await;
        let began = self.micros_since_origin(Instant::now());
        let mut applied = 0;
        for _ in 0..MAX_POLLS_PER_SYNC {
            let poll = self.feed.poll().await?;
            if poll.missed {
                self.clear();
            }
            for change in &poll.changes {
                self.generation.fetch_add(1, Ordering::AcqRel);
                match change {
                    crate::ports::Change::Key(hash) => self.cache.forget(hash),
                    crate::ports::Change::Organization(org) => {
                        self.cache.forget_organization(org);
                        self.quota.forget(org);
                    }
                    crate::ports::Change::Everything => {
                        self.cache.clear();
                        self.quota.forget_all();
                    }
                }
            }
            applied += poll.changes.len();
            if poll.caught_up {
                self.synced_at.fetch_max(began + 1, Ordering::AcqRel);
                return Ok(applied);
            }
        }
        Ok(applied)
    }

    /// Loads credentials read from the store (the warm start), consistent with the change
    /// feed: the feed's place is taken first; no change is applied while they load, so none
    /// can slip between the read and the puts; and the feed is read to its end after, which
    /// forgets what changed meanwhile. Returns how many were read.
    pub(crate) async fn warm(
        &self,
        credentials: impl std::future::Future<Output = crate::ports::StoreResult<Vec<(KeyHash, KeyCredential)>>>,
    ) -> crate::ports::StoreResult<usize> {
        self.sync().await?;
        let loaded = {
            let _turn = self.syncing.lock().await;
            let generation = self.generation();
            let loaded = credentials.await?;
            let count = loaded.len();
            // Least recent first: should the cache fill up, the most recent stay.
            for (hash, credential) in loaded.into_iter().rev() {
                self.put(hash, CachedLookup::Found(Arc::new(credential)), generation);
            }
            count
        };
        self.sync().await?;
        Ok(loaded)
    }

    /// Forgets everything: used when a change could not be confirmed applied.
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
        self.quota.forget_all();
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
        feed.expect_poll().returning(|| Ok(FeedPoll { caught_up: true, ..FeedPoll::default() }));
        feed
    }

    #[tokio::test]
    async fn a_cache_hit_costs_no_store_lookup() {
        let (key, hash) = presented();
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().never();
        let mut cache = MockCredentialCache::new();
        cache
            .expect_get()
            .withf(move |h, _| *h == hash)
            .returning(|_, _| Some(CachedLookup::Found(Arc::new(credential()))));
        let service = ports.service_with_cache(cache, quiet_feed());
        service.sync_changes().await.expect("synced");
        let principal = service.authenticate(key.as_bytes(), None).await.expect("authenticated");
        assert_eq!(principal.organization(), &*credential().organization);
    }

    #[tokio::test]
    async fn a_cache_hit_asks_for_the_address_only_when_the_key_has_an_allowlist() {
        let (key, _) = presented();
        let limited = crate::model::AllowedIps::parse(&["10.0.0.0/8"]).expect("valid");
        for (allowed_ips, asked) in [(None, false), (limited, true)] {
            let mut ports = Ports::new();
            ports.keys.expect_find_credential().never();
            let cred = credential().with(|c| c.key.allowed_ips = allowed_ips.clone());
            let mut cache = MockCredentialCache::new();
            cache.expect_get().returning(move |_, _| Some(CachedLookup::Found(Arc::new(cred.clone()))));
            let service = ports.service_with_cache(cache, quiet_feed());
            service.sync_changes().await.expect("synced");
            let was_asked = std::cell::Cell::new(false);
            let address = || {
                was_asked.set(true);
                "10.1.2.3".parse().ok()
            };
            assert!(service.authenticate(key.as_bytes(), address).await.is_ok());
            assert_eq!(was_asked.get(), asked);
        }
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
        assert!(service.authenticate(key.as_bytes(), None).await.is_ok());
    }

    #[tokio::test]
    async fn an_unknown_key_is_remembered_as_missing() {
        let (key, _) = presented();
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().never();
        let mut cache = MockCredentialCache::new();
        cache.expect_get().returning(|_, _| Some(CachedLookup::Missing));
        let service = ports.service_with_cache(cache, quiet_feed());
        service.sync_changes().await.expect("synced");
        assert!(matches!(service.authenticate(key.as_bytes(), None).await, Err(AuthenticateError::UnknownKey)));
    }

    #[tokio::test]
    async fn a_miss_is_stored_as_missing_after_the_lookup() {
        let (key, hash) = presented();
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().times(1).returning(|_| Ok(None));
        let mut cache = MockCredentialCache::new();
        cache.expect_get().returning(|_, _| None);
        cache.expect_put().withf(move |h, l| *h == hash && *l == CachedLookup::Missing).times(1).return_const(());
        let service = ports.service_with_cache(cache, quiet_feed());
        service.sync_changes().await.expect("synced");
        assert!(matches!(service.authenticate(key.as_bytes(), None).await, Err(AuthenticateError::UnknownKey)));
    }

    #[tokio::test]
    async fn expiry_is_checked_against_the_clock_on_cached_credentials() {
        let (key, _) = presented();
        let mut cache = MockCredentialCache::new();
        cache
            .expect_get()
            .returning(|_, _| Some(CachedLookup::Found(Arc::new(credential().with(|c| c.key.expires_at = Some(NOW))))));
        let service = Ports::new().service_with_cache(cache, quiet_feed());
        service.sync_changes().await.expect("synced");
        assert!(matches!(
            service.authenticate(key.as_bytes(), None).await,
            Err(AuthenticateError::Refused(ActorRefused::Expired))
        ));
    }

    #[tokio::test]
    async fn published_changes_are_forgotten() {
        let (_, hash) = presented();
        let org = OrgId::new("org_abc").expect("valid");
        let mut feed = MockChangeFeed::new();
        let changes = vec![Change::Key(hash), Change::Organization(org.clone())];
        feed.expect_poll()
            .times(1)
            .returning(move || Ok(FeedPoll { changes: changes.clone(), caught_up: true, missed: false }));
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
        feed.expect_poll().returning(|| Err(anyhow::anyhow!("database gone").into()));
        let mut cache = MockCredentialCache::new();
        cache.expect_get().never();
        cache.expect_put().return_const(());
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().times(1).returning(|_| Ok(Some(credential())));
        let service = ports.service_with_cache(cache, feed);
        assert!(service.sync_changes().await.is_err());
        assert!(service.authenticate(key.as_bytes(), None).await.is_ok());
    }

    #[tokio::test]
    async fn a_revocation_made_here_is_applied_before_the_answer() {
        let mut ports = Ports::new();
        ports.keys.expect_revoke_key().returning(|org, id, at, _, _, _| {
            let mut key = api_key(id.as_str(), org.as_str());
            key.revoked_at = Some(at);
            Ok(key)
        });
        let mut feed = MockChangeFeed::new();
        feed.expect_poll().times(1).returning(|| Ok(FeedPoll { caught_up: true, ..FeedPoll::default() }));
        let service = ports.service_with_cache(MockCredentialCache::new(), feed);
        service
            .revoke_key(&principal(&["write"], Environment::Live), "key_abc", &RequestMeta::default())
            .await
            .expect("revoked");
    }

    #[tokio::test]
    async fn if_a_revocation_cannot_be_applied_the_cache_is_emptied() {
        let mut ports = Ports::new();
        ports.keys.expect_revoke_key().returning(|org, id, _, _, _, _| Ok(api_key(id.as_str(), org.as_str())));
        let mut feed = MockChangeFeed::new();
        feed.expect_poll().returning(|| Err(anyhow::anyhow!("gone").into()));
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
        let state = super::TrustedCache::new(
            std::sync::Arc::new(cache),
            std::sync::Arc::new(quiet_feed()),
            std::time::Duration::from_secs(1),
            std::sync::Arc::default(),
        );
        let before = state.generation();
        state.clear(); // a change arrives while the store is read
        state.put(hash, CachedLookup::Missing, before);
    }

    #[tokio::test]
    async fn a_sync_that_has_not_caught_up_leaves_the_cache_untrusted_until_it_has() {
        let (key, _) = presented();
        let mut feed = MockChangeFeed::new();
        let mut seq = mockall::Sequence::new();
        // A full page each time: more than one sync may read.
        feed.expect_poll().times(super::MAX_POLLS_PER_SYNC).in_sequence(&mut seq).returning(|| Ok(FeedPoll::default()));
        feed.expect_poll()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|| Ok(FeedPoll { caught_up: true, ..FeedPoll::default() }));
        let mut cache = MockCredentialCache::new();
        cache.expect_get().times(1).returning(|_, _| Some(CachedLookup::Found(Arc::new(credential()))));
        cache.expect_put().return_const(());
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().times(1).returning(|_| Ok(Some(credential())));
        let service = ports.service_with_cache(cache, feed);
        service.sync_changes().await.expect("synced, still behind");
        assert!(service.authenticate(key.as_bytes(), None).await.is_ok(), "read from the store while behind");
        service.sync_changes().await.expect("caught up");
        assert!(service.authenticate(key.as_bytes(), None).await.is_ok(), "from the cache once caught up");
    }

    #[tokio::test]
    async fn a_feed_that_may_have_missed_changes_empties_the_cache() {
        let mut feed = MockChangeFeed::new();
        feed.expect_poll().returning(|| Ok(FeedPoll { changes: vec![], caught_up: true, missed: true }));
        let mut cache = MockCredentialCache::new();
        cache.expect_clear().times(1).return_const(());
        let service = Ports::new().service_with_cache(cache, feed);
        service.sync_changes().await.expect("synced");
    }
}
