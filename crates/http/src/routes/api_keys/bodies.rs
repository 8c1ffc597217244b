//! The request and response bodies of the API keys, and their conversion from and to domain
//! values.

use account_domain::{
    AllowedIps, AllowlistChange, ApiKey, CreateKeyRequest, CreatedKey, Environment, ExpiresInDays, GracePeriod,
    KeyName, KeyUpdate, NewKeyAllowlist, RolledKey, Scopes, ScopesError,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::timestamp::rfc3339;

/// `POST /v1/account/api-keys`; every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateApiKeyRequest)]
pub(crate) struct CreateKeyBody {
    /// Key name: 1 to 200 characters once leading and trailing spaces are trimmed (the
    /// length is checked after trimming), no control characters. Default "Default Key".
    #[serde(default)]
    #[schema(schema_with = crate::routes::shared_schemas::optional_name)]
    name: Option<String>,
    /// `live` (default) or `test`.
    #[serde(default)]
    #[schema(value_type = Option<EnvironmentName>)]
    environment: Option<String>,
    /// Permissions (default both); no duplicates; no more than the creating key holds.
    #[serde(default)]
    #[schema(schema_with = crate::routes::api_keys::optional_scope_list)]
    scopes: Option<Vec<String>>,
    /// Days until expiration, 1 to 3650. Default: the creating key's expiry (never, for a
    /// key that never expires); never later than it.
    #[serde(default, deserialize_with = "crate::body::whole_number")]
    #[schema(minimum = 1, maximum = 3650, example = 90)]
    expires_in_days: Option<i64>,
    /// The addresses the key works from (IPv4 or IPv6 addresses or CIDR blocks, at most 32).
    /// Omitted: the creating key's allowlist; `null` or `[]`: anywhere. A key limited to some
    /// addresses creates keys limited within them.
    #[serde(default, deserialize_with = "crate::body::present")]
    #[schema(schema_with = allowed_ips_list)]
    allowed_ips: Option<Option<Vec<String>>>,
}

/// Where a key may be used.
#[derive(ToSchema)]
#[schema(as = Environment, rename_all = "lowercase")]
#[allow(dead_code)] // a schema only
pub(crate) enum EnvironmentName {
    Live,
    Test,
}

/// A permission: `read` allows the GET routes, `write` creating and revoking keys.
#[derive(ToSchema)]
#[schema(as = Scope, rename_all = "lowercase")]
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
        let mut request = CreateKeyRequest::new(name, environment, scopes, expires_in);
        request.allowed_ips = match allowlist_sent(self.allowed_ips)? {
            None => NewKeyAllowlist::Creators,
            Some(None) => NewKeyAllowlist::Anywhere,
            Some(Some(list)) => NewKeyAllowlist::Only(list),
        };
        Ok(request)
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

pub(crate) fn scope_words(scopes: &Scopes) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}

/// A key as listed: never the secret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ApiKey)]
pub(crate) struct KeyDto {
    #[schema(pattern = "^key_[0-9A-Za-z]+$")]
    id: String,
    name: String,
    #[schema(pattern = "^mem_(live|test)_[0-9A-Za-z]{6}\\.\\.\\.$", example = "mem_live_a1b2c3...")]
    key_prefix: String,
    #[schema(value_type = EnvironmentName)]
    environment: &'static str,
    #[schema(schema_with = crate::routes::api_keys::scope_list)]
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
    /// The addresses the key works from; null: anywhere.
    allowed_ips: Option<Vec<String>>,
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
            allowed_ips: key.allowed_ips.as_ref().map(AllowedIps::items),
        }
    }
}

/// A key just created: the only response that ever carries the full key.
#[derive(Serialize, ToSchema)]
#[schema(as = CreatedApiKey)]
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
    #[schema(schema_with = crate::routes::api_keys::scope_list)]
    scopes: Vec<&'static str>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// The addresses the key works from; null: anywhere.
    allowed_ips: Option<Vec<String>>,
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
            allowed_ips: key.allowed_ips.as_ref().map(AllowedIps::items),
        }
    }
}

impl std::fmt::Debug for CreatedKeyDto<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKeyDto").field("id", &self.id).finish_non_exhaustive()
    }
}

/// `PATCH /v1/account/api-keys/{key_id}`: `name`, `allowed_ips`, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateApiKeyRequest)]
pub(crate) struct UpdateKeyBody {
    /// The new name: 1 to 200 characters once leading and trailing spaces are trimmed (the
    /// length is checked after trimming), no control characters. Omitted: unchanged; never
    /// null (a key always has a name).
    #[serde(default, deserialize_with = "crate::body::not_null")]
    #[schema(schema_with = crate::routes::shared_schemas::name)]
    name: Option<String>,
    /// The new allowlist (as in create key); `null` or `[]`: anywhere. Omitted: unchanged. A
    /// key limited to some addresses sets only allowlists within its own.
    #[serde(default, deserialize_with = "crate::body::present")]
    #[schema(schema_with = allowed_ips_list)]
    allowed_ips: Option<Option<Vec<String>>>,
}

impl UpdateKeyBody {
    pub(crate) fn into_domain(self) -> Result<KeyUpdate, ApiError> {
        if self.name.is_none() && self.allowed_ips.is_none() {
            return Err(ApiError::new(ErrorCode::ValidationError, "send `name`, `allowed_ips` or both"));
        }
        let name = self.name.map(|n| KeyName::new(&n).map_err(|e| ApiError::validation("name", e))).transpose()?;
        let allowed_ips = match allowlist_sent(self.allowed_ips)? {
            None => AllowlistChange::Unchanged,
            Some(None) => AllowlistChange::Anywhere,
            Some(Some(list)) => AllowlistChange::Only(list),
        };
        Ok(KeyUpdate { name, allowed_ips })
    }
}

/// A request's allowlist: absent (`None`), anywhere (`null`, `[]`: `Some(None)`) or a valid list.
fn allowlist_sent(sent: Option<Option<Vec<String>>>) -> Result<Option<Option<AllowedIps>>, ApiError> {
    match sent {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(items)) => Ok(Some(AllowedIps::parse(&items).map_err(|e| ApiError::validation("allowed_ips", e))?)),
    }
}

/// An allowlist: at most 32 entries (`AllowedIpEntry`), or null. Beyond what the schema says:
/// no two entries the same block once normalised.
pub(crate) fn allowed_ips_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, SchemaType, Type};
    use utoipa::openapi::Ref;
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(Ref::from_schema_name(super::allowlist_schema::NAME))
        .max_items(Some(AllowedIps::MAX))
        .unique_items(true)
        .description(Some(
            "IPv4 or IPv6 addresses or CIDR blocks, at most 32, no two the same block once an IPv4-mapped IPv6 \
             address is read as its IPv4 address and a single address as its /32 or /128 block (`192.0.2.1`, \
             `192.0.2.1/32` and `::ffff:192.0.2.1` are one). Null or empty: anywhere.",
        ))
        .build()
}

/// `POST /v1/account/api-keys/{key_id}/roll`; the body is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RollApiKeyRequest)]
pub(crate) struct RollKeyBody {
    /// How long the old key keeps working, 0 to 168 hours (default 24; 0: it stops at once).
    #[serde(default, deserialize_with = "crate::body::whole_number")]
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
#[schema(as = RolledApiKey)]
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

/// A list of scopes: `read` and/or `write`, each at most once.
pub(crate) fn scope_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::ArrayBuilder;
    use utoipa::openapi::Ref;
    ArrayBuilder::new()
        .items(Ref::from_schema_name("Scope"))
        .min_items(Some(1))
        .max_items(Some(2))
        .unique_items(true)
        .build()
}

/// [`scope_list`], or null.
pub(crate) fn optional_scope_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{SchemaType, Type};
    let mut list = scope_list();
    list.schema_type = SchemaType::from_iter([Type::Array, Type::Null]);
    list
}
