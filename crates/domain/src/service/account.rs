//! Reading the caller's own account.

use anyhow::anyhow;
use thiserror::Error;

use super::{AccountService, InsufficientScope, Principal};
use crate::model::{Organization, Scope};

#[derive(Debug, Error)]
pub enum GetAccountError {
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

impl AccountService {
    /// The caller's organization and plan. Needs `read`.
    pub async fn get_account(&self, caller: &Principal) -> Result<Organization, GetAccountError> {
        caller.require(Scope::Read)?;
        self.accounts
            .find_organization(&caller.org_id)
            .await?
            // The key was just authenticated, so its organization must exist.
            .ok_or_else(|| {
                GetAccountError::Unknown(anyhow!(
                    "organization {} of an authenticated key is missing",
                    caller.org_id
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::*;

    #[tokio::test]
    async fn reading_the_account_needs_the_read_scope() {
        let ports = Ports::new();
        let err = ports
            .service()
            .get_account(&principal(&["write"], Environment::Live))
            .await
            .expect_err("scope");
        assert!(matches!(
            err,
            GetAccountError::InsufficientScope(InsufficientScope(Scope::Read))
        ));
    }

    #[tokio::test]
    async fn the_callers_own_organization_is_returned() {
        let mut ports = Ports::new();
        let caller = principal(&["read"], Environment::Live);
        let org_id = caller.org_id.clone();
        ports
            .accounts
            .expect_find_organization()
            .withf(move |id| *id == org_id)
            .returning(|id| Ok(Some(organization(id.as_str()))));
        let org = ports.service().get_account(&caller).await.expect("account");
        assert_eq!(org.id, caller.org_id);
    }
}
