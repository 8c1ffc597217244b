//! Prometheus metrics: requests by route, method and status, latency by route,
//! authentication failures by reason, and values read from elsewhere at scrape time
//! (cache hits and misses, database pool).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpResponse};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// A value read at scrape time.
type Reader = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The registry and the metrics the HTTP layer records itself.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    auth_failures: IntCounterVec,
    gauges: Vec<(IntGauge, Reader)>,
    counters: Vec<(IntCounter, Reader)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered, by route, method and status"),
            &["route", "method", "status"],
        )
        .unwrap_or_else(|e| unreachable!("valid metric: {e}"));
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time to answer a request, by route").buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("valid metric: {e}"));
        let auth_failures = IntCounterVec::new(
            Opts::new("auth_failures_total", "Refused authentications, by reason (the error code)"),
            &["reason"],
        )
        .unwrap_or_else(|e| unreachable!("valid metric: {e}"));
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(auth_failures.clone()),
        ] {
            registry.register(collector).unwrap_or_else(|e| unreachable!("registered once: {e}"));
        }
        Self { registry, requests, latency, auth_failures, gauges: Vec::new(), counters: Vec::new() }
    }

    /// A gauge whose value `read` gives at each scrape.
    pub fn gauge_from(mut self, name: &str, help: &str, read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        let gauge = IntGauge::new(name, help).unwrap_or_else(|e| panic!("invalid metric {name}: {e}"));
        self.registry.register(Box::new(gauge.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
        self.gauges.push((gauge, Arc::new(read)));
        self
    }

    /// A counter whose running total `read` gives at each scrape (it never decreases).
    pub fn counter_from(mut self, name: &str, help: &str, read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        let counter = IntCounter::new(name, help).unwrap_or_else(|e| panic!("invalid metric {name}: {e}"));
        self.registry.register(Box::new(counter.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
        self.counters.push((counter, Arc::new(read)));
        self
    }

    pub(crate) fn record_request(&self, route: &str, method: &str, status: StatusCode, seconds: f64) {
        self.requests.with_label_values(&[route, method, status.as_str()]).inc();
        self.latency.with_label_values(&[route]).observe(seconds);
    }

    pub(crate) fn record_auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        for (gauge, read) in &self.gauges {
            gauge.set(i64::try_from(read()).unwrap_or(i64::MAX));
        }
        for (counter, read) in &self.counters {
            counter.inc_by(read().saturating_sub(counter.get()));
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Prometheus metrics, in the text exposition format (the one route that is not JSON).
#[utoipa::path(tag = "operations", operation_id = "get_metrics", responses(
    (status = 200, description = "Metrics", content_type = "text/plain", body = String),
))]
#[get("/metrics")]
pub(crate) async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(metrics.render())
}
