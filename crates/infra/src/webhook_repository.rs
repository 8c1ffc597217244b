//! Webhook endpoints in SQL, their signing secrets sealed with XChaCha20-Poly1305 under the
//! deployment's `WEBHOOK_SECRET_KEY`; and the check of their targets (no server-side
//! request forgery).

use std::net::IpAddr;

use account_domain::{
    is_public_address, AccountWriteDecision, AuditDetails, AuditRecord, DetailValue, KeyId, NewWebhook, OrgId,
    SigningSecret, StoreResult, WebhookActivity, WebhookAttempt, WebhookChanges, WebhookEndpoint, WebhookEvents,
    WebhookHost, WebhookId, WebhookRepository, WebhookStoreError, WebhookTargets, WebhookUrl, WebhookUrlError,
};
use anyhow::Context as _;
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use diesel::prelude::*;
use rand::rngs::OsRng;
use rand::TryRngCore as _;
use time::OffsetDateTime;

use crate::account_writes::decide_on_caller;
use crate::audit_trail;
use crate::connection::DbConnection;
use crate::database::Database;
use crate::repo_error::RepoError;
use crate::rows::{from_micros, to_micros};
use crate::schema::{webhook_attempts, webhook_deliveries, webhook_endpoints};

/// The deployment's key for sealing signing secrets: 32 bytes, given base64 in
/// `WEBHOOK_SECRET_KEY`. Never printed.
#[derive(Clone)]
pub struct WebhookKey([u8; 32]);

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKey([REDACTED])")
    }
}

impl WebhookKey {
    /// The key from its base64 text (standard alphabet, padded or not).
    pub fn from_base64(text: &str) -> Option<Self> {
        let text = text.trim();
        let bytes =
            BASE64.decode(text).ok().or_else(|| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text).ok())?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// Seals `secret` for endpoint `id` (bound to it: a sealed secret copied onto another
    /// endpoint does not open): base64 of a random 24-byte nonce and the ciphertext.
    fn seal(&self, id: &str, secret: &[u8]) -> anyhow::Result<String> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; 24];
        OsRng.try_fill_bytes(&mut nonce).context("the operating system's CSPRNG failed")?;
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret, aad: id.as_bytes() })
            .map_err(|_| anyhow::anyhow!("sealing a webhook secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(BASE64.encode(out))
    }

    /// The secret sealed by [`Self::seal`] for endpoint `id`.
    pub(crate) fn open(&self, id: &str, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let bytes = BASE64.decode(sealed).context("a sealed webhook secret is not base64")?;
        anyhow::ensure!(bytes.len() > 24, "a sealed webhook secret is too short");
        let (nonce, ciphertext) = bytes.split_at(24);
        XChaCha20Poly1305::new((&self.0).into())
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: id.as_bytes() })
            .map_err(|_| anyhow::anyhow!("a webhook secret does not open with WEBHOOK_SECRET_KEY"))
    }
}

/// A fresh secret: its 32 bytes, and the `whsec_` text shown once.
fn fresh_secret() -> anyhow::Result<([u8; 32], SigningSecret)> {
    let mut bytes = [0u8; 32];
    OsRng.try_fill_bytes(&mut bytes).context("the operating system's CSPRNG failed")?;
    let text = format!("whsec_{}", BASE64.encode(bytes));
    Ok((bytes, SigningSecret::new(text)))
}

#[derive(Debug, Clone)]
pub struct SqlWebhookRepository {
    db: Database,
    key: WebhookKey,
}

impl SqlWebhookRepository {
    pub fn new(db: Database, key: WebhookKey) -> Self {
        Self { db, key }
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = webhook_endpoints)]
struct EndpointRow {
    id: String,
    org_id: String,
    url: String,
    description: Option<String>,
    events: String,
    enabled: bool,
    disabled_reason: Option<String>,
    previous_secret_until: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl EndpointRow {
    fn into_domain(self) -> anyhow::Result<WebhookEndpoint> {
        let events: Vec<String> = serde_json::from_str(&self.events).context("stored webhook events")?;
        Ok(WebhookEndpoint {
            id: WebhookId::new(&self.id).context("stored webhook id")?,
            org_id: OrgId::new(&self.org_id).context("stored organization id")?,
            url: WebhookUrl::new(&self.url).context("stored webhook URL")?,
            description: self.description,
            events: WebhookEvents::new(events.iter().map(String::as_str)).context("stored webhook events")?,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            previous_secret_until: self.previous_secret_until.map(from_micros).transpose()?,
            created_at: from_micros(self.created_at)?,
            updated_at: from_micros(self.updated_at)?,
        })
    }
}

fn events_json(events: &WebhookEvents) -> String {
    serde_json::Value::from(events.types().iter().map(|e| e.as_str()).collect::<Vec<_>>()).to_string()
}

fn load(conn: &mut DbConnection, org: &str, id: &str) -> Result<Option<WebhookEndpoint>, RepoError> {
    let row = webhook_endpoints::table
        .filter(webhook_endpoints::org_id.eq(org).and(webhook_endpoints::id.eq(id)))
        .select(EndpointRow::as_select())
        .first::<EndpointRow>(conn)
        .optional()?;
    Ok(row.map(EndpointRow::into_domain).transpose()?)
}

#[async_trait]
impl WebhookRepository for SqlWebhookRepository {
    async fn create_webhook(
        &self,
        new: &NewWebhook,
        max: u32,
        actor: &KeyId,
        decide: AccountWriteDecision<()>,
        audit: &AuditRecord,
    ) -> Result<(WebhookEndpoint, SigningSecret), WebhookStoreError> {
        let (bytes, secret) = fresh_secret().map_err(|e| WebhookStoreError::Store(e.into()))?;
        let sealed = self.key.seal(new.id.as_str(), &bytes).map_err(|e| WebhookStoreError::Store(e.into()))?;
        let (new, actor, audit) = (new.clone(), actor.to_string(), audit.clone());
        let outcome = self
            .db
            .write(move |conn| {
                let org = new.org_id.as_str();
                // The organization's row locked: concurrent registrations count one after the other.
                decide_on_caller(conn, org, &actor, &decide)?;
                let count: i64 =
                    webhook_endpoints::table.filter(webhook_endpoints::org_id.eq(org)).count().get_result(conn)?;
                if count >= i64::from(max) {
                    return Ok(None);
                }
                let at = to_micros(new.at);
                diesel::insert_into(webhook_endpoints::table)
                    .values((
                        webhook_endpoints::id.eq(new.id.as_str()),
                        webhook_endpoints::org_id.eq(org),
                        webhook_endpoints::url.eq(new.url.as_str()),
                        webhook_endpoints::description.eq(new.description.as_deref()),
                        webhook_endpoints::events.eq(events_json(&new.events)),
                        webhook_endpoints::enabled.eq(true),
                        webhook_endpoints::secret_sealed.eq(&sealed),
                        webhook_endpoints::created_at.eq(at),
                        webhook_endpoints::updated_at.eq(at),
                    ))
                    .execute(conn)?;
                audit_trail::record(conn, &audit)?;
                load(conn, org, new.id.as_str())?
                    .ok_or_else(|| RepoError::Other(anyhow::anyhow!("inserted webhook endpoint not found")))
                    .map(Some)
            })
            .await
            .map_err(|e| e.into_webhook_error("creating a webhook endpoint"))?;
        match outcome {
            Some(endpoint) => Ok((endpoint, secret)),
            None => Err(WebhookStoreError::LimitReached(max)),
        }
    }

    async fn list_webhooks(&self, org: &OrgId) -> StoreResult<Vec<WebhookEndpoint>> {
        let org = org.to_string();
        self.db
            .read(move |conn| {
                let rows: Vec<EndpointRow> = webhook_endpoints::table
                    .filter(webhook_endpoints::org_id.eq(&org))
                    .order((webhook_endpoints::created_at.asc(), webhook_endpoints::id.asc()))
                    .select(EndpointRow::as_select())
                    .load(conn)?;
                Ok(rows.into_iter().map(EndpointRow::into_domain).collect::<anyhow::Result<Vec<_>>>()?)
            })
            .await
            .map_err(|e| e.into_store_error("listing webhook endpoints"))
    }

    async fn find_webhook(&self, org: &OrgId, id: &WebhookId) -> StoreResult<Option<WebhookEndpoint>> {
        let (org, id) = (org.to_string(), id.to_string());
        self.db
            .read(move |conn| load(conn, &org, &id))
            .await
            .map_err(|e| e.into_store_error("reading a webhook endpoint"))
    }

    async fn update_webhook(
        &self,
        org: &OrgId,
        id: &WebhookId,
        changes: &WebhookChanges,
        actor: &KeyId,
        decide: AccountWriteDecision<()>,
        audit: &AuditRecord,
    ) -> Result<Option<WebhookEndpoint>, WebhookStoreError> {
        let (org, id, changes, audit) = (org.to_string(), id.to_string(), changes.clone(), audit.clone());
        let actor = actor.to_string();
        self.db
            .write(move |conn| {
                decide_on_caller(conn, &org, &actor, &decide)?;
                if load(conn, &org, &id)?.is_none() {
                    return Ok(None);
                }
                let target = webhook_endpoints::table.filter(webhook_endpoints::id.eq(&id));
                if let Some(url) = &changes.url {
                    diesel::update(target).set(webhook_endpoints::url.eq(url.as_str())).execute(conn)?;
                }
                if let Some(events) = &changes.events {
                    diesel::update(target).set(webhook_endpoints::events.eq(events_json(events))).execute(conn)?;
                }
                if let Some(description) = &changes.description {
                    diesel::update(target)
                        .set(webhook_endpoints::description.eq(description.as_deref()))
                        .execute(conn)?;
                }
                if let Some(enabled) = changes.enabled {
                    diesel::update(target)
                        .set((
                            webhook_endpoints::enabled.eq(enabled),
                            webhook_endpoints::disabled_reason.eq(None::<String>),
                        ))
                        .execute(conn)?;
                }
                diesel::update(target).set(webhook_endpoints::updated_at.eq(to_micros(audit.at))).execute(conn)?;
                audit_trail::record(conn, &audit)?;
                load(conn, &org, &id)
            })
            .await
            .map_err(|e| e.into_webhook_error("changing a webhook endpoint"))
    }

    async fn delete_webhook(
        &self,
        org: &OrgId,
        id: &WebhookId,
        actor: &KeyId,
        decide: AccountWriteDecision<()>,
        audit: &AuditRecord,
    ) -> Result<bool, WebhookStoreError> {
        let (org, id, actor, audit) = (org.to_string(), id.to_string(), actor.to_string(), audit.clone());
        self.db
            .write(move |conn| {
                decide_on_caller(conn, &org, &actor, &decide)?;
                let deleted = diesel::delete(
                    webhook_endpoints::table
                        .filter(webhook_endpoints::org_id.eq(&org).and(webhook_endpoints::id.eq(&id))),
                )
                .execute(conn)?;
                if deleted == 0 {
                    return Ok(false);
                }
                audit_trail::record(conn, &audit)?;
                Ok(true)
            })
            .await
            .map_err(|e| e.into_webhook_error("deleting a webhook endpoint"))
    }

    async fn rotate_webhook_secret(
        &self,
        org: &OrgId,
        id: &WebhookId,
        keep_previous_until: OffsetDateTime,
        actor: &KeyId,
        decide: AccountWriteDecision<()>,
        audit: &AuditRecord,
    ) -> Result<Option<(WebhookEndpoint, SigningSecret)>, WebhookStoreError> {
        let (bytes, secret) = fresh_secret().map_err(|e| WebhookStoreError::Store(e.into()))?;
        let sealed = self.key.seal(id.as_str(), &bytes).map_err(|e| WebhookStoreError::Store(e.into()))?;
        let (org, id, actor, audit) = (org.to_string(), id.to_string(), actor.to_string(), audit.clone());
        let until = to_micros(keep_previous_until);
        let endpoint = self
            .db
            .write(move |conn| {
                decide_on_caller(conn, &org, &actor, &decide)?;
                let current: Option<String> = webhook_endpoints::table
                    .filter(webhook_endpoints::org_id.eq(&org).and(webhook_endpoints::id.eq(&id)))
                    .select(webhook_endpoints::secret_sealed)
                    .first(conn)
                    .optional()?;
                let Some(current) = current else {
                    return Ok(None);
                };
                diesel::update(webhook_endpoints::table.filter(webhook_endpoints::id.eq(&id)))
                    .set((
                        webhook_endpoints::secret_sealed.eq(&sealed),
                        webhook_endpoints::previous_secret_sealed.eq(Some(current)),
                        webhook_endpoints::previous_secret_until.eq(Some(until)),
                        webhook_endpoints::updated_at.eq(to_micros(audit.at)),
                    ))
                    .execute(conn)?;
                audit_trail::record(conn, &audit)?;
                load(conn, &org, &id)
            })
            .await
            .map_err(|e| e.into_webhook_error("rotating a webhook secret"))?;
        Ok(endpoint.map(|endpoint| (endpoint, secret)))
    }
}

#[async_trait]
impl WebhookActivity for SqlWebhookRepository {
    async fn send_test_event(
        &self,
        org: &OrgId,
        id: &WebhookId,
        at: OffsetDateTime,
        actor: &KeyId,
        decide: AccountWriteDecision<()>,
    ) -> Result<Option<String>, WebhookStoreError> {
        let (org, id, actor) = (org.to_string(), id.to_string(), actor.to_string());
        self.db
            .write(move |conn| {
                decide_on_caller(conn, &org, &actor, &decide)?;
                let data = AuditDetails::none().with("webhook_id", DetailValue::Text(id.clone()));
                crate::webhook_outbox::enqueue_event(conn, &org, "webhook.test", &data, at, Some(&id))
            })
            .await
            .map_err(|e| e.into_webhook_error("sending a webhook test event"))
    }

    async fn list_attempts(
        &self,
        org: &OrgId,
        id: &WebhookId,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Option<Vec<WebhookAttempt>>> {
        let (org, id) = (org.to_string(), id.to_string());
        self.db
            .read(move |conn| {
                if load(conn, &org, &id)?.is_none() {
                    return Ok(None);
                }
                let mut query = webhook_attempts::table
                    .inner_join(webhook_deliveries::table)
                    .filter(webhook_attempts::endpoint_id.eq(&id))
                    .into_boxed();
                if let Some(before) = before {
                    query = query.filter(webhook_attempts::id.lt(before));
                }
                type Row = (i64, String, String, i32, i64, Option<i32>, Option<String>, i64);
                let rows: Vec<Row> = query
                    .order(webhook_attempts::id.desc())
                    .limit(i64::from(limit))
                    .select((
                        webhook_attempts::id,
                        webhook_deliveries::message_id,
                        webhook_deliveries::event_type,
                        webhook_attempts::attempt,
                        webhook_attempts::attempted_at,
                        webhook_attempts::status_code,
                        webhook_attempts::error,
                        webhook_attempts::duration_ms,
                    ))
                    .load(conn)?;
                let attempts = rows
                    .into_iter()
                    .map(|(id, message_id, event_type, attempt, at, status, error, duration)| {
                        Ok(WebhookAttempt {
                            id,
                            message_id,
                            event_type,
                            attempt: u32::try_from(attempt).unwrap_or(0),
                            at: from_micros(at)?,
                            status_code: status.and_then(|s| u16::try_from(s).ok()),
                            error,
                            duration_ms: u64::try_from(duration).unwrap_or(0),
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(Some(attempts))
            })
            .await
            .map_err(|e| e.into_store_error("listing webhook attempts"))
    }
}

/// Checks webhook targets against the non-public ranges, resolving names with the
/// system's resolver; with `allow_private`, every target is allowed.
#[derive(Debug, Clone, Copy)]
pub struct ResolvingWebhookTargets {
    allow_private: bool,
}

impl ResolvingWebhookTargets {
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    /// The addresses `url` connects to, each of them public (unless allowed otherwise):
    /// what a delivery connects to, so that a name re-pointed since registration is
    /// checked again.
    pub async fn addresses(&self, url: &WebhookUrl) -> Result<Vec<IpAddr>, WebhookUrlError> {
        let addresses = match url.host() {
            WebhookHost::Address(ip) => vec![ip],
            WebhookHost::Name(name) => {
                let port = url.port();
                tokio::task::spawn_blocking(move || {
                    use std::net::ToSocketAddrs as _;
                    (name.as_str(), port).to_socket_addrs().map(|found| found.map(|a| a.ip()).collect::<Vec<_>>())
                })
                .await
                .map_err(|_| WebhookUrlError::Unresolvable)?
                .map_err(|_| WebhookUrlError::Unresolvable)?
            }
        };
        if addresses.is_empty() {
            return Err(WebhookUrlError::Unresolvable);
        }
        if !self.allow_private && !addresses.iter().all(|ip| is_public_address(*ip)) {
            return Err(WebhookUrlError::NotPublic);
        }
        Ok(addresses)
    }
}

#[async_trait]
impl WebhookTargets for ResolvingWebhookTargets {
    async fn check(&self, url: &WebhookUrl) -> Result<(), WebhookUrlError> {
        if self.allow_private {
            // Every target is allowed: nothing to resolve now (a delivery resolves it).
            return Ok(());
        }
        self.addresses(url).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_for_its_endpoint() {
        let key = WebhookKey([7; 32]);
        let sealed = key.seal("wh_a", b"the secret").expect("sealed");
        assert!(!sealed.contains("the secret"));
        assert_eq!(key.open("wh_a", &sealed).expect("opens"), b"the secret");
        assert!(key.open("wh_b", &sealed).is_err(), "bound to its endpoint");
        assert!(WebhookKey([8; 32]).open("wh_a", &sealed).is_err(), "only with its key");
    }

    #[test]
    fn keys_are_32_bytes_of_base64_and_never_printed() {
        let text = BASE64.encode([1u8; 32]);
        let key = WebhookKey::from_base64(&text).expect("32 bytes");
        assert!(!format!("{key:?}").contains(&text));
        assert!(WebhookKey::from_base64(&BASE64.encode([1u8; 16])).is_none());
        assert!(WebhookKey::from_base64("not base64!").is_none());
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_private_targets_are_allowed() {
        let url = WebhookUrl::new("http://127.0.0.1:9/hook").expect("valid");
        assert_eq!(ResolvingWebhookTargets::new(false).check(&url).await, Err(WebhookUrlError::NotPublic));
        ResolvingWebhookTargets::new(true).check(&url).await.expect("allowed");
        let named = WebhookUrl::new("http://localhost:9/hook").expect("valid");
        assert_eq!(ResolvingWebhookTargets::new(false).check(&named).await, Err(WebhookUrlError::NotPublic));
    }
}
