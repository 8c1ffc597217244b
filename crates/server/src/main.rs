//! `account-api`: the Account API server and its operator commands.

use account_infra::Database;
use account_server::{config::Config, startup, telemetry, Application};
use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// The Account API: organizations, plans and API keys over HTTP.
///
/// Configuration comes from the environment: DATABASE_URL, BIND_ADDR, DATABASE_POOL_SIZE,
/// DATABASE_TIMEOUT_MS, DATABASE_CONNECT_TIMEOUT_S, LAST_USED_FLUSH_SECS, LOG_FORMAT, RUST_LOG.
#[derive(Debug, Parser)]
#[command(name = "account-api", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(config).await.context("could not start")?;
            app.run_until_stopped().await
        }
        Command::Migrate => {
            let db = Database::new(config.database.clone(), &config.pool);
            startup::migrate_when_reachable(&db, config.connect_timeout).await
        }
    }
}
