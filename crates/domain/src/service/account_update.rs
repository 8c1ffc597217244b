//! Changing the caller's own account: its name, contact email and plan.

use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;

use super::keys::access::acting_key_of;
use super::{AccountService, Principal};
use crate::model::{
    AuditAction, AuditDetails, AuditRecord, DetailValue, EmailAddress, Environment, OrgName, Organization, PlanId,
    RequestMeta, Scope,
};
use crate::ports::{AccountOpError, AccountWrite, AccountWriteDecision, FoundInAccountWrite};

/// A change of account: at least one of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateAccountRequest {
    name: Option<OrgName>,
    email: Option<EmailAddress>,
    plan_id: Option<PlanId>,
}

/// A change of account that changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("give at least one of `name`, `email` and `plan_id`")]
pub struct EmptyAccountChange;

impl UpdateAccountRequest {
    pub fn new(
        name: Option<OrgName>,
        email: Option<EmailAddress>,
        plan_id: Option<PlanId>,
    ) -> Result<Self, EmptyAccountChange> {
        if name.is_none() && email.is_none() && plan_id.is_none() {
            return Err(EmptyAccountChange);
        }
        Ok(Self { name, email, plan_id })
    }
}

impl AccountService {
    /// Changes the caller's organization. Needs a live key with `write`; decided again on
    /// the key and organization as the write's own transaction finds them. Only what
    /// differs is written: `account.updated` names the fields changed (never their values),
    /// `account.plan_changed` gives the plans from and to; a new plan starts a new period
    /// today (UTC). Every instance applies the change within a second.
    pub async fn update_account(
        &self,
        caller: &Principal,
        request: UpdateAccountRequest,
        meta: &RequestMeta,
    ) -> Result<Organization, AccountOpError> {
        self.may_change_account(caller, &[Scope::Write])?;
        if let Some(plan_id) = &request.plan_id {
            if self.accounts.find_plan(plan_id).await?.is_none() {
                return Err(AccountOpError::UnknownPlan);
            }
        }
        let (now, client) = (self.clock.now(), meta.client_ip());
        let (actor_id, meta) = (caller.key_id().clone(), meta.clone());
        let decide: AccountWriteDecision = Arc::new(move |found| {
            let org = acting_organization(&found, client, now)?;
            let name = request.name.clone().filter(|name| *name != org.name);
            let email = request.email.clone().filter(|email| *email != org.email);
            let plan = request.plan_id.clone().filter(|plan| *plan != org.plan.id);
            let event = |action, details| AuditRecord {
                org_id: org.id.clone(),
                action,
                target_id: Some(org.id.to_string()),
                actor_key_id: Some(actor_id.clone()),
                meta: meta.clone(),
                at: now,
                details,
            };
            let mut events = Vec::new();
            let fields: Vec<String> = [("name", name.is_some()), ("email", email.is_some())]
                .iter()
                .filter(|(_, changed)| *changed)
                .map(|(field, _)| (*field).to_owned())
                .collect();
            if !fields.is_empty() {
                events.push(event(
                    AuditAction::AccountUpdated,
                    AuditDetails::none().with("fields", DetailValue::List(fields)),
                ));
            }
            if let Some(to) = &plan {
                let details = AuditDetails::none()
                    .with("from", DetailValue::Text(org.plan.id.to_string()))
                    .with("to", DetailValue::Text(to.to_string()));
                events.push(event(AuditAction::AccountPlanChanged, details));
            }
            Ok(AccountWrite { name, email, plan, today: now.date(), close: None, events })
        });
        let organization = self.accounts.write_account(caller.org_id(), caller.key_id(), decide).await?;
        self.runtime.after_change().await;
        Ok(organization)
    }

    /// The caller may change its account: it holds `needs`, and it is a live key.
    pub(super) fn may_change_account(&self, caller: &Principal, needs: &[Scope]) -> Result<(), AccountOpError> {
        for scope in needs {
            self.authorize(caller, *scope)?;
        }
        if caller.environment() != Environment::Live {
            return Err(AccountOpError::TestKey);
        }
        Ok(())
    }
}

/// The organization an account write acts on, once its calling key, as the write found it,
/// may still act now from `client`, and the organization is open.
pub(super) fn acting_organization<'a>(
    found: &FoundInAccountWrite<'a>,
    client: Option<IpAddr>,
    now: OffsetDateTime,
) -> Result<&'a Organization, AccountOpError> {
    acting_key_of(found.actor, client, now)?;
    if found.organization.closed_at.is_some() {
        return Err(AccountOpError::Closed);
    }
    Ok(found.organization)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::*;

    fn request(name: Option<&str>, email: Option<&str>, plan: Option<&str>) -> UpdateAccountRequest {
        UpdateAccountRequest::new(
            name.map(|n| OrgName::new(n).expect("valid")),
            email.map(|e| EmailAddress::new(e).expect("valid")),
            plan.map(|p| PlanId::new(p).expect("valid")),
        )
        .expect("not empty")
    }

    /// Runs the write's decision on `organization` with the caller's key as found.
    fn decided(ports: &mut Ports, organization: Organization, actor: crate::model::ApiKey) {
        ports.accounts.expect_find_plan().returning(|id| Ok(Some(plan(id.as_str()))));
        ports.accounts.expect_write_account().returning(move |_, _, decide| {
            let write = decide(FoundInAccountWrite { actor: Some((&actor, true)), organization: &organization })?;
            let mut after = organization.clone();
            if let Some(name) = write.name {
                after.name = name;
            }
            if let Some(new_plan) = write.plan {
                after.plan = plan(new_plan.as_str());
            }
            let actions: Vec<_> = write.events.iter().map(|e| (e.action, e.details.clone())).collect();
            assert!(actions.len() <= 2, "{actions:?}");
            Ok(after)
        });
    }

    #[test]
    fn an_empty_change_is_refused() {
        assert_eq!(UpdateAccountRequest::new(None, None, None), Err(EmptyAccountChange));
    }

    #[tokio::test]
    async fn a_change_needs_a_live_key_with_write() {
        let service = Ports::new().service();
        let reader = principal(&["read"], Environment::Live);
        let test = principal(&["read", "write"], Environment::Test);
        let change = || request(Some("New"), None, None);
        let meta = RequestMeta::default();
        assert!(matches!(
            service.update_account(&reader, change(), &meta).await,
            Err(AccountOpError::InsufficientScope(_))
        ));
        assert!(matches!(service.update_account(&test, change(), &meta).await, Err(AccountOpError::TestKey)));
    }

    #[tokio::test]
    async fn the_events_name_the_fields_changed_and_the_plans_from_and_to_never_the_values() {
        let caller = principal(&["write"], Environment::Live);
        let actor = caller.key().clone();
        let mut ports = Ports::new();
        let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = recorded.clone();
        ports.accounts.expect_find_plan().returning(|id| Ok(Some(plan(id.as_str()))));
        ports.accounts.expect_write_account().returning(move |_, _, decide| {
            let org = organization("org_caller");
            let write = decide(FoundInAccountWrite { actor: Some((&actor, true)), organization: &org })?;
            assert_eq!(write.email, None, "the same email is no change");
            assert_eq!(write.today, NOW.date());
            seen.lock().expect("lock").extend(write.events);
            Ok(org)
        });
        let service = ports.service();
        // The organization is "My Company", admin@mycompany.com, on free.
        service
            .update_account(
                &caller,
                request(Some("Renamed"), Some("admin@mycompany.com"), Some("pro")),
                &RequestMeta::default(),
            )
            .await
            .expect("changed");
        let events = recorded.lock().expect("lock").clone();
        let summary: Vec<_> = events.iter().map(|e| (e.action, e.details.entries().to_vec())).collect();
        assert_eq!(
            summary,
            [
                (AuditAction::AccountUpdated, vec![("fields".to_owned(), DetailValue::List(vec!["name".to_owned()]))]),
                (
                    AuditAction::AccountPlanChanged,
                    vec![
                        ("from".to_owned(), DetailValue::Text("free".to_owned())),
                        ("to".to_owned(), DetailValue::Text("pro".to_owned()))
                    ]
                ),
            ]
        );
        assert!(events.iter().all(|e| e.actor_key_id.as_ref() == Some(caller.key_id())));
    }

    #[tokio::test]
    async fn a_key_revoked_while_its_change_was_in_flight_changes_nothing() {
        let caller = principal(&["write"], Environment::Live);
        let mut revoked = caller.key().clone();
        revoked.revoked_at = Some(NOW);
        let mut ports = Ports::new();
        decided(&mut ports, organization("org_caller"), revoked);
        let outcome =
            ports.service().update_account(&caller, request(Some("X"), None, None), &RequestMeta::default()).await;
        assert!(matches!(outcome, Err(AccountOpError::Actor(crate::ports::ActorRefused::Revoked))));
    }

    #[tokio::test]
    async fn an_unknown_plan_is_refused_before_any_write() {
        let mut ports = Ports::new();
        ports.accounts.expect_find_plan().returning(|_| Ok(None));
        ports.accounts.expect_write_account().never();
        let caller = principal(&["write"], Environment::Live);
        let outcome =
            ports.service().update_account(&caller, request(None, None, Some("gold")), &RequestMeta::default()).await;
        assert!(matches!(outcome, Err(AccountOpError::UnknownPlan)));
    }
}
