//! The writes of an organization's own row in SQL: a change of account or its closing,
//! decided by the domain on the rows as the write's transaction finds them, and erasure.

use account_domain::{
    day_text, revoked_by_closing, AccountOpError, AccountWriteDecision, ApiKey, AuditAction, AuditDetails, AuditRecord,
    EraseOutcome, FoundInAccountWrite, Organization,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::upsert::excluded;

use crate::account_repository::load_organization;
use crate::audit_trail;
use crate::change_feed::publish_change;
use crate::connection::DbConnection;
use crate::key_repository::lock_organization;
use crate::repo_error::{is_foreign_key_violation, is_unique_violation, RepoError};
use crate::rows::{to_micros, ApiKeyRow};
use crate::schema::{
    api_keys, audit_events, organizations, plan_periods, webhook_attempts, webhook_deliveries, webhook_endpoints,
};

/// [`account_domain::AccountRepository::write_account`], inside the caller's transaction.
pub(crate) fn write_account(
    conn: &mut DbConnection,
    org: &str,
    actor: &str,
    decide: &AccountWriteDecision,
) -> Result<Organization, RepoError> {
    let (write, organization) = decide_on_caller(conn, org, actor, decide)?;
    let nothing = write.name.is_none() && write.email.is_none() && write.plan.is_none() && write.close.is_none();
    if nothing && write.events.is_empty() {
        return Ok(organization);
    }
    let changes = diesel::update(organizations::table.find(org));
    let outcome = changes
        .set((
            write.name.as_ref().map(|name| organizations::name.eq(name.as_str().to_owned())),
            write.email.as_ref().map(|email| organizations::email.eq(email.as_str().to_owned())),
            write.email.as_ref().map(|email| organizations::email_normalized.eq(email.normalized())),
            write.plan.as_ref().map(|plan| organizations::plan_id.eq(plan.to_string())),
            write.close.map(|at| organizations::closed_at.eq(Some(to_micros(at)))),
        ))
        .execute(conn);
    match outcome {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(RepoError::EmailTaken),
        Err(e) if is_foreign_key_violation(&e) => return Err(RepoError::UnknownPlan),
        Err(e) => return Err(e.into()),
    }
    if let Some(plan) = &write.plan {
        // The last plan of a day holds for the whole day.
        let period = diesel::insert_into(plan_periods::table)
            .values((
                plan_periods::org_id.eq(org),
                plan_periods::start_day.eq(day_text(write.today)),
                plan_periods::plan_id.eq(plan.to_string()),
            ))
            .on_conflict((plan_periods::org_id, plan_periods::start_day))
            .do_update()
            .set(plan_periods::plan_id.eq(excluded(plan_periods::plan_id)));
        match conn {
            DbConnection::Postgres(pg) => period.execute(pg)?,
            DbConnection::Sqlite(lite) => period.execute(lite)?,
        };
    }
    if let Some(at) = write.close {
        revoke_all(conn, org, &write.events, at)?;
    }
    for event in &write.events {
        audit_trail::record(conn, event)?;
    }
    publish_change(conn, None, Some(org))?;
    Ok(load_organization(conn, org)?.ok_or_else(|| anyhow::anyhow!("the organization written is gone"))?)
}

/// The start of every write decided on its calling key and its organization as its own
/// transaction finds them (an account write, a webhook endpoint's): locks the
/// organization's row first (as every key write takes it), then reads the caller's key
/// (locked on PostgreSQL), and asks `decide`; its refusal is returned as it is, before
/// anything is written. An unknown organization is `Closed`.
pub(crate) fn decide_on_caller<T>(
    conn: &mut DbConnection,
    org: &str,
    actor: &str,
    decide: &AccountWriteDecision<T>,
) -> Result<(T, Organization), RepoError> {
    if lock_organization(conn, org)?.is_none() {
        return Err(AccountOpError::Closed.into());
    }
    let organization = load_organization(conn, org)?.ok_or(AccountOpError::Closed)?;
    let query = api_keys::table.find(actor).filter(api_keys::org_id.eq(org));
    let row: Option<ApiKeyRow> = match conn {
        DbConnection::Postgres(pg) => query.select(ApiKeyRow::as_select()).for_no_key_update().first(pg).optional()?,
        DbConnection::Sqlite(lite) => query.select(ApiKeyRow::as_select()).first(lite).optional()?,
    };
    let actor_key = row.map(ApiKey::try_from).transpose()?;
    let decided = decide(FoundInAccountWrite {
        actor: actor_key.as_ref().map(|key| (key, organization.is_active)),
        organization: &organization,
    })?;
    Ok((decided, organization))
}

/// Revokes every key of `org` not revoked yet, at `at`, each with its `key.revoked` event
/// (reason `account_closed`, the closing event's request data) and its change published.
fn revoke_all(
    conn: &mut DbConnection,
    org: &str,
    events: &[AuditRecord],
    at: time::OffsetDateTime,
) -> Result<(), RepoError> {
    let open: Vec<(String, String)> = api_keys::table
        .filter(api_keys::org_id.eq(org))
        .filter(api_keys::revoked_at.is_null())
        .order(api_keys::id.asc())
        .select((api_keys::id, api_keys::key_hash))
        .load(conn)?;
    diesel::update(api_keys::table.filter(api_keys::org_id.eq(org)).filter(api_keys::revoked_at.is_null()))
        .set(api_keys::revoked_at.eq(Some(to_micros(at))))
        .execute(conn)?;
    let closing = events.iter().find(|e| e.action == AuditAction::AccountClosed);
    for (id, hash) in open {
        publish_change(conn, Some(&hash), None)?;
        if let Some(closing) = closing {
            let event = AuditRecord {
                action: AuditAction::KeyRevoked,
                target_id: Some(id),
                details: revoked_by_closing(AuditDetails::none()),
                ..closing.clone()
            };
            audit_trail::record(conn, &event)?;
        }
    }
    Ok(())
}

/// [`account_domain::AccountRepository::erase_organization`], inside the caller's transaction.
pub(crate) fn erase(conn: &mut DbConnection, org: &str, audit: &AuditRecord) -> Result<EraseOutcome, RepoError> {
    let Some(organization) = load_organization(conn, org)? else { return Ok(EraseOutcome::NotFound) };
    if organization.closed_at.is_none() {
        return Ok(EraseOutcome::StillOpen);
    }
    let erased = account_domain::EmailAddress::erased(&organization.id).as_str().to_owned();
    diesel::update(organizations::table.find(org))
        .set((
            organizations::name.eq(&erased),
            organizations::email.eq(&erased),
            organizations::email_normalized.eq(&erased),
        ))
        .execute(conn)?;
    // Keys keep their ids (usage and audit refer to them), not what their owner wrote.
    diesel::update(api_keys::table.filter(api_keys::org_id.eq(org)))
        .set((api_keys::name.eq("erased"), api_keys::allowed_ips.eq(None::<String>)))
        .execute(conn)?;
    diesel::update(audit_events::table.filter(audit_events::org_id.eq(org)))
        .set((audit_events::client_ip.eq(None::<String>), audit_events::user_agent.eq(None::<String>)))
        .execute(conn)?;
    // Its webhook endpoints go with their sealed secrets and deliveries (URLs are personal).
    let endpoints = webhook_endpoints::table.filter(webhook_endpoints::org_id.eq(org)).select(webhook_endpoints::id);
    diesel::delete(webhook_attempts::table.filter(webhook_attempts::endpoint_id.eq_any(endpoints))).execute(conn)?;
    diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::org_id.eq(org))).execute(conn)?;
    diesel::delete(webhook_endpoints::table.filter(webhook_endpoints::org_id.eq(org))).execute(conn)?;
    audit_trail::record(conn, audit)?;
    publish_change(conn, None, Some(org))?;
    Ok(EraseOutcome::Erased(load_organization(conn, org)?.ok_or_else(|| anyhow::anyhow!("erased organization gone"))?))
}

/// On SQLite, a checkpoint that empties the write-ahead log (the pages as they were before
/// the erasure); nothing to do on PostgreSQL, whose dumps hold live rows only.
pub(crate) fn forget_old_pages(conn: &mut DbConnection) -> Result<(), RepoError> {
    if let DbConnection::Sqlite(_) = conn {
        conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")?;
    }
    Ok(())
}
