//! The webhook outbox: an event written in the transaction of the change it reports (from
//! the one place every change is audited, [`crate::audit_trail::record`]), one row per
//! enabled endpoint of the organization subscribed to it; then claimed, sent and recorded
//! by the delivery worker (`webhook_delivery.rs`).

use account_domain::{webhook_event_of, AuditDetails, AuditRecord, DetailValue, WebhookEventType};
use diesel::prelude::*;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::connection::DbConnection;
use crate::repo_error::RepoError;
use crate::rows::to_micros;
use crate::schema::{webhook_deliveries, webhook_endpoints};

/// Why the service disables the endpoints of a closed account.
pub(crate) const CLOSED_REASON: &str = "account_closed";

/// Writes the event `record` sends, if any, for every enabled endpoint of its organization
/// subscribed to it, in the caller's transaction. Closing an account sends `account.closed`,
/// then disables its endpoints.
pub(crate) fn enqueue(conn: &mut DbConnection, record: &AuditRecord) -> Result<(), RepoError> {
    let Some((event, data)) = webhook_event_of(record) else { return Ok(()) };
    let org = record.org_id.as_str();
    enqueue_event(conn, org, event.as_str(), &data, record.at, None)?;
    if event == WebhookEventType::AccountClosed {
        diesel::update(webhook_endpoints::table.filter(webhook_endpoints::org_id.eq(org)))
            .set((webhook_endpoints::enabled.eq(false), webhook_endpoints::disabled_reason.eq(CLOSED_REASON)))
            .execute(conn)?;
    }
    Ok(())
}

/// Writes event `kind` with `data` for the organization's enabled endpoints subscribed to
/// it, or for `only` that endpoint whatever it subscribes to (`webhook.test`). Returns the
/// message id, or `None` when no endpoint takes it.
pub(crate) fn enqueue_event(
    conn: &mut DbConnection,
    org: &str,
    kind: &str,
    data: &AuditDetails,
    at: OffsetDateTime,
    only: Option<&str>,
) -> Result<Option<String>, RepoError> {
    let mut query = webhook_endpoints::table.filter(webhook_endpoints::org_id.eq(org)).into_boxed();
    query = match only {
        Some(id) => query.filter(webhook_endpoints::id.eq(id.to_owned())),
        None => query.filter(webhook_endpoints::enabled.eq(true)),
    };
    let endpoints: Vec<(String, String)> =
        query.select((webhook_endpoints::id, webhook_endpoints::events)).load(conn)?;
    let subscribed: Vec<String> = endpoints
        .into_iter()
        .filter(|(_, events)| {
            only.is_some()
                || serde_json::from_str::<Vec<String>>(events).is_ok_and(|list| list.iter().any(|e| e == kind))
        })
        .map(|(id, _)| id)
        .collect();
    if subscribed.is_empty() {
        return Ok(None);
    }
    let message_id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let body = body_of(&message_id, kind, org, at, data);
    let now = to_micros(at);
    // One row at a time: at most 10 endpoints, and batch inserts are not portable here.
    for endpoint in &subscribed {
        diesel::insert_into(webhook_deliveries::table)
            .values((
                webhook_deliveries::endpoint_id.eq(endpoint.as_str()),
                webhook_deliveries::org_id.eq(org),
                webhook_deliveries::message_id.eq(message_id.as_str()),
                webhook_deliveries::event_type.eq(kind),
                webhook_deliveries::body.eq(body.as_str()),
                webhook_deliveries::created_at.eq(now),
                webhook_deliveries::next_attempt_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(Some(message_id))
}

/// `{"id","type","created_at","org_id","data"}`.
fn body_of(id: &str, kind: &str, org: &str, at: OffsetDateTime, data: &AuditDetails) -> String {
    let data: serde_json::Map<String, serde_json::Value> = data
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
    let at = at.replace_nanosecond(0).unwrap_or(at).format(&Rfc3339).unwrap_or_default();
    serde_json::json!({"id": id, "type": kind, "created_at": at, "org_id": org, "data": data}).to_string()
}
