//! Operator actions and the plan catalogue.

use thiserror::Error;

use super::AccountService;
use crate::model::{AuditAction, OrgId, Organization, Plan, RequestMeta};

#[derive(Debug, Error)]
pub enum SetOrganizationActiveError {
    #[error("no such organization")]
    NotFound,
    #[error(transparent)]
    Unknown(#[from] crate::ports::StoreError),
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
        self.apply_own_change().await;
        Ok(org)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
