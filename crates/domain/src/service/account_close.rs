//! The end of an account: its owner closes it, and an operator erases a closed one's
//! personal data on request.

use std::sync::Arc;

use thiserror::Error;

use super::account_update::acting_organization;
use super::{AccountService, Principal};
use crate::model::{AuditAction, AuditDetails, AuditRecord, DetailValue, OrgId, Organization, RequestMeta, Scope};
use crate::ports::{AccountOpError, AccountWrite, AccountWriteDecision, EraseOutcome, StoreError};

/// Errors of [`AccountService::erase_organization`].
#[derive(Debug, Error)]
pub enum EraseError {
    #[error("no such organization")]
    NotFound,
    #[error("only a closed organization is erased: its owner closes it first (DELETE /v1/account)")]
    StillOpen,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The reason a key was revoked, as events give it.
pub const REVOKED_AS_ACCOUNT_CLOSED: &str = "account_closed";

impl AccountService {
    /// Closes the caller's organization, which `confirm` must name. Needs a live key with
    /// `read` and `write`. Every key of it is revoked (refused on every instance within a
    /// second), its email is free for a new signup, and `account.closed` is recorded, with a
    /// `key.revoked` (reason `account_closed`) for each key revoked.
    pub async fn close_account(
        &self,
        caller: &Principal,
        confirm: &str,
        meta: &RequestMeta,
    ) -> Result<Organization, CloseAccountError> {
        self.may_change_account(caller, &[Scope::Read, Scope::Write])?;
        if confirm != caller.org_id().as_str() {
            return Err(CloseAccountError::NotConfirmed);
        }
        let (now, client) = (self.clock.now(), meta.client_ip());
        let (actor_id, meta) = (caller.key_id().clone(), meta.clone());
        let decide: AccountWriteDecision = Arc::new(move |found| {
            let org = acting_organization(&found, client, now)?;
            let event = AuditRecord {
                org_id: org.id.clone(),
                action: AuditAction::AccountClosed,
                target_id: Some(org.id.to_string()),
                actor_key_id: Some(actor_id.clone()),
                meta: meta.clone(),
                at: now,
                details: AuditDetails::none(),
            };
            Ok(AccountWrite {
                name: None,
                email: None,
                plan: None,
                today: now.date(),
                close: Some(now),
                events: vec![event],
            })
        });
        let organization = self.accounts.write_account(caller.org_id(), caller.key_id(), decide).await?;
        self.runtime.after_change().await;
        Ok(organization)
    }

    /// Erases a closed organization's personal data (an operator honouring an erasure
    /// request): its name and email become `erased+<org_id>@invalid`, its keys' names and
    /// allowlists are cleared, the addresses and user agents of its audit events removed.
    /// Ids, plan periods and usage counts stay: billing and the audit trail need them.
    pub async fn erase_organization(&self, org_id: &str, meta: &RequestMeta) -> Result<Organization, EraseError> {
        let Ok(org_id) = OrgId::new(org_id) else {
            return Err(EraseError::NotFound);
        };
        let audit = AuditRecord {
            org_id: org_id.clone(),
            action: AuditAction::OrgErased,
            target_id: Some(org_id.to_string()),
            actor_key_id: None,
            meta: meta.clone(),
            at: self.clock.now(),
            details: AuditDetails::none(),
        };
        match self.accounts.erase_organization(&org_id, &audit).await? {
            EraseOutcome::Erased(organization) => {
                self.runtime.after_change().await;
                Ok(organization)
            }
            EraseOutcome::NotFound => Err(EraseError::NotFound),
            EraseOutcome::StillOpen => Err(EraseError::StillOpen),
        }
    }
}

/// Errors of [`AccountService::close_account`].
#[derive(Debug, Error)]
pub enum CloseAccountError {
    /// `confirm` does not name the caller's organization.
    #[error("must be this organization's id")]
    NotConfirmed,
    #[error(transparent)]
    Refused(#[from] AccountOpError),
}

impl From<crate::service::InsufficientScope> for CloseAccountError {
    fn from(e: crate::service::InsufficientScope) -> Self {
        Self::Refused(e.into())
    }
}

/// The `key.revoked` event of a key revoked because its organization closed.
pub fn revoked_by_closing(details: AuditDetails) -> AuditDetails {
    details.with("reason", DetailValue::Text(REVOKED_AS_ACCOUNT_CLOSED.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Environment;
    use crate::ports::FoundInAccountWrite;
    use crate::service::test_support::*;

    #[tokio::test]
    async fn closing_needs_read_and_write_a_live_key_and_the_organizations_own_id() {
        let mut ports = Ports::new();
        ports.accounts.expect_write_account().never();
        let service = ports.service();
        let meta = RequestMeta::default();
        let writer = principal(&["write"], Environment::Live);
        let test = principal(&["read", "write"], Environment::Test);
        let owner = principal(&["read", "write"], Environment::Live);
        assert!(matches!(
            service.close_account(&writer, "org_caller", &meta).await,
            Err(CloseAccountError::Refused(AccountOpError::InsufficientScope(_)))
        ));
        assert!(matches!(
            service.close_account(&test, "org_caller", &meta).await,
            Err(CloseAccountError::Refused(AccountOpError::TestKey))
        ));
        for wrong in ["", "org_other", "ORG_CALLER", " org_caller"] {
            assert!(matches!(service.close_account(&owner, wrong, &meta).await, Err(CloseAccountError::NotConfirmed)));
        }
    }

    #[tokio::test]
    async fn closing_revokes_at_the_current_time_and_records_account_closed() {
        let owner = principal(&["read", "write"], Environment::Live);
        let actor = owner.key().clone();
        let mut ports = Ports::new();
        ports.accounts.expect_write_account().times(1).returning(move |_, _, decide| {
            let org = organization("org_caller");
            let write = decide(FoundInAccountWrite { actor: Some((&actor, true)), organization: &org })?;
            assert_eq!(write.close, Some(NOW));
            assert_eq!(write.events.iter().map(|e| e.action).collect::<Vec<_>>(), [AuditAction::AccountClosed]);
            // A closed organization cannot be closed again.
            let closed = Organization { closed_at: Some(NOW), ..org.clone() };
            let again = decide(FoundInAccountWrite { actor: Some((&actor, true)), organization: &closed });
            assert!(matches!(again, Err(AccountOpError::Closed)));
            Ok(closed)
        });
        let closed =
            ports.service().close_account(&owner, "org_caller", &RequestMeta::default()).await.expect("closed");
        assert_eq!(closed.closed_at, Some(NOW));
    }

    #[tokio::test]
    async fn only_a_closed_organization_is_erased() {
        let mut ports = Ports::new();
        ports.accounts.expect_erase_organization().returning(|id, audit| {
            assert_eq!(audit.action, AuditAction::OrgErased);
            Ok(if id.as_str() == "org_open" { EraseOutcome::StillOpen } else { EraseOutcome::NotFound })
        });
        let service = ports.service();
        let meta = RequestMeta::operator();
        assert!(matches!(service.erase_organization("org_open", &meta).await, Err(EraseError::StillOpen)));
        assert!(matches!(service.erase_organization("org_gone", &meta).await, Err(EraseError::NotFound)));
        assert!(matches!(service.erase_organization("not an id", &meta).await, Err(EraseError::NotFound)));
    }
}
