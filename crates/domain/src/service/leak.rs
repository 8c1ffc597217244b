//! Reports of leaked keys: holding a key is proof enough to kill it.

use thiserror::Error;

use super::AccountService;
use crate::model::{PlaintextKey, RequestMeta};

#[derive(Debug, Error)]
pub enum ReportLeakError {
    #[error("`keys` must hold 1 to 100 keys")]
    InvalidCount,
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

impl AccountService {
    pub const MAX_LEAK_REPORT: usize = 100;

    /// Revokes every valid key among `presented` and answers how many it revoked: nothing
    /// about keys that are malformed, unknown or already revoked.
    pub async fn report_leaked_keys(&self, presented: &[String], meta: &RequestMeta) -> Result<usize, ReportLeakError> {
        if presented.is_empty() || presented.len() > Self::MAX_LEAK_REPORT {
            return Err(ReportLeakError::InvalidCount);
        }
        let mut hashes: Vec<_> =
            presented.iter().filter_map(|k| PlaintextKey::parse(k).ok()).map(|k| k.hash()).collect();
        hashes.sort_by_key(|h| h.to_hex());
        hashes.dedup();
        if hashes.is_empty() {
            return Ok(0);
        }
        let revoked = self.keys.revoke_leaked(&hashes, self.clock.now(), meta).await?;
        if revoked > 0 {
            self.runtime.after_change().await;
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::*;

    #[tokio::test]
    async fn only_well_formed_keys_reach_the_store_once_each() {
        let key = PlaintextKey::assemble(Environment::Live, &secret_body()).expose().to_owned();
        let hash = PlaintextKey::parse(&key).expect("valid").hash();
        let mut ports = Ports::new();
        ports
            .keys
            .expect_revoke_leaked()
            .withf(move |hashes, _, _| hashes == [hash])
            .times(1)
            .returning(|_, _, _| Ok(1));
        let reported = vec![key.clone(), key, "mem_live_garbage".to_owned()];
        assert_eq!(ports.service().report_leaked_keys(&reported, &RequestMeta::default()).await.expect("ran"), 1);
    }

    #[tokio::test]
    async fn nothing_valid_means_no_lookup() {
        let mut ports = Ports::new();
        ports.keys.expect_revoke_leaked().never();
        let service = ports.service();
        assert_eq!(service.report_leaked_keys(&["nope".to_owned()], &RequestMeta::default()).await.expect("ran"), 0);
        assert!(matches!(
            service.report_leaked_keys(&[], &RequestMeta::default()).await,
            Err(ReportLeakError::InvalidCount)
        ));
        let many = vec!["x".to_owned(); 101];
        assert!(matches!(
            service.report_leaked_keys(&many, &RequestMeta::default()).await,
            Err(ReportLeakError::InvalidCount)
        ));
    }
}
