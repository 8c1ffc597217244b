//! What the service is built from, and every default, written once: the server's
//! environment, a `Verifier` and the operator commands all start from [`Settings::new`].

use std::time::Duration;

use account_domain::{AccountService, UsageRetention};

use crate::{DatabaseTarget, InMemoryCredentialCache, PoolOptions};

/// How long a credential cache is trusted without a sync that caught up: the bound on how
/// long the server or a verifier can accept a key revoked elsewhere.
pub const MAX_STALENESS: Duration = Duration::from_secs(1);

/// The longest usage flush interval: the quota's overshoot and a crash's loss are bounded by it.
pub const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// Everything a process needs to build the service. [`Settings::new`] holds the defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The database (`DATABASE_URL`).
    pub database: DatabaseTarget,
    /// Connections at most and how long a request waits for one (`DATABASE_POOL_SIZE`,
    /// `DATABASE_TIMEOUT_MS`).
    pub pool: PoolOptions,
    /// How long the start waits for the database to be reachable (`DATABASE_CONNECT_TIMEOUT_S`);
    /// a verifier does not wait.
    pub connect_timeout: Duration,
    /// Active keys an organization may hold (`MAX_ACTIVE_KEYS_PER_ORG`).
    pub max_active_keys: u32,
    /// How often last uses and usage counts are written (`LAST_USED_FLUSH_SECS`); above 0,
    /// at most [`MAX_FLUSH_INTERVAL`].
    pub usage_flush_interval: Duration,
    /// How long daily usage counts are kept (`USAGE_RETENTION_DAYS`); the server prunes them.
    pub usage_retention: UsageRetention,
    pub cache: CacheSettings,
    /// Webhooks: off (their routes answer 503) without a key to seal signing secrets.
    pub webhooks: WebhookSettings,
}

/// The credential cache.
/// What webhooks are built from.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `WEBHOOK_SECRET_KEY`: seals the endpoints' signing secrets; `None` turns webhooks off.
    pub secret_key: Option<crate::WebhookKey>,
    /// `WEBHOOK_ALLOW_PRIVATE_TARGETS`: allows loopback, private and other non-public targets
    /// (internal deployments, tests).
    pub allow_private_targets: bool,
    /// `WEBHOOK_TIMEOUT_MS`: how long a receiver has to answer 2xx.
    pub timeout: Duration,
    /// `WEBHOOK_RETRY_HOURS`: how long an event is retried before it is marked failed.
    pub retry_for: Duration,
    /// `WEBHOOK_SCHEDULE_SECS`: how often a server looks for the expiry and usage notices
    /// due (`key.expiring`, `key.expired`, `usage.threshold`).
    pub schedule_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Credentials held in memory at most (`CACHE_MAX_KEYS`); 0 turns the cache off, and
    /// every authentication reads the database.
    pub max_keys: u64,
    /// How long a cached key is trusted before it is read again (`CACHE_TTL_SECS`): the
    /// bound for changes made by SQL by hand, which the change feed does not carry.
    pub ttl: Duration,
    /// How often the change feed is read (`CACHE_SYNC_INTERVAL_MS`); above 0 and below
    /// [`Self::max_staleness`].
    pub sync_interval: Duration,
    /// Keys used within this long are loaded at start (`CACHE_WARM_START_SECS`; zero: none).
    pub warm_start: Duration,
    /// How long the cache is trusted without a sync that caught up: [`MAX_STALENESS`].
    /// Not configurable; benchmarks raise it to measure the hit alone.
    pub max_staleness: Duration,
}

impl Settings {
    /// The defaults, on `database`.
    pub fn new(database: DatabaseTarget) -> Self {
        Self {
            database,
            pool: PoolOptions::for_machine(),
            connect_timeout: Duration::from_secs(30),
            max_active_keys: AccountService::DEFAULT_MAX_ACTIVE_KEYS,
            usage_flush_interval: Duration::from_secs(10),
            usage_retention: UsageRetention::DEFAULT,
            cache: CacheSettings {
                max_keys: 20_000,
                ttl: InMemoryCredentialCache::DEFAULT_FOUND_TTL,
                sync_interval: Duration::from_millis(200),
                warm_start: Duration::from_secs(3600),
                max_staleness: MAX_STALENESS,
            },
            webhooks: WebhookSettings {
                secret_key: None,
                allow_private_targets: false,
                timeout: Duration::from_secs(10),
                retry_for: Duration::from_secs(24 * 3600),
                schedule_interval: Duration::from_secs(60),
            },
        }
    }

    /// The defaults, on the database `url` names (`sqlite://PATH`, a plain path, `postgres://…`).
    pub fn for_url(url: &str) -> anyhow::Result<Self> {
        Ok(Self::new(DatabaseTarget::parse(url)?))
    }

    /// Refuses values no process may run with.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let sync = self.cache.sync_interval;
        anyhow::ensure!(
            !sync.is_zero() && sync < self.cache.max_staleness,
            "the change-feed sync interval must be above 0 and below {} ms, not {} ms",
            self.cache.max_staleness.as_millis(),
            sync.as_millis()
        );
        let flush = self.usage_flush_interval;
        anyhow::ensure!(
            !flush.is_zero() && flush <= MAX_FLUSH_INTERVAL,
            "the usage flush interval must be above 0 and at most {} s, not {} ms",
            MAX_FLUSH_INTERVAL.as_secs(),
            flush.as_millis()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::for_url("sqlite://x.db").expect("valid")
    }

    #[test]
    fn the_defaults_are_valid() {
        settings().check().expect("the defaults run");
    }

    #[test]
    fn a_sync_interval_that_would_outlast_the_cache_trust_is_refused() {
        for ms in [0, 1000, 5000] {
            let mut s = settings();
            s.cache.sync_interval = Duration::from_millis(ms);
            assert!(s.check().is_err(), "{ms} ms");
        }
    }

    #[test]
    fn a_flush_interval_past_a_minute_is_refused() {
        for secs in [0, 61, 3600] {
            let mut s = settings();
            s.usage_flush_interval = Duration::from_secs(secs);
            assert!(s.check().is_err(), "{secs} s");
        }
        let mut s = settings();
        s.usage_flush_interval = MAX_FLUSH_INTERVAL;
        s.check().expect("a minute is allowed");
    }
}
