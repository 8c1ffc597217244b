//! Organizations and plans in SQL.

use account_domain::{
    day_text, parse_day, AccountOpError, AccountRepository, AccountWriteDecision, AuditEvent, AuditRecord,
    CreateOrganizationError, EraseOutcome, KeyId, NewApiKey, NewOrganization, OrgId, Organization, OverLimit, Plan,
    PlanChange, PlanId,
};
use async_trait::async_trait;
use diesel::prelude::*;

use crate::account_writes;
use crate::audit_trail;
use crate::change_feed::publish_change;
use crate::connection::DbConnection;
use crate::database::Database;
use crate::repo_error::{is_foreign_key_violation, is_unique_violation, RepoError};
use crate::rows::{ApiKeyRow, OrganizationRow, PlanRow};
use crate::schema::{api_keys, organizations, plan_periods, plans};
use crate::unique_row::unique_row;

#[derive(Debug, Clone)]
pub struct SqlAccountRepository {
    db: Database,
}

impl SqlAccountRepository {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

pub(crate) fn load_organization(conn: &mut DbConnection, id: &str) -> Result<Option<Organization>, RepoError> {
    let row = organizations::table
        .inner_join(plans::table)
        .filter(organizations::id.eq(id))
        .select((OrganizationRow::as_select(), PlanRow::as_select()))
        .first::<(OrganizationRow, PlanRow)>(conn)
        .optional()?;
    Ok(row.map(|(org, plan)| org.into_domain(plan)).transpose()?)
}

#[async_trait]
impl AccountRepository for SqlAccountRepository {
    async fn create_organization(
        &self,
        org: &NewOrganization,
        first_key: &NewApiKey,
        audit: &AuditRecord,
    ) -> Result<Organization, CreateOrganizationError> {
        let audit = audit.clone();
        let org_row = OrganizationRow::from(org);
        let key_row = ApiKeyRow::from(first_key);
        let id = org_row.id.clone();
        let first_period = (id.clone(), day_text(org.created_at.date()), org_row.plan_id.clone());
        let outcome = self
            .db
            .write(move |conn| {
                diesel::insert_into(organizations::table).values(&org_row).execute(conn).map_err(|e| {
                    if is_unique_violation(&e) {
                        RepoError::EmailTaken
                    } else if is_foreign_key_violation(&e) {
                        RepoError::UnknownPlan
                    } else {
                        RepoError::Query(e)
                    }
                })?;
                diesel::insert_into(api_keys::table).values(&key_row).execute(conn)?;
                let (org_id, start_day, plan_id) = &first_period;
                diesel::insert_into(plan_periods::table)
                    .values((
                        plan_periods::org_id.eq(org_id),
                        plan_periods::start_day.eq(start_day),
                        plan_periods::plan_id.eq(plan_id),
                    ))
                    .execute(conn)?;
                audit_trail::record(conn, &audit)?;
                load_organization(conn, &id)?
                    .ok_or_else(|| RepoError::Other(anyhow::anyhow!("inserted organization not found")))
            })
            .await;
        outcome.map_err(|e| match e {
            RepoError::EmailTaken => CreateOrganizationError::EmailTaken,
            RepoError::UnknownPlan => CreateOrganizationError::UnknownPlan,
            other => CreateOrganizationError::Store(other.into_store_error("could not create the organization")),
        })
    }

    async fn find_organization(&self, id: &OrgId) -> account_domain::StoreResult<Option<Organization>> {
        let id = id.to_string();
        self.db
            .read(move |conn| load_organization(conn, &id))
            .await
            .map_err(|e| e.into_store_error("could not read the organization"))
    }

    async fn find_plan(&self, id: &PlanId) -> account_domain::StoreResult<Option<Plan>> {
        let id = id.to_string();
        self.db
            .read(move |conn| {
                let row = unique_row(plans::table.find(id).select(PlanRow::as_select()), conn)?;
                Ok(row.map(Plan::try_from).transpose()?)
            })
            .await
            .map_err(|e| e.into_store_error("could not read the plan"))
    }

    async fn list_plans(&self) -> account_domain::StoreResult<Vec<Plan>> {
        self.db
            .read(|conn| {
                let rows = plans::table
                    .order((plans::base_price_cents.asc(), plans::id.asc()))
                    .select(PlanRow::as_select())
                    .load(conn)?;
                Ok(rows.into_iter().map(Plan::try_from).collect::<anyhow::Result<Vec<_>>>()?)
            })
            .await
            .map_err(|e| e.into_store_error("could not list the plans"))
    }

    async fn set_plan_included(&self, id: &PlanId, included: i64) -> account_domain::StoreResult<Option<Plan>> {
        let id = id.to_string();
        self.db
            .write(move |conn| {
                let changed = diesel::update(plans::table.find(&id))
                    .set(plans::included_requests_per_month.eq(included))
                    .execute(conn)?;
                if changed == 0 {
                    return Ok(None);
                }
                // Every cached credential carries its plan: all of them are forgotten.
                publish_change(conn, None, None)?;
                let row = plans::table.find(&id).select(PlanRow::as_select()).first(conn)?;
                Ok(Some(Plan::try_from(row)?))
            })
            .await
            .map_err(|e| e.into_store_error("could not change the plan"))
    }

    async fn set_plan_over_limit(
        &self,
        id: &PlanId,
        over_limit: OverLimit,
    ) -> account_domain::StoreResult<Option<Plan>> {
        let id = id.to_string();
        self.db
            .write(move |conn| {
                let changed = diesel::update(plans::table.find(&id))
                    .set(plans::over_limit.eq(over_limit.as_str()))
                    .execute(conn)?;
                if changed == 0 {
                    return Ok(None);
                }
                // Every cached credential carries its plan: all of them are forgotten.
                publish_change(conn, None, None)?;
                let row = plans::table.find(&id).select(PlanRow::as_select()).first(conn)?;
                Ok(Some(Plan::try_from(row)?))
            })
            .await
            .map_err(|e| e.into_store_error("could not change the plan"))
    }

    async fn write_account(
        &self,
        org: &OrgId,
        actor: &KeyId,
        decide: AccountWriteDecision,
    ) -> Result<Organization, AccountOpError> {
        let (org, actor) = (org.to_string(), actor.to_string());
        self.db
            .write(move |conn| account_writes::write_account(conn, &org, &actor, &decide))
            .await
            .map_err(|e| e.into_account_error("could not change the account"))
    }

    async fn erase_organization(&self, org: &OrgId, audit: &AuditRecord) -> account_domain::StoreResult<EraseOutcome> {
        let (org, audit) = (org.to_string(), audit.clone());
        let outcome = self
            .db
            .write(move |conn| account_writes::erase(conn, &org, &audit))
            .await
            .map_err(|e| e.into_store_error("could not erase the organization"))?;
        if matches!(outcome, EraseOutcome::Erased(_)) {
            // SQLite's write-ahead log still holds the pages as they were: copy them back
            // into the file (now zeroed where data was erased) and empty the log.
            self.db
                .read(account_writes::forget_old_pages)
                .await
                .map_err(|e| e.into_store_error("could not checkpoint the erasure"))?;
        }
        Ok(outcome)
    }

    async fn plan_changes(&self, org: &OrgId) -> account_domain::StoreResult<Vec<PlanChange>> {
        let org = org.to_string();
        self.db
            .read(move |conn| plan_changes_of(conn, &org))
            .await
            .map_err(|e| e.into_store_error("could not read the plan periods"))
    }

    async fn set_organization_active(
        &self,
        id: &OrgId,
        active: bool,
        audit: &AuditRecord,
    ) -> account_domain::StoreResult<Option<Organization>> {
        let id = id.to_string();
        let audit = audit.clone();
        self.db
            .write(move |conn| {
                // Only a row in the other state changes: of two operators racing, the one whose
                // update finds it already so records nothing.
                // A closed organization never changes again.
                let open = organizations::table.find(&id).filter(organizations::closed_at.is_null());
                let changed = diesel::update(open.filter(organizations::is_active.ne(active)))
                    .set(organizations::is_active.eq(active))
                    .execute(conn)?;
                if changed == 0 {
                    // Unknown, or already so: nothing to publish, nothing happened to audit.
                    return load_organization(conn, &id);
                }
                publish_change(conn, None, Some(&id))?;
                audit_trail::record(conn, &audit)?;
                load_organization(conn, &id)
            })
            .await
            .map_err(|e| e.into_store_error("could not change the organization"))
    }

    async fn list_audit_events(
        &self,
        org: &OrgId,
        before: Option<i64>,
        limit: u32,
    ) -> account_domain::StoreResult<Vec<AuditEvent>> {
        let org = org.to_string();
        self.db
            .read(move |conn| audit_trail::list(conn, &org, before, limit))
            .await
            .map_err(|e| e.into_store_error("could not read the audit trail"))
    }
}

/// The organization's plan changes, oldest first.
pub(crate) fn plan_changes_of(conn: &mut DbConnection, org: &str) -> Result<Vec<PlanChange>, RepoError> {
    let rows: Vec<(String, PlanRow)> = plan_periods::table
        .inner_join(plans::table)
        .filter(plan_periods::org_id.eq(org))
        .order(plan_periods::start_day.asc())
        .select((plan_periods::start_day, PlanRow::as_select()))
        .load(conn)?;
    let changes = rows
        .into_iter()
        .map(|(day, plan)| {
            let start = parse_day(&day).ok_or_else(|| anyhow::anyhow!("stored plan period day {day:?}"))?;
            Ok(PlanChange { start, plan: Plan::try_from(plan)? })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(changes)
}
