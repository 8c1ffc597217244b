//! Counted verifications of keys: the outcome of each, and the window a usage report covers.

use thiserror::Error;
use time::{Date, Duration, Month};

use super::{Environment, KeyId};

/// The verdict on a presented key; every verdict but `NotFound` is counted for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VerificationCode {
    Valid,
    NotFound,
    Revoked,
    Expired,
    InsufficientScope,
    OrgInactive,
    IpNotAllowed,
    /// Valid, but its organization's plan period is used up (a `block` plan), or its test
    /// keys' cap is: verification only, never the account API.
    QuotaExceeded,
}

impl VerificationCode {
    /// Every verdict, in the order of [`Self::index`].
    pub const ALL: [Self; 8] = [
        Self::Valid,
        Self::NotFound,
        Self::Revoked,
        Self::Expired,
        Self::InsufficientScope,
        Self::OrgInactive,
        Self::IpNotAllowed,
        Self::QuotaExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::NotFound => "not_found",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::InsufficientScope => "insufficient_scope",
            Self::OrgInactive => "org_inactive",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::QuotaExceeded => "quota_exceeded",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == raw)
    }

    /// Its position in [`Self::ALL`]: counts are kept in arrays indexed by it.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a counted use of a key ended as: a verification's verdict, or a request to the
/// account API's own routes by a key that passed every check (counted, never billed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UseOutcome {
    Verified(VerificationCode),
    AccountApi,
}

impl UseOutcome {
    /// How many outcomes there are: counts are kept in arrays indexed by [`Self::index`].
    pub const COUNT: usize = VerificationCode::ALL.len() + 1;
    pub const VALID: Self = Self::Verified(VerificationCode::Valid);

    /// Every outcome, in the order of [`Self::index`].
    pub fn all() -> impl Iterator<Item = Self> {
        VerificationCode::ALL.into_iter().map(Self::Verified).chain([Self::AccountApi])
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified(code) => code.as_str(),
            Self::AccountApi => "account_api",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::all().find(|outcome| outcome.as_str() == raw)
    }

    pub fn index(self) -> usize {
        match self {
            Self::Verified(code) => code.index(),
            Self::AccountApi => VerificationCode::ALL.len(),
        }
    }

    /// A use by a key that passed every check: it sets the key's last use.
    pub fn is_success(self) -> bool {
        matches!(self, Self::VALID | Self::AccountApi)
    }

    /// A refusal, by its reason.
    pub fn refusal(self) -> Option<VerificationCode> {
        match self {
            Self::Verified(VerificationCode::Valid) | Self::AccountApi => None,
            Self::Verified(code) => Some(code),
        }
    }
}

const DAY_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// A usage day as it is written, in the store and in answers: `YYYY-MM-DD`.
pub fn day_text(day: Date) -> String {
    day.format(DAY_FORMAT).unwrap_or_else(|_| unreachable!("every date formats as YYYY-MM-DD"))
}

/// A usage day read back from [`day_text`]'s form.
pub fn parse_day(text: &str) -> Option<Date> {
    Date::parse(text, DAY_FORMAT).ok()
}

/// How many verifications of one key, on one UTC day, ended with one outcome. Deltas
/// (a use counted valid, then found to lack its scope) may be negative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub key_id: KeyId,
    pub day: Date,
    pub outcome: UseOutcome,
    pub count: i64,
}

/// A stored count, with what a report needs of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsageRow {
    pub count: UsageCount,
    pub key_name: String,
    pub environment: Environment,
}

/// What one organization that existed during a month used in it, by day, with what
/// billing splits it by: its plan changes and the day it closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationMonth {
    pub org_id: super::OrgId,
    /// Its plan changes up to the month's end, oldest first (the signup's plan first).
    pub plan_changes: Vec<super::PlanChange>,
    /// The day it closed, if it did.
    pub closed_on: Option<Date>,
    /// Its billed counts by UTC day, days without any left out.
    pub days: Vec<BilledCounts>,
}

/// What billing counts, over a day or a period. Requests to the account API are not among them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BilledCounts {
    pub day: Option<Date>,
    /// Valid uses of live keys.
    pub valid: i64,
    /// Refused uses of live keys.
    pub refused: i64,
    /// Valid uses of test keys.
    pub valid_test: i64,
}

impl BilledCounts {
    /// Counts `uses` of `outcome` by a key of `environment`.
    pub fn add(&mut self, environment: Environment, outcome: UseOutcome, uses: i64) {
        match (environment, outcome) {
            (Environment::Live, UseOutcome::VALID) => self.valid += uses,
            (Environment::Live, UseOutcome::Verified(_)) => self.refused += uses,
            (Environment::Test, UseOutcome::VALID) => self.valid_test += uses,
            _ => {}
        }
    }
}

/// One line of the billing export: an organization's plan period within a month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledPeriod {
    pub org_id: super::OrgId,
    pub period: super::PlanPeriod,
    pub counts: BilledCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be a whole number of days from {min} to {max}", min = UsageDays::MIN, max = UsageDays::MAX)]
pub struct InvalidUsageDays;

/// How many days, ending today, a usage report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDays(u32);

impl UsageDays {
    pub const MIN: u32 = 1;
    pub const MAX: u32 = 90;
    pub const DEFAULT: Self = Self(30);

    pub fn new(days: i64) -> Result<Self, InvalidUsageDays> {
        match u32::try_from(days) {
            Ok(days) if (Self::MIN..=Self::MAX).contains(&days) => Ok(Self(days)),
            _ => Err(InvalidUsageDays),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The first day of the window that ends on `to`.
    pub fn first_day(self, to: Date) -> Date {
        to - Duration::days(i64::from(self.0) - 1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a month is written YYYY-MM, such as 2026-11")]
pub struct InvalidMonth;

/// A calendar month, as billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BillingMonth {
    first: Date,
}

impl BillingMonth {
    pub fn parse(raw: &str) -> Result<Self, InvalidMonth> {
        let (year, month) = raw.split_once('-').ok_or(InvalidMonth)?;
        if year.len() != 4 || month.len() != 2 || !(year.bytes().chain(month.bytes())).all(|b| b.is_ascii_digit()) {
            return Err(InvalidMonth);
        }
        let year: i32 = year.parse().map_err(|_| InvalidMonth)?;
        let month: u8 = month.parse().map_err(|_| InvalidMonth)?;
        let month = Month::try_from(month).map_err(|_| InvalidMonth)?;
        Date::from_calendar_date(year, month, 1).map(|first| Self { first }).map_err(|_| InvalidMonth)
    }

    /// The month holding `day`.
    pub fn of(day: Date) -> Self {
        Self { first: day.replace_day(1).expect("every month has a first day") }
    }

    pub fn previous(self) -> Self {
        Self::of(self.first.previous_day().expect("not the first representable day"))
    }

    pub fn first_day(self) -> Date {
        self.first
    }

    pub fn last_day(self) -> Date {
        let days = self.first.month().length(self.first.year());
        self.first.replace_day(days).expect("a month's length is one of its days")
    }
}

impl std::fmt::Display for BillingMonth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.first.year(), u8::from(self.first.month()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn verdict_codes_read_back_as_written() {
        for code in VerificationCode::ALL {
            assert_eq!(VerificationCode::parse(code.as_str()), Some(code));
            assert_eq!(VerificationCode::ALL[code.index()], code);
        }
        assert_eq!(VerificationCode::parse("Valid"), None);
        for outcome in UseOutcome::all() {
            assert_eq!(UseOutcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(UseOutcome::all().count(), UseOutcome::COUNT);
        assert_eq!(
            UseOutcome::all().map(UseOutcome::index).collect::<Vec<_>>(),
            (0..UseOutcome::COUNT).collect::<Vec<_>>()
        );
    }

    #[test]
    fn usage_days_are_written_and_read_as_iso_dates() {
        assert_eq!(day_text(date!(2026 - 03 - 01)), "2026-03-01");
        assert_eq!(parse_day("2026-03-01"), Some(date!(2026 - 03 - 01)));
        assert_eq!(parse_day("2026-3-1"), None);
    }

    #[test]
    fn a_usage_window_is_one_to_ninety_days_ending_today() {
        assert!(UsageDays::new(0).is_err() && UsageDays::new(91).is_err() && UsageDays::new(-1).is_err());
        let window = UsageDays::new(30).expect("valid");
        assert_eq!(window.first_day(date!(2026 - 03 - 01)), date!(2026 - 01 - 31));
        assert_eq!(UsageDays::new(1).expect("valid").first_day(date!(2026 - 03 - 01)), date!(2026 - 03 - 01));
    }

    #[test]
    fn billing_months_parse_strictly_and_know_their_days() {
        let feb = BillingMonth::parse("2024-02").expect("valid");
        assert_eq!((feb.first_day(), feb.last_day()), (date!(2024 - 02 - 01), date!(2024 - 02 - 29)));
        assert_eq!(feb.previous().to_string(), "2024-01");
        assert_eq!(BillingMonth::parse("2024-01").expect("valid").previous().to_string(), "2023-12");
        for bad in ["2024-13", "2024-00", "2024-1", "24-01", "2024/01", "2024-01-01", "", "abcd-ef", "+024-01"] {
            assert!(BillingMonth::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(BillingMonth::of(date!(2026 - 11 - 29)).to_string(), "2026-11");
    }
}
