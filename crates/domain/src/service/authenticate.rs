//! Authenticating a presented key, and flushing when keys were last used.

use thiserror::Error;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use time::OffsetDateTime;

use super::usage::{AfterRefusal, UseOf};
use super::{AccountService, Principal};
use crate::model::{ApiKey, KeyHash, MalformedKey, PlaintextKey, VerificationCode};
use crate::ports::{ActorRefused, CachedLookup, KeyCredential, StoreError, StoreResult};

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

/// What one [`AccountService::flush_usage`] wrote, and what it gave up.
#[derive(Debug, Default)]
pub struct UsageFlush {
    /// Rows written: last uses and counts.
    pub rows: usize,
    pub dropped: Vec<DroppedUses>,
}

/// Uses counted in memory that will never be written.
#[derive(Debug)]
pub struct DroppedUses {
    /// Verifications lost (the sum of their counts).
    pub uses: u64,
    /// Of how many keys.
    pub keys: usize,
    /// `None`: the keys no longer exist (deleted with their organization, say). Otherwise
    /// the store refused the key's batch as many times as it takes to give
    /// up (`usage::MAX_REFUSALS`), the last time with this.
    pub refusal: Option<StoreError>,
}

impl UsageFlush {
    /// A failure, unless something was dropped: that is reported first.
    fn or_failure(self, e: StoreError) -> StoreResult<Self> {
        if self.dropped.is_empty() {
            Err(e)
        } else {
            Ok(self)
        }
    }
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

/// Where a request came from, worked out only when a rule needs it (a key with an
/// allowlist, or a read of the store): an address already known (`Option<IpAddr>`), or a
/// closure that finds it. Most keys have no allowlist, so a cache hit then never looks.
pub trait ClientAddress {
    fn resolve(self) -> Option<IpAddr>;
}

impl ClientAddress for Option<IpAddr> {
    fn resolve(self) -> Option<IpAddr> {
        self
    }
}

impl<F: FnOnce() -> Option<IpAddr>> ClientAddress for F {
    fn resolve(self) -> Option<IpAddr> {
        self()
    }
}

impl AccountService {
    /// Checks a presented key, taken as its bytes came (anything outside the key's alphabet
    /// is malformed), presented from `client_ip`: well formed with a valid checksum (no lookup
    /// otherwise), known, not revoked, not expired (against the clock, cached or not), used
    /// from an address its allowlist allows, and of an active organization (in that order).
    /// Each verdict on a known key is counted for it. A cache hit costs no I/O and no
    /// allocation: the returned future is complete at once.
    pub fn authenticate(self: &Arc<Self>, presented: &[u8], client_ip: impl ClientAddress) -> Authentication {
        let decided = |outcome| Authentication(Outcome::Decided(Some(outcome)));
        let hash = PlaintextKey::hash_unchecked(presented);
        // A hash the cache knows is that of a stored key (each issued well formed) or of one
        // found missing after passing the check: a hit needs no check (docs/performance.md).
        if let (Some(cache), Some(hash)) = (&self.cache, &hash) {
            match cache.get(hash) {
                Some(CachedLookup::Found(credential)) => {
                    return decided(self.check_credential(credential, self.clock.now(), client_ip))
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
        if let Some(cache) = &self.cache {
            cache.count_miss();
        }
        let client_ip = client_ip.resolve();
        let service = Arc::clone(self);
        Authentication(Outcome::Lookup(Box::pin(async move { service.look_up(hash, client_ip).await })))
    }

    /// After a cache miss: reads the store and caches what it found, or that it found nothing.
    async fn look_up(&self, hash: KeyHash, client_ip: Option<IpAddr>) -> Result<Principal, AuthenticateError> {
        let generation = self.cache.as_ref().map(|c| c.generation());
        let found = match generation {
            // Requests that missed together share one read.
            Some(generation) => self.store_reads.find(&self.keys, hash, generation).await?,
            // No cache, no merging: every request reads the store.
            None => {
                self.store_reads.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.keys.find_credential(&hash).await?.map(Arc::new)
            }
        };
        if let (Some(cache), Some(generation)) = (&self.cache, generation) {
            let lookup = found.clone().map_or(CachedLookup::Missing, CachedLookup::Found);
            cache.put(hash, lookup, generation);
        }
        let credential = found.ok_or(AuthenticateError::UnknownKey)?;
        self.check_credential(credential, self.clock.now(), client_ip)
    }

    /// The rules a found key must pass, checked on every request, cached or not. Each
    /// verdict is counted for the key.
    fn check_credential(
        &self,
        credential: Arc<KeyCredential>,
        now: OffsetDateTime,
        client_ip: impl ClientAddress,
    ) -> Result<Principal, AuthenticateError> {
        let verdict = Self::judge(&credential.key, credential.organization.is_active, now, client_ip);
        let key = &credential.key;
        let of = UseOf { key: &key.id, org: &key.org_id, environment: key.environment };
        self.usage.record(of, now, verdict.map_or_else(VerificationCode::from, |()| VerificationCode::Valid));
        match verdict {
            Ok(()) => Ok(Principal::new(credential, Some(now.date()))),
            Err(ActorRefused::OrganizationInactive) => {
                Err(AuthenticateError::OrganizationInactive(Principal::new(credential, None)))
            }
            Err(ActorRefused::Revoked) => Err(AuthenticateError::Revoked),
            Err(ActorRefused::Expired) => Err(AuthenticateError::Expired),
            Err(ActorRefused::IpNotAllowed) => Err(AuthenticateError::IpNotAllowed),
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
    /// `insufficient_scope` instead of valid. Every service checks scopes through this.
    pub(crate) fn authorize(
        &self,
        caller: &Principal,
        scope: crate::model::Scope,
    ) -> Result<(), super::InsufficientScope> {
        caller.require(scope).inspect_err(|_| self.count_scope_refusal(caller))
    }

    pub(super) fn count_scope_refusal(&self, caller: &Principal) {
        if let Some(day) = caller.valid_use_on() {
            self.usage.reclassify(caller.use_of(), day, VerificationCode::InsufficientScope, self.now());
        }
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

    /// Writes the uses gathered since the previous flush (last-use times and counts), in one
    /// batch. The uses of keys deleted meanwhile are dropped, the rest written. A batch that
    /// fails is kept and written again as it is, before anything newer (the store applies
    /// each batch once); one the store refuses for a reason other than being unavailable is
    /// split by key after a few refusals, and a key's batch refused as often is dropped
    /// (`UsageTracker::refused`). One flush at a time: a flush called while another
    /// runs (the final one at shutdown) waits for it, then writes the rest. A flush that
    /// dropped uses reports them even when a later batch then failed (that one is reported
    /// by the next flush).
    pub async fn flush_usage(&self) -> StoreResult<UsageFlush> {
        let _turn = self.usage_flush.lock().await;
        let mut flush = UsageFlush::default();
        // The uses gathered are taken once: under a steady load there is always more.
        let mut gathered = false;
        loop {
            let held = match self.usage.take_unconfirmed() {
                Some(held) => held,
                None if !gathered => {
                    gathered = true;
                    match self.usage.gather() {
                        Some(held) => held,
                        None => break,
                    }
                }
                None => break,
            };
            match self.keys.record_usage(&held.batch).await {
                Ok(missing) => {
                    let (rows, dropped) = self.usage.confirm(&held, &missing);
                    flush.rows += rows;
                    if !missing.is_empty() {
                        flush.dropped.push(DroppedUses { uses: dropped, keys: missing.len(), refusal: None });
                    }
                }
                Err(e @ StoreError::Unavailable(_)) => {
                    self.usage.keep_unconfirmed(held);
                    return flush.or_failure(e);
                }
                Err(e) => match self.usage.refused(held) {
                    AfterRefusal::Kept => return flush.or_failure(e),
                    AfterRefusal::Split => {}
                    AfterRefusal::Dropped(uses) => {
                        flush.dropped.push(DroppedUses { uses, keys: 1, refusal: Some(e) });
                    }
                },
            }
        }
        Ok(flush)
    }

    /// How long ago the oldest use held in memory, not yet written, was counted: what a
    /// crash would lose.
    pub fn usage_unwritten_for(&self) -> Option<std::time::Duration> {
        let oldest = self.usage.oldest_unwritten()?;
        Some((self.now() - oldest).try_into().unwrap_or_default())
    }

    /// Uses counted and never written (their key deleted first, or refused for good).
    pub fn usage_dropped(&self) -> u64 {
        self.usage.dropped_uses.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Usage batches written since start, and the rows they held.
    pub fn usage_flush_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.usage.flushes.load(Relaxed), self.usage.flushed_rows.load(Relaxed))
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
    async fn a_valid_key_authenticates_as_its_organization_and_records_its_use() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        let hash = PlaintextKey::hash_presented(&key).expect("valid");
        ports.keys.expect_find_credential().withf(move |h| *h == hash).returning(|_| Ok(Some(credential())));
        ports.keys.expect_record_usage().times(1).returning(|batch| {
            assert_eq!(batch.last_used, [(credential().key.id, NOW)]);
            let valid =
                UsageCount { key_id: credential().key.id, day: NOW.date(), outcome: VerificationCode::Valid, count: 1 };
            assert_eq!(batch.counts, [valid]);
            Ok(vec![])
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
                    [UsageCount { key_id: credential().key.id, day: NOW.date(), outcome, count: 1 }]
                );
                Ok(vec![])
            });
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
    async fn a_batch_that_fails_to_flush_is_written_again_as_it_was_before_newer_uses() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        let written = Arc::new(std::sync::Mutex::new(Vec::<UsageBatch>::new()));
        let log = written.clone();
        let mut calls = 0;
        ports.keys.expect_record_usage().times(3).returning(move |b| {
            calls += 1;
            log.lock().expect("log").push(b.clone());
            // The first write fails, as a commit whose outcome is unknown does.
            if calls == 1 {
                Err(StoreError::Unavailable(anyhow::anyhow!("connection lost at commit")))
            } else {
                Ok(vec![])
            }
        });
        let service = ports.service();
        service.authenticate(&key, None).await.expect("authenticated");
        assert!(service.flush_usage().await.is_err());
        service.authenticate(&key, None).await.expect("authenticated");
        service.authenticate(&key, None).await.expect("authenticated");
        assert_eq!(service.flush_usage().await.expect("second flush").rows, 4);
        let written = written.lock().expect("log");
        let valid = |b: &UsageBatch| b.counts.iter().map(|c| c.count).sum::<i64>();
        // The retry is the failed batch itself, same sequence, not merged with newer uses.
        assert_eq!(written[1], written[0]);
        assert_eq!((valid(&written[1]), valid(&written[2])), (1, 2));
        assert!(written[2].sequence > written[1].sequence);
        assert_eq!(service.usage_flush_stats(), (2, 4));
    }

    #[tokio::test]
    async fn uses_of_a_key_deleted_before_the_flush_are_dropped_and_counted_not_retried() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        // The store wrote nothing of the key: it was deleted with its organization.
        ports.keys.expect_record_usage().times(1).returning(|_| Ok(vec![credential().key.id]));
        let service = ports.service();
        for _ in 0..3 {
            service.authenticate(&key, None).await.expect("authenticated");
        }
        let flush = service.flush_usage().await.expect("flushed");
        assert_eq!(flush.rows, 0);
        assert!(matches!(flush.dropped[..], [DroppedUses { uses: 3, keys: 1, refusal: None }]), "{flush:?}");
        assert_eq!(service.usage_dropped(), 3);
        assert!(service.usage_unwritten_for().is_none(), "nothing held any more");
        assert_eq!(service.flush_usage().await.expect("nothing left").rows, 0);
    }

    #[tokio::test]
    async fn a_batch_refused_for_good_holds_newer_uses_back_only_until_it_is_dropped() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        let written = Arc::new(std::sync::Mutex::new(Vec::<UsageBatch>::new()));
        let log = written.clone();
        let mut calls = 0;
        ports.keys.expect_record_usage().times(4).returning(move |b| {
            calls += 1;
            if calls <= 3 {
                Err(anyhow::anyhow!("violates check constraint").into())
            } else {
                log.lock().expect("log").push(b.clone());
                Ok(vec![])
            }
        });
        let service = ports.service();
        service.authenticate(&key, None).await.expect("authenticated");
        assert!(service.flush_usage().await.is_err());
        assert!(service.flush_usage().await.is_err());
        service.authenticate(&key, None).await.expect("authenticated");
        service.authenticate(&key, None).await.expect("authenticated");
        // The third refusal gives the one-key batch up; the newer uses are written at once.
        let flush = service.flush_usage().await.expect("flushed");
        assert!(matches!(flush.dropped[..], [DroppedUses { uses: 1, keys: 1, refusal: Some(_) }]), "{flush:?}");
        assert_eq!(flush.rows, 2);
        assert_eq!(written.lock().expect("log")[0].counts[0].count, 2);
        assert_eq!(service.usage_dropped(), 1);
    }

    #[tokio::test]
    async fn a_store_unavailable_however_long_loses_no_use() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        let mut calls = 0;
        ports.keys.expect_record_usage().times(11).returning(move |b| {
            calls += 1;
            if calls <= 10 {
                Err(StoreError::Unavailable(anyhow::anyhow!("pool timed out")))
            } else {
                assert_eq!(b.counts[0].count, 1);
                Ok(vec![])
            }
        });
        let service = ports.service();
        service.authenticate(&key, None).await.expect("authenticated");
        for _ in 0..10 {
            assert!(service.flush_usage().await.is_err());
        }
        assert_eq!(service.usage_unwritten_for(), Some(std::time::Duration::ZERO), "held, by a clock stopped");
        assert_eq!(service.flush_usage().await.expect("flushed").rows, 2);
        assert_eq!(service.usage_dropped(), 0);
    }

    #[tokio::test]
    async fn a_use_lacking_its_scope_counts_as_insufficient_scope_not_valid() {
        let mut ports = Ports::new();
        let key = presented(&ports);
        let read_only = credential().with(|c| c.key.scopes = crate::model::Scopes::parse(&["read"]).expect("valid"));
        ports.keys.expect_find_credential().returning(move |_| Ok(Some(read_only.clone())));
        ports.keys.expect_record_usage().times(1).returning(|batch| {
            let mut counts: Vec<_> = batch.counts.iter().map(|c| (c.outcome, c.count)).collect();
            counts.sort();
            assert_eq!(counts, [(VerificationCode::Valid, 1), (VerificationCode::InsufficientScope, 1)]);
            Ok(vec![])
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
            .returning(|_| Ok(Some(credential().with(|c| Arc::make_mut(&mut c.organization).is_active = false))));
        match ports.service().authenticate(&key, None).await {
            Err(AuthenticateError::OrganizationInactive(principal)) => assert!(!principal.organization().is_active),
            other => panic!("{other:?}"),
        }
    }
}
