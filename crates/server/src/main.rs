//! `account-api`: the Account API server and its operator commands.

use std::sync::Arc;

use account_domain::{
    day_text, month_is_final, AccountService, BillingMonth, CreateKeyRequest, Environment, EraseError, ExpiresInDays,
    IssueKeyError, KeyName, OverLimit, RequestMeta, Scopes, SetOrganizationActiveError, SetPlanIncludedError,
    SetPlanOverLimitError,
};
use account_infra::{Assembly, Database, Role};
use account_server::config::{self, Config};
use account_server::{telemetry, Application};
use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The Account API: organizations, plans and API keys over HTTP.
// `--help` ends with every environment variable read (`config::VARIABLES`), added in `main`.
#[derive(Debug, Parser)]
#[command(name = "account-api", version)]
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
    /// Operator actions on API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Key usage, for billing.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Print the OpenAPI 3.1 document (what GET /openapi.json serves).
    Openapi,
}

#[derive(Debug, Subcommand)]
enum PlansCommand {
    /// List the plans: id, name, base price in cents, requests included a month.
    List,
    /// Set the requests a month a plan includes; every running instance applies it within a second.
    SetIncluded {
        /// The plan's id, such as starter.
        plan_id: String,
        /// Valid verifications of live keys a month, 0 or more.
        #[arg(allow_negative_numbers = true)]
        requests: i64,
    },
    /// Set what a plan does past the requests it includes: block (verification of its
    /// organizations' live keys answers quota_exceeded) or bill (the excess is billed); every
    /// running instance applies it within a second.
    SetOverLimit {
        /// The plan's id, such as free.
        plan_id: String,
        /// block or bill.
        #[arg(value_parser = parse_over_limit)]
        over_limit: OverLimit,
    },
}

fn parse_over_limit(raw: &str) -> Result<OverLimit, String> {
    OverLimit::parse(raw).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum UsageCommand {
    /// Print a month's usage as CSV (org_id,plan_id,valid,refused,valid_test): one line per
    /// organization that existed during the month, zeros included. plan_id is the plan now.
    Export {
        /// The month, YYYY-MM (default: the previous month, UTC).
        #[arg(long)]
        month: Option<String>,
    },
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
    /// Erase a closed organization's personal data (an erasure request): name and email
    /// become erased+ORG_ID@invalid, key names and allowlists are cleared, client addresses
    /// and user agents leave its audit events; ids, plan periods and usage counts stay.
    Erase {
        /// The organization's id, such as org_0192...
        org_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Issue a key to an organization (one locked out of its account, for instance): the
    /// full key alone is printed on stdout, this once.
    Issue {
        /// The organization's id, such as org_0192...
        org_id: String,
        /// The key's name, 1 to 200 characters.
        #[arg(long, default_value = KeyName::DEFAULT)]
        name: String,
        /// The key's scopes, comma-separated: read, write.
        #[arg(long, default_value = "read,write")]
        scopes: String,
        /// live or test.
        #[arg(long, default_value = "live")]
        environment: String,
        /// Days until the key expires, 1 to 3650 (default: never).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        expires_in_days: Option<i64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Cli::command().after_help(config::variables_help()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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
            let db = Database::new(config.settings.database.clone(), &config.settings.pool);
            account_infra::migrate_when_reachable(&db, config.settings.connect_timeout).await
        }
        Command::Plans(PlansCommand::List) => {
            for plan in operator_service(&config).await?.list_plans().await? {
                println!("{}\t{}\t{}\t{}", plan.id, plan.name, plan.base_price_cents, plan.included_requests_per_month);
            }
            Ok(())
        }
        Command::Plans(PlansCommand::SetIncluded { plan_id, requests }) => {
            match operator_service(&config).await?.set_plan_included(&plan_id, requests).await {
                Ok(plan) => {
                    println!("{} now includes {} requests a month", plan.id, plan.included_requests_per_month);
                    Ok(())
                }
                Err(SetPlanIncludedError::UnknownPlan) => anyhow::bail!("no plan has the id {plan_id}"),
                Err(SetPlanIncludedError::Negative) => anyhow::bail!("the requests included must be 0 or more"),
                Err(SetPlanIncludedError::Store(e)) => Err(e.into()),
            }
        }
        Command::Plans(PlansCommand::SetOverLimit { plan_id, over_limit }) => {
            match operator_service(&config).await?.set_plan_over_limit(&plan_id, over_limit).await {
                Ok(plan) => {
                    println!("{} now does {} past what it includes", plan.id, plan.over_limit.as_str());
                    Ok(())
                }
                Err(SetPlanOverLimitError::UnknownPlan) => anyhow::bail!("no plan has the id {plan_id}"),
                Err(SetPlanOverLimitError::Store(e)) => Err(e.into()),
            }
        }
        Command::Usage(UsageCommand::Export { month }) => export_usage(&config, month.as_deref()).await,
        Command::Openapi => unreachable!("answered before configuration is read"),
        Command::Orgs(OrgsCommand::Erase { org_id }) => {
            match operator_service(&config).await?.erase_organization(&org_id, &RequestMeta::operator()).await {
                Ok(org) => {
                    println!("{} erased: its name and email are now {}", org.id, org.email);
                    Ok(())
                }
                Err(EraseError::NotFound) => anyhow::bail!("no organization has the id {org_id}"),
                Err(e @ EraseError::StillOpen) => anyhow::bail!("{org_id}: {e}"),
                Err(EraseError::Store(e)) => Err(e.into()),
            }
        }
        Command::Orgs(command) => {
            let (org_id, active) = match command {
                OrgsCommand::Deactivate { org_id } => (org_id, false),
                OrgsCommand::Activate { org_id } => (org_id, true),
                OrgsCommand::Erase { .. } => unreachable!("answered above"),
            };
            let service = operator_service(&config).await?;
            match service.set_organization_active(&org_id, active, &RequestMeta::operator()).await {
                Ok(org) => {
                    println!("{} is now {}", org.id, if org.is_active { "active" } else { "inactive" });
                    Ok(())
                }
                Err(SetOrganizationActiveError::NotFound) => anyhow::bail!("no organization has the id {org_id}"),
                Err(e @ SetOrganizationActiveError::Closed) => anyhow::bail!("{org_id}: {e}"),
                Err(SetOrganizationActiveError::Store(e)) => Err(e.into()),
            }
        }
        Command::Keys(KeysCommand::Issue { org_id, name, scopes, environment, expires_in_days }) => {
            let request = issue_request(&name, &scopes, &environment, expires_in_days)?;
            let service = operator_service(&config).await?;
            let issued = match service.issue_key(&org_id, request, &RequestMeta::operator()).await {
                Ok(issued) => issued,
                Err(IssueKeyError::UnknownOrganization) => anyhow::bail!("no organization has the id {org_id}"),
                Err(e @ IssueKeyError::Closed) => anyhow::bail!("{org_id}: {e}"),
                Err(IssueKeyError::KeyLimitReached(max)) => anyhow::bail!(
                    "{org_id} already has the most active keys allowed, {max} (MAX_ACTIVE_KEYS_PER_ORG): no key was \
                     issued; revoke one of them first or raise the limit"
                ),
                Err(IssueKeyError::Store(e)) => return Err(e.into()),
            };
            let key = &issued.created.key;
            eprintln!("issued key {} ({}) to {}", key.id, key.name.as_str(), key.org_id);
            if !issued.organization.is_active {
                eprintln!(
                    "Warning: {org_id} is inactive: the key works only once the organization is activated \
                     (account-api orgs activate {org_id})"
                );
            }
            println!("{}", issued.created.plaintext.expose());
            Ok(())
        }
    }
}

/// The key an operator asks for, each value checked by the domain's own type.
fn issue_request(
    name: &str,
    scopes: &str,
    environment: &str,
    expires_in_days: Option<i64>,
) -> anyhow::Result<CreateKeyRequest> {
    let name = KeyName::new(name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
    let words: Vec<&str> = scopes.split(',').map(str::trim).filter(|w| !w.is_empty()).collect();
    let scopes = Scopes::parse(&words).map_err(|e| anyhow::anyhow!("--scopes {e}"))?;
    let environment = Environment::new(environment).map_err(|e| anyhow::anyhow!("--environment {e}"))?;
    let expires_in =
        expires_in_days.map(ExpiresInDays::new).transpose().map_err(|e| anyhow::anyhow!("--expires-in-days {e}"))?;
    Ok(CreateKeyRequest::new(Some(name), Some(environment), Some(scopes), expires_in))
}

/// `usage export`: the month's CSV on stdout; on stderr, whether the figures may still grow.
async fn export_usage(config: &Config, month: Option<&str>) -> anyhow::Result<()> {
    let month = month.map(|raw| BillingMonth::parse(raw).with_context(|| format!("--month {raw}"))).transpose()?;
    let service = operator_service(config).await?;
    let now = service.now();
    let month = month.unwrap_or_else(|| BillingMonth::of(now.date()).previous());
    let rows = service.monthly_usage(month).await.context("could not read the month's usage")?;
    if !month_is_final(month, now, config.settings.usage_flush_interval) {
        eprintln!(
            "Note: the figures for {month} are not final: the month is not over, or running instances may not have \
             written their last counts yet (LAST_USED_FLUSH_SECS after midnight UTC)"
        );
    }
    let mut out =
        String::from("org_id,plan_id,valid,refused,valid_test,period_start,period_end,included,base_price_cents\n");
    for row in rows {
        let (period, counts) = (&row.period, &row.counts);
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            row.org_id,
            period.plan.id,
            counts.valid,
            counts.refused,
            counts.valid_test,
            day_text(period.start),
            day_text(period.end),
            period.included(),
            period.base_price_cents()
        ));
    }
    print!("{out}");
    Ok(())
}

/// The domain service over the configured database, built for one-off operator commands.
async fn operator_service(config: &Config) -> anyhow::Result<Arc<AccountService>> {
    let assembly = Assembly::build(config.settings.clone(), Role::Operator).await?;
    Ok(assembly.service().clone())
}
