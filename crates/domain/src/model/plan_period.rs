//! Plan periods: which plan an organization had on which days of a month, and a period's
//! share of what its plan includes and costs.

use time::Date;

use super::{BillingMonth, Plan};

/// An organization's plan from a UTC day on (a signup, or a change of plan: the last
/// change of a day holds for that whole day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChange {
    pub start: Date,
    pub plan: Plan,
}

/// Days of one month under one plan, `start` to `end` inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPeriod {
    pub plan: Plan,
    pub start: Date,
    pub end: Date,
    month_days: i64,
}

impl PlanPeriod {
    /// The period in effect on `day`: from the later of the month's first day and the last
    /// change on or before `day`, to the month's last day. `None` before the first change.
    /// `changes` in any order.
    pub fn holding(day: Date, changes: &[PlanChange]) -> Option<Self> {
        let month = BillingMonth::of(day);
        let change = changes.iter().filter(|c| c.start <= day).max_by_key(|c| c.start)?;
        Some(Self::new(change.plan.clone(), change.start.max(month.first_day()), month.last_day()))
    }

    /// The periods of `month`, in order: each change's plan from its day (or the month's
    /// first) to the day before the next change (or the month's last day, or `closed_on`).
    /// Empty for an organization that did not exist during the month.
    pub fn of_month(month: BillingMonth, changes: &[PlanChange], closed_on: Option<Date>) -> Vec<Self> {
        let mut sorted: Vec<&PlanChange> = changes.iter().collect();
        sorted.sort_by_key(|c| c.start);
        let last = closed_on.map_or(month.last_day(), |closed| closed.min(month.last_day()));
        let mut periods = Vec::new();
        for (i, change) in sorted.iter().enumerate() {
            let next = sorted.get(i + 1).map(|n| n.start);
            let start = change.start.max(month.first_day());
            let end = next.and_then(|n| n.previous_day()).map_or(last, |e| e.min(last));
            if start <= end {
                periods.push(Self::new(change.plan.clone(), start, end));
            }
        }
        periods
    }

    fn new(plan: Plan, start: Date, end: Date) -> Self {
        let month = BillingMonth::of(start);
        let month_days = i64::from(month.last_day().day());
        Self { plan, start, end, month_days }
    }

    /// The period's days, both ends counted.
    pub fn days(&self) -> i64 {
        (self.end - self.start).whole_days() + 1
    }

    /// `amount` × the period's days ÷ the month's days, rounded down.
    pub fn prorate(&self, amount: i64) -> i64 {
        let scaled = i128::from(amount) * i128::from(self.days()) / i128::from(self.month_days);
        i64::try_from(scaled).unwrap_or(i64::MAX)
    }

    /// The valid verifications of live keys the period includes.
    pub fn included(&self) -> i64 {
        self.prorate(self.plan.included_requests_per_month)
    }

    /// The period's share of the plan's base price.
    pub fn base_price_cents(&self) -> i64 {
        self.prorate(self.plan.base_price_cents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OverLimit, PlanId};
    use time::macros::date;

    fn plan(id: &str, included: i64, price: i64) -> Plan {
        Plan {
            id: PlanId::new(id).expect("valid"),
            name: id.to_owned(),
            base_price_cents: price,
            included_requests_per_month: included,
            over_limit: OverLimit::Block,
        }
    }

    fn change(start: Date, plan: Plan) -> PlanChange {
        PlanChange { start, plan }
    }

    #[test]
    fn the_period_holding_a_day_starts_at_the_later_of_the_month_and_the_last_change() {
        let changes = [
            change(date!(2026 - 10 - 20), plan("free", 10_000, 0)),
            change(date!(2026 - 11 - 10), plan("pro", 3_000, 300)),
        ];
        let period = PlanPeriod::holding(date!(2026 - 11 - 05), &changes).expect("a plan");
        assert_eq!(
            (period.plan.id.as_str(), period.start, period.end),
            ("free", date!(2026 - 11 - 01), date!(2026 - 11 - 30))
        );
        assert_eq!(period.included(), 10_000);
        let period = PlanPeriod::holding(date!(2026 - 11 - 10), &changes).expect("a plan");
        assert_eq!((period.plan.id.as_str(), period.start), ("pro", date!(2026 - 11 - 10)));
        // 21 days of 30, rounded down.
        assert_eq!((period.days(), period.included(), period.base_price_cents()), (21, 2_100, 210));
        assert_eq!(PlanPeriod::holding(date!(2026 - 10 - 19), &changes), None);
    }

    #[test]
    fn a_month_is_split_at_each_change_and_ends_when_the_organization_closed() {
        let changes = [
            change(date!(2026 - 10 - 20), plan("free", 10_000, 0)),
            change(date!(2026 - 11 - 10), plan("pro", 3_000, 19_900)),
            change(date!(2026 - 12 - 01), plan("starter", 1, 1)),
        ];
        let periods = PlanPeriod::of_month(BillingMonth::of(date!(2026 - 11 - 01)), &changes, None);
        let spans: Vec<_> = periods.iter().map(|p| (p.plan.id.as_str(), p.start, p.end, p.included())).collect();
        assert_eq!(
            spans,
            [
                ("free", date!(2026 - 11 - 01), date!(2026 - 11 - 09), 3_000),
                ("pro", date!(2026 - 11 - 10), date!(2026 - 11 - 30), 2_100)
            ]
        );
        assert_eq!(periods[1].base_price_cents(), 19_900 * 21 / 30);
        let closed =
            PlanPeriod::of_month(BillingMonth::of(date!(2026 - 11 - 01)), &changes, Some(date!(2026 - 11 - 05)));
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].end, closed[0].days()), (date!(2026 - 11 - 05), 5));
        assert!(PlanPeriod::of_month(BillingMonth::of(date!(2026 - 09 - 01)), &changes, None).is_empty());
    }
}
