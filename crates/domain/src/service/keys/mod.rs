//! An organization's keys: listing and reading them, and the four changes (create, roll,
//! update, revoke), each in a file of its own with its tests. Who may act on which key is
//! decided in one place, [`access`]; every key is made by [`AccountService::mint_key`].

mod access;
mod create;
mod revoke;
mod roll;
mod update;

use time::OffsetDateTime;

use super::{AccountService, Principal};
use crate::model::{
    AllowedIps, ApiKey, AuditAction, AuditRecord, Environment, KeyName, NewApiKey, OrgId, PlaintextKey, RequestMeta,
    Scope, Scopes,
};
use crate::ports::KeyOpError;

pub use access::KeyAccessError;
use access::Use;
pub use roll::RolledKey;
pub use update::KeyUpdate;

/// What a new key is, whoever makes it: everything but its id, secret and time.
#[derive(Debug, Clone)]
pub(crate) struct KeySpec {
    pub name: KeyName,
    pub environment: Environment,
    pub scopes: Scopes,
    pub expires_at: Option<OffsetDateTime>,
    pub allowed_ips: Option<AllowedIps>,
}

/// A key just created: the stored form, and the plaintext shown to its owner this once.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub plaintext: PlaintextKey,
}

impl AccountService {
    /// Every key of the caller's organization, newest first. Needs `read`.
    pub async fn list_keys(&self, caller: &Principal) -> Result<Vec<ApiKey>, KeyOpError> {
        self.authorize(caller, Scope::Read)?;
        let keys = self.keys.list_keys(caller.org_id()).await?;
        Ok(keys.into_iter().map(|key| self.with_pending_use(key)).collect())
    }

    /// One key of the caller's organization, as listed. Needs `read`; any key of the
    /// organization may be read, as the list shows them all.
    pub async fn get_key(&self, caller: &Principal, key_id: &str) -> Result<ApiKey, KeyOpError> {
        let key = self.key_to_act_on(caller, Scope::Read, key_id, Use::Read).await?;
        Ok(self.with_pending_use(key))
    }

    /// Uses not yet flushed are already known here: every answer shows them.
    fn with_pending_use(&self, mut key: ApiKey) -> ApiKey {
        if let Some(pending) = self.runtime.pending_last_use(&key.id) {
            key.last_used_at = Some(key.last_used_at.map_or(pending, |stored| stored.max(pending)));
        }
        key
    }

    /// The `key.created` event of a key the caller makes, by creating or by rolling.
    fn key_created_record(
        &self,
        caller: &Principal,
        key: &NewApiKey,
        meta: &RequestMeta,
        now: OffsetDateTime,
    ) -> AuditRecord {
        self.audit_record(caller.org_id(), AuditAction::KeyCreated, Some(key.id.as_str()), Some(caller), meta, now)
    }

    /// Draws a fresh secret and builds the key to store and the plaintext to show once: the
    /// one way a key is made, by signup, creation, roll or an operator.
    pub(crate) fn mint_key(&self, org_id: &OrgId, spec: KeySpec, now: OffsetDateTime) -> (NewApiKey, PlaintextKey) {
        let plaintext = PlaintextKey::assemble(spec.environment, &self.generator.key_secret());
        let new_key = NewApiKey {
            id: self.generator.key_id(),
            org_id: org_id.clone(),
            name: spec.name,
            hash: plaintext.hash(),
            prefix: plaintext.display_prefix(),
            environment: spec.environment,
            scopes: spec.scopes,
            created_at: now,
            expires_at: spec.expires_at,
            allowed_ips: spec.allowed_ips,
        };
        (new_key, plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::*;

    #[tokio::test]
    async fn listing_needs_read_and_shows_uses_not_yet_flushed() {
        let mut ports = Ports::new();
        ports.keys.expect_list_keys().returning(|org| Ok(vec![api_key("key_abc", org.as_str())]));
        let service = ports.service();
        assert!(matches!(
            service.list_keys(&principal(&["write"], Environment::Live)).await,
            Err(KeyOpError::Access(KeyAccessError::InsufficientScope(_)))
        ));
        let (key, org) = (KeyId::new("key_abc").expect("valid"), OrgId::new("org_caller").expect("valid"));
        let of = crate::runtime::UseOf { key: &key, org: &org, environment: Environment::Live };
        service.runtime.record_use(of, NOW, VerificationCode::Valid);
        let keys = service.list_keys(&principal(&["read"], Environment::Live)).await.expect("listed");
        assert_eq!(keys[0].last_used_at, Some(NOW));
    }

    #[tokio::test]
    async fn any_key_of_the_organization_is_read_as_listed_and_no_other() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| {
            Ok((org.as_str() == "org_caller" && id.as_str() != "key_gone").then(|| api_key(id.as_str(), org.as_str())))
        });
        let service = ports.service();
        let (key, org) = (KeyId::new("key_live").expect("valid"), OrgId::new("org_caller").expect("valid"));
        let of = crate::runtime::UseOf { key: &key, org: &org, environment: Environment::Live };
        service.runtime.record_use(of, NOW, VerificationCode::Valid);
        let test_reader = principal(&["read"], Environment::Test);
        let read = service.get_key(&test_reader, "key_live").await.expect("a test key reads a live key");
        assert_eq!(read.last_used_at, Some(NOW), "uses not yet flushed included");
        for id in ["key_gone", "bad id"] {
            assert!(matches!(
                service.get_key(&test_reader, id).await,
                Err(KeyOpError::Access(KeyAccessError::NotFound))
            ));
        }
        assert!(matches!(
            service.get_key(&principal(&["write"], Environment::Live), "key_live").await,
            Err(KeyOpError::Access(KeyAccessError::InsufficientScope(_)))
        ));
    }
}
