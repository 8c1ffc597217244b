//! An embeddable key verifier: another Rust service verifies the Account API's keys against
//! its database, with the same rules and credential cache as the server and no HTTP hop,
//! without wiring repositories, cache and change feed by hand.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let verifier = account_infra::Verifier::connect("postgres://verifier@db/accounts").await?;
//! let verdict = verifier.verify("mem_live_...", &[account_domain::Scope::Read], None).await?;
//! println!("{}", verdict.code.as_str());
//! verifier.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use account_domain::{AccountService, Scope, Scopes, Verification};
use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{
    Database, DatabaseTarget, InMemoryCredentialCache, OsRandomGenerator, PoolOptions, SqlAccountRepository,
    SqlChangeFeed, SqlKeyRepository, SystemClock,
};

/// How long a credential cache is trusted without a sync that caught up: the bound on how
/// long the server or a verifier can accept a key revoked elsewhere.
pub const MAX_STALENESS: Duration = Duration::from_secs(1);

/// How a [`Verifier`] is set up. The defaults are the server's.
#[derive(Debug, Clone)]
pub struct VerifierOptions {
    /// Credentials held in memory at most (the server's `CACHE_MAX_KEYS`); 0 turns the cache
    /// off, and every verification reads the database.
    pub cache_max_keys: u64,
    /// How long a cached key is trusted before it is read again (`CACHE_TTL_SECS`): the
    /// bound for changes made by hand in SQL, which the change feed does not carry.
    pub cache_ttl: Duration,
    /// How often the change feed is read (`CACHE_SYNC_INTERVAL_MS`); above 0 and below 1 s.
    pub sync_interval: Duration,
    /// The keys used within this long are loaded into the cache before `connect` returns
    /// (`CACHE_WARM_START_SECS`; zero: none), so that a restarted service does not read
    /// every key's first verification from the database.
    pub cache_warm_start: Duration,
    /// How often the keys' last-use times are written (`LAST_USED_FLUSH_SECS`); above 0.
    pub usage_flush_interval: Duration,
    /// Connections at most and how long a verification waits for one (`DATABASE_POOL_SIZE`,
    /// `DATABASE_TIMEOUT_MS`).
    pub pool: PoolOptions,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            cache_max_keys: 20_000,
            cache_ttl: InMemoryCredentialCache::DEFAULT_FOUND_TTL,
            sync_interval: Duration::from_millis(200),
            cache_warm_start: Duration::from_secs(3600),
            usage_flush_interval: Duration::from_secs(10),
            pool: PoolOptions::for_machine(),
        }
    }
}

/// Verifies API keys against the Account API's database, giving the verdicts of
/// `POST /v1/internal/verify-key`.
///
/// It runs two tasks on the tokio runtime it was connected on: one reads the change feed
/// every [`VerifierOptions::sync_interval`], so a key revoked through the API (or any change
/// published to the feed) is refused within 1 s; the other writes the keys' last-use times
/// every [`VerifierOptions::usage_flush_interval`]. Call [`Self::shutdown`] before exiting so
/// that the last uses are written; dropping a verifier stops its tasks without writing them.
pub struct Verifier {
    service: Arc<AccountService>,
    database: DatabaseTarget,
    syncer: Option<JoinHandle<()>>,
    flusher: Option<JoinHandle<()>>,
    stop_flushing: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("database", &self.database).finish_non_exhaustive()
    }
}

impl Verifier {
    /// [`Self::connect_with`] the default options.
    pub async fn connect(database_url: &str) -> anyhow::Result<Self> {
        Self::connect_with(database_url, VerifierOptions::default()).await
    }

    /// Connects to the Account API's database at `database_url` (as the server's
    /// `DATABASE_URL`: `sqlite://PATH`, a plain path, `postgres://…`), checks that it holds
    /// every migration this build expects, reads the change feed once, loads the recently
    /// used keys into the cache (the warm start), and starts the sync
    /// and usage-flush tasks with `tokio::spawn` (call it within a tokio runtime).
    ///
    /// It never migrates the database and never prunes the change feed (the server does
    /// both): a database that lacks a migration, or that cannot be reached now, is an
    /// error (run `account-api migrate` first).
    pub async fn connect_with(database_url: &str, options: VerifierOptions) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !options.sync_interval.is_zero() && options.sync_interval < MAX_STALENESS,
            "the change-feed sync interval must be above 0 and below {} ms, not {} ms",
            MAX_STALENESS.as_millis(),
            options.sync_interval.as_millis()
        );
        anyhow::ensure!(!options.usage_flush_interval.is_zero(), "the usage flush interval must be above 0");
        let target = DatabaseTarget::parse(database_url)?;
        let db = Database::new(target.clone(), &options.pool);
        let check = db.clone();
        tokio::task::spawn_blocking(move || check.check_schema())
            .await
            .context("the schema check task failed")?
            .context("the Account API's database cannot be used for verifying keys")?;

        let mut service = AccountService::new(
            Arc::new(SqlAccountRepository::new(db.clone())),
            Arc::new(SqlKeyRepository::new(db.clone())),
            Arc::new(SystemClock),
            Arc::new(OsRandomGenerator),
        );
        let cached = options.cache_max_keys > 0;
        if cached {
            let feed = Arc::new(SqlChangeFeed::start(db).await.context("could not start the change feed")?);
            let cache = Arc::new(InMemoryCredentialCache::new(options.cache_max_keys, options.cache_ttl));
            service = service.with_cache(cache, feed, MAX_STALENESS);
        }
        let service = Arc::new(service);
        service.sync_changes().await.context("could not read the change feed")?;
        // It saves the database work; nothing depends on it.
        if let Err(e) = service.warm_cache(options.cache_warm_start, options.cache_max_keys).await {
            tracing::warn!(error = format!("{e:#}"), "warm start: could not load the recently used keys");
        }

        // Without a cache there is nothing to keep in step with the feed.
        let syncer =
            cached.then(|| tokio::spawn(sync_changes_periodically(service.clone(), options.sync_interval, None)));
        let (stop_flushing, stop) = oneshot::channel();
        let flusher = tokio::spawn(flush_usage_periodically(service.clone(), options.usage_flush_interval, stop));
        Ok(Self { service, database: target, syncer, flusher: Some(flusher), stop_flushing: Some(stop_flushing) })
    }

    /// Verifies `key` as presented by a client from `client_ip` (`None`: unknown), requiring
    /// every scope of `scopes` (empty: none; repeats count once): the same verdict as
    /// `POST /v1/internal/verify-key` with the same key and scopes. A `valid` or
    /// `insufficient_scope` verdict records the key's use, written at the next usage flush.
    /// An error means the database could not answer (no verdict).
    pub async fn verify(&self, key: &str, scopes: &[Scope], client_ip: Option<IpAddr>) -> anyhow::Result<Verification> {
        let required = Scopes::of(scopes.iter().copied());
        self.service.verify_key(key, required.as_ref(), client_ip).await.context("could not verify the key")
    }

    /// Verifications answered from memory and those that read the database, since connecting
    /// (`None` when the cache is off): for the embedding service's metrics.
    pub fn cache_stats(&self) -> Option<(u64, u64)> {
        self.service.cache_stats()
    }

    /// Stops the sync and flush tasks, waiting for a flush in progress, then writes the
    /// last-use times still in memory. Call it before the process exits: uses recorded since
    /// the last flush are lost otherwise.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(syncer) = self.syncer.take() {
            syncer.abort();
            // Cancelled: its end is all there is to wait for.
            let _ = syncer.await;
        }
        // The flusher stops between flushes, never in the middle of one.
        drop(self.stop_flushing.take());
        if let Some(flusher) = self.flusher.take() {
            if let Err(e) = flusher.await {
                tracing::warn!(error = %e, "the usage flush task ended abnormally");
            }
        }
        flush_usage_logged(&self.service).await.context("could not write the keys' last use at shutdown")?;
        Ok(())
    }
}

impl Drop for Verifier {
    /// Stops the tasks without writing the pending last-use times: see [`Verifier::shutdown`].
    fn drop(&mut self) {
        for task in [self.syncer.take(), self.flusher.take()].into_iter().flatten() {
            task.abort();
        }
    }
}

/// Keeps `service`'s credential cache in step with changes made anywhere, reading the change
/// feed every `every`; with a `pruner`, also deletes changes past their retention every
/// 10 min. What the server and a [`Verifier`] both run in the background.
pub async fn sync_changes_periodically(
    service: Arc<AccountService>,
    every: Duration,
    pruner: Option<Arc<SqlChangeFeed>>,
) {
    const PRUNE_EVERY: Duration = Duration::from_secs(600);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = std::time::Instant::now();
    let mut failing = false;
    loop {
        ticker.tick().await;
        match service.sync_changes().await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("change feed readable again: cache trusted again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = format!("{e:#}"), "could not read the change feed: cache bypassed until it can");
            }
            Err(_) => {}
        }
        if let Some(feed) = pruner.as_ref().filter(|_| last_prune.elapsed() >= PRUNE_EVERY) {
            last_prune = std::time::Instant::now();
            if let Err(e) = feed.prune().await {
                tracing::warn!(error = format!("{e:#}"), "could not prune the change feed");
            }
        }
    }
}

async fn flush_usage_periodically(service: Arc<AccountService>, every: Duration, mut stop: oneshot::Receiver<()>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: nothing has been used yet.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // Sent or dropped: either way, stop.
            _ = &mut stop => return,
        }
        if let Err(e) = flush_usage_logged(&service).await {
            tracing::warn!(error = format!("{e:#}"), "could not write key usage; will retry");
        }
    }
}

/// Flushes the usage held in memory ([`AccountService::flush_usage`]) and logs the uses it
/// dropped; returns the rows written, or the failure (its batch is kept for the next flush).
pub async fn flush_usage_logged(service: &AccountService) -> account_domain::StoreResult<usize> {
    let flush = service.flush_usage().await?;
    for dropped in &flush.dropped {
        match &dropped.refusal {
            None => tracing::warn!(
                uses = dropped.uses,
                keys = dropped.keys,
                "key usage dropped: its keys no longer exist (deleted with their organization?)"
            ),
            Some(e) => tracing::error!(
                uses = dropped.uses,
                keys = dropped.keys,
                error = format!("{e:#}"),
                "key usage dropped: the database refused it again and again"
            ),
        }
    }
    Ok(flush.rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_can_be_shared_between_tasks_and_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Verifier>();
    }

    #[test]
    fn the_defaults_are_the_servers() {
        let options = VerifierOptions::default();
        assert_eq!(options.cache_max_keys, 20_000);
        assert_eq!(options.cache_ttl, Duration::from_secs(60));
        assert_eq!(options.sync_interval, Duration::from_millis(200));
        assert_eq!(options.cache_warm_start, Duration::from_secs(3600));
        assert_eq!(options.usage_flush_interval, Duration::from_secs(10));
        assert_eq!(options.pool.checkout_timeout, Duration::from_millis(2000));
    }
}
