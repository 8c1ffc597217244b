//! What makes the rules fast and keeps their records, apart from the rules themselves: the
//! trusted credential cache and its freshness, merged reads of the store, the usage
//! write-behind buffer and its flush, the quota's counts across instances, the warm start,
//! and the speed devices of authentication. Nothing here decides a right: the use cases in
//! `service/` call it through [`Runtime`], and the composition root drives it through the
//! controls below.

mod authentication;
mod merged_reads;
mod quota;
mod trusted_cache;
mod usage_buffer;
mod usage_flush;
mod warm_start;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use time::{Date, OffsetDateTime};

pub use authentication::{Authentication, ClientAddress};
use merged_reads::MergedReads;
use quota::QuotaBook;
pub use quota::QuotaSlot;
pub(crate) use quota::{Admission, QuotaOf};
use trusted_cache::TrustedCache;
use usage_buffer::UsageTracker;
pub(crate) use usage_buffer::UseOf;
pub use usage_flush::{DroppedUses, UsageFlush};

use crate::model::{Environment, KeyHash, KeyId, OrgId, PlanPeriod, UsageCount, UseOutcome, VerificationCode};
use crate::ports::{CachedLookup, ChangeFeed, CredentialCache, KeyCredential, KeyRepository, StoreResult};
use crate::service::AccountService;

/// The runtime one service holds: what the use cases ask of it, and nothing of the rules.
pub(crate) struct Runtime {
    cache: Option<TrustedCache>,
    store_reads: MergedReads,
    usage: UsageTracker,
    /// The flush's turn: one flush at a time, and the quota's store reads between flushes.
    usage_flush: futures_util::lock::Mutex<()>,
    /// Shared with the cache, which tells it of changes.
    quota: Arc<QuotaBook>,
}

impl Runtime {
    /// No cache (every credential is read from the store); uses buffered for `writer`.
    pub(crate) fn new(usage_writer: String) -> Self {
        Self {
            cache: None,
            store_reads: MergedReads::default(),
            usage: UsageTracker::new(usage_writer),
            usage_flush: futures_util::lock::Mutex::new(()),
            quota: Arc::default(),
        }
    }

    /// What the cache, while trusted, knows of `hash`. A hit is complete without I/O.
    #[inline]
    pub(crate) fn cached(&self, hash: &KeyHash) -> Option<CachedLookup> {
        self.cache.as_ref()?.get(hash)
    }

    /// The credential of `hash` from the store, after a miss: requests that missed together
    /// share one read, and what it found (or that it found nothing) is cached.
    pub(crate) async fn read_credential(
        &self,
        keys: &Arc<dyn KeyRepository>,
        hash: KeyHash,
    ) -> StoreResult<Option<Arc<KeyCredential>>> {
        let Some(cache) = &self.cache else {
            // No cache, no merging: every request reads the store.
            self.store_reads.reads.fetch_add(1, Relaxed);
            return Ok(keys.find_credential(&hash).await?.map(Arc::new));
        };
        cache.count_miss();
        let generation = cache.generation();
        let found = self.store_reads.find(keys, hash, generation).await?;
        let lookup = found.clone().map_or(CachedLookup::Missing, CachedLookup::Found);
        cache.put(hash, lookup, generation);
        Ok(found)
    }

    /// Counts a use of a known key.
    #[inline]
    pub(crate) fn record_use(&self, of: UseOf<'_>, at: OffsetDateTime, outcome: UseOutcome) {
        self.usage.record(of, at, outcome);
    }

    /// Moves one use counted as `from` on `day` to the refusal `to` (a scope found lacking).
    pub(crate) fn reclassify_use(
        &self,
        of: UseOf<'_>,
        day: Date,
        from: UseOutcome,
        to: VerificationCode,
        now: OffsetDateTime,
    ) {
        self.usage.reclassify(of, day, from, to, now);
    }

    /// Counts one valid verification of `of` against its organization's quota, unless
    /// `capped` and `allows(valid so far, included)` refuses it; [`Admission::Unknown`]
    /// until the period's terms are read ([`Self::read_quota`]). No I/O, no allocation once
    /// the organization has been seen.
    #[inline]
    pub(crate) fn admit(&self, of: QuotaOf<'_>, capped: bool, allows: impl FnOnce(i64, i64) -> bool) -> Admission {
        self.quota.admit(of, capped, allows)
    }

    /// Reads the valid verifications the store holds for `of`'s organization in `period`,
    /// its current plan period, while no usage batch is being written (so that none is
    /// counted both as written and as this instance's unwritten); concurrent reads for one
    /// organization read once.
    pub(crate) async fn read_quota(
        &self,
        keys: &dyn KeyRepository,
        of: QuotaOf<'_>,
        period: &PlanPeriod,
    ) -> StoreResult<()> {
        let _turn = self.usage_flush.lock().await;
        if self.quota.knows(of) {
            return Ok(());
        }
        let rows = keys.valid_uses_since(std::slice::from_ref(&of.organization.id), period.start).await?;
        self.quota.install(of, period, &rows);
        Ok(())
    }

    /// The key's last use not yet written, if any.
    pub(crate) fn pending_last_use(&self, key: &KeyId) -> Option<OffsetDateTime> {
        self.usage.pending_last_use(key)
    }

    /// What `stored` reads of the organization's counts, and its counts not yet written from
    /// `from` on, both taken while no usage batch is being written (under the flush's turn):
    /// a batch in flight would be in neither.
    pub(crate) async fn stored_and_pending<T>(
        &self,
        org: &OrgId,
        from: Date,
        stored: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<(T, Vec<(UsageCount, Environment)>)> {
        let _turn = self.usage_flush.lock().await;
        let stored = stored.await?;
        Ok((stored, self.usage.pending_counts(org, from)))
    }

    /// After a change made here: apply it to the cache before answering, so that the very
    /// next request sees it. If that fails, forget everything rather than risk it.
    pub(crate) async fn after_change(&self) {
        if let Some(cache) = &self.cache {
            // The periodic sync reports the failure; here, only safety matters.
            if cache.sync().await.is_err() {
                cache.clear();
            }
        }
    }
}

/// The runtime's controls, for the composition root (the server, the `Verifier`).
impl AccountService {
    /// Serves authentication from `cache` while `feed` has been read within `max_staleness`;
    /// past that (the store unreachable), every request reads the store again, so that no
    /// change is ignored for longer. [`Self::sync_changes`] must be called well within it.
    pub fn with_cache(
        mut self,
        cache: Arc<dyn CredentialCache>,
        feed: Arc<dyn ChangeFeed>,
        max_staleness: Duration,
    ) -> Self {
        self.runtime.cache = Some(TrustedCache::new(cache, feed, max_staleness, self.runtime.quota.clone()));
        self
    }

    /// Applies the changes other writers published (revocations, organization changes) to
    /// the credential cache. Call it often: the cache is trusted only shortly after a sync.
    pub async fn sync_changes(&self) -> StoreResult<usize> {
        match &self.runtime.cache {
            Some(cache) => cache.sync().await,
            None => Ok(0),
        }
    }

    /// Writes the uses gathered since the previous flush ([`Runtime::flush_usage`]).
    pub async fn flush_usage(&self) -> StoreResult<UsageFlush> {
        self.runtime.flush_usage(self.keys.as_ref()).await
    }

    /// Authentications answered from the cache, and those that read the store, since start;
    /// `None` without a cache.
    pub fn cache_stats(&self) -> Option<(u64, u64)> {
        self.runtime.cache.as_ref().map(|c| (c.hits.load(Relaxed), c.misses.load(Relaxed)))
    }

    /// Reads of credentials from the store since start (concurrent misses for one key,
    /// merged, count once).
    pub fn credential_store_reads(&self) -> u64 {
        self.runtime.store_reads.reads.load(Relaxed)
    }

    /// How long ago the oldest use held in memory, not yet written, was counted: what a
    /// crash would lose.
    pub fn usage_unwritten_for(&self) -> Option<Duration> {
        let oldest = self.runtime.usage.oldest_unwritten()?;
        Some((self.now() - oldest).try_into().unwrap_or_default())
    }

    /// Uses counted and never written (their key deleted first, or refused for good).
    pub fn usage_dropped(&self) -> u64 {
        self.runtime.usage.dropped_uses.load(Relaxed)
    }

    /// Usage batches written since start, and the rows they held.
    pub fn usage_flush_stats(&self) -> (u64, u64) {
        (self.runtime.usage.flushes.load(Relaxed), self.runtime.usage.flushed_rows.load(Relaxed))
    }
}
