//! Who may act on which key: the one decision every key operation asks for, taken on the
//! caller's key as the write's own transaction finds it.

use std::net::IpAddr;

use thiserror::Error;
use time::OffsetDateTime;

use crate::model::{AllowedIps, ApiKey, Environment, KeyId, Scope, Scopes};
use crate::ports::{FoundInWrite, KeyOpError};
use crate::service::{AccountService, InsufficientScope, Principal};

/// Why a caller may not act on a key. The refusals come in one order: the scope the
/// operation needs, then the organization (a key of another one does not exist for the
/// caller), then the key's scopes, its environment, the scopes a wider reach needs, its
/// expiry, and its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyAccessError {
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    #[error("no such API key")]
    NotFound,
    /// The key would hold a scope the caller lacks. `requested`: the scope was asked for
    /// in the request (rather than held by a stored key).
    #[error("a key can only grant or manage scopes it holds itself; this one lacks `{lacking}`")]
    ScopeEscalation { lacking: Scope, requested: bool },
    /// A test key and a live key. `requested`: the environment was asked for in the request.
    #[error("a test key can only create or manage test keys")]
    EnvironmentEscalation { requested: bool },
    /// A change of allowlist would let a key work from more places, and the caller lacks one
    /// of that key's scopes.
    #[error(
        "only a key holding every scope of the key changed can let it work from more addresses; this one lacks `{lacking}`"
    )]
    WideningEscalation { lacking: Scope },
    #[error("a key that expires can only create keys that expire no later than it does")]
    ExpiryEscalation,
    /// The key would work from addresses the caller may not use itself.
    #[error("a key limited to some addresses can only give keys addresses within its own allowlist")]
    AddressEscalation,
}

/// What the access rules look at in the key acted on; `None` where the operation does not
/// touch that property.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyFacts<'a> {
    /// The facts come from the request (a key to be created), not from a stored key.
    pub requested: bool,
    pub environment: Option<Environment>,
    /// Scopes the operation hands on to a key (create, roll).
    pub scopes: Option<&'a Scopes>,
    /// The expiry the operation gives a key (create).
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// The allowlist the operation gives a key (create, roll, a change of allowlist); inner
    /// `None`: anywhere.
    pub allowed_ips: Option<Option<&'a AllowedIps>>,
    /// The scopes of a stored key whose reach the operation widens (an allowlist lifted or
    /// widened): only a caller that holds them all may.
    pub widens_reach_of: Option<&'a Scopes>,
}

/// What an operation does with a stored key, and so which of its properties the rules see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Reads it: any key of the organization, as the list shows them all.
    Read,
    /// Changes it (rename, revoke): its environment counts.
    Manage,
    /// Makes a key like it (roll): its environment and its scopes count.
    Copy,
}

impl<'a> KeyFacts<'a> {
    /// A stored key, as an operation that uses it so sees it.
    pub(crate) fn stored(key: &'a ApiKey, using: Use) -> Self {
        Self {
            requested: false,
            environment: (using != Use::Read).then_some(key.environment),
            scopes: (using == Use::Copy).then_some(&key.scopes),
            expires_at: None,
            allowed_ips: (using == Use::Copy).then_some(key.allowed_ips.as_ref()),
            widens_reach_of: None,
        }
    }

    /// A change of a stored key's allowlist to `to` (`None`: anywhere).
    pub(crate) fn allowlist_change(key: &'a ApiKey, to: Option<&'a AllowedIps>) -> Self {
        Self {
            requested: true,
            environment: Some(key.environment),
            scopes: None,
            expires_at: None,
            allowed_ips: Some(to),
            widens_reach_of: reaches_beyond(key.allowed_ips.as_ref(), to).then_some(&key.scopes),
        }
    }
}

/// Whether a key allowed `given` (`None`: anywhere) works from an address `own` does not allow.
fn reaches_beyond(own: Option<&AllowedIps>, given: Option<&AllowedIps>) -> bool {
    match (own, given) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(own), Some(given)) => !given.is_within(own),
    }
}

/// Whether the key `actor` may act on a key with these facts: the one place the rules live.
pub(crate) fn may_act_on(actor: &ApiKey, key: &KeyFacts<'_>) -> Result<(), KeyAccessError> {
    if let Some(lacking) = key.scopes.and_then(|scopes| scopes.first_not_in(&actor.scopes)) {
        return Err(KeyAccessError::ScopeEscalation { lacking, requested: key.requested });
    }
    if key.environment.is_some_and(|environment| !actor.environment.may_manage(environment)) {
        return Err(KeyAccessError::EnvironmentEscalation { requested: key.requested });
    }
    if let Some(lacking) = key.widens_reach_of.and_then(|scopes| scopes.first_not_in(&actor.scopes)) {
        return Err(KeyAccessError::WideningEscalation { lacking });
    }
    let outlives = |expires_at: Option<OffsetDateTime>| {
        actor.expires_at.is_some_and(|limit| expires_at.is_none_or(|at| at > limit))
    };
    if key.expires_at.is_some_and(outlives) {
        return Err(KeyAccessError::ExpiryEscalation);
    }
    if key.allowed_ips.is_some_and(|given| reaches_beyond(actor.allowed_ips.as_ref(), given)) {
        return Err(KeyAccessError::AddressEscalation);
    }
    Ok(())
}

/// The calling key as a write's own transaction found it, once it is found still able to
/// act now from `client`: the rules of authentication, applied again to the row as it is
/// there (a client that held its body back while its key was revoked, narrowed or rolled).
pub(crate) fn acting_key<'a>(
    found: &FoundInWrite<'a>,
    client: Option<IpAddr>,
    now: OffsetDateTime,
) -> Result<&'a ApiKey, KeyOpError> {
    Ok(acting_key_of(found.actor, client, now)?)
}

/// The calling key as any write found it (with its organization's status), once it may
/// still act now from `client`: [`acting_key`]'s rule, for account writes too.
pub(crate) fn acting_key_of(
    actor: Option<(&ApiKey, bool)>,
    client: Option<IpAddr>,
    now: OffsetDateTime,
) -> Result<&ApiKey, crate::ports::ActorRefused> {
    // A key deleted from under its caller is as good as revoked.
    let (key, organization_active) = actor.ok_or(crate::ports::ActorRefused::Revoked)?;
    AccountService::judge(key, organization_active, now, client)?;
    Ok(key)
}

impl Principal {
    /// Whether this caller, as authenticated, may act on a key with these facts.
    pub(crate) fn may_act_on(&self, key: &KeyFacts<'_>) -> Result<(), KeyAccessError> {
        may_act_on(self.key(), key)
    }
}

impl AccountService {
    /// The caller's key `key_id`, once the caller is found to hold `needs` and to be allowed
    /// the `using` of it. A malformed id, or a key of another organization, is `NotFound`.
    pub(crate) async fn key_to_act_on(
        &self,
        caller: &Principal,
        needs: Scope,
        key_id: &str,
        using: Use,
    ) -> Result<ApiKey, KeyOpError> {
        self.authorize(caller, needs).map_err(KeyAccessError::from)?;
        let Ok(key_id) = KeyId::new(key_id) else {
            return Err(KeyAccessError::NotFound.into());
        };
        let key = self.keys.find_key(caller.org_id(), &key_id).await?.ok_or(KeyAccessError::NotFound)?;
        caller.may_act_on(&KeyFacts::stored(&key, using))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::*;

    fn requested(environment: Environment, scopes: &Scopes, expires_at: Option<OffsetDateTime>) -> KeyFacts<'_> {
        KeyFacts {
            requested: true,
            environment: Some(environment),
            scopes: Some(scopes),
            expires_at: Some(expires_at),
            allowed_ips: None,
            widens_reach_of: None,
        }
    }

    #[test]
    fn the_refusals_come_in_one_order_scopes_then_environment_then_expiry() {
        let limit = NOW + time::Duration::days(1);
        let caller = principal_of(credential().with(|c| {
            c.key.scopes = Scopes::parse(&["write"]).expect("valid");
            c.key.environment = Environment::Test;
            c.key.expires_at = Some(limit);
        }));
        let all = Scopes::all();
        let write = Scopes::parse(&["write"]).expect("valid");
        assert_eq!(
            caller.may_act_on(&requested(Environment::Live, &all, None)),
            Err(KeyAccessError::ScopeEscalation { lacking: Scope::Read, requested: true })
        );
        assert_eq!(
            caller.may_act_on(&requested(Environment::Live, &write, None)),
            Err(KeyAccessError::EnvironmentEscalation { requested: true })
        );
        assert_eq!(
            caller.may_act_on(&requested(Environment::Test, &write, None)),
            Err(KeyAccessError::ExpiryEscalation)
        );
        assert_eq!(caller.may_act_on(&requested(Environment::Test, &write, Some(limit))), Ok(()));
        assert_eq!(
            caller.may_act_on(&requested(Environment::Test, &write, Some(limit + time::Duration::seconds(1)))),
            Err(KeyAccessError::ExpiryEscalation)
        );
    }

    #[test]
    fn a_stored_key_is_judged_by_what_the_operation_touches() {
        let caller = principal(&["write"], Environment::Live);
        let key = api_key("key_a", "org_caller");
        assert_eq!(
            caller.may_act_on(&KeyFacts::stored(&key, Use::Manage)),
            Ok(()),
            "managing needs no scope of the key"
        );
        assert_eq!(
            caller.may_act_on(&KeyFacts::stored(&key, Use::Copy)),
            Err(KeyAccessError::ScopeEscalation { lacking: Scope::Read, requested: false })
        );
        let test = principal(&["read", "write"], Environment::Test);
        assert_eq!(test.may_act_on(&KeyFacts::stored(&key, Use::Read)), Ok(()), "reading is not managing");
        assert_eq!(
            test.may_act_on(&KeyFacts::stored(&key, Use::Manage)),
            Err(KeyAccessError::EnvironmentEscalation { requested: false })
        );
    }

    #[tokio::test]
    async fn a_key_is_found_only_within_the_callers_organization_and_with_the_scope_needed() {
        let mut ports = Ports::new();
        ports.keys.expect_find_key().returning(|org, id| {
            Ok((org.as_str() == "org_caller" && id.as_str() == "key_mine").then(|| api_key(id.as_str(), org.as_str())))
        });
        let service = ports.service();
        let writer = principal(&["write"], Environment::Live);
        let reader = principal(&["read"], Environment::Live);
        assert!(service.key_to_act_on(&writer, Scope::Write, "key_mine", Use::Manage).await.is_ok());
        for (caller, id, expected) in [
            (&reader, "key_mine", KeyAccessError::InsufficientScope(InsufficientScope(Scope::Write))),
            (&writer, "key_other", KeyAccessError::NotFound),
            (&writer, "not an id", KeyAccessError::NotFound),
        ] {
            match service.key_to_act_on(caller, Scope::Write, id, Use::Manage).await {
                Err(KeyOpError::Access(e)) => assert_eq!(e, expected),
                other => panic!("{other:?}"),
            }
        }
    }
}
