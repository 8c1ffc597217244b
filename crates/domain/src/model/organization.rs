//! Organizations: who signs up and owns keys.

use std::fmt;
use thiserror::Error;
use time::OffsetDateTime;

use super::text::{validated_name, TextError};
use super::{OrgId, Plan, PlanId};

/// An organization's display name: trimmed, 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgName(String);

impl OrgName {
    pub const MAX_CHARS: usize = 200;

    pub fn new(raw: &str) -> Result<Self, TextError> {
        validated_name(raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an email address was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be a valid email address such as admin@example.com")]
pub struct InvalidEmail;

/// A syntactically valid contact address, kept as given (trimmed).
/// Uniqueness is case-insensitive: see [`EmailAddress::normalized`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// RFC 5321 limits a forward path to 254 octets.
    pub const MAX_LEN: usize = 254;

    pub fn new(raw: &str) -> Result<Self, InvalidEmail> {
        let email = raw.trim();
        if email.len() > Self::MAX_LEN {
            return Err(InvalidEmail);
        }
        let (local, domain) = email.rsplit_once('@').ok_or(InvalidEmail)?;
        if valid_local_part(local) && valid_domain(domain) {
            Ok(Self(email.to_owned()))
        } else {
            Err(InvalidEmail)
        }
    }

    /// What an erased organization's name and email become: unique by construction, and in
    /// the `.invalid` domain, which can never receive mail.
    pub fn erased(org: &super::OrgId) -> Self {
        Self(format!("erased+{org}@invalid"))
    }

    /// A stored address: a valid one, or the [`Self::erased`] one of `org` (which `new`
    /// refuses: nobody signs up with it).
    pub fn stored(raw: &str, org: &super::OrgId) -> Result<Self, InvalidEmail> {
        let erased = Self::erased(org);
        if raw == erased.0 {
            return Ok(erased);
        }
        Self::new(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form two addresses are compared in: lower-cased.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

/// Dot-atom of RFC 5322: atext characters, dots only between them, at most 64 octets.
fn valid_local_part(local: &str) -> bool {
    const SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";
    !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(|b| b.is_ascii_alphanumeric() || SPECIALS.contains(&b)))
}

/// Two or more labels of letters, digits and inner hyphens, each at most 63 octets.
fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels.last().is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()))
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An organization with its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: OrgId,
    pub name: OrgName,
    pub email: EmailAddress,
    pub plan: Plan,
    pub is_active: bool,
    pub created_at: OffsetDateTime,
    /// When its owner closed it: its keys are revoked, its email free for a new signup.
    pub closed_at: Option<OffsetDateTime>,
}

/// What the repository needs to store a new organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrganization {
    pub id: OrgId,
    pub name: OrgName,
    pub email: EmailAddress,
    pub plan_id: PlanId,
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_addresses_are_accepted() {
        for ok in ["admin@mycompany.com", "a.b+tag@sub.example.co.uk", "  x@y.io ", "O'Brien@Example.COM"] {
            assert!(EmailAddress::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(EmailAddress::new(" x@y.io ").map(|e| e.as_str().to_owned()), Ok("x@y.io".to_owned()));
    }

    #[test]
    fn malformed_addresses_are_refused() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            ".a@b.com",
            "a.@b.com",
            "a@-b.com",
            "a@b.123",
            "a\n@b.com",
            "<a>@b.com",
            long.as_str(),
        ] {
            assert_eq!(EmailAddress::new(bad), Err(InvalidEmail), "{bad:?}");
        }
    }

    #[test]
    fn addresses_compare_case_insensitively() {
        let a = EmailAddress::new("Admin@MyCompany.com").expect("valid");
        assert_eq!(a.normalized(), "admin@mycompany.com");
        assert_eq!(a.as_str(), "Admin@MyCompany.com");
    }
}
