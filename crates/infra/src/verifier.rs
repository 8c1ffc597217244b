//! An embeddable key verifier: another Rust service verifies the Account API's keys against
//! its database, with the same rules and credential cache as the server and no HTTP hop,
//! without wiring repositories, cache and change feed by hand.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let verifier = account_infra::Verifier::connect("postgres://verifier@db/accounts").await?;
//! let verdict = verifier.verify("mem_live_...", &[account_domain::Scope::Read], None).await?;
//! println!("{}", verdict.code.as_str());
//! verifier.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use account_domain::{AccountService, Scope, Scopes, Verification};
use anyhow::Context as _;

use crate::{Assembly, BackgroundTasks, DatabaseTarget, Role, Settings};

/// Verifies API keys against the Account API's database, giving the verdicts of
/// `POST /v1/internal/verify-key`.
///
/// It runs two tasks on the tokio runtime it was connected on: one reads the change feed
/// every `cache.sync_interval`, so a key revoked through the API (or any change published
/// to the feed) is refused within 1 s; the other writes the keys' last-use times every
/// `usage_flush_interval` ([`Settings`]). Call [`Self::shutdown`] before exiting so that the
/// last uses are written; dropping a verifier stops its tasks without writing them.
pub struct Verifier {
    service: Arc<AccountService>,
    database: DatabaseTarget,
    tasks: BackgroundTasks,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("database", &self.database).finish_non_exhaustive()
    }
}

impl Verifier {
    /// [`Self::connect_with`] the default settings on the database `database_url` names (as
    /// the server's `DATABASE_URL`: `sqlite://PATH`, a plain path, `postgres://…`).
    pub async fn connect(database_url: &str) -> anyhow::Result<Self> {
        Self::connect_with(Settings::for_url(database_url)?).await
    }

    /// Connects to the Account API's database, checks that it holds every migration this
    /// build expects, reads the change feed once, loads the recently used keys into the
    /// cache (the warm start), and starts the sync and usage-flush tasks with `tokio::spawn`
    /// (call it within a tokio runtime). Built as [`Role::Verifier`].
    ///
    /// It never migrates the database and never prunes the change feed (the server does
    /// both): a database that lacks a migration, or that cannot be reached now, is an
    /// error (run `account-api migrate` first).
    pub async fn connect_with(settings: Settings) -> anyhow::Result<Self> {
        let database = settings.database.clone();
        let assembly = Assembly::build(settings, Role::Verifier).await?;
        assembly.warm_start().await;
        let tasks = assembly.start(Arc::new(AtomicBool::new(true)));
        Ok(Self { service: assembly.service().clone(), database, tasks })
    }

    /// Verifies `key` as presented by a client from `client_ip` (`None`: unknown), requiring
    /// every scope of `scopes` (empty: none; repeats count once): the same verdict as
    /// `POST /v1/internal/verify-key` with the same key and scopes. A `valid` or
    /// `insufficient_scope` verdict records the key's use, written at the next usage flush.
    /// An error means the database could not answer (no verdict).
    pub async fn verify(&self, key: &str, scopes: &[Scope], client_ip: Option<IpAddr>) -> anyhow::Result<Verification> {
        let required = Scopes::of(scopes.iter().copied());
        self.service.verify_key(key, required.as_ref(), client_ip).await.context("could not verify the key")
    }

    /// Verifications answered from memory and those that read the database, since connecting
    /// (`None` when the cache is off): for the embedding service's metrics.
    pub fn cache_stats(&self) -> Option<(u64, u64)> {
        self.service.cache_stats()
    }

    /// Stops the sync and flush tasks, waiting for a flush in progress, then writes the
    /// last-use times still in memory. Call it before the process exits: uses recorded since
    /// the last flush are lost otherwise.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.tasks.shutdown().await.context("could not write the keys' last use at shutdown")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_can_be_shared_between_tasks_and_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Verifier>();
    }
}
