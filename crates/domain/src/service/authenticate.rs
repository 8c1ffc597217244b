//! Authenticating a presented key, and checking the scope an operation needs: the rules
//! every request passes. The cache and the usage buffer they use are the runtime's.

use std::net::IpAddr;
use std::sync::Arc;

use thiserror::Error;
use time::OffsetDateTime;

use super::{AccountService, Principal};
use crate::model::{ApiKey, KeyHash, MalformedKey, PlaintextKey, UseOutcome, VerificationCode};
use crate::ports::{ActorRefused, CachedLookup, KeyCredential};
use crate::runtime::{Authentication, ClientAddress, UseOf};

#[derive(Debug, Error)]
pub enum AuthenticateError {
    #[error(transparent)]
    Malformed(#[from] MalformedKey),
    #[error("no such API key")]
    UnknownKey,
    /// The key may not act now: revoked, expired or used from an address its allowlist does
    /// not allow (the one vocabulary of refusals, [`ActorRefused`]; never its
    /// `OrganizationInactive`, which is the next variant).
    #[error(transparent)]
    Refused(ActorRefused),
    /// The key is valid, but its organization is deactivated: only reading the account is
    /// allowed, which is why the caller is handed back.
    #[error("this organization is not active")]
    OrganizationInactive(Principal),
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

impl AccountService {
    /// Checks a presented key, taken as its bytes came (anything outside the key's alphabet
    /// is malformed), presented from `client_ip`: well formed with a valid checksum (no lookup
    /// otherwise), known, not revoked, not expired (against the clock, cached or not), used
    /// from an address its allowlist allows, and of an active organization (in that order).
    /// Each verdict on a known key is counted for it; a key that passes counts as a request
    /// to the account API (`account_api`: never billed, never blocked). A cache hit costs no
    /// I/O and no allocation: the returned future is complete at once.
    pub fn authenticate(self: &Arc<Self>, presented: &[u8], client_ip: impl ClientAddress) -> Authentication {
        self.authenticate_counting(presented, client_ip, UseOutcome::AccountApi)
    }

    /// [`Self::authenticate`], a key that passes counted as `success`.
    pub(crate) fn authenticate_counting(
        self: &Arc<Self>,
        presented: &[u8],
        client_ip: impl ClientAddress,
        success: UseOutcome,
    ) -> Authentication {
        let decided = Authentication::decided;
        let hash = PlaintextKey::hash_unchecked(presented);
        // A hash the cache knows is that of a stored key (each issued well formed) or of one
        // found missing after passing the check: a hit needs no check (docs/performance.md).
        if let Some(hash) = &hash {
            match self.runtime.cached(hash) {
                Some(CachedLookup::Found(credential)) => {
                    return decided(self.check_credential(credential, self.clock.now(), client_ip, success))
                }
                Some(CachedLookup::Missing) => return decided(Err(AuthenticateError::UnknownKey)),
                None => {}
            }
        }
        // Before any lookup: a mistyped or malformed key costs none.
        let hash = match (PlaintextKey::check_presented(presented), hash) {
            (Ok(()), Some(hash)) => hash,
            (Err(e), _) => return decided(Err(e.into())),
            (Ok(()), None) => return decided(Err(MalformedKey::Format.into())),
        };
        let client_ip = client_ip.resolve();
        let service = Arc::clone(self);
        Authentication::later(async move { service.look_up(hash, client_ip, success).await })
    }

    /// After a cache miss: reads the store (the runtime caches what it found).
    async fn look_up(
        &self,
        hash: KeyHash,
        client_ip: Option<IpAddr>,
        success: UseOutcome,
    ) -> Result<Principal, AuthenticateError> {
        let found = self.runtime.read_credential(&self.keys, hash).await?;
        let credential = found.ok_or(AuthenticateError::UnknownKey)?;
        self.check_credential(credential, self.clock.now(), client_ip, success)
    }

    /// The rules a found key must pass, checked on every request, cached or not. Each
    /// verdict is counted for the key, a pass as `success`.
    fn check_credential(
        &self,
        credential: Arc<KeyCredential>,
        now: OffsetDateTime,
        client_ip: impl ClientAddress,
        success: UseOutcome,
    ) -> Result<Principal, AuthenticateError> {
        let verdict = Self::judge(&credential.key, credential.organization.is_active, now, client_ip);
        let key = &credential.key;
        let of = UseOf { key: &key.id, org: &key.org_id, environment: key.environment };
        let outcome = verdict.map_or_else(|refused| UseOutcome::Verified(refused.into()), |()| success);
        self.runtime.record_use(of, now, outcome);
        match verdict {
            Ok(()) => Ok(Principal::new(credential, Some((now.date(), success)))),
            Err(ActorRefused::OrganizationInactive) => {
                Err(AuthenticateError::OrganizationInactive(Principal::new(credential, None)))
            }
            Err(refused) => Err(AuthenticateError::Refused(refused)),
        }
    }

    /// The refusal a found key earns now, in the documented order, if any: the one rule of
    /// whether a key may act, applied at authentication and again inside each key write.
    pub(crate) fn judge(
        key: &ApiKey,
        organization_active: bool,
        now: OffsetDateTime,
        client_ip: impl ClientAddress,
    ) -> Result<(), ActorRefused> {
        if key.is_revoked() {
            return Err(ActorRefused::Revoked);
        }
        if key.is_expired(now) {
            return Err(ActorRefused::Expired);
        }
        if let Some(allowed) = &key.allowed_ips {
            // No address known (a verifier that gave none) is no address allowed.
            if !client_ip.resolve().is_some_and(|ip| allowed.allows(ip)) {
                return Err(ActorRefused::IpNotAllowed);
            }
        }
        if !organization_active {
            return Err(ActorRefused::OrganizationInactive);
        }
        Ok(())
    }

    /// Whether `caller` holds `scope`; a refusal counts the caller's use as
    /// `insufficient_scope` instead of a success. Every service checks scopes through this.
    pub(crate) fn authorize(
        &self,
        caller: &Principal,
        scope: crate::model::Scope,
    ) -> Result<(), super::InsufficientScope> {
        caller.require(scope).inspect_err(|_| self.count_scope_refusal(caller))
    }

    fn count_scope_refusal(&self, caller: &Principal) {
        self.count_as_refused(caller, VerificationCode::InsufficientScope);
    }

    /// Counts the caller's successful use as refused for `reason` instead.
    pub(crate) fn count_as_refused(&self, caller: &Principal, reason: VerificationCode) {
        if let Some((day, counted)) = caller.counted_use() {
            self.runtime.reclassify_use(caller.use_of(), day, counted, reason, self.now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Environment;
    use crate::service::test_support::*;
    use time::Duration;

    fn presented(ports: &Ports) -> Vec<u8> {
        let _ = ports;
        PlaintextKey::assemble(Environment::Live, &secret_body()).expose().as_bytes().to_vec()
    }

    #[tokio::test]
    async fn malformed_keys_are_rejected_without_any_lookup() {
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().never();
        let service = ports.service();
        let good = PlaintextKey::assemble(Environment::Live, &secret_body()).expose().to_owned();
        let mut typo = good.clone();
        typo.replace_range(12..13, if &good[12..13] == "Z" { "Y" } else { "Z" });
        assert!(matches!(
            service.authenticate(b"Bearer nonsense", None).await,
            Err(AuthenticateError::Malformed(MalformedKey::Format))
        ));
        assert!(matches!(
            service.authenticate(typo.as_bytes(), None).await,
            Err(AuthenticateError::Malformed(MalformedKey::Checksum))
        ));
    }

    #[tokio::test]
    async fn a_mistyped_key_the_cache_does_not_know_is_refused_without_a_lookup() {
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().never();
        let mut cache = MockCredentialCache::new();
        cache.expect_get().returning(|_, _| None);
        let mut feed = MockChangeFeed::new();
        feed.expect_poll().returning(|| Ok(FeedPoll { caught_up: true, ..FeedPoll::default() }));
        let service = ports.service_with_cache(cache, feed);
        service.sync_changes().await.expect("synced");
        let good = PlaintextKey::assemble(Environment::Live, &secret_body()).expose().to_owned();
        let mut typo = good.clone();
        typo.replace_range(12..13, if &good[12..13] == "Z" { "Y" } else { "Z" });
        assert!(matches!(
            service.authenticate(typo.as_bytes(), None).await,
            Err(AuthenticateError::Malformed(MalformedKey::Checksum))
        ));
        let long = format!("{good}{}", "x".repeat(100));
        assert!(matches!(
            service.authenticate(long.as_bytes(), None).await,
            Err(AuthenticateError::Malformed(MalformedKey::Format))
        ));
        assert_eq!(service.cache_stats(), Some((0, 0)), "no miss counted: nothing was read");
    }

    #[tokio::test]
    async fn a_valid_key_authenticates_as_its_organization_and_records_its_use_as_an_account_api_request() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        let hash = PlaintextKey::hash_presented(&key).expect("valid");
        ports.keys.expect_find_credential().withf(move |h| *h == hash).returning(|_| Ok(Some(credential())));
        ports.keys.expect_record_usage().times(1).returning(|batch| {
            assert_eq!(batch.last_used, [(credential().key.id, NOW)]);
            let counted =
                UsageCount { key_id: credential().key.id, day: NOW.date(), outcome: UseOutcome::AccountApi, count: 1 };
            assert_eq!(batch.counts, [counted]);
            Ok(UsageRecorded::default())
        });
        let service = ports.service();
        let principal = service.authenticate(&key, None).await.expect("authenticated");
        assert_eq!(principal.org_id(), &credential().key.org_id);
        assert_eq!(service.flush_usage().await.expect("flushed").rows, 2);
        assert_eq!(service.flush_usage().await.expect("nothing left").rows, 0);
    }

    #[tokio::test]
    async fn unknown_revoked_and_expired_keys_are_refused_and_each_known_one_counted_as_refused() {
        for (cred, expected) in [
            (None, "unknown"),
            (Some(credential().with(|c| c.key.revoked_at = Some(NOW - Duration::hours(1)))), "revoked"),
            (Some(credential().with(|c| c.key.expires_at = Some(NOW))), "expired"),
            (Some(credential().with(|c| Arc::make_mut(&mut c.organization).is_active = false)), "inactive"),
        ] {
            let mut ports = Ports::new();
            let key = presented(&ports);
            let known = cred.is_some();
            ports.keys.expect_find_credential().returning(move |_| Ok(cred.clone()));
            ports.keys.expect_record_usage().times(usize::from(known)).returning(move |batch| {
                assert!(batch.last_used.is_empty(), "a refused use is no last use");
                let outcome = match expected {
                    "revoked" => VerificationCode::Revoked,
                    "expired" => VerificationCode::Expired,
                    _ => VerificationCode::OrgInactive,
                };
                assert_eq!(
                    batch.counts,
                    [UsageCount {
                        key_id: credential().key.id,
                        day: NOW.date(),
                        outcome: UseOutcome::Verified(outcome),
                        count: 1
                    }]
                );
                Ok(UsageRecorded::default())
            });
            let service = ports.service();
            let err = service.authenticate(&key, None).await.expect_err(expected);
            let got = match err {
                AuthenticateError::UnknownKey => "unknown",
                AuthenticateError::Refused(ActorRefused::Revoked) => "revoked",
                AuthenticateError::Refused(ActorRefused::Expired) => "expired",
                AuthenticateError::OrganizationInactive(_) => "inactive",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, expected);
            assert_eq!(service.flush_usage().await.expect("flushed").rows, usize::from(known));
        }
    }

    #[tokio::test]
    async fn a_key_expiring_later_still_works() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        ports
            .keys
            .expect_find_credential()
            .returning(|_| Ok(Some(credential().with(|c| c.key.expires_at = Some(NOW + Duration::seconds(1))))));
        assert!(ports.service().authenticate(&key, None).await.is_ok());
    }

    #[tokio::test]
    async fn a_use_lacking_its_scope_counts_as_insufficient_scope_not_as_a_success() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        let read_only = credential().with(|c| c.key.scopes = crate::model::Scopes::parse(&["read"]).expect("valid"));
        ports.keys.expect_find_credential().returning(move |_| Ok(Some(read_only.clone())));
        ports.keys.expect_record_usage().times(1).returning(|batch| {
            let mut counts: Vec<_> = batch.counts.iter().map(|c| (c.outcome, c.count)).collect();
            counts.sort();
            assert_eq!(
                counts,
                [(UseOutcome::Verified(VerificationCode::InsufficientScope), 1), (UseOutcome::AccountApi, 1)]
            );
            Ok(UsageRecorded::default())
        });
        let service = ports.service();
        let reader = service.authenticate(&key, None).await.expect("authenticated");
        assert!(service.authorize(&reader, crate::model::Scope::Read).is_ok());
        let writer = service.authenticate(&key, None).await.expect("authenticated");
        assert!(service.authorize(&writer, crate::model::Scope::Write).is_err());
        service.flush_usage().await.expect("flushed");
    }

    #[tokio::test]
    async fn a_key_limited_to_addresses_is_refused_from_any_other_and_from_an_unknown_one() {
        let limited = crate::model::AllowedIps::parse(&["10.0.0.0/8", "2001:db8::/32"]).expect("valid");
        let mut ports = Ports::new();
        let key = presented(&ports);
        let cred = credential().with(|c| c.key.allowed_ips = limited.clone());
        ports.keys.expect_find_credential().returning(move |_| Ok(Some(cred.clone())));
        let service = ports.service();
        let ip = |text: &str| Some(text.parse::<IpAddr>().expect("address"));
        for allowed in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::7"] {
            assert!(service.authenticate(&key, ip(allowed)).await.is_ok(), "{allowed}");
        }
        for refused in [ip("11.0.0.1"), ip("2001:db9::1"), None] {
            assert!(matches!(
                service.authenticate(&key, refused).await,
                Err(AuthenticateError::Refused(ActorRefused::IpNotAllowed))
            ));
        }
    }

    #[tokio::test]
    async fn a_deactivated_organizations_valid_key_is_handed_back_with_the_refusal() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        ports
            .keys
            .expect_find_credential()
            .returning(|_| Ok(Some(credential().with(|c| Arc::make_mut(&mut c.organization).is_active = false))));
        match ports.service().authenticate(&key, None).await {
            Err(AuthenticateError::OrganizationInactive(principal)) => assert!(!principal.organization().is_active),
            other => panic!("{other:?}"),
        }
    }
}
