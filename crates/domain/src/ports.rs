//! Ports: what the domain needs from the outside world. Adapters (the infra crate)
//! implement them; the domain's unit tests mock them.

use async_trait::async_trait;
use thiserror::Error;
use time::OffsetDateTime;

use crate::model::{ApiKey, KeyHash, KeyId, NewApiKey, NewOrganization, OrgId, Organization, Plan, PlanId, SecretBody};

/// Marks an error whose cause is that the store cannot be reached in time (pool exhausted,
/// database down). Adapters wrap it in `anyhow::Error`; callers may answer "try again later".
#[derive(Debug, Error)]
#[error("the data store is unavailable: {0}")]
pub struct StoreUnavailable(pub String);

/// Errors of [`AccountRepository::create_organization`].
#[derive(Debug, Error)]
pub enum CreateOrganizationError {
    #[error("an organization with this email already exists")]
    EmailTaken,
    #[error("no plan has this id")]
    UnknownPlan,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Errors of [`KeyRepository::insert_key`].
#[derive(Debug, Error)]
pub enum InsertKeyError {
    #[error("the organization holds the most active keys allowed")]
    LimitReached,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// A stored key together with its organization: all that authenticating it and answering
/// `GET /v1/account` need, so that both can be served from memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCredential {
    pub key: ApiKey,
    pub organization: Organization,
}

/// Organizations and the plan catalogue.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait AccountRepository: Send + Sync + 'static {
    /// Stores a new organization and its first key, atomically: both or neither.
    ///
    /// MUST return `EmailTaken` when another organization's email is equal ignoring case,
    /// also when two signups race (exactly one wins).
    /// MUST return `UnknownPlan` when `org.plan_id` names no plan.
    async fn create_organization(
        &self,
        org: &NewOrganization,
        first_key: &NewApiKey,
    ) -> Result<Organization, CreateOrganizationError>;

    /// MUST return `Ok(None)` only when no organization has this id; a failing store is `Err`.
    async fn find_organization(&self, id: &OrgId) -> anyhow::Result<Option<Organization>>;

    /// MUST return `Ok(None)` only when no plan has this id.
    async fn find_plan(&self, id: &PlanId) -> anyhow::Result<Option<Plan>>;

    /// The plan catalogue, cheapest first.
    async fn list_plans(&self) -> anyhow::Result<Vec<Plan>>;

    /// Activates or deactivates an organization and returns it.
    /// MUST return `Ok(None)` when no organization has this id, and MUST publish a
    /// [`Change::Organization`] in the same transaction, so that every instance's cached
    /// credentials of the organization are forgotten.
    async fn set_organization_active(
        &self,
        id: &OrgId,
        active: bool,
        at: OffsetDateTime,
    ) -> anyhow::Result<Option<Organization>>;
}

/// API keys.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait KeyRepository: Send + Sync + 'static {
    /// Stores a new key. Once this returns `Ok`, the key is durable.
    ///
    /// MUST return `LimitReached`, storing nothing, when the organization already holds
    /// `max_active` keys that are neither revoked nor expired at `key.created_at`; the check
    /// and the insert are atomic, so concurrent creations cannot exceed the limit.
    async fn insert_key(&self, key: &NewApiKey, max_active: u32) -> Result<ApiKey, InsertKeyError>;

    /// Every key of the organization, revoked and expired ones included, newest first.
    async fn list_keys(&self, org: &OrgId) -> anyhow::Result<Vec<ApiKey>>;

    /// Marks the key revoked at `at` unless it already is (the first revocation time is kept)
    /// and returns it. MUST publish a [`Change::Key`] to the [`ChangeFeed`] in the same
    /// transaction, so that every instance forgets the key.
    ///
    /// MUST return `Ok(None)` when no key has this id within this organization, so that a key
    /// of another organization is indistinguishable from one that does not exist.
    async fn revoke_key(&self, org: &OrgId, key: &KeyId, at: OffsetDateTime) -> anyhow::Result<Option<ApiKey>>;

    /// Looks a key up by its hash, with its organization and plan.
    /// MUST return `Ok(None)` only when no key has this hash.
    async fn find_credential(&self, hash: &KeyHash) -> anyhow::Result<Option<KeyCredential>>;

    /// Records when keys were last used, in one batch. A later time never goes backwards.
    async fn record_usage(&self, usage: &[(KeyId, OffsetDateTime)]) -> anyhow::Result<()>;
}

/// The current time.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Clock: Send + Sync + 'static {
    /// Now, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// Fresh identifiers and secrets.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Generator: Send + Sync + 'static {
    fn organization_id(&self) -> OrgId;
    fn key_id(&self) -> KeyId;
    /// MUST draw [`crate::SECRET_LEN`] characters uniformly from
    /// [`SecretBody::alphabet`] with the operating system's CSPRNG.
    fn key_secret(&self) -> SecretBody;
}

/// What a [`CredentialCache`] remembers of a key hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedLookup {
    Found(std::sync::Arc<KeyCredential>),
    /// No key has this hash: remembered briefly, so that a flood of invented keys stays off
    /// the database.
    Missing,
}

/// A bounded in-memory map from key hash to credential, local to one process.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait CredentialCache: Send + Sync + 'static {
    fn get(&self, hash: &KeyHash) -> Option<CachedLookup>;
    /// MUST bound its size, and keep `Missing` entries only briefly.
    fn put(&self, hash: KeyHash, lookup: CachedLookup);
    fn forget(&self, hash: &KeyHash);
    /// Forgets every entry of the organization (or more).
    fn forget_organization(&self, org: &OrgId);
    fn clear(&self);
}

/// A change that cached credentials must not outlive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key with this hash changed (revoked, renamed...).
    Key(KeyHash),
    /// The organization's status or plan changed.
    Organization(OrgId),
}

/// The changes every instance must apply to its cache, published by the writes themselves.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// The changes committed since the previous poll of this feed, each at least once.
    /// MUST NOT miss a change committed before the poll began.
    async fn poll(&self) -> anyhow::Result<Vec<Change>>;
}
