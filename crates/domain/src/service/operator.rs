//! Operator actions and the plan catalogue.

use std::sync::Arc;

use thiserror::Error;

use super::keys::{inherited, KeySpec};
use super::{AccountService, CreatedKey};
use crate::model::{AuditAction, CreateKeyRequest, NewApiKey, OrgId, Organization, Plan, RequestMeta};
use crate::ports::{Actor, KeyOpError, KeyWriteDecision, StoreError};

#[derive(Debug, Error)]
pub enum SetOrganizationActiveError {
    #[error("no such organization")]
    NotFound,
    #[error("the organization is closed: only `orgs erase` and `usage export` still apply to it")]
    Closed,
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

/// Errors of [`AccountService::issue_key`].
#[derive(Debug, Error)]
pub enum IssueKeyError {
    #[error("no such organization")]
    UnknownOrganization,
    #[error("the organization is closed: only `orgs erase` and `usage export` still apply to it")]
    Closed,
    #[error("the organization already has {0} active keys, the most allowed")]
    KeyLimitReached(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key an operator issued, with its organization as it was found (inactive, the key is
/// refused until the organization is activated).
#[derive(Debug)]
pub struct IssuedKey {
    pub created: CreatedKey,
    pub organization: Organization,
}

impl AccountService {
    /// The plans an organization can be on, cheapest first.
    pub async fn list_plans(&self) -> crate::ports::StoreResult<Vec<Plan>> {
        self.accounts.list_plans().await
    }

    /// Activates or deactivates an organization: a deactivated organization's keys are
    /// refused (403) on every instance once the change reaches its cache (within a second).
    pub async fn set_organization_active(
        &self,
        org_id: &str,
        active: bool,
        meta: &RequestMeta,
    ) -> Result<Organization, SetOrganizationActiveError> {
        let Ok(org_id) = OrgId::new(org_id) else {
            return Err(SetOrganizationActiveError::NotFound);
        };
        let action = if active { AuditAction::OrganizationActivated } else { AuditAction::OrganizationDeactivated };
        let audit = self.audit_record(&org_id, action, Some(org_id.as_str()), None, meta, self.clock.now());
        let org = self
            .accounts
            .set_organization_active(&org_id, active, &audit)
            .await?
            .ok_or(SetOrganizationActiveError::NotFound)?;
        // The store changes no closed organization; it hands it back as it is.
        if org.closed_at.is_some() {
            return Err(SetOrganizationActiveError::Closed);
        }
        self.runtime.after_change().await;
        Ok(org)
    }

    /// Issues a key to an organization on an operator's behalf: the way back in for an
    /// organization that revoked or let expire all its keys. No key asks for it, so none
    /// limits it (any environment, scopes and expiry) and the `key.created` event has no
    /// actor key; the organization's active key limit holds as for any creation. The key is
    /// issued to an inactive organization too (it is refused until the organization is
    /// activated). A new key is in no cache: no change needs publishing.
    pub async fn issue_key(
        &self,
        org_id: &str,
        request: CreateKeyRequest,
        meta: &RequestMeta,
    ) -> Result<IssuedKey, IssueKeyError> {
        let Ok(org_id) = OrgId::new(org_id) else {
            return Err(IssueKeyError::UnknownOrganization);
        };
        let organization = self.accounts.find_organization(&org_id).await?.ok_or(IssueKeyError::UnknownOrganization)?;
        let now = self.clock.now();
        // No key makes it: nothing inherited.
        let asked = request.expires_in.map(|days| days.after(now));
        let (expires_at, allowed_ips) = inherited(asked, &request.allowed_ips, None, false);
        let (new_key, plaintext) = self.mint_key(
            &org_id,
            KeySpec {
                name: request.name,
                environment: request.environment,
                scopes: request.scopes,
                expires_at,
                allowed_ips,
            },
            now,
        );
        let audit = self.audit_record(&org_id, AuditAction::KeyCreated, Some(new_key.id.as_str()), None, meta, now);
        // An operator is no key: nothing of a caller to decide on; but a closed organization,
        // as the write finds it, never gets a key again.
        let decide: KeyWriteDecision<NewApiKey> = Arc::new(move |found| {
            if found.organization_closed {
                return Err(KeyOpError::OrganizationClosed);
            }
            Ok(new_key.clone())
        });
        let outcome = self.keys.insert_key(&org_id, &Actor::Operator, decide, self.max_active_keys, &audit).await;
        let key = outcome.map_err(|e| match e {
            KeyOpError::LimitReached(max) => IssueKeyError::KeyLimitReached(max),
            KeyOpError::OrganizationClosed => IssueKeyError::Closed,
            KeyOpError::Store(e) => IssueKeyError::Store(e),
            // An operator is never refused as a key is, and the key is new: not expected.
            other => IssueKeyError::Store(StoreError::Failed(anyhow::Error::new(other))),
        })?;
        Ok(IssuedKey { created: CreatedKey { key, plaintext }, organization })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::FoundInWrite;
    use crate::service::test_support::*;

    #[tokio::test]
    async fn deactivating_an_unknown_organization_is_not_found() {
        let mut ports = Ports::new();
        ports.accounts.expect_set_organization_active().returning(|_, _, _| Ok(None));
        let service = ports.service();
        assert!(matches!(
            service.set_organization_active("org_missing", false, &RequestMeta::operator()).await,
            Err(SetOrganizationActiveError::NotFound)
        ));
        assert!(matches!(
            service.set_organization_active("not an id", false, &RequestMeta::operator()).await,
            Err(SetOrganizationActiveError::NotFound)
        ));
    }

    #[tokio::test]
    async fn deactivation_is_recorded_at_the_current_time() {
        let mut ports = Ports::new();
        ports
            .accounts
            .expect_set_organization_active()
            .withf(|id, active, audit| {
                id.as_str() == "org_abc"
                    && !*active
                    && audit.at == NOW
                    && audit.action == AuditAction::OrganizationDeactivated
            })
            .returning(|id, active, _| Ok(Some(organization(id.as_str()).with(|o| o.is_active = active))));
        let org = ports
            .service()
            .set_organization_active("org_abc", false, &RequestMeta::operator())
            .await
            .expect("deactivated");
        assert!(!org.is_active);
    }

    fn an_organization(active: bool) -> Ports {
        let mut ports = Ports::new();
        ports
            .accounts
            .expect_find_organization()
            .returning(move |id| Ok(Some(organization(id.as_str()).with(|o| o.is_active = active))));
        ports
    }

    #[tokio::test]
    async fn no_key_is_issued_to_an_organization_the_write_finds_closed() {
        let mut ports = an_organization(true);
        ports.keys.expect_insert_key().times(1).returning(|_, _, decide, _, _| {
            let closed = FoundInWrite { organization_closed: true, ..found_for_operator() };
            decide(closed).map(NewApiKey::into_stored)
        });
        let outcome = ports.service().issue_key("org_abc", CreateKeyRequest::default(), &RequestMeta::operator()).await;
        assert!(matches!(outcome, Err(IssueKeyError::Closed)));
    }

    #[tokio::test]
    async fn an_issued_key_is_created_by_the_operator_with_no_actor_key_in_its_audit_event() {
        let mut ports = an_organization(true);
        ports
            .keys
            .expect_insert_key()
            .times(1)
            .withf(|_, actor, decide, max, audit| {
                let key = decide(found_for_operator()).expect("an operator's key is made");
                *max == 7
                    && *actor == Actor::Operator
                    && audit.action == AuditAction::KeyCreated
                    && audit.target_id.as_deref() == Some(key.id.as_str())
                    && audit.actor_key_id.is_none()
                    && audit.org_id.as_str() == "org_abc"
                    && audit.meta == RequestMeta::operator()
                    && audit.at == NOW
            })
            .returning(|_, _, decide, _, _| decide(found_for_operator()).map(NewApiKey::into_stored));
        let service = ports.service_with(|s| s.with_max_active_keys(7));
        let request = CreateKeyRequest::new(
            Some(KeyName::new("Recovery").expect("valid")),
            Some(Environment::Test),
            Some(Scopes::parse(&["read"]).expect("valid")),
            Some(ExpiresInDays::new(30).expect("valid")),
        );
        let issued = service.issue_key("org_abc", request, &RequestMeta::operator()).await.expect("issued");
        let key = &issued.created.key;
        assert_eq!(key.org_id.as_str(), "org_abc");
        assert_eq!(key.name.as_str(), "Recovery");
        assert_eq!(key.environment, Environment::Test);
        assert_eq!(key.scopes, Scopes::parse(&["read"]).expect("valid"));
        assert_eq!(key.expires_at, Some(NOW + time::Duration::days(30)));
        assert!(issued.created.plaintext.expose().starts_with("mem_test_"));
        assert!(issued.created.plaintext.expose().starts_with(key.prefix.as_str().trim_end_matches("...")));
        assert!(issued.organization.is_active);
    }

    #[tokio::test]
    async fn an_issued_key_takes_the_defaults_of_a_created_key() {
        let mut ports = an_organization(true);
        ports
            .keys
            .expect_insert_key()
            .returning(|_, _, decide, _, _| decide(found_for_operator()).map(NewApiKey::into_stored));
        let issued = ports
            .service()
            .issue_key("org_abc", CreateKeyRequest::default(), &RequestMeta::operator())
            .await
            .expect("issued");
        let key = &issued.created.key;
        assert_eq!(key.name.as_str(), KeyName::DEFAULT);
        assert_eq!(key.environment, Environment::Live);
        assert_eq!(key.scopes, Scopes::all());
        assert_eq!(key.expires_at, None, "no expiry: not the expiry of any caller");
        assert_eq!(key.allowed_ips, None, "from anywhere: no caller's allowlist to keep");
        assert!(issued.created.plaintext.expose().starts_with("mem_live_"));
    }

    #[tokio::test]
    async fn an_issued_key_gets_the_allowlist_asked_for() {
        let mut ports = an_organization(true);
        ports
            .keys
            .expect_insert_key()
            .returning(|_, _, decide, _, _| decide(found_for_operator()).map(NewApiKey::into_stored));
        let ips = AllowedIps::parse(&["203.0.113.7"]).expect("valid").expect("not empty");
        let request = CreateKeyRequest { allowed_ips: NewKeyAllowlist::Only(ips.clone()), ..Default::default() };
        let issued = ports.service().issue_key("org_abc", request, &RequestMeta::operator()).await.expect("issued");
        assert_eq!(issued.created.key.allowed_ips, Some(ips));
    }

    #[tokio::test]
    async fn issuing_to_an_unknown_organization_is_refused_and_stores_nothing() {
        let mut ports = Ports::new();
        ports.accounts.expect_find_organization().returning(|_| Ok(None));
        ports.keys.expect_insert_key().never();
        let service = ports.service();
        for id in ["org_missing", "not an id"] {
            assert!(matches!(
                service.issue_key(id, CreateKeyRequest::default(), &RequestMeta::operator()).await,
                Err(IssueKeyError::UnknownOrganization)
            ));
        }
    }

    #[tokio::test]
    async fn issuing_at_the_active_key_limit_is_refused_with_the_limit() {
        let mut ports = an_organization(true);
        ports.keys.expect_insert_key().returning(|_, _, _, max, _| Err(KeyOpError::LimitReached(max)));
        let service = ports.service_with(|s| s.with_max_active_keys(3));
        let err = service.issue_key("org_abc", CreateKeyRequest::default(), &RequestMeta::operator()).await;
        assert!(matches!(err, Err(IssueKeyError::KeyLimitReached(3))), "{err:?}");
    }

    #[tokio::test]
    async fn an_inactive_organization_gets_its_key_and_is_returned_as_inactive() {
        let mut ports = an_organization(false);
        ports
            .keys
            .expect_insert_key()
            .times(1)
            .returning(|_, _, decide, _, _| decide(found_for_operator()).map(NewApiKey::into_stored));
        let issued = ports
            .service()
            .issue_key("org_abc", CreateKeyRequest::default(), &RequestMeta::operator())
            .await
            .expect("issued");
        assert!(!issued.organization.is_active);
    }

    #[tokio::test]
    async fn a_failing_store_is_passed_on_when_issuing() {
        let mut ports = Ports::new();
        ports.accounts.expect_find_organization().returning(|_| Err(StoreError::Unavailable(anyhow::anyhow!("down"))));
        ports.keys.expect_insert_key().never();
        let err = ports.service().issue_key("org_abc", CreateKeyRequest::default(), &RequestMeta::operator()).await;
        assert!(matches!(err, Err(IssueKeyError::Store(StoreError::Unavailable(_)))), "{err:?}");
    }
}
