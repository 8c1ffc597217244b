//! Authenticating a presented key, and flushing when keys were last used.

use thiserror::Error;

use std::sync::Arc;

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
    #[error("this organization is not active")]
    OrganizationInactive,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// What the cache alone could tell about a presented key.
#[derive(Debug)]
pub enum CachedAuthentication {
    /// Decided without any I/O: malformed, or answered from the cache.
    Decided(Result<Principal, AuthenticateError>),
    /// The cache could not answer: finish with [`AccountService::authenticate_by_lookup`].
    NeedsLookup(KeyHash),
}

impl AccountService {
    /// Checks a presented key: well formed with a valid checksum (no lookup otherwise),
    /// known, not revoked, not expired (against the clock, cached or not), and of an
    /// active organization. A cache hit costs no database work.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, AuthenticateError> {
        match self.authenticate_cached(presented.as_bytes()) {
            CachedAuthentication::Decided(outcome) => outcome,
            CachedAuthentication::NeedsLookup(hash) => self.authenticate_by_lookup(hash).await,
        }
    }

    /// The synchronous part of [`Self::authenticate`]: everything that needs no I/O. Lets an
    /// adapter answer a cache hit without allocating a future. Takes the key's bytes as they
    /// came: anything outside the key's alphabet is malformed.
    pub fn authenticate_cached(&self, presented: &[u8]) -> CachedAuthentication {
        let hash = match PlaintextKey::hash_presented(presented) {
            Ok(hash) => hash,
            Err(e) => return CachedAuthentication::Decided(Err(e.into())),
        };
        let now = self.clock.now();
        match self.cache.as_ref().and_then(|c| c.get(&hash)) {
            Some(CachedLookup::Found(credential)) => CachedAuthentication::Decided(self.admit(credential, now)),
            Some(CachedLookup::Missing) => CachedAuthentication::Decided(Err(AuthenticateError::UnknownKey)),
            None => CachedAuthentication::NeedsLookup(hash),
        }
    }

    /// The rest of [`Self::authenticate`] after a cache miss: reads the store and caches
    /// what it found, or that it found nothing.
    pub async fn authenticate_by_lookup(&self, hash: KeyHash) -> Result<Principal, AuthenticateError> {
        let generation = self.cache.as_ref().map(|c| c.generation());
        let found = self.keys.find_credential(&hash).await?.map(Arc::new);
        if let (Some(cache), Some(generation)) = (&self.cache, generation) {
            let lookup = found.clone().map_or(CachedLookup::Missing, CachedLookup::Found);
            cache.put(hash, lookup, generation);
        }
        let credential = found.ok_or(AuthenticateError::UnknownKey)?;
        self.admit(credential, self.clock.now())
    }

    /// The rules a found key must pass, checked on every request, cached or not.
    fn admit(&self, credential: Arc<KeyCredential>, now: OffsetDateTime) -> Result<Principal, AuthenticateError> {
        let key = &credential.key;
        if key.is_revoked() {
            return Err(AuthenticateError::Revoked);
        }
        if key.is_expired(now) {
            return Err(AuthenticateError::Expired);
        }
        if !credential.organization.is_active {
            return Err(AuthenticateError::OrganizationInactive);
        }
        self.usage.record(&key.id, now);
        Ok(Principal::new(credential))
    }

    /// Applies the changes other writers published (revocations, organization changes) to
    /// the credential cache. Call it often: the cache is trusted only shortly after a sync.
    pub async fn sync_changes(&self) -> anyhow::Result<usize> {
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
    pub async fn flush_usage(&self) -> anyhow::Result<usize> {
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

    fn presented(ports: &Ports) -> String {
        let _ = ports;
        PlaintextKey::assemble(Environment::Live, &secret_body()).expose().to_owned()
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
            service.authenticate("Bearer nonsense").await,
            Err(AuthenticateError::Malformed(MalformedKey::Format))
        ));
        assert!(matches!(service.authenticate(&typo).await, Err(AuthenticateError::Malformed(MalformedKey::Checksum))));
    }

    #[tokio::test]
    async fn a_valid_key_authenticates_as_its_organization_and_records_its_use() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        let hash = PlaintextKey::parse(&key).expect("valid").hash();
        ports.keys.expect_find_credential().withf(move |h| *h == hash).returning(|_| Ok(Some(credential())));
        ports.keys.expect_record_usage().times(1).returning(|batch| {
            assert_eq!(batch, [(credential().key.id, NOW)]);
            Ok(())
        });
        let service = ports.service();
        let principal = service.authenticate(&key).await.expect("authenticated");
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
            let err = service.authenticate(&key).await.expect_err(expected);
            let got = match err {
                AuthenticateError::UnknownKey => "unknown",
                AuthenticateError::Revoked => "revoked",
                AuthenticateError::Expired => "expired",
                AuthenticateError::OrganizationInactive => "inactive",
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
        assert!(ports.service().authenticate(&key).await.is_ok());
    }

    #[tokio::test]
    async fn usage_that_fails_to_flush_is_kept_for_the_next_flush() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        let mut seq = mockall::Sequence::new();
        ports.keys.expect_record_usage().times(1).in_sequence(&mut seq).returning(|_| Err(anyhow::anyhow!("down")));
        ports.keys.expect_record_usage().times(1).in_sequence(&mut seq).returning(|b| {
            assert_eq!(b.len(), 1);
            Ok(())
        });
        let service = ports.service();
        service.authenticate(&key).await.expect("authenticated");
        assert!(service.flush_usage().await.is_err());
        assert_eq!(service.flush_usage().await.expect("second flush"), 1);
    }
}
