//! The scheduled webhook notices: which of `key.expiring`, `key.expired` and
//! `usage.threshold` are due, found by a pass every instance runs; each is sent once
//! whatever the number of instances (the store takes the notice's mark in the transaction
//! that writes its event, and only the instance that took it sends).

use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::AccountService;
use crate::model::{
    day_text, ApiKey, AuditDetails, BillingMonth, DetailValue, Environment, KeyNotice, PlanPeriod, UsageMark,
    USAGE_THRESHOLDS,
};
use crate::ports::{KeyNoticeDecision, StoreResult};

/// A key that expired longer ago than this gets no `key.expired`: it expired before its
/// organization subscribed, or before the pass ran at all (stale news, not a burst of it).
pub const KEY_EXPIRED_NOTICE_LIMIT: Duration = Duration::days(1);

/// The expiry notice due for `key` at `now`, `taken` having been sent: the latest one whose
/// time has come (a key created 3 days before its expiry gets the 7-day notice once, not
/// a burst of stale ones), unless it or a later one was sent. None for a revoked key, a
/// key that never expires, and one expired longer than [`KEY_EXPIRED_NOTICE_LIMIT`] ago.
pub fn key_notice_due(key: &ApiKey, taken: &[KeyNotice], now: OffsetDateTime) -> Option<KeyNotice> {
    let expires_at = key.expires_at.filter(|_| !key.is_revoked())?;
    if expires_at + KEY_EXPIRED_NOTICE_LIMIT <= now {
        return None;
    }
    let due = KeyNotice::ALL.into_iter().rev().find(|notice| notice.due_at(expires_at) <= now)?;
    (!taken.iter().any(|sent| *sent >= due)).then_some(due)
}

/// The thresholds of [`USAGE_THRESHOLDS`] that `used` of `included` reached, highest first;
/// none when the period includes nothing (no share of nothing).
pub fn usage_thresholds_reached(used: i64, included: i64) -> Vec<u8> {
    if included <= 0 {
        return Vec::new();
    }
    let mut reached: Vec<u8> = USAGE_THRESHOLDS
        .into_iter()
        .filter(|percent| i128::from(used) * 100 >= i128::from(included) * i128::from(*percent))
        .collect();
    reached.reverse();
    reached
}

/// A key notice's `data`: the key's id, name and expiry (never the key); for
/// `key.expiring`, within how many days.
pub fn key_notice_data(key: &ApiKey, notice: KeyNotice) -> AuditDetails {
    let expires_at = key.expires_at.map(|at| at.replace_nanosecond(0).unwrap_or(at).format(&Rfc3339));
    let mut data = AuditDetails::none()
        .with("key_id", DetailValue::Text(key.id.to_string()))
        .with("name", DetailValue::Text(key.name.as_str().to_owned()))
        .with("expires_at", DetailValue::Text(expires_at.and_then(Result::ok).unwrap_or_default()));
    if notice != KeyNotice::Expired {
        data = data.with("within_days", DetailValue::Number(notice.ahead().whole_days()));
    }
    data
}

/// What one pass sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduledNotices {
    pub keys: usize,
    pub usage: usize,
}

impl AccountService {
    /// One scheduled pass: sends the expiry notices due ([`key_notice_due`], decided again on
    /// the key's row in the sending transaction: a key revoked meanwhile gets none) and the
    /// usage thresholds reached by the current plan period's stored valid verifications of
    /// live keys (the period and its prorated `included` as the quota and `month_to_date`
    /// have them), 80% and 100% once each a period, only the highest when both are reached
    /// at once. Only organizations with an endpoint subscribed are considered. Nothing
    /// without webhooks configured.
    pub async fn send_scheduled_notices(&self) -> StoreResult<ScheduledNotices> {
        let Some(webhooks) = &self.webhooks else { return Ok(ScheduledNotices::default()) };
        let schedule = &webhooks.schedule;
        let now = self.clock.now();
        let mut sent = ScheduledNotices::default();
        let soonest = KeyNotice::ALL.iter().map(|n| n.ahead()).max().unwrap_or(Duration::ZERO);
        for (key, taken) in schedule.expiring_keys(now - KEY_EXPIRED_NOTICE_LIMIT, now + soonest).await? {
            if key_notice_due(&key, &taken, now).is_none() {
                continue;
            }
            let decide: KeyNoticeDecision = Arc::new(move |key, taken| {
                let notice = key_notice_due(key, taken, now)?;
                Some((notice, key_notice_data(key, notice)))
            });
            if schedule.send_key_notice(&key.id, now, decide).await?.is_some() {
                sent.keys += 1;
            }
        }

        let today = now.date();
        let month_start = BillingMonth::of(today).first_day();
        let watchers = schedule.usage_watchers(month_start).await?;
        if watchers.is_empty() {
            return Ok(sent);
        }
        let orgs: Vec<_> = watchers.iter().map(|(org, _)| org.clone()).collect();
        // A period never starts before its month: one read covers every organization's.
        let uses = self.keys.valid_uses_since(&orgs, month_start).await?;
        for (org, taken) in watchers {
            let changes = self.accounts.plan_changes(&org).await?;
            let Some(period) = PlanPeriod::holding(today, &changes) else { continue };
            let used: i64 = uses
                .iter()
                .filter(|u| u.org_id == org && u.environment == Environment::Live && u.day >= period.start)
                .map(|u| u.count)
                .sum();
            let included = period.included();
            let reached = usage_thresholds_reached(used, included);
            let Some(&highest) = reached.first() else { continue };
            if taken.iter().any(|mark| mark.period_start == period.start && mark.percent >= highest) {
                continue;
            }
            let marks: Vec<UsageMark> =
                reached.iter().map(|&percent| UsageMark { period_start: period.start, percent }).collect();
            let data = AuditDetails::none()
                .with("percent", DetailValue::Number(i64::from(highest)))
                .with("used", DetailValue::Number(used))
                .with("included", DetailValue::Number(included))
                .with("period_start", DetailValue::Text(day_text(period.start)));
            if schedule.send_usage_notice(&org, &marks, &data, now).await? {
                sent.usage += 1;
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;
    use crate::ports::{MockWebhookActivity, MockWebhookRepository, MockWebhookSchedule, MockWebhookTargets};
    use crate::service::test_support::*;
    use crate::service::Webhooks;

    fn expiring_in(ahead: Duration) -> ApiKey {
        api_key("key_soon", "org_abc").with(|k| k.expires_at = Some(NOW + ahead))
    }

    fn service_with(ports: Ports, schedule: MockWebhookSchedule) -> Arc<AccountService> {
        let webhooks = Webhooks {
            repository: Arc::new(MockWebhookRepository::new()),
            activity: Arc::new(MockWebhookActivity::new()),
            targets: Arc::new(MockWebhookTargets::new()),
            schedule: Arc::new(schedule),
        };
        ports.service_with(|service| service.with_webhooks(webhooks))
    }

    #[test]
    fn only_the_nearest_expiry_notice_due_is_sent_and_never_again() {
        use KeyNotice::*;
        let cases = [
            (Duration::days(8), vec![], None),
            (Duration::days(7), vec![], Some(Expiring7d)),
            (Duration::days(3), vec![], Some(Expiring7d)),
            (Duration::days(3), vec![Expiring7d], None),
            // Created 12 hours before its expiry: the 1-day notice alone, not the 7-day one too.
            (Duration::hours(12), vec![], Some(Expiring1d)),
            (Duration::hours(12), vec![Expiring7d], Some(Expiring1d)),
            (Duration::hours(12), vec![Expiring1d], None),
            (Duration::ZERO, vec![Expiring7d, Expiring1d], Some(Expired)),
            (-Duration::hours(23), vec![], Some(Expired)),
            (-Duration::hours(1), vec![Expired], None),
            // Expired longer ago than a day: stale, never sent.
            (-Duration::hours(25), vec![], None),
        ];
        for (ahead, taken, due) in cases {
            assert_eq!(key_notice_due(&expiring_in(ahead), &taken, NOW), due, "{ahead} ahead, {taken:?} taken");
        }
        let revoked = expiring_in(Duration::hours(1)).with(|k| k.revoked_at = Some(NOW - Duration::hours(1)));
        assert_eq!(key_notice_due(&revoked, &[], NOW), None, "a revoked key is told of nothing");
        assert_eq!(key_notice_due(&api_key("key_forever", "org_abc"), &[], NOW), None);
    }

    #[test]
    fn thresholds_are_80_and_100_percent_of_what_the_period_includes_highest_first() {
        assert_eq!(usage_thresholds_reached(79, 100), Vec::<u8>::new());
        assert_eq!(usage_thresholds_reached(8, 9), vec![80]);
        assert_eq!(usage_thresholds_reached(99, 100), vec![80]);
        assert_eq!(usage_thresholds_reached(100, 100), vec![100, 80]);
        assert_eq!(usage_thresholds_reached(5_000, 100), vec![100, 80]);
        assert_eq!(usage_thresholds_reached(10, 0), Vec::<u8>::new(), "nothing included: no share of it");
    }

    #[test]
    fn a_notices_data_holds_the_keys_id_name_and_expiry_never_the_key() {
        let key = expiring_in(Duration::days(1));
        let data = key_notice_data(&key, KeyNotice::Expiring1d);
        let names: Vec<&str> = data.entries().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["key_id", "name", "expires_at", "within_days"]);
        assert_eq!(data.entries()[2].1, DetailValue::Text("2024-01-16T10:00:00Z".to_owned()));
        assert_eq!(data.entries()[3].1, DetailValue::Number(1));
        assert_eq!(key_notice_data(&key, KeyNotice::Expired).entries().len(), 3);
    }

    #[tokio::test]
    async fn the_pass_decides_again_on_the_key_as_the_sending_transaction_finds_it() {
        let mut schedule = MockWebhookSchedule::new();
        schedule.expect_usage_watchers().returning(|_| Ok(vec![]));
        schedule
            .expect_expiring_keys()
            .withf(|from, to| *from == NOW - Duration::days(1) && *to == NOW + Duration::days(7))
            .returning(|_, _| {
                Ok(vec![
                    (expiring_in(Duration::hours(12)), vec![]),
                    (expiring_in(Duration::days(3)), vec![KeyNotice::Expiring7d]),
                ])
            });
        schedule.expect_send_key_notice().times(1).returning(|key, _, decide| {
            assert_eq!(key.as_str(), "key_soon");
            let found = expiring_in(Duration::hours(12));
            let (notice, data) = decide(&found, &[]).expect("due");
            assert_eq!(notice, KeyNotice::Expiring1d);
            assert_eq!(data, key_notice_data(&found, KeyNotice::Expiring1d));
            // Revoked meanwhile, or sent by another instance: nothing.
            let revoked = found.clone().with(|k| k.revoked_at = Some(NOW));
            assert!(decide(&revoked, &[]).is_none());
            assert!(decide(&found, &[KeyNotice::Expiring1d]).is_none());
            Ok(Some(notice))
        });
        let sent = service_with(Ports::new(), schedule).send_scheduled_notices().await.expect("sent");
        assert_eq!(sent, ScheduledNotices { keys: 1, usage: 0 });
    }

    #[tokio::test]
    async fn usage_is_judged_on_the_current_periods_live_valid_counts_and_prorated_inclusion() {
        let org = OrgId::new("org_abc").expect("valid");
        let other = OrgId::new("org_done").expect("valid");
        let mut ports = Ports::new();
        // On `pro` (3,100 a month) since January 5th: 27 of 31 days, 2,700 included.
        ports.accounts.expect_plan_changes().returning(|_| {
            Ok(vec![
                PlanChange { start: date!(2023 - 12 - 01), plan: plan("free") },
                PlanChange {
                    start: date!(2024 - 01 - 05),
                    plan: Plan { included_requests_per_month: 3_100, ..plan("pro") },
                },
            ])
        });
        let (o1, o2) = (org.clone(), other.clone());
        ports.keys.expect_valid_uses_since().withf(|_, from| *from == date!(2024 - 01 - 01)).returning(move |_, _| {
            let uses =
                |org: &OrgId, environment, day, count| ValidUses { org_id: org.clone(), environment, day, count };
            Ok(vec![
                // Before the period, and test keys: not counted.
                uses(&o1, Environment::Live, date!(2024 - 01 - 04), 5_000),
                uses(&o1, Environment::Test, date!(2024 - 01 - 10), 5_000),
                uses(&o1, Environment::Live, date!(2024 - 01 - 10), 2_000),
                uses(&o1, Environment::Live, date!(2024 - 01 - 15), 200),
                uses(&o2, Environment::Live, date!(2024 - 01 - 15), 2_700),
            ])
        });
        let mut schedule = MockWebhookSchedule::new();
        schedule.expect_expiring_keys().returning(|_, _| Ok(vec![]));
        let period = date!(2024 - 01 - 05);
        schedule.expect_usage_watchers().returning(move |_| {
            Ok(vec![
                (org.clone(), vec![]),
                // Its 100% notice of this period was sent already.
                (other.clone(), vec![UsageMark { period_start: period, percent: 100 }]),
            ])
        });
        schedule.expect_send_usage_notice().times(1).returning(move |org, marks, data, _| {
            assert_eq!(org.as_str(), "org_abc");
            assert_eq!(marks, [UsageMark { period_start: period, percent: 80 }]);
            let expected = AuditDetails::none()
                .with("percent", DetailValue::Number(80))
                .with("used", DetailValue::Number(2_200))
                .with("included", DetailValue::Number(2_700))
                .with("period_start", DetailValue::Text("2024-01-05".to_owned()));
            assert_eq!(*data, expected);
            Ok(true)
        });
        let sent = service_with(ports, schedule).send_scheduled_notices().await.expect("sent");
        assert_eq!(sent, ScheduledNotices { keys: 0, usage: 1 });
    }
}
