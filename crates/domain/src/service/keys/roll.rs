//! Rolling a key: a new key in its place, the old one kept for a grace period.

use super::access::Use;
use super::{CreatedKey, KeySpec, RollKeyError};
use crate::model::{AuditAction, GracePeriod, KeyId, RequestMeta, Scope};
use crate::ports::{Actor, KeyStoreError};
use crate::service::{AccountService, Principal};

/// A rolled key: the new key, shown once, and the one it replaces.
#[derive(Debug)]
pub struct RolledKey {
    pub created: CreatedKey,
    pub rolled_from: KeyId,
}

impl AccountService {
    /// Replaces a key without downtime: a new key with the same name, environment, scopes and
    /// absolute expiry (or the caller's, when that comes first: no key outlives its maker),
    /// shown once, while the old one keeps working for `grace` (never longer than it would
    /// have). Needs `write`, and the scopes of the key rolled; a test key rolls only test
    /// keys; only an active key is rolled.
    pub async fn roll_key(
        &self,
        caller: &Principal,
        key_id: &str,
        grace: GracePeriod,
        meta: &RequestMeta,
    ) -> Result<RolledKey, RollKeyError> {
        let old = self.key_to_act_on(caller, Scope::Write, key_id, Use::Copy).await?;
        let now = self.clock.now();
        if !old.is_active(now) {
            return Err(KeyStoreError::NotActive.into());
        }
        let expires_at = match (old.expires_at, caller.expires_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The successor keeps the rolled key's allowlist, which the caller may give
        // (checked with the key's other properties, `Use::Copy`).
        let spec = KeySpec {
            name: old.name.clone(),
            environment: old.environment,
            scopes: old.scopes.clone(),
            expires_at,
            allowed_ips: old.allowed_ips.clone(),
        };
        let (new_key, plaintext) = self.mint_key(&old.org_id, spec, now);
        // The trail names both keys: the one created in its place, then (newest, on top of
        // the log) the roll of the old one.
        let audit = [
            self.key_created_record(caller, &new_key, meta, now),
            self.audit_record(caller.org_id(), AuditAction::KeyRolled, Some(old.id.as_str()), Some(caller), meta, now),
        ];
        let actor = Actor::Key(caller.key_id().clone());
        let key = self
            .keys
            .roll_key(caller.org_id(), &old.id, &new_key, grace.after(now), self.max_active_keys, &actor, &audit)
            .await?;
        self.apply_own_change().await;
        Ok(RolledKey { created: CreatedKey { key, plaintext }, rolled_from: old.id })
    }
}

#[cfg(test)]
mod tests {
    use crate::service::test_support::*;
    use crate::service::{KeyAccessError, RollKeyError};

    #[tokio::test]
    async fn a_rolled_key_keeps_name_scopes_and_absolute_expiry_and_the_old_one_gets_a_grace_period() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| {
            Ok(Some(api_key(id.as_str(), org.as_str()).with(|k| k.expires_at = Some(NOW + time::Duration::days(10)))))
        });
        ports
            .keys
            .expect_roll_key()
            .withf(|_, old, new, old_expires_at, _, _, audit| {
                old.as_str() == "key_old"
                    && new.name.as_str() == "Default Key"
                    && new.expires_at == Some(NOW + time::Duration::days(10))
                    && *old_expires_at == NOW + time::Duration::hours(2)
                    && audit.iter().map(|a| (a.action, a.target_id.clone())).collect::<Vec<_>>()
                        == [
                            (AuditAction::KeyCreated, Some(new.id.to_string())),
                            (AuditAction::KeyRolled, Some("key_old".to_owned())),
                        ]
            })
            .returning(|_, _, new, _, _, _, _| Ok(new.clone().into_stored()));
        let caller = principal(&["read", "write"], Environment::Live);
        let rolled = ports
            .service()
            .roll_key(&caller, "key_old", GracePeriod::new(2).expect("valid"), &RequestMeta::default())
            .await
            .expect("rolled");
        assert_eq!(rolled.rolled_from.as_str(), "key_old");
        assert_ne!(rolled.created.key.id.as_str(), "key_old");
    }

    #[tokio::test]
    async fn a_rolled_keys_successor_expires_no_later_than_the_roller() {
        let limit = NOW + time::Duration::days(1);
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| Ok(Some(api_key(id.as_str(), org.as_str()))));
        ports
            .keys
            .expect_roll_key()
            .withf(move |_, _, new, _, _, _, _| new.expires_at == Some(limit))
            .times(1)
            .returning(|_, _, new, _, _, _, _| Ok(new.clone().into_stored()));
        let caller = principal_of(credential().with(|c| c.key.expires_at = Some(limit)));
        let rolled =
            ports.service().roll_key(&caller, "key_forever", GracePeriod::default(), &RequestMeta::default()).await;
        assert_eq!(rolled.expect("rolled").created.key.expires_at, Some(limit));
    }

    #[tokio::test]
    async fn the_stores_refusal_of_a_roll_over_the_key_limit_is_passed_on() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| Ok(Some(api_key(id.as_str(), org.as_str()))));
        ports
            .keys
            .expect_roll_key()
            .withf(|_, _, _, _, max_active, _, _| *max_active == 100)
            .returning(|_, _, _, _, max, _, _| Err(KeyStoreError::LimitReached(max)));
        let caller = principal(&["read", "write"], Environment::Live);
        let err = ports.service().roll_key(&caller, "key_old", GracePeriod::default(), &RequestMeta::default()).await;
        assert!(matches!(err, Err(RollKeyError::Store(KeyStoreError::LimitReached(100)))), "{err:?}");
    }

    #[tokio::test]
    async fn only_active_keys_whose_scopes_and_environment_the_caller_holds_are_rolled() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| {
            let revoked = (id.as_str() == "key_revoked").then_some(NOW);
            Ok(Some(api_key(id.as_str(), org.as_str()).with(|k| k.revoked_at = revoked)))
        });
        ports.keys.expect_roll_key().never();
        let service = ports.service();
        let meta = RequestMeta::default();
        let both = principal(&["read", "write"], Environment::Live);
        let write_only = principal(&["write"], Environment::Live);
        let test = principal(&["read", "write"], Environment::Test);
        let grace = GracePeriod::default();
        assert!(matches!(
            service.roll_key(&both, "key_revoked", grace, &meta).await,
            Err(RollKeyError::Store(KeyStoreError::NotActive))
        ));
        assert!(matches!(
            service.roll_key(&write_only, "key_a", grace, &meta).await,
            Err(RollKeyError::Access(KeyAccessError::ScopeEscalation { requested: false, .. }))
        ));
        assert!(matches!(
            service.roll_key(&test, "key_a", grace, &meta).await,
            Err(RollKeyError::Access(KeyAccessError::EnvironmentEscalation { requested: false }))
        ));
        assert!(matches!(
            service.roll_key(&both, "bad id", grace, &meta).await,
            Err(RollKeyError::Access(KeyAccessError::NotFound))
        ));
    }
}
