//! API keys: their names, environments, scopes and lifetimes.

use std::fmt;

use super::allowed_ips::{AllowedIps, NewKeyAllowlist};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

use super::text::{validated_name, TextError};
use super::{KeyHash, KeyId, KeyPrefix, OrgId};

/// A key's display name: trimmed, 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(Box<str>);

impl KeyName {
    pub const MAX_CHARS: usize = 200;
    pub const DEFAULT: &'static str = "Default Key";

    pub fn new(raw: &str) -> Result<Self, TextError> {
        validated_name(raw, Self::MAX_CHARS).map(|name| Self(name.into()))
    }

    pub fn default_name() -> Self {
        Self(Self::DEFAULT.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Unknown environment or scope word.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be one of: {allowed}")]
pub struct UnknownWord {
    pub allowed: &'static str,
}

/// Where a key may be used: production (`live`) or testing (`test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn new(raw: &str) -> Result<Self, UnknownWord> {
        match raw {
            "live" => Ok(Self::Live),
            "test" => Ok(Self::Test),
            _ => Err(UnknownWord { allowed: "live, test" }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }

    /// Whether a key of this environment may create or manage keys of `other`: a test key
    /// reaches only test keys, a live key reaches both.
    pub fn may_manage(self, other: Environment) -> bool {
        self == Self::Live || other == Self::Test
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permission a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn new(raw: &str) -> Result<Self, UnknownWord> {
        match raw {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            _ => Err(UnknownWord { allowed: "read, write" }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a list of scopes was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScopesError {
    #[error("must name at least one scope")]
    Empty,
    #[error("names `{0}` more than once")]
    Duplicate(Scope),
    #[error("`{word}` {source}")]
    Unknown { word: String, source: UnknownWord },
}

/// A non-empty set of scopes, without repeats, in a stable order: one bit per scope
/// (`Scope as u8`), a byte in each cached key.
#[derive(Clone, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Parses a list as a client sends it: non-empty, known words, no duplicates.
    pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Self, ScopesError> {
        let mut set = Self(0);
        for word in words {
            let word = word.as_ref();
            let scope = Scope::new(word)
                .map_err(|source| ScopesError::Unknown { word: word.chars().take(40).collect(), source })?;
            if set.contains(scope) {
                return Err(ScopesError::Duplicate(scope));
            }
            set.0 |= Self::bit(scope);
        }
        if set.0 == 0 {
            return Err(ScopesError::Empty);
        }
        Ok(set)
    }

    /// Both `read` and `write`: what a key gets unless asked otherwise.
    /// The set of `scopes` (repeats count once); `None` when there are none.
    pub fn of(scopes: impl IntoIterator<Item = Scope>) -> Option<Self> {
        let bits = scopes.into_iter().fold(0, |bits, scope| bits | Self::bit(scope));
        (bits != 0).then_some(Self(bits))
    }

    pub fn all() -> Self {
        Self(Self::bit(Scope::Read) | Self::bit(Scope::Write))
    }

    fn bit(scope: Scope) -> u8 {
        1 << scope as u8
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }

    /// The first scope of `self` that `holder` lacks, if any.
    pub fn first_not_in(&self, holder: &Scopes) -> Option<Scope> {
        self.iter().find(|scope| !holder.contains(*scope))
    }

    /// In declaration order (`read`, `write`).
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        [Scope::Read, Scope::Write].into_iter().filter(|scope| self.contains(*scope))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A key lifetime in days: 1 to 3650.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiresInDays(u16);

/// The lifetime is out of range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be a whole number of days from 1 to 3650")]
pub struct InvalidExpiry;

impl ExpiresInDays {
    pub const MAX: i64 = 3650;

    pub fn new(days: i64) -> Result<Self, InvalidExpiry> {
        if (1..=Self::MAX).contains(&days) {
            u16::try_from(days).map(Self).map_err(|_| InvalidExpiry)
        } else {
            Err(InvalidExpiry)
        }
    }

    pub fn after(self, start: OffsetDateTime) -> OffsetDateTime {
        start + Duration::days(i64::from(self.0))
    }
}

/// How long a rolled key keeps working: 0 to 168 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracePeriod(u8);

/// The grace period is out of range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be a whole number of hours from 0 to 168")]
pub struct InvalidGracePeriod;

impl GracePeriod {
    pub const DEFAULT_HOURS: i64 = 24;

    pub fn new(hours: i64) -> Result<Self, InvalidGracePeriod> {
        u8::try_from(hours).ok().filter(|h| *h <= 168).map(Self).ok_or(InvalidGracePeriod)
    }

    pub fn after(self, start: OffsetDateTime) -> OffsetDateTime {
        start + Duration::hours(i64::from(self.0))
    }
}

impl Default for GracePeriod {
    fn default() -> Self {
        Self(24)
    }
}

/// What a client asks for when creating a key; absent fields take the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateKeyRequest {
    pub name: KeyName,
    pub environment: Environment,
    pub scopes: Scopes,
    pub expires_in: Option<ExpiresInDays>,
    pub allowed_ips: NewKeyAllowlist,
}

impl CreateKeyRequest {
    pub fn new(
        name: Option<KeyName>,
        environment: Option<Environment>,
        scopes: Option<Scopes>,
        expires_in: Option<ExpiresInDays>,
    ) -> Self {
        Self {
            name: name.unwrap_or_else(KeyName::default_name),
            environment: environment.unwrap_or(Environment::Live),
            scopes: scopes.unwrap_or_else(Scopes::all),
            expires_in,
            allowed_ips: NewKeyAllowlist::Creators,
        }
    }
}

impl Default for CreateKeyRequest {
    fn default() -> Self {
        Self::new(None, None, None, None)
    }
}

/// An API key as stored: everything but the secret, of which only the hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: KeyId,
    pub org_id: OrgId,
    pub name: KeyName,
    pub prefix: KeyPrefix,
    pub environment: Environment,
    pub scopes: Scopes,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    /// Where the key may be used from; `None`: anywhere.
    pub allowed_ips: Option<AllowedIps>,
}

impl ApiKey {
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Usable now: neither revoked nor expired.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        !self.is_revoked() && !self.is_expired(now)
    }
}

/// What the repository needs to store a new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: KeyId,
    pub org_id: OrgId,
    pub name: KeyName,
    pub hash: KeyHash,
    pub prefix: KeyPrefix,
    pub environment: Environment,
    pub scopes: Scopes,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub allowed_ips: Option<AllowedIps>,
}

impl NewApiKey {
    /// The stored form of a key that has just been inserted.
    pub fn into_stored(self) -> ApiKey {
        ApiKey {
            id: self.id,
            org_id: self.org_id,
            name: self.name,
            prefix: self.prefix,
            environment: self.environment,
            scopes: self.scopes,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: None,
            last_used_at: None,
            allowed_ips: self.allowed_ips,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn scopes_must_be_known_distinct_and_present() {
        assert_eq!(Scopes::parse(&["write", "read"]), Ok(Scopes::all()));
        assert_eq!(Scopes::parse::<&str>(&[]), Err(ScopesError::Empty));
        assert_eq!(Scopes::parse(&["read", "read"]), Err(ScopesError::Duplicate(Scope::Read)));
        assert!(matches!(Scopes::parse(&["admin"]), Err(ScopesError::Unknown { .. })));
        assert!(matches!(Scopes::parse(&["READ"]), Err(ScopesError::Unknown { .. })));
    }

    #[test]
    fn a_key_needs_only_scopes_its_creator_holds() {
        let read = Scopes::parse(&["read"]).expect("valid");
        assert_eq!(Scopes::all().first_not_in(&read), Some(Scope::Write));
        assert_eq!(read.first_not_in(&Scopes::all()), None);
    }

    #[test]
    fn expiry_is_bounded_to_ten_years() {
        assert!(ExpiresInDays::new(0).is_err());
        assert!(ExpiresInDays::new(-1).is_err());
        assert!(ExpiresInDays::new(3651).is_err());
        let start = datetime!(2024-01-15 10:00 UTC);
        assert_eq!(ExpiresInDays::new(90).map(|d| d.after(start)), Ok(datetime!(2024-04-14 10:00 UTC)));
    }

    #[test]
    fn defaults_follow_the_document() {
        let req = CreateKeyRequest::default();
        assert_eq!(req.name.as_str(), "Default Key");
        assert_eq!(req.environment, Environment::Live);
        assert_eq!(req.scopes, Scopes::all());
        assert_eq!(req.expires_in, None);
    }

    #[test]
    fn environments_are_live_or_test() {
        assert_eq!(Environment::new("live"), Ok(Environment::Live));
        assert_eq!(Environment::new("test"), Ok(Environment::Test));
        assert!(Environment::new("prod").is_err());
    }

    #[test]
    fn a_set_of_no_scopes_is_none_and_repeats_count_once() {
        assert_eq!(Scopes::of([]), None);
        assert_eq!(Scopes::of([Scope::Write, Scope::Read, Scope::Write]), Some(Scopes::all()));
        assert_eq!(Scopes::of([Scope::Read, Scope::Read]), Some(Scopes::parse(&["read"]).expect("valid")));
    }
}
