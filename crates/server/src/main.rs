//! `account-api`: the Account API server and its operator commands.

use std::sync::Arc;

use account_domain::{AccountService, RequestMeta, SetOrganizationActiveError};
use account_infra::{Database, OsRandomGenerator, SqlAccountRepository, SqlKeyRepository, SystemClock};
use account_server::{config::Config, startup, telemetry, Application};
use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// The Account API: organizations, plans and API keys over HTTP.
///
/// Configuration comes from the environment (see docs/operations.md): DATABASE_URL,
/// BIND_ADDR, DATABASE_POOL_SIZE, DATABASE_TIMEOUT_MS, DATABASE_CONNECT_TIMEOUT_S,
/// LAST_USED_FLUSH_SECS, CACHE_MAX_KEYS, CACHE_SYNC_INTERVAL_MS, RATE_LIMIT_SIGNUPS_PER_HOUR,
/// RATE_LIMIT_AUTH_FAILURES_PER_MINUTE, RATE_LIMIT_LEAK_REPORTS_PER_HOUR, TRUSTED_PROXIES,
/// MAX_ACTIVE_KEYS_PER_ORG, INTERNAL_SERVICE_TOKEN, LOG_FORMAT, RUST_LOG.
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
    /// The plan catalogue.
    #[command(subcommand)]
    Plans(PlansCommand),
    /// Operator actions on organizations.
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Print the OpenAPI 3.1 document (what GET /openapi.json serves).
    Openapi,
}

#[derive(Debug, Subcommand)]
enum PlansCommand {
    /// List the plans: id, name, base price in cents.
    List,
}

#[derive(Debug, Subcommand)]
enum OrgsCommand {
    /// Deactivate an organization: its keys get 403 on every running instance within a second.
    Deactivate {
        /// The organization's id, such as org_0192...
        org_id: String,
    },
    /// Activate an organization again.
    Activate {
        /// The organization's id, such as org_0192...
        org_id: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Openapi)) {
        print!("{}", account_http::openapi_json());
        return Ok(());
    }
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
        Command::Plans(PlansCommand::List) => {
            for plan in operator_service(&config).await?.list_plans().await? {
                println!("{}\t{}\t{}", plan.id, plan.name, plan.base_price_cents);
            }
            Ok(())
        }
        Command::Openapi => unreachable!("answered before configuration is read"),
        Command::Orgs(command) => {
            let (org_id, active) = match command {
                OrgsCommand::Deactivate { org_id } => (org_id, false),
                OrgsCommand::Activate { org_id } => (org_id, true),
            };
            let service = operator_service(&config).await?;
            match service.set_organization_active(&org_id, active, &RequestMeta::operator()).await {
                Ok(org) => {
                    println!("{} is now {}", org.id, if org.is_active { "active" } else { "inactive" });
                    Ok(())
                }
                Err(SetOrganizationActiveError::NotFound) => anyhow::bail!("no organization has the id {org_id}"),
                Err(SetOrganizationActiveError::Unknown(e)) => Err(e.into()),
            }
        }
    }
}

/// The domain service over the configured database, for one-off operator commands.
async fn operator_service(config: &Config) -> anyhow::Result<AccountService> {
    let db = Database::new(config.database.clone(), &config.pool);
    startup::migrate_when_reachable(&db, config.connect_timeout).await?;
    Ok(AccountService::new(
        Arc::new(SqlAccountRepository::new(db.clone())),
        Arc::new(SqlKeyRepository::new(db)),
        Arc::new(SystemClock),
        Arc::new(OsRandomGenerator),
    ))
}
