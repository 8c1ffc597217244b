//! The quota: how many valid verifications an organization's keys get in a plan period. The
//! product rule is [`is_capped`] and [`allows`]; [`AccountService::admit_to_quota`] applies it
//! to each valid verification over the counts the runtime keeps across instances
//! (`runtime/quota.rs`). The account API's own routes never ask: an organization over its
//! quota can still see its usage and change its plan. Also the operator's say on what a
//! plan does past what it includes (`plans set-over-limit`).

use thiserror::Error;
use time::Date;

use super::{AccountService, Principal};
use crate::model::{
    BillingMonth, Environment, Organization, OverLimit, Plan, PlanChange, PlanId, PlanPeriod, VerificationCode,
};
use crate::ports::{StoreError, StoreResult};
use crate::runtime::{Admission, QuotaOf};

/// Whether the valid verifications of a key of `environment` are capped on a plan that does
/// `over_limit` past what it includes: a `block` plan's live keys (nothing past what is
/// included is ever billed), and the test keys of every plan (a sandbox, never billed, capped
/// at as many as the live keys get).
pub(crate) fn is_capped(environment: Environment, over_limit: OverLimit) -> bool {
    environment == Environment::Test || over_limit == OverLimit::Block
}

/// Whether one more valid verification is allowed, `valid` having been counted in the period
/// (of keys of its environment) and the period including `included`: until they reach it.
pub(crate) fn allows(valid: i64, included: i64) -> bool {
    valid < included
}

#[derive(Debug, Error)]
pub enum SetPlanOverLimitError {
    #[error("no plan has this id")]
    UnknownPlan,
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

impl AccountService {
    /// Counts `principal`'s verification, counted valid, against its organization's quota:
    /// [`Admission::Unknown`] until the period's counts have been read here (then
    /// [`Self::admit_after_reading`]). Cheap: no I/O, no allocation.
    #[inline]
    pub(super) fn admit_to_quota(&self, principal: &Principal, day: Date) -> Admission {
        let of = quota_of(principal, day);
        self.runtime.admit(of, is_capped(of.environment, of.organization.plan.over_limit), allows)
    }

    /// Reads the organization's current plan period and what the store holds of it, then
    /// admits or refuses. When the store is unavailable, the verification is admitted (a
    /// valid key is not refused for an unreachable store; the next verification reads
    /// again); any other failure of the store is the verification's.
    pub(super) async fn admit_after_reading(&self, principal: &Principal, day: Date) -> StoreResult<Admission> {
        let of = quota_of(principal, day);
        let read = async {
            let period = self.plan_period(of.organization, day).await?;
            self.runtime.read_quota(self.keys.as_ref(), of, &period).await
        };
        let capped = is_capped(of.environment, of.organization.plan.over_limit);
        match read.await.map(|()| self.runtime.admit(of, capped, allows)) {
            Ok(Admission::Unknown) | Err(StoreError::Unavailable(_)) => Ok(self.runtime.admit(of, false, allows)),
            Ok(judged) => Ok(judged),
            Err(failed) => Err(failed),
        }
    }

    /// A verification the quota refused counts as `quota_exceeded`, not as valid.
    pub(super) fn count_quota_refusal(&self, principal: &Principal) {
        self.count_as_refused(principal, VerificationCode::QuotaExceeded);
    }

    /// The organization's plan period holding `day`. An organization whose first period
    /// is not written yet (read before its signup committed) has its plan from the month's
    /// first day.
    pub(super) async fn plan_period(&self, organization: &Organization, day: Date) -> StoreResult<PlanPeriod> {
        let changes = self.accounts.plan_changes(&organization.id).await?;
        Ok(PlanPeriod::holding(day, &changes).unwrap_or_else(|| {
            let start = BillingMonth::of(day).first_day();
            let first = [PlanChange { start, plan: organization.plan.clone() }];
            PlanPeriod::holding(day, &first).expect("a period holds its first day")
        }))
    }

    /// Sets what `plan_id` does past what it includes; every instance applies it within a
    /// second (a plan turned to `bill` lifts its organizations' blocks, one turned to `block`
    /// blocks those past their quota).
    pub async fn set_plan_over_limit(
        &self,
        plan_id: &str,
        over_limit: OverLimit,
    ) -> Result<Plan, SetPlanOverLimitError> {
        let plan_id = PlanId::new(plan_id).map_err(|_| SetPlanOverLimitError::UnknownPlan)?;
        let plan = self.accounts.set_plan_over_limit(&plan_id, over_limit).await?;
        plan.ok_or(SetPlanOverLimitError::UnknownPlan)
    }
}

fn quota_of(principal: &Principal, day: Date) -> QuotaOf<'_> {
    QuotaOf {
        organization: principal.shared_organization(),
        slot: principal.quota_slot(),
        environment: principal.environment(),
        day,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use time::macros::date;

    use super::*;
    use crate::service::test_support::*;

    /// The organization's plan since December: January's period is all its 31 days, and
    /// includes what the plan includes a month.
    fn since_december(included: i64, over_limit: OverLimit) -> Vec<PlanChange> {
        vec![PlanChange { start: date!(2023 - 12 - 01), plan: terms(included, over_limit) }]
    }

    fn terms(included: i64, over_limit: OverLimit) -> Plan {
        Plan { included_requests_per_month: included, over_limit, ..plan("free") }
    }

    fn key_of(environment: Environment) -> PlaintextKey {
        PlaintextKey::assemble(environment, &secret_body())
    }

    /// The stored credential of `key_of(environment)`, its organization on `plan`.
    fn credential_of(environment: Environment, plan: Plan) -> KeyCredential {
        credential().with(|c| {
            c.key.environment = environment;
            Arc::make_mut(&mut c.organization).plan = plan;
        })
    }

    /// Finds the live and the test key, their organization on the plan `plan` holds now.
    fn store_knows_both_keys(ports: &mut Ports, plan: Arc<Mutex<Plan>>) {
        let live = key_of(Environment::Live).hash();
        ports.keys.expect_find_credential().returning(move |hash| {
            let environment = if *hash == live { Environment::Live } else { Environment::Test };
            Ok(Some(credential_of(environment, plan.lock().expect("plan").clone())))
        });
    }

    fn stored(environment: Environment, day: Date, count: i64) -> ValidUses {
        ValidUses { org_id: credential().key.org_id, environment, day, count }
    }

    async fn verdicts(service: &Arc<AccountService>, environment: Environment, n: usize) -> Vec<&'static str> {
        let key = key_of(environment);
        let mut codes = Vec::new();
        for _ in 0..n {
            let verdict = service.verify_key(key.expose(), None, None).await.expect("a verdict");
            assert!(verdict.principal.is_some(), "a valid key's answer carries its environment");
            codes.push(verdict.code.as_str());
        }
        codes
    }

    fn times(code: &'static str, n: usize) -> Vec<&'static str> {
        vec![code; n]
    }

    fn joined(parts: &[Vec<&'static str>]) -> Vec<&'static str> {
        parts.concat()
    }

    #[test]
    fn a_block_plans_live_keys_and_every_plans_test_keys_are_capped_at_what_the_period_includes() {
        assert!(is_capped(Environment::Live, OverLimit::Block));
        assert!(!is_capped(Environment::Live, OverLimit::Bill));
        assert!(is_capped(Environment::Test, OverLimit::Block) && is_capped(Environment::Test, OverLimit::Bill));
        assert!(allows(9, 10));
        assert!(!allows(10, 10) && !allows(11, 10) && !allows(0, 0));
    }

    #[tokio::test]
    async fn verification_past_what_the_period_includes_answers_quota_exceeded_counted_so_on_one_read() {
        let mut ports = Ports::new();
        store_knows_both_keys(&mut ports, Arc::new(Mutex::new(terms(310, OverLimit::Block))));
        ports.accounts.expect_plan_changes().times(1).returning(|_| Ok(since_december(310, OverLimit::Block)));
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        ports.keys.expect_valid_uses_since().times(2).returning(move |orgs, from| {
            assert_eq!((orgs, from), (&[credential().key.org_id][..], date!(2024 - 01 - 01)));
            // Then (after the flush) what this instance wrote too.
            let live = if counted.fetch_add(1, Ordering::SeqCst) == 0 { 300 } else { 310 };
            Ok(vec![stored(Environment::Live, NOW.date(), live), stored(Environment::Test, NOW.date(), 500)])
        });
        ports.keys.expect_record_usage().times(1).returning(|batch| {
            let mut counts: Vec<_> = batch.counts.iter().map(|c| (c.outcome.as_str(), c.count)).collect();
            counts.sort_unstable();
            assert_eq!(counts, [("quota_exceeded", 3), ("valid", 10)], "nothing past it counted valid");
            Ok(UsageRecorded::default())
        });
        let service = ports.service();
        let codes = verdicts(&service, Environment::Live, 13).await;
        assert_eq!(codes, joined(&[times("valid", 10), times("quota_exceeded", 3)]));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "read once, not per verification");
        service.flush_usage().await.expect("flushed");
        assert_eq!(reads.load(Ordering::SeqCst), 2, "read again after the flush");
        assert_eq!(verdicts(&service, Environment::Live, 1).await, ["quota_exceeded"]);
    }

    #[tokio::test]
    async fn test_keys_have_a_cap_of_their_own_on_every_plan_and_a_bill_plans_live_keys_none() {
        for over_limit in [OverLimit::Block, OverLimit::Bill] {
            let mut ports = Ports::new();
            store_knows_both_keys(&mut ports, Arc::new(Mutex::new(terms(310, over_limit))));
            ports.accounts.expect_plan_changes().returning(move |_| Ok(since_december(310, over_limit)));
            ports.keys.expect_valid_uses_since().times(1).returning(|_, _| {
                Ok(vec![stored(Environment::Live, NOW.date(), 400), stored(Environment::Test, NOW.date(), 308)])
            });
            let service = ports.service();
            let live = if over_limit == OverLimit::Block { "quota_exceeded" } else { "valid" };
            assert_eq!(verdicts(&service, Environment::Live, 2).await, [live, live], "{over_limit:?}");
            let test = verdicts(&service, Environment::Test, 3).await;
            assert_eq!(test, ["valid", "valid", "quota_exceeded"], "{over_limit:?}");
        }
    }

    #[tokio::test]
    async fn a_new_month_lifts_the_block() {
        let now = Arc::new(Mutex::new(time::macros::datetime!(2024-01-31 23:59:59 UTC)));
        let mut ports = Ports::new();
        store_knows_both_keys(&mut ports, Arc::new(Mutex::new(terms(310, OverLimit::Block))));
        ports.accounts.expect_plan_changes().times(2).returning(|_| Ok(since_december(310, OverLimit::Block)));
        let mut seq = mockall::Sequence::new();
        ports.keys.expect_valid_uses_since().times(1).in_sequence(&mut seq).returning(|_, from| {
            assert_eq!(from, date!(2024 - 01 - 01));
            Ok(vec![stored(Environment::Live, date!(2024 - 01 - 31), 310)])
        });
        ports.keys.expect_valid_uses_since().times(1).in_sequence(&mut seq).returning(|_, from| {
            assert_eq!(from, date!(2024 - 02 - 01), "February's period");
            Ok(vec![])
        });
        let service = ports.service_at(now.clone());
        assert_eq!(verdicts(&service, Environment::Live, 1).await, ["quota_exceeded"]);
        *now.lock().expect("clock") = time::macros::datetime!(2024-02-01 00:00:00 UTC);
        // 310 a month, 29 days of February: all of it.
        assert_eq!(verdicts(&service, Environment::Live, 2).await, ["valid", "valid"]);
    }

    #[tokio::test]
    async fn a_plan_that_includes_more_or_bills_lifts_the_block_at_the_next_verification() {
        let plan = Arc::new(Mutex::new(terms(310, OverLimit::Block)));
        let mut ports = Ports::new();
        store_knows_both_keys(&mut ports, plan.clone());
        let now_included = plan.clone();
        ports.accounts.expect_plan_changes().times(2).returning(move |_| {
            let plan = now_included.lock().expect("plan").clone();
            Ok(since_december(plan.included_requests_per_month, plan.over_limit))
        });
        ports
            .keys
            .expect_valid_uses_since()
            .times(2)
            .returning(|_, _| Ok(vec![stored(Environment::Live, NOW.date(), 310)]));
        let service = ports.service();
        assert_eq!(verdicts(&service, Environment::Live, 1).await, ["quota_exceeded"]);
        // The credential (read again, or after the change feed emptied the cache) carries
        // the new terms: the period is read again.
        plan.lock().expect("plan").included_requests_per_month = 312;
        assert_eq!(verdicts(&service, Environment::Live, 3).await, ["valid", "valid", "quota_exceeded"]);
        plan.lock().expect("plan").over_limit = OverLimit::Bill;
        assert_eq!(verdicts(&service, Environment::Live, 2).await, ["valid", "valid"], "nothing to read");
    }

    #[tokio::test]
    async fn a_change_the_feed_publishes_for_the_organization_reads_its_period_again() {
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().never();
        let cached = Arc::new(credential_of(Environment::Live, terms(310, OverLimit::Block)));
        let mut cache = MockCredentialCache::new();
        cache.expect_get().returning(move |_, _| Some(CachedLookup::Found(cached.clone())));
        cache.expect_forget_organization().return_const(());
        let mut feed = MockChangeFeed::new();
        let polls = AtomicUsize::new(0);
        feed.expect_poll().returning(move || {
            // The second poll brings a plan change that kept the plan's terms (the period
            // starts again today, say).
            let changes = match polls.fetch_add(1, Ordering::SeqCst) {
                1 => vec![Change::Organization(credential().key.org_id)],
                _ => vec![],
            };
            Ok(FeedPoll { changes, caught_up: true, missed: false })
        });
        let mut seq = mockall::Sequence::new();
        ports
            .accounts
            .expect_plan_changes()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(since_december(310, OverLimit::Block)));
        ports
            .accounts
            .expect_plan_changes()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(vec![PlanChange { start: NOW.date(), plan: terms(310, OverLimit::Block) }]));
        ports.keys.expect_valid_uses_since().times(2).returning(|_, from| {
            let count = if from == NOW.date() { 0 } else { 310 };
            Ok(vec![stored(Environment::Live, NOW.date(), count)])
        });
        let service = ports.service_with_cache(cache, feed);
        service.sync_changes().await.expect("synced");
        assert_eq!(verdicts(&service, Environment::Live, 1).await, ["quota_exceeded"]);
        service.sync_changes().await.expect("synced");
        // From today: 17 of January's 31 days of 310 (rounded down), none used yet today.
        assert_eq!(verdicts(&service, Environment::Live, 1).await, ["valid"]);
    }

    #[tokio::test]
    async fn after_a_flush_the_written_counts_are_read_again_and_this_instances_are_not_counted_twice() {
        let mut ports = Ports::new();
        store_knows_both_keys(&mut ports, Arc::new(Mutex::new(terms(310, OverLimit::Block))));
        ports.accounts.expect_plan_changes().times(1).returning(|_| Ok(since_december(310, OverLimit::Block)));
        let mut seq = mockall::Sequence::new();
        ports
            .keys
            .expect_valid_uses_since()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(vec![stored(Environment::Live, NOW.date(), 300)]));
        // Written since: this instance's 4, and 3 of another instance.
        ports
            .keys
            .expect_valid_uses_since()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(vec![stored(Environment::Live, NOW.date(), 307)]));
        ports.keys.expect_record_usage().times(1).returning(|_| Ok(UsageRecorded::default()));
        let service = ports.service();
        assert_eq!(verdicts(&service, Environment::Live, 4).await, times("valid", 4));
        service.flush_usage().await.expect("flushed");
        let codes = verdicts(&service, Environment::Live, 4).await;
        assert_eq!(codes, joined(&[times("valid", 3), times("quota_exceeded", 1)]));
    }

    #[tokio::test]
    async fn a_store_that_fails_otherwise_fails_the_verification() {
        let mut ports = Ports::new();
        store_knows_both_keys(&mut ports, Arc::new(Mutex::new(terms(310, OverLimit::Block))));
        ports.accounts.expect_plan_changes().returning(|_| Ok(since_december(310, OverLimit::Block)));
        ports.keys.expect_valid_uses_since().returning(|_, _| Err(anyhow::anyhow!("permission denied").into()));
        let key = key_of(Environment::Live);
        assert!(ports.service().verify_key(key.expose(), None, None).await.is_err());
    }

    #[tokio::test]
    async fn a_store_that_cannot_say_refuses_no_valid_key_and_is_asked_again_next_time() {
        let mut ports = Ports::new();
        store_knows_both_keys(&mut ports, Arc::new(Mutex::new(terms(310, OverLimit::Block))));
        ports
            .accounts
            .expect_plan_changes()
            .times(2)
            .returning(|_| Err(StoreError::Unavailable(anyhow::anyhow!("pool timed out"))));
        let service = ports.service();
        assert_eq!(verdicts(&service, Environment::Live, 2).await, ["valid", "valid"]);
    }
}
