//! Adapters of the Account API's ports: diesel + r2d2 repositories over SQLite or
//! PostgreSQL (chosen by the database URL), the system clock and the OS-random generator;
//! [`Assembly`], the one place the service is built for a role from [`Settings`]; and
//! [`Verifier`], all of it wired for another service that only verifies keys.

mod account_repository;
mod account_writes;
mod audit_trail;
mod background;
mod change_feed;
mod composition;
mod connection;
mod credential_cache;
mod credential_reads;
mod database;
mod database_url;
mod key_repository;
mod repo_error;
mod rows;
mod schema;
mod settings;
mod system;
#[cfg(feature = "testing")]
pub mod testing;
mod unique_row;
mod usage_store;
mod verifier;
mod webhook_delivery;
mod webhook_outbox;
mod webhook_repository;
mod webhook_schedule;

pub use account_repository::SqlAccountRepository;
pub use background::BackgroundTasks;
pub use change_feed::SqlChangeFeed;
pub use composition::{migrate_when_reachable, Assembly, Role};
pub use connection::DbConnection;
pub use credential_cache::InMemoryCredentialCache;
pub use database::{Database, PoolOptions};
pub use database_url::{DatabaseTarget, InvalidDatabaseUrl};
pub use key_repository::SqlKeyRepository;
pub use settings::{CacheSettings, Settings, WebhookSettings, MAX_FLUSH_INTERVAL, MAX_STALENESS};
pub use system::{OsRandomGenerator, SystemClock};
pub use verifier::Verifier;
pub use webhook_delivery::WebhookStats;
pub use webhook_repository::{ResolvingWebhookTargets, SqlWebhookRepository, WebhookKey};
pub use webhook_schedule::SqlWebhookSchedule;
