//! Writing the usage buffer to the store: one batch at a time, each applied once, a batch
//! refused for good split by key, and what had to be dropped reported.

use super::usage_buffer::AfterRefusal;
use super::Runtime;
use crate::ports::{KeyRepository, StoreError, StoreResult, UsageRecorded};

/// What one [`AccountService::flush_usage`] wrote, and what it gave up.
#[derive(Debug, Default)]
pub struct UsageFlush {
    /// Rows written: last uses and counts.
    pub rows: usize,
    pub dropped: Vec<DroppedUses>,
}

/// Uses counted in memory that will never be written.
#[derive(Debug)]
pub struct DroppedUses {
    /// Verifications lost (the sum of their counts).
    pub uses: u64,
    /// Of how many keys.
    pub keys: usize,
    /// `None`: the keys no longer exist (deleted with their organization, say). Otherwise
    /// the store refused the key's batch as many times as it takes to give
    /// up (`usage_buffer::MAX_REFUSALS`), the last time with this.
    pub refusal: Option<StoreError>,
}

impl UsageFlush {
    /// A failure, unless something was dropped: that is reported first.
    fn or_failure(self, e: StoreError) -> StoreResult<Self> {
        if self.dropped.is_empty() {
            Err(e)
        } else {
            Ok(self)
        }
    }
}

impl Runtime {
    /// Writes the uses gathered since the previous flush (last-use times and counts), in one
    /// batch. The uses of keys deleted meanwhile are dropped, the rest written. A batch that
    /// fails is kept and written again as it is, before anything newer (the store applies
    /// each batch once); one the store refuses for a reason other than being unavailable is
    /// split by key after a few refusals, and a key's batch refused as often is dropped
    /// (`UsageTracker::refused`). One flush at a time: a flush called while another
    /// runs (the final one at shutdown) waits for it, then writes the rest. A flush that
    /// dropped uses reports them even when a later batch then failed (that one is reported
    /// by the next flush). Then, the batches written, the quota's written counts are read
    /// again for the organizations verified since the last flush (`QuotaBook::to_refresh`).
    pub(crate) async fn flush_usage(&self, keys: &dyn KeyRepository) -> StoreResult<UsageFlush> {
        let _turn = self.usage_flush.lock().await;
        let flush = self.write_usage(keys).await?;
        self.refresh_quota(keys).await;
        Ok(flush)
    }

    /// The batches, under the flush's turn: each written one's valid uses leave the quota's
    /// unwritten counts (as do those dropped).
    async fn write_usage(&self, keys: &dyn KeyRepository) -> StoreResult<UsageFlush> {
        let mut flush = UsageFlush::default();
        // The uses gathered are taken once: under a steady load there is always more.
        let mut gathered = false;
        loop {
            let held = match self.usage.take_unconfirmed() {
                Some(held) => held,
                None if !gathered => {
                    gathered = true;
                    match self.usage.gather() {
                        Some(held) => held,
                        None => break,
                    }
                }
                None => break,
            };
            match keys.record_usage(&held.batch).await {
                Ok(UsageRecorded { missing, deferred }) => {
                    self.quota.settle(&held.valid);
                    let (rows, dropped) = self.usage.confirm(&held, &missing, &deferred);
                    flush.rows += rows;
                    if !missing.is_empty() {
                        flush.dropped.push(DroppedUses { uses: dropped, keys: missing.len(), refusal: None });
                    }
                }
                Err(e @ StoreError::Unavailable(_)) => {
                    self.usage.keep_unconfirmed(held);
                    return flush.or_failure(e);
                }
                Err(e) => {
                    let valid = held.valid.clone();
                    match self.usage.refused(held) {
                        AfterRefusal::Kept => return flush.or_failure(e),
                        AfterRefusal::Split => {}
                        AfterRefusal::Dropped(uses) => {
                            self.quota.settle(&valid);
                            flush.dropped.push(DroppedUses { uses, keys: 1, refusal: Some(e) });
                        }
                    }
                }
            }
        }
        Ok(flush)
    }

    /// Reads the written counts of the organizations verified since the last flush, under
    /// the flush's turn (no batch is being written: none is counted twice). A failed read
    /// leaves their terms to be read at their next verification.
    async fn refresh_quota(&self, keys: &dyn KeyRepository) {
        let (orgs, from) = self.quota.to_refresh();
        let Some(from) = from else { return };
        match keys.valid_uses_since(&orgs, from).await {
            Ok(rows) => self.quota.refreshed(&orgs, from, &rows),
            Err(_) => self.quota.refresh_failed(&orgs),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::DroppedUses;
    use crate::service::test_support::*;

    fn presented() -> Vec<u8> {
        PlaintextKey::assemble(Environment::Live, &secret_body()).expose().as_bytes().to_vec()
    }

    /// Ports whose store knows the one key and answers `times` usage writes as `answer` says
    /// (given the call's number, from 1), logging every batch it is given.
    fn scripted_store(
        times: usize,
        answer: impl Fn(usize) -> StoreResult<UsageRecorded> + Send + 'static,
    ) -> (Ports, Arc<std::sync::Mutex<Vec<UsageBatch>>>) {
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        let written = Arc::new(std::sync::Mutex::new(Vec::<UsageBatch>::new()));
        let log = written.clone();
        ports.keys.expect_record_usage().times(times).returning(move |b| {
            let mut log = log.lock().expect("log");
            log.push(b.clone());
            answer(log.len())
        });
        (ports, written)
    }

    #[tokio::test]
    async fn a_batch_that_fails_to_flush_is_written_again_as_it_was_before_newer_uses() {
        let key = presented();
        // The first write fails, as a commit whose outcome is unknown does.
        let (ports, written) = scripted_store(3, |call| match call {
            1 => Err(StoreError::Unavailable(anyhow::anyhow!("connection lost at commit"))),
            _ => Ok(UsageRecorded::default()),
        });
        let service = ports.service();
        service.authenticate(&key, None).await.expect("authenticated");
        assert!(service.flush_usage().await.is_err());
        service.authenticate(&key, None).await.expect("authenticated");
        service.authenticate(&key, None).await.expect("authenticated");
        assert_eq!(service.flush_usage().await.expect("second flush").rows, 4);
        let written = written.lock().expect("log");
        let valid = |b: &UsageBatch| b.counts.iter().map(|c| c.count).sum::<i64>();
        // The retry is the failed batch itself, same sequence, not merged with newer uses.
        assert_eq!(written[1], written[0]);
        assert_eq!((valid(&written[1]), valid(&written[2])), (1, 2));
        assert!(written[2].sequence > written[1].sequence);
        assert_eq!(service.usage_flush_stats(), (2, 4));
    }

    #[tokio::test]
    async fn uses_of_a_key_deleted_before_the_flush_are_dropped_and_counted_not_retried() {
        let mut ports = Ports::new();
        let key = presented();
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        // The store wrote nothing of the key: it was deleted with its organization.
        ports
            .keys
            .expect_record_usage()
            .times(1)
            .returning(|_| Ok(UsageRecorded { missing: vec![credential().key.id], ..UsageRecorded::default() }));
        let service = ports.service();
        for _ in 0..3 {
            service.authenticate(&key, None).await.expect("authenticated");
        }
        let flush = service.flush_usage().await.expect("flushed");
        assert_eq!(flush.rows, 0);
        assert!(matches!(flush.dropped[..], [DroppedUses { uses: 3, keys: 1, refusal: None }]), "{flush:?}");
        assert_eq!(service.usage_dropped(), 3);
        assert!(service.usage_unwritten_for().is_none(), "nothing held any more");
        assert_eq!(service.flush_usage().await.expect("nothing left").rows, 0);
    }

    #[tokio::test]
    async fn a_batch_refused_for_good_holds_newer_uses_back_only_until_it_is_dropped() {
        let key = presented();
        let (ports, written) = scripted_store(4, |call| match call {
            1..=3 => Err(anyhow::anyhow!("violates check constraint").into()),
            _ => Ok(UsageRecorded::default()),
        });
        let service = ports.service();
        service.authenticate(&key, None).await.expect("authenticated");
        assert!(service.flush_usage().await.is_err());
        assert!(service.flush_usage().await.is_err());
        service.authenticate(&key, None).await.expect("authenticated");
        service.authenticate(&key, None).await.expect("authenticated");
        // The third refusal gives the one-key batch up; the newer uses are written at once.
        let flush = service.flush_usage().await.expect("flushed");
        assert!(matches!(flush.dropped[..], [DroppedUses { uses: 1, keys: 1, refusal: Some(_) }]), "{flush:?}");
        assert_eq!(flush.rows, 2);
        assert_eq!(written.lock().expect("log")[3].counts[0].count, 2, "the newer uses, after three refusals");
        assert_eq!(service.usage_dropped(), 1);
    }

    #[tokio::test]
    async fn a_store_unavailable_however_long_loses_no_use() {
        let key = presented();
        let (ports, written) = scripted_store(11, |call| match call {
            1..=10 => Err(StoreError::Unavailable(anyhow::anyhow!("pool timed out"))),
            _ => Ok(UsageRecorded::default()),
        });
        let service = ports.service();
        service.authenticate(&key, None).await.expect("authenticated");
        for _ in 0..10 {
            assert!(service.flush_usage().await.is_err());
        }
        assert_eq!(service.usage_unwritten_for(), Some(std::time::Duration::ZERO), "held, by a clock stopped");
        assert_eq!(service.flush_usage().await.expect("flushed").rows, 2);
        assert_eq!(written.lock().expect("log")[10].counts[0].count, 1);
        assert_eq!(service.usage_dropped(), 0);
    }

    #[tokio::test]
    async fn a_last_use_the_store_left_for_later_is_written_with_the_next_batch() {
        let mut ports = Ports::new();
        ports.keys.expect_find_credential().returning(|_| Ok(Some(credential())));
        let mut calls = 0;
        ports.keys.expect_record_usage().times(2).returning(move |batch| {
            calls += 1;
            assert_eq!(batch.last_used, [(credential().key.id, NOW)], "call {calls}");
            let deferred = if calls == 1 { batch.last_used.clone() } else { vec![] };
            Ok(UsageRecorded { missing: vec![], deferred })
        });
        let service = ports.service();
        service.authenticate(&presented(), None).await.expect("authenticated");
        assert_eq!(service.flush_usage().await.expect("flushed").rows, 1, "the count, not the last use");
        assert_eq!(service.runtime.pending_last_use(&credential().key.id), Some(NOW), "still shown");
        assert_eq!(service.flush_usage().await.expect("flushed").rows, 1, "the last use, at last");
    }
}
