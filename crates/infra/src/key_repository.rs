//! API keys in SQL.

use account_domain::{
    ApiKey, KeyCredential, KeyHash, KeyId, KeyRepository, NewApiKey, OrgId, PlanId,
};
use anyhow::Context as _;
use async_trait::async_trait;
use diesel::prelude::*;
use time::OffsetDateTime;

use crate::database::Database;
use crate::rows::{to_micros, ApiKeyRow};
use crate::schema::{api_keys, organizations};

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
    async fn insert_key(&self, key: &NewApiKey) -> anyhow::Result<ApiKey> {
        let row = ApiKeyRow::from(key);
        self.db
            .write(move |conn| {
                Ok(diesel::insert_into(api_keys::table)
                    .values(&row)
                    .execute(conn)?)
            })
            .await
            .map_err(|e| e.into_anyhow("could not store the key"))?;
        Ok(key.clone().into_stored())
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
                Ok(rows
                    .into_iter()
                    .map(ApiKey::try_from)
                    .collect::<anyhow::Result<Vec<_>>>()?)
            })
            .await
            .map_err(|e| e.into_anyhow("could not list the keys"))
    }

    async fn revoke_key(
        &self,
        org: &OrgId,
        key: &KeyId,
        at: OffsetDateTime,
    ) -> anyhow::Result<Option<ApiKey>> {
        let (org, key) = (org.to_string(), key.to_string());
        self.db
            .write(move |conn| {
                let mine = api_keys::table
                    .filter(api_keys::id.eq(&key))
                    .filter(api_keys::org_id.eq(&org));
                // Only the first revocation sets the time: revoking again changes nothing.
                diesel::update(mine.filter(api_keys::revoked_at.is_null()))
                    .set(api_keys::revoked_at.eq(Some(to_micros(at))))
                    .execute(conn)?;
                let row = mine.select(ApiKeyRow::as_select()).first(conn).optional()?;
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
                    .inner_join(organizations::table)
                    .filter(api_keys::key_hash.eq(hash))
                    .select((
                        ApiKeyRow::as_select(),
                        organizations::is_active,
                        organizations::plan_id,
                    ))
                    .first::<(ApiKeyRow, bool, String)>(conn)
                    .optional()?;
                let Some((key, org_is_active, plan_id)) = row else {
                    return Ok(None);
                };
                Ok(Some(KeyCredential {
                    key: key.try_into()?,
                    org_is_active,
                    plan_id: PlanId::new(&plan_id).context("stored plan id")?,
                }))
            })
            .await
            .map_err(|e| e.into_anyhow("could not look the key up"))
    }

    async fn record_usage(&self, usage: &[(KeyId, OffsetDateTime)]) -> anyhow::Result<()> {
        let usage: Vec<(String, i64)> = usage
            .iter()
            .map(|(id, at)| (id.to_string(), to_micros(*at)))
            .collect();
        self.db
            .write(move |conn| {
                for (id, at) in usage {
                    diesel::update(
                        api_keys::table.filter(api_keys::id.eq(id)).filter(
                            api_keys::last_used_at
                                .is_null()
                                .or(api_keys::last_used_at.lt(at)),
                        ),
                    )
                    .set(api_keys::last_used_at.eq(Some(at)))
                    .execute(conn)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| e.into_anyhow("could not record key usage"))
    }
}
