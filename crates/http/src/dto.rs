//! Request and response bodies, and their conversion from and to domain values.

use account_domain::{
    audit_event_id, ApiKey, AuditEvent, AuditPage, CreateKeyRequest, CreatedKey, EmailAddress, Environment,
    ExpiresInDays, GracePeriod, KeyName, OrgName, Organization, Plan, PlanId, RolledKey, Scopes, ScopesError,
    SignupRequest, Verification,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::timestamp::rfc3339;

/// `POST /v1/signup`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupBody {
    /// Organization name, 1 to 200 characters once trimmed.
    #[schema(min_length = 1, max_length = 200, example = "My Company")]
    name: String,
    /// Contact email; unique ignoring case.
    #[schema(max_length = 254, example = "admin@mycompany.com")]
    email: String,
    /// Initial plan (default `free`).
    #[serde(default)]
    #[schema(example = "starter")]
    plan_id: Option<String>,
}

impl SignupBody {
    pub(crate) fn into_domain(self) -> Result<SignupRequest, ApiError> {
        let name = OrgName::new(&self.name).map_err(|e| ApiError::validation("name", e))?;
        let email = EmailAddress::new(&self.email).map_err(|e| ApiError::validation("email", e))?;
        let plan_id = self
            .plan_id
            // A malformed id is just as unknown; what was sent is not repeated.
            .map(|p| PlanId::new(&p).map_err(|_| ApiError::unknown_plan()))
            .transpose()?;
        Ok(SignupRequest::new(name, email, plan_id))
    }
}

/// `POST /v1/account/api-keys`; every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    /// Key name, 1 to 200 characters once trimmed (default "Default Key").
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, example = "CI/CD Key")]
    name: Option<String>,
    /// `live` (default) or `test`.
    #[serde(default)]
    #[schema(value_type = Option<EnvironmentName>)]
    environment: Option<String>,
    /// Permissions (default both); no duplicates; no more than the creating key holds.
    #[serde(default)]
    #[schema(value_type = Option<Vec<ScopeName>>, min_items = 1, max_items = 2)]
    scopes: Option<Vec<String>>,
    /// Days until expiration, 1 to 3650 (default: never).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650, example = 90)]
    expires_in_days: Option<i64>,
}

/// Where a key may be used.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only
pub(crate) enum EnvironmentName {
    Live,
    Test,
}

/// A permission: `read` allows the GET routes, `write` creating and revoking keys.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only
pub(crate) enum ScopeName {
    Read,
    Write,
}

impl CreateKeyBody {
    pub(crate) fn into_domain(self) -> Result<CreateKeyRequest, ApiError> {
        let name = self.name.map(|n| KeyName::new(&n).map_err(|e| ApiError::validation("name", e))).transpose()?;
        let environment = self
            .environment
            .map(|e| Environment::new(&e).map_err(|e| ApiError::validation("environment", e)))
            .transpose()?;
        let scopes = self.scopes.map(|s| Scopes::parse(&s).map_err(scopes_error)).transpose()?;
        let expires_in = self
            .expires_in_days
            .map(|d| ExpiresInDays::new(d).map_err(|e| ApiError::validation("expires_in_days", e)))
            .transpose()?;
        Ok(CreateKeyRequest::new(name, environment, scopes, expires_in))
    }
}

/// A refused list of scopes. The domain's message quotes an unknown word (up to 40
/// characters of it), which could be most of a key: it is not repeated.
pub(crate) fn scopes_error(e: ScopesError) -> ApiError {
    match e {
        ScopesError::Unknown { source, .. } => {
            ApiError::validation("scopes", format_args!("names an unknown scope: each {source}"))
        }
        other => ApiError::validation("scopes", other),
    }
}

/// A plan of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PlanDto<'a> {
    #[schema(example = "starter")]
    id: &'a str,
    #[schema(example = "Starter")]
    name: &'a str,
    #[schema(example = 4900)]
    base_price_cents: i64,
}

/// The caller's organization.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AccountDto<'a> {
    #[schema(pattern = "^org_[0-9A-Za-z]+$", example = "org_01a21a32a78e71c8800beb5d0981899c")]
    org_id: &'a str,
    name: &'a str,
    email: &'a str,
    plan: PlanDto<'a>,
    is_active: bool,
    #[schema(format = DateTime, example = "2024-01-01T00:00:00Z")]
    created_at: String,
}

impl<'a> From<&'a Organization> for AccountDto<'a> {
    fn from(org: &'a Organization) -> Self {
        Self {
            org_id: org.id.as_str(),
            name: org.name.as_str(),
            email: org.email.as_str(),
            plan: PlanDto {
                id: org.plan.id.as_str(),
                name: &org.plan.name,
                base_price_cents: org.plan.base_price_cents,
            },
            is_active: org.is_active,
            created_at: rfc3339(org.created_at),
        }
    }
}

fn scope_words(scopes: &Scopes) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}

/// A key as listed: never the secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyDto {
    #[schema(pattern = "^key_[0-9A-Za-z]+$")]
    id: String,
    name: String,
    #[schema(pattern = "^mem_(live|test)_[0-9A-Za-z]{6}\\.\\.\\.$", example = "mem_live_a1b2c3...")]
    key_prefix: String,
    #[schema(value_type = EnvironmentName)]
    environment: &'static str,
    #[schema(value_type = Vec<ScopeName>)]
    scopes: Vec<&'static str>,
    /// False once the key is revoked or expired.
    is_active: bool,
    #[schema(format = DateTime)]
    created_at: String,
    /// Null until first used; may lag by up to a minute.
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

impl KeyDto {
    pub(crate) fn new(key: &ApiKey, now: OffsetDateTime) -> Self {
        Self {
            id: key.id.to_string(),
            name: key.name.as_str().to_owned(),
            key_prefix: key.prefix.as_str().to_owned(),
            environment: key.environment.as_str(),
            scopes: scope_words(&key.scopes),
            is_active: key.is_active(now),
            created_at: rfc3339(key.created_at),
            last_used_at: key.last_used_at.map(rfc3339),
            expires_at: key.expires_at.map(rfc3339),
        }
    }
}

/// A key just created: the only response that ever carries the full key.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedKeyDto<'a> {
    #[schema(pattern = "^key_[0-9A-Za-z]+$")]
    id: String,
    name: String,
    /// The full key, shown this once: save it securely.
    #[schema(pattern = "^mem_(live|test)_[0-9A-Za-z]{38}$")]
    key: &'a str,
    #[schema(pattern = "^mem_(live|test)_[0-9A-Za-z]{6}\\.\\.\\.$")]
    key_prefix: String,
    #[schema(value_type = EnvironmentName)]
    environment: &'static str,
    #[schema(value_type = Vec<ScopeName>)]
    scopes: Vec<&'static str>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

impl<'a> From<&'a CreatedKey> for CreatedKeyDto<'a> {
    fn from(created: &'a CreatedKey) -> Self {
        let key = &created.key;
        Self {
            id: key.id.to_string(),
            name: key.name.as_str().to_owned(),
            key: created.plaintext.expose(),
            key_prefix: key.prefix.as_str().to_owned(),
            environment: key.environment.as_str(),
            scopes: scope_words(&key.scopes),
            created_at: rfc3339(key.created_at),
            expires_at: key.expires_at.map(rfc3339),
        }
    }
}

impl std::fmt::Debug for CreatedKeyDto<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKeyDto").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A new organization and its first key.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SignupDto<'a> {
    pub account: AccountDto<'a>,
    pub api_key: CreatedKeyDto<'a>,
}

/// `PATCH /v1/account/api-keys/{key_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenameKeyBody {
    /// The new name, 1 to 200 characters once trimmed.
    #[schema(min_length = 1, max_length = 200, example = "Production Key")]
    name: String,
}

impl RenameKeyBody {
    pub(crate) fn into_domain(self) -> Result<KeyName, ApiError> {
        KeyName::new(&self.name).map_err(|e| ApiError::validation("name", e))
    }
}

/// `POST /v1/account/api-keys/{key_id}/roll`; the body is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollKeyBody {
    /// How long the old key keeps working, 0 to 168 hours (default 24; 0: it stops at once).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 168, example = 24)]
    expires_in_hours: Option<i64>,
}

impl RollKeyBody {
    pub(crate) fn into_domain(self) -> Result<GracePeriod, ApiError> {
        self.expires_in_hours
            .map(|h| GracePeriod::new(h).map_err(|e| ApiError::validation("expires_in_hours", e)))
            .transpose()
            .map(Option::unwrap_or_default)
    }
}

/// A rolled key: the new key, shown this once, and the id of the key it replaces.
#[derive(Serialize, ToSchema)]
pub(crate) struct RolledKeyDto<'a> {
    #[serde(flatten)]
    key: CreatedKeyDto<'a>,
    /// The key this one replaces; it keeps working for the grace period.
    #[schema(pattern = "^key_[0-9A-Za-z]+$")]
    rolled_from: &'a str,
}

impl<'a> From<&'a RolledKey> for RolledKeyDto<'a> {
    fn from(rolled: &'a RolledKey) -> Self {
        Self { key: CreatedKeyDto::from(&rolled.created), rolled_from: rolled.rolled_from.as_str() }
    }
}

impl std::fmt::Debug for RolledKeyDto<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolledKeyDto").field("rolled_from", &self.rolled_from).finish_non_exhaustive()
    }
}

/// `POST /v1/api-keys/revoke-leaked`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeakReportBody {
    /// Full keys found exposed, 1 to 100.
    #[schema(min_items = 1, max_items = 100)]
    pub keys: Vec<String>,
}

impl std::fmt::Debug for LeakReportBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: how many only.
        f.debug_struct("LeakReportBody").field("keys", &format_args!("[{} REDACTED]", self.keys.len())).finish()
    }
}

/// How many of the reported keys were revoked now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LeakReportDto {
    pub revoked: usize,
}

/// One event of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEventDto {
    #[schema(example = "evt_42")]
    id: String,
    #[schema(example = "key.created")]
    action: &'static str,
    /// The key or organization acted on.
    target_id: Option<String>,
    /// The key that authenticated the action; null for signups, leak reports and operators.
    actor_key_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&AuditEvent> for AuditEventDto {
    fn from(event: &AuditEvent) -> Self {
        let r = &event.record;
        Self {
            id: audit_event_id(event.id),
            action: r.action.as_str(),
            target_id: r.target_id.clone(),
            actor_key_id: r.actor_key_id.as_ref().map(ToString::to_string),
            client_ip: r.meta.client_ip().map(str::to_owned),
            user_agent: r.meta.user_agent().map(str::to_owned),
            created_at: rfc3339(r.at),
        }
    }
}

/// A page of the audit trail, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPageDto {
    events: Vec<AuditEventDto>,
    /// Older events exist: ask again with `before` = the last event's id.
    has_more: bool,
}

impl From<&AuditPage> for AuditPageDto {
    fn from(page: &AuditPage) -> Self {
        Self { events: page.events.iter().map(AuditEventDto::from).collect(), has_more: page.has_more }
    }
}

/// `GET /v1/account/audit-log` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only events older than this event id (from the previous page).
    #[param(example = "evt_42")]
    pub before: Option<String>,
}

impl<'a> From<&'a Plan> for PlanDto<'a> {
    fn from(plan: &'a Plan) -> Self {
        Self { id: plan.id.as_str(), name: &plan.name, base_price_cents: plan.base_price_cents }
    }
}

/// `POST /v1/internal/verify-key`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyKeyBody {
    /// The key a client presented.
    pub key: String,
    /// Scopes the key must hold.
    #[serde(default)]
    #[schema(value_type = Option<Vec<ScopeName>>)]
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for VerifyKeyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key; nor the scopes, whose words are whatever was sent.
        f.debug_struct("VerifyKeyBody").field("key", &"[REDACTED]").finish_non_exhaustive()
    }
}

/// The verdict on a key, with the same rules as the API's own authentication.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VerificationDto {
    valid: bool,
    /// valid, not_found, revoked, expired, insufficient_scope or org_inactive.
    #[schema(example = "valid")]
    code: &'static str,
    org_id: Option<String>,
    key_id: Option<String>,
    #[schema(value_type = Option<EnvironmentName>)]
    environment: Option<&'static str>,
    #[schema(value_type = Option<Vec<ScopeName>>)]
    scopes: Option<Vec<&'static str>>,
    plan_id: Option<String>,
}

impl From<&Verification> for VerificationDto {
    fn from(v: &Verification) -> Self {
        let p = v.principal.as_ref();
        Self {
            valid: v.is_valid(),
            code: v.code.as_str(),
            org_id: p.map(|p| p.org_id().to_string()),
            key_id: p.map(|p| p.key_id().to_string()),
            environment: p.map(|p| p.environment().as_str()),
            scopes: p.map(|p| scope_words(p.scopes())),
            plan_id: p.map(|p| p.organization().plan.id.to_string()),
        }
    }
}
