//! Revoking a key.

use std::sync::Arc;

use super::access::{acting_key, may_act_on, KeyFacts, Use};
use crate::model::{ApiKey, AuditAction, KeyId, RequestMeta, Scope};
use crate::ports::{Actor, KeyOpError, KeyWriteDecision};
use crate::service::{AccountService, KeyAccessError, Principal};

impl AccountService {
    /// Revokes a key of the caller's organization; revoking it again answers the same.
    /// Needs `write`; a test key revokes only test keys. A key of another organization is
    /// `NotFound`, as is a malformed id. The revocation holds from the very next request on,
    /// on this instance too.
    pub async fn revoke_key(&self, caller: &Principal, key_id: &str, meta: &RequestMeta) -> Result<ApiKey, KeyOpError> {
        self.authorize(caller, Scope::Write).map_err(KeyAccessError::from)?;
        let key_id = KeyId::new(key_id).map_err(|_| KeyAccessError::NotFound)?;
        let now = self.clock.now();
        let audit =
            self.audit_record(caller.org_id(), AuditAction::KeyRevoked, Some(key_id.as_str()), Some(caller), meta, now);
        let client = meta.client_ip();
        let decide: KeyWriteDecision<()> = Arc::new(move |found| {
            let revoker = acting_key(&found, client, now)?;
            let key = found.target.ok_or(KeyAccessError::NotFound)?;
            Ok(may_act_on(revoker, &KeyFacts::stored(key, Use::Manage))?)
        });
        let actor = Actor::Key(caller.key_id().clone());
        let key = self.keys.revoke_key(caller.org_id(), &key_id, now, &actor, decide, &audit).await?;
        self.runtime.after_change().await;
        Ok(self.with_pending_use(key))
    }
}

#[cfg(test)]
mod tests {
    use crate::service::test_support::*;
    use crate::service::{InsufficientScope, KeyAccessError};

    /// A store holding a live key, a test key and the caller's key `actor` (found as given).
    fn store(ports: &mut Ports, actor: Option<ApiKey>) {
        let keys = [
            api_key("key_live", "org_caller"),
            api_key("key_test", "org_caller").with(|k| k.environment = Environment::Test),
        ];
        ports.keys.expect_revoke_key().returning(move |_, id, at, _, decide, _| {
            let target = keys.iter().find(|k| k.id == *id);
            decide(FoundInWrite { actor: actor.as_ref().map(|k| (k, true)), target, organization_closed: false })?;
            Ok(target.cloned().expect("found").with(|k| k.revoked_at = Some(at)))
        });
    }

    #[tokio::test]
    async fn revoking_marks_the_key_at_the_current_time_as_the_caller() {
        let mut ports = Ports::new();
        let caller = principal(&["write"], Environment::Live);
        ports
            .keys
            .expect_revoke_key()
            .withf(|_, id, at, actor, _, _| {
                id.as_str() == "key_abc" && *at == NOW && *actor == Actor::Key(KeyId::new("key_caller").expect("valid"))
            })
            .returning(|org, id, at, _, _, _| Ok(api_key(id.as_str(), org.as_str()).with(|k| k.revoked_at = Some(at))));
        let key = ports.service().revoke_key(&caller, "key_abc", &RequestMeta::default()).await.expect("revoked");
        assert!(!key.is_active(NOW));
    }

    #[tokio::test]
    async fn revoking_needs_write_and_a_key_of_the_organization_of_the_callers_environment() {
        let mut ports = Ports::new();
        let test = principal(&["read", "write"], Environment::Test);
        store(&mut ports, Some(test.key().clone()));
        let service = ports.service();
        let meta = RequestMeta::default();
        assert!(matches!(
            service.revoke_key(&principal(&["read"], Environment::Live), "key_live", &meta).await,
            Err(KeyOpError::Access(KeyAccessError::InsufficientScope(InsufficientScope(Scope::Write))))
        ));
        assert!(matches!(
            service.revoke_key(&test, "key_live", &meta).await,
            Err(KeyOpError::Access(KeyAccessError::EnvironmentEscalation { requested: false }))
        ));
        assert!(matches!(
            service.revoke_key(&test, "key_gone", &meta).await,
            Err(KeyOpError::Access(KeyAccessError::NotFound))
        ));
        assert!(matches!(
            service.revoke_key(&test, "not-an-id", &meta).await,
            Err(KeyOpError::Access(KeyAccessError::NotFound))
        ));
        assert!(service.revoke_key(&test, "key_test", &meta).await.is_ok());
    }

    #[tokio::test]
    async fn a_revoker_found_revoked_or_gone_inside_its_transaction_is_refused() {
        let caller = principal(&["write"], Environment::Live);
        for actor in [Some(caller.key().clone().with(|k| k.revoked_at = Some(NOW))), None] {
            let mut ports = Ports::new();
            store(&mut ports, actor);
            let err = ports.service().revoke_key(&caller, "key_live", &RequestMeta::default()).await;
            assert!(matches!(err, Err(KeyOpError::Actor(ActorRefused::Revoked))));
        }
    }
}
