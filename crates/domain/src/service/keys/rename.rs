//! Renaming a key.

use super::access::Use;
use super::RenameKeyError;
use crate::model::{ApiKey, AuditAction, KeyName, RequestMeta, Scope};
use crate::ports::Actor;
use crate::service::{AccountService, Principal};

impl AccountService {
    /// Renames a key of the caller's organization (revoked and expired ones too). Needs
    /// `write`; a test key renames only test keys.
    pub async fn rename_key(
        &self,
        caller: &Principal,
        key_id: &str,
        name: KeyName,
        meta: &RequestMeta,
    ) -> Result<ApiKey, RenameKeyError> {
        let key = self.key_to_act_on(caller, Scope::Write, key_id, Use::Manage).await?;
        let now = self.clock.now();
        let audit =
            self.audit_record(caller.org_id(), AuditAction::KeyRenamed, Some(key.id.as_str()), Some(caller), meta, now);
        let actor = Actor::Key(caller.key_id().clone());
        let key = self.keys.rename_key(caller.org_id(), &key.id, &name, &actor, &audit).await?;
        self.apply_own_change().await;
        Ok(self.with_pending_use(key))
    }
}

#[cfg(test)]
mod tests {
    use crate::service::test_support::*;
    use crate::service::{KeyAccessError, RenameKeyError};

    fn name() -> KeyName {
        KeyName::new("New").expect("valid")
    }

    #[tokio::test]
    async fn a_key_is_renamed_within_the_organization_and_the_answer_shows_uses_not_yet_flushed() {
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        ports.keys.expect_find_key().returning(|org, id| Ok(Some(api_key(id.as_str(), org.as_str()))));
        ports
            .keys
            .expect_rename_key()
            .withf(|_, id, name, actor, _| {
                id.as_str() == "key_abc" && name.as_str() == "New" && *actor != Actor::Operator
            })
            .returning(|org, id, _, _, _| Ok(api_key(id.as_str(), org.as_str())));
        let service = ports.service();
        let presented = PlaintextKey::assemble(Environment::Live, &secret_body()).expose().to_owned();
        let caller = service.authenticate(presented.as_bytes(), None).await.expect("authenticated");
        let renamed = service.rename_key(&caller, "key_abc", name(), &RequestMeta::default()).await;
        assert_eq!(renamed.expect("renamed").last_used_at, Some(NOW));
    }

    #[tokio::test]
    async fn a_test_key_renames_only_test_keys_and_unknown_keys_are_not_found() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| {
            let environment = if id.as_str() == "key_test" { Environment::Test } else { Environment::Live };
            Ok((id.as_str() != "key_gone")
                .then(|| api_key(id.as_str(), org.as_str()).with(|k| k.environment = environment)))
        });
        ports
            .keys
            .expect_rename_key()
            .times(1)
            .withf(|_, id, _, _, _| id.as_str() == "key_test")
            .returning(|org, id, _, _, _| Ok(api_key(id.as_str(), org.as_str())));
        let service = ports.service();
        let test = principal(&["read", "write"], Environment::Test);
        let meta = RequestMeta::default();
        assert!(matches!(
            service.rename_key(&test, "key_live", name(), &meta).await,
            Err(RenameKeyError::Access(KeyAccessError::EnvironmentEscalation { requested: false }))
        ));
        assert!(matches!(
            service.rename_key(&test, "key_gone", name(), &meta).await,
            Err(RenameKeyError::Access(KeyAccessError::NotFound))
        ));
        assert!(service.rename_key(&test, "key_test", name(), &meta).await.is_ok());
    }
}
