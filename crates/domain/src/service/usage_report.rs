//! The usage an organization reads, the monthly figures billing exports, and their upkeep.

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;
use time::{Date, Duration, OffsetDateTime};

use super::{AccountService, InsufficientScope, Principal};
use crate::model::{
    BilledPeriod, BillingMonth, Environment, KeyId, OrganizationMonth, OverLimit, Plan, PlanId, PlanPeriod, Scope,
    UsageCount, UsageDays, UseOutcome, VerificationCode,
};

/// Valid and refused verifications, and successful requests to the account API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub valid: i64,
    pub refused: i64,
    /// Requests to the account API's own routes: counted, never billed.
    pub account_api: i64,
}

impl UsageTotals {
    fn add(&mut self, outcome: UseOutcome, count: i64) {
        match outcome {
            UseOutcome::VALID => self.valid += count,
            UseOutcome::AccountApi => self.account_api += count,
            UseOutcome::Verified(_) => self.refused += count,
        }
    }
}

/// The current plan period: its valid verifications of live keys against what it includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthToDate {
    /// The later of the month's first day and the day the plan began.
    pub period_start: Date,
    pub valid: i64,
    /// The plan's included requests a month, prorated by the period's days (rounded down).
    pub included: i64,
    pub over_limit: OverLimit,
    /// A `block` plan whose period is used up: verification answers `quota_exceeded`.
    pub blocked: bool,
}

/// One day of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUsage {
    pub date: Date,
    pub totals: UsageTotals,
}

/// One key's verifications over a report's days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    pub key_id: KeyId,
    pub name: String,
    pub totals: UsageTotals,
    /// The refusals by reason, in [`VerificationCode`] order, zeros left out.
    pub refused_by_reason: Vec<(VerificationCode, i64)>,
}

/// What an organization used: `days` days ending today (UTC), and the current month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub from: Date,
    pub to: Date,
    pub total: UsageTotals,
    /// One entry per day, oldest first, zeros included.
    pub daily: Vec<DailyUsage>,
    /// Every key with a count in the range, busiest first.
    pub keys: Vec<KeyUsage>,
    /// The current plan period (test keys are not billed).
    pub month_to_date: MonthToDate,
}

#[derive(Debug, Error)]
pub enum UsageError {
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

#[derive(Debug, Error)]
pub enum SetPlanIncludedError {
    #[error("no plan has this id")]
    UnknownPlan,
    #[error("the requests a plan includes are a whole number from 0")]
    Negative,
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

/// How long counts are kept, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRetention(u32);

impl UsageRetention {
    pub const MIN: u32 = 92;
    pub const MAX: u32 = 3650;
    pub const DEFAULT: Self = Self(400);

    pub fn new(days: u32) -> Option<Self> {
        (Self::MIN..=Self::MAX).contains(&days).then_some(Self(days))
    }

    pub fn days(self) -> u32 {
        self.0
    }
}

impl AccountService {
    /// The caller's organization's usage over `days` days ending today (UTC). Needs `read`.
    /// Counts this instance has not written yet are included; other instances' are once
    /// they flush.
    pub async fn usage(&self, caller: &Principal, days: UsageDays) -> Result<UsageReport, UsageError> {
        self.authorize(caller, Scope::Read)?;
        let to = self.clock.now().date();
        let from = days.first_day(to);
        let period = self.plan_period(caller.organization(), to).await?;
        let read_from = from.min(period.start);
        // Read while no batch of this instance is being written: one in flight would be in
        // neither the store nor the counts not yet written.
        let read = self.keys.usage_of(caller.org_id(), read_from, to);
        let (stored, pending) = self.runtime.stored_and_pending(caller.org_id(), read_from, read).await?;
        let mut names: HashMap<KeyId, String> = HashMap::new();
        let mut counts: Vec<(UsageCount, Environment)> = Vec::with_capacity(stored.len());
        for row in stored {
            names.entry(row.count.key_id.clone()).or_insert(row.key_name);
            counts.push((row.count, row.environment));
        }
        counts.extend(pending);

        let mut report = UsageReport {
            from,
            to,
            total: UsageTotals::default(),
            daily: Vec::with_capacity(days.get() as usize),
            keys: Vec::new(),
            month_to_date: MonthToDate {
                period_start: period.start,
                valid: 0,
                included: period.included(),
                over_limit: period.plan.over_limit,
                blocked: false,
            },
        };
        let mut daily: BTreeMap<Date, UsageTotals> = BTreeMap::new();
        let mut by_key: HashMap<KeyId, (UsageTotals, BTreeMap<VerificationCode, i64>)> = HashMap::new();
        for (count, environment) in &counts {
            if count.day >= period.start && count.outcome == UseOutcome::VALID && *environment == Environment::Live {
                report.month_to_date.valid += count.count;
            }
            if count.day < from {
                continue;
            }
            report.total.add(count.outcome, count.count);
            daily.entry(count.day).or_default().add(count.outcome, count.count);
            let (totals, reasons) = by_key.entry(count.key_id.clone()).or_default();
            totals.add(count.outcome, count.count);
            if let Some(reason) = count.outcome.refusal() {
                *reasons.entry(reason).or_default() += count.count;
            }
        }
        let quota = &report.month_to_date;
        report.month_to_date.blocked = quota.over_limit == OverLimit::Block && quota.valid >= quota.included;
        let mut day = from;
        while day <= to {
            report.daily.push(DailyUsage { date: day, totals: daily.get(&day).copied().unwrap_or_default() });
            day += Duration::days(1);
        }
        for (key_id, (totals, reasons)) in by_key {
            if totals == UsageTotals::default() && reasons.values().all(|n| *n == 0) {
                continue;
            }
            let name = match names.remove(&key_id) {
                Some(name) => name,
                // Counted here and not written yet: the key's name comes from the store.
                None => self
                    .keys
                    .find_key(caller.org_id(), &key_id)
                    .await?
                    .map(|k| k.name.as_str().to_owned())
                    .unwrap_or_default(),
            };
            let refused_by_reason = reasons.into_iter().filter(|(_, n)| *n != 0).collect();
            report.keys.push(KeyUsage { key_id, name, totals, refused_by_reason });
        }
        report.keys.sort_by(|a, b| {
            let busy = |k: &KeyUsage| k.totals.valid + k.totals.refused + k.totals.account_api;
            busy(b).cmp(&busy(a)).then_with(|| a.key_id.as_str().cmp(b.key_id.as_str()))
        });
        Ok(report)
    }

    /// The billing lines of `month`: one per organization that existed during it and plan
    /// period of it (a change of plan splits the month; a closed organization's last period
    /// ends the day it closed), with the counts written so far, zeros included.
    pub async fn monthly_usage(&self, month: BillingMonth) -> crate::ports::StoreResult<Vec<BilledPeriod>> {
        let months = self.keys.monthly_usage(month.first_day(), month.last_day()).await?;
        Ok(months.iter().flat_map(|org| billed_periods(month, org)).collect())
    }

    /// Deletes the counts older than `retention` days; returns the rows deleted.
    pub async fn prune_usage(&self, retention: UsageRetention) -> crate::ports::StoreResult<usize> {
        let before = self.clock.now().date() - Duration::days(i64::from(retention.days()));
        self.keys.prune_usage(before).await
    }

    /// Sets the requests a month `plan_id` includes; every instance applies it within a second.
    pub async fn set_plan_included(&self, plan_id: &str, included: i64) -> Result<Plan, SetPlanIncludedError> {
        let plan_id = PlanId::new(plan_id).map_err(|_| SetPlanIncludedError::UnknownPlan)?;
        if included < 0 {
            return Err(SetPlanIncludedError::Negative);
        }
        let plan = self.accounts.set_plan_included(&plan_id, included).await?;
        plan.ok_or(SetPlanIncludedError::UnknownPlan)
    }
}

/// An organization's month split by plan period, each with the counts of its days.
fn billed_periods(month: BillingMonth, org: &OrganizationMonth) -> Vec<BilledPeriod> {
    PlanPeriod::of_month(month, &org.plan_changes, org.closed_on)
        .into_iter()
        .map(|period| {
            let mut counts = crate::model::BilledCounts::default();
            for day in org.days.iter().filter(|d| d.day.is_some_and(|day| period.start <= day && day <= period.end)) {
                counts.valid += day.valid;
                counts.refused += day.refused;
                counts.valid_test += day.valid_test;
            }
            BilledPeriod { org_id: org.org_id.clone(), period, counts }
        })
        .collect()
}

/// Whether a month's counts are final at `now`: the month is over and every instance has
/// flushed since (one flush interval after midnight UTC).
pub fn month_is_final(month: BillingMonth, now: OffsetDateTime, flush_interval: std::time::Duration) -> bool {
    let over_at = (month.last_day() + Duration::days(1)).midnight().assume_utc();
    now >= over_at + flush_interval
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyUsageRow;
    use crate::runtime::UseOf;
    use crate::service::test_support::*;
    use time::macros::date;

    fn row(key: &str, name: &str, day: Date, outcome: VerificationCode, count: i64, env: Environment) -> KeyUsageRow {
        let count =
            UsageCount { key_id: KeyId::new(key).expect("valid"), day, outcome: UseOutcome::Verified(outcome), count };
        KeyUsageRow { count, key_name: name.into(), environment: env }
    }

    #[tokio::test]
    async fn a_report_adds_stored_and_unwritten_counts_by_day_and_key_busiest_first() {
        // NOW is 2024-01-15: a 3-day window is the 13th to the 15th; the plan period began on
        // the 10th (a change from free to starter), 22 of January's 31 days.
        let mut ports = Ports::new();
        ports.accounts.expect_plan_changes().returning(|_| {
            let starter = Plan { included_requests_per_month: 3_100, over_limit: OverLimit::Bill, ..plan("starter") };
            Ok(vec![
                crate::model::PlanChange { start: date!(2023 - 12 - 01), plan: plan("free") },
                crate::model::PlanChange { start: date!(2024 - 01 - 10), plan: starter },
            ])
        });
        ports.keys.expect_usage_of().returning(|org, from, to| {
            assert_eq!((org.as_str(), from, to), ("org_caller", date!(2024 - 01 - 10), date!(2024 - 01 - 15)));
            let mut api = row("key_a", "A", date!(2024 - 01 - 14), VerificationCode::Valid, 3, Environment::Live);
            api.count.outcome = UseOutcome::AccountApi;
            Ok(vec![
                row("key_a", "A", date!(2024 - 01 - 02), VerificationCode::Valid, 100, Environment::Live),
                row("key_a", "A", date!(2024 - 01 - 13), VerificationCode::Valid, 5, Environment::Live),
                api,
                row("key_b", "B", date!(2024 - 01 - 13), VerificationCode::Revoked, 7, Environment::Live),
                row("key_b", "B", date!(2024 - 01 - 13), VerificationCode::Expired, 1, Environment::Live),
                row("key_t", "T", date!(2024 - 01 - 14), VerificationCode::Valid, 50, Environment::Test),
            ])
        });
        ports.keys.expect_find_key().returning(|org, id| Ok(Some(api_key(id.as_str(), org.as_str()))));
        let service = ports.service();
        let caller = principal(&["read"], Environment::Live);
        let (a, org) = (KeyId::new("key_a").expect("valid"), OrgId::new("org_caller").expect("valid"));
        service.runtime.record_use(
            UseOf { key: &a, org: &org, environment: Environment::Live },
            NOW,
            UseOutcome::VALID,
        );

        let report = service.usage(&caller, UsageDays::new(3).expect("valid")).await.expect("report");
        assert_eq!((report.from, report.to), (date!(2024 - 01 - 13), date!(2024 - 01 - 15)));
        assert_eq!(report.total, UsageTotals { valid: 56, refused: 8, account_api: 3 });
        let daily: Vec<_> = report.daily.iter().map(|d| (d.date.day(), d.totals.valid, d.totals.refused)).collect();
        assert_eq!(daily, [(13, 5, 8), (14, 50, 0), (15, 1, 0)]);
        let keys: Vec<_> = report.keys.iter().map(|k| (k.name.as_str(), k.totals.valid, k.totals.refused)).collect();
        assert_eq!(keys, [("T", 50, 0), ("A", 6, 0), ("B", 0, 8)]);
        assert_eq!(report.keys[2].refused_by_reason, [(VerificationCode::Revoked, 7), (VerificationCode::Expired, 1)]);
        // The period counts valid uses of live keys from the 10th: 5 stored and 1 unwritten;
        // the account API's requests and the test key's are not billed.
        let period = &report.month_to_date;
        assert_eq!((period.period_start, period.valid), (date!(2024 - 01 - 10), 6));
        assert_eq!((period.included, period.over_limit, period.blocked), (2_200, OverLimit::Bill, false));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_report_asked_while_this_instance_writes_its_counts_misses_none_of_them() {
        let mut ports = Ports::new();
        ports.accounts.expect_plan_changes().returning(|_| Ok(vec![]));
        let stored = std::sync::Arc::new(std::sync::Mutex::new(Vec::<KeyUsageRow>::new()));
        let (writing, written) = (stored.clone(), stored.clone());
        let (entered, entered_rx) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        // The write takes its time: the batch is neither in memory nor in the store meanwhile.
        ports.keys.expect_record_usage().times(1).returning(move |batch| {
            entered.send(()).expect("the test waits");
            go_rx.recv().expect("the test lets it commit");
            let rows = batch.counts.iter().map(|count| KeyUsageRow {
                count: count.clone(),
                key_name: "K".into(),
                environment: Environment::Live,
            });
            writing.lock().expect("store").extend(rows);
            Ok(UsageRecorded::default())
        });
        ports.keys.expect_usage_of().returning(move |_, _, _| Ok(written.lock().expect("store").clone()));
        let service = ports.service();
        let caller = principal(&["read"], Environment::Live);
        service.runtime.record_use(caller.use_of(), NOW, UseOutcome::VALID);
        let flushing = tokio::spawn({
            let service = service.clone();
            async move { service.flush_usage().await.map(|f| f.rows) }
        });
        tokio::task::spawn_blocking(move || entered_rx.recv()).await.expect("joined").expect("the write began");
        let reading = tokio::spawn({
            let service = service.clone();
            async move { service.usage(&caller, UsageDays::new(1).expect("valid")).await.map(|r| r.total.valid) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        go.send(()).expect("the write waits");
        assert_eq!(flushing.await.expect("joined").expect("flushed"), 2);
        assert_eq!(reading.await.expect("joined").expect("a report"), 1, "the use being written is shown");
    }

    #[tokio::test]
    async fn the_export_splits_a_month_at_each_plan_change_with_its_days_counts() {
        let mut ports = Ports::new();
        ports.keys.expect_monthly_usage().returning(|from, to| {
            assert_eq!((from, to), (date!(2024 - 01 - 01), date!(2024 - 01 - 31)));
            let day = |d: Date, valid| crate::model::BilledCounts { day: Some(d), valid, refused: 1, valid_test: 2 };
            Ok(vec![OrganizationMonth {
                org_id: OrgId::new("org_a").expect("valid"),
                plan_changes: vec![
                    crate::model::PlanChange { start: date!(2023 - 11 - 03), plan: plan("free") },
                    crate::model::PlanChange {
                        start: date!(2024 - 01 - 11),
                        plan: Plan { base_price_cents: 3_100, ..plan("pro") },
                    },
                ],
                closed_on: None,
                days: vec![day(date!(2024 - 01 - 10), 5), day(date!(2024 - 01 - 11), 7), day(date!(2024 - 01 - 31), 1)],
            }])
        });
        let lines = ports.service().monthly_usage(BillingMonth::parse("2024-01").expect("valid")).await.expect("read");
        let summary: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.period.plan.id.as_str(),
                    l.period.start.day(),
                    l.period.end.day(),
                    l.counts.valid,
                    l.counts.refused,
                    l.counts.valid_test,
                    l.period.included(),
                    l.period.base_price_cents(),
                )
            })
            .collect();
        // 10 days of free (10,000 a month: 3,225), 21 days of pro (3,100 cents: 2,100).
        assert_eq!(summary, [("free", 1, 10, 5, 1, 2, 3_225, 0), ("pro", 11, 31, 8, 2, 4, 6_774, 2_100)]);
    }

    #[tokio::test]
    async fn a_report_needs_read() {
        let service = Ports::new().service();
        let writer = principal(&["write"], Environment::Live);
        assert!(matches!(service.usage(&writer, UsageDays::DEFAULT).await, Err(UsageError::InsufficientScope(_))));
    }

    #[test]
    fn a_month_is_final_one_flush_interval_after_it_ends() {
        let nov = BillingMonth::parse("2026-11").expect("valid");
        let flush = std::time::Duration::from_secs(10);
        assert!(!month_is_final(nov, time::macros::datetime!(2026-11-30 23:59 UTC), flush));
        assert!(!month_is_final(nov, time::macros::datetime!(2026-12-01 00:00:09 UTC), flush));
        assert!(month_is_final(nov, time::macros::datetime!(2026-12-01 00:00:10 UTC), flush));
    }
}
