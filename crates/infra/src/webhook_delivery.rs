//! The webhook delivery worker: claims due deliveries in a short transaction that commits
//! before anything is sent (no connection nor lock held while a receiver answers), signs
//! them per the Standard Webhooks specification, sends them, and records each attempt.
//! Several instances share the work: a claim is `FOR UPDATE SKIP LOCKED` on PostgreSQL and
//! a conditional update of `claimed_until` on SQLite (one writer at a time); a claim
//! expires after the timeout plus 30 s, so a process killed mid-delivery loses nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use account_domain::{
    AuditAction, AuditDetails, AuditRecord, DetailValue, OrgId, RequestMeta, WebhookHost, WebhookUrl,
};
use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use rand::Rng as _;
use sha2::Sha256;
use time::OffsetDateTime;

use crate::connection::DbConnection;
use crate::database::Database;
use crate::repo_error::RepoError;
use crate::rows::to_micros;
use crate::schema::{webhook_attempts, webhook_deliveries, webhook_endpoints};
use crate::{ResolvingWebhookTargets, WebhookKey};

/// At most this much of a receiver's answer is read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Deliveries claimed by one pass.
const CLAIM_BATCH: i64 = 50;
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`], with ±20% jitter.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// An endpoint whose every attempt failed for this long is disabled.
const DISABLE_AFTER: time::Duration = time::Duration::days(3);
/// Why, as the endpoint then shows it.
pub(crate) const FAILING_REASON: &str = "every delivery failed for 3 days";

/// What this instance's worker did and saw, for the metrics.
#[derive(Debug, Default)]
pub struct WebhookStats {
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    pending: AtomicU64,
    oldest_pending_secs: AtomicU64,
}

impl WebhookStats {
    /// Attempts answered 2xx.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Attempts that failed and will be retried.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Deliveries given up after `WEBHOOK_RETRY_HOURS`.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Deliveries not yet delivered nor failed (every instance's), as last counted.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Age of the oldest of them, as last counted.
    pub fn oldest_pending_secs(&self) -> u64 {
        self.oldest_pending_secs.load(Ordering::Relaxed)
    }
}

/// What the worker needs.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryWorker {
    pub db: Database,
    pub key: WebhookKey,
    pub targets: ResolvingWebhookTargets,
    pub timeout: Duration,
    pub retry_for: Duration,
    pub stats: Arc<WebhookStats>,
}

#[derive(Debug, QueryableByName)]
struct Claimed {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    endpoint_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    message_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    body: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    created_at: i64,
}

/// An endpoint as a delivery needs it: where, and its secrets still signing.
struct Target {
    url: WebhookUrl,
    secrets: Vec<Vec<u8>>,
}

/// The outcome of one attempt.
struct Outcome {
    status: Option<i32>,
    error: Option<String>,
    duration: Duration,
}

impl DeliveryWorker {
    /// Claims the due deliveries and sends them: each endpoint's one after the other (a
    /// slow receiver holds only its own), endpoints side by side. Returns how many it sent.
    pub(crate) async fn run_once(&self) -> anyhow::Result<usize> {
        let now = OffsetDateTime::now_utc();
        let until = to_micros(now + self.timeout + Duration::from_secs(30));
        let now_micros = to_micros(now);
        let claimed = self.db.write(move |conn| claim(conn, now_micros, until)).await.context("claiming deliveries")?;
        let sent = claimed.len();
        // In the order they were written (RETURNING gives no order).
        let mut claimed = claimed;
        claimed.sort_by_key(|d| d.id);
        let mut by_endpoint: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
        for delivery in claimed {
            by_endpoint.entry(delivery.endpoint_id.clone()).or_default().push(delivery);
        }
        let work = by_endpoint.into_values().map(|deliveries| async move {
            for delivery in deliveries {
                if let Err(e) = self.deliver(delivery).await {
                    tracing::warn!(error = format!("{e:#}"), "a webhook delivery could not be recorded");
                }
            }
        });
        futures_util::future::join_all(work).await;
        Ok(sent)
    }

    /// Counts the outbox (pending deliveries, the oldest one's age) for the metrics.
    async fn count_pending(&self) -> anyhow::Result<()> {
        let (count, oldest): (i64, Option<i64>) = self
            .db
            .read(|conn| {
                Ok(webhook_deliveries::table
                    .filter(webhook_deliveries::status.eq("pending"))
                    .select((diesel::dsl::count_star(), diesel::dsl::min(webhook_deliveries::created_at)))
                    .first(conn)?)
            })
            .await?;
        let age = oldest.map_or(0, |at| (to_micros(OffsetDateTime::now_utc()) - at).max(0) / 1_000_000);
        self.stats.pending.store(u64::try_from(count).unwrap_or(0), Ordering::Relaxed);
        self.stats.oldest_pending_secs.store(u64::try_from(age).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    async fn deliver(&self, delivery: Claimed) -> anyhow::Result<()> {
        let endpoint_id = delivery.endpoint_id.clone();
        let key = self.key.clone();
        let target = self.db.read(move |conn| target_of(conn, &key, &endpoint_id)).await?;
        let Some(target) = target else { return Ok(()) };
        let outcome = self.send(&target, &delivery).await;
        let delivered = outcome.status.is_some_and(|s| (200..300).contains(&s));
        let attempt = delivery.attempts + 1;
        let now = OffsetDateTime::now_utc();
        let next = now + backoff(attempt);
        let give_up = next
            > time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(delivery.created_at) * 1000)? + self.retry_for;
        let (status, counter) = if delivered {
            ("delivered", &self.stats.delivered)
        } else if give_up {
            ("failed", &self.stats.failed)
        } else {
            ("pending", &self.stats.retried)
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            message_id = %delivery.message_id,
            endpoint_id = %delivery.endpoint_id,
            attempt,
            status_code = outcome.status,
            error = outcome.error.as_deref(),
            outcome = status,
            "webhook attempt"
        );
        let (id, endpoint_id) = (delivery.id, delivery.endpoint_id.clone());
        self.db
            .write(move |conn| {
                diesel::insert_into(webhook_attempts::table)
                    .values((
                        webhook_attempts::delivery_id.eq(id),
                        webhook_attempts::endpoint_id.eq(&endpoint_id),
                        webhook_attempts::attempt.eq(attempt),
                        webhook_attempts::attempted_at.eq(to_micros(now)),
                        webhook_attempts::status_code.eq(outcome.status),
                        webhook_attempts::error.eq(outcome.error.as_deref()),
                        webhook_attempts::duration_ms
                            .eq(i64::try_from(outcome.duration.as_millis()).unwrap_or(i64::MAX)),
                    ))
                    .execute(conn)?;
                diesel::update(webhook_deliveries::table.filter(webhook_deliveries::id.eq(id)))
                    .set((
                        webhook_deliveries::status.eq(status),
                        webhook_deliveries::attempts.eq(attempt),
                        webhook_deliveries::next_attempt_at.eq(to_micros(next)),
                        webhook_deliveries::claimed_until.eq(None::<i64>),
                    ))
                    .execute(conn)?;
                if !delivered {
                    disable_if_failing_for_days(conn, &endpoint_id, now)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn send(&self, target: &Target, delivery: &Claimed) -> Outcome {
        let started = Instant::now();
        let failed = |error: String| Outcome { status: None, error: Some(error), duration: started.elapsed() };
        // Checked again at connection: a name may have been re-pointed since registration.
        let addresses = match self.targets.addresses(&target.url).await {
            Ok(addresses) => addresses,
            Err(e) => return failed(e.to_string()),
        };
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.timeout)
            .user_agent("account-api-webhooks");
        if let WebhookHost::Name(name) = target.url.host() {
            // Connect only to the addresses just checked.
            let port = target.url.port();
            let pinned: Vec<SocketAddr> = addresses.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            client = client.resolve_to_addrs(&name, &pinned);
        }
        let client = match client.build() {
            Ok(client) => client,
            Err(e) => return failed(format!("client: {e}")),
        };
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let signature = sign(&target.secrets, &delivery.message_id, timestamp, &delivery.body);
        let request = client
            .post(target.url.as_str())
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return failed("timeout".to_owned()),
            Err(e) => return failed(format!("connection: {}", without_url(&e))),
        };
        let status = i32::from(response.status().as_u16());
        // At most 64 KiB of the answer is read; the rest is dropped with the connection.
        let mut read = 0;
        while read < MAX_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        Outcome { status: Some(status), error: None, duration: started.elapsed() }
    }
}

/// A reqwest error's innermost cause (never its URL), at most 200 characters: what the log
/// and the deliveries listing show.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = String::from("failed");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    text.chars().take(200).collect()
}

/// `v1,<base64 HMAC-SHA256 of id.timestamp.body>` for each secret, space-separated.
pub(crate) fn sign(secrets: &[Vec<u8>], id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .map(|secret| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length");
            mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
            format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The delay before attempt `attempt + 1`: doubling from 1 s, at most 1 h, ±20% jitter.
fn backoff(attempt: i32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << attempt.clamp(1, 20).saturating_sub(1));
    doubled.min(MAX_BACKOFF).mul_f64(rand::rng().random_range(0.8..1.2))
}

/// Runs `worker` every 200 ms (at once again while it finds a full batch), until aborted.
pub(crate) async fn deliver_periodically(worker: DeliveryWorker) {
    let mut failing = false;
    let mut counted = Instant::now() - Duration::from_secs(60);
    loop {
        if counted.elapsed() >= Duration::from_secs(5) {
            counted = Instant::now();
            if let Err(e) = worker.count_pending().await {
                tracing::debug!(error = format!("{e:#}"), "the webhook outbox could not be counted");
            }
        }
        match worker.run_once().await {
            Ok(sent) if sent as i64 >= CLAIM_BATCH => continue,
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = format!("{e:#}"), "webhook deliveries could not be claimed; will retry");
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Disables the endpoint when every attempt to it failed for [`DISABLE_AFTER`] (none
/// answered 2xx since its first failure that long ago, counted from its last change, so
/// that enabling it again starts afresh), audited as `webhook.disabled`; its pending
/// deliveries are marked failed. In the caller's transaction.
fn disable_if_failing_for_days(conn: &mut DbConnection, endpoint: &str, now: OffsetDateTime) -> Result<(), RepoError> {
    let last_success: Option<i64> = webhook_attempts::table
        .filter(webhook_attempts::endpoint_id.eq(endpoint))
        .filter(webhook_attempts::status_code.between(200, 299))
        .select(diesel::dsl::max(webhook_attempts::attempted_at))
        .first(conn)?;
    let changed: Option<i64> = webhook_endpoints::table
        .filter(webhook_endpoints::id.eq(endpoint))
        .select(webhook_endpoints::updated_at)
        .first(conn)
        .optional()?;
    let since = last_success.unwrap_or(i64::MIN).max(changed.unwrap_or(i64::MIN));
    let first_failure: Option<i64> = webhook_attempts::table
        .filter(webhook_attempts::endpoint_id.eq(endpoint))
        .filter(webhook_attempts::attempted_at.gt(since))
        .select(diesel::dsl::min(webhook_attempts::attempted_at))
        .first(conn)?;
    if first_failure.is_none_or(|first| first > to_micros(now - DISABLE_AFTER)) {
        return Ok(());
    }
    let org: Option<String> = webhook_endpoints::table
        .filter(webhook_endpoints::id.eq(endpoint).and(webhook_endpoints::enabled.eq(true)))
        .select(webhook_endpoints::org_id)
        .first(conn)
        .optional()?;
    let Some(org) = org else { return Ok(()) };
    diesel::update(webhook_endpoints::table.filter(webhook_endpoints::id.eq(endpoint)))
        .set((webhook_endpoints::enabled.eq(false), webhook_endpoints::disabled_reason.eq(FAILING_REASON)))
        .execute(conn)?;
    diesel::update(
        webhook_deliveries::table
            .filter(webhook_deliveries::endpoint_id.eq(endpoint))
            .filter(webhook_deliveries::status.eq("pending")),
    )
    .set((webhook_deliveries::status.eq("failed"), webhook_deliveries::claimed_until.eq(None::<i64>)))
    .execute(conn)?;
    let record = AuditRecord {
        org_id: OrgId::new(&org).context("stored organization id")?,
        action: AuditAction::WebhookDisabled,
        target_id: Some(endpoint.to_owned()),
        actor_key_id: None,
        meta: RequestMeta::new(None, Some("webhook delivery worker")),
        at: now,
        details: AuditDetails::none().with("reason", DetailValue::Text(FAILING_REASON.to_owned())),
    };
    crate::audit_trail::record(conn, &record)?;
    tracing::warn!(endpoint_id = endpoint, org_id = %org, "webhook endpoint disabled: every delivery failed for 3 days");
    Ok(())
}

/// Claims up to [`CLAIM_BATCH`] due deliveries not claimed by anyone (or whose claim
/// expired) until `until`, in the caller's transaction.
fn claim(conn: &mut DbConnection, now: i64, until: i64) -> Result<Vec<Claimed>, RepoError> {
    let due = format!(
        "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= {now} \
         AND (claimed_until IS NULL OR claimed_until < {now}) ORDER BY id LIMIT {CLAIM_BATCH}"
    );
    let returning = "RETURNING id, endpoint_id, message_id, body, attempts, created_at";
    Ok(match conn {
        DbConnection::Postgres(pg) => diesel::sql_query(format!(
            "UPDATE webhook_deliveries SET claimed_until = {until} WHERE id IN ({due} FOR UPDATE SKIP LOCKED) {returning}"
        ))
        .load(pg)?,
        DbConnection::Sqlite(lite) => {
            diesel::sql_query(format!("UPDATE webhook_deliveries SET claimed_until = {until} WHERE id IN ({due}) {returning}"))
                .load(lite)?
        }
    })
}

/// The endpoint's URL and secrets still signing (the current one, and the previous one
/// until its time is up); `None` when the endpoint is gone.
fn target_of(conn: &mut DbConnection, key: &WebhookKey, id: &str) -> Result<Option<Target>, RepoError> {
    let row: Option<(String, String, Option<String>, Option<i64>)> = webhook_endpoints::table
        .filter(webhook_endpoints::id.eq(id))
        .select((
            webhook_endpoints::url,
            webhook_endpoints::secret_sealed,
            webhook_endpoints::previous_secret_sealed,
            webhook_endpoints::previous_secret_until,
        ))
        .first(conn)
        .optional()?;
    let Some((url, current, previous, until)) = row else { return Ok(None) };
    let mut secrets = vec![key.open(id, &current)?];
    if let (Some(previous), Some(until)) = (previous, until) {
        if until > to_micros(OffsetDateTime::now_utc()) {
            secrets.push(key.open(id, &previous)?);
        }
    }
    Ok(Some(Target { url: WebhookUrl::new(&url).context("stored webhook URL")?, secrets }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The specification's own example (standard-webhooks, spec/standard-webhooks.md).
        let secret = BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("base64");
        let body = r#"{"test": 2432232314}"#;
        let signature = sign(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn retries_back_off_doubling_with_jitter_up_to_an_hour() {
        for (attempt, base) in [(1, 1.0), (2, 2.0), (5, 16.0), (30, 3600.0)] {
            let delay = backoff(attempt).as_secs_f64();
            assert!(delay >= base * 0.8 && delay <= base * 1.2, "attempt {attempt}: {delay}");
        }
    }
}
