//! Webhook endpoints of the caller's organization: register, list, read, change, delete,
//! and rotate their signing secret.

use std::sync::Arc;

use thiserror::Error;
use time::Duration;

use super::account_update::acting_organization;
use super::{AccountService, InsufficientScope, Principal};
use crate::model::{
    AuditAction, AuditDetails, DetailValue, Environment, NewWebhook, RequestMeta, Scope, SigningSecret, WebhookChanges,
    WebhookEndpoint, WebhookEvents, WebhookId, WebhookUrl, WebhookUrlError,
};
use crate::ports::{
    AccountOpError, AccountWriteDecision, StoreError, WebhookActivity, WebhookRepository, WebhookSchedule,
    WebhookStoreError, WebhookTargets,
};

/// What webhooks are built from; without it every webhook operation answers
/// [`WebhookError::NotConfigured`].
#[derive(Clone)]
pub struct Webhooks {
    pub repository: Arc<dyn WebhookRepository>,
    pub activity: Arc<dyn WebhookActivity>,
    pub targets: Arc<dyn WebhookTargets>,
    /// The scheduled notices' marks and events.
    pub schedule: Arc<dyn WebhookSchedule>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

/// The error of every webhook operation.
#[derive(Debug, Error)]
pub enum WebhookError {
    /// The deployment has no key to seal signing secrets with (`WEBHOOK_SECRET_KEY`).
    #[error("webhooks are not configured on this deployment")]
    NotConfigured,
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    /// A test key: endpoints are live business.
    #[error("a test key cannot manage webhooks: use a live key")]
    TestKey,
    #[error("no such webhook endpoint")]
    NotFound,
    #[error("the organization already has {0} webhook endpoints, the most allowed: delete one first")]
    LimitReached(u32),
    #[error(transparent)]
    Url(#[from] WebhookUrlError),
    #[error("give at least one of `url`, `events`, `description` and `enabled`")]
    EmptyChange,
    #[error("`limit` must be a whole number from 1 to 100")]
    InvalidLimit,
    #[error("`before` must be an attempt id such as att_42")]
    InvalidCursor,
    /// The calling key may not act now (revoked meanwhile, expired, its address...), or the
    /// organization is closed, as the write's own transaction found them.
    #[error(transparent)]
    Refused(AccountOpError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<WebhookStoreError> for WebhookError {
    fn from(e: WebhookStoreError) -> Self {
        match e {
            WebhookStoreError::LimitReached(max) => Self::LimitReached(max),
            WebhookStoreError::Refused(AccountOpError::Store(e)) | WebhookStoreError::Store(e) => Self::Store(e),
            WebhookStoreError::Refused(refused) => Self::Refused(refused),
        }
    }
}

/// A new endpoint as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    pub url: WebhookUrl,
    pub events: WebhookEvents,
    pub description: Option<String>,
}

/// An endpoint with its signing secret, shown this once.
#[derive(Debug, Clone)]
pub struct WebhookWithSecret {
    pub endpoint: WebhookEndpoint,
    pub secret: SigningSecret,
}

/// A page of an endpoint's attempts, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttemptPage {
    pub attempts: Vec<crate::model::WebhookAttempt>,
    /// Older attempts exist: ask again with `before` = the last one's id.
    pub has_more: bool,
}

/// An attempt's id as the API shows it: `att_<n>`.
pub fn webhook_attempt_id(id: i64) -> String {
    format!("att_{id}")
}

/// How many endpoints an organization may have.
pub const MAX_WEBHOOKS_PER_ORG: u32 = 10;

/// How long the previous secret keeps signing beside a rotated one.
pub const PREVIOUS_SECRET_LIFETIME: Duration = Duration::hours(24);

impl AccountService {
    /// Adds what webhooks need; without it they answer [`WebhookError::NotConfigured`].
    pub fn with_webhooks(mut self, webhooks: Webhooks) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    /// Whether webhooks are configured.
    pub fn webhooks_configured(&self) -> bool {
        self.webhooks.is_some()
    }

    /// The decision of an endpoint write: the caller's key, as the write's own transaction
    /// finds it, may still act now from the request's address, and the organization is open
    /// (the rule of account writes, [`acting_organization`]).
    fn caller_still_acts(&self, meta: &RequestMeta) -> AccountWriteDecision<()> {
        let (now, client) = (self.clock.now(), meta.client_ip());
        Arc::new(move |found| acting_organization(&found, client, now).map(|_| ()))
    }

    fn webhooks_for(&self, caller: &Principal, needs: Scope) -> Result<&Webhooks, WebhookError> {
        let webhooks = self.webhooks.as_ref().ok_or(WebhookError::NotConfigured)?;
        self.authorize(caller, needs)?;
        if caller.environment() != Environment::Live {
            return Err(WebhookError::TestKey);
        }
        Ok(webhooks)
    }

    /// Registers an endpoint: needs a live key with `write`; the URL's target must be
    /// public (unless the deployment allows otherwise); at most [`MAX_WEBHOOKS_PER_ORG`].
    /// Audited (`webhook.created`). The secret is shown this once.
    pub async fn create_webhook(
        &self,
        caller: &Principal,
        request: WebhookRequest,
        meta: &RequestMeta,
    ) -> Result<WebhookWithSecret, WebhookError> {
        let webhooks = self.webhooks_for(caller, Scope::Write)?;
        webhooks.targets.check(&request.url).await?;
        let now = self.clock.now();
        let new = NewWebhook {
            id: self.generator.webhook_id(),
            org_id: caller.org_id().clone(),
            url: request.url,
            description: request.description,
            events: request.events,
            at: now,
        };
        let audit = self.audit_record(
            caller.org_id(),
            AuditAction::WebhookCreated,
            Some(new.id.as_str()),
            Some(caller),
            meta,
            now,
        );
        let decide = self.caller_still_acts(meta);
        let (endpoint, secret) =
            webhooks.repository.create_webhook(&new, MAX_WEBHOOKS_PER_ORG, caller.key_id(), decide, &audit).await?;
        Ok(WebhookWithSecret { endpoint, secret })
    }

    /// The organization's endpoints, oldest first. Needs a live key with `read`.
    pub async fn list_webhooks(&self, caller: &Principal) -> Result<Vec<WebhookEndpoint>, WebhookError> {
        let webhooks = self.webhooks_for(caller, Scope::Read)?;
        Ok(webhooks.repository.list_webhooks(caller.org_id()).await?)
    }

    /// One endpoint of the organization. Needs a live key with `read`.
    pub async fn get_webhook(&self, caller: &Principal, id: &str) -> Result<WebhookEndpoint, WebhookError> {
        let webhooks = self.webhooks_for(caller, Scope::Read)?;
        let id = WebhookId::new(id).map_err(|_| WebhookError::NotFound)?;
        webhooks.repository.find_webhook(caller.org_id(), &id).await?.ok_or(WebhookError::NotFound)
    }

    /// Changes an endpoint (a new URL is checked as at registration). Needs a live key
    /// with `write`; audited (`webhook.updated`, naming the fields set, never their values).
    pub async fn update_webhook(
        &self,
        caller: &Principal,
        id: &str,
        changes: WebhookChanges,
        meta: &RequestMeta,
    ) -> Result<WebhookEndpoint, WebhookError> {
        let webhooks = self.webhooks_for(caller, Scope::Write)?;
        let id = WebhookId::new(id).map_err(|_| WebhookError::NotFound)?;
        if changes.is_empty() {
            return Err(WebhookError::EmptyChange);
        }
        if let Some(url) = &changes.url {
            webhooks.targets.check(url).await?;
        }
        let now = self.clock.now();
        let mut audit =
            self.audit_record(caller.org_id(), AuditAction::WebhookUpdated, Some(id.as_str()), Some(caller), meta, now);
        audit.details = AuditDetails::none().with("fields", DetailValue::List(changes.fields()));
        let decide = self.caller_still_acts(meta);
        let repository = &webhooks.repository;
        let updated =
            repository.update_webhook(caller.org_id(), &id, &changes, caller.key_id(), decide, &audit).await?;
        updated.ok_or(WebhookError::NotFound)
    }

    /// Deletes an endpoint with its deliveries. Needs a live key with `write`; audited
    /// (`webhook.deleted`).
    pub async fn delete_webhook(&self, caller: &Principal, id: &str, meta: &RequestMeta) -> Result<(), WebhookError> {
        let webhooks = self.webhooks_for(caller, Scope::Write)?;
        let id = WebhookId::new(id).map_err(|_| WebhookError::NotFound)?;
        let now = self.clock.now();
        let audit =
            self.audit_record(caller.org_id(), AuditAction::WebhookDeleted, Some(id.as_str()), Some(caller), meta, now);
        let decide = self.caller_still_acts(meta);
        if webhooks.repository.delete_webhook(caller.org_id(), &id, caller.key_id(), decide, &audit).await? {
            Ok(())
        } else {
            Err(WebhookError::NotFound)
        }
    }

    /// Sends a `webhook.test` event to an endpoint (delivered, signed and retried as every
    /// event); its message id. Needs a live key with `write`.
    pub async fn test_webhook(&self, caller: &Principal, id: &str, meta: &RequestMeta) -> Result<String, WebhookError> {
        let webhooks = self.webhooks_for(caller, Scope::Write)?;
        let id = WebhookId::new(id).map_err(|_| WebhookError::NotFound)?;
        let (now, decide) = (self.clock.now(), self.caller_still_acts(meta));
        let sent = webhooks.activity.send_test_event(caller.org_id(), &id, now, caller.key_id(), decide).await?;
        sent.ok_or(WebhookError::NotFound)
    }

    /// An endpoint's delivery attempts, newest first, `limit` (1 to 100, default 50) at a
    /// time, older than attempt `before` (`att_<n>`). Needs a live key with `read`.
    pub async fn webhook_attempts(
        &self,
        caller: &Principal,
        id: &str,
        before: Option<&str>,
        limit: Option<u32>,
    ) -> Result<WebhookAttemptPage, WebhookError> {
        let webhooks = self.webhooks_for(caller, Scope::Read)?;
        let id = WebhookId::new(id).map_err(|_| WebhookError::NotFound)?;
        let limit = limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(WebhookError::InvalidLimit);
        }
        let before = before
            .map(|raw| {
                raw.strip_prefix("att_")
                    .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                    .map(|digits| digits.parse::<i64>().unwrap_or(i64::MAX))
                    .ok_or(WebhookError::InvalidCursor)
            })
            .transpose()?;
        let mut attempts = webhooks
            .activity
            .list_attempts(caller.org_id(), &id, before, limit + 1)
            .await?
            .ok_or(WebhookError::NotFound)?;
        let has_more = attempts.len() > limit as usize;
        attempts.truncate(limit as usize);
        Ok(WebhookAttemptPage { attempts, has_more })
    }

    /// Gives an endpoint a new secret, shown this once; the previous one keeps signing
    /// beside it for [`PREVIOUS_SECRET_LIFETIME`]. Needs a live key with `write`; audited
    /// (`webhook.secret_rotated`).
    pub async fn rotate_webhook_secret(
        &self,
        caller: &Principal,
        id: &str,
        meta: &RequestMeta,
    ) -> Result<WebhookWithSecret, WebhookError> {
        let webhooks = self.webhooks_for(caller, Scope::Write)?;
        let id = WebhookId::new(id).map_err(|_| WebhookError::NotFound)?;
        let now = self.clock.now();
        let audit = self.audit_record(
            caller.org_id(),
            AuditAction::WebhookSecretRotated,
            Some(id.as_str()),
            Some(caller),
            meta,
            now,
        );
        let (until, decide) = (now + PREVIOUS_SECRET_LIFETIME, self.caller_still_acts(meta));
        let (endpoint, secret) = webhooks
            .repository
            .rotate_webhook_secret(caller.org_id(), &id, until, caller.key_id(), decide, &audit)
            .await?
            .ok_or(WebhookError::NotFound)?;
        Ok(WebhookWithSecret { endpoint, secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockWebhookActivity, MockWebhookRepository, MockWebhookTargets};
    use crate::service::test_support::*;

    fn service_with(repository: MockWebhookRepository, targets: MockWebhookTargets) -> Arc<AccountService> {
        let activity = Arc::new(MockWebhookActivity::new());
        let schedule = Arc::new(crate::ports::MockWebhookSchedule::new());
        let webhooks = Webhooks { repository: Arc::new(repository), activity, targets: Arc::new(targets), schedule };
        Ports::new().service_with(|service| service.with_webhooks(webhooks))
    }

    fn request() -> WebhookRequest {
        WebhookRequest {
            url: WebhookUrl::new("https://hooks.example.com/in").expect("valid"),
            events: WebhookEvents::new(["key.created"]).expect("valid"),
            description: None,
        }
    }

    #[tokio::test]
    async fn without_configuration_every_operation_is_refused() {
        let service = Ports::new().service();
        let caller = principal(&["read", "write"], Environment::Live);
        let outcome = service.create_webhook(&caller, request(), &RequestMeta::default()).await;
        assert!(matches!(outcome, Err(WebhookError::NotConfigured)));
        assert!(matches!(service.list_webhooks(&caller).await, Err(WebhookError::NotConfigured)));
    }

    #[tokio::test]
    async fn managing_webhooks_needs_a_live_key_with_the_scope() {
        let mut repository = MockWebhookRepository::new();
        repository.expect_create_webhook().never();
        repository.expect_list_webhooks().never();
        let service = service_with(repository, MockWebhookTargets::new());
        let meta = RequestMeta::default();
        let reader = principal(&["read"], Environment::Live);
        let test = principal(&["read", "write"], Environment::Test);
        assert!(matches!(
            service.create_webhook(&reader, request(), &meta).await,
            Err(WebhookError::InsufficientScope(_))
        ));
        assert!(matches!(service.create_webhook(&test, request(), &meta).await, Err(WebhookError::TestKey)));
        assert!(matches!(service.list_webhooks(&test).await, Err(WebhookError::TestKey)));
    }

    #[tokio::test]
    async fn a_target_refused_by_the_check_writes_nothing() {
        let mut repository = MockWebhookRepository::new();
        repository.expect_create_webhook().never();
        let mut targets = MockWebhookTargets::new();
        targets.expect_check().returning(|_| Err(WebhookUrlError::NotPublic));
        let service = service_with(repository, targets);
        let caller = principal(&["write"], Environment::Live);
        let outcome = service.create_webhook(&caller, request(), &RequestMeta::default()).await;
        assert!(matches!(outcome, Err(WebhookError::Url(WebhookUrlError::NotPublic))));
    }

    #[tokio::test]
    async fn a_write_is_decided_on_the_calling_key_and_organization_as_its_transaction_finds_them() {
        let mut repository = MockWebhookRepository::new();
        repository.expect_update_webhook().times(1).returning(|_, _, _, actor, decide, _| {
            assert_eq!(actor.as_str(), "key_caller");
            let key = api_key("key_caller", "org_caller");
            let organization = organization("org_caller");
            let found =
                |key, organization| crate::ports::FoundInAccountWrite { actor: Some((key, true)), organization };
            // As authenticated: it acts. Revoked meanwhile, or its organization closed: refused.
            decide(found(&key, &organization)).expect("acts");
            let revoked = key.clone().with(|k| k.revoked_at = Some(NOW));
            let refused = decide(found(&revoked, &organization)).expect_err("revoked");
            assert!(matches!(refused, AccountOpError::Actor(crate::ports::ActorRefused::Revoked)));
            let closed = organization.clone().with(|o| o.closed_at = Some(NOW));
            assert!(matches!(decide(found(&key, &closed)), Err(AccountOpError::Closed)));
            Err(WebhookStoreError::Refused(refused))
        });
        let service = service_with(repository, MockWebhookTargets::new());
        let caller = principal(&["write"], Environment::Live);
        let changes = WebhookChanges { enabled: Some(false), ..WebhookChanges::default() };
        let outcome = service.update_webhook(&caller, "wh_abc", changes, &RequestMeta::default()).await;
        assert!(matches!(outcome, Err(WebhookError::Refused(AccountOpError::Actor(_)))), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_change_is_audited_with_the_names_of_the_fields_it_sets() {
        let mut repository = MockWebhookRepository::new();
        repository
            .expect_update_webhook()
            .withf(|_, _, _, _, _, audit| {
                audit.action == AuditAction::WebhookUpdated
                    && audit.details.entries()
                        == [("fields".to_owned(), DetailValue::List(vec!["events".to_owned(), "enabled".to_owned()]))]
            })
            .returning(|_, _, _, _, _, _| Ok(None));
        let service = service_with(repository, MockWebhookTargets::new());
        let caller = principal(&["write"], Environment::Live);
        let changes = WebhookChanges {
            events: Some(WebhookEvents::new(["key.revoked"]).expect("valid")),
            enabled: Some(false),
            ..WebhookChanges::default()
        };
        let outcome = service.update_webhook(&caller, "wh_abc", changes, &RequestMeta::default()).await;
        assert!(matches!(outcome, Err(WebhookError::NotFound)));
    }
}
