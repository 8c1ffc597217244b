//! `GET /v1/account/audit-log`: the organization's audit trail.

use account_domain::{audit_event_id, AuditEvent, AuditLogError, AuditPage, DetailValue};
use actix_web::web::Query;
use actix_web::{get, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::shared_responses::{AuthErrors, Unavailable};
use crate::auth::Caller;
use crate::envelope::{envelope_schemas, ok};
use crate::error::{ApiError, ErrorBody};
use crate::timestamp::rfc3339;

/// One event of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEvent)]
pub(crate) struct AuditEventDto {
    #[schema(pattern = "^evt_[0-9]+$", example = "evt_42")]
    id: String,
    /// signup, key.created, key.revoked, key.rolled, key.renamed, key.allowlist_changed,
    /// key.leak_reported, organization.deactivated, organization.activated,
    /// account.updated, account.plan_changed, account.closed, org.erased, webhook.created,
    /// webhook.updated, webhook.deleted, webhook.secret_rotated or webhook.disabled.
    #[schema(example = "key.created")]
    action: &'static str,
    /// The key or organization acted on.
    target_id: Option<String>,
    /// The key that authenticated the action; null for signups, leak reports and operators.
    actor_key_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// What the event changed, by name: `account.updated` lists its `fields` (never their
    /// values), `account.plan_changed` gives `from` and `to`, a `key.revoked` by closing
    /// gives its `reason`; empty for the others.
    #[schema(value_type = Object, example = json!({"fields": ["name"]}))]
    details: serde_json::Map<String, serde_json::Value>,
}

impl From<&AuditEvent> for AuditEventDto {
    fn from(event: &AuditEvent) -> Self {
        let r = &event.record;
        Self {
            id: audit_event_id(event.id),
            action: r.action.as_str(),
            target_id: r.target_id.clone(),
            actor_key_id: r.actor_key_id.as_ref().map(ToString::to_string),
            client_ip: r.meta.client_ip().map(|ip| ip.to_string()),
            user_agent: r.meta.user_agent().map(str::to_owned),
            created_at: rfc3339(r.at),
            details: r
                .details
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
                .collect(),
        }
    }
}

/// A page of the audit trail, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditLogPage)]
pub(crate) struct AuditPageDto {
    events: Vec<AuditEventDto>,
    /// Older events exist: ask again with `before` = the last event's id.
    has_more: bool,
}

impl From<&AuditPage> for AuditPageDto {
    fn from(page: &AuditPage) -> Self {
        Self { events: page.events.iter().map(AuditEventDto::from).collect(), has_more: page.has_more }
    }
}

envelope_schemas! {
    /// A page of the audit trail.
    AuditLogPageResponse => AuditPageDto;
}

/// `GET /v1/account/audit-log` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only events older than this event id (from the previous page).
    #[param(pattern = "^evt_[0-9]+$", example = "evt_42")]
    before: Option<String>,
}

impl From<AuditLogError> for ApiError {
    fn from(e: AuditLogError) -> Self {
        match e {
            AuditLogError::InsufficientScope(e) => e.into(),
            AuditLogError::InvalidLimit => Self::validation("limit", "must be a whole number from 1 to 100"),
            AuditLogError::InvalidCursor => Self::validation("before", "must be an event id such as evt_42"),
            AuditLogError::Store(cause) => cause.into(),
        }
    }
}

/// The organization's audit trail, newest first, a page at a time. Needs the `read` scope.
#[utoipa::path(tag = "accounts", operation_id = "list_audit_events", security(("bearer" = [])),
    params(AuditQuery),
    responses(
    (status = 200, description = "A page of events", body = AuditLogPageResponse),
    (status = 400, description = "Invalid limit or cursor", body = ErrorBody),
    AuthErrors, Unavailable,
))]
#[get("/v1/account/audit-log")]
pub(crate) async fn audit_log(
    Caller { principal: caller, service }: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Parsed after the key is judged, whether or not judging it read the store: the
    // documented order (key, then query string) holds on every path.
    let query = Query::<AuditQuery>::from_query(req.query_string()).map_err(|e| crate::body::query_error(&e))?;
    let page = service.audit_log(&caller, query.before.as_deref(), query.limit).await?;
    Ok(ok(AuditPageDto::from(&page)))
}
