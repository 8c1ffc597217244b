//! Uses of keys, kept in memory and written to the store in batches, so that authenticating
//! costs no database write: when each key was last used, and how many verifications of it
//! ended with each outcome, by UTC day.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use foldhash::fast::RandomState;
use time::{Date, OffsetDateTime};

use super::quota::ValidUse;
use crate::model::{Environment, KeyId, OrgId, UsageCount, UseOutcome, VerificationCode};
use crate::ports::UsageBatch;

const OUTCOMES: usize = UseOutcome::COUNT;

/// One key's uses since the last flush.
#[derive(Debug, Clone)]
pub(crate) struct KeyTally {
    pub org: OrgId,
    pub environment: Environment,
    pub last_used: Option<OffsetDateTime>,
    /// Counts by day (nearly always one), indexed by [`UseOutcome::index`].
    pub days: Vec<(Date, [i64; OUTCOMES])>,
}

impl KeyTally {
    fn new(of: UseOf<'_>) -> Self {
        Self { org: of.org.clone(), environment: of.environment, last_used: None, days: Vec::with_capacity(1) }
    }

    fn add(&mut self, day: Date, outcome: UseOutcome, delta: i64) {
        let slot = match self.days.iter_mut().position(|(d, _)| *d == day) {
            Some(i) => i,
            None => {
                self.days.push((day, [0; OUTCOMES]));
                self.days.len() - 1
            }
        };
        self.days[slot].1[outcome.index()] += delta;
    }

    /// Its valid uses, by day, as the quota takes them off once written.
    fn valid_uses<'a>(&'a self, key: &'a KeyId) -> impl Iterator<Item = ValidUse> + 'a {
        self.days.iter().filter(|(_, counts)| counts[UseOutcome::VALID.index()] != 0).map(move |(day, counts)| {
            ValidUse {
                key: key.clone(),
                org: self.org.clone(),
                environment: self.environment,
                day: *day,
                count: counts[UseOutcome::VALID.index()],
            }
        })
    }

    /// The non-zero counts, as the store takes them.
    fn counts<'a>(&'a self, key: &'a KeyId) -> impl Iterator<Item = UsageCount> + 'a {
        self.days.iter().flat_map(move |(day, counts)| {
            UseOutcome::all().filter(|o| counts[o.index()] != 0).map(move |outcome| UsageCount {
                key_id: key.clone(),
                day: *day,
                outcome,
                count: counts[outcome.index()],
            })
        })
    }
}

/// Key ids are ours, never chosen by a caller: a fast hash is safe here, and this map is
/// touched on every authenticated request.
type Pending = HashMap<KeyId, KeyTally, RandomState>;

/// The uses gathered since the last batch was taken.
#[derive(Debug, Default)]
struct Gathered {
    keys: Pending,
    /// When the first of them was counted.
    since: Option<OffsetDateTime>,
}

/// Who a counted use belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UseOf<'a> {
    pub key: &'a KeyId,
    pub org: &'a OrgId,
    pub environment: Environment,
}

/// Refusals (failures other than [`crate::ports::StoreError::Unavailable`]) after which a
/// batch is split into one batch per key, and a one-key batch dropped.
pub(crate) const MAX_REFUSALS: u32 = 3;

/// A batch taken from memory and not yet written.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub batch: UsageBatch,
    /// Its valid uses, with their organizations: the quota's unwritten counts until written.
    pub valid: Vec<ValidUse>,
    /// When its oldest use was counted.
    oldest: OffsetDateTime,
    refusals: u32,
}

/// What became of a batch the store refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterRefusal {
    /// Kept, to be written again first.
    Kept,
    /// Split into one batch per key, kept in its place.
    Split,
    /// Given up: these uses of its one key are lost.
    Dropped(u64),
}

#[derive(Debug, Default)]
pub(crate) struct UsageTracker {
    writer: String,
    pending: Mutex<Gathered>,
    /// Batches whose write failed: retried as they are, with their own sequence, before
    /// anything newer, so that a write that did commit is never applied twice.
    unconfirmed: Mutex<VecDeque<Held>>,
    /// Last uses a write left for a later batch (their key's row was held by another
    /// transaction): written with the next batch gathered.
    deferred: Mutex<HashMap<KeyId, OffsetDateTime, RandomState>>,
    next_sequence: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) flushed_rows: AtomicU64,
    /// Uses never written: their key was deleted first, or the store refused them for good.
    pub(crate) dropped_uses: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data stays consistent whatever a panicking holder did: keep using it.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The uses a batch holds for `key` (or for all keys): the sum of its counts, which a
/// reclassification (-1 valid, +1 refused) leaves as it was.
fn uses_of(batch: &UsageBatch, key: Option<&KeyId>) -> u64 {
    let sum: i64 = batch.counts.iter().filter(|c| key.is_none_or(|k| &c.key_id == k)).map(|c| c.count).sum();
    u64::try_from(sum).unwrap_or(0)
}

impl UsageTracker {
    pub(crate) fn new(writer: String) -> Self {
        Self { writer, ..Self::default() }
    }

    /// Counts one use with `outcome` at `at`; a successful one also moves the key's last use.
    pub(crate) fn record(&self, of: UseOf<'_>, at: OffsetDateTime, outcome: UseOutcome) {
        let mut pending = lock(&self.pending);
        pending.since.get_or_insert(at);
        // One lookup when the key was seen already (nearly always); its id is copied only once.
        let tally = match pending.keys.get_mut(of.key) {
            Some(tally) => tally,
            None => pending.keys.entry(of.key.clone()).or_insert_with(|| KeyTally::new(of)),
        };
        tally.add(at.date(), outcome, 1);
        if outcome.is_success() && tally.last_used.is_none_or(|seen| seen < at) {
            tally.last_used = Some(at);
        }
    }

    /// A use counted as `from` on `day` turned out to be refused (a scope lacking, the quota
    /// used up, found `now`): it counts as `to` instead.
    pub(crate) fn reclassify(
        &self,
        of: UseOf<'_>,
        day: Date,
        from: UseOutcome,
        to: VerificationCode,
        now: OffsetDateTime,
    ) {
        let mut pending = lock(&self.pending);
        pending.since.get_or_insert(now);
        let tally = pending.keys.entry(of.key.clone()).or_insert_with(|| KeyTally::new(of));
        // If the valid use was flushed already, the -1 lands with the next flush: the sum holds.
        tally.add(day, from, -1);
        tally.add(day, UseOutcome::Verified(to), 1);
    }

    /// The key's last use not yet written, if any.
    pub(crate) fn pending_last_use(&self, key: &KeyId) -> Option<OffsetDateTime> {
        let from_pending = lock(&self.pending).keys.get(key).and_then(|t| t.last_used);
        let from_unconfirmed = lock(&self.unconfirmed)
            .iter()
            .filter_map(|h| h.batch.last_used.iter().find(|(k, _)| k == key).map(|(_, at)| *at))
            .max();
        let from_deferred = lock(&self.deferred).get(key).copied();
        from_pending.max(from_unconfirmed).max(from_deferred)
    }

    /// Keeps last uses a write left unwritten, for the next batch (the latest of each key).
    pub(crate) fn defer_last_uses(&self, last_uses: &[(KeyId, OffsetDateTime)]) {
        let mut deferred = lock(&self.deferred);
        for (key, at) in last_uses {
            let kept = deferred.entry(key.clone()).or_insert(*at);
            *kept = (*kept).max(*at);
        }
    }

    /// The organization's counts not yet written, from `from` on (a batch whose write failed
    /// shows once the retry, within a flush interval, has written it).
    pub(crate) fn pending_counts(&self, org: &OrgId, from: Date) -> Vec<(UsageCount, Environment)> {
        let mut found = Vec::new();
        for (key, tally) in lock(&self.pending).keys.iter().filter(|(_, t)| &t.org == org) {
            found.extend(tally.counts(key).filter(|c| c.day >= from).map(|c| (c, tally.environment)));
        }
        found
    }

    /// When the oldest use held in memory and not yet written was counted.
    pub(crate) fn oldest_unwritten(&self) -> Option<OffsetDateTime> {
        let held = lock(&self.unconfirmed).iter().map(|h| h.oldest).min();
        let gathered = lock(&self.pending).since;
        match (held, gathered) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The first batch whose write failed, to write again before anything newer.
    pub(crate) fn take_unconfirmed(&self) -> Option<Held> {
        lock(&self.unconfirmed).pop_front()
    }

    /// What gathered since the last batch, as a new batch.
    pub(crate) fn gather(&self) -> Option<Held> {
        let (drained, since): (Vec<(KeyId, KeyTally)>, _) = {
            let mut pending = lock(&self.pending);
            (pending.keys.drain().collect(), pending.since.take())
        };
        let mut batch = UsageBatch { writer: self.writer.clone(), ..UsageBatch::default() };
        let mut valid = Vec::new();
        for (key, tally) in drained {
            if let Some(at) = tally.last_used {
                batch.last_used.push((key.clone(), at));
            }
            batch.counts.extend(tally.counts(&key));
            valid.extend(tally.valid_uses(&key));
        }
        let deferred: Vec<_> = lock(&self.deferred).drain().collect();
        for (key, at) in deferred {
            match batch.last_used.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = slot.1.max(at),
                None => batch.last_used.push((key, at)),
            }
        }
        if batch.is_empty() {
            return None;
        }
        // Always set when a use was counted.
        let oldest = since.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        batch.sequence = self.next_sequence();
        Some(Held { batch, valid, oldest, refusals: 0 })
    }

    fn next_sequence(&self) -> u64 {
        self.next_sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The batch was written, except the keys `missing` (deleted) and the last uses
    /// `deferred` (kept for the next batch): count it, and the uses dropped with the missing
    /// keys. Returns the rows written and the uses dropped.
    pub(crate) fn confirm(&self, held: &Held, missing: &[KeyId], deferred: &[(KeyId, OffsetDateTime)]) -> (usize, u64) {
        self.defer_last_uses(deferred);
        let batch = &held.batch;
        let rows = batch.last_used.iter().filter(|(k, _)| !missing.contains(k)).count().saturating_sub(deferred.len())
            + batch.counts.iter().filter(|c| !missing.contains(&c.key_id)).count();
        let dropped: u64 = missing.iter().map(|k| uses_of(batch, Some(k))).sum();
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flushed_rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.dropped_uses.fetch_add(dropped, Ordering::Relaxed);
        (rows, dropped)
    }

    /// The batch's write failed, perhaps after committing: keep it to write again as it is.
    pub(crate) fn keep_unconfirmed(&self, held: Held) {
        lock(&self.unconfirmed).push_front(held);
    }

    /// The store refused the batch for a reason a retry may not cure (its transaction rolled
    /// back: nothing of it was applied). Kept, up to [`MAX_REFUSALS`]; then a batch of many
    /// keys is split into one batch per key with new sequences (so that one key the store
    /// refuses holds back no other), and a batch of one key is dropped.
    pub(crate) fn refused(&self, mut held: Held) -> AfterRefusal {
        held.refusals += 1;
        if held.refusals < MAX_REFUSALS {
            self.keep_unconfirmed(held);
            return AfterRefusal::Kept;
        }
        let mut keys: Vec<&KeyId> =
            held.batch.last_used.iter().map(|(k, _)| k).chain(held.batch.counts.iter().map(|c| &c.key_id)).collect();
        keys.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        keys.dedup();
        if keys.len() <= 1 {
            let dropped = uses_of(&held.batch, None);
            self.dropped_uses.fetch_add(dropped, Ordering::Relaxed);
            return AfterRefusal::Dropped(dropped);
        }
        let parts: Vec<Held> = keys
            .into_iter()
            .map(|key| Held {
                batch: UsageBatch {
                    writer: held.batch.writer.clone(),
                    sequence: self.next_sequence(),
                    last_used: held.batch.last_used.iter().filter(|(k, _)| k == key).cloned().collect(),
                    counts: held.batch.counts.iter().filter(|c| &c.key_id == key).cloned().collect(),
                },
                valid: held.valid.iter().filter(|v| &v.key == key).cloned().collect(),
                oldest: held.oldest,
                refusals: 0,
            })
            .collect();
        let mut unconfirmed = lock(&self.unconfirmed);
        for part in parts.into_iter().rev() {
            unconfirmed.push_front(part);
        }
        AfterRefusal::Split
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::*;

    fn key(id: &str) -> KeyId {
        KeyId::new(id).expect("valid id")
    }

    fn count(tracker: &UsageTracker, key: &KeyId, at: OffsetDateTime) {
        let org = OrgId::new("org_1").expect("valid id");
        tracker.record(UseOf { key, org: &org, environment: Environment::Live }, at, UseOutcome::VALID);
    }

    #[test]
    fn the_oldest_unwritten_use_is_held_until_its_batch_is_written() {
        let tracker = UsageTracker::new("w".into());
        let a = key("key_a");
        assert_eq!(tracker.oldest_unwritten(), None);
        count(&tracker, &a, NOW);
        count(&tracker, &a, NOW + time::Duration::seconds(5));
        let held = tracker.gather().expect("a batch");
        count(&tracker, &a, NOW + time::Duration::seconds(9));
        tracker.keep_unconfirmed(held);
        assert_eq!(tracker.oldest_unwritten(), Some(NOW), "the failed batch's oldest use");
        let retried = tracker.take_unconfirmed().expect("the failed batch");
        tracker.confirm(&retried, &[], &[]);
        assert_eq!(tracker.oldest_unwritten(), Some(NOW + time::Duration::seconds(9)));
        tracker.confirm(&tracker.gather().expect("the rest"), &[], &[]);
        assert_eq!(tracker.oldest_unwritten(), None);
    }

    #[test]
    fn a_batch_refused_again_and_again_is_split_by_key_and_only_a_refused_keys_uses_are_dropped() {
        let tracker = UsageTracker::new("w".into());
        let (a, b) = (key("key_a"), key("key_b"));
        count(&tracker, &a, NOW);
        count(&tracker, &a, NOW);
        count(&tracker, &b, NOW);
        let mut held = tracker.gather().expect("a batch");
        let first = held.batch.sequence;
        for _ in 1..MAX_REFUSALS {
            assert_eq!(tracker.refused(held), AfterRefusal::Kept);
            held = tracker.take_unconfirmed().expect("kept");
            assert_eq!(held.batch.sequence, first, "retried as it was");
        }
        assert_eq!(tracker.refused(held), AfterRefusal::Split);
        let mut part_a = tracker.take_unconfirmed().expect("a's batch");
        let part_b = tracker.take_unconfirmed().expect("b's batch");
        assert_eq!((part_a.batch.last_used[0].0.clone(), part_b.batch.last_used[0].0.clone()), (a, b));
        assert!(part_a.batch.sequence > first && part_b.batch.sequence > part_a.batch.sequence);
        tracker.keep_unconfirmed(part_b);
        for _ in 1..MAX_REFUSALS {
            assert_eq!(tracker.refused(part_a), AfterRefusal::Kept);
            part_a = tracker.take_unconfirmed().expect("kept");
        }
        assert_eq!(tracker.refused(part_a), AfterRefusal::Dropped(2));
        assert_eq!(tracker.dropped_uses.load(Ordering::Relaxed), 2);
        let part_b = tracker.take_unconfirmed().expect("b's batch, still held");
        assert_eq!(part_b.batch.counts[0].count, 1);
    }
}
