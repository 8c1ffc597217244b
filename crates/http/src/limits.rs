//! Abuse limits (governor's GCRA): per client address, signups, leak reports and failed
//! authentications (401s and 403 `ip_not_allowed`; a request that authenticates correctly
//! is never counted nor checked);
//! per organization, writes to its keys (create, rename, roll; never revocation). Each
//! limiter tracks at most [`MAX_TRACKED_CLIENTS`] clients.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard, PoisonError};

use account_domain::OrgId;
use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{NotUntil, Quota, RateLimiter};

use crate::client_ip::{Origin, TrustedProxies};
use crate::error::ApiError;

/// The most clients (addresses, or organizations) each limiter keeps a state for. Past it,
/// the one seen least recently is forgotten first (it starts afresh if it comes back), so a
/// flood of addresses (a botnet, an IPv6 allocation) cannot grow memory without bound
/// between two sweeps of [`AbuseLimits::forget_idle_clients`]. Roughly 150 bytes per
/// address and 250 per organization: at most some 15 MB per address limiter, 25 MB for the
/// writes.
pub const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Shards of a [`BoundedStore`], each behind its own lock, to limit contention.
const SHARDS: usize = 16;
const _: () = assert!(MAX_TRACKED_CLIENTS.is_multiple_of(SHARDS));

type Limiter<K, C> = RateLimiter<K, BoundedStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The limits' settings; 0 turns a limit off.
#[derive(Debug, Clone, Default)]
pub struct LimitSettings {
    pub signups_per_hour: u32,
    pub leak_reports_per_hour: u32,
    pub auth_failures_per_minute: u32,
    /// Creations, renames and rolls of keys per organization per minute.
    pub writes_per_minute: u32,
    pub trusted_proxies: TrustedProxies,
}

/// The live limiters, shared by every worker.
pub struct AbuseLimits<C: Clock = DefaultClock> {
    signups: Option<Limiter<IpAddr, C>>,
    leak_reports: Option<Limiter<IpAddr, C>>,
    auth_failures: Option<Limiter<IpAddr, C>>,
    writes: Option<Limiter<OrgId, C>>,
    trusted_proxies: TrustedProxies,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for AbuseLimits<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbuseLimits").finish_non_exhaustive()
    }
}

impl AbuseLimits {
    pub fn new(settings: LimitSettings) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> AbuseLimits<C> {
    pub fn with_clock(settings: LimitSettings, clock: C) -> Self {
        let per_hour = |n: u32| NonZeroU32::new(n).map(|n| limiter(Quota::per_hour(n), &clock));
        let per_minute = |n: u32| NonZeroU32::new(n).map(|n| limiter(Quota::per_minute(n), &clock));
        Self {
            signups: per_hour(settings.signups_per_hour),
            leak_reports: per_hour(settings.leak_reports_per_hour),
            auth_failures: per_minute(settings.auth_failures_per_minute),
            writes: NonZeroU32::new(settings.writes_per_minute).map(|n| limiter(Quota::per_minute(n), &clock)),
            trusted_proxies: settings.trusted_proxies,
            clock,
        }
    }

    /// Counts a signup attempt from `ip`; 429 when over the limit.
    pub fn check_signup(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check(self.signups.as_ref(), ip, "signups")
    }

    /// Counts a leak report from `ip`; 429 when over the limit.
    pub fn check_leak_report(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check(self.leak_reports.as_ref(), ip, "leak reports")
    }

    /// Counts a failed authentication from `ip`; 429 (instead of the 401) when over the limit.
    pub fn check_auth_failure(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check(self.auth_failures.as_ref(), ip, "failed authentications")
    }

    /// Counts a write (a key created, renamed or rolled) by `org`, after authentication and
    /// before the body is read; 429 when over the limit. Revocation is never counted.
    pub fn check_write(&self, org: &OrgId) -> Result<(), ApiError> {
        let Some(limiter) = &self.writes else { return Ok(()) };
        limiter
            .check_key(org)
            .map_err(|not_until| ApiError::rate_limited_for_organization("writes", self.wait(&not_until)))
    }

    fn check(&self, limiter: Option<&Limiter<IpAddr, C>>, ip: IpAddr, what: &str) -> Result<(), ApiError> {
        let Some(limiter) = limiter else { return Ok(()) };
        limiter.check_key(&client_of(ip)).map_err(|not_until| ApiError::rate_limited(what, self.wait(&not_until)))
    }

    /// Whole seconds until `not_until`, rounded up.
    fn wait(&self, not_until: &NotUntil<C::Instant>) -> u64 {
        let wait = not_until.wait_time_from(self.clock.now());
        wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
    }

    /// Where `req` came from, as the trusted proxies say.
    pub(crate) fn origin(&self, req: &HttpRequest) -> Option<Origin> {
        self.trusted_proxies.origin(req)
    }

    /// The address the limits count `req` under: the client's, or when a trusted proxy
    /// forwarded no address, the nearest trusted proxy's.
    pub(crate) fn counted_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.origin(req).map(|origin| origin.counted)
    }

    /// Forgets clients whose limits have fully replenished (the store's bound holds anyway).
    pub fn forget_idle_clients(&self) {
        for limiter in [&self.signups, &self.leak_reports, &self.auth_failures].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.writes {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

fn limiter<K: Hash + Eq + Clone, C: Clock + Clone>(quota: Quota, clock: &C) -> Limiter<K, C> {
    RateLimiter::new(quota, BoundedStore::new(MAX_TRACKED_CLIENTS), clock.clone())
}

/// A governor state store that holds at most a fixed number of keys: [`SHARDS`] shards,
/// chosen by a randomly keyed hash (a client cannot aim at one), each forgetting its least
/// recently seen key when full. A key is seen when it is checked, allowed or refused, so a
/// client that keeps being refused stays tracked.
pub(crate) struct BoundedStore<K> {
    shards: Box<[Mutex<Shard<K>>]>,
    hasher: RandomState,
    per_shard: usize,
}

struct Shard<K> {
    /// Each key's state (governor's theoretical arrival time) and when it was last seen.
    states: HashMap<K, (Nanos, u64)>,
    /// The keys by when they were last seen, least recent first.
    seen: BTreeMap<u64, K>,
    /// The next "when".
    clock: u64,
}

impl<K: Hash + Eq + Clone> BoundedStore<K> {
    /// A store of at most `capacity` keys (rounded up to a multiple of [`SHARDS`]).
    pub(crate) fn new(capacity: usize) -> Self {
        let shard = || Mutex::new(Shard { states: HashMap::new(), seen: BTreeMap::new(), clock: 0 });
        Self {
            shards: (0..SHARDS).map(|_| shard()).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K>> {
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        // A panic while a shard was held cannot leave it inconsistent for our use: go on.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shards(&self) -> impl Iterator<Item = MutexGuard<'_, Shard<K>>> {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<K: Hash + Eq + Clone> Shard<K> {
    /// Stores `state` for `key` and marks it seen now; a new key first makes room.
    fn store(&mut self, key: &K, state: Nanos, capacity: usize) {
        let now = self.clock;
        self.clock += 1;
        let key = match self.states.get_mut(key) {
            Some(entry) => {
                let previous = std::mem::replace(entry, (state, now));
                self.seen.remove(&previous.1).unwrap_or_else(|| key.clone())
            }
            None => {
                while self.states.len() >= capacity {
                    let Some((_, oldest)) = self.seen.pop_first() else { break };
                    self.states.remove(&oldest);
                }
                self.states.insert(key.clone(), (state, now));
                key.clone()
            }
        };
        self.seen.insert(now, key);
    }
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut shard = self.shard(key);
        let previous = shard.states.get(key).map(|(state, _)| *state);
        match f(previous) {
            Ok((outcome, state)) => {
                shard.store(key, state, self.per_shard);
                Ok(outcome)
            }
            Err(refused) => {
                // Refused: the state is unchanged, but the key was seen.
                if let Some(state) = previous {
                    shard.store(key, state, self.per_shard);
                }
                Err(refused)
            }
        }
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for BoundedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        for mut shard in self.shards() {
            let Shard { states, seen, .. } = &mut *shard;
            states.retain(|_, (state, when)| {
                let keep = *state >= drop_below;
                if !keep {
                    seen.remove(when);
                }
                keep
            });
        }
    }

    fn shrink_to_fit(&self) {
        for mut shard in self.shards() {
            shard.states.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.shards().map(|shard| shard.states.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.shards().all(|shard| shard.states.is_empty())
    }
}

impl<K> std::fmt::Debug for BoundedStore<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedStore").field("per_shard", &self.per_shard).finish_non_exhaustive()
    }
}

/// The client an address belongs to, for counting. An IPv6 client usually holds a whole /64
/// (a new address costs it nothing), so its /64 is one client; an IPv4-mapped IPv6 address
/// is its IPv4 address.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn limits(signups: u32, failures: u32) -> (AbuseLimits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let settings =
            LimitSettings { signups_per_hour: signups, auth_failures_per_minute: failures, ..Default::default() };
        (AbuseLimits::with_clock(settings, clock.clone()), clock)
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 2));

    #[test]
    fn the_eleventh_signup_in_an_hour_is_refused_until_the_limit_resets() {
        let (limits, clock) = limits(10, 30);
        for _ in 0..10 {
            limits.check_signup(A).expect("within the limit");
        }
        let refused = limits.check_signup(A).expect_err("the 11th");
        assert_eq!(refused.code(), "rate_limited");
        limits.check_signup(B).expect("another address has its own limit");
        clock.advance(Duration::from_secs(3600));
        for _ in 0..10 {
            limits.check_signup(A).expect("the limit reset after an hour");
        }
    }

    #[test]
    fn a_refusal_says_when_to_retry() {
        let (limits, _) = limits(1, 30);
        limits.check_signup(A).expect("first");
        let refused = limits.check_signup(A).expect_err("second");
        assert_eq!(refused.retry_after_secs(), Some(3600));
    }

    #[test]
    fn failed_authentications_are_limited_per_minute() {
        let (limits, clock) = limits(10, 3);
        for _ in 0..3 {
            limits.check_auth_failure(A).expect("within");
        }
        assert!(limits.check_auth_failure(A).is_err());
        clock.advance(Duration::from_secs(60));
        assert!(limits.check_auth_failure(A).is_ok());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client_and_mapped_ipv4_is_its_ipv4_address() {
        let (limits, _) = limits(2, 30);
        let ip = |text: &str| text.parse::<IpAddr>().expect("address");
        limits.check_signup(ip("2001:db8:1:2::1")).expect("first");
        limits.check_signup(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).expect("second, same /64");
        assert!(
            limits.check_signup(ip("2001:db8:1:2::abcd")).is_err(),
            "a third address of the /64 is the same client"
        );
        limits.check_signup(ip("2001:db8:1:3::1")).expect("the next /64 is another client");
        limits.check_signup(ip("::ffff:203.0.113.1")).expect("first from A");
        limits.check_signup(A).expect("second from A");
        assert!(limits.check_signup(ip("::ffff:203.0.113.1")).is_err(), "mapped and plain IPv4 are one client");
        limits.check_signup(B).expect("the next IPv4 address is another client");
    }

    fn org(n: u32) -> OrgId {
        OrgId::new(&format!("org_{n:032x}")).expect("an organization id")
    }

    #[test]
    fn writes_are_limited_per_organization_per_minute() {
        let clock = FakeRelativeClock::default();
        let settings = LimitSettings { writes_per_minute: 3, ..Default::default() };
        let limits = AbuseLimits::with_clock(settings, clock.clone());
        for _ in 0..3 {
            limits.check_write(&org(1)).expect("within the limit");
        }
        let refused = limits.check_write(&org(1)).expect_err("the 4th");
        assert_eq!(refused.code(), "rate_limited");
        assert_eq!(refused.retry_after_secs(), Some(20), "one write more every 20 s");
        assert!(refused.message().contains("for this organization"), "{}", refused.message());
        limits.check_write(&org(2)).expect("another organization has its own limit");
        clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            limits.check_write(&org(1)).expect("the limit refilled after a minute");
        }
        let off = AbuseLimits::with_clock(LimitSettings::default(), clock);
        for _ in 0..1000 {
            off.check_write(&org(1)).expect("0: no limit");
        }
    }

    #[test]
    fn each_limiter_tracks_at_most_its_cap_of_clients_and_forgets_the_least_recent_first() {
        let (limits, _) = limits(1, 30);
        let address = |n: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        let flood = (MAX_TRACKED_CLIENTS + 20_000) as u32;
        for n in 0..flood {
            limits.check_signup(address(n)).expect("a new address");
        }
        let signups = limits.signups.as_ref().expect("on");
        assert_eq!(signups.len(), MAX_TRACKED_CLIENTS, "the cap holds");
        // The newest are still tracked (and refused: one signup per hour each)...
        for n in flood - 1000..flood {
            assert!(limits.check_signup(address(n)).is_err(), "{n} is remembered");
        }
        // ...the oldest were forgotten: they start afresh.
        for n in 0..1000 {
            limits.check_signup(address(n)).expect("forgotten");
        }
        assert_eq!(signups.len(), MAX_TRACKED_CLIENTS);
    }

    #[test]
    fn a_refused_client_stays_tracked_while_it_keeps_trying() {
        let clock = FakeRelativeClock::default();
        let store = BoundedStore::new(2 * SHARDS);
        let limiter: Limiter<u32, _> = RateLimiter::new(Quota::per_hour(NonZeroU32::MIN), store, clock);
        limiter.check_key(&0).expect("first");
        // Two keys per shard: each newcomer evicts the least recently seen key of its shard,
        // which is never key 0, seen again (and refused) after each newcomer.
        for n in 1..1000 {
            limiter.check_key(&n).expect("a new key");
            assert!(limiter.check_key(&0).is_err(), "key 0 was forgotten after {n} keys");
        }
        assert_eq!(limiter.len(), 2 * SHARDS);
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let (limits, _) = limits(0, 0);
        for _ in 0..1000 {
            limits.check_signup(A).expect("no limit");
            limits.check_auth_failure(A).expect("no limit");
        }
    }
}
