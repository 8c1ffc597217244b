//! What every port's contract tests share: a migrated database of their own (`Ctx`), the
//! `contract!` macro that runs a body on both backends, the key writes with a decision that
//! has no rules of its own, and the values the tests store.

use std::sync::Arc;

use account_domain::*;
use account_infra::testing::{Backend, TestDatabase};
use account_infra::{Database, OsRandomGenerator, PoolOptions, SqlAccountRepository, SqlKeyRepository};
use time::{Duration, OffsetDateTime};

/// The repositories on a migrated database of the test's own, dropped with it.
pub(crate) struct Ctx {
    pub(crate) accounts: SqlAccountRepository,
    pub(crate) keys: SqlKeyRepository,
    pub(crate) db: Database,
    _test_db: TestDatabase,
}

/// A fresh, migrated database of `backend`; `None` when PostgreSQL is not configured.
pub(crate) fn setup(backend: Backend) -> Option<Ctx> {
    let test_db = TestDatabase::new(backend)?;
    let db = Database::new(test_db.target().clone(), &PoolOptions::for_machine());
    db.migrate().expect("migrations apply");
    Some(Ctx {
        accounts: SqlAccountRepository::new(db.clone()),
        keys: SqlKeyRepository::new(db.clone()),
        db,
        _test_db: test_db,
    })
}

/// The decision a write is given in these tests, as the domain's would take it but with no
/// rules of its own about keys: an operator's write goes on; a key's write is refused when the
/// row found says its key may not act (revoked, expired, organization deactivated); a write on
/// a key not found is refused `NotFound`.
fn decision<T: Clone + Send + Sync + 'static>(actor: &Actor, target: bool, made: T) -> KeyWriteDecision<T> {
    let by_key = matches!(actor, Actor::Key(_));
    Arc::new(move |found: FoundInWrite<'_>| {
        if by_key {
            match found.actor {
                None => return Err(ActorRefused::Revoked.into()),
                Some((key, _)) if key.is_revoked() => return Err(ActorRefused::Revoked.into()),
                Some((key, _)) if key.is_expired(OffsetDateTime::now_utc()) => return Err(ActorRefused::Expired.into()),
                Some((_, false)) => return Err(ActorRefused::OrganizationInactive.into()),
                Some(_) => {}
            }
        }
        if target && found.target.is_none() {
            return Err(KeyOpError::Access(KeyAccessError::NotFound));
        }
        Ok(made.clone())
    })
}

pub(crate) async fn insert(
    keys: &SqlKeyRepository,
    key: &NewApiKey,
    max_active: u32,
    actor: &Actor,
    audit: &AuditRecord,
) -> Result<ApiKey, KeyOpError> {
    keys.insert_key(&key.org_id, actor, decision(actor, false, key.clone()), max_active, audit).await
}

pub(crate) async fn update(
    keys: &SqlKeyRepository,
    org: &OrgId,
    key: &KeyId,
    changes: &KeyChanges,
    actor: &Actor,
    audit: &[AuditRecord],
) -> Result<ApiKey, KeyOpError> {
    keys.update_key(org, key, changes, actor, decision(actor, true, ()), audit).await
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn roll(
    keys: &SqlKeyRepository,
    org: &OrgId,
    old: &KeyId,
    new: &NewApiKey,
    old_expires_at: OffsetDateTime,
    max_active: u32,
    actor: &Actor,
    audit: &[AuditRecord],
) -> Result<ApiKey, KeyOpError> {
    keys.roll_key(org, old, actor, decision(actor, true, new.clone()), old_expires_at, max_active, audit).await
}

pub(crate) async fn revoke(
    keys: &SqlKeyRepository,
    org: &OrgId,
    key: &KeyId,
    at: OffsetDateTime,
    actor: &Actor,
    audit: &AuditRecord,
) -> Result<ApiKey, KeyOpError> {
    keys.revoke_key(org, key, at, actor, decision(actor, true, ()), audit).await
}

/// Runs each named test body (an `async fn(Ctx)`) on SQLite and, when configured, on
/// PostgreSQL, as the tests `sqlite::NAME` and `postgres::NAME` of the calling module.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name($crate::common::setup(account_infra::testing::Backend::Sqlite).expect("sqlite")).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                if let Some(ctx) = $crate::common::setup(account_infra::testing::Backend::Postgres) {
                    super::$name(ctx).await
                }
            })*
        }
    };
}
pub(crate) use contract;

/// The test's own SQL session on the database, outside the service's pool.
pub(crate) fn raw_session(ctx: &Ctx) -> account_infra::DbConnection {
    ctx.db.connect_once().expect("a session of our own")
}

/// Stored times have microsecond precision.
pub(crate) fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1000 * 1000).expect("valid")
}

pub(crate) fn audit_of(org: &OrgId) -> AuditRecord {
    AuditRecord {
        org_id: org.clone(),
        action: AuditAction::KeyCreated,
        target_id: None,
        actor_key_id: None,
        meta: RequestMeta::new("203.0.113.9".parse().ok(), Some("contract-test")),
        at: now(),
        details: account_domain::AuditDetails::none(),
    }
}

pub(crate) fn new_org(name: &str, email: &str, plan: &str) -> NewOrganization {
    NewOrganization {
        id: OsRandomGenerator.organization_id(),
        name: OrgName::new(name).expect("valid"),
        email: EmailAddress::new(email).expect("valid"),
        plan_id: PlanId::new(plan).expect("valid"),
        created_at: now(),
    }
}

pub(crate) fn new_key(org: &OrgId, name: &str, created_at: OffsetDateTime) -> (NewApiKey, PlaintextKey) {
    let plaintext = PlaintextKey::assemble(Environment::Live, &OsRandomGenerator.key_secret());
    let key = NewApiKey {
        id: OsRandomGenerator.key_id(),
        org_id: org.clone(),
        name: KeyName::new(name).expect("valid"),
        hash: plaintext.hash(),
        prefix: plaintext.display_prefix(),
        environment: Environment::Live,
        scopes: Scopes::all(),
        created_at,
        expires_at: Some(created_at + Duration::days(30)),
        allowed_ips: None,
    };
    (key, plaintext)
}

pub(crate) async fn signed_up(ctx: &Ctx, email: &str) -> (Organization, NewApiKey) {
    let org = new_org("Acme", email, "free");
    let (key, _) = new_key(&org.id, "Default Key", org.created_at);
    let stored = ctx.accounts.create_organization(&org, &key, &audit_of(&org.id)).await.expect("created");
    (stored, key)
}

/// A batch of last uses only, from the writer `wrt_test`.
pub(crate) fn uses(sequence: u64, last_used: Vec<(KeyId, OffsetDateTime)>) -> UsageBatch {
    UsageBatch { writer: "wrt_test".into(), sequence, last_used, counts: vec![] }
}
