//! Webhook endpoints: where an organization wants its events sent, and which targets may
//! be sent to at all (no server-side request forgery).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;
use time::OffsetDateTime;

use super::{InvalidId, OrgId};

/// Identifies a webhook endpoint: `wh_...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebhookId(Box<str>);

impl WebhookId {
    pub const PREFIX: &'static str = "wh_";

    /// Accepts `wh_` followed by 1 to 64 ASCII letters or digits.
    pub fn new(raw: &str) -> Result<Self, InvalidId> {
        let body = raw.strip_prefix(Self::PREFIX).ok_or(InvalidId { kind: "webhook" })?;
        if body.is_empty() || body.len() > 64 || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(InvalidId { kind: "webhook" });
        }
        Ok(Self(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WebhookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an endpoint may subscribe to: the audit log's own words, and the scheduled events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WebhookEventType {
    KeyCreated,
    KeyRenamed,
    KeyAllowlistChanged,
    KeyRolled,
    KeyRevoked,
    KeyExpiring,
    KeyExpired,
    UsageThreshold,
    AccountUpdated,
    AccountPlanChanged,
    AccountClosed,
    OrganizationDeactivated,
    OrganizationActivated,
}

/// The word is not an event an endpoint may subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown event type")]
pub struct UnknownEventType;

impl WebhookEventType {
    pub const ALL: [Self; 13] = [
        Self::KeyCreated,
        Self::KeyRenamed,
        Self::KeyAllowlistChanged,
        Self::KeyRolled,
        Self::KeyRevoked,
        Self::KeyExpiring,
        Self::KeyExpired,
        Self::UsageThreshold,
        Self::AccountUpdated,
        Self::AccountPlanChanged,
        Self::AccountClosed,
        Self::OrganizationDeactivated,
        Self::OrganizationActivated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyCreated => "key.created",
            Self::KeyRenamed => "key.renamed",
            Self::KeyAllowlistChanged => "key.allowlist_changed",
            Self::KeyRolled => "key.rolled",
            Self::KeyRevoked => "key.revoked",
            Self::KeyExpiring => "key.expiring",
            Self::KeyExpired => "key.expired",
            Self::UsageThreshold => "usage.threshold",
            Self::AccountUpdated => "account.updated",
            Self::AccountPlanChanged => "account.plan_changed",
            Self::AccountClosed => "account.closed",
            Self::OrganizationDeactivated => "organization.deactivated",
            Self::OrganizationActivated => "organization.activated",
        }
    }

    pub fn new(raw: &str) -> Result<Self, UnknownEventType> {
        Self::ALL.into_iter().find(|e| e.as_str() == raw).ok_or(UnknownEventType)
    }
}

/// What an endpoint is sent: at least one event type, each once, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvents(Vec<WebhookEventType>);

/// Why a list of event types was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WebhookEventsError {
    #[error("give at least one event type")]
    Empty,
    #[error("unknown event type `{0}`: see docs/api.md for the list")]
    Unknown(String),
}

impl WebhookEvents {
    pub fn new<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Self, WebhookEventsError> {
        let mut events = raw
            .into_iter()
            .map(|word| {
                WebhookEventType::new(word).map_err(|_| WebhookEventsError::Unknown(word.chars().take(64).collect()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        events.sort();
        events.dedup();
        if events.is_empty() {
            return Err(WebhookEventsError::Empty);
        }
        Ok(Self(events))
    }

    pub fn types(&self) -> &[WebhookEventType] {
        &self.0
    }

    pub fn contains(&self, event: WebhookEventType) -> bool {
        self.0.contains(&event)
    }
}

/// An endpoint's URL: `http` or `https`, with a host, without credentials, at most 2,048
/// characters. Whether its target is public is checked apart ([`is_public_address`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WebhookUrlError {
    #[error("not a valid URL")]
    Invalid,
    #[error("the URL must be http or https")]
    Scheme,
    #[error("the URL must name a host")]
    NoHost,
    #[error("the URL must not hold a user name or password")]
    Credentials,
    #[error("the URL must be at most 2048 characters")]
    TooLong,
    #[error("the URL's target is not a public address")]
    NotPublic,
    #[error("the URL's host cannot be resolved")]
    Unresolvable,
}

impl WebhookUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn new(raw: &str) -> Result<Self, WebhookUrlError> {
        if raw.len() > Self::MAX_LEN {
            return Err(WebhookUrlError::TooLong);
        }
        let url = url::Url::parse(raw.trim()).map_err(|_| WebhookUrlError::Invalid)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookUrlError::Scheme);
        }
        if url.host().is_none() {
            return Err(WebhookUrlError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(WebhookUrlError::Credentials);
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The host as written (a name, or an address in its canonical form).
    pub fn host(&self) -> WebhookHost {
        match self.0.host() {
            Some(url::Host::Ipv4(ip)) => WebhookHost::Address(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => WebhookHost::Address(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => WebhookHost::Name(name.to_owned()),
            None => unreachable!("checked at construction"),
        }
    }

    /// The port, written or the scheme's.
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(80)
    }
}

/// The host of a [`WebhookUrl`]: an address (every IPv4 spelling is normalized by the URL
/// parser) or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookHost {
    Address(IpAddr),
    Name(String),
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local,
/// unique-local, shared (100.64/10), "this network" (0/8), benchmarking (198.18/15),
/// documentation, multicast, broadcast or reserved, nor the IPv4-mapped, IPv4-compatible,
/// NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 or Teredo form of one.
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let private = a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224;
    !private
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated), and :: and ::1 themselves.
    if s[..6] == [0; 6] {
        return s[6] != 0 && is_public_v4(embedded_v4(s[6], s[7]));
    }
    // NAT64: the well-known prefix and the local-use one.
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1) {
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    // 6to4 carries an IPv4 address in its prefix.
    if s[0] == 0x2002 {
        return is_public_v4(embedded_v4(s[1], s[2]));
    }
    let private = (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only
        || s[0] < 0x2000 // outside global unicast 2000::/3
        || s[0] >= 0x4000;
    !private
}

/// An endpoint's signing secret, `whsec_` and the base64 of 32 random bytes: shown to its
/// owner once, at creation or rotation, then stored only sealed.
#[derive(Debug, Clone)]
pub struct SigningSecret(SecretString);

impl SigningSecret {
    pub fn new(text: String) -> Self {
        Self(SecretString::from(text))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// An endpoint as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: WebhookId,
    pub org_id: OrgId,
    pub url: WebhookUrl,
    pub description: Option<String>,
    pub events: WebhookEvents,
    pub enabled: bool,
    /// Why the service disabled it (repeated failures, the account closed); `None` when
    /// enabled or disabled by its owner.
    pub disabled_reason: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Until when the previous secret (before the last rotation) still signs beside the new.
    pub previous_secret_until: Option<OffsetDateTime>,
}

/// One attempt to deliver an event to an endpoint, as recorded after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// Its position among all attempts (higher is newer).
    pub id: i64,
    pub message_id: String,
    pub event_type: String,
    /// 1 for the first attempt of its event.
    pub attempt: u32,
    pub at: OffsetDateTime,
    /// The receiver's status; `None` when it did not answer (timeout, refused, not allowed).
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// A new endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub id: WebhookId,
    pub org_id: OrgId,
    pub url: WebhookUrl,
    pub description: Option<String>,
    pub events: WebhookEvents,
    pub at: OffsetDateTime,
}

/// What a change of an endpoint sets; `None` leaves a property as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookChanges {
    pub url: Option<WebhookUrl>,
    pub events: Option<WebhookEvents>,
    /// `Some(None)` removes it.
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

impl WebhookChanges {
    pub fn is_empty(&self) -> bool {
        self.url.is_none() && self.events.is_none() && self.description.is_none() && self.enabled.is_none()
    }

    /// The names of the fields it sets, for the audit trail.
    pub fn fields(&self) -> Vec<String> {
        [
            ("url", self.url.is_some()),
            ("events", self.events.is_some()),
            ("description", self.description.is_some()),
            ("enabled", self.enabled.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| (*name).to_owned())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(raw: &str) -> bool {
        is_public_address(raw.parse().expect("an address"))
    }

    #[test]
    fn non_public_addresses_are_refused_in_every_form() {
        for raw in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(!public(raw), "{raw} is not public");
        }
        for raw in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(public(raw), "{raw} is public");
        }
    }

    #[test]
    fn every_ipv4_spelling_is_normalized_before_the_check() {
        for raw in ["http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/", "http://127.1/"] {
            let url = WebhookUrl::new(raw).expect("a URL");
            assert_eq!(url.host(), WebhookHost::Address("127.0.0.1".parse().expect("ip")), "{raw}");
        }
    }

    #[test]
    fn urls_need_http_a_host_and_no_credentials() {
        assert!(WebhookUrl::new("https://hooks.example.com/x").is_ok());
        assert_eq!(WebhookUrl::new("ftp://example.com/"), Err(WebhookUrlError::Scheme));
        assert_eq!(WebhookUrl::new("https://user:pw@example.com/"), Err(WebhookUrlError::Credentials));
        assert_eq!(WebhookUrl::new("not a url"), Err(WebhookUrlError::Invalid));
        assert_eq!(WebhookUrl::new(&format!("https://e.com/{}", "a".repeat(2048))), Err(WebhookUrlError::TooLong));
    }

    #[test]
    fn event_lists_are_known_words_each_once() {
        let events = WebhookEvents::new(["key.revoked", "key.created", "key.revoked"]).expect("valid");
        assert_eq!(events.types(), [WebhookEventType::KeyCreated, WebhookEventType::KeyRevoked]);
        assert_eq!(WebhookEvents::new([]), Err(WebhookEventsError::Empty));
        assert!(matches!(WebhookEvents::new(["key.deleted"]), Err(WebhookEventsError::Unknown(_))));
        for event in WebhookEventType::ALL {
            assert_eq!(WebhookEventType::new(event.as_str()), Ok(event));
        }
    }
}

/// The webhook event an audited change sends, with its `data` (never a key nor a secret):
/// the one mapping from the audit trail's words to the events', so that every change that
/// is audited in its transaction also writes its event there. `None` for changes no
/// endpoint is told of (signups, erasures, webhook changes themselves).
pub fn webhook_event_of(record: &super::AuditRecord) -> Option<(WebhookEventType, super::AuditDetails)> {
    use super::{AuditAction as A, AuditDetails, DetailValue};
    let target = || DetailValue::Text(record.target_id.clone().unwrap_or_default());
    let detail = |name: &str| record.details.entries().iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let key = |event| Some((event, AuditDetails::none().with("key_id", target())));
    match record.action {
        A::KeyCreated => key(WebhookEventType::KeyCreated),
        A::KeyRenamed => key(WebhookEventType::KeyRenamed),
        A::KeyAllowlistChanged => key(WebhookEventType::KeyAllowlistChanged),
        A::KeyRolled => key(WebhookEventType::KeyRolled),
        A::KeyRevoked => {
            let reason = detail("reason").unwrap_or_else(|| DetailValue::Text("owner".to_owned()));
            Some((WebhookEventType::KeyRevoked, AuditDetails::none().with("key_id", target()).with("reason", reason)))
        }
        A::KeyLeakReported => Some((
            WebhookEventType::KeyRevoked,
            AuditDetails::none().with("key_id", target()).with("reason", DetailValue::Text("leak_reported".to_owned())),
        )),
        A::OrganizationDeactivated => Some((WebhookEventType::OrganizationDeactivated, AuditDetails::none())),
        A::OrganizationActivated => Some((WebhookEventType::OrganizationActivated, AuditDetails::none())),
        A::AccountUpdated => Some((
            WebhookEventType::AccountUpdated,
            detail("fields").map_or_else(AuditDetails::none, |f| AuditDetails::none().with("fields", f)),
        )),
        A::AccountPlanChanged => {
            let mut data = AuditDetails::none();
            for name in ["from", "to"] {
                if let Some(value) = detail(name) {
                    data = data.with(name, value);
                }
            }
            Some((WebhookEventType::AccountPlanChanged, data))
        }
        A::AccountClosed => Some((WebhookEventType::AccountClosed, AuditDetails::none())),
        A::Signup
        | A::OrgErased
        | A::WebhookCreated
        | A::WebhookUpdated
        | A::WebhookDeleted
        | A::WebhookSecretRotated
        | A::WebhookDisabled => None,
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;
    use crate::model::{AuditAction, AuditDetails, AuditRecord, DetailValue, RequestMeta};

    fn record(action: AuditAction, details: AuditDetails) -> AuditRecord {
        AuditRecord {
            org_id: OrgId::new("org_a").expect("valid"),
            action,
            target_id: Some("key_k".to_owned()),
            actor_key_id: None,
            meta: RequestMeta::default(),
            at: OffsetDateTime::UNIX_EPOCH,
            details,
        }
    }

    fn text(value: &str) -> DetailValue {
        DetailValue::Text(value.to_owned())
    }

    #[test]
    fn a_revocation_says_why_a_leak_report_is_a_revocation_and_a_signup_sends_nothing() {
        let (event, data) = webhook_event_of(&record(AuditAction::KeyRevoked, AuditDetails::none())).expect("sent");
        assert_eq!(event, WebhookEventType::KeyRevoked);
        assert_eq!(data, AuditDetails::none().with("key_id", text("key_k")).with("reason", text("owner")));
        let closing = AuditDetails::none().with("reason", text("account_closed"));
        let (_, data) = webhook_event_of(&record(AuditAction::KeyRevoked, closing)).expect("sent");
        assert_eq!(data.entries()[1].1, text("account_closed"));
        let (event, data) =
            webhook_event_of(&record(AuditAction::KeyLeakReported, AuditDetails::none())).expect("sent");
        assert_eq!((event, &data.entries()[1].1), (WebhookEventType::KeyRevoked, &text("leak_reported")));
        assert!(webhook_event_of(&record(AuditAction::Signup, AuditDetails::none())).is_none());
        assert!(webhook_event_of(&record(AuditAction::WebhookCreated, AuditDetails::none())).is_none());
    }

    #[test]
    fn a_plan_change_gives_its_plans_from_and_to() {
        let details = AuditDetails::none().with("from", text("free")).with("to", text("pro"));
        let (event, data) = webhook_event_of(&record(AuditAction::AccountPlanChanged, details.clone())).expect("sent");
        assert_eq!((event, data), (WebhookEventType::AccountPlanChanged, details));
    }
}
