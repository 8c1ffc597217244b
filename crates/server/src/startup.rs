//! Building and running the application: database, migrations, wiring, HTTP server.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use account_domain::{AccountService, UsageRetention};
use account_http::{AbuseLimits, InternalToken, LimitSettings, Metrics, ReadinessCheck};
use account_infra::{
    sync_changes_periodically, Database, InMemoryCredentialCache, OsRandomGenerator, SqlAccountRepository,
    SqlChangeFeed, SqlKeyRepository, SystemClock,
};
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::config::{CacheOptions, Config};

/// A built application, bound to its port and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    service: Arc<AccountService>,
    feed: Arc<SqlChangeFeed>,
    limits: web::Data<AbuseLimits>,
    usage_flush_interval: Duration,
    usage_retention: UsageRetention,
    cache: CacheOptions,
    /// Set once the warm start is over: until then `/readyz` answers 503.
    warmed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Application {
    /// Connects to the database (waiting for it up to the configured time), applies the
    /// migrations, and binds the listener. Port 0 binds a free port: see [`Self::port`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = Database::new(config.database.clone(), &config.pool);
        migrate_when_reachable(&db, config.connect_timeout).await?;

        let mut service = AccountService::new(
            Arc::new(SqlAccountRepository::new(db.clone())),
            Arc::new(SqlKeyRepository::new(db.clone())),
            Arc::new(SystemClock),
            Arc::new(OsRandomGenerator),
        )
        .with_max_active_keys(config.max_active_keys);
        let feed = Arc::new(SqlChangeFeed::start(db.clone()).await.context("could not start the change feed")?);
        if config.cache.max_keys > 0 {
            let cache = Arc::new(InMemoryCredentialCache::new(config.cache.max_keys, config.cache.ttl));
            service = service.with_cache(cache, feed.clone(), CacheOptions::MAX_STALENESS);
        }
        let service = Arc::new(service);
        service.sync_changes().await.context("could not read the change feed")?;
        let warmed = Arc::new(AtomicBool::new(false));
        let wiring =
            AppWiring::new(service.clone(), db, config.limits.clone(), config.internal_token.clone(), warmed.clone());
        let limits = wiring.limits.clone();

        let listener =
            TcpListener::bind(config.bind_addr).with_context(|| format!("could not bind {}", config.bind_addr))?;
        let port = listener.local_addr().context("could not read the bound address")?.port();
        let server = HttpServer::new(move || App::new().configure(|cfg| wiring.configure(cfg)))
            // A client has this long to send its request head (408 after).
            .client_request_timeout(Duration::from_secs(5))
            .listen(listener)
            .context("could not listen")?
            // Requests in flight when SIGTERM or Ctrl-C arrives get this long to finish.
            .shutdown_timeout(30)
            // actix stops at once on SIGINT; both signals are handled here, gracefully.
            .disable_signals()
            .run();
        tracing::info!(address = %config.bind_addr.ip(), port, database = %config.database, "listening");
        Ok(Self {
            port,
            server,
            service,
            feed,
            limits,
            usage_flush_interval: config.usage_flush_interval,
            usage_retention: config.usage_retention,
            cache: config.cache,
            warmed,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or Ctrl-C, lets the requests in flight finish, then writes the
    /// last-use times still in memory. Ready (`/readyz`) once the warm start is over.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let flusher = tokio::spawn(flush_usage_periodically(self.service.clone(), self.usage_flush_interval));
        let syncer =
            tokio::spawn(sync_changes_periodically(self.service.clone(), self.cache.sync_interval, Some(self.feed)));
        let warmer = tokio::spawn(warm_start(self.service.clone(), self.cache.clone(), self.warmed.clone()));
        let (limits, service, retention) = (self.limits.clone(), self.service.clone(), self.usage_retention);
        let janitor = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(60));
            for minute in 0u64.. {
                ticker.tick().await;
                limits.forget_idle_clients();
                if minute % 60 == 0 {
                    match service.prune_usage(retention).await {
                        Ok(rows) => tracing::debug!(rows, "pruned old usage counts"),
                        Err(e) => tracing::warn!(error = format!("{e:#}"), "could not prune usage counts"),
                    }
                }
            }
        });
        let handle = self.server.handle();
        let signals = tokio::spawn(async move {
            match shutdown_signal().await {
                Ok(signal) => {
                    tracing::info!(signal, "shutting down: finishing the requests in flight")
                }
                Err(e) => tracing::error!(error = %e, "cannot listen for signals; shutting down"),
            }
            handle.stop(true).await;
        });
        let served = self.server.await.context("the HTTP server failed");
        signals.abort();
        warmer.abort();
        janitor.abort();
        flusher.abort();
        syncer.abort();
        match account_infra::flush_usage_logged(&self.service).await {
            Ok(n) => tracing::info!(rows = n, "final flush of key usage"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "could not write key usage at shutdown"),
        }
        tracing::info!("stopped");
        served
    }
}

/// What every worker's `App` is made of: the shared state and the routes. Also used by the
/// in-process route benchmark, so that it measures exactly what the server serves.
#[derive(Clone)]
pub struct AppWiring {
    service: web::Data<AccountService>,
    readiness: web::Data<ReadinessCheck>,
    limits: web::Data<AbuseLimits>,
    metrics: web::Data<Metrics>,
    internal_token: Option<InternalToken>,
}

impl std::fmt::Debug for AppWiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppWiring").finish_non_exhaustive()
    }
}

impl AppWiring {
    pub fn new(
        service: Arc<AccountService>,
        db: Database,
        limits: LimitSettings,
        internal_token: Option<InternalToken>,
        warmed: Arc<AtomicBool>,
    ) -> Self {
        let metrics = web::Data::new(metrics_of(&service, &db));
        let readiness: ReadinessCheck = Arc::new(move || {
            let (db, warmed) = (db.clone(), warmed.load(Ordering::Acquire));
            Box::pin(async move {
                if !warmed {
                    return Err("still loading the recently used keys (warm start)");
                }
                if db.ping().await {
                    Ok(())
                } else {
                    Err("the database is not reachable")
                }
            })
        });
        Self {
            service: web::Data::from(service),
            readiness: web::Data::new(readiness),
            limits: web::Data::new(AbuseLimits::new(limits)),
            metrics,
            internal_token,
        }
    }

    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.service.clone())
            .app_data(self.readiness.clone())
            .app_data(self.limits.clone())
            .app_data(self.metrics.clone());
        account_http::configure(cfg, self.internal_token.clone());
    }
}

/// The HTTP layer's metrics plus what the service and the pool report.
fn metrics_of(service: &Arc<AccountService>, db: &Database) -> Metrics {
    let (hits, misses, in_use, idle) = (service.clone(), service.clone(), db.clone(), db.clone());
    let (flushes, rows, reads) = (service.clone(), service.clone(), service.clone());
    let (dropped, unwritten) = (service.clone(), service.clone());
    Metrics::new()
        .counter_from(
            "credential_store_reads_total",
            "Credential reads from the database (concurrent misses for one key count once)",
            move || reads.credential_store_reads(),
        )
        .counter_from("usage_flushes_total", "Batches of key usage written to the database", move || {
            flushes.usage_flush_stats().0
        })
        .counter_from(
            "usage_flush_rows_total",
            "Rows those batches held (last uses and counts); divided by usage_flushes_total, rows per flush",
            move || rows.usage_flush_stats().1,
        )
        .counter_from(
            "usage_counts_dropped_total",
            "Uses counted in memory and never written: their key was deleted first, or the database refused them again and again",
            move || dropped.usage_dropped(),
        )
        .gauge_from(
            "usage_unwritten_oldest_seconds",
            "Age of the oldest use held in memory, not yet written: what a crash (kill -9) would lose",
            move || unwritten.usage_unwritten_for().map_or(0, |age| age.as_secs()),
        )
        .counter_from("credential_cache_hits_total", "Authentications answered from memory", move || {
            hits.cache_stats().map_or(0, |(h, _)| h)
        })
        .counter_from("credential_cache_misses_total", "Authentications that read the database", move || {
            misses.cache_stats().map_or(0, |(_, m)| m)
        })
        .gauge_from("db_pool_connections_in_use", "Database connections checked out", move || {
            u64::from(in_use.pool_state().0)
        })
        .gauge_from("db_pool_connections_idle", "Database connections open and idle", move || {
            u64::from(idle.pool_state().1)
        })
}

/// Waits for SIGTERM or SIGINT (Ctrl-C) and names it.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// Loads the recently used keys into the cache, then says the instance is ready. A warm
/// start that fails is logged and skipped: it saves the database work, nothing depends on it.
async fn warm_start(service: Arc<AccountService>, cache: CacheOptions, warmed: Arc<AtomicBool>) {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=3 {
        match service.warm_cache(cache.warm_start, cache.max_keys).await {
            Ok(keys) => {
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                tracing::info!(
                    keys,
                    ms,
                    window_s = cache.warm_start.as_secs(),
                    "warm start: recently used keys loaded"
                );
                break;
            }
            Err(e) => {
                tracing::warn!(attempt, error = format!("{e:#}"), "warm start: could not load the recently used keys");
                if attempt < 3 {
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
            }
        }
    }
    warmed.store(true, Ordering::Release);
}

async fn flush_usage_periodically(service: Arc<AccountService>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = account_infra::flush_usage_logged(&service).await {
            tracing::warn!(error = format!("{e:#}"), "could not write key usage; will retry");
        }
    }
}

/// Applies the migrations, retrying with backoff while the database cannot be reached.
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
