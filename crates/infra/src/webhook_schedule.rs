//! The scheduled webhook notices in SQL: the keys and organizations a pass looks at, and
//! each notice's mark taken (`INSERT … ON CONFLICT DO NOTHING`, on both backends) in the
//! transaction that writes its event to the outbox, so that of several instances only the
//! one whose insert took the mark sends.

use std::collections::{BTreeSet, HashMap};

use account_domain::{
    day_text, parse_day, ApiKey, AuditDetails, KeyId, KeyNotice, KeyNoticeDecision, OrgId, StoreResult, UsageMark,
    WebhookEventType, WebhookSchedule,
};
use anyhow::Context as _;
use async_trait::async_trait;
use diesel::prelude::*;
use time::OffsetDateTime;

use crate::connection::DbConnection;
use crate::database::Database;
use crate::repo_error::RepoError;
use crate::rows::{to_micros, ApiKeyRow};
use crate::schema::{api_keys, key_expiry_notices, organizations, usage_threshold_notices, webhook_endpoints};
use crate::webhook_outbox::enqueue_event;

/// [`WebhookSchedule`] over the database.
#[derive(Debug, Clone)]
pub struct SqlWebhookSchedule {
    db: Database,
}

impl SqlWebhookSchedule {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

/// The organizations with an enabled endpoint subscribed to any of `kinds`.
fn subscribed_organizations(
    conn: &mut DbConnection,
    kinds: &[WebhookEventType],
) -> Result<BTreeSet<String>, RepoError> {
    let endpoints: Vec<(String, String)> = webhook_endpoints::table
        .filter(webhook_endpoints::enabled.eq(true))
        .select((webhook_endpoints::org_id, webhook_endpoints::events))
        .load(conn)?;
    let mut orgs = BTreeSet::new();
    for (org, events) in endpoints {
        let events: Vec<String> = serde_json::from_str(&events).context("stored webhook events")?;
        if events.iter().any(|e| kinds.iter().any(|k| k.as_str() == e)) {
            orgs.insert(org);
        }
    }
    Ok(orgs)
}

/// The notices taken for these keys.
fn key_notices_taken(conn: &mut DbConnection, keys: &[String]) -> Result<HashMap<String, Vec<KeyNotice>>, RepoError> {
    let rows: Vec<(String, String)> = key_expiry_notices::table
        .filter(key_expiry_notices::key_id.eq_any(keys))
        .select((key_expiry_notices::key_id, key_expiry_notices::notice))
        .load(conn)?;
    let mut taken: HashMap<String, Vec<KeyNotice>> = HashMap::new();
    for (key, notice) in rows {
        let notice = KeyNotice::new(&notice).with_context(|| format!("stored key notice {notice}"))?;
        taken.entry(key).or_default().push(notice);
    }
    Ok(taken)
}

/// Takes the mark of `notice` for `key`: whether this call took it (not another before).
fn take_key_mark(conn: &mut DbConnection, key: &str, notice: KeyNotice, at: i64) -> Result<bool, RepoError> {
    let insert = diesel::insert_into(key_expiry_notices::table)
        .values((
            key_expiry_notices::key_id.eq(key),
            key_expiry_notices::notice.eq(notice.as_str()),
            key_expiry_notices::sent_at.eq(at),
        ))
        .on_conflict_do_nothing();
    let inserted = match conn {
        DbConnection::Postgres(pg) => insert.execute(pg)?,
        DbConnection::Sqlite(lite) => insert.execute(lite)?,
    };
    Ok(inserted == 1)
}

/// Takes the usage mark `mark` of `org`: whether this call took it.
fn take_usage_mark(conn: &mut DbConnection, org: &str, mark: &UsageMark, at: i64) -> Result<bool, RepoError> {
    let insert = diesel::insert_into(usage_threshold_notices::table)
        .values((
            usage_threshold_notices::org_id.eq(org),
            usage_threshold_notices::period_start.eq(day_text(mark.period_start)),
            usage_threshold_notices::percent.eq(i32::from(mark.percent)),
            usage_threshold_notices::sent_at.eq(at),
        ))
        .on_conflict_do_nothing();
    let inserted = match conn {
        DbConnection::Postgres(pg) => insert.execute(pg)?,
        DbConnection::Sqlite(lite) => insert.execute(lite)?,
    };
    Ok(inserted == 1)
}

#[async_trait]
impl WebhookSchedule for SqlWebhookSchedule {
    async fn expiring_keys(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> StoreResult<Vec<(ApiKey, Vec<KeyNotice>)>> {
        let (from, to) = (to_micros(from), to_micros(to));
        self.db
            .read(move |conn| {
                let orgs =
                    subscribed_organizations(conn, &[WebhookEventType::KeyExpiring, WebhookEventType::KeyExpired])?;
                if orgs.is_empty() {
                    return Ok(Vec::new());
                }
                let with_endpoints = webhook_endpoints::table
                    .filter(webhook_endpoints::enabled.eq(true))
                    .select(webhook_endpoints::org_id);
                let rows: Vec<ApiKeyRow> = api_keys::table
                    .filter(api_keys::revoked_at.is_null())
                    .filter(api_keys::expires_at.gt(from).and(api_keys::expires_at.le(to)))
                    .filter(api_keys::org_id.eq_any(with_endpoints))
                    .order(api_keys::id.asc())
                    .select(ApiKeyRow::as_select())
                    .load(conn)?;
                let rows: Vec<ApiKeyRow> = rows.into_iter().filter(|r| orgs.contains(&r.org_id)).collect();
                let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
                let mut taken = key_notices_taken(conn, &ids)?;
                rows.into_iter()
                    .map(|row| {
                        let notices = taken.remove(&row.id).unwrap_or_default();
                        Ok((ApiKey::try_from(row)?, notices))
                    })
                    .collect()
            })
            .await
            .map_err(|e| e.into_store_error("reading the keys expiring soon"))
    }

    async fn send_key_notice(
        &self,
        key: &KeyId,
        at: OffsetDateTime,
        decide: KeyNoticeDecision,
    ) -> StoreResult<Option<KeyNotice>> {
        let key = key.to_string();
        self.db
            .write(move |conn| {
                // The key's row as it is now, held until this commits: a revocation waits.
                let query = api_keys::table.find(&key);
                let row: Option<ApiKeyRow> = match conn {
                    DbConnection::Postgres(pg) => {
                        query.select(ApiKeyRow::as_select()).for_no_key_update().first(pg).optional()?
                    }
                    DbConnection::Sqlite(lite) => query.select(ApiKeyRow::as_select()).first(lite).optional()?,
                };
                let Some(row) = row else { return Ok(None) };
                let found = ApiKey::try_from(row)?;
                let taken = key_notices_taken(conn, std::slice::from_ref(&key))?.remove(&key).unwrap_or_default();
                let Some((notice, data)) = decide(&found, &taken) else { return Ok(None) };
                if !take_key_mark(conn, &key, notice, to_micros(at))? {
                    return Ok(None);
                }
                let org = found.org_id.as_str();
                if enqueue_event(conn, org, notice.event().as_str(), &data, at, None)?.is_none() {
                    // Nobody takes it: no mark either, so that a later subscriber hears of it.
                    diesel::delete(key_expiry_notices::table.find((&key, notice.as_str()))).execute(conn)?;
                    return Ok(None);
                }
                Ok(Some(notice))
            })
            .await
            .map_err(|e| e.into_store_error("sending a key's expiry notice"))
    }

    async fn usage_watchers(&self, since: time::Date) -> StoreResult<Vec<(OrgId, Vec<UsageMark>)>> {
        let since = day_text(since);
        self.db
            .read(move |conn| {
                let subscribed = subscribed_organizations(conn, &[WebhookEventType::UsageThreshold])?;
                let open: Vec<String> = organizations::table
                    .filter(organizations::id.eq_any(subscribed.iter().cloned().collect::<Vec<_>>()))
                    .filter(organizations::closed_at.is_null())
                    .order(organizations::id.asc())
                    .select(organizations::id)
                    .load(conn)?;
                let rows: Vec<(String, String, i32)> = usage_threshold_notices::table
                    .filter(usage_threshold_notices::org_id.eq_any(&open))
                    .filter(usage_threshold_notices::period_start.ge(&since))
                    .select((
                        usage_threshold_notices::org_id,
                        usage_threshold_notices::period_start,
                        usage_threshold_notices::percent,
                    ))
                    .load(conn)?;
                let mut taken: HashMap<String, Vec<UsageMark>> = HashMap::new();
                for (org, start, percent) in rows {
                    let period_start = parse_day(&start).with_context(|| format!("stored period start {start}"))?;
                    let percent = u8::try_from(percent).context("stored usage threshold")?;
                    taken.entry(org).or_default().push(UsageMark { period_start, percent });
                }
                open.into_iter()
                    .map(|org| {
                        let marks = taken.remove(&org).unwrap_or_default();
                        Ok((OrgId::new(&org).context("stored organization id")?, marks))
                    })
                    .collect()
            })
            .await
            .map_err(|e| e.into_store_error("reading the organizations watching their usage"))
    }

    async fn send_usage_notice(
        &self,
        org: &OrgId,
        marks: &[UsageMark],
        data: &AuditDetails,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let (org, marks, data) = (org.to_string(), marks.to_vec(), data.clone());
        self.db
            .write(move |conn| {
                let Some((first, rest)) = marks.split_first() else { return Ok(false) };
                let micros = to_micros(at);
                if !take_usage_mark(conn, &org, first, micros)? {
                    return Ok(false);
                }
                let mut took = vec![*first];
                for mark in rest {
                    if take_usage_mark(conn, &org, mark, micros)? {
                        took.push(*mark);
                    }
                }
                let kind = WebhookEventType::UsageThreshold.as_str();
                if enqueue_event(conn, &org, kind, &data, at, None)?.is_none() {
                    // Nobody takes it: no marks either.
                    for mark in took {
                        let key = (&org, day_text(mark.period_start), i32::from(mark.percent));
                        diesel::delete(usage_threshold_notices::table.find(key)).execute(conn)?;
                    }
                    return Ok(false);
                }
                Ok(true)
            })
            .await
            .map_err(|e| e.into_store_error("sending a usage threshold notice"))
    }
}
