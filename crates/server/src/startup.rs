//! Building and running the application: database, migrations, wiring, HTTP server.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use account_domain::AccountService;
use account_http::{AbuseLimits, InternalToken, LimitSettings, Metrics, ReadinessCheck};
use account_infra::{Assembly, BackgroundTasks, Database, Role};
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::config::Config;

/// A built application, bound to its port and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    tasks: BackgroundTasks,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Application {
    /// Builds the service as [`Role::Server`] (waiting for the database up to the
    /// configured time, then migrating it), starts its background tasks, and binds the
    /// listener. Port 0 binds a free port: see [`Self::port`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let assembly = Assembly::build(config.settings.clone(), Role::Server).await?;
        // Set once the warm start is over: until then `/readyz` answers 503.
        let warmed = Arc::new(AtomicBool::new(false));
        let wiring = AppWiring::new(&assembly, config.limits.clone(), config.internal_token.clone(), warmed.clone());
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
        let mut tasks = assembly.start(warmed);
        tasks.every(Duration::from_secs(60), move || limits.forget_idle_clients());
        tracing::info!(address = %config.bind_addr.ip(), port, database = %config.settings.database, "listening");
        Ok(Self { port, server, tasks })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or Ctrl-C, lets the requests in flight finish, then writes the
    /// usage still in memory. Ready (`/readyz`) once the warm start is over.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
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
        match self.tasks.shutdown().await {
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
        assembly: &Assembly,
        limits: LimitSettings,
        internal_token: Option<InternalToken>,
        warmed: Arc<AtomicBool>,
    ) -> Self {
        let (service, db) = (assembly.service().clone(), assembly.database().clone());
        let metrics = web::Data::new(metrics_of(&service, &db, assembly.webhook_stats()));
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
fn metrics_of(service: &Arc<AccountService>, db: &Database, webhooks: &Arc<account_infra::WebhookStats>) -> Metrics {
    let (delivered, retried, failed) = (webhooks.clone(), webhooks.clone(), webhooks.clone());
    let (pending, oldest) = (webhooks.clone(), webhooks.clone());
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
        .counter_from("webhook_attempts_delivered_total", "Webhook attempts answered 2xx by this instance", move || {
            delivered.delivered()
        })
        .counter_from(
            "webhook_attempts_retried_total",
            "Webhook attempts that failed (status, timeout, connection) and will be retried",
            move || retried.retried(),
        )
        .counter_from(
            "webhook_deliveries_failed_total",
            "Webhook deliveries given up after WEBHOOK_RETRY_HOURS by this instance",
            move || failed.failed(),
        )
        .gauge_from("webhook_outbox_pending", "Webhook deliveries neither delivered nor failed (every instance's)", move || {
            pending.pending()
        })
        .gauge_from("webhook_outbox_oldest_seconds", "Age of the oldest pending webhook delivery", move || {
            oldest.oldest_pending_secs()
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
