//! Abuse limits per client address (governor's GCRA): signups, and failed authentications.
//! A request that authenticates correctly is never counted nor checked.

use std::net::IpAddr;
use std::num::NonZeroU32;

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::client_ip::TrustedProxies;
use crate::error::ApiError;

type Limiter<C> = RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The limits' settings; 0 turns a limit off.
#[derive(Debug, Clone, Default)]
pub struct LimitSettings {
    pub signups_per_hour: u32,
    pub leak_reports_per_hour: u32,
    pub auth_failures_per_minute: u32,
    pub trusted_proxies: TrustedProxies,
}

/// The live limiters, shared by every worker.
pub struct AbuseLimits<C: Clock = DefaultClock> {
    signups: Option<Limiter<C>>,
    leak_reports: Option<Limiter<C>>,
    auth_failures: Option<Limiter<C>>,
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
        let limiter = |quota: Option<Quota>| quota.map(|q| RateLimiter::dashmap_with_clock(q, clock.clone()));
        Self {
            signups: limiter(NonZeroU32::new(settings.signups_per_hour).map(Quota::per_hour)),
            leak_reports: limiter(NonZeroU32::new(settings.leak_reports_per_hour).map(Quota::per_hour)),
            auth_failures: limiter(NonZeroU32::new(settings.auth_failures_per_minute).map(Quota::per_minute)),
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

    fn check(&self, limiter: Option<&Limiter<C>>, ip: IpAddr, what: &str) -> Result<(), ApiError> {
        let Some(limiter) = limiter else { return Ok(()) };
        limiter.check_key(&client_of(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::rate_limited(what, wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }

    /// The client address of `req`, as the trusted proxies say.
    pub(crate) fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.trusted_proxies.client_ip(req)
    }

    /// Forgets addresses whose limits have fully replenished, so memory stays bounded.
    pub fn forget_idle_clients(&self) {
        for limiter in [&self.signups, &self.leak_reports, &self.auth_failures].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
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
        assert_eq!(refused.retry_after(), Some(3600));
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

    #[test]
    fn zero_turns_a_limit_off() {
        let (limits, _) = limits(0, 0);
        for _ in 0..1000 {
            limits.check_signup(A).expect("no limit");
            limits.check_auth_failure(A).expect("no limit");
        }
    }
}
