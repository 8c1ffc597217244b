//! Plans: the catalogue of what an organization pays for.

use std::fmt;
use thiserror::Error;

/// The text cannot be a plan id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a plan id is 1 to 64 lowercase letters, digits, '_' or '-'")]
pub struct InvalidPlanId;

/// Identifies a plan, such as `free` or `starter`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlanId(String);

impl PlanId {
    pub fn new(raw: &str) -> Result<Self, InvalidPlanId> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidPlanId)
        }
    }

    /// The plan a signup gets when it names none.
    pub fn free() -> Self {
        Self("free".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happens once an organization's valid verifications reach what its plan includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverLimit {
    /// Verification of its live keys answers `quota_exceeded` until the period ends or the
    /// plan changes: nothing past what is included is ever billed.
    Block,
    /// Verification goes on; what is past the included requests is billed.
    Bill,
}

/// The text is neither `block` nor `bill`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be block or bill")]
pub struct InvalidOverLimit;

impl OverLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Bill => "bill",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidOverLimit> {
        match raw {
            "block" => Ok(Self::Block),
            "bill" => Ok(Self::Bill),
            _ => Err(InvalidOverLimit),
        }
    }
}

/// A plan of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: PlanId,
    pub name: String,
    pub base_price_cents: i64,
    /// Valid uses of live keys a month that the base price covers.
    pub included_requests_per_month: i64,
    /// What happens past them.
    pub over_limit: OverLimit,
}
