//! The services: every business rule of signup, accounts, keys and authentication.

mod account;
mod audit;
mod authenticate;
mod keys;
mod leak;
mod merged_reads;
mod operator;
mod principal;
mod signup;
mod trusted_cache;
mod usage;
mod usage_report;
mod verify;
mod warm_start;

#[cfg(test)]
mod test_support;

use std::sync::Arc;
use std::time::Duration;

pub use account::GetAccountError;
pub use audit::{audit_event_id, AuditLogError, AuditPage};
pub use authenticate::{AuthenticateError, Authentication, ClientAddress, DroppedUses, UsageFlush};
pub use keys::{CreatedKey, KeyAccessError, KeyUpdate, RolledKey};
pub use leak::ReportLeakError;
pub use operator::{IssueKeyError, IssuedKey, SetOrganizationActiveError};
pub use principal::{InsufficientScope, Principal};
pub use signup::{Signup, SignupError, SignupRequest};
use trusted_cache::TrustedCache;
use usage::UsageTracker;
pub use usage_report::{
    month_is_final, DailyUsage, KeyUsage, SetPlanIncludedError, UsageError, UsageReport, UsageRetention, UsageTotals,
};
pub use verify::Verification;

use crate::ports::{AccountRepository, ChangeFeed, Clock, CredentialCache, Generator, KeyRepository};

/// The application's use cases over its ports. Cheap to share: hold it in an `Arc`.
pub struct AccountService {
    accounts: Arc<dyn AccountRepository>,
    keys: Arc<dyn KeyRepository>,
    clock: Arc<dyn Clock>,
    generator: Arc<dyn Generator>,
    usage: UsageTracker,
    usage_flush: futures_util::lock::Mutex<()>,
    cache: Option<TrustedCache>,
    store_reads: merged_reads::MergedReads,
    max_active_keys: u32,
}

impl std::fmt::Debug for AccountService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountService").finish_non_exhaustive()
    }
}

impl AccountService {
    /// A service that reads every credential from the repository.
    pub fn new(
        accounts: Arc<dyn AccountRepository>,
        keys: Arc<dyn KeyRepository>,
        clock: Arc<dyn Clock>,
        generator: Arc<dyn Generator>,
    ) -> Self {
        Self {
            accounts,
            keys,
            clock,
            usage: UsageTracker::new(generator.usage_writer()),
            generator,
            usage_flush: futures_util::lock::Mutex::new(()),
            cache: None,
            store_reads: merged_reads::MergedReads::default(),
            max_active_keys: Self::DEFAULT_MAX_ACTIVE_KEYS,
        }
    }

    /// How many active (neither revoked nor expired) keys an organization may hold.
    pub const DEFAULT_MAX_ACTIVE_KEYS: u32 = 100;

    pub fn with_max_active_keys(mut self, max: u32) -> Self {
        self.max_active_keys = max;
        self
    }

    /// Serves authentication from `cache` while `feed` has been read within `max_staleness`;
    /// past that (the store unreachable), every request reads the store again, so that no
    /// change is ignored for longer. [`Self::sync_changes`] must be called well within it.
    pub fn with_cache(
        mut self,
        cache: Arc<dyn CredentialCache>,
        feed: Arc<dyn ChangeFeed>,
        max_staleness: Duration,
    ) -> Self {
        self.cache = Some(TrustedCache::new(cache, feed, max_staleness));
        self
    }

    /// Authentications answered from the cache, and those that read the store, since start;
    /// `None` without a cache.
    pub fn cache_stats(&self) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        self.cache.as_ref().map(|c| (c.hits.load(Relaxed), c.misses.load(Relaxed)))
    }

    /// Reads of credentials from the store since start (concurrent misses for one key,
    /// merged, count once).
    pub fn credential_store_reads(&self) -> u64 {
        self.store_reads.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The service clock's current time, for views that depend on it (is a key active?).
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }
}
