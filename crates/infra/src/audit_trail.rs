//! The audit trail in SQL: records written inside the caller's transaction, and read back
//! newest first.

use account_domain::{AuditAction, AuditDetails, AuditEvent, AuditRecord, DetailValue, KeyId, OrgId, RequestMeta};
use anyhow::Context as _;
use diesel::prelude::*;

use crate::connection::DbConnection;
use crate::repo_error::RepoError;
use crate::rows::{from_micros, to_micros};
use crate::schema::audit_events;

#[derive(Debug, Insertable)]
#[diesel(table_name = audit_events)]
struct NewAuditRow<'a> {
    org_id: &'a str,
    action: &'a str,
    target_id: Option<&'a str>,
    actor_key_id: Option<&'a str>,
    client_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    created_at: i64,
    details: Option<String>,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub(crate) struct AuditRow {
    id: i64,
    org_id: String,
    action: String,
    target_id: Option<String>,
    actor_key_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
    created_at: i64,
    details: Option<String>,
}

/// Writes `record` in the caller's transaction, with the webhook event it sends (the outbox).
pub(crate) fn record(conn: &mut DbConnection, record: &AuditRecord) -> Result<(), RepoError> {
    diesel::insert_into(audit_events::table)
        .values(NewAuditRow {
            org_id: record.org_id.as_str(),
            action: record.action.as_str(),
            target_id: record.target_id.as_deref(),
            actor_key_id: record.actor_key_id.as_ref().map(KeyId::as_str),
            client_ip: record.meta.client_ip().map(|ip| ip.to_string()).as_deref(),
            user_agent: record.meta.user_agent(),
            created_at: to_micros(record.at),
            details: details_json(&record.details),
        })
        .execute(conn)?;
    // The webhook event it sends, in the same transaction: none is lost nor sent for a
    // change rolled back.
    crate::webhook_outbox::enqueue(conn, record)
}

/// The organization's events with an id below `before`, newest first.
pub(crate) fn list(
    conn: &mut DbConnection,
    org: &str,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditEvent>, RepoError> {
    let mut query = audit_events::table.filter(audit_events::org_id.eq(org)).into_boxed();
    if let Some(before) = before {
        query = query.filter(audit_events::id.lt(before));
    }
    let rows: Vec<AuditRow> =
        query.order(audit_events::id.desc()).limit(i64::from(limit)).select(AuditRow::as_select()).load(conn)?;
    Ok(rows.into_iter().map(AuditRow::into_domain).collect::<anyhow::Result<Vec<_>>>()?)
}

impl AuditRow {
    fn into_domain(self) -> anyhow::Result<AuditEvent> {
        Ok(AuditEvent {
            id: self.id,
            record: AuditRecord {
                org_id: OrgId::new(&self.org_id).context("stored organization id")?,
                action: AuditAction::new(&self.action).context("stored audit action")?,
                target_id: self.target_id,
                actor_key_id: self.actor_key_id.as_deref().map(KeyId::new).transpose().context("stored key id")?,
                meta: RequestMeta::new(
                    self.client_ip.as_deref().map(str::parse).transpose().context("stored client address")?,
                    self.user_agent.as_deref(),
                ),
                at: from_micros(self.created_at)?,
                details: self.details.as_deref().map(details_of).transpose()?.unwrap_or_default(),
            },
        })
    }
}

/// Details as stored: a JSON object of strings and lists of strings; `None` when empty.
fn details_json(details: &AuditDetails) -> Option<String> {
    if details.is_empty() {
        return None;
    }
    let object: serde_json::Map<String, serde_json::Value> = details
        .entries()
        .iter()
        .map(|(name, value)| {
            let value = match value {
                DetailValue::Text(text) => serde_json::Value::from(text.as_str()),
                DetailValue::List(items) => serde_json::Value::from(items.clone()),
                DetailValue::Number(n) => serde_json::Value::from(*n),
            };
            (name.clone(), value)
        })
        .collect();
    Some(serde_json::Value::Object(object).to_string())
}

fn details_of(stored: &str) -> anyhow::Result<AuditDetails> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(stored).context("stored audit details")?;
    object.into_iter().try_fold(AuditDetails::none(), |details, (name, value)| {
        let value = match value {
            serde_json::Value::String(text) => DetailValue::Text(text),
            serde_json::Value::Array(items) => DetailValue::List(
                items
                    .into_iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .context("a list of text")?,
            ),
            serde_json::Value::Number(n) => DetailValue::Number(n.as_i64().context("a whole number")?),
            other => anyhow::bail!("stored audit detail {name} is {other}"),
        };
        Ok(details.with(&name, value))
    })
}
