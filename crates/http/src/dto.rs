//! Request and response bodies, and their conversion from and to domain values.

use account_domain::{
    ApiKey, CreateKeyRequest, CreatedKey, EmailAddress, Environment, ExpiresInDays, KeyName, OrgName, Organization,
    PlanId, Scopes, SignupRequest,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::timestamp::rfc3339;

/// `POST /v1/signup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupBody {
    name: String,
    email: String,
    #[serde(default)]
    plan_id: Option<String>,
}

impl SignupBody {
    pub(crate) fn into_domain(self) -> Result<SignupRequest, ApiError> {
        let name = OrgName::new(&self.name).map_err(|e| ApiError::validation("name", e))?;
        let email = EmailAddress::new(&self.email).map_err(|e| ApiError::validation("email", e))?;
        let plan_id = self
            .plan_id
            .map(|p| {
                PlanId::new(&p).map_err(|_| {
                    ApiError::new(
                        actix_web::http::StatusCode::BAD_REQUEST,
                        "unknown_plan",
                        // Worded as the domain's `UnknownPlan`: a malformed id is just as unknown.
                        format!("no plan has the id `{}`", p.chars().take(64).collect::<String>()),
                    )
                    .with_field("plan_id")
                })
            })
            .transpose()?;
        Ok(SignupRequest::new(name, email, plan_id))
    }
}

/// `POST /v1/account/api-keys`; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    expires_in_days: Option<i64>,
}

impl CreateKeyBody {
    pub(crate) fn into_domain(self) -> Result<CreateKeyRequest, ApiError> {
        let name = self.name.map(|n| KeyName::new(&n).map_err(|e| ApiError::validation("name", e))).transpose()?;
        let environment = self
            .environment
            .map(|e| Environment::new(&e).map_err(|e| ApiError::validation("environment", e)))
            .transpose()?;
        let scopes =
            self.scopes.map(|s| Scopes::parse(&s).map_err(|e| ApiError::validation("scopes", e))).transpose()?;
        let expires_in = self
            .expires_in_days
            .map(|d| ExpiresInDays::new(d).map_err(|e| ApiError::validation("expires_in_days", e)))
            .transpose()?;
        Ok(CreateKeyRequest::new(name, environment, scopes, expires_in))
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct PlanDto<'a> {
    id: &'a str,
    name: &'a str,
    base_price_cents: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct AccountDto<'a> {
    org_id: &'a str,
    name: &'a str,
    email: &'a str,
    plan: PlanDto<'a>,
    is_active: bool,
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
#[derive(Debug, Serialize)]
pub(crate) struct KeyDto {
    id: String,
    name: String,
    key_prefix: String,
    environment: &'static str,
    scopes: Vec<&'static str>,
    is_active: bool,
    created_at: String,
    last_used_at: Option<String>,
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
#[derive(Serialize)]
pub(crate) struct CreatedKeyDto<'a> {
    id: String,
    name: String,
    key: &'a str,
    key_prefix: String,
    environment: &'static str,
    scopes: Vec<&'static str>,
    created_at: String,
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

#[derive(Debug, Serialize)]
pub(crate) struct SignupDto<'a> {
    pub account: AccountDto<'a>,
    pub api_key: CreatedKeyDto<'a>,
}
