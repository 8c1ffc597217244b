//! API keys in SQL.

use account_domain::{ApiKey, InsertKeyError, KeyCredential, KeyHash, KeyId, KeyRepository, NewApiKey, OrgId};
use async_trait::async_trait;
use diesel::prelude::*;
use time::OffsetDateTime;

use crate::change_feed::publish_change;
use crate::database::Database;
use crate::repo_error::RepoError;
use crate::rows::{to_micros, ApiKeyRow, OrganizationRow, PlanRow};
use crate::schema::{api_keys, organizations, plans};

#[derive(Debug, Clone)]
pub struct SqlKeyRepository {
    db: Database,
}

impl SqlKeyRepository {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

#[async_trait]
impl KeyRepository for SqlKeyRepository {
    async fn insert_key(&self, key: &NewApiKey, max_active: u32) -> Result<ApiKey, InsertKeyError> {
        let row = ApiKeyRow::from(key);
        let outcome = self
            .db
            .write(move |conn| {
                // Taking the organization's row lock serializes its key creations on
                // PostgreSQL, so the count below cannot be raced (SQLite has one writer).
                diesel::update(organizations::table.find(&row.org_id))
                    .set(organizations::is_active.eq(organizations::is_active))
                    .execute(conn)?;
                let active: i64 = api_keys::table
                    .filter(api_keys::org_id.eq(&row.org_id))
                    .filter(api_keys::revoked_at.is_null())
                    .filter(api_keys::expires_at.is_null().or(api_keys::expires_at.gt(row.created_at)))
                    .count()
                    .get_result(conn)?;
                if active >= i64::from(max_active) {
                    return Err(RepoError::KeyLimitReached);
                }
                Ok(diesel::insert_into(api_keys::table).values(&row).execute(conn)?)
            })
            .await;
        match outcome {
            Ok(_) => Ok(key.clone().into_stored()),
            Err(RepoError::KeyLimitReached) => Err(InsertKeyError::LimitReached),
            Err(e) => Err(InsertKeyError::Unknown(e.into_anyhow("could not store the key"))),
        }
    }

    async fn list_keys(&self, org: &OrgId) -> anyhow::Result<Vec<ApiKey>> {
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
            .map_err(|e| e.into_anyhow("could not list the keys"))
    }

    async fn revoke_key(&self, org: &OrgId, key: &KeyId, at: OffsetDateTime) -> anyhow::Result<Option<ApiKey>> {
        let (org, key) = (org.to_string(), key.to_string());
        self.db
            .write(move |conn| {
                let mine = api_keys::table.filter(api_keys::id.eq(&key)).filter(api_keys::org_id.eq(&org));
                // Only the first revocation sets the time: revoking again changes nothing.
                let revoked_now = diesel::update(mine.filter(api_keys::revoked_at.is_null()))
                    .set(api_keys::revoked_at.eq(Some(to_micros(at))))
                    .execute(conn)?;
                let row = mine.select(ApiKeyRow::as_select()).first(conn).optional()?;
                if let (1, Some(row)) = (revoked_now, &row) {
                    publish_change(conn, Some(&row.key_hash), None, at)?;
                }
                Ok(row.map(ApiKey::try_from).transpose()?)
            })
            .await
            .map_err(|e| e.into_anyhow("could not revoke the key"))
    }

    async fn find_credential(&self, hash: &KeyHash) -> anyhow::Result<Option<KeyCredential>> {
        let hash = hash.to_hex();
        self.db
            .read(move |conn| {
                let row = api_keys::table
                    .inner_join(organizations::table.inner_join(plans::table))
                    .filter(api_keys::key_hash.eq(hash))
                    .select((ApiKeyRow::as_select(), OrganizationRow::as_select(), PlanRow::as_select()))
                    .first::<(ApiKeyRow, OrganizationRow, PlanRow)>(conn)
                    .optional()?;
                let Some((key, org, plan)) = row else {
                    return Ok(None);
                };
                Ok(Some(KeyCredential { key: key.try_into()?, organization: org.into_domain(plan)? }))
            })
            .await
            .map_err(|e| e.into_anyhow("could not look the key up"))
    }

    async fn record_usage(&self, usage: &[(KeyId, OffsetDateTime)]) -> anyhow::Result<()> {
        let statements: Vec<String> = usage.chunks(USAGE_BATCH).map(usage_update).collect();
        self.db
            .write(move |conn| {
                for sql in statements {
                    diesel::sql_query(sql).execute(conn)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| e.into_anyhow("could not record key usage"))
    }
}

/// Keys per usage statement: one statement covers a whole flush of a busy instance.
const USAGE_BATCH: usize = 500;

/// One `UPDATE` for a batch of last-use times, never moving one backwards. The values are
/// inlined: a [`KeyId`] is `key_` and ASCII letters and digits only, and times are integers.
fn usage_update(batch: &[(KeyId, OffsetDateTime)]) -> String {
    use std::fmt::Write as _;
    let mut case = String::from("CASE id");
    let mut ids = String::new();
    for (i, (id, at)) in batch.iter().enumerate() {
        debug_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let _ = write!(case, " WHEN '{}' THEN {}", id.as_str(), to_micros(*at));
        let _ = write!(ids, "{}'{}'", if i == 0 { "" } else { ", " }, id.as_str());
    }
    case.push_str(" END");
    format!(
        "UPDATE api_keys SET last_used_at = {case} WHERE id IN ({ids}) AND (last_used_at IS NULL OR last_used_at < {case})"
    )
}
