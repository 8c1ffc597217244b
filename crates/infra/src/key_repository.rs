//! API keys in SQL.

use account_domain::{
    Actor, ActorRefused, ApiKey, AuditAction, AuditRecord, KeyChanges, KeyCredential, KeyHash, KeyId, KeyRepository,
    KeyStoreError, KeyUsageRow, NewApiKey, OrgId, OrganizationMonth, RequestMeta, UsageBatch,
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
use crate::rows::{allowed_ips_text, from_micros, to_micros, ApiKeyRow};
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
        key: &NewApiKey,
        max_active: u32,
        actor: &Actor,
        audit: &AuditRecord,
    ) -> Result<ApiKey, KeyStoreError> {
        let row = ApiKeyRow::from(key);
        let (actor, audit) = (actor.clone(), audit.clone());
        let outcome = self
            .db
            .write(move |conn| {
                lock_organization(conn, &row.org_id)?;
                confirm_actor(conn, &actor, row.created_at)?;
                if active_keys(conn, &row.org_id, row.created_at)? >= i64::from(max_active) {
                    return Err(KeyStoreError::LimitReached(max_active).into());
                }
                diesel::insert_into(api_keys::table).values(&row).execute(conn)?;
                audit_trail::record(conn, &audit)
            })
            .await;
        outcome.map_err(|e| e.into_key_store_error("could not store the key"))?;
        Ok(key.clone().into_stored())
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
        audit: &AuditRecord,
    ) -> Result<ApiKey, KeyStoreError> {
        let (org, key) = (org.to_string(), key.to_string());
        let (actor, audit) = (actor.clone(), audit.clone());
        self.db
            .write(move |conn| {
                confirm_actor(conn, &actor, to_micros(at))?;
                let mine = api_keys::table.filter(api_keys::id.eq(&key)).filter(api_keys::org_id.eq(&org));
                // Only the first revocation sets the time: revoking again changes nothing.
                let revoked_now = diesel::update(mine.filter(api_keys::revoked_at.is_null()))
                    .set(api_keys::revoked_at.eq(Some(to_micros(at))))
                    .execute(conn)?;
                let row = unique_row(mine.select(ApiKeyRow::as_select()), conn)?;
                if let (1, Some(row)) = (revoked_now, &row) {
                    publish_change(conn, Some(&row.key_hash), None, at)?;
                    audit_trail::record(conn, &audit)?;
                }
                let row = row.ok_or(KeyStoreError::NotFound)?;
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
        audit: &[AuditRecord],
    ) -> Result<ApiKey, KeyStoreError> {
        let (org, key) = (org.to_string(), key.to_string());
        let name = changes.name.as_ref().map(|n| n.as_str().to_owned());
        let allowed_ips = changes.allowed_ips.as_ref().map(|a| a.as_ref().map(allowed_ips_text));
        let (actor, audit) = (actor.clone(), audit.to_vec());
        let at = audit.first().map_or_else(|| to_micros(OffsetDateTime::now_utc()), |a| to_micros(a.at));
        self.db
            .write(move |conn| {
                confirm_actor(conn, &actor, at)?;
                let row = find_row(conn, &org, &key)?.ok_or(KeyStoreError::NotFound)?;
                let mine = api_keys::table.find(&row.id);
                if let Some(name) = &name {
                    diesel::update(mine).set(api_keys::name.eq(name)).execute(conn)?;
                }
                if let Some(allowed_ips) = &allowed_ips {
                    diesel::update(mine).set(api_keys::allowed_ips.eq(allowed_ips)).execute(conn)?;
                }
                publish_change(conn, Some(&row.key_hash), None, from_micros(at)?)?;
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
        new: &NewApiKey,
        old_expires_at: OffsetDateTime,
        max_active: u32,
        actor: &Actor,
        audit: &[AuditRecord],
    ) -> Result<ApiKey, KeyStoreError> {
        let (org, old, actor) = (org.to_string(), old.to_string(), actor.clone());
        let new_row = ApiKeyRow::from(new);
        let old_expires_at = to_micros(old_expires_at);
        let audit = audit.to_vec();
        let changed_at = new.created_at;
        let outcome = self
            .db
            .write(move |conn| {
                lock_organization(conn, &org)?;
                let now = new_row.created_at;
                confirm_actor(conn, &actor, now)?;
                let row = find_row(conn, &org, &old)?.ok_or(KeyStoreError::NotFound)?;
                if row.revoked_at.is_some() || row.expires_at.is_some_and(|at| at <= now) {
                    return Err(KeyStoreError::NotActive.into());
                }
                // The grace period never extends an earlier expiry.
                let expires_at = row.expires_at.map_or(old_expires_at, |at| at.min(old_expires_at));
                // During a grace period the old key and the new one are both active.
                if expires_at > now && active_keys(conn, &org, now)? >= i64::from(max_active) {
                    return Err(KeyStoreError::LimitReached(max_active).into());
                }
                // Filtered on the key still being active: a revocation that committed since it
                // was read (by a leak report, which takes no organization lock) ends the roll.
                let still_active = diesel::update(
                    api_keys::table
                        .find(&row.id)
                        .filter(api_keys::revoked_at.is_null())
                        .filter(api_keys::expires_at.is_null().or(api_keys::expires_at.gt(now))),
                )
                .set(api_keys::expires_at.eq(Some(expires_at)))
                .execute(conn)?;
                if still_active == 0 {
                    return Err(KeyStoreError::NotActive.into());
                }
                diesel::insert_into(api_keys::table).values(&new_row).execute(conn)?;
                publish_change(conn, Some(&row.key_hash), None, changed_at)?;
                audit.iter().try_for_each(|event| audit_trail::record(conn, event))
            })
            .await;
        outcome.map_err(|e| e.into_key_store_error("could not roll the key"))?;
        Ok(new.clone().into_stored())
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
                let rows: Vec<ApiKeyRow> = api_keys::table
                    .filter(api_keys::key_hash.eq_any(&hashes))
                    .filter(api_keys::revoked_at.is_null())
                    .select(ApiKeyRow::as_select())
                    .load(conn)?;
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
                    publish_change(conn, Some(&row.key_hash), None, at)?;
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

    async fn record_usage(&self, batch: &UsageBatch) -> account_domain::StoreResult<Vec<KeyId>> {
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

/// Confirms, inside the caller's write transaction, that `actor` may still act at `at`
/// (microseconds): its key neither revoked nor expired, its organization active. On
/// PostgreSQL the rows stay share-locked until the transaction ends, so a revocation or a
/// deactivation cannot commit between this check and the write; SQLite's write transaction
/// already excludes every other writer.
fn confirm_actor(conn: &mut DbConnection, actor: &Actor, at: i64) -> Result<(), RepoError> {
    let Actor::Key(key_id) = actor else { return Ok(()) };
    let query = api_keys::table.inner_join(organizations::table).filter(api_keys::id.eq(key_id.as_str())).select((
        api_keys::revoked_at,
        api_keys::expires_at,
        organizations::is_active,
    ));
    let found: Option<(Option<i64>, Option<i64>, bool)> = match conn {
        DbConnection::Postgres(pg) => unique_row(query.for_share(), pg)?,
        DbConnection::Sqlite(_) => unique_row(query, conn)?,
    };
    match found {
        // A key deleted from under its caller is as good as revoked.
        None | Some((Some(_), _, _)) => Err(KeyStoreError::Actor(ActorRefused::Revoked).into()),
        Some((None, Some(expires_at), _)) if expires_at <= at => {
            Err(KeyStoreError::Actor(ActorRefused::Expired).into())
        }
        Some((None, _, false)) => Err(KeyStoreError::Actor(ActorRefused::OrganizationInactive).into()),
        Some(_) => Ok(()),
    }
}

/// Takes the organization's row lock: on PostgreSQL it serializes the organization's key
/// changes, so counts and checks made after it cannot be raced (SQLite has one writer).
fn lock_organization(conn: &mut DbConnection, org: &str) -> Result<(), RepoError> {
    diesel::update(organizations::table.find(org))
        .set(organizations::is_active.eq(organizations::is_active))
        .execute(conn)?;
    Ok(())
}

fn find_row(conn: &mut DbConnection, org: &str, key: &str) -> Result<Option<ApiKeyRow>, RepoError> {
    let query = api_keys::table.filter(api_keys::id.eq(key)).filter(api_keys::org_id.eq(org));
    Ok(unique_row(query.select(ApiKeyRow::as_select()), conn)?)
}
