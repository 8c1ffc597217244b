//! When keys were last used, kept in memory and written to the store in batches, so that
//! authenticating costs no database write.

use std::collections::HashMap;
use std::sync::Mutex;

use foldhash::fast::RandomState;

use time::OffsetDateTime;

use crate::model::KeyId;

/// Key ids are ours, never chosen by a caller: a fast hash is safe here, and this map is
/// touched on every authenticated request.
type Pending = HashMap<KeyId, OffsetDateTime, RandomState>;

#[derive(Debug, Default)]
pub(crate) struct UsageTracker {
    pending: Mutex<Pending>,
}

impl UsageTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The map stays consistent whatever a panicking holder did: keep using it.
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn record(&self, key: &KeyId, at: OffsetDateTime) {
        let mut pending = self.lock();
        match pending.get_mut(key) {
            Some(seen) if *seen >= at => {}
            Some(seen) => *seen = at,
            None => {
                pending.insert(key.clone(), at);
            }
        }
    }

    pub(crate) fn pending(&self, key: &KeyId) -> Option<OffsetDateTime> {
        self.lock().get(key).copied()
    }

    pub(crate) fn drain(&self) -> Vec<(KeyId, OffsetDateTime)> {
        self.lock().drain().collect()
    }

    /// Puts back a batch that could not be written, keeping any newer time.
    pub(crate) fn restore(&self, batch: Vec<(KeyId, OffsetDateTime)>) {
        for (key, at) in batch {
            self.record(&key, at);
        }
    }
}
