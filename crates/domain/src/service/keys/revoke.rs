//! Revoking a key.

use super::access::Use;
use super::RevokeKeyError;
use crate::model::{ApiKey, AuditAction, RequestMeta, Scope};
use crate::ports::Actor;
use crate::service::{AccountService, Principal};

impl AccountService {
    /// Revokes a key of the caller's organization; revoking it again answers the same.
    /// Needs `write`; a test key revokes only test keys. A key of another organization is
    /// `NotFound`, as is a malformed id. The revocation holds from the very next request on,
    /// on this instance too.
    pub async fn revoke_key(
        &self,
        caller: &Principal,
        key_id: &str,
        meta: &RequestMeta,
    ) -> Result<ApiKey, RevokeKeyError> {
        let key = self.key_to_act_on(caller, Scope::Write, key_id, Use::Manage).await?;
        let now = self.clock.now();
        let audit =
            self.audit_record(caller.org_id(), AuditAction::KeyRevoked, Some(key.id.as_str()), Some(caller), meta, now);
        let actor = Actor::Key(caller.key_id().clone());
        let key = self.keys.revoke_key(caller.org_id(), &key.id, now, &actor, &audit).await?;
        self.apply_own_change().await;
        Ok(self.with_pending_use(key))
    }
}

#[cfg(test)]
mod tests {
    use crate::service::test_support::*;
    use crate::service::{InsufficientScope, KeyAccessError, RevokeKeyError};

    fn found(ports: &mut Ports) {
        ports.keys.expect_find_key().returning(|org, id| {
            let environment = if id.as_str() == "key_test" { Environment::Test } else { Environment::Live };
            Ok((id.as_str() != "key_gone")
                .then(|| api_key(id.as_str(), org.as_str()).with(|k| k.environment = environment)))
        });
    }

    #[tokio::test]
    async fn revoking_marks_the_key_at_the_current_time_as_the_caller() {
        let mut ports = Ports::new();
        found(&mut ports);
        ports
            .keys
            .expect_revoke_key()
            .withf(|_, id, at, actor, _| {
                id.as_str() == "key_abc" && *at == NOW && *actor == Actor::Key(KeyId::new("key_caller").expect("valid"))
            })
            .returning(|org, id, at, _, _| Ok(api_key(id.as_str(), org.as_str()).with(|k| k.revoked_at = Some(at))));
        let key = ports
            .service()
            .revoke_key(&principal(&["write"], Environment::Live), "key_abc", &RequestMeta::default())
            .await
            .expect("revoked");
        assert!(!key.is_active(NOW));
    }

    #[tokio::test]
    async fn revoking_needs_write_and_a_key_of_the_organization_of_the_callers_environment() {
        let mut ports = Ports::new();
        found(&mut ports);
        ports
            .keys
            .expect_revoke_key()
            .times(1)
            .withf(|_, id, _, _, _| id.as_str() == "key_test")
            .returning(|org, id, at, _, _| Ok(api_key(id.as_str(), org.as_str()).with(|k| k.revoked_at = Some(at))));
        let service = ports.service();
        let meta = RequestMeta::default();
        let test = principal(&["read", "write"], Environment::Test);
        assert!(matches!(
            service.revoke_key(&principal(&["read"], Environment::Live), "key_abc", &meta).await,
            Err(RevokeKeyError::Access(KeyAccessError::InsufficientScope(InsufficientScope(Scope::Write))))
        ));
        assert!(matches!(
            service.revoke_key(&test, "key_live", &meta).await,
            Err(RevokeKeyError::Access(KeyAccessError::EnvironmentEscalation { requested: false }))
        ));
        for id in ["key_gone", "not-an-id"] {
            assert!(matches!(
                service.revoke_key(&test, id, &meta).await,
                Err(RevokeKeyError::Access(KeyAccessError::NotFound))
            ));
        }
        assert!(service.revoke_key(&test, "key_test", &meta).await.is_ok());
    }

    #[tokio::test]
    async fn a_revocation_refused_inside_its_transaction_is_the_callers_refusal() {
        let mut ports = Ports::new();
        found(&mut ports);
        ports.keys.expect_revoke_key().returning(|_, _, _, _, _| Err(ActorRefused::Expired.into()));
        let err = ports
            .service()
            .revoke_key(&principal(&["write"], Environment::Live), "key_abc", &RequestMeta::default())
            .await;
        assert!(matches!(err, Err(RevokeKeyError::Store(KeyStoreError::Actor(ActorRefused::Expired)))));
    }
}
