//! Reading the caller's own account.

use thiserror::Error;

use super::{AccountService, InsufficientScope, Principal};
use crate::model::{Organization, Scope};

#[derive(Debug, Error)]
pub enum GetAccountError {
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

impl AccountService {
    /// The caller's organization and plan. Needs `read`. Served from what authentication
    /// loaded (and cached): no further database work.
    pub async fn get_account<'a>(&self, caller: &'a Principal) -> Result<&'a Organization, GetAccountError> {
        self.authorize(caller, Scope::Read)?;
        Ok(caller.organization())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::*;

    #[tokio::test]
    async fn reading_the_account_needs_the_read_scope() {
        let ports = Ports::new();
        let err = ports.service().get_account(&principal(&["write"], Environment::Live)).await.expect_err("scope");
        assert!(matches!(err, GetAccountError::InsufficientScope(InsufficientScope(Scope::Read))));
    }

    #[tokio::test]
    async fn the_account_is_served_without_touching_the_store() {
        let mut ports = Ports::new();
        ports.accounts.expect_find_organization().never();
        let caller = principal(&["read"], Environment::Live);
        let org = ports.service().get_account(&caller).await.expect("account");
        assert_eq!(&org.id, caller.org_id());
    }
}
