//! The quota's counts, held across instances with no database write per verification: for
//! each organization verified here, the valid verifications of its live and of its test keys
//! in the current plan period, as the store held them when last read (after each usage
//! flush, and on first sight), plus those this instance counted and has not written yet.
//! Nothing here decides: the rule is the domain's (`service/quota.rs`), handed to
//! [`QuotaBook::admit`]; this only keeps the counts true.
//!
//! Why the counts stay exact: this instance's unwritten uses are counted here when admitted
//! and taken off, by organization and day, when the batch holding them is written (or
//! dropped): the batch carries them ([`ValidUse`]). The store is read only while no batch
//! is being written (under the flush's turn), so a read never sees a use still counted
//! here as unwritten. What this instance does not know is what other instances counted
//! and have not written, or wrote since its last read: at most what they count in their
//! flush interval plus this instance's.
//!
//! Why it is cheap: each organization's counts sit behind their own lock, and a cached
//! credential keeps a handle on them ([`QuotaSlot`], set at its first verification), so a
//! verification neither hashes the organization's id nor takes a lock shared by all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use foldhash::fast::RandomState;
use time::Date;

use crate::model::{Environment, OrgId, Organization, PlanPeriod};
use crate::ports::ValidUses;

/// Counts by environment, indexed by [`at`].
type ByEnvironment = [i64; 2];

fn at(environment: Environment) -> usize {
    match environment {
        Environment::Live => 0,
        Environment::Test => 1,
    }
}

/// A use counted valid in a batch of the usage buffer: taken off the unwritten counts once
/// the batch is written or given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidUse {
    pub key: crate::model::KeyId,
    pub org: OrgId,
    pub environment: Environment,
    pub day: Date,
    pub count: i64,
}

/// The verification asking: its organization as its credential carries it, the
/// credential's handle on the organization's counts, its key's environment, and the UTC day
/// it was counted on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuotaOf<'a> {
    pub organization: &'a Arc<Organization>,
    pub slot: &'a QuotaSlot,
    pub environment: Environment,
    pub day: Date,
}

/// One organization's counts on this instance, behind their own lock.
#[derive(Debug, Default)]
pub(crate) struct OrgQuota {
    counts: Mutex<OrgCounts>,
}

/// A credential's handle on its organization's counts on this instance, set at its first
/// verification: runtime state, not part of the credential's value (any two are equal). A
/// credential read again starts with none.
#[derive(Debug, Default, Clone)]
pub struct QuotaSlot(OnceLock<Arc<OrgQuota>>);

impl PartialEq for QuotaSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for QuotaSlot {}

/// What the book answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Counted as one more valid verification.
    Admitted,
    /// Not counted: the rule refused it.
    Refused,
    /// The period's terms or written counts are not known here (first sight, a new month, a
    /// change of plan): read them ([`QuotaBook::install`]) and ask again.
    Unknown,
}

/// The current plan period of one organization, as read.
#[derive(Debug)]
struct Terms {
    start: Date,
    end: Date,
    included: i64,
    /// The organization as the credential that asked for the read carried it. The terms
    /// hold for verifications that carry this very copy (the cache shares one per
    /// organization) or an equal plan; a change of plan shows as another.
    organization: Arc<Organization>,
    /// The period's valid verifications the store held when last read, plus those this
    /// instance wrote since.
    written: ByEnvironment,
}

impl Terms {
    /// Whether these terms are the ones for `of`: its day in the period, its plan the same.
    #[inline]
    fn hold_for(&mut self, of: QuotaOf<'_>) -> bool {
        if of.day < self.start || of.day > self.end {
            return false;
        }
        if Arc::ptr_eq(&self.organization, of.organization) {
            return true;
        }
        // Another copy (read again after its lifetime in the cache, or no cache at all):
        // the same terms while its plan is the same; kept, so the next check is a pointer's.
        let same = self.organization.plan == of.organization.plan;
        if same {
            self.organization = Arc::clone(of.organization);
        }
        same
    }
}

/// One organization's counts on this instance.
#[derive(Debug, Default)]
struct OrgCounts {
    /// `None`: to read before a capped verification is decided.
    terms: Option<Terms>,
    /// Valid verifications admitted here and not yet written, by UTC day (nearly always
    /// one). May go below zero for a moment: a use is counted in the usage buffer before
    /// it is admitted here.
    unwritten: Vec<(Date, ByEnvironment)>,
    /// Verified since the last refresh: read again after the next flush; otherwise its terms
    /// are forgotten then (read again at its next verification).
    active: bool,
}

impl OrgCounts {
    fn add(&mut self, day: Date, environment: Environment, delta: i64) {
        match self.unwritten.iter_mut().rev().find(|(d, _)| *d == day) {
            Some((_, counts)) => counts[at(environment)] += delta,
            None => {
                let mut counts = [0; 2];
                counts[at(environment)] = delta;
                self.unwritten.push((day, counts));
            }
        }
    }

    fn settled(&self) -> bool {
        self.unwritten.iter().all(|(_, counts)| *counts == [0; 2])
    }
}

/// Every organization verified here recently, with its counts. An organization's counts
/// stay here while a credential holds a handle on them, so that a handle always reaches the
/// counts the flush settles and refreshes.
#[derive(Debug, Default)]
pub(crate) struct QuotaBook {
    /// Organization ids are ours, never chosen by a caller: a fast hash is safe.
    orgs: Mutex<HashMap<OrgId, Arc<OrgQuota>, RandomState>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The counts stay consistent whatever a panicking holder did: keep using them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sums of `rows` of `org` on the days `start` to `end`, by environment.
fn written_in(rows: &[ValidUses], org: &OrgId, start: Date, end: Date) -> ByEnvironment {
    let mut written = [0; 2];
    for row in rows.iter().filter(|r| &r.org_id == org && r.day >= start && r.day <= end) {
        written[at(row.environment)] += row.count;
    }
    written
}

impl QuotaBook {
    /// The organization's counts, added if new.
    fn of(&self, org: &OrgId) -> Arc<OrgQuota> {
        let mut orgs = lock(&self.orgs);
        match orgs.get(org) {
            Some(quota) => Arc::clone(quota),
            None => Arc::clone(orgs.entry(org.clone()).or_default()),
        }
    }

    /// Counts one valid verification of `of`, unless `capped` and `allows(valid, included)`
    /// refuses it, given the period's valid verifications of keys of its environment so far
    /// and what the period includes. The hot path: through the credential's handle, one
    /// lock of the organization's own, no hashing, no allocation.
    #[inline]
    pub(crate) fn admit(&self, of: QuotaOf<'_>, capped: bool, allows: impl FnOnce(i64, i64) -> bool) -> Admission {
        let quota = match of.slot.0.get() {
            Some(quota) => quota,
            None => of.slot.0.get_or_init(|| self.of(&of.organization.id)),
        };
        let mut counts = lock(&quota.counts);
        let environment = at(of.environment);
        if capped {
            let OrgCounts { terms, unwritten, .. } = &mut *counts;
            let Some(terms) = terms.as_mut() else { return Admission::Unknown };
            if !terms.hold_for(of) {
                return Admission::Unknown;
            }
            let pending: i64 =
                unwritten.iter().filter(|(day, _)| *day >= terms.start).map(|(_, counts)| counts[environment]).sum();
            if !allows(terms.written[environment] + pending, terms.included) {
                return Admission::Refused;
            }
        }
        counts.add(of.day, of.environment, 1);
        counts.active = true;
        Admission::Admitted
    }

    /// Whether the terms for `of` are known (a read made while waiting for the turn).
    pub(crate) fn knows(&self, of: QuotaOf<'_>) -> bool {
        lock(&self.of(&of.organization.id).counts).terms.as_mut().is_some_and(|t| t.hold_for(of))
    }

    /// Sets the terms of `of`'s organization: `period`, and the valid verifications the
    /// store holds for it (`rows`, read from the period's start). Call it under the flush's
    /// turn, with `rows` read under it too.
    pub(crate) fn install(&self, of: QuotaOf<'_>, period: &PlanPeriod, rows: &[ValidUses]) {
        let org = &of.organization.id;
        let terms = Terms {
            start: period.start,
            end: period.end,
            included: period.included(),
            organization: Arc::clone(of.organization),
            written: written_in(rows, org, period.start, period.end),
        };
        lock(&self.of(org).counts).terms = Some(terms);
    }

    /// Takes written (or given up) uses off the unwritten counts; those of the current
    /// period count as written from now on (until the next read says how many there are).
    pub(crate) fn settle(&self, uses: &[ValidUse]) {
        if uses.is_empty() {
            return;
        }
        let orgs = lock(&self.orgs);
        for used in uses {
            let Some(quota) = orgs.get(&used.org) else { continue };
            let mut counts = lock(&quota.counts);
            counts.add(used.day, used.environment, -used.count);
            if let Some(terms) = counts.terms.as_mut().filter(|t| used.day >= t.start && used.day <= t.end) {
                terms.written[at(used.environment)] += used.count;
            }
            counts.unwritten.retain(|(_, counts)| *counts != [0; 2]);
        }
    }

    /// After a flush: the organizations verified since the last one, whose written counts to
    /// read again, and the earliest day to read from. The others forget their terms (read
    /// again at their next verification, so that what other instances wrote meanwhile is
    /// not missed) and leave once nothing of theirs is unwritten and no credential holds a
    /// handle on them.
    pub(crate) fn to_refresh(&self) -> (Vec<OrgId>, Option<Date>) {
        let mut orgs = lock(&self.orgs);
        let (mut refresh, mut from) = (Vec::new(), None::<Date>);
        orgs.retain(|org, quota| {
            let held = Arc::strong_count(quota) > 1;
            let mut counts = lock(&quota.counts);
            if !std::mem::take(&mut counts.active) {
                counts.terms = None;
                return held || !counts.settled();
            }
            if let Some(terms) = &counts.terms {
                refresh.push(org.clone());
                from = Some(from.map_or(terms.start, |f| f.min(terms.start)));
            }
            true
        });
        (refresh, from)
    }

    /// The written counts read for `orgs` (from `from` on) replace those kept.
    pub(crate) fn refreshed(&self, orgs: &[OrgId], from: Date, rows: &[ValidUses]) {
        let book = lock(&self.orgs);
        for org in orgs {
            let Some(quota) = book.get(org) else { continue };
            let mut counts = lock(&quota.counts);
            let Some(terms) = counts.terms.as_mut() else { continue };
            if terms.start >= from {
                terms.written = written_in(rows, org, terms.start, terms.end);
            }
        }
    }

    /// The organizations' written counts could not be read: their terms are read again at
    /// their next verification.
    pub(crate) fn refresh_failed(&self, orgs: &[OrgId]) {
        let book = lock(&self.orgs);
        for org in orgs {
            if let Some(quota) = book.get(org) {
                lock(&quota.counts).terms = None;
            }
        }
    }

    /// The organization's status or plan changed: its terms are read again.
    pub(crate) fn forget(&self, org: &OrgId) {
        if let Some(quota) = lock(&self.orgs).get(org) {
            lock(&quota.counts).terms = None;
        }
    }

    /// The plan catalogue changed, or changes may have been missed: every term is read again.
    pub(crate) fn forget_all(&self) {
        for quota in lock(&self.orgs).values() {
            lock(&quota.counts).terms = None;
        }
    }
}
