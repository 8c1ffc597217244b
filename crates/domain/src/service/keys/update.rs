//! Changing a key: its name, its allowlist, or both (`PATCH`).

use std::sync::Arc;

use super::access::{acting_key, may_act_on, KeyFacts, Use};
use crate::model::{AllowedIps, AllowlistChange, ApiKey, AuditAction, KeyId, KeyName, RequestMeta, Scope};
use crate::ports::{Actor, KeyChanges, KeyOpError, KeyWriteDecision};
use crate::service::{AccountService, KeyAccessError, Principal};

/// What a change of a key asks for; at least one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyUpdate {
    pub name: Option<KeyName>,
    pub allowed_ips: AllowlistChange,
}

impl AccountService {
    /// Changes a key of the caller's organization (revoked and expired ones too): its name,
    /// its allowlist, or both. Needs `write`; a test key changes only test keys; a caller
    /// limited to some addresses sets only allowlists within its own (never "anywhere"); an
    /// allowlist that lets the key work from more places needs every scope of that key.
    pub async fn update_key(
        &self,
        caller: &Principal,
        key_id: &str,
        update: KeyUpdate,
        meta: &RequestMeta,
    ) -> Result<ApiKey, KeyOpError> {
        self.authorize(caller, Scope::Write).map_err(KeyAccessError::from)?;
        let key_id = KeyId::new(key_id).map_err(|_| KeyAccessError::NotFound)?;
        let allowed_ips: Option<Option<AllowedIps>> = match update.allowed_ips {
            AllowlistChange::Unchanged => None,
            AllowlistChange::Anywhere => Some(None),
            AllowlistChange::Only(list) => Some(Some(list)),
        };
        let now = self.clock.now();
        let record =
            |action| self.audit_record(caller.org_id(), action, Some(key_id.as_str()), Some(caller), meta, now);
        let mut audit = Vec::with_capacity(2);
        if update.name.is_some() {
            audit.push(record(AuditAction::KeyRenamed));
        }
        if allowed_ips.is_some() {
            audit.push(record(AuditAction::KeyAllowlistChanged));
        }
        let client = meta.client_ip();
        let to = allowed_ips.clone();
        let decide: KeyWriteDecision<()> = Arc::new(move |found| {
            let changer = acting_key(&found, client, now)?;
            let key = found.target.ok_or(KeyAccessError::NotFound)?;
            let facts = match &to {
                Some(to) => KeyFacts::allowlist_change(key, to.as_ref()),
                None => KeyFacts::stored(key, Use::Manage),
            };
            Ok(may_act_on(changer, &facts)?)
        });
        let changes = KeyChanges { name: update.name, allowed_ips };
        let actor = Actor::Key(caller.key_id().clone());
        let key = self.keys.update_key(caller.org_id(), &key_id, &changes, &actor, decide, &audit).await?;
        self.runtime.after_change().await;
        Ok(self.with_pending_use(key))
    }
}

#[cfg(test)]
mod tests {
    use super::KeyUpdate;
    use crate::service::test_support::*;
    use crate::service::KeyAccessError;

    fn rename() -> KeyUpdate {
        KeyUpdate { name: Some(KeyName::new("New").expect("valid")), ..KeyUpdate::default() }
    }

    fn allowlist(items: &[&str]) -> KeyUpdate {
        KeyUpdate {
            name: None,
            allowed_ips: match AllowedIps::parse(items).expect("valid") {
                Some(list) => AllowlistChange::Only(list),
                None => AllowlistChange::Anywhere,
            },
        }
    }

    /// A store that finds `actor` as the caller's row and the organization's keys as `keys`
    /// makes them (by id), and answers the key changed as it was found.
    fn store(ports: &mut Ports, actor: ApiKey, keys: Vec<ApiKey>) {
        ports.keys.expect_update_key().returning(move |_, id, _, _, decide, _| {
            let target = keys.iter().find(|k| k.id == *id);
            decide(found(&actor, target))?;
            Ok(target.cloned().expect("found"))
        });
    }

    #[tokio::test]
    async fn a_key_is_renamed_within_the_organization_and_the_answer_shows_uses_not_yet_flushed() {
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        ports
            .keys
            .expect_update_key()
            .withf(|_, id, changes, actor, _, audit| {
                id.as_str() == "key_abc"
                    && changes.name.as_ref().map(KeyName::as_str) == Some("New")
                    && changes.allowed_ips.is_none()
                    && audit.iter().map(|a| a.action).collect::<Vec<_>>() == [AuditAction::KeyRenamed]
                    && *actor != Actor::Operator
            })
            .returning(|org, id, _, _, decide, _| {
                let key = api_key(id.as_str(), org.as_str());
                decide(found(&credential().key, Some(&key)))?;
                Ok(key)
            });
        let service = ports.service();
        let presented = PlaintextKey::assemble(Environment::Live, &secret_body()).expose().to_owned();
        let caller = service.authenticate(presented.as_bytes(), None).await.expect("authenticated");
        let renamed = service.update_key(&caller, "key_abc", rename(), &RequestMeta::default()).await;
        assert_eq!(renamed.expect("renamed").last_used_at, Some(NOW));
    }

    #[tokio::test]
    async fn a_test_key_renames_only_test_keys_and_unknown_keys_are_not_found() {
        let mut ports = Ports::new();
        let test = principal(&["read", "write"], Environment::Test);
        let keys = vec![
            api_key("key_live", "org_caller"),
            api_key("key_test", "org_caller").with(|k| k.environment = Environment::Test),
        ];
        store(&mut ports, test.key().clone(), keys);
        let service = ports.service();
        let meta = RequestMeta::default();
        assert!(matches!(
            service.update_key(&test, "key_live", rename(), &meta).await,
            Err(KeyOpError::Access(KeyAccessError::EnvironmentEscalation { requested: false }))
        ));
        assert!(matches!(
            service.update_key(&test, "key_gone", rename(), &meta).await,
            Err(KeyOpError::Access(KeyAccessError::NotFound))
        ));
        assert!(matches!(
            service.update_key(&test, "not an id", rename(), &meta).await,
            Err(KeyOpError::Access(KeyAccessError::NotFound))
        ));
        assert!(service.update_key(&test, "key_test", rename(), &meta).await.is_ok());
    }

    #[tokio::test]
    async fn a_caller_limited_to_some_addresses_sets_only_allowlists_within_its_own() {
        let mut ports = Ports::new();
        let limited = AllowedIps::parse(&["10.0.0.0/8"]).expect("valid");
        let caller = principal_of(credential().with(|c| c.key.allowed_ips = limited));
        let target =
            api_key("key_a", "org_abc").with(|k| k.allowed_ips = AllowedIps::parse(&["10.2.0.0/16"]).expect("valid"));
        store(&mut ports, caller.key().clone(), vec![target]);
        let service = ports.service();
        let meta = RequestMeta::new("10.9.9.9".parse().ok(), None);
        for wider in [allowlist(&[]), allowlist(&["10.0.0.0/7"]), allowlist(&["192.0.2.1"])] {
            assert!(matches!(
                service.update_key(&caller, "key_a", wider, &meta).await,
                Err(KeyOpError::Access(KeyAccessError::AddressEscalation))
            ));
        }
        assert!(service.update_key(&caller, "key_a", allowlist(&["10.1.0.0/16"]), &meta).await.is_ok());
    }

    #[tokio::test]
    async fn widening_a_keys_reach_needs_every_scope_of_that_key_and_narrowing_does_not() {
        let mut ports = Ports::new();
        let write_only = principal(&["write"], Environment::Live);
        let limited = AllowedIps::parse(&["192.0.2.0/24"]).expect("valid");
        let keys = vec![
            api_key("key_limited", "org_caller").with(|k| k.allowed_ips = limited.clone()),
            api_key("key_anywhere", "org_caller"),
        ];
        store(&mut ports, write_only.key().clone(), keys);
        let service = ports.service();
        let meta = RequestMeta::default();
        for wider in [allowlist(&[]), allowlist(&["192.0.0.0/16"]), allowlist(&["198.51.100.1"])] {
            let err = service.update_key(&write_only, "key_limited", wider, &meta).await;
            assert!(
                matches!(err, Err(KeyOpError::Access(KeyAccessError::WideningEscalation { lacking: Scope::Read }))),
                "{err:?}"
            );
        }
        for narrower in [allowlist(&["192.0.2.7"]), allowlist(&["192.0.2.0/24"])] {
            assert!(service.update_key(&write_only, "key_limited", narrower, &meta).await.is_ok());
        }
        // A key that works from anywhere reaches no further: any list narrows it.
        assert!(service.update_key(&write_only, "key_anywhere", allowlist(&["198.51.100.1"]), &meta).await.is_ok());
        assert!(service.update_key(&write_only, "key_limited", rename(), &meta).await.is_ok());
    }

    #[tokio::test]
    async fn a_caller_narrowed_while_its_change_was_in_flight_is_refused_by_its_new_allowlist() {
        let mut ports = Ports::new();
        let caller = principal(&["read", "write"], Environment::Live);
        let narrowed = AllowedIps::parse(&["192.0.2.1"]).expect("valid");
        let now_stored = caller.key().clone().with(|k| k.allowed_ips = narrowed);
        store(&mut ports, now_stored.clone(), vec![now_stored]);
        let err = ports
            .service()
            .update_key(&caller, "key_caller", allowlist(&[]), &RequestMeta::new("127.0.0.1".parse().ok(), None))
            .await;
        assert!(matches!(err, Err(KeyOpError::Actor(ActorRefused::IpNotAllowed))));
    }
}
