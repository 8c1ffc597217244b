//! Signup: a new organization and the first key it calls the API with.

use thiserror::Error;

use super::keys::{CreatedKey, KeySpec};
use super::AccountService;
use crate::model::{
    AuditAction, CreateKeyRequest, EmailAddress, NewOrganization, OrgName, Organization, PlanId, RequestMeta,
};
use crate::ports::CreateOrganizationError;

/// A validated signup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupRequest {
    pub name: OrgName,
    pub email: EmailAddress,
    pub plan_id: PlanId,
}

impl SignupRequest {
    /// `plan_id` defaults to `free`.
    pub fn new(name: OrgName, email: EmailAddress, plan_id: Option<PlanId>) -> Self {
        Self { name, email, plan_id: plan_id.unwrap_or_else(PlanId::free) }
    }
}

/// The new organization and its first key, shown this once.
#[derive(Debug)]
pub struct Signup {
    pub organization: Organization,
    pub key: CreatedKey,
}

#[derive(Debug, Error)]
pub enum SignupError {
    #[error("no plan has the id `{0}`")]
    UnknownPlan(PlanId),
    #[error("an organization with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

impl AccountService {
    /// Creates the organization and its first key ("Default Key", live, read and write):
    /// without that key nobody could call the authenticated endpoints.
    pub async fn signup(&self, request: SignupRequest, meta: &RequestMeta) -> Result<Signup, SignupError> {
        if self.accounts.find_plan(&request.plan_id).await?.is_none() {
            return Err(SignupError::UnknownPlan(request.plan_id));
        }
        let now = self.clock.now();
        let org = NewOrganization {
            id: self.generator.organization_id(),
            name: request.name,
            email: request.email,
            plan_id: request.plan_id.clone(),
            created_at: now,
        };
        let first = CreateKeyRequest::default();
        let spec = KeySpec {
            name: first.name,
            environment: first.environment,
            scopes: first.scopes,
            expires_at: None,
            allowed_ips: None,
        };
        let (new_key, plaintext) = self.mint_key(&org.id, spec, now);
        let audit = self.audit_record(&org.id, AuditAction::Signup, Some(org.id.as_str()), None, meta, now);
        let organization = self.accounts.create_organization(&org, &new_key, &audit).await.map_err(|e| match e {
            CreateOrganizationError::EmailTaken => SignupError::EmailTaken,
            // The plan existed a moment ago; it vanished in between.
            CreateOrganizationError::UnknownPlan => SignupError::UnknownPlan(request.plan_id),
            CreateOrganizationError::Store(e) => SignupError::Store(e),
        })?;
        Ok(Signup { organization, key: CreatedKey { key: new_key.into_stored(), plaintext } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::*;

    fn request(plan: Option<&str>) -> SignupRequest {
        SignupRequest::new(
            OrgName::new("My Company").expect("valid"),
            EmailAddress::new("admin@mycompany.com").expect("valid"),
            plan.map(|p| PlanId::new(p).expect("valid")),
        )
    }

    #[tokio::test]
    async fn signup_creates_the_organization_with_a_live_read_write_default_key() {
        let mut ports = Ports::new();
        ports.accounts.expect_find_plan().returning(|id| Ok(Some(plan(id.as_str()))));
        ports.accounts.expect_create_organization().times(1).returning(|org, key, audit| {
            assert_eq!(audit.action, AuditAction::Signup);
            assert_eq!(key.org_id, org.id);
            assert_eq!(key.name.as_str(), "Default Key");
            assert_eq!(key.environment, Environment::Live);
            assert_eq!(key.scopes, Scopes::all());
            assert_eq!(key.expires_at, None);
            Ok(organization_from(org))
        });
        let signup = ports.service().signup(request(None), &RequestMeta::default()).await.expect("signup");
        assert_eq!(signup.organization.plan.id.as_str(), "free");
        assert!(signup.key.plaintext.expose().starts_with("mem_live_"));
        assert_eq!(
            signup.key.plaintext.hash(),
            PlaintextKey::parse(signup.key.plaintext.expose()).expect("valid").hash()
        );
    }

    #[tokio::test]
    async fn signup_with_an_unknown_plan_stores_nothing() {
        let mut ports = Ports::new();
        ports.accounts.expect_find_plan().returning(|_| Ok(None));
        ports.accounts.expect_create_organization().never();
        let err =
            ports.service().signup(request(Some("platinum")), &RequestMeta::default()).await.expect_err("unknown plan");
        assert!(matches!(err, SignupError::UnknownPlan(p) if p.as_str() == "platinum"));
    }

    #[tokio::test]
    async fn a_taken_email_is_reported_as_such() {
        let mut ports = Ports::new();
        ports.accounts.expect_find_plan().returning(|id| Ok(Some(plan(id.as_str()))));
        ports.accounts.expect_create_organization().returning(|_, _, _| Err(CreateOrganizationError::EmailTaken));
        let err = ports.service().signup(request(None), &RequestMeta::default()).await.expect_err("taken");
        assert!(matches!(err, SignupError::EmailTaken));
    }

    #[tokio::test]
    async fn a_store_failure_is_not_mistaken_for_a_missing_plan() {
        let mut ports = Ports::new();
        ports.accounts.expect_find_plan().returning(|_| Err(anyhow::anyhow!("disk on fire").into()));
        let err = ports.service().signup(request(None), &RequestMeta::default()).await.expect_err("failure");
        assert!(matches!(err, SignupError::Store(_)));
    }
}
