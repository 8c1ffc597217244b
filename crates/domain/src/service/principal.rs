//! Who is calling: the authenticated key and what it may do.

use thiserror::Error;

use crate::model::{Environment, KeyId, OrgId, Organization, Scope, Scopes};

/// The caller, once its key has been authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub org_id: OrgId,
    pub key_id: KeyId,
    pub scopes: Scopes,
    pub environment: Environment,
    /// The organization as it was when the key was authenticated.
    pub organization: Organization,
}

/// The caller's key lacks the scope an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("this API key lacks the `{0}` scope")]
pub struct InsufficientScope(pub Scope);

impl Principal {
    pub fn require(&self, scope: Scope) -> Result<(), InsufficientScope> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(InsufficientScope(scope))
        }
    }
}
