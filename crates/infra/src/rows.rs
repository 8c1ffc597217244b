//! Row structs of the tables, and their conversion to and from domain types. A row read
//! back that does not make a valid domain value is an error, never silently patched.

use account_domain::{
    AllowedIps, ApiKey, EmailAddress, Environment, KeyCredential, KeyHash, KeyId, KeyName, KeyPrefix, NewApiKey,
    NewOrganization, OrgId, OrgName, Organization, OverLimit, Plan, PlanId, Scopes,
};
use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use diesel::prelude::*;
use time::OffsetDateTime;

use crate::schema::{api_keys, organizations, plans};

/// Times are stored as UTC Unix microseconds: one integer type both backends share.
pub(crate) fn to_micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

pub(crate) fn from_micros(micros: i64) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).context("stored time is out of range")
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = plans)]
pub(crate) struct PlanRow {
    pub id: String,
    pub name: String,
    pub base_price_cents: i64,
    pub included_requests_per_month: i64,
    pub over_limit: String,
}

impl TryFrom<PlanRow> for Plan {
    type Error = anyhow::Error;

    fn try_from(row: PlanRow) -> anyhow::Result<Self> {
        Ok(Plan {
            id: PlanId::new(&row.id).context("stored plan id")?,
            name: row.name,
            base_price_cents: row.base_price_cents,
            included_requests_per_month: row.included_requests_per_month,
            over_limit: OverLimit::parse(&row.over_limit).context("stored over_limit")?,
        })
    }
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = organizations)]
pub(crate) struct OrganizationRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub email_normalized: String,
    pub plan_id: String,
    pub is_active: bool,
    pub created_at: i64,
    pub closed_at: Option<i64>,
}

impl From<&NewOrganization> for OrganizationRow {
    fn from(org: &NewOrganization) -> Self {
        Self {
            id: org.id.to_string(),
            name: org.name.as_str().to_owned(),
            email: org.email.as_str().to_owned(),
            email_normalized: org.email.normalized(),
            plan_id: org.plan_id.to_string(),
            is_active: true,
            created_at: to_micros(org.created_at),
            closed_at: None,
        }
    }
}

impl OrganizationRow {
    pub(crate) fn into_domain(self, plan: PlanRow) -> anyhow::Result<Organization> {
        let id = OrgId::new(&self.id).context("stored organization id")?;
        Ok(Organization {
            name: OrgName::new(&self.name).context("stored organization name")?,
            email: EmailAddress::stored(&self.email, &id).context("stored email")?,
            id,
            plan: plan.try_into()?,
            is_active: self.is_active,
            created_at: from_micros(self.created_at)?,
            closed_at: self.closed_at.map(from_micros).transpose()?,
        })
    }
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub(crate) struct ApiKeyRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub key_hash: String,
    pub key_prefix: String,
    pub environment: String,
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub allowed_ips: Option<String>,
}

/// A key joined to its organization and plan: what authenticating it needs.
#[derive(Debug, Queryable, Selectable)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct CredentialRow {
    #[diesel(embed)]
    pub key: ApiKeyRow,
    #[diesel(embed)]
    pub organization: OrganizationRow,
    #[diesel(embed)]
    pub plan: PlanRow,
}

/// The organizations of the credentials read together, by id: they share one copy each.
pub(crate) type ReadOrganizations = HashMap<OrgId, Arc<Organization>>;

impl CredentialRow {
    /// The credential, its organization shared with the credentials read before it (in
    /// `organizations`) when equal, and its key's organization id with its organization's.
    pub(crate) fn into_domain(self, organizations: &mut ReadOrganizations) -> anyhow::Result<(KeyHash, KeyCredential)> {
        let hash = KeyHash::from_hex(&self.key.key_hash).map_err(|e| anyhow!(e)).context("stored key hash")?;
        let mut key: ApiKey = self.key.try_into()?;
        let read = self.organization.into_domain(self.plan)?;
        let organization = match organizations.get(&read.id) {
            Some(known) if **known == read => known.clone(),
            _ => {
                let organization = Arc::new(read);
                organizations.insert(organization.id.clone(), organization.clone());
                organization
            }
        };
        if key.org_id == organization.id {
            key.org_id = organization.id.clone();
        }
        Ok((hash, KeyCredential::new(key, organization)))
    }
}

impl From<&NewApiKey> for ApiKeyRow {
    fn from(key: &NewApiKey) -> Self {
        Self {
            id: key.id.to_string(),
            org_id: key.org_id.to_string(),
            name: key.name.as_str().to_owned(),
            key_hash: key.hash.to_hex(),
            key_prefix: key.prefix.as_str().to_owned(),
            environment: key.environment.as_str().to_owned(),
            scopes: key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "),
            created_at: to_micros(key.created_at),
            expires_at: key.expires_at.map(to_micros),
            revoked_at: None,
            last_used_at: None,
            allowed_ips: key.allowed_ips.as_ref().map(allowed_ips_text),
        }
    }
}

/// An allowlist as stored: its normalised blocks, separated by spaces.
pub(crate) fn allowed_ips_text(allowed: &AllowedIps) -> String {
    allowed.items().join(" ")
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = anyhow::Error;

    fn try_from(row: ApiKeyRow) -> anyhow::Result<Self> {
        let scopes: Vec<&str> = row.scopes.split(' ').collect();
        Ok(ApiKey {
            id: KeyId::new(&row.id).context("stored key id")?,
            org_id: OrgId::new(&row.org_id).context("stored organization id")?,
            name: KeyName::new(&row.name).context("stored key name")?,
            prefix: KeyPrefix::new(&row.key_prefix).map_err(|e| anyhow!(e)).context("stored key prefix")?,
            environment: Environment::new(&row.environment).context("stored environment")?,
            scopes: Scopes::parse(&scopes).context("stored scopes")?,
            created_at: from_micros(row.created_at)?,
            expires_at: row.expires_at.map(from_micros).transpose()?,
            revoked_at: row.revoked_at.map(from_micros).transpose()?,
            last_used_at: row.last_used_at.map(from_micros).transpose()?,
            allowed_ips: match row.allowed_ips.as_deref() {
                None => None,
                Some(text) => {
                    let items: Vec<&str> = text.split(' ').collect();
                    AllowedIps::parse(&items).context("stored allowlist")?
                }
            },
        })
    }
}
