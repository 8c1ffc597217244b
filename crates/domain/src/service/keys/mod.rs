//! An organization's keys: listing and reading them, and the four changes (create, roll,
//! update, revoke), each in a file of its own with its tests. Who may act on which key is
//! decided in one place, [`access`]; every key is made by [`AccountService::mint_key`].

pub(crate) mod access;
mod create;
mod revoke;
mod roll;
mod update;

use time::OffsetDateTime;

use super::{AccountService, Principal};
use crate::model::{
    AllowedIps, ApiKey, AuditAction, AuditRecord, Environment, KeyName, NewApiKey, NewKeyAllowlist, OrgId,
    PlaintextKey, RequestMeta, Scope, Scopes,
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

/// The expiry and allowlist a new key gets: the one rule of what a key inherits from the one
/// that makes it (`maker`; `None` for an operator, who has neither).
/// - Asked for (`expires_at` given, an allowlist `Only` or `Anywhere`): as asked. A creation
///   asking for more than its maker has is then refused (`may_act_on`), never narrowed.
/// - Not asked for: the maker's own expiry and allowlist; for an operator, none (no expiry,
///   anywhere).
/// - A roll asks for the rolled key's own expiry and allowlist, and `clamped` narrows the
///   expiry to the maker's when that comes first: a successor never outlives its roller.
pub(crate) fn inherited(
    expires_at: Option<OffsetDateTime>,
    allowlist: &NewKeyAllowlist,
    maker: Option<&ApiKey>,
    clamped: bool,
) -> (Option<OffsetDateTime>, Option<AllowedIps>) {
    let makers_expiry = maker.and_then(|m| m.expires_at);
    let expires_at = match (expires_at, makers_expiry) {
        (Some(asked), Some(limit)) if clamped => Some(asked.min(limit)),
        (asked, limit) => asked.or(limit),
    };
    let allowed_ips = match allowlist {
        NewKeyAllowlist::Creators => maker.and_then(|m| m.allowed_ips.clone()),
        NewKeyAllowlist::Anywhere => None,
        NewKeyAllowlist::Only(list) => Some(list.clone()),
    };
    (expires_at, allowed_ips)
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

    #[test]
    fn a_new_key_inherits_what_it_does_not_ask_for_from_its_maker_and_a_roll_never_outlives_the_roller() {
        let (soon, later) = (NOW + time::Duration::days(1), NOW + time::Duration::days(9));
        let limited = AllowedIps::parse(&["10.0.0.0/8"]).expect("valid").expect("a list");
        let maker = api_key("key_maker", "org_caller")
            .with(|k| (k.expires_at, k.allowed_ips) = (Some(soon), Some(limited.clone())));
        let only = |items: &[&str]| NewKeyAllowlist::Only(AllowedIps::parse(items).expect("valid").expect("a list"));
        // Not asked for: the maker's; for an operator, nothing.
        assert_eq!(
            inherited(None, &NewKeyAllowlist::Creators, Some(&maker), false),
            (Some(soon), Some(limited.clone()))
        );
        assert_eq!(inherited(None, &NewKeyAllowlist::Creators, None, false), (None, None));
        // Asked for: as asked (a creation asking for more is refused elsewhere, not narrowed).
        let asked = inherited(Some(later), &only(&["10.1.0.0/16"]), Some(&maker), false);
        assert_eq!(asked.0, Some(later));
        assert_eq!(inherited(None, &NewKeyAllowlist::Anywhere, Some(&maker), false).1, None);
        // A roll asks for the rolled key's own, clamped to the roller's expiry.
        assert_eq!(inherited(Some(later), &NewKeyAllowlist::Anywhere, Some(&maker), true).0, Some(soon));
        assert_eq!(inherited(None, &NewKeyAllowlist::Anywhere, Some(&maker), true).0, Some(soon));
    }

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
        service.runtime.record_use(of, NOW, crate::model::UseOutcome::VALID);
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
        service.runtime.record_use(of, NOW, crate::model::UseOutcome::VALID);
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
