//! Rolling a key: a new key in its place, the old one kept for a grace period.

use std::sync::Arc;

use super::access::{acting_key, may_act_on, KeyFacts, Use};
use super::{inherited, CreatedKey, KeySpec};
use crate::model::{AuditAction, GracePeriod, KeyId, NewApiKey, NewKeyAllowlist, RequestMeta, Scope};
use crate::ports::{Actor, KeyOpError, KeyWriteDecision, StoreError};
use crate::service::{AccountService, KeyAccessError, Principal};

/// A rolled key: the new key, shown once, and the one it replaces.
#[derive(Debug)]
pub struct RolledKey {
    pub created: CreatedKey,
    pub rolled_from: KeyId,
}

impl AccountService {
    /// Replaces a key without downtime: a new key with the same name, environment, scopes,
    /// allowlist and absolute expiry (or the caller's, when that comes first: no key outlives
    /// its maker), shown once, while the old one keeps working for `grace` (never longer than
    /// it would have). Needs `write`, and the scopes of the key rolled; a test key rolls only
    /// test keys; only an active key is rolled. The successor copies the old key as the
    /// roll's own transaction finds it.
    pub async fn roll_key(
        &self,
        caller: &Principal,
        key_id: &str,
        grace: GracePeriod,
        meta: &RequestMeta,
    ) -> Result<RolledKey, KeyOpError> {
        self.authorize(caller, Scope::Write).map_err(KeyAccessError::from)?;
        let key_id = KeyId::new(key_id).map_err(|_| KeyAccessError::NotFound)?;
        // Read first only for the environment the new secret is drawn for, which never
        // changes; everything the roll decides on is read again inside its transaction.
        let old = self.keys.find_key(caller.org_id(), &key_id).await?.ok_or(KeyAccessError::NotFound)?;
        let now = self.clock.now();
        let spec = KeySpec {
            name: old.name,
            environment: old.environment,
            scopes: old.scopes,
            expires_at: None,
            allowed_ips: None,
        };
        let (drawn, plaintext) = self.mint_key(caller.org_id(), spec, now);
        // The trail names both keys: the one created in its place, then (newest, on top of
        // the log) the roll of the old one.
        let audit = [
            self.key_created_record(caller, &drawn, meta, now),
            self.audit_record(caller.org_id(), AuditAction::KeyRolled, Some(key_id.as_str()), Some(caller), meta, now),
        ];
        let client = meta.client_ip();
        let decide: KeyWriteDecision<NewApiKey> = Arc::new(move |found| {
            let roller = acting_key(&found, client, now)?;
            let old = found.target.ok_or(KeyAccessError::NotFound)?;
            // The successor keeps the old key's scopes and allowlist, which the roller may give.
            may_act_on(roller, &KeyFacts::stored(old, Use::Copy))?;
            if !old.is_active(now) {
                return Err(KeyOpError::NotActive);
            }
            if old.environment != drawn.environment {
                let changed = anyhow::anyhow!("the environment of key {} changed", old.id);
                return Err(StoreError::Failed(changed).into());
            }
            let allowlist = old.allowed_ips.clone().map_or(NewKeyAllowlist::Anywhere, NewKeyAllowlist::Only);
            let (expires_at, allowed_ips) = inherited(old.expires_at, &allowlist, Some(roller), true);
            Ok(NewApiKey {
                name: old.name.clone(),
                scopes: old.scopes.clone(),
                expires_at,
                allowed_ips,
                ..drawn.clone()
            })
        });
        let actor = Actor::Key(caller.key_id().clone());
        let key = self
            .keys
            .roll_key(caller.org_id(), &key_id, &actor, decide, grace.after(now), self.max_active_keys, &audit)
            .await?;
        self.runtime.after_change().await;
        Ok(RolledKey { created: CreatedKey { key, plaintext }, rolled_from: key_id })
    }
}

#[cfg(test)]
mod tests {
    use crate::service::test_support::*;
    use crate::service::KeyAccessError;

    /// A store that holds `old` (found by the first read and inside the roll alike, unless
    /// `in_write` says how the roll's own transaction finds it) and the caller's key `actor`.
    fn store(ports: &mut Ports, actor: ApiKey, old: ApiKey, in_write: Option<ApiKey>) {
        let first = old.clone();
        ports.keys.expect_find_key().returning(move |_, id| Ok((first.id == *id).then(|| first.clone())));
        let in_write = in_write.unwrap_or(old);
        ports.keys.expect_roll_key().returning(move |_, _, _, decide, _, _, _| {
            decide(found(&actor, Some(&in_write))).map(NewApiKey::into_stored)
        });
    }

    #[tokio::test]
    async fn a_rolled_key_keeps_name_scopes_and_absolute_expiry_and_the_old_one_gets_a_grace_period() {
        let mut ports = Ports::new();
        let old = api_key("key_old", "org_caller").with(|k| k.expires_at = Some(NOW + time::Duration::days(10)));
        let first = old.clone();
        ports.keys.expect_find_key().returning(move |_, _| Ok(Some(first.clone())));
        let caller = principal(&["read", "write"], Environment::Live);
        let me = caller.key().clone();
        ports
            .keys
            .expect_roll_key()
            .withf(|_, old, _, _, old_expires_at, _, audit| {
                old.as_str() == "key_old"
                    && *old_expires_at == NOW + time::Duration::hours(2)
                    && audit.iter().map(|a| a.action).collect::<Vec<_>>()
                        == [AuditAction::KeyCreated, AuditAction::KeyRolled]
                    && audit[1].target_id.as_deref() == Some("key_old")
            })
            .returning(move |_, _, _, decide, _, _, audit| {
                let new = decide(found(&me, Some(&old)))?;
                assert_eq!(audit[0].target_id.as_deref(), Some(new.id.as_str()));
                Ok(new.into_stored())
            });
        let rolled = ports
            .service()
            .roll_key(&caller, "key_old", GracePeriod::new(2).expect("valid"), &RequestMeta::default())
            .await
            .expect("rolled");
        assert_eq!(rolled.rolled_from.as_str(), "key_old");
        assert_ne!(rolled.created.key.id.as_str(), "key_old");
        assert_eq!(rolled.created.key.name.as_str(), "Default Key");
        assert_eq!(rolled.created.key.expires_at, Some(NOW + time::Duration::days(10)));
    }

    #[tokio::test]
    async fn a_rolled_keys_successor_expires_no_later_than_the_roller_as_the_roll_finds_it() {
        let limit = NOW + time::Duration::days(1);
        let mut ports = Ports::new();
        // Authenticated without an expiry; given one while the roll was in flight.
        let caller = principal(&["read", "write"], Environment::Live);
        let roller_now = caller.key().clone().with(|k| k.expires_at = Some(limit));
        store(&mut ports, roller_now, api_key("key_forever", "org_caller"), None);
        let rolled =
            ports.service().roll_key(&caller, "key_forever", GracePeriod::default(), &RequestMeta::default()).await;
        assert_eq!(rolled.expect("rolled").created.key.expires_at, Some(limit));
    }

    #[tokio::test]
    async fn the_successor_copies_the_old_key_as_the_roll_finds_it_not_as_first_read() {
        let mut ports = Ports::new();
        let caller = principal(&["read", "write"], Environment::Live);
        let narrowed = AllowedIps::parse(&["192.0.2.1"]).expect("valid");
        let soon = NOW + time::Duration::hours(1);
        let old = api_key("key_old", "org_caller");
        let in_write = old.clone().with(|k| {
            (k.allowed_ips, k.expires_at, k.name) =
                (narrowed.clone(), Some(soon), KeyName::new("Renamed").expect("valid"))
        });
        store(&mut ports, caller.key().clone(), old, Some(in_write));
        let rolled = ports
            .service()
            .roll_key(&caller, "key_old", GracePeriod::default(), &RequestMeta::default())
            .await
            .expect("rolled");
        assert_eq!(rolled.created.key.allowed_ips, narrowed);
        assert_eq!(rolled.created.key.expires_at, Some(soon));
        assert_eq!(rolled.created.key.name.as_str(), "Renamed");
    }

    #[tokio::test]
    async fn the_stores_refusal_of_a_roll_over_the_key_limit_is_passed_on() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| Ok(Some(api_key(id.as_str(), org.as_str()))));
        ports
            .keys
            .expect_roll_key()
            .withf(|_, _, _, _, _, max_active, _| *max_active == 100)
            .returning(|_, _, _, _, _, max, _| Err(KeyOpError::LimitReached(max)));
        let caller = principal(&["read", "write"], Environment::Live);
        let err = ports.service().roll_key(&caller, "key_old", GracePeriod::default(), &RequestMeta::default()).await;
        assert!(matches!(err, Err(KeyOpError::LimitReached(100))), "{err:?}");
    }

    #[tokio::test]
    async fn only_active_keys_whose_scopes_and_environment_the_caller_holds_are_rolled() {
        let meta = RequestMeta::default();
        let grace = GracePeriod::default();
        let both = principal(&["read", "write"], Environment::Live);
        let write_only = principal(&["write"], Environment::Live);
        let test = principal(&["read", "write"], Environment::Test);
        let revoked = api_key("key_revoked", "org_caller").with(|k| k.revoked_at = Some(NOW));
        let live = api_key("key_a", "org_caller");
        for (caller, key, expected) in
            [(&both, &revoked, "not active"), (&write_only, &live, "scope"), (&test, &live, "environment")]
        {
            let mut ports = Ports::new();
            store(&mut ports, caller.key().clone(), key.clone(), None);
            let err = ports.service().roll_key(caller, key.id.as_str(), grace, &meta).await;
            let got = match err {
                Err(KeyOpError::NotActive) => "not active",
                Err(KeyOpError::Access(KeyAccessError::ScopeEscalation { requested: false, .. })) => "scope",
                Err(KeyOpError::Access(KeyAccessError::EnvironmentEscalation { requested: false })) => "environment",
                other => panic!("{other:?}"),
            };
            assert_eq!(got, expected);
        }
        let mut ports = Ports::new();
        store(&mut ports, both.key().clone(), live, None);
        let service = ports.service();
        for id in ["bad id", "key_gone"] {
            assert!(matches!(
                service.roll_key(&both, id, grace, &meta).await,
                Err(KeyOpError::Access(KeyAccessError::NotFound))
            ));
        }
    }
}
