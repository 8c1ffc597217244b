//! Authenticating a presented key, and flushing when keys were last used.

use thiserror::Error;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use time::OffsetDateTime;

use super::{AccountService, Principal};
use crate::model::{KeyHash, MalformedKey, PlaintextKey};
use crate::ports::{CachedLookup, KeyCredential};

#[derive(Debug, Error)]
pub enum AuthenticateError {
    #[error(transparent)]
    Malformed(#[from] MalformedKey),
    #[error("no such API key")]
    UnknownKey,
    #[error("this API key has been revoked")]
    Revoked,
    #[error("this API key has expired")]
    Expired,
    #[error("this API key cannot be used from this address")]
    IpNotAllowed,
    /// The key is valid, but its organization is deactivated: only reading the account is
    /// allowed, which is why the caller is handed back.
    #[error("this organization is not active")]
    OrganizationInactive(Principal),
    #[error(transparent)]
    Unknown(#[from] crate::ports::StoreError),
}

/// The outcome of [`AccountService::authenticate`], as a future. When no I/O is needed
/// (a malformed key, or the cache decides) it is complete at once, and an adapter on a hot
/// path may take it with [`Self::now_or_later`] without polling or allocating anything.
#[must_use = "an authentication does nothing until it is awaited or taken"]
pub struct Authentication(Outcome);

enum Outcome {
    Decided(Option<Result<Principal, AuthenticateError>>),
    Lookup(Pin<Box<dyn Future<Output = Result<Principal, AuthenticateError>> + Send>>),
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Outcome::Decided(_) => "Authentication::Decided",
            Outcome::Lookup(_) => "Authentication::Lookup",
        })
    }
}

impl Authentication {
    /// The outcome if it is already known, else the authentication to await.
    pub fn now_or_later(self) -> Result<Result<Principal, AuthenticateError>, Self> {
        match self.0 {
            Outcome::Decided(Some(outcome)) => Ok(outcome),
            other => Err(Self(other)),
        }
    }
}

impl Future for Authentication {
    type Output = Result<Principal, AuthenticateError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Outcome::Decided(outcome) => Poll::Ready(outcome.take().unwrap_or_else(|| {
                Err(AuthenticateError::Unknown(anyhow::anyhow!("an authentication was awaited twice").into()))
            })),
            Outcome::Lookup(lookup) => lookup.as_mut().poll(cx),
        }
    }
}

impl AccountService {
    /// Checks a presented key, taken as its bytes came (anything outside the key's alphabet
    /// is malformed), presented from `client_ip`: well formed with a valid checksum (no lookup
    /// otherwise), known, not revoked, not expired (against the clock, cached or not), used
    /// from an address its allowlist allows, and of an active organization (in that order). A cache hit costs no I/O and no allocation: the returned future is
    /// complete at once.
    pub fn authenticate(self: &Arc<Self>, presented: &[u8], client_ip: Option<IpAddr>) -> Authentication {
        let hash = match PlaintextKey::hash_presented(presented) {
            Ok(hash) => hash,
            Err(e) => return Authentication(Outcome::Decided(Some(Err(e.into())))),
        };
        let now = self.clock.now();
        let decided = match self.cache.as_ref().and_then(|c| c.get(&hash)) {
            Some(CachedLookup::Found(credential)) => self.check_credential(credential, now, client_ip),
            Some(CachedLookup::Missing) => Err(AuthenticateError::UnknownKey),
            None => {
                let service = Arc::clone(self);
                return Authentication(Outcome::Lookup(Box::pin(
                    async move { service.look_up(hash, client_ip).await },
                )));
            }
        };
        Authentication(Outcome::Decided(Some(decided)))
    }

    /// After a cache miss: reads the store and caches what it found, or that it found nothing.
    async fn look_up(&self, hash: KeyHash, client_ip: Option<IpAddr>) -> Result<Principal, AuthenticateError> {
        let generation = self.cache.as_ref().map(|c| c.generation());
        let found = self.keys.find_credential(&hash).await?.map(Arc::new);
        if let (Some(cache), Some(generation)) = (&self.cache, generation) {
            let lookup = found.clone().map_or(CachedLookup::Missing, CachedLookup::Found);
            cache.put(hash, lookup, generation);
        }
        let credential = found.ok_or(AuthenticateError::UnknownKey)?;
        self.check_credential(credential, self.clock.now(), client_ip)
    }

    /// The rules a found key must pass, checked on every request, cached or not.
    fn check_credential(
        &self,
        credential: Arc<KeyCredential>,
        now: OffsetDateTime,
        client_ip: Option<IpAddr>,
    ) -> Result<Principal, AuthenticateError> {
        let key = &credential.key;
        if key.is_revoked() {
            return Err(AuthenticateError::Revoked);
        }
        if key.is_expired(now) {
            return Err(AuthenticateError::Expired);
        }
        if let Some(allowed) = &key.allowed_ips {
            // No address known (a verifier that gave none) is no address allowed.
            if !client_ip.is_some_and(|ip| allowed.allows(ip)) {
                return Err(AuthenticateError::IpNotAllowed);
            }
        }
        if !credential.organization.is_active {
            return Err(AuthenticateError::OrganizationInactive(Principal::new(credential)));
        }
        self.usage.record(&key.id, now);
        Ok(Principal::new(credential))
    }

    /// Applies the changes other writers published (revocations, organization changes) to
    /// the credential cache. Call it often: the cache is trusted only shortly after a sync.
    pub async fn sync_changes(&self) -> crate::ports::StoreResult<usize> {
        match &self.cache {
            Some(cache) => cache.sync().await,
            None => Ok(0),
        }
    }

    /// After a change made here: apply it to the cache before answering, so that the very
    /// next request sees it. If that fails, forget everything rather than risk it.
    pub(super) async fn apply_own_change(&self) {
        if let Some(cache) = &self.cache {
            // The periodic sync reports the failure; here, only safety matters.
            if cache.sync().await.is_err() {
                cache.clear();
            }
        }
    }

    /// Writes the last-use times gathered since the previous flush, in one batch.
    /// On failure they are kept for the next flush. One flush at a time: a flush called
    /// while another runs (the final one at shutdown) waits for it, then writes the rest.
    pub async fn flush_usage(&self) -> crate::ports::StoreResult<usize> {
        let _turn = self.usage_flush.lock().await;
        let batch = self.usage.drain();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.keys.record_usage(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                self.usage.restore(batch);
                Err(e)
            }
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
    async fn a_valid_key_authenticates_as_its_organization_and_records_its_use() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        let hash = PlaintextKey::hash_presented(&key).expect("valid");
        ports.keys.expect_find_credential().withf(move |h| *h == hash).returning(|_| Ok(Some(credential())));
        ports.keys.expect_record_usage().times(1).returning(|batch| {
            assert_eq!(batch, [(credential().key.id, NOW)]);
            Ok(())
        });
        let service = ports.service();
        let principal = service.authenticate(&key, None).await.expect("authenticated");
        assert_eq!(principal.org_id(), &credential().key.org_id);
        assert_eq!(service.flush_usage().await.expect("flushed"), 1);
        assert_eq!(service.flush_usage().await.expect("nothing left"), 0);
    }

    #[tokio::test]
    async fn unknown_revoked_and_expired_keys_are_refused() {
        for (cred, expected) in [
            (None, "unknown"),
            (Some(credential().with(|c| c.key.revoked_at = Some(NOW - Duration::hours(1)))), "revoked"),
            (Some(credential().with(|c| c.key.expires_at = Some(NOW))), "expired"),
            (Some(credential().with(|c| c.organization.is_active = false)), "inactive"),
        ] {
            let mut ports = Ports::new();
            let key = presented(&ports);
            ports.keys.expect_find_credential().returning(move |_| Ok(cred.clone()));
            ports.keys.expect_record_usage().never();
            let service = ports.service();
            let err = service.authenticate(&key, None).await.expect_err(expected);
            let got = match err {
                AuthenticateError::UnknownKey => "unknown",
                AuthenticateError::Revoked => "revoked",
                AuthenticateError::Expired => "expired",
                AuthenticateError::OrganizationInactive(_) => "inactive",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, expected);
            assert_eq!(service.flush_usage().await.expect("nothing"), 0);
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
    async fn usage_that_fails_to_flush_is_kept_for_the_next_flush() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        let mut seq = mockall::Sequence::new();
        ports
            .keys
            .expect_record_usage()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(anyhow::anyhow!("down").into()));
        ports.keys.expect_record_usage().times(1).in_sequence(&mut seq).returning(|b| {
            assert_eq!(b.len(), 1);
            Ok(())
        });
        let service = ports.service();
        service.authenticate(&key, None).await.expect("authenticated");
        assert!(service.flush_usage().await.is_err());
        assert_eq!(service.flush_usage().await.expect("second flush"), 1);
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
            assert!(matches!(service.authenticate(&key, refused).await, Err(AuthenticateError::IpNotAllowed)));
        }
    }

    #[tokio::test]
    async fn a_deactivated_organizations_valid_key_is_handed_back_with_the_refusal() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        ports
            .keys
            .expect_find_credential()
            .returning(|_| Ok(Some(credential().with(|c| c.organization.is_active = false))));
        match ports.service().authenticate(&key, None).await {
            Err(AuthenticateError::OrganizationInactive(principal)) => assert!(!principal.organization().is_active),
            other => panic!("{other:?}"),
        }
    }
}
