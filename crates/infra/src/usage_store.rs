//! Key usage in SQL: counts added per key, UTC day and outcome, each writer's batch applied once.

use account_domain::{
    day_text, parse_day, BilledCounts, Environment, KeyId, KeyUsageRow, OrgId, OrganizationMonth, Plan, PlanChange,
    UsageBatch, UsageCount, UsageRecorded, UseOutcome, ValidUses,
};
use anyhow::Context as _;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel::upsert::excluded;
use time::{Date, OffsetDateTime};

use crate::connection::DbConnection;
use crate::repo_error::RepoError;
use crate::rows::{from_micros, to_micros, PlanRow};
use crate::schema::{api_keys, key_usage, organizations, plan_periods, plans, usage_writers};

/// Key ids bound per statement when checking which keys exist: under both backends' limits.
const IDS_PER_QUERY: usize = 500;

/// Writes the batch unless its writer already applied this sequence, leaving out the keys
/// that no longer exist; returns those keys (none when the batch had been applied).
pub(crate) fn record(
    conn: &mut DbConnection,
    batch: &UsageBatch,
    now: OffsetDateTime,
) -> Result<UsageRecorded, RepoError> {
    let sequence = i64::try_from(batch.sequence).context("usage batch sequence")?;
    // Claims the sequence in one statement. On PostgreSQL a first attempt still open holds the
    // writer's row: this waits for it, then compares with what it committed, so a retry racing
    // it is applied once (a read-then-write would see the old sequence and apply it twice).
    let claim = diesel::insert_into(usage_writers::table)
        .values((
            usage_writers::writer.eq(&batch.writer),
            usage_writers::sequence.eq(sequence),
            usage_writers::written_at.eq(to_micros(now)),
        ))
        .on_conflict(usage_writers::writer)
        .do_update()
        .set((usage_writers::sequence.eq(sequence), usage_writers::written_at.eq(to_micros(now))));
    let claim = diesel::query_dsl::methods::FilterDsl::filter(claim, usage_writers::sequence.lt(sequence));
    let claimed = match conn {
        DbConnection::Postgres(pg) => claim.execute(pg)?,
        DbConnection::Sqlite(lite) => claim.execute(lite)?,
    };
    if claimed == 0 {
        return Ok(UsageRecorded::default());
    }
    let existing = existing_keys(conn, batch)?;
    let exists = |id: &KeyId| existing.binary_search_by(|e| e.as_str().cmp(id.as_str())).is_ok();
    // In ascending key id order, as every key write locks keys, so that a flush and a key
    // write (or two instances' flushes) wait for each other instead of deadlocking. One
    // prepared statement, its values bound, per key and per count.
    let mut last_used: Vec<_> = batch.last_used.iter().filter(|(id, _)| exists(id)).collect();
    last_used.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    // A row another transaction holds is not waited for: its last use waits for a later
    // batch, so that one held row (an operator's open transaction) holds back nobody else.
    let free = free_rows(conn, &last_used)?;
    let (last_used, held): (Vec<_>, Vec<_>) =
        last_used.into_iter().partition(|(id, _)| free.binary_search_by(|f| f.as_str().cmp(id.as_str())).is_ok());
    let mut counts: Vec<_> = batch.counts.iter().filter(|c| exists(&c.key_id)).collect();
    counts.sort_unstable_by(|a, b| {
        (a.key_id.as_str(), a.day, a.outcome.as_str()).cmp(&(b.key_id.as_str(), b.day, b.outcome.as_str()))
    });
    for (id, at) in last_used {
        let at = to_micros(*at);
        diesel::update(
            api_keys::table
                .filter(api_keys::id.eq(id.as_str()))
                .filter(api_keys::last_used_at.is_null().or(api_keys::last_used_at.lt(at))),
        )
        .set(api_keys::last_used_at.eq(at))
        .execute(conn)?;
    }
    for count in counts {
        // Added to what other instances wrote, never overwriting it.
        let add = diesel::insert_into(key_usage::table)
            .values((
                key_usage::key_id.eq(count.key_id.as_str()),
                key_usage::day.eq(day_text(count.day)),
                key_usage::outcome.eq(count.outcome.as_str()),
                key_usage::uses.eq(count.count),
            ))
            .on_conflict((key_usage::key_id, key_usage::day, key_usage::outcome))
            .do_update()
            .set(key_usage::uses.eq(key_usage::uses + excluded(key_usage::uses)));
        match conn {
            DbConnection::Postgres(pg) => add.execute(pg)?,
            DbConnection::Sqlite(lite) => add.execute(lite)?,
        };
    }
    let mut missing: Vec<KeyId> = batch
        .last_used
        .iter()
        .map(|(id, _)| id)
        .chain(batch.counts.iter().map(|c| &c.key_id))
        .filter(|id| !exists(id))
        .cloned()
        .collect();
    missing.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    missing.dedup();
    let deferred = held.into_iter().cloned().collect();
    Ok(UsageRecorded { missing, deferred })
}

/// Of the keys whose last use is to be written (sorted), those whose rows no other
/// transaction holds, locked for the update in that order (`SKIP LOCKED` on PostgreSQL); on
/// SQLite the writer holds the whole file, so all of them.
fn free_rows(conn: &mut DbConnection, last_used: &[&(KeyId, OffsetDateTime)]) -> Result<Vec<String>, RepoError> {
    let ids: Vec<&str> = last_used.iter().map(|(id, _)| id.as_str()).collect();
    let DbConnection::Postgres(pg) = conn else { return Ok(ids.into_iter().map(str::to_owned).collect()) };
    let mut free = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let query = api_keys::table.filter(api_keys::id.eq_any(chunk)).order(api_keys::id.asc()).select(api_keys::id);
        free.extend(query.for_no_key_update().skip_locked().load::<String>(pg)?);
    }
    free.sort_unstable();
    Ok(free)
}

/// The batch's keys that exist, sorted. On PostgreSQL each is held `FOR KEY SHARE` until the
/// write commits, so a key deleted meanwhile waits for it (and takes its counts along)
/// instead of failing the batch on the foreign key; the lock leaves `last_used_at` updates
/// free. SQLite's writer holds the whole file already.
fn existing_keys(conn: &mut DbConnection, batch: &UsageBatch) -> Result<Vec<String>, RepoError> {
    let mut ids: Vec<&str> = batch
        .last_used
        .iter()
        .map(|(id, _)| id.as_str())
        .chain(batch.counts.iter().map(|c| c.key_id.as_str()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut existing = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_QUERY) {
        // In id order, so that two writers lock shared keys in the same order.
        let query = api_keys::table.filter(api_keys::id.eq_any(chunk)).order(api_keys::id.asc()).select(api_keys::id);
        let found: Vec<String> = match conn {
            DbConnection::Postgres(pg) => query.for_key_share().load(pg)?,
            DbConnection::Sqlite(lite) => query.load(lite)?,
        };
        existing.extend(found);
    }
    existing.sort_unstable();
    Ok(existing)
}

/// The stored counts of the organization's keys from `from` to `to`, with each key's name.
pub(crate) fn of_organization(
    conn: &mut DbConnection,
    org: &OrgId,
    from: Date,
    to: Date,
) -> Result<Vec<KeyUsageRow>, RepoError> {
    let rows: Vec<(String, String, String, i64, String, String)> = key_usage::table
        .inner_join(api_keys::table)
        .filter(api_keys::org_id.eq(org.as_str()))
        .filter(key_usage::day.between(day_text(from), day_text(to)))
        .select((
            key_usage::key_id,
            key_usage::day,
            key_usage::outcome,
            key_usage::uses,
            api_keys::name,
            api_keys::environment,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(|(key_id, day, outcome, uses, name, environment)| {
            let count = UsageCount {
                key_id: KeyId::new(&key_id).context("stored key id")?,
                day: parse_day(&day).context("stored usage day")?,
                outcome: UseOutcome::parse(&outcome).context("stored usage outcome")?,
                count: uses,
            };
            let environment = Environment::new(&environment).context("stored environment")?;
            Ok(KeyUsageRow { count, key_name: name, environment })
        })
        .collect::<anyhow::Result<_>>()
        .map_err(RepoError::from)
}

#[derive(Debug, QueryableByName)]
struct DaySum {
    #[diesel(sql_type = Text)]
    org_id: String,
    #[diesel(sql_type = Text)]
    day: String,
    #[diesel(sql_type = Text)]
    environment: String,
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = BigInt)]
    uses: i64,
}

/// Every organization that existed from `from` to `to`, with its plan changes and its
/// billed counts by day.
pub(crate) fn by_organization(
    conn: &mut DbConnection,
    from: Date,
    to: Date,
) -> Result<Vec<OrganizationMonth>, RepoError> {
    let start = to_micros(from.midnight().assume_utc());
    let end = to_micros((to + time::Duration::days(1)).midnight().assume_utc());
    let orgs: Vec<(String, Option<i64>)> = organizations::table
        .filter(organizations::created_at.lt(end))
        .filter(organizations::closed_at.is_null().or(organizations::closed_at.ge(start)))
        .order(organizations::id.asc())
        .select((organizations::id, organizations::closed_at))
        .load(conn)?;
    let mut months: Vec<OrganizationMonth> = orgs
        .into_iter()
        .map(|(org_id, closed_at)| {
            Ok(OrganizationMonth {
                org_id: OrgId::new(&org_id).context("stored organization id")?,
                plan_changes: Vec::new(),
                closed_on: closed_at.map(from_micros).transpose()?.map(|at| at.date()),
                days: Vec::new(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let find = |months: &[OrganizationMonth], org: &str| months.binary_search_by(|m| m.org_id.as_str().cmp(org)).ok();
    let changes: Vec<(String, String, PlanRow)> = plan_periods::table
        .inner_join(plans::table)
        .filter(plan_periods::start_day.le(day_text(to)))
        .order((plan_periods::org_id.asc(), plan_periods::start_day.asc()))
        .select((plan_periods::org_id, plan_periods::start_day, PlanRow::as_select()))
        .load(conn)?;
    for (org, day, plan) in changes {
        let Some(at) = find(&months, &org) else { continue };
        let start = parse_day(&day).with_context(|| format!("stored plan period day {day:?}"))?;
        months[at].plan_changes.push(PlanChange { start, plan: Plan::try_from(plan)? });
    }
    // Summed by the database: one row per organization, day, environment and outcome. The
    // cast keeps the sum a BIGINT on PostgreSQL (a plain SUM of BIGINT is NUMERIC).
    const SUMS: &str = "SELECT k.org_id AS org_id, u.day AS day, k.environment AS environment, \
                        u.outcome AS outcome, CAST(SUM(u.uses) AS BIGINT) AS uses \
                        FROM key_usage u JOIN api_keys k ON k.id = u.key_id \
                        WHERE u.day >= {from} AND u.day <= {to} \
                        GROUP BY k.org_id, u.day, k.environment, u.outcome ORDER BY k.org_id, u.day";
    let (from, to) = (day_text(from), day_text(to));
    let sums: Vec<DaySum> = match conn {
        DbConnection::Postgres(pg) => diesel::sql_query(SUMS.replace("{from}", "$1").replace("{to}", "$2"))
            .bind::<Text, _>(&from)
            .bind::<Text, _>(&to)
            .load(pg)?,
        DbConnection::Sqlite(lite) => diesel::sql_query(SUMS.replace("{from}", "?").replace("{to}", "?"))
            .bind::<Text, _>(&from)
            .bind::<Text, _>(&to)
            .load(lite)?,
    };
    for sum in sums {
        let Some(at) = find(&months, &sum.org_id) else { continue };
        let (Some(outcome), Ok(environment)) = (UseOutcome::parse(&sum.outcome), Environment::new(&sum.environment))
        else {
            continue;
        };
        let day = parse_day(&sum.day).with_context(|| format!("stored usage day {:?}", sum.day))?;
        let days = &mut months[at].days;
        if days.last().is_none_or(|d| d.day != Some(day)) {
            days.push(BilledCounts { day: Some(day), ..BilledCounts::default() });
        }
        if let Some(counts) = days.last_mut() {
            counts.add(environment, outcome, sum.uses);
        }
    }
    Ok(months)
}

/// Deletes the counts of days before `before`, and the writers not heard of since.
pub(crate) fn prune(conn: &mut DbConnection, before: Date) -> Result<usize, RepoError> {
    let deleted = diesel::delete(key_usage::table.filter(key_usage::day.lt(day_text(before)))).execute(conn)?;
    let cutoff = to_micros(before.midnight().assume_utc());
    diesel::delete(usage_writers::table.filter(usage_writers::written_at.lt(cutoff))).execute(conn)?;
    Ok(deleted)
}

// The quota's sums group by a key's organization and environment and a count's day.
diesel::allow_columns_to_appear_in_same_group_by_clause!(api_keys::org_id, api_keys::environment, key_usage::day);

/// The `valid` counts of the keys of `orgs` from `from` on, summed by organization,
/// environment and day (the database sums; one statement per [`IDS_PER_QUERY`]
/// organizations). Served by `key_usage`'s primary key through `api_keys (org_id, …)`.
pub(crate) fn valid_since(conn: &mut DbConnection, orgs: &[OrgId], from: Date) -> Result<Vec<ValidUses>, RepoError> {
    let from = day_text(from);
    let ids: Vec<&str> = orgs.iter().map(OrgId::as_str).collect();
    let mut found = Vec::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        // The cast keeps the sum a BIGINT on PostgreSQL (a plain SUM of BIGINT is NUMERIC).
        let sum = diesel::dsl::sql::<BigInt>("CAST(SUM(key_usage.uses) AS BIGINT)");
        let rows: Vec<(String, String, String, i64)> = key_usage::table
            .inner_join(api_keys::table)
            .filter(api_keys::org_id.eq_any(chunk))
            .filter(key_usage::outcome.eq(UseOutcome::VALID.as_str()))
            .filter(key_usage::day.ge(&from))
            .group_by((api_keys::org_id, api_keys::environment, key_usage::day))
            .select((api_keys::org_id, api_keys::environment, key_usage::day, sum))
            .load(conn)?;
        for (org_id, environment, day, count) in rows {
            found.push(ValidUses {
                org_id: OrgId::new(&org_id).context("stored organization id")?,
                environment: Environment::new(&environment).context("stored environment")?,
                day: parse_day(&day).context("stored usage day")?,
                count,
            });
        }
    }
    Ok(found)
}
