//! Listing, creating and revoking an organization's keys.

use thiserror::Error;
use time::OffsetDateTime;

use super::{AccountService, InsufficientScope, Principal};
use crate::model::{
    ApiKey, AuditAction, AuditRecord, CreateKeyRequest, Environment, GracePeriod, KeyId, KeyName, NewApiKey, OrgId,
    PlaintextKey, RequestMeta, Scope, Scopes,
};
use crate::ports::{Actor, ActorRefused, InsertKeyError, KeyWriteError, RollKeyStoreError};

/// A key just created: the stored form, and the plaintext shown to its owner this once.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub plaintext: PlaintextKey,
}

#[derive(Debug, Error)]
pub enum ListKeysError {
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[derive(Debug, Error)]
pub enum CreateKeyError {
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    #[error("a key can only grant scopes it holds itself; this one lacks `{0}`")]
    ScopeEscalation(Scope),
    #[error("a test key can only create test keys")]
    EnvironmentEscalation,
    #[error("a key that expires can only create keys that expire no later than it does")]
    ExpiryEscalation,
    #[error("the organization already has {0} active keys, the most allowed; revoke one first")]
    KeyLimitReached(u32),
    #[error(transparent)]
    Actor(#[from] ActorRefused),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[derive(Debug, Error)]
pub enum RenameKeyError {
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    #[error("no such API key")]
    NotFound,
    #[error("a test key can only rename test keys")]
    EnvironmentEscalation,
    #[error(transparent)]
    Actor(#[from] ActorRefused),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[derive(Debug, Error)]
pub enum RollKeyError {
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    #[error("no such API key")]
    NotFound,
    #[error("the key is revoked or expired: only an active key can be rolled")]
    NotActive,
    #[error("a key can only roll keys whose scopes it holds; this one lacks `{0}`")]
    ScopeEscalation(Scope),
    #[error("a test key can only roll test keys")]
    EnvironmentEscalation,
    #[error(
        "the organization already has {0} active keys, the most allowed: roll with `expires_in_hours` 0, \
         or revoke a key first"
    )]
    KeyLimitReached(u32),
    #[error(transparent)]
    Actor(#[from] ActorRefused),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Whether a caller may manage a key, by their environments.
enum Reach {
    Allowed,
    NoSuchKey,
    LiveKeyFromTestKey,
}

/// A rolled key: the new key, shown once, and the one it replaces.
#[derive(Debug)]
pub struct RolledKey {
    pub created: CreatedKey,
    pub rolled_from: KeyId,
}

#[derive(Debug, Error)]
pub enum RevokeKeyError {
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    #[error("no such API key")]
    NotFound,
    #[error("a test key can only revoke test keys")]
    EnvironmentEscalation,
    #[error(transparent)]
    Actor(#[from] ActorRefused),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// The writes' own store errors become each operation's: the actor's refusal as it is.
macro_rules! from_key_write_error {
    ($($error:ident),*) => {$(
        impl From<KeyWriteError> for $error {
            fn from(e: KeyWriteError) -> Self {
                match e {
                    KeyWriteError::Actor(refused) => Self::Actor(refused),
                    KeyWriteError::Unknown(e) => Self::Unknown(e),
                }
            }
        }
    )*};
}
from_key_write_error!(RenameKeyError, RevokeKeyError);

impl AccountService {
    /// Every key of the caller's organization, newest first. Needs `read`.
    pub async fn list_keys(&self, caller: &Principal) -> Result<Vec<ApiKey>, ListKeysError> {
        caller.require(Scope::Read)?;
        let keys = self.keys.list_keys(caller.org_id()).await?;
        Ok(keys.into_iter().map(|key| self.with_pending_use(key)).collect())
    }

    /// Uses not yet flushed are already known here: every answer shows them.
    fn with_pending_use(&self, mut key: ApiKey) -> ApiKey {
        if let Some(pending) = self.usage.pending(&key.id) {
            key.last_used_at = Some(key.last_used_at.map_or(pending, |stored| stored.max(pending)));
        }
        key
    }

    /// Creates a key. Needs `write`; grants no scope the caller lacks, a test key creates
    /// only test keys, and a key that expires creates keys that expire no later (without
    /// `expires_in`, the new key takes the caller's expiry).
    pub async fn create_key(
        &self,
        caller: &Principal,
        request: CreateKeyRequest,
        meta: &RequestMeta,
    ) -> Result<CreatedKey, CreateKeyError> {
        caller.require(Scope::Write)?;
        if let Some(missing) = request.scopes.first_not_in(caller.scopes()) {
            return Err(CreateKeyError::ScopeEscalation(missing));
        }
        if !caller.reaches(request.environment) {
            return Err(CreateKeyError::EnvironmentEscalation);
        }
        let now = self.clock.now();
        let expires_at = match (request.expires_in.map(|days| days.after(now)), caller.expires_at()) {
            (Some(wanted), Some(limit)) if wanted > limit => return Err(CreateKeyError::ExpiryEscalation),
            (Some(wanted), _) => Some(wanted),
            (None, inherited) => inherited,
        };
        let (new_key, plaintext) =
            self.mint_key(caller.org_id(), request.name, request.environment, request.scopes, expires_at, now);
        let audit = self.key_created_record(caller, &new_key, meta, now);
        let key = self
            .keys
            .insert_key(&new_key, self.max_active_keys, &Actor::Key(caller.key_id().clone()), &audit)
            .await
            .map_err(|e| match e {
                InsertKeyError::LimitReached => CreateKeyError::KeyLimitReached(self.max_active_keys),
                InsertKeyError::Actor(refused) => CreateKeyError::Actor(refused),
                InsertKeyError::Unknown(e) => CreateKeyError::Unknown(e),
            })?;
        Ok(CreatedKey { key, plaintext })
    }

    /// Revokes a key of the caller's organization; revoking it again answers the same.
    /// Needs `write`; a test key revokes only test keys. A key of another organization is
    /// `NotFound`, as is a malformed id.
    pub async fn revoke_key(
        &self,
        caller: &Principal,
        key_id: &str,
        meta: &RequestMeta,
    ) -> Result<ApiKey, RevokeKeyError> {
        caller.require(Scope::Write)?;
        let Ok(key_id) = KeyId::new(key_id) else {
            return Err(RevokeKeyError::NotFound);
        };
        match self.reach(caller, &key_id).await? {
            Reach::Allowed => {}
            Reach::NoSuchKey => return Err(RevokeKeyError::NotFound),
            Reach::LiveKeyFromTestKey => return Err(RevokeKeyError::EnvironmentEscalation),
        }
        let now = self.clock.now();
        let audit =
            self.audit_record(caller.org_id(), AuditAction::KeyRevoked, Some(key_id.as_str()), Some(caller), meta, now);
        let key = self
            .keys
            .revoke_key(caller.org_id(), &key_id, now, &Actor::Key(caller.key_id().clone()), &audit)
            .await?
            .ok_or(RevokeKeyError::NotFound)?;
        // The revocation holds from the very next request on, on this instance too.
        self.apply_own_change().await;
        Ok(self.with_pending_use(key))
    }

    /// Renames a key of the caller's organization. Needs `write`; a test key renames only
    /// test keys.
    pub async fn rename_key(
        &self,
        caller: &Principal,
        key_id: &str,
        name: KeyName,
        meta: &RequestMeta,
    ) -> Result<ApiKey, RenameKeyError> {
        caller.require(Scope::Write)?;
        let Ok(key_id) = KeyId::new(key_id) else {
            return Err(RenameKeyError::NotFound);
        };
        match self.reach(caller, &key_id).await? {
            Reach::Allowed => {}
            Reach::NoSuchKey => return Err(RenameKeyError::NotFound),
            Reach::LiveKeyFromTestKey => return Err(RenameKeyError::EnvironmentEscalation),
        }
        let now = self.clock.now();
        let audit =
            self.audit_record(caller.org_id(), AuditAction::KeyRenamed, Some(key_id.as_str()), Some(caller), meta, now);
        let key = self
            .keys
            .rename_key(caller.org_id(), &key_id, &name, &Actor::Key(caller.key_id().clone()), &audit)
            .await?
            .ok_or(RenameKeyError::NotFound)?;
        self.apply_own_change().await;
        Ok(self.with_pending_use(key))
    }

    /// Replaces a key without downtime: a new key with the same name, environment, scopes and
    /// absolute expiry (or the caller's, when that comes first: no key outlives its maker),
    /// shown once, while the old one keeps working for `grace` (never longer than it would
    /// have). Needs `write`, and the scopes of the key rolled.
    pub async fn roll_key(
        &self,
        caller: &Principal,
        key_id: &str,
        grace: GracePeriod,
        meta: &RequestMeta,
    ) -> Result<RolledKey, RollKeyError> {
        caller.require(Scope::Write)?;
        let Ok(key_id) = KeyId::new(key_id) else {
            return Err(RollKeyError::NotFound);
        };
        let old = self.keys.find_key(caller.org_id(), &key_id).await?.ok_or(RollKeyError::NotFound)?;
        if let Some(missing) = old.scopes.first_not_in(caller.scopes()) {
            return Err(RollKeyError::ScopeEscalation(missing));
        }
        if !caller.reaches(old.environment) {
            return Err(RollKeyError::EnvironmentEscalation);
        }
        let now = self.clock.now();
        if !old.is_active(now) {
            return Err(RollKeyError::NotActive);
        }
        let expires_at = match (old.expires_at, caller.expires_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (new_key, plaintext) =
            self.mint_key(&old.org_id, old.name.clone(), old.environment, old.scopes.clone(), expires_at, now);
        // The trail names both keys: the one created in its place, then (newest, on top of
        // the log) the roll of the old one.
        let audit = [
            self.key_created_record(caller, &new_key, meta, now),
            self.audit_record(caller.org_id(), AuditAction::KeyRolled, Some(old.id.as_str()), Some(caller), meta, now),
        ];
        let key = self
            .keys
            .roll_key(
                caller.org_id(),
                &old.id,
                &new_key,
                grace.after(now),
                self.max_active_keys,
                &Actor::Key(caller.key_id().clone()),
                &audit,
            )
            .await
            .map_err(|e| match e {
                RollKeyStoreError::NotFound => RollKeyError::NotFound,
                RollKeyStoreError::NotActive => RollKeyError::NotActive,
                RollKeyStoreError::LimitReached => RollKeyError::KeyLimitReached(self.max_active_keys),
                RollKeyStoreError::Actor(refused) => RollKeyError::Actor(refused),
                RollKeyStoreError::Unknown(e) => RollKeyError::Unknown(e),
            })?;
        self.apply_own_change().await;
        Ok(RolledKey { created: CreatedKey { key, plaintext }, rolled_from: old.id })
    }

    /// Whether the caller may manage this key given their environments: a test key manages
    /// only test keys, as it creates and rolls only test keys. A key's environment never
    /// changes, so checking before the write races nothing. Reads the key for test callers only.
    async fn reach(&self, caller: &Principal, key_id: &KeyId) -> anyhow::Result<Reach> {
        // A caller that reaches live keys reaches every key: no need to read it.
        if caller.reaches(Environment::Live) {
            return Ok(Reach::Allowed);
        }
        Ok(match self.keys.find_key(caller.org_id(), key_id).await? {
            None => Reach::NoSuchKey,
            Some(key) if !caller.reaches(key.environment) => Reach::LiveKeyFromTestKey,
            Some(_) => Reach::Allowed,
        })
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
    /// one way a key is made, by signup, creation or roll.
    pub(super) fn mint_key(
        &self,
        org_id: &OrgId,
        name: KeyName,
        environment: Environment,
        scopes: Scopes,
        expires_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> (NewApiKey, PlaintextKey) {
        let plaintext = PlaintextKey::assemble(environment, &self.generator.key_secret());
        let new_key = NewApiKey {
            id: self.generator.key_id(),
            org_id: org_id.clone(),
            name,
            hash: plaintext.hash(),
            prefix: plaintext.display_prefix(),
            environment,
            scopes,
            created_at: now,
            expires_at,
        };
        (new_key, plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExpiresInDays, Scopes};
    use crate::service::test_support::*;

    fn read_only() -> Scopes {
        Scopes::parse(&["read"]).expect("valid")
    }

    #[tokio::test]
    async fn a_created_key_is_stored_by_hash_and_shown_once_in_full() {
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().times(1).returning(|k, _, _, _| Ok(k.clone().into_stored()));
        let request =
            CreateKeyRequest::new(None, None, Some(read_only()), Some(ExpiresInDays::new(90).expect("valid")));
        let created = ports
            .service()
            .create_key(&principal(&["read", "write"], Environment::Live), request, &RequestMeta::default())
            .await
            .expect("created");
        assert_eq!(created.key.scopes, read_only());
        assert_eq!(created.key.expires_at, Some(NOW + time::Duration::days(90)));
        assert_eq!(created.key.created_at, NOW);
        assert!(created.plaintext.expose().starts_with(created.key.prefix.as_str().trim_end_matches("...")));
    }

    #[tokio::test]
    async fn creation_beyond_the_active_key_limit_is_refused() {
        let mut ports = Ports::new();
        ports
            .keys
            .expect_insert_key()
            .withf(|_, max, _, _| *max == 100)
            .returning(|_, _, _, _| Err(InsertKeyError::LimitReached));
        let caller = principal(&["read", "write"], Environment::Live);
        let err = ports.service().create_key(&caller, CreateKeyRequest::default(), &RequestMeta::default()).await;
        assert!(matches!(err, Err(CreateKeyError::KeyLimitReached(100))));
    }

    #[tokio::test]
    async fn the_active_key_limit_is_configurable() {
        let mut ports = Ports::new();
        ports
            .keys
            .expect_insert_key()
            .withf(|_, max, _, _| *max == 3)
            .returning(|k, _, _, _| Ok(k.clone().into_stored()));
        let service = ports.service().with_max_active_keys(3);
        let caller = principal(&["read", "write"], Environment::Live);
        assert!(service.create_key(&caller, CreateKeyRequest::default(), &RequestMeta::default()).await.is_ok());
    }

    #[tokio::test]
    async fn creating_needs_the_write_scope() {
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().never();
        let err = ports
            .service()
            .create_key(&principal(&["read"], Environment::Live), CreateKeyRequest::default(), &RequestMeta::default())
            .await;
        assert!(matches!(err, Err(CreateKeyError::InsufficientScope(InsufficientScope(Scope::Write)))));
    }

    #[tokio::test]
    async fn a_key_cannot_grant_a_scope_it_lacks() {
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().never();
        let request = CreateKeyRequest::new(None, None, Some(Scopes::all()), None);
        let err = ports
            .service()
            .create_key(&principal(&["write"], Environment::Live), request, &RequestMeta::default())
            .await;
        assert!(matches!(err, Err(CreateKeyError::ScopeEscalation(Scope::Read))));
    }

    #[tokio::test]
    async fn a_test_key_creates_only_test_keys() {
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().times(1).returning(|k, _, _, _| Ok(k.clone().into_stored()));
        let service = ports.service();
        let caller = principal(&["read", "write"], Environment::Test);
        let live = CreateKeyRequest::new(None, Some(Environment::Live), None, None);
        assert!(matches!(
            service.create_key(&caller, live, &RequestMeta::default()).await,
            Err(CreateKeyError::EnvironmentEscalation)
        ));
        let test = CreateKeyRequest::new(None, Some(Environment::Test), None, None);
        let created = service.create_key(&caller, test, &RequestMeta::default()).await.expect("test key");
        assert!(created.plaintext.expose().starts_with("mem_test_"));
    }

    #[tokio::test]
    async fn revoking_an_unknown_or_foreign_key_is_not_found() {
        let mut ports = Ports::new();
        ports.keys.expect_revoke_key().returning(|_, _, _, _, _| Ok(None));
        let service = ports.service();
        let caller = principal(&["write"], Environment::Live);
        assert!(matches!(
            service.revoke_key(&caller, "key_other", &RequestMeta::default()).await,
            Err(RevokeKeyError::NotFound)
        ));
        assert!(matches!(
            service.revoke_key(&caller, "not-an-id", &RequestMeta::default()).await,
            Err(RevokeKeyError::NotFound)
        ));
    }

    #[tokio::test]
    async fn revoking_needs_the_write_scope() {
        let ports = Ports::new();
        let err = ports
            .service()
            .revoke_key(&principal(&["read"], Environment::Live), "key_abc", &RequestMeta::default())
            .await;
        assert!(matches!(err, Err(RevokeKeyError::InsufficientScope(_))));
    }

    #[tokio::test]
    async fn revoking_marks_the_key_at_the_current_time() {
        let mut ports = Ports::new();
        ports.keys.expect_revoke_key().withf(|_, id, at, _, _| id.as_str() == "key_abc" && *at == NOW).returning(
            |org, id, at, _, _| {
                let mut key = api_key(id.as_str(), org.as_str());
                key.revoked_at = Some(at);
                Ok(Some(key))
            },
        );
        let key = ports
            .service()
            .revoke_key(&principal(&["write"], Environment::Live), "key_abc", &RequestMeta::default())
            .await
            .expect("revoked");
        assert!(!key.is_active(NOW));
    }

    #[tokio::test]
    async fn listing_needs_read_and_shows_uses_not_yet_flushed() {
        let mut ports = Ports::new();
        ports.keys.expect_list_keys().returning(|org| Ok(vec![api_key("key_abc", org.as_str())]));
        let service = ports.service();
        assert!(matches!(
            service.list_keys(&principal(&["write"], Environment::Live)).await,
            Err(ListKeysError::InsufficientScope(_))
        ));
        service.usage.record(&KeyId::new("key_abc").expect("valid"), NOW);
        let keys = service.list_keys(&principal(&["read"], Environment::Live)).await.expect("listed");
        assert_eq!(keys[0].last_used_at, Some(NOW));
    }

    #[tokio::test]
    async fn a_rolled_key_keeps_name_scopes_and_absolute_expiry_and_the_old_one_gets_a_grace_period() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| {
            let mut key = api_key(id.as_str(), org.as_str());
            key.expires_at = Some(NOW + time::Duration::days(10));
            Ok(Some(key))
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
        ports.keys.expect_revoke_key().never();
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
    async fn a_roll_the_store_finds_over_the_key_limit_is_refused_with_the_limit() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| Ok(Some(api_key(id.as_str(), org.as_str()))));
        ports
            .keys
            .expect_roll_key()
            .withf(|_, _, _, _, max_active, _, _| *max_active == 100)
            .returning(|_, _, _, _, _, _, _| Err(RollKeyStoreError::LimitReached));
        let caller = principal(&["read", "write"], Environment::Live);
        let err = ports.service().roll_key(&caller, "key_old", GracePeriod::default(), &RequestMeta::default()).await;
        assert!(matches!(err, Err(RollKeyError::KeyLimitReached(100))), "{err:?}");
    }

    #[tokio::test]
    async fn only_active_keys_whose_scopes_the_caller_holds_can_be_rolled() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| {
            let mut key = api_key(id.as_str(), org.as_str());
            if id.as_str() == "key_revoked" {
                key.revoked_at = Some(NOW);
            }
            Ok(Some(key))
        });
        ports.keys.expect_roll_key().never();
        let service = ports.service();
        let meta = RequestMeta::default();
        let both = principal(&["read", "write"], Environment::Live);
        let write_only = principal(&["write"], Environment::Live);
        let test = principal(&["read", "write"], Environment::Test);
        let grace = GracePeriod::default();
        assert!(matches!(service.roll_key(&both, "key_revoked", grace, &meta).await, Err(RollKeyError::NotActive)));
        assert!(matches!(
            service.roll_key(&write_only, "key_a", grace, &meta).await,
            Err(RollKeyError::ScopeEscalation(_))
        ));
        assert!(matches!(
            service.roll_key(&test, "key_a", grace, &meta).await,
            Err(RollKeyError::EnvironmentEscalation)
        ));
        assert!(matches!(service.roll_key(&both, "bad id", grace, &meta).await, Err(RollKeyError::NotFound)));
    }

    #[tokio::test]
    async fn a_test_key_revokes_and_renames_only_test_keys() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| {
            let environment = if id.as_str() == "key_test" { Environment::Test } else { Environment::Live };
            Ok((id.as_str() != "key_gone")
                .then(|| api_key(id.as_str(), org.as_str()).with(|k| k.environment = environment)))
        });
        ports.keys.expect_revoke_key().times(1).withf(|_, id, _, _, _| id.as_str() == "key_test").returning(
            |org, id, at, _, _| Ok(Some(api_key(id.as_str(), org.as_str()).with(|k| k.revoked_at = Some(at)))),
        );
        ports
            .keys
            .expect_rename_key()
            .times(1)
            .withf(|_, id, _, _, _| id.as_str() == "key_test")
            .returning(|org, id, _, _, _| Ok(Some(api_key(id.as_str(), org.as_str()))));
        let service = ports.service();
        let test = principal(&["read", "write"], Environment::Test);
        let meta = RequestMeta::default();
        let name = || KeyName::new("New").expect("valid");
        assert!(matches!(
            service.revoke_key(&test, "key_live", &meta).await,
            Err(RevokeKeyError::EnvironmentEscalation)
        ));
        assert!(matches!(
            service.rename_key(&test, "key_live", name(), &meta).await,
            Err(RenameKeyError::EnvironmentEscalation)
        ));
        assert!(matches!(service.revoke_key(&test, "key_gone", &meta).await, Err(RevokeKeyError::NotFound)));
        assert!(matches!(service.rename_key(&test, "key_gone", name(), &meta).await, Err(RenameKeyError::NotFound)));
        assert!(service.rename_key(&test, "key_test", name(), &meta).await.is_ok());
        assert!(service.revoke_key(&test, "key_test", &meta).await.is_ok());
    }

    #[tokio::test]
    async fn a_live_key_reaches_every_key_of_its_organization_without_an_extra_read() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().never();
        ports.keys.expect_revoke_key().returning(|org, id, at, _, _| {
            Ok(Some(api_key(id.as_str(), org.as_str()).with(|k| {
                k.environment = Environment::Test;
                k.revoked_at = Some(at);
            })))
        });
        let caller = principal(&["write"], Environment::Live);
        let revoked = ports.service().revoke_key(&caller, "key_test", &RequestMeta::default()).await;
        assert!(revoked.is_ok());
    }

    #[tokio::test]
    async fn renaming_an_unknown_key_is_not_found() {
        let mut ports = Ports::new();
        ports.keys.expect_rename_key().returning(|_, _, _, _, _| Ok(None));
        let service = ports.service();
        let caller = principal(&["write"], Environment::Live);
        let name = KeyName::new("New").expect("valid");
        let err = service.rename_key(&caller, "key_x", name, &RequestMeta::default()).await;
        assert!(matches!(err, Err(RenameKeyError::NotFound)));
    }

    #[tokio::test]
    async fn rename_and_revoke_answers_show_uses_not_yet_flushed() {
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        ports.keys.expect_rename_key().returning(|org, id, _, _, _| Ok(Some(api_key(id.as_str(), org.as_str()))));
        ports.keys.expect_revoke_key().returning(|org, id, at, _, _| {
            Ok(Some(api_key(id.as_str(), org.as_str()).with(|k| k.revoked_at = Some(at))))
        });
        let service = ports.service();
        let presented = PlaintextKey::assemble(Environment::Live, &secret_body()).expose().to_owned();
        let caller = service.authenticate(&presented).await.expect("authenticated");
        let meta = RequestMeta::default();
        let renamed = service.rename_key(&caller, "key_abc", KeyName::new("New").expect("valid"), &meta).await;
        assert_eq!(renamed.expect("renamed").last_used_at, Some(NOW));
        let revoked = service.revoke_key(&caller, "key_abc", &meta).await;
        assert_eq!(revoked.expect("revoked").last_used_at, Some(NOW));
    }

    #[tokio::test]
    async fn an_expiring_key_creates_only_keys_that_expire_no_later() {
        let limit = NOW + time::Duration::days(1);
        let mut caller_credential = credential();
        caller_credential.key.expires_at = Some(limit);
        let mut ports = Ports::new();
        ports
            .keys
            .expect_insert_key()
            .times(2)
            .withf(move |k, _, actor, _| k.expires_at.is_some_and(|at| at <= limit) && matches!(actor, Actor::Key(_)))
            .returning(|k, _, _, _| Ok(k.clone().into_stored()));
        let service = ports.service();
        let caller = principal_of(caller_credential);
        let meta = RequestMeta::default();
        let inherited = service.create_key(&caller, CreateKeyRequest::default(), &meta).await.expect("created");
        assert_eq!(inherited.key.expires_at, Some(limit), "omitted: the creator's expiry");
        let sooner = CreateKeyRequest::new(None, None, None, Some(ExpiresInDays::new(1).expect("valid")));
        assert!(service.create_key(&caller, sooner, &meta).await.is_ok());
        let later = CreateKeyRequest::new(None, None, None, Some(ExpiresInDays::new(2).expect("valid")));
        assert!(matches!(service.create_key(&caller, later, &meta).await, Err(CreateKeyError::ExpiryEscalation)));
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
        let mut caller_credential = credential();
        caller_credential.key.expires_at = Some(limit);
        let caller = principal_of(caller_credential);
        let rolled =
            ports.service().roll_key(&caller, "key_forever", GracePeriod::default(), &RequestMeta::default()).await;
        assert_eq!(rolled.expect("rolled").created.key.expires_at, Some(limit));
    }

    #[tokio::test]
    async fn a_write_refused_inside_its_transaction_is_the_callers_refusal() {
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().returning(|_, _, _, _| Err(InsertKeyError::Actor(ActorRefused::Revoked)));
        ports.keys.expect_revoke_key().returning(|_, _, _, _, _| Err(KeyWriteError::Actor(ActorRefused::Expired)));
        let service = ports.service();
        let caller = principal(&["read", "write"], Environment::Live);
        let meta = RequestMeta::default();
        assert!(matches!(
            service.create_key(&caller, CreateKeyRequest::default(), &meta).await,
            Err(CreateKeyError::Actor(ActorRefused::Revoked))
        ));
        assert!(matches!(
            service.revoke_key(&caller, "key_abc", &meta).await,
            Err(RevokeKeyError::Actor(ActorRefused::Expired))
        ));
    }
}
