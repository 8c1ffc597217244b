//! The audit trail: who did what to which organization, from where.

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;
use time::OffsetDateTime;

use super::{KeyId, OrgId};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Signup,
    KeyCreated,
    KeyRevoked,
    KeyRolled,
    KeyRenamed,
    KeyAllowlistChanged,
    KeyLeakReported,
    OrganizationDeactivated,
    OrganizationActivated,
    AccountUpdated,
    AccountPlanChanged,
    AccountClosed,
    OrgErased,
    WebhookCreated,
    WebhookUpdated,
    WebhookDeleted,
    WebhookSecretRotated,
    WebhookDisabled,
}

/// The stored word is not an action.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown audit action")]
pub struct UnknownAction;

impl AuditAction {
    const ALL: [Self; 18] = [
        Self::Signup,
        Self::KeyCreated,
        Self::KeyRevoked,
        Self::KeyRolled,
        Self::KeyRenamed,
        Self::KeyAllowlistChanged,
        Self::KeyLeakReported,
        Self::OrganizationDeactivated,
        Self::OrganizationActivated,
        Self::AccountUpdated,
        Self::AccountPlanChanged,
        Self::AccountClosed,
        Self::OrgErased,
        Self::WebhookCreated,
        Self::WebhookUpdated,
        Self::WebhookDeleted,
        Self::WebhookSecretRotated,
        Self::WebhookDisabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
            Self::KeyRolled => "key.rolled",
            Self::KeyRenamed => "key.renamed",
            Self::KeyAllowlistChanged => "key.allowlist_changed",
            Self::KeyLeakReported => "key.leak_reported",
            Self::OrganizationDeactivated => "organization.deactivated",
            Self::OrganizationActivated => "organization.activated",
            Self::AccountUpdated => "account.updated",
            Self::AccountPlanChanged => "account.plan_changed",
            Self::AccountClosed => "account.closed",
            Self::OrgErased => "org.erased",
            Self::WebhookCreated => "webhook.created",
            Self::WebhookUpdated => "webhook.updated",
            Self::WebhookDeleted => "webhook.deleted",
            Self::WebhookSecretRotated => "webhook.secret_rotated",
            Self::WebhookDisabled => "webhook.disabled",
        }
    }

    pub fn new(raw: &str) -> Result<Self, UnknownAction> {
        Self::ALL.into_iter().find(|a| a.as_str() == raw).ok_or(UnknownAction)
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request came from, as the audit trail records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    client_ip: Option<IpAddr>,
    user_agent: Option<String>,
}

impl RequestMeta {
    /// The user agent is cut to 256 characters and stripped of control characters.
    pub fn new(client_ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent
            .map(|ua| ua.chars().filter(|c| !c.is_control()).take(256).collect::<String>())
            .filter(|ua| !ua.is_empty());
        Self { client_ip, user_agent }
    }

    /// An operator's command line.
    pub fn operator() -> Self {
        Self::new(None, Some("account-api command line"))
    }

    /// The client's address, when it is known: what the audit trail records and what a key
    /// write checks its caller's allowlist against.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }
}

/// A value of an event's details: never a secret, never a changed field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetailValue {
    Text(String),
    List(Vec<String>),
    /// A count or a percentage (the scheduled webhook events' figures).
    Number(i64),
}

/// What an event changed, by name (the fields of `account.updated`, a plan change's `from`
/// and `to`); empty for most events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditDetails(Vec<(String, DetailValue)>);

impl AuditDetails {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, value: DetailValue) -> Self {
        self.0.push((name.to_owned(), value));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn entries(&self) -> &[(String, DetailValue)] {
        &self.0
    }
}

/// One entry of the trail, written in the same transaction as the change it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub org_id: OrgId,
    pub action: AuditAction,
    /// The key or organization acted on.
    pub target_id: Option<String>,
    /// The key that authenticated the action; none for signups, leak reports and operators.
    pub actor_key_id: Option<KeyId>,
    pub meta: RequestMeta,
    pub at: OffsetDateTime,
    pub details: AuditDetails,
}

/// A stored entry, with its position in the trail (higher is newer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub record: AuditRecord,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_their_words() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::new(action.as_str()), Ok(action));
        }
        assert!(AuditAction::new("key.deleted").is_err());
    }

    #[test]
    fn user_agents_are_bounded_and_printable() {
        let meta = RequestMeta::new(None, Some(&format!("curl/8\n{}", "x".repeat(400))));
        let ua = meta.user_agent().expect("kept");
        assert_eq!(ua.chars().count(), 256);
        assert!(!ua.contains('\n'));
        assert_eq!(RequestMeta::new(None, Some("\u{0}")).user_agent(), None);
    }
}
