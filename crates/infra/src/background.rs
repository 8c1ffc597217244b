//! The tasks a built service runs beside its requests (cache sync, usage flush, warm start,
//! pruning), started in one place for each role and stopped with a last flush.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use account_domain::AccountService;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::composition::{Assembly, Role};
use crate::SqlChangeFeed;

/// The running tasks of one built service. Dropped, they stop without a last flush: call
/// [`Self::shutdown`] to write the usage still in memory.
pub struct BackgroundTasks {
    service: Arc<AccountService>,
    tasks: Vec<JoinHandle<()>>,
    flusher: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
}

impl std::fmt::Debug for BackgroundTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundTasks").field("tasks", &self.tasks.len()).finish_non_exhaustive()
    }
}

impl BackgroundTasks {
    /// Starts what `assembly`'s role runs (call within a tokio runtime):
    /// - server: the warm start (then `ready`), the cache sync that also prunes the change
    ///   feed, the usage flush, the pruning of old usage counts, and (with a
    ///   `WEBHOOK_SECRET_KEY`) the webhook delivery worker and the pass of scheduled notices;
    /// - verifier: the cache sync (when there is a cache) and the usage flush;
    /// - operator: nothing.
    pub(crate) fn start(assembly: &Assembly, ready: Arc<AtomicBool>) -> Self {
        let service = assembly.service().clone();
        let settings = assembly.settings();
        let mut tasks = Vec::new();
        let mut flusher = None;
        match assembly.role() {
            Role::Operator => ready.store(true, Ordering::Release),
            role => {
                if role == Role::Server {
                    let (warming, window, max_keys) =
                        (service.clone(), settings.cache.warm_start, settings.cache.max_keys);
                    tasks.push(tokio::spawn(async move {
                        warm_start(&warming, window, max_keys).await;
                        ready.store(true, Ordering::Release);
                    }));
                    let (pruning, retention) = (service.clone(), settings.usage_retention);
                    // At start, then hourly: a restarted instance prunes at once.
                    tasks.push(tokio::spawn(every(Duration::ZERO, Duration::from_secs(3600), move || {
                        let service = pruning.clone();
                        async move {
                            match service.prune_usage(retention).await {
                                Ok(rows) => tracing::debug!(rows, "pruned old usage counts"),
                                Err(e) => tracing::warn!(error = format!("{e:#}"), "could not prune usage counts"),
                            }
                        }
                    })));
                    if let Some(key) = &settings.webhooks.secret_key {
                        let worker = crate::webhook_delivery::DeliveryWorker {
                            db: assembly.database().clone(),
                            key: key.clone(),
                            targets: crate::ResolvingWebhookTargets::new(settings.webhooks.allow_private_targets),
                            timeout: settings.webhooks.timeout,
                            retry_for: settings.webhooks.retry_for,
                            stats: assembly.webhook_stats().clone(),
                        };
                        tasks.push(tokio::spawn(crate::webhook_delivery::deliver_periodically(worker)));
                        let (scheduling, period) = (service.clone(), settings.webhooks.schedule_interval);
                        tasks.push(tokio::spawn(every(period, period, move || {
                            let service = scheduling.clone();
                            async move { send_scheduled_notices(&service).await }
                        })));
                    }
                } else {
                    ready.store(true, Ordering::Release);
                }
                if assembly.is_cached() {
                    let pruner = (role == Role::Server).then(|| assembly.feed().clone()).flatten();
                    tasks.push(tokio::spawn(sync_changes_periodically(
                        service.clone(),
                        settings.cache.sync_interval,
                        pruner,
                    )));
                } else if let Some(feed) = assembly.feed().clone().filter(|_| role == Role::Server) {
                    // No cache to keep in step; the feed still needs pruning.
                    let period = Duration::from_secs(600);
                    tasks.push(tokio::spawn(every(period, period, move || {
                        let feed = feed.clone();
                        async move { prune_feed(&feed).await }
                    })));
                }
                let (stop, stopped) = oneshot::channel();
                let task =
                    tokio::spawn(flush_usage_periodically(service.clone(), settings.usage_flush_interval, stopped));
                flusher = Some((task, stop));
            }
        }
        Self { service, tasks, flusher }
    }

    /// Also runs `work` every `period` (the first time after one period), until shutdown.
    pub fn every(&mut self, period: Duration, work: impl Fn() + Send + Sync + 'static) {
        let work = Arc::new(work);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        self.tasks.push(tokio::spawn(async move {
            loop {
                ticker.tick().await;
                work();
            }
        }));
    }

    /// Stops the tasks, waiting for a flush in progress, then writes the usage still in
    /// memory. Returns the rows that last flush wrote.
    pub async fn shutdown(mut self) -> account_domain::StoreResult<usize> {
        for task in self.tasks.drain(..) {
            task.abort();
            // Cancelled: its end is all there is to wait for.
            let _ = task.await;
        }
        if let Some((task, stop)) = self.flusher.take() {
            // The flusher stops between flushes, never in the middle of one.
            drop(stop);
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the usage flush task ended abnormally");
            }
        }
        flush_usage_logged(&self.service).await
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some((task, _)) = self.flusher.take() {
            task.abort();
        }
    }
}

/// Runs `work` after `first`, then every `period`.
async fn every<F, Fut>(first: Duration, period: Duration, work: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        work().await;
    }
}

/// One scheduled pass of webhook notices, its outcome logged (a failed pass is tried again
/// at the next).
async fn send_scheduled_notices(service: &AccountService) {
    match service.send_scheduled_notices().await {
        Ok(sent) if sent.keys + sent.usage > 0 => {
            tracing::info!(keys = sent.keys, usage = sent.usage, "scheduled webhook notices sent");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "the scheduled webhook notices could not be sent; will retry")
        }
    }
}

/// Loads the recently used keys into the cache, three attempts at most. A warm start that
/// fails is logged and skipped: it saves the database work, nothing depends on it.
pub(crate) async fn warm_start(service: &AccountService, window: Duration, max_keys: u64) {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=3 {
        match service.warm_cache(window, max_keys).await {
            Ok(keys) => {
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                tracing::info!(keys, ms, window_s = window.as_secs(), "warm start: recently used keys loaded");
                return;
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
}

/// Keeps `service`'s credential cache in step with changes made anywhere, reading the change
/// feed every `every`; with a `pruner`, also deletes changes past their retention every 10 min.
async fn sync_changes_periodically(service: Arc<AccountService>, every: Duration, pruner: Option<Arc<SqlChangeFeed>>) {
    const PRUNE_EVERY: Duration = Duration::from_secs(600);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = Instant::now();
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
            last_prune = Instant::now();
            prune_feed(feed).await;
        }
    }
}

async fn prune_feed(feed: &SqlChangeFeed) {
    if let Err(e) = feed.prune().await {
        tracing::warn!(error = format!("{e:#}"), "could not prune the change feed");
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
async fn flush_usage_logged(service: &AccountService) -> account_domain::StoreResult<usize> {
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
