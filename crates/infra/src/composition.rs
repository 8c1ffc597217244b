//! The one place the service is put together from [`Settings`]: repositories on the
//! database, the credential cache and the change feed, for the role the process plays.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use account_domain::{AccountService, Webhooks};
use anyhow::Context as _;

use crate::background::BackgroundTasks;
use crate::{
    Database, InMemoryCredentialCache, OsRandomGenerator, ResolvingWebhookTargets, Settings, SqlAccountRepository,
    SqlChangeFeed, SqlKeyRepository, SqlWebhookRepository, SqlWebhookSchedule, SystemClock,
};

/// What a process does with the service, which decides what is built and run beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP server: migrates (waiting for the database), caches, syncs, flushes usage,
    /// warms its cache and prunes the change feed and old usage counts.
    Server,
    /// A service verifying keys in process: checks the schema (never migrates, never
    /// waits), caches, syncs and flushes usage; never prunes.
    Verifier,
    /// A one-off operator command: migrates (waiting for the database); no cache, no
    /// background task.
    Operator,
}

/// A service built for a role, with what its background tasks need.
pub struct Assembly {
    role: Role,
    settings: Settings,
    database: Database,
    service: Arc<AccountService>,
    feed: Option<Arc<SqlChangeFeed>>,
    cached: bool,
    webhook_stats: Arc<crate::WebhookStats>,
}

impl std::fmt::Debug for Assembly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assembly").field("role", &self.role).field("database", &self.database).finish_non_exhaustive()
    }
}

impl Assembly {
    /// Builds the service for `role` from `settings`: prepares the database as the role
    /// does (migrates or checks the schema), wires the SQL repositories, and, except for an
    /// operator, the credential cache (when `cache.max_keys` > 0) with the change feed,
    /// read once before this returns.
    pub async fn build(settings: Settings, role: Role) -> anyhow::Result<Self> {
        settings.check()?;
        let database = Database::new(settings.database.clone(), &settings.pool);
        match role {
            Role::Server | Role::Operator => migrate_when_reachable(&database, settings.connect_timeout).await?,
            Role::Verifier => {
                let check = database.clone();
                tokio::task::spawn_blocking(move || check.check_schema())
                    .await
                    .context("the schema check task failed")?
                    .context("the Account API's database cannot be used for verifying keys")?;
            }
        }
        let mut service = AccountService::new(
            Arc::new(SqlAccountRepository::new(database.clone())),
            Arc::new(SqlKeyRepository::new(database.clone())),
            Arc::new(SystemClock),
            Arc::new(OsRandomGenerator),
        )
        .with_max_active_keys(settings.max_active_keys);
        if let Some(key) = &settings.webhooks.secret_key {
            let repository = Arc::new(SqlWebhookRepository::new(database.clone(), key.clone()));
            service = service.with_webhooks(Webhooks {
                repository: repository.clone(),
                activity: repository,
                targets: Arc::new(ResolvingWebhookTargets::new(settings.webhooks.allow_private_targets)),
                schedule: Arc::new(SqlWebhookSchedule::new(database.clone())),
            });
        }
        let cached = role != Role::Operator && settings.cache.max_keys > 0;
        // The server prunes the feed even without a cache; a verifier reads it only to cache.
        let feed = if cached || role == Role::Server {
            Some(Arc::new(SqlChangeFeed::start(database.clone()).await.context("could not start the change feed")?))
        } else {
            None
        };
        if let Some(feed) = feed.as_ref().filter(|_| cached) {
            let cache = Arc::new(InMemoryCredentialCache::new(settings.cache.max_keys, settings.cache.ttl));
            service = service.with_cache(cache, feed.clone(), settings.cache.max_staleness);
        }
        let service = Arc::new(service);
        if cached {
            service.sync_changes().await.context("could not read the change feed")?;
        }
        Ok(Self { role, settings, database, service, feed, cached, webhook_stats: Arc::default() })
    }

    pub fn service(&self) -> &Arc<AccountService> {
        &self.service
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What the webhook delivery worker did, for the metrics (zeros without one).
    pub fn webhook_stats(&self) -> &Arc<crate::WebhookStats> {
        &self.webhook_stats
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub(crate) fn feed(&self) -> &Option<Arc<SqlChangeFeed>> {
        &self.feed
    }

    pub(crate) fn is_cached(&self) -> bool {
        self.cached
    }

    /// Loads the keys used within `cache.warm_start` into the cache now (three attempts;
    /// a failure is logged, not returned: nothing depends on it).
    pub async fn warm_start(&self) {
        if self.cached {
            crate::background::warm_start(&self.service, self.settings.cache.warm_start, self.settings.cache.max_keys)
                .await;
        }
    }

    /// Starts the role's background tasks ([`BackgroundTasks::start`]). `ready` is set once
    /// the instance may take traffic: for a server, when its warm start is over.
    pub fn start(&self, ready: Arc<AtomicBool>) -> BackgroundTasks {
        BackgroundTasks::start(self, ready)
    }
}

/// Applies the migrations, retrying with backoff while the database cannot be reached for
/// up to `patience`.
pub async fn migrate_when_reachable(db: &Database, patience: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = db.clone();
        let outcome = tokio::task::spawn_blocking(move || attempt.migrate()).await.context("migration task failed")?;
        match outcome {
            Ok(ran) => {
                tracing::info!(database = %db.target(), migrations_applied = ran, "database ready");
                return Ok(());
            }
            Err(e) if started.elapsed() + delay < patience => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "database not reachable yet"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(e.context(format!(
                    "the database at {} could not be reached and migrated within {} s (DATABASE_CONNECT_TIMEOUT_S)",
                    db.target(),
                    patience.as_secs()
                )))
            }
        }
    }
}
