//! Who is calling: the authenticated key and what it may do.

use std::sync::Arc;

use thiserror::Error;

use crate::model::{Environment, KeyId, OrgId, Organization, Scope, Scopes};
use crate::ports::KeyCredential;

/// The caller, once its key has been authenticated. Only authentication makes one; it
/// shares the (cached) credential instead of copying it, which keeps the hot path cheap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    credential: Arc<KeyCredential>,
    /// The UTC day this authentication was counted as a successful use, and as what, if it
    /// was: a scope found lacking later turns that use into a refusal of that day.
    counted: Option<(time::Date, crate::model::UseOutcome)>,
}

/// The caller's key lacks the scope an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("this API key lacks the `{0}` scope")]
pub struct InsufficientScope(pub Scope);

impl Principal {
    pub(crate) fn new(credential: Arc<KeyCredential>, counted: Option<(time::Date, crate::model::UseOutcome)>) -> Self {
        Self { credential, counted }
    }

    pub(crate) fn counted_use(&self) -> Option<(time::Date, crate::model::UseOutcome)> {
        self.counted
    }

    pub(crate) fn use_of(&self) -> crate::runtime::UseOf<'_> {
        let key = &self.credential.key;
        crate::runtime::UseOf { key: &key.id, org: &key.org_id, environment: key.environment }
    }

    /// The caller's key, as authenticated.
    pub(crate) fn key(&self) -> &crate::model::ApiKey {
        &self.credential.key
    }

    pub fn org_id(&self) -> &OrgId {
        &self.credential.key.org_id
    }

    pub fn key_id(&self) -> &KeyId {
        &self.credential.key.id
    }

    pub fn scopes(&self) -> &Scopes {
        &self.credential.key.scopes
    }

    pub fn environment(&self) -> Environment {
        self.credential.key.environment
    }

    /// When the caller's key stops working, if ever: no key it makes may outlive it.
    pub fn expires_at(&self) -> Option<time::OffsetDateTime> {
        self.credential.key.expires_at
    }

    /// Where the caller's key may be used from (`None`: anywhere): no key it makes may reach
    /// further.
    pub fn allowed_ips(&self) -> Option<&crate::model::AllowedIps> {
        self.credential.key.allowed_ips.as_ref()
    }

    /// The organization as it was when the key was authenticated.
    pub fn organization(&self) -> &Organization {
        &self.credential.organization
    }

    /// The same, as the credential shares it (one copy per organization in the cache).
    pub(crate) fn shared_organization(&self) -> &Arc<Organization> {
        &self.credential.organization
    }

    /// The credential's handle on its organization's quota counts.
    pub(crate) fn quota_slot(&self) -> &crate::runtime::QuotaSlot {
        &self.credential.quota
    }

    /// Whether this caller may create or manage keys of `environment`: a test key reaches
    /// only test keys, a live key reaches both.
    pub fn may_manage(&self, environment: Environment) -> bool {
        self.environment().may_manage(environment)
    }

    /// Whether the key holds `scope`. Services check through `AccountService::authorize`,
    /// which also counts a refusal.
    pub fn require(&self, scope: Scope) -> Result<(), InsufficientScope> {
        if self.scopes().contains(scope) {
            Ok(())
        } else {
            Err(InsufficientScope(scope))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::Environment;
    use crate::service::test_support::principal;

    #[test]
    fn a_test_key_may_manage_only_test_keys_and_a_live_key_both() {
        let (live, test) = (principal(&["write"], Environment::Live), principal(&["write"], Environment::Test));
        assert!(live.may_manage(Environment::Live) && live.may_manage(Environment::Test));
        assert!(test.may_manage(Environment::Test) && !test.may_manage(Environment::Live));
    }
}
