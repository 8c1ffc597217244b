//! Uses of keys, kept in memory and written to the store in batches, so that authenticating
//! costs no database write: when each key was last used, and how many verifications of it
//! ended with each outcome, by UTC day.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use foldhash::fast::RandomState;
use time::{Date, OffsetDateTime};

use crate::model::{Environment, KeyId, OrgId, UsageCount, VerificationCode};
use crate::ports::UsageBatch;

const OUTCOMES: usize = VerificationCode::ALL.len();

/// One key's uses since the last flush.
#[derive(Debug, Clone)]
pub(crate) struct KeyTally {
    pub org: OrgId,
    pub environment: Environment,
    pub last_used: Option<OffsetDateTime>,
    /// Counts by day (nearly always one), indexed by [`VerificationCode::index`].
    pub days: Vec<(Date, [i64; OUTCOMES])>,
}

impl KeyTally {
    fn new(of: UseOf<'_>) -> Self {
        Self { org: of.org.clone(), environment: of.environment, last_used: None, days: Vec::with_capacity(1) }
    }

    fn add(&mut self, day: Date, outcome: VerificationCode, delta: i64) {
        let slot = match self.days.iter_mut().position(|(d, _)| *d == day) {
            Some(i) => i,
            None => {
                self.days.push((day, [0; OUTCOMES]));
                self.days.len() - 1
            }
        };
        self.days[slot].1[outcome.index()] += delta;
    }

    /// The non-zero counts, as the store takes them.
    fn counts<'a>(&'a self, key: &'a KeyId) -> impl Iterator<Item = UsageCount> + 'a {
        self.days.iter().flat_map(move |(day, counts)| {
            VerificationCode::ALL.into_iter().filter(|o| counts[o.index()] != 0).map(move |outcome| UsageCount {
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

/// Who a counted use belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UseOf<'a> {
    pub key: &'a KeyId,
    pub org: &'a OrgId,
    pub environment: Environment,
}

#[derive(Debug, Default)]
pub(crate) struct UsageTracker {
    writer: String,
    pending: Mutex<Pending>,
    /// A batch whose write failed: retried as it is, with its own sequence, before anything
    /// newer, so that a write that did commit is never applied twice.
    unconfirmed: Mutex<Option<UsageBatch>>,
    next_sequence: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) flushed_rows: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data stays consistent whatever a panicking holder did: keep using it.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl UsageTracker {
    pub(crate) fn new(writer: String) -> Self {
        Self { writer, ..Self::default() }
    }

    /// Counts one verification with `outcome` at `at`; a valid one also moves the key's last use.
    pub(crate) fn record(&self, of: UseOf<'_>, at: OffsetDateTime, outcome: VerificationCode) {
        let mut pending = lock(&self.pending);
        // One lookup when the key was seen already (nearly always); its id is copied only once.
        let tally = match pending.get_mut(of.key) {
            Some(tally) => tally,
            None => pending.entry(of.key.clone()).or_insert_with(|| KeyTally::new(of)),
        };
        tally.add(at.date(), outcome, 1);
        if outcome == VerificationCode::Valid && tally.last_used.is_none_or(|seen| seen < at) {
            tally.last_used = Some(at);
        }
    }

    /// A use counted valid on `day` turned out to lack a scope: it counts as refused.
    pub(crate) fn reclassify(&self, of: UseOf<'_>, day: Date, to: VerificationCode) {
        let mut pending = lock(&self.pending);
        let tally = pending.entry(of.key.clone()).or_insert_with(|| KeyTally::new(of));
        // If the valid use was flushed already, the -1 lands with the next flush: the sum holds.
        tally.add(day, VerificationCode::Valid, -1);
        tally.add(day, to, 1);
    }

    /// The key's last use not yet written, if any.
    pub(crate) fn pending_last_use(&self, key: &KeyId) -> Option<OffsetDateTime> {
        let from_pending = lock(&self.pending).get(key).and_then(|t| t.last_used);
        let from_unconfirmed = lock(&self.unconfirmed)
            .as_ref()
            .and_then(|b| b.last_used.iter().find(|(k, _)| k == key).map(|(_, at)| *at));
        from_pending.max(from_unconfirmed)
    }

    /// The organization's counts not yet written, from `from` on (a batch whose write failed
    /// shows once the retry, within a flush interval, has written it).
    pub(crate) fn pending_counts(&self, org: &OrgId, from: Date) -> Vec<(UsageCount, Environment)> {
        let mut found = Vec::new();
        for (key, tally) in lock(&self.pending).iter().filter(|(_, t)| &t.org == org) {
            found.extend(tally.counts(key).filter(|c| c.day >= from).map(|c| (c, tally.environment)));
        }
        found
    }

    /// The batch to write next: the unconfirmed one if any, else what gathered since.
    pub(crate) fn next_batch(&self) -> Option<UsageBatch> {
        if let Some(batch) = lock(&self.unconfirmed).take() {
            return Some(batch);
        }
        let drained: Vec<(KeyId, KeyTally)> = lock(&self.pending).drain().collect();
        let mut batch = UsageBatch { writer: self.writer.clone(), ..UsageBatch::default() };
        for (key, tally) in drained {
            if let Some(at) = tally.last_used {
                batch.last_used.push((key.clone(), at));
            }
            batch.counts.extend(tally.counts(&key));
        }
        if batch.is_empty() {
            return None;
        }
        batch.sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed) + 1;
        Some(batch)
    }

    /// The batch was written: count it.
    pub(crate) fn confirm(&self, batch: &UsageBatch) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let rows = batch.last_used.len() + batch.counts.len();
        self.flushed_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// The batch's write failed (perhaps after committing): keep it to write again as it is.
    pub(crate) fn keep_unconfirmed(&self, batch: UsageBatch) {
        *lock(&self.unconfirmed) = Some(batch);
    }
}
