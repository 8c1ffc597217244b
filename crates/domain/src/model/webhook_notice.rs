//! The scheduled webhook notices: a key's expiry ahead and past, an organization's plan
//! period used up to a threshold. Each is sent once, by whichever instance takes its mark.

use time::{Duration, OffsetDateTime};

/// A notice of a key's expiry, in the order they come due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyNotice {
    /// `key.expiring`, 7 days before.
    Expiring7d,
    /// `key.expiring`, 1 day before.
    Expiring1d,
    /// `key.expired`.
    Expired,
}

impl KeyNotice {
    /// In the order they come due.
    pub const ALL: [Self; 3] = [Self::Expiring7d, Self::Expiring1d, Self::Expired];

    /// Its mark's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expiring7d => "expiring_7d",
            Self::Expiring1d => "expiring_1d",
            Self::Expired => "expired",
        }
    }

    pub fn new(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == raw)
    }

    /// How long before the expiry it comes due.
    pub fn ahead(self) -> Duration {
        match self {
            Self::Expiring7d => Duration::days(7),
            Self::Expiring1d => Duration::days(1),
            Self::Expired => Duration::ZERO,
        }
    }

    /// When it comes due for a key expiring at `expires_at`.
    pub fn due_at(self, expires_at: OffsetDateTime) -> OffsetDateTime {
        expires_at - self.ahead()
    }

    /// The event it sends.
    pub fn event(self) -> super::WebhookEventType {
        match self {
            Self::Expiring7d | Self::Expiring1d => super::WebhookEventType::KeyExpiring,
            Self::Expired => super::WebhookEventType::KeyExpired,
        }
    }
}

/// A share of a plan period's included requests that, once used, sends `usage.threshold`.
pub const USAGE_THRESHOLDS: [u8; 2] = [80, 100];

/// A usage threshold's mark already taken: the organization's period from `period_start`
/// reached `percent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageMark {
    pub period_start: time::Date,
    pub percent: u8,
}
