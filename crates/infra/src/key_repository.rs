//! API keys in SQL.

use account_domain::{
    Actor, ApiKey, AuditAction, AuditRecord, FoundInWrite, KeyChanges, KeyCredential, KeyHash, KeyId, KeyOpError,
    KeyRepository, KeyUsageRow, KeyWriteDecision, NewApiKey, OrgId, OrganizationMonth, RequestMeta, UsageBatch,
    ValidUses,
};
use async_trait::async_trait;
use diesel::prelude::*;
use time::{Date, OffsetDateTime};

use crate::audit_trail;
use crate::change_feed::publish_change;
use crate::connection::DbConnection;
use crate::credential_reads::{self, CredentialReads};
use crate::database::Database;
use crate::repo_error::RepoError;
use crate::rows::{allowed_ips_text, to_micros, ApiKeyRow};
use crate::schema::{api_keys, organizations};
use crate::unique_row::unique_row;
use crate::usage_store;

#[derive(Debug, Clone)]
pub struct SqlKeyRepository {
    db: Database,
    credential_reads: std::sync::Arc<CredentialReads>,
}

impl SqlKeyRepository {
    pub fn new(db: Database) -> Self {
        Self { credential_reads: std::sync::Arc::new(CredentialReads::new(db.clone())), db }
    }
}

#[async_trait]
impl KeyRepository for SqlKeyRepository {
    async fn insert_key(
        &self,
        org: &OrgId,
        actor: &Actor,
        decide: KeyWriteDecision<NewApiKey>,
        max_active: u32,
        audit: &AuditRecord,
    ) -> Result<ApiKey, KeyOpError> {
        let (org, actor, audit) = (org.to_string(), actor.clone(), audit.clone());
        let key = self
            .db
            .write(move |conn| {
                let rows = KeyWriteRows::lock(conn, &org, &actor, None)?;
                let key = decide(rows.found())?;
                let row = row_of(&key, &org)?;
                if active_keys(conn, &org, row.created_at)? >= i64::from(max_active) {
                    return Err(KeyOpError::LimitReached(max_active).into());
                }
                diesel::insert_into(api_keys::table).values(&row).execute(conn)?;
                audit_trail::record(conn, &audit)?;
                Ok(key)
            })
            .await
            .map_err(|e| e.into_key_store_error("could not store the key"))?;
        Ok(key.into_stored())
    }

    async fn list_keys(&self, org: &OrgId) -> account_domain::StoreResult<Vec<ApiKey>> {
        let org = org.to_string();
        self.db
            .read(move |conn| {
                let rows = api_keys::table
                    .filter(api_keys::org_id.eq(org))
                    .order((api_keys::created_at.desc(), api_keys::id.desc()))
                    .select(ApiKeyRow::as_select())
                    .load(conn)?;
                Ok(rows.into_iter().map(ApiKey::try_from).collect::<anyhow::Result<Vec<_>>>()?)
            })
            .await
            .map_err(|e| e.into_store_error("could not list the keys"))
    }

    async fn revoke_key(
        &self,
        org: &OrgId,
        key: &KeyId,
        at: OffsetDateTime,
        actor: &Actor,
        decide: KeyWriteDecision<()>,
        audit: &AuditRecord,
    ) -> Result<ApiKey, KeyOpError> {
        let (org, key) = (org.to_string(), key.to_string());
        let (actor, audit) = (actor.clone(), audit.clone());
        self.db
            .write(move |conn| {
                let rows = KeyWriteRows::lock(conn, &org, &actor, Some(&key))?;
                decide(rows.found())?;
                let (row, hash) = rows.target()?;
                // Only the first revocation sets the time: revoking again changes nothing.
                if !row.is_revoked() {
                    diesel::update(api_keys::table.find(row.id.as_str()))
                        .set(api_keys::revoked_at.eq(Some(to_micros(at))))
                        .execute(conn)?;
                    publish_change(conn, Some(hash), None)?;
                    audit_trail::record(conn, &audit)?;
                }
                let row = find_row(conn, &org, &key)?.ok_or_else(|| anyhow::anyhow!("revoked key vanished"))?;
                Ok(ApiKey::try_from(row)?)
            })
            .await
            .map_err(|e| e.into_key_store_error("could not revoke the key"))
    }

    async fn find_key(&self, org: &OrgId, key: &KeyId) -> account_domain::StoreResult<Option<ApiKey>> {
        let (org, key) = (org.to_string(), key.to_string());
        self.db
            .read(move |conn| Ok(find_row(conn, &org, &key)?.map(ApiKey::try_from).transpose()?))
            .await
            .map_err(|e| e.into_store_error("could not read the key"))
    }

    async fn update_key(
        &self,
        org: &OrgId,
        key: &KeyId,
        changes: &KeyChanges,
        actor: &Actor,
        decide: KeyWriteDecision<()>,
        audit: &[AuditRecord],
    ) -> Result<ApiKey, KeyOpError> {
        let (org, key) = (org.to_string(), key.to_string());
        let name = changes.name.as_ref().map(|n| n.as_str().to_owned());
        let allowed_ips = changes.allowed_ips.as_ref().map(|a| a.as_ref().map(allowed_ips_text));
        let (actor, audit) = (actor.clone(), audit.to_vec());
        self.db
            .write(move |conn| {
                let rows = KeyWriteRows::lock(conn, &org, &actor, Some(&key))?;
                decide(rows.found())?;
                let (row, hash) = rows.target()?;
                let mine = api_keys::table.find(row.id.as_str());
                if let Some(name) = &name {
                    diesel::update(mine).set(api_keys::name.eq(name)).execute(conn)?;
                }
                if let Some(allowed_ips) = &allowed_ips {
                    diesel::update(mine).set(api_keys::allowed_ips.eq(allowed_ips)).execute(conn)?;
                }
                publish_change(conn, Some(hash), None)?;
                audit.iter().try_for_each(|event| audit_trail::record(conn, event))?;
                let row = find_row(conn, &org, &key)?.ok_or_else(|| anyhow::anyhow!("changed key vanished"))?;
                Ok(ApiKey::try_from(row)?)
            })
            .await
            .map_err(|e| e.into_key_store_error("could not change the key"))
    }

    async fn roll_key(
        &self,
        org: &OrgId,
        old: &KeyId,
        actor: &Actor,
        decide: KeyWriteDecision<NewApiKey>,
        old_expires_at: OffsetDateTime,
        max_active: u32,
        audit: &[AuditRecord],
    ) -> Result<ApiKey, KeyOpError> {
        let (org, old, actor) = (org.to_string(), old.to_string(), actor.clone());
        let old_expires_at = to_micros(old_expires_at);
        let audit = audit.to_vec();
        let new = self
            .db
            .write(move |conn| {
                let rows = KeyWriteRows::lock(conn, &org, &actor, Some(&old))?;
                let new = decide(rows.found())?;
                let (row, hash) = rows.target()?;
                let new_row = row_of(&new, &org)?;
                let now = new_row.created_at;
                if !row.is_active(new.created_at) {
                    return Err(KeyOpError::NotActive.into());
                }
                // The grace period never extends an earlier expiry.
                let expires_at = row.expires_at.map_or(old_expires_at, |at| to_micros(at).min(old_expires_at));
                // During a grace period the old key and the new one are both active.
                if expires_at > now && active_keys(conn, &org, now)? >= i64::from(max_active) {
                    return Err(KeyOpError::LimitReached(max_active).into());
                }
                diesel::update(api_keys::table.find(row.id.as_str()))
                    .set(api_keys::expires_at.eq(Some(expires_at)))
                    .execute(conn)?;
                diesel::insert_into(api_keys::table).values(&new_row).execute(conn)?;
                publish_change(conn, Some(hash), None)?;
                audit.iter().try_for_each(|event| audit_trail::record(conn, event))?;
                Ok(new)
            })
            .await
            .map_err(|e| e.into_key_store_error("could not roll the key"))?;
        Ok(new.into_stored())
    }

    async fn revoke_leaked(
        &self,
        hashes: &[KeyHash],
        at: OffsetDateTime,
        meta: &RequestMeta,
    ) -> account_domain::StoreResult<usize> {
        let hashes: Vec<String> = hashes.iter().map(KeyHash::to_hex).collect();
        let meta = meta.clone();
        self.db
            .write(move |conn| {
                // Locked in ascending id order, as every key write locks keys.
                let query = api_keys::table
                    .filter(api_keys::key_hash.eq_any(&hashes))
                    .filter(api_keys::revoked_at.is_null())
                    .order(api_keys::id.asc());
                let rows: Vec<ApiKeyRow> = match conn {
                    DbConnection::Postgres(pg) => query.select(ApiKeyRow::as_select()).for_no_key_update().load(pg)?,
                    DbConnection::Sqlite(lite) => query.select(ApiKeyRow::as_select()).load(lite)?,
                };
                let mut revoked = 0;
                for row in rows {
                    let revoked_now =
                        diesel::update(api_keys::table.find(&row.id).filter(api_keys::revoked_at.is_null()))
                            .set(api_keys::revoked_at.eq(Some(to_micros(at))))
                            .execute(conn)?;
                    if revoked_now == 0 {
                        // Another writer revoked it since it was read: its event is theirs.
                        continue;
                    }
                    publish_change(conn, Some(&row.key_hash), None)?;
                    let key = ApiKey::try_from(row)?;
                    audit_trail::record(
                        conn,
                        &AuditRecord {
                            org_id: key.org_id,
                            action: AuditAction::KeyLeakReported,
                            target_id: Some(key.id.to_string()),
                            actor_key_id: None,
                            meta: meta.clone(),
                            at,
                            details: account_domain::AuditDetails::none(),
                        },
                    )?;
                    revoked += 1;
                }
                Ok(revoked)
            })
            .await
            .map_err(|e| e.into_store_error("could not revoke the reported keys"))
    }

    async fn find_credential(&self, hash: &KeyHash) -> account_domain::StoreResult<Option<KeyCredential>> {
        self.credential_reads.find(hash).await
    }

    async fn recently_used_credentials(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> account_domain::StoreResult<Vec<(KeyHash, KeyCredential)>> {
        self.db
            .read(move |conn| credential_reads::recently_used(conn, to_micros(since), limit))
            .await
            .map_err(|e| e.into_store_error("could not read the recently used keys"))
    }

    async fn record_usage(&self, batch: &UsageBatch) -> account_domain::StoreResult<account_domain::UsageRecorded> {
        let batch = batch.clone();
        self.db
            .write(move |conn| usage_store::record(conn, &batch, OffsetDateTime::now_utc()))
            .await
            .map_err(|e| e.into_store_error("could not record key usage"))
    }

    async fn usage_of(&self, org: &OrgId, from: Date, to: Date) -> account_domain::StoreResult<Vec<KeyUsageRow>> {
        let org = org.clone();
        self.db
            .read(move |conn| usage_store::of_organization(conn, &org, from, to))
            .await
            .map_err(|e| e.into_store_error("could not read key usage"))
    }

    async fn monthly_usage(&self, from: Date, to: Date) -> account_domain::StoreResult<Vec<OrganizationMonth>> {
        self.db
            .read(move |conn| usage_store::by_organization(conn, from, to))
            .await
            .map_err(|e| e.into_store_error("could not read the month's usage"))
    }

    async fn prune_usage(&self, before: Date) -> account_domain::StoreResult<usize> {
        self.db
            .write(move |conn| usage_store::prune(conn, before))
            .await
            .map_err(|e| e.into_store_error("could not prune key usage"))
    }

    async fn valid_uses_since(&self, orgs: &[OrgId], from: Date) -> account_domain::StoreResult<Vec<ValidUses>> {
        let orgs = orgs.to_vec();
        self.db
            .read(move |conn| usage_store::valid_since(conn, &orgs, from))
            .await
            .map_err(|e| e.into_store_error("could not read the valid verifications"))
    }
}

/// How many keys of the organization are neither revoked nor expired at `at` (microseconds).
/// Call it under [`lock_organization`], so that the count holds until the write.
fn active_keys(conn: &mut DbConnection, org: &str, at: i64) -> Result<i64, RepoError> {
    Ok(api_keys::table
        .filter(api_keys::org_id.eq(org))
        .filter(api_keys::revoked_at.is_null())
        .filter(api_keys::expires_at.is_null().or(api_keys::expires_at.gt(at)))
        .count()
        .get_result(conn)?)
}

/// The rows a key write decides on, read inside its transaction: on PostgreSQL the
/// organization's row is locked first, then the keys (`FOR NO KEY UPDATE`, which a usage
/// flush's `FOR KEY SHARE` does not wait for) in ascending id order, the one order in which
/// every key write takes its locks (leak reports, which lock no organization, and usage
/// flushes lock keys in that order too), so that concurrent writes wait for each other
/// instead of deadlocking. SQLite's write transaction already excludes every other writer.
struct KeyWriteRows {
    actor: Option<(ApiKey, bool)>,
    /// The key acted on, with its hash (to publish its change).
    target: Option<(ApiKey, String)>,
    organization_closed: bool,
}

impl KeyWriteRows {
    fn lock(conn: &mut DbConnection, org: &str, actor: &Actor, target: Option<&str>) -> Result<Self, RepoError> {
        let organization = lock_organization(conn, org)?;
        let organization_active = organization.map(|o| o.active);
        let actor_id = match actor {
            Actor::Key(id) => Some(id.as_str()),
            Actor::Operator => None,
        };
        let mut ids: Vec<&str> = actor_id.into_iter().chain(target).collect();
        ids.sort_unstable();
        ids.dedup();
        let query = api_keys::table
            .filter(api_keys::id.eq_any(&ids))
            .filter(api_keys::org_id.eq(org))
            .order(api_keys::id.asc());
        let rows: Vec<ApiKeyRow> = match conn {
            DbConnection::Postgres(pg) => query.select(ApiKeyRow::as_select()).for_no_key_update().load(pg)?,
            DbConnection::Sqlite(lite) => query.select(ApiKeyRow::as_select()).load(lite)?,
        };
        let mut found = Self { actor: None, target: None, organization_closed: organization.is_some_and(|o| o.closed) };
        for row in rows {
            let hash = row.key_hash.clone();
            let key = ApiKey::try_from(row)?;
            if Some(key.id.as_str()) == actor_id {
                found.actor = Some((key.clone(), organization_active.unwrap_or(false)));
            }
            if Some(key.id.as_str()) == target {
                found.target = Some((key, hash));
            }
        }
        Ok(found)
    }

    fn found(&self) -> FoundInWrite<'_> {
        FoundInWrite {
            actor: self.actor.as_ref().map(|(key, active)| (key, *active)),
            target: self.target.as_ref().map(|(key, _)| key),
            organization_closed: self.organization_closed,
        }
    }

    /// The key acted on, once the decision let the write go on (it refuses a missing one).
    fn target(&self) -> Result<(&ApiKey, &str), RepoError> {
        let (key, hash) = self.target.as_ref().ok_or_else(|| anyhow::anyhow!("a key not found was let through"))?;
        Ok((key, hash))
    }
}

/// The state of an organization a write locked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockedOrganization {
    pub active: bool,
    pub closed: bool,
}

/// Takes the organization's row lock: on PostgreSQL it serializes the organization's key
/// changes, so counts and checks made after it cannot be raced (SQLite has one writer).
/// Returns its state (`None`: there is no such organization).
pub(crate) fn lock_organization(conn: &mut DbConnection, org: &str) -> Result<Option<LockedOrganization>, RepoError> {
    diesel::update(organizations::table.find(org))
        .set(organizations::is_active.eq(organizations::is_active))
        .execute(conn)?;
    let state = organizations::table.find(org).select((organizations::is_active, organizations::closed_at));
    let row: Option<(bool, Option<i64>)> = unique_row(state, conn)?;
    Ok(row.map(|(active, closed_at)| LockedOrganization { active, closed: closed_at.is_some() }))
}

/// The row of a key a write's decision made: it must belong to the organization the write
/// locked (anything else is a fault, never a refusal).
fn row_of(key: &NewApiKey, org: &str) -> Result<ApiKeyRow, RepoError> {
    let row = ApiKeyRow::from(key);
    if row.org_id != org {
        return Err(anyhow::anyhow!("a key was made for another organization than the write's").into());
    }
    Ok(row)
}

fn find_row(conn: &mut DbConnection, org: &str, key: &str) -> Result<Option<ApiKeyRow>, RepoError> {
    let query = api_keys::table.filter(api_keys::id.eq(key)).filter(api_keys::org_id.eq(org));
    Ok(unique_row(query.select(ApiKeyRow::as_select()), conn)?)
}
