//! Ports: what the domain needs from the outside world. Adapters (the infra crate)
//! implement them; the domain's unit tests mock them.

use async_trait::async_trait;
use thiserror::Error;
use time::OffsetDateTime;

use std::sync::Arc;

use crate::model::{
    AllowedIps, ApiKey, AuditDetails, AuditEvent, AuditRecord, EmailAddress, KeyHash, KeyId, KeyName, KeyUsageRow,
    NewApiKey, NewOrganization, NewWebhook, OrgId, OrgName, Organization, OrganizationMonth, OverLimit, Plan,
    PlanChange, PlanId, RequestMeta, SecretBody, SigningSecret, UsageCount, WebhookChanges, WebhookEndpoint, WebhookId,
    WebhookUrl, WebhookUrlError,
};
use crate::service::KeyAccessError;

/// A failure of a store, typed by what a caller can do about it: adapters say which, so
/// that nobody searches error messages.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store cannot be reached in time (pool exhausted, database down or overloaded):
    /// the same request may succeed later.
    #[error("the data store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// What a store's operations return.
pub type StoreResult<T> = Result<T, StoreError>;

/// Errors of [`AccountRepository::create_organization`].
#[derive(Debug, Error)]
pub enum CreateOrganizationError {
    #[error("an organization with this email already exists")]
    EmailTaken,
    #[error("no plan has this id")]
    UnknownPlan,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a stored key may not act now, in the order authentication checks it: revoked,
/// expired, used from an address its allowlist does not allow, of a deactivated
/// organization. Authentication refuses a presented key for these; a key write refuses its
/// caller for them again inside its own transaction, on the key's row as it is there (a
/// client that held its body back while its key was revoked, narrowed or rolled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ActorRefused {
    #[error("this API key has been revoked")]
    Revoked,
    #[error("this API key has expired")]
    Expired,
    #[error("this API key cannot be used from this address")]
    IpNotAllowed,
    #[error("this organization is not active")]
    OrganizationInactive,
}

/// A refused key's use is counted under its reason.
impl From<ActorRefused> for crate::model::VerificationCode {
    fn from(refused: ActorRefused) -> Self {
        match refused {
            ActorRefused::Revoked => Self::Revoked,
            ActorRefused::Expired => Self::Expired,
            ActorRefused::IpNotAllowed => Self::IpNotAllowed,
            ActorRefused::OrganizationInactive => Self::OrgInactive,
        }
    }
}

/// Who asks for a key write: a key, re-checked inside the write, or an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Key(KeyId),
    Operator,
}

/// The error of every key operation, from the service's use cases and from the key writes of
/// [`KeyRepository`] alike (the writes take the access decision): the caller may not act
/// (`Access`, `Actor`), the key's state or the organization's limit refuses the change, or
/// the store failed. A new key operation needs no error type of its own.
#[derive(Debug, Error)]
pub enum KeyOpError {
    #[error("the key is revoked or expired: only an active key can be rolled")]
    NotActive,
    #[error(
        "the organization already has {0} active keys, the most allowed: revoke one first \
         (a roll with `expires_in_hours` 0 keeps the count)"
    )]
    LimitReached(u32),
    #[error(transparent)]
    Actor(#[from] ActorRefused),
    #[error("the organization is closed")]
    OrganizationClosed,
    /// The caller may not act on the key: as checked before any store is read (the scope
    /// the operation needs, a malformed id), or by a write's decision ([`KeyWriteDecision`]).
    #[error(transparent)]
    Access(#[from] KeyAccessError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::service::InsufficientScope> for KeyOpError {
    fn from(e: crate::service::InsufficientScope) -> Self {
        Self::Access(e.into())
    }
}

/// What a key write found inside its own transaction, for the domain to decide on: the
/// rows as they are there and then, locked until the write commits.
#[derive(Debug, Clone, Copy)]
pub struct FoundInWrite<'a> {
    /// The calling key, with whether its organization is active; `None` when it no longer
    /// exists, and always for [`Actor::Operator`].
    pub actor: Option<(&'a ApiKey, bool)>,
    /// The key acted on (a change, a roll, a revocation); `None` when the organization has
    /// no such key, and for a creation.
    pub target: Option<&'a ApiKey>,
    /// The organization is closed (its keys are all revoked; an operator may not add one).
    pub organization_closed: bool,
}

/// The access decision of a key write: the domain's rule, which the store applies to what it
/// found inside the write's transaction ([`FoundInWrite`]) before it writes anything, and
/// whose refusal it returns as it is. The store may call it again when it retries the
/// transaction (a deadlock or serialization failure); it is pure.
pub type KeyWriteDecision<T> = Arc<dyn Fn(FoundInWrite<'_>) -> Result<T, KeyOpError> + Send + Sync>;

/// What [`AccountRepository::erase_organization`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EraseOutcome {
    Erased(Organization),
    NotFound,
    /// Only a closed organization is erased.
    StillOpen,
}

/// The error of every account operation (a change, closing), from the service's use cases
/// and from [`AccountRepository::write_account`] alike (the write takes the decision).
#[derive(Debug, Error)]
pub enum AccountOpError {
    /// The calling key may not act now (revoked meanwhile, expired, its address...).
    #[error(transparent)]
    Actor(#[from] ActorRefused),
    #[error(transparent)]
    InsufficientScope(#[from] crate::service::InsufficientScope),
    /// A test key: the account is live business.
    #[error("a test key cannot change the account: use a live key")]
    TestKey,
    #[error("an organization with this email already exists")]
    EmailTaken,
    #[error("no plan has this id")]
    UnknownPlan,
    /// The organization is closed: nothing about it changes any more.
    #[error("this organization is closed")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an account write found inside its own transaction, for the domain to decide on.
#[derive(Debug, Clone, Copy)]
pub struct FoundInAccountWrite<'a> {
    /// The calling key with whether its organization is active; `None` when it no longer exists.
    pub actor: Option<(&'a ApiKey, bool)>,
    /// The organization as it is there, its row locked until the write commits.
    pub organization: &'a Organization,
}

/// What the domain decided an account write does; `None` leaves a property as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountWrite {
    pub name: Option<OrgName>,
    pub email: Option<EmailAddress>,
    /// A new plan, from `today` on (the period's first day).
    pub plan: Option<PlanId>,
    pub today: time::Date,
    /// Closes the organization at this time: every key of it revoked.
    pub close: Option<time::OffsetDateTime>,
    /// The audit events the write records (in its transaction).
    pub events: Vec<AuditRecord>,
}

/// The decision of an account write: the domain's rule, applied to the rows the write found
/// ([`FoundInAccountWrite`]); pure, it may be called again when the write is retried. Also
/// the decision of every other write that acts on the organization as its calling key (a
/// webhook endpoint's): `T` is then what it lets the write do (`()`: go on).
pub type AccountWriteDecision<T = AccountWrite> =
    Arc<dyn Fn(FoundInAccountWrite<'_>) -> Result<T, AccountOpError> + Send + Sync>;

/// What a change of a key sets; `None` leaves a property as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyChanges {
    pub name: Option<KeyName>,
    /// `Some(None)`: the key works from anywhere.
    pub allowed_ips: Option<Option<AllowedIps>>,
}

/// A stored key together with its organization: all that authenticating it and answering
/// `GET /v1/account` need, so that both can be served from memory. The organization is
/// shared: the cached credentials of one organization hold one copy of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCredential {
    pub key: ApiKey,
    pub organization: Arc<Organization>,
    /// This instance's handle on the organization's quota counts, set at the key's first
    /// verification (so that a cached key's next ones go straight to them); not part of
    /// the credential's value. Adapters make it empty ([`KeyCredential::new`]).
    pub quota: crate::runtime::QuotaSlot,
}

impl KeyCredential {
    pub fn new(key: ApiKey, organization: Arc<Organization>) -> Self {
        Self { key, organization, quota: crate::runtime::QuotaSlot::default() }
    }
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
        audit: &AuditRecord,
    ) -> Result<Organization, CreateOrganizationError>;

    /// MUST return `Ok(None)` only when no organization has this id; a failing store is `Err`.
    async fn find_organization(&self, id: &OrgId) -> StoreResult<Option<Organization>>;

    /// MUST return `Ok(None)` only when no plan has this id.
    async fn find_plan(&self, id: &PlanId) -> StoreResult<Option<Plan>>;

    /// The plan catalogue, cheapest first.
    async fn list_plans(&self) -> StoreResult<Vec<Plan>>;

    /// Activates or deactivates an organization and returns it.
    /// MUST return `Ok(None)` when no organization has this id, and MUST publish a
    /// [`Change::Organization`] in the same transaction, so that every instance's cached
    /// credentials of the organization are forgotten. When the organization already is in
    /// that state it MUST change nothing: no change published, no audit event recorded.
    async fn set_organization_active(
        &self,
        id: &OrgId,
        active: bool,
        audit: &AuditRecord,
    ) -> StoreResult<Option<Organization>>;

    /// Sets how many requests a month the plan includes. MUST return `Ok(None)` when no plan
    /// has this id, and MUST publish [`Change::Everything`] in the same transaction, so that
    /// every instance forgets the credentials that carry the old terms.
    async fn set_plan_included(&self, id: &PlanId, included_requests_per_month: i64) -> StoreResult<Option<Plan>>;

    /// Sets what the plan does past what it includes, as [`Self::set_plan_included`] does
    /// (`Ok(None)` for no such plan, [`Change::Everything`] published).
    async fn set_plan_over_limit(&self, id: &PlanId, over_limit: OverLimit) -> StoreResult<Option<Plan>>;

    /// Changes the organization `org` as `decide` says, on the rows as this write's own
    /// transaction finds them. It MUST lock the organization's row, then read the calling key
    /// `actor` (with the organization's status), call `decide`, and write only what it
    /// returns, all of it in that transaction, nothing on a refusal:
    /// - `name`, `email`: MUST return `EmailTaken` when another open organization's email is
    ///   equal ignoring case, also when two writes race;
    /// - `plan`: MUST return `UnknownPlan` when no plan has the id, and MUST record the plan
    ///   period from `today` (replacing a change made earlier that day);
    /// - `close`: MUST set `closed_at` and revoke every key of the organization not yet
    ///   revoked, publishing [`Change::Key`] for each;
    /// - `events`, recorded in the audit trail.
    ///
    /// It MUST publish [`Change::Organization`] when anything changed, so that every instance
    /// forgets the organization's cached credentials. Returns the organization as written.
    /// An unknown organization is `Closed` (nothing of it can change).
    async fn write_account(
        &self,
        org: &OrgId,
        actor: &KeyId,
        decide: AccountWriteDecision,
    ) -> Result<Organization, AccountOpError>;

    /// Erases a closed organization's personal data: name and email replaced by
    /// `erased+<org_id>@invalid`, its keys' names and allowlists cleared, the client
    /// addresses and user agents of its audit events removed; ids, plan periods and usage
    /// counts kept; `audit` recorded. MUST return `Ok(None)` for an unknown organization and
    /// `Err(Closed)`... see [`EraseOutcome`].
    async fn erase_organization(&self, org: &OrgId, audit: &AuditRecord) -> StoreResult<EraseOutcome>;

    /// The organization's plan changes (its signup's plan first), oldest first: one per UTC
    /// day at most, the last plan of a day. MUST return them all, however old (a period
    /// may start in an earlier month); empty for an unknown organization.
    async fn plan_changes(&self, org: &OrgId) -> StoreResult<Vec<PlanChange>>;

    /// The organization's audit trail, newest first: at most `limit` events with an id
    /// below `before` (all when `None`).
    async fn list_audit_events(&self, org: &OrgId, before: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEvent>>;
}

/// API keys.
///
/// The writes (`insert_key`, `update_key`, `roll_key`, `revoke_key`) decide inside their own
/// transaction: each MUST first take the organization's row lock, then read and lock (on
/// PostgreSQL `FOR NO KEY UPDATE`, in ascending id order) the actor's row (for [`Actor::Key`]) and
/// the key acted on, call `decide` with them ([`FoundInWrite`]), and write nothing but return
/// its refusal when it refuses. So every decision about rights is taken on the rows as they
/// are when the write commits, and concurrent writes take their locks in one order. A
/// transaction the database aborts for its own locking (deadlock, serialization failure) is
/// retried, a few times at most.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait KeyRepository: Send + Sync + 'static {
    /// Stores the key `decide` makes of what it found, in the organization `org`. Once this
    /// returns `Ok`, the key is durable.
    ///
    /// MUST return `LimitReached(max_active)`, storing nothing, when the organization already
    /// holds `max_active` keys that are neither revoked nor expired at the key's `created_at`;
    /// the check and the insert are atomic, so concurrent creations cannot exceed the limit.
    async fn insert_key(
        &self,
        org: &OrgId,
        actor: &Actor,
        decide: KeyWriteDecision<NewApiKey>,
        max_active: u32,
        audit: &AuditRecord,
    ) -> Result<ApiKey, KeyOpError>;

    /// The key with this id within this organization. MUST return `Ok(None)` when there is
    /// none (a key of another organization included).
    async fn find_key(&self, org: &OrgId, key: &KeyId) -> StoreResult<Option<ApiKey>>;

    /// Changes a key of the organization (its name, its allowlist, or both) once `decide`
    /// allows it, and returns it, publishing the change so that every instance forgets the
    /// key. Records every event of `audit`, in order, in the same transaction.
    async fn update_key(
        &self,
        org: &OrgId,
        key: &KeyId,
        changes: &KeyChanges,
        actor: &Actor,
        decide: KeyWriteDecision<()>,
        audit: &[AuditRecord],
    ) -> Result<ApiKey, KeyOpError>;

    /// Replaces `old` by the successor `decide` makes of what it found (`old` as it is in the
    /// transaction), atomically: stores the successor and moves `old`'s expiry to
    /// `old_expires_at` unless it already expires earlier, publishing the change of `old`.
    /// MUST return `NotActive` (storing nothing) when `old` is revoked or expired at the
    /// successor's `created_at` (no successor to a revoked key).
    ///
    /// MUST return `LimitReached(max_active)`, storing nothing, when `old` stays active after
    /// `new.created_at` (a grace period) and the organization already holds `max_active`
    /// active keys: a roll may not raise the count above the limit. A roll that ends `old`
    /// at once never changes the count and is never refused for it. Atomic with the
    /// count, as for [`Self::insert_key`]. Records every event of `audit`, in order, in the
    /// same transaction.
    #[allow(clippy::too_many_arguments)]
    async fn roll_key(
        &self,
        org: &OrgId,
        old: &KeyId,
        actor: &Actor,
        decide: KeyWriteDecision<NewApiKey>,
        old_expires_at: OffsetDateTime,
        max_active: u32,
        audit: &[AuditRecord],
    ) -> Result<ApiKey, KeyOpError>;

    /// Revokes, whatever their organization, the keys with these hashes that are not revoked
    /// yet (locking them in ascending id order, as the other writes do), recording a `KeyLeakReported` event for each key this call revoked (none for a
    /// key whose revocation by another writer won the race) and publishing their changes.
    /// Returns how many it revoked.
    async fn revoke_leaked(&self, hashes: &[KeyHash], at: OffsetDateTime, meta: &RequestMeta) -> StoreResult<usize>;

    /// Every key of the organization, revoked and expired ones included, newest first.
    async fn list_keys(&self, org: &OrgId) -> StoreResult<Vec<ApiKey>>;

    /// Marks the key revoked at `at`, once `decide` allows it, unless it already is (the
    /// first revocation time is kept) and returns it. MUST publish a [`Change::Key`] to the
    /// [`ChangeFeed`] in the same transaction, so that every instance forgets the key.
    /// A key of another organization is not found: `decide` sees no target.
    /// Records `audit` only when this call revoked the key.
    async fn revoke_key(
        &self,
        org: &OrgId,
        key: &KeyId,
        at: OffsetDateTime,
        actor: &Actor,
        decide: KeyWriteDecision<()>,
        audit: &AuditRecord,
    ) -> Result<ApiKey, KeyOpError>;

    /// Looks a key up by its hash, with its organization and plan.
    /// MUST return `Ok(None)` only when no key has this hash.
    async fn find_credential(&self, hash: &KeyHash) -> StoreResult<Option<KeyCredential>>;

    /// The credentials of the keys last used at or after `since` (as recorded by
    /// [`Self::record_usage`]), most recently used first, at most `limit`, each with its
    /// hash: what a starting instance loads into its cache. Revoked and expired keys are
    /// included (they are answered from memory too).
    async fn recently_used_credentials(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<(KeyHash, KeyCredential)>>;

    /// Records a batch of uses in one transaction: when keys were last used (a later time
    /// never goes backwards) and the counts, added to what is stored (never overwriting: other
    /// instances add theirs). MUST apply each `sequence` of this repository at most once: a
    /// batch written again after a commit whose outcome was unknown changes nothing, even
    /// while that first attempt is still open. MUST write nothing of keys that no longer
    /// exist (deleted with their organization) and write the rest: returns those keys
    /// (`missing`), none when the batch had been applied already.
    ///
    /// MUST NOT wait for a key's row that another transaction holds (an operator's long
    /// transaction, say) to write that key's last use: such last uses are left unwritten and
    /// returned as `deferred` (the counts are written all the same), so that one held row
    /// never holds back the usage of every other key, nor the writes that wait on them.
    async fn record_usage(&self, batch: &UsageBatch) -> StoreResult<UsageRecorded>;

    /// The stored counts of the organization's keys on the days `from` to `to` (inclusive).
    async fn usage_of(&self, org: &OrgId, from: time::Date, to: time::Date) -> StoreResult<Vec<KeyUsageRow>>;

    /// Every organization that existed from `from` to `to` (created by `to`, not closed
    /// before `from`), in id order, with its plan changes up to `to` and its billed counts
    /// by day from `from` to `to` (requests to the account API are never billed).
    async fn monthly_usage(&self, from: time::Date, to: time::Date) -> StoreResult<Vec<OrganizationMonth>>;

    /// Deletes the counts of days before `before`; returns how many rows went.
    async fn prune_usage(&self, before: time::Date) -> StoreResult<usize>;

    /// The `valid` counts of the keys of `orgs` (revoked and expired keys included) on the
    /// days from `from` on, summed by organization, environment and day, in no particular
    /// order; sums of zero may be left out. What the quota is judged on: read when an
    /// instance first verifies an organization's key, and again after each of its flushes.
    async fn valid_uses_since(&self, orgs: &[OrgId], from: time::Date) -> StoreResult<Vec<ValidUses>>;
}

/// The valid verifications of one organization's keys of one environment on one UTC day
/// ([`KeyRepository::valid_uses_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidUses {
    pub org_id: OrgId,
    pub environment: crate::model::Environment,
    pub day: time::Date,
    pub count: i64,
}

/// What [`KeyRepository::record_usage`] did not write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRecorded {
    /// Keys that no longer exist: their uses are dropped.
    pub missing: Vec<KeyId>,
    /// Last uses not written because their key's row was held by another transaction: to
    /// write again with a later batch.
    pub deferred: Vec<(KeyId, OffsetDateTime)>,
}

/// Uses gathered in memory, written in one transaction by [`KeyRepository::record_usage`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageBatch {
    /// The process that gathered the uses ([`Generator::usage_writer`]).
    pub writer: String,
    /// Increases with every batch the writer writes; a batch retried keeps its own.
    pub sequence: u64,
    pub last_used: Vec<(KeyId, OffsetDateTime)>,
    pub counts: Vec<UsageCount>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.last_used.is_empty() && self.counts.is_empty()
    }
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
    fn webhook_id(&self) -> crate::model::WebhookId;
    /// MUST draw [`crate::SECRET_LEN`] characters uniformly from
    /// [`SecretBody::alphabet`] with the operating system's CSPRNG.
    fn key_secret(&self) -> SecretBody;
    /// Names one process's usage writes ([`UsageBatch::writer`]): MUST differ between
    /// processes, including one restarted.
    fn usage_writer(&self) -> String;
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
    /// The entry for `hash` as of `now` (a monotonic instant, read once by the caller).
    /// MUST NOT return an entry older than its lifetime: a `Found` entry lives at most the
    /// cache's configured lifetime, so that a change made outside the service (by SQL) is
    /// seen within it; a `Missing` entry only briefly.
    fn get(&self, hash: &KeyHash, now: std::time::Instant) -> Option<CachedLookup>;
    /// MUST bound its size.
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
    /// Something every cached credential may hold changed (a plan's terms): forget them all.
    Everything,
}

/// What one poll of a [`ChangeFeed`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedPoll {
    /// Changes committed since the previous poll, each at least once.
    pub changes: Vec<Change>,
    /// Every change committed before this poll began has now been read. `false` when a
    /// page was full: poll again before trusting the cache.
    pub caught_up: bool,
    /// Changes may have been missed (the first poll, an outage longer than the feed's
    /// retention, a row that could not be read, more changes than one poll may hold): the
    /// cache must be cleared.
    pub missed: bool,
}

/// The changes every instance must apply to its cache, published by the writes themselves.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// The changes committed since the previous poll of this feed. MUST NOT lose a change,
    /// however late its transaction commits: what it cannot account for, it reports as
    /// `missed`. One unreadable row MUST NOT hide the others of its poll.
    async fn poll(&self) -> StoreResult<FeedPoll>;
}

/// Why a webhook endpoint write was refused by what the store found.
#[derive(Debug, Error)]
pub enum WebhookStoreError {
    /// The organization already has this many endpoints, the most allowed.
    #[error("the organization already has {0} webhook endpoints, the most allowed: delete one first")]
    LimitReached(u32),
    /// The write's decision refused it: the calling key may not act now, or the
    /// organization is closed, as the write's own transaction found them.
    #[error(transparent)]
    Refused(AccountOpError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Webhook endpoints, their sealed signing secrets and the audit events of their changes.
///
/// Every write (and the test event) is decided on its calling key as its own transaction
/// finds it, as [`AccountRepository::write_account`] is: it MUST first lock the
/// organization's row, read the key `actor` (with the organization's status), call `decide`,
/// and write nothing but return its refusal as `Refused` when it refuses.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WebhookRepository: Send + Sync + 'static {
    /// Stores `new` with a fresh signing secret and records `audit`, in one transaction.
    /// MUST draw the secret (32 bytes) from the operating system's CSPRNG, store it only
    /// sealed with an AEAD (so a database dump alone does not let anyone sign), and return
    /// it this once as `whsec_` + base64. MUST refuse with `LimitReached(max)` when the
    /// organization already has `max` endpoints, counted inside the transaction.
    async fn create_webhook(
        &self,
        new: &NewWebhook,
        max: u32,
        actor: &KeyId,
        decide: AccountWriteDecision<()>,
        audit: &AuditRecord,
    ) -> Result<(WebhookEndpoint, SigningSecret), WebhookStoreError>;
    /// The organization's endpoints, oldest first.
    async fn list_webhooks(&self, org: &OrgId) -> StoreResult<Vec<WebhookEndpoint>>;
    /// The organization's endpoint `id`; `None` when it has none such (another
    /// organization's endpoint included).
    async fn find_webhook(&self, org: &OrgId, id: &WebhookId) -> StoreResult<Option<WebhookEndpoint>>;
    /// Applies `changes` to the organization's endpoint `id` and records `audit`, in one
    /// transaction; enabling it clears why it was disabled. `None` when there is no such endpoint
    /// (nothing written).
    async fn update_webhook(
        &self,
        org: &OrgId,
        id: &WebhookId,
        changes: &WebhookChanges,
        actor: &KeyId,
        decide: AccountWriteDecision<()>,
        audit: &AuditRecord,
    ) -> Result<Option<WebhookEndpoint>, WebhookStoreError>;
    /// Deletes the organization's endpoint `id` with its deliveries and records `audit`, in
    /// one transaction; false when there is no such endpoint (nothing written).
    async fn delete_webhook(
        &self,
        org: &OrgId,
        id: &WebhookId,
        actor: &KeyId,
        decide: AccountWriteDecision<()>,
        audit: &AuditRecord,
    ) -> Result<bool, WebhookStoreError>;
    /// Replaces the endpoint's secret by a fresh one (drawn and sealed as at creation) and
    /// records `audit`, in one transaction. MUST keep the current secret, sealed, as the
    /// previous one until `keep_previous_until`. `None` when there is no such endpoint.
    #[allow(clippy::too_many_arguments)]
    async fn rotate_webhook_secret(
        &self,
        org: &OrgId,
        id: &WebhookId,
        keep_previous_until: OffsetDateTime,
        actor: &KeyId,
        decide: AccountWriteDecision<()>,
        audit: &AuditRecord,
    ) -> Result<Option<(WebhookEndpoint, SigningSecret)>, WebhookStoreError>;
}

/// The test event, and the attempts listed, of [`WebhookRepository`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WebhookActivity: Send + Sync + 'static {
    /// Writes a `webhook.test` event for the organization's endpoint `id` (whatever it
    /// subscribes to, enabled or not), delivered as every event; its message id, or `None`
    /// when there is no such endpoint. Decided on the calling key as the writes of
    /// [`WebhookRepository`] are.
    async fn send_test_event(
        &self,
        org: &OrgId,
        id: &WebhookId,
        at: OffsetDateTime,
        actor: &KeyId,
        decide: AccountWriteDecision<()>,
    ) -> Result<Option<String>, WebhookStoreError>;
    /// The endpoint's attempts with an id below `before`, newest first, at most `limit`;
    /// `None` when the organization has no such endpoint.
    async fn list_attempts(
        &self,
        org: &OrgId,
        id: &WebhookId,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Option<Vec<crate::model::WebhookAttempt>>>;
}

/// Which addresses webhooks may be sent to.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WebhookTargets: Send + Sync + 'static {
    /// Checks that `url` may be sent to. Unless non-public targets are allowed by
    /// configuration, MUST refuse a URL whose host is, or resolves to (any of its
    /// addresses), an address that is not public ([`crate::is_public_address`]), and a
    /// name that does not resolve.
    async fn check(&self, url: &WebhookUrl) -> Result<(), WebhookUrlError>;
}

/// The decision of a key's expiry notice: the domain's rule on the key's row and the notices
/// taken for it, as the sending transaction finds them; the notice due with its event's
/// `data`, or `None`. Pure: the store may call it again when it retries.
pub type KeyNoticeDecision =
    Arc<dyn Fn(&ApiKey, &[crate::model::KeyNotice]) -> Option<(crate::model::KeyNotice, AuditDetails)> + Send + Sync>;

/// The scheduled notices' marks and events: each mark is taken at most once, whichever
/// instance asks first, in the transaction that writes its event to the outbox.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WebhookSchedule: Send + Sync + 'static {
    /// The keys not revoked expiring after `from` and at or before `to`, of organizations
    /// with an enabled endpoint subscribed to `key.expiring` or `key.expired`, each with the
    /// notices taken for it.
    async fn expiring_keys(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> StoreResult<Vec<(ApiKey, Vec<crate::model::KeyNotice>)>>;

    /// In one transaction: reads key `key` and the notices taken for it, asks `decide`, and
    /// when it gives a notice, takes that notice's mark and writes its event (at `at`, for
    /// the organization's enabled endpoints subscribed to it). MUST write nothing when the
    /// mark is taken already (by another instance meanwhile) or no endpoint takes the event
    /// (no mark either: a later subscriber is told of the nearest notice then). Returns the
    /// notice this call sent.
    async fn send_key_notice(
        &self,
        key: &KeyId,
        at: OffsetDateTime,
        decide: KeyNoticeDecision,
    ) -> StoreResult<Option<crate::model::KeyNotice>>;

    /// The open organizations with an enabled endpoint subscribed to `usage.threshold`, each
    /// with its usage marks taken for periods starting on or after `since`.
    async fn usage_watchers(&self, since: time::Date) -> StoreResult<Vec<(OrgId, Vec<crate::model::UsageMark>)>>;

    /// In one transaction: takes the organization's `marks` not taken yet and, when it took
    /// the first one, writes `usage.threshold` with `data` (at `at`) for its enabled
    /// endpoints subscribed to it. MUST write nothing when the first mark is taken already
    /// or no endpoint takes the event. Returns whether this call sent it.
    async fn send_usage_notice(
        &self,
        org: &OrgId,
        marks: &[crate::model::UsageMark],
        data: &AuditDetails,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
}
