//! Another Rust service verifying API keys with the domain and infra crates directly, with
//! the same rules and cache as the Account API itself (no HTTP hop).
//!
//! ```sh
//! DATABASE_URL=sqlite://account-api.db cargo run -p account-infra --example verify_key -- mem_live_...
//! ```

use std::sync::Arc;
use std::time::Duration;

use account_domain::AccountService;
use account_infra::{
    Database, DatabaseTarget, InMemoryCredentialCache, OsRandomGenerator, PoolOptions, SqlAccountRepository,
    SqlChangeFeed, SqlKeyRepository, SystemClock,
};
use anyhow::Context as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let key = std::env::args().nth(1).context("usage: verify_key <API key>")?;
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://account-api.db".to_owned());
    let db = Database::new(DatabaseTarget::parse(&url)?, &PoolOptions::for_machine());
    // A reader of the Account API's database checks its schema and never migrates it (on a
    // blocking thread, as every diesel call).
    let check = db.clone();
    tokio::task::spawn_blocking(move || check.check_schema()).await.context("schema check task failed")??;

    // The same wiring as the server: a bounded cache kept true by the change feed. A
    // long-running service calls `sync_changes` every few hundred milliseconds.
    let feed = Arc::new(SqlChangeFeed::start(db.clone()).await?);
    let service = Arc::new(
        AccountService::new(
            Arc::new(SqlAccountRepository::new(db.clone())),
            Arc::new(SqlKeyRepository::new(db)),
            Arc::new(SystemClock),
            Arc::new(OsRandomGenerator),
        )
        .with_cache(
            Arc::new(InMemoryCredentialCache::new(10_000, InMemoryCredentialCache::DEFAULT_FOUND_TTL)),
            feed,
            Duration::from_secs(1),
        ),
    );
    service.sync_changes().await?;

    let verdict = service.verify_key(&key, None, None).await?;
    match &verdict.principal {
        Some(p) if verdict.is_valid() => println!(
            "valid: organization {} on plan {}, key {} ({}), scopes {:?}",
            p.org_id(),
            p.organization().plan.id,
            p.key_id(),
            p.environment(),
            p.scopes().iter().map(|s| s.as_str()).collect::<Vec<_>>()
        ),
        _ => println!("refused: {}", verdict.code.as_str()),
    }
    // Record the use (last_used_at) before exiting, as the server does at shutdown.
    service.flush_usage().await?;
    Ok(())
}
