//! Changing a key: its name, its allowlist, or both (`PATCH`).

use super::access::{KeyFacts, Use};
use super::UpdateKeyError;
use crate::model::{AllowedIps, AllowedIpsChange, ApiKey, AuditAction, KeyName, RequestMeta, Scope};
use crate::ports::{Actor, KeyChanges};
use crate::service::{AccountService, Principal};

/// What a change of a key asks for; at least one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyUpdate {
    pub name: Option<KeyName>,
    pub allowed_ips: AllowedIpsChange,
}

impl AccountService {
    /// Changes a key of the caller's organization (revoked and expired ones too): its name,
    /// its allowlist, or both. Needs `write`; a test key changes only test keys; a caller
    /// limited to some addresses sets only allowlists within its own (never "anywhere").
    pub async fn update_key(
        &self,
        caller: &Principal,
        key_id: &str,
        update: KeyUpdate,
        meta: &RequestMeta,
    ) -> Result<ApiKey, UpdateKeyError> {
        let key = self.key_to_act_on(caller, Scope::Write, key_id, Use::Manage).await?;
        let allowed_ips: Option<Option<AllowedIps>> = match update.allowed_ips {
            AllowedIpsChange::Keep => None,
            AllowedIpsChange::Anywhere => Some(None),
            AllowedIpsChange::Only(list) => Some(Some(list)),
        };
        if let Some(allowed) = &allowed_ips {
            caller.may_act_on(&KeyFacts {
                requested: true,
                environment: None,
                scopes: None,
                expires_at: None,
                allowed_ips: Some(allowed.as_ref()),
            })?;
        }
        let now = self.clock.now();
        let record =
            |action| self.audit_record(caller.org_id(), action, Some(key.id.as_str()), Some(caller), meta, now);
        let mut audit = Vec::with_capacity(2);
        if update.name.is_some() {
            audit.push(record(AuditAction::KeyRenamed));
        }
        if allowed_ips.is_some() {
            audit.push(record(AuditAction::KeyAllowlistChanged));
        }
        let changes = KeyChanges { name: update.name, allowed_ips };
        let actor = Actor::Key(caller.key_id().clone());
        let key = self.keys.update_key(caller.org_id(), &key.id, &changes, &actor, &audit).await?;
        self.apply_own_change().await;
        Ok(self.with_pending_use(key))
    }
}

#[cfg(test)]
mod tests {
    use super::KeyUpdate;
    use crate::service::test_support::*;
    use crate::service::{KeyAccessError, UpdateKeyError};

    fn rename() -> KeyUpdate {
        KeyUpdate { name: Some(KeyName::new("New").expect("valid")), ..KeyUpdate::default() }
    }

    #[tokio::test]
    async fn a_key_is_renamed_within_the_organization_and_the_answer_shows_uses_not_yet_flushed() {
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        ports.keys.expect_find_key().returning(|org, id| Ok(Some(api_key(id.as_str(), org.as_str()))));
        ports
            .keys
            .expect_update_key()
            .withf(|_, id, changes, actor, audit| {
                id.as_str() == "key_abc"
                    && changes.name.as_ref().map(KeyName::as_str) == Some("New")
                    && changes.allowed_ips.is_none()
                    && audit.iter().map(|a| a.action).collect::<Vec<_>>() == [AuditAction::KeyRenamed]
                    && *actor != Actor::Operator
            })
            .returning(|org, id, _, _, _| Ok(api_key(id.as_str(), org.as_str())));
        let service = ports.service();
        let presented = PlaintextKey::assemble(Environment::Live, &secret_body()).expose().to_owned();
        let caller = service.authenticate(presented.as_bytes(), None).await.expect("authenticated");
        let renamed = service.update_key(&caller, "key_abc", rename(), &RequestMeta::default()).await;
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
            .expect_update_key()
            .times(1)
            .withf(|_, id, _, _, _| id.as_str() == "key_test")
            .returning(|org, id, _, _, _| Ok(api_key(id.as_str(), org.as_str())));
        let service = ports.service();
        let test = principal(&["read", "write"], Environment::Test);
        let meta = RequestMeta::default();
        assert!(matches!(
            service.update_key(&test, "key_live", rename(), &meta).await,
            Err(UpdateKeyError::Access(KeyAccessError::EnvironmentEscalation { requested: false }))
        ));
        assert!(matches!(
            service.update_key(&test, "key_gone", rename(), &meta).await,
            Err(UpdateKeyError::Access(KeyAccessError::NotFound))
        ));
        assert!(service.update_key(&test, "key_test", rename(), &meta).await.is_ok());
    }

    #[tokio::test]
    async fn a_caller_limited_to_some_addresses_sets_only_allowlists_within_its_own() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| Ok(Some(api_key(id.as_str(), org.as_str()))));
        ports
            .keys
            .expect_update_key()
            .times(1)
            .withf(|_, _, changes, _, audit| {
                changes.name.is_none()
                    && changes
                        .allowed_ips
                        .as_ref()
                        .is_some_and(|a| a.as_ref().is_some_and(|l| l.items() == ["10.1.0.0/16"]))
                    && audit.iter().map(|a| a.action).collect::<Vec<_>>() == [AuditAction::KeyAllowlistChanged]
            })
            .returning(|org, id, _, _, _| Ok(api_key(id.as_str(), org.as_str())));
        let service = ports.service();
        let limited = AllowedIps::parse(&["10.0.0.0/8"]).expect("valid");
        let caller = principal_of(credential().with(|c| c.key.allowed_ips = limited));
        let meta = RequestMeta::default();
        let to = |items: &[&str]| KeyUpdate {
            name: None,
            allowed_ips: match AllowedIps::parse(items).expect("valid") {
                Some(list) => AllowedIpsChange::Only(list),
                None => AllowedIpsChange::Anywhere,
            },
        };
        for wider in [to(&[]), to(&["10.0.0.0/7"]), to(&["192.0.2.1"])] {
            assert!(matches!(
                service.update_key(&caller, "key_a", wider, &meta).await,
                Err(UpdateKeyError::Access(KeyAccessError::AddressEscalation))
            ));
        }
        assert!(service.update_key(&caller, "key_a", to(&["10.1.0.0/16"]), &meta).await.is_ok());
    }
}
