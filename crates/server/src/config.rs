//! One typed configuration, read from the environment at start. An invalid value stops the
//! start with a message naming the variable and what it accepts.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use account_domain::UsageRetention;
use account_http::{InternalToken, LimitSettings, TrustedProxies, TrustedProxiesError};
use account_infra::{CacheSettings, DatabaseTarget, PoolOptions, Settings, WebhookKey, WebhookSettings};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{variable}={value:?} is not valid: expected {expected}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Every environment variable the server reads, with a line on what it sets: the list
/// `account-api --help` prints, held by the tests to what [`Config::from_lookup`] and the
/// log filter read. docs/operations.md details each.
pub const VARIABLES: &[(&str, &str)] = &[
    ("DATABASE_URL", "sqlite://PATH, a file path or postgres://... (default sqlite://account-api.db)"),
    ("BIND_ADDR", "host:port to listen on (default 127.0.0.1:8080)"),
    ("DATABASE_POOL_SIZE", "database connections per instance, at most"),
    ("DATABASE_TIMEOUT_MS", "how long a request waits for a connection"),
    ("DATABASE_CONNECT_TIMEOUT_S", "how long the start waits for the database"),
    ("LAST_USED_FLUSH_SECS", "how often last uses and usage counts are written"),
    ("USAGE_RETENTION_DAYS", "how long daily usage counts are kept"),
    ("CACHE_MAX_KEYS", "credentials cached per instance (0: no cache)"),
    ("CACHE_SYNC_INTERVAL_MS", "how often the change feed is read"),
    ("CACHE_TTL_SECS", "how long a cached key is trusted (changes made by SQL by hand)"),
    ("CACHE_WARM_START_SECS", "keys used within this long are loaded at start"),
    ("RATE_LIMIT_SIGNUPS_PER_HOUR", "signups per address (0: no limit)"),
    ("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "failed authentications per address (0: no limit)"),
    ("RATE_LIMIT_LEAK_REPORTS_PER_HOUR", "leak reports per address (0: no limit)"),
    ("RATE_LIMIT_WRITES_PER_MINUTE", "key writes per organization (0: no limit)"),
    ("TRUSTED_PROXIES", "proxies whose X-Forwarded-For is believed"),
    ("MAX_ACTIVE_KEYS_PER_ORG", "active keys an organization may hold"),
    ("INTERNAL_SERVICE_TOKEN", "enables POST /v1/internal/verify-key"),
    ("WEBHOOK_SECRET_KEY", "32 bytes, base64: seals webhook secrets (unset: no webhooks)"),
    ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "1: webhooks may target loopback and private addresses"),
    ("WEBHOOK_TIMEOUT_MS", "how long a webhook receiver has to answer 2xx"),
    ("WEBHOOK_RETRY_HOURS", "how long a webhook event is retried before it fails"),
    ("WEBHOOK_SCHEDULE_SECS", "how often expiry and usage webhook notices are looked for"),
    ("LOG_FORMAT", "json or pretty"),
    ("RUST_LOG", "log filter (default info)"),
];

/// The configuration part of `--help`, from [`VARIABLES`].
pub fn variables_help() -> String {
    let width = VARIABLES.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut text = String::from("Environment (an empty value counts as unset; docs/operations.md details each):\n");
    for (name, what) in VARIABLES {
        text.push_str(&format!("  {name:width$}  {what}\n"));
    }
    text
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// What the service is built from: `DATABASE_URL`, `DATABASE_POOL_SIZE`,
    /// `DATABASE_TIMEOUT_MS`, `DATABASE_CONNECT_TIMEOUT_S`, `LAST_USED_FLUSH_SECS`,
    /// `USAGE_RETENTION_DAYS`, `CACHE_*` and `MAX_ACTIVE_KEYS_PER_ORG`; defaults are
    /// [`Settings::new`]'s.
    pub settings: Settings,
    /// `BIND_ADDR`: `host:port`; port 0 picks a free port.
    pub bind_addr: SocketAddr,
    /// `RATE_LIMIT_SIGNUPS_PER_HOUR`, `RATE_LIMIT_AUTH_FAILURES_PER_MINUTE`,
    /// `RATE_LIMIT_LEAK_REPORTS_PER_HOUR`, `RATE_LIMIT_WRITES_PER_MINUTE`, `TRUSTED_PROXIES`.
    pub limits: LimitSettings,
    /// `INTERNAL_SERVICE_TOKEN`: enables `POST /v1/internal/verify-key` for other services.
    pub internal_token: Option<InternalToken>,
    /// `LOG_FORMAT`: `json` or `pretty`; default pretty on a terminal, json otherwise.
    pub log_format: Option<LogFormat>,
}

impl Config {
    pub const DEFAULT_DATABASE_URL: &'static str = "sqlite://account-api.db";
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let database_url = get("DATABASE_URL").unwrap_or_else(|| Self::DEFAULT_DATABASE_URL.to_owned());
        let database = DatabaseTarget::parse(&database_url).map_err(|_| ConfigError {
            variable: "DATABASE_URL",
            value: redact_url(&database_url),
            expected: "sqlite://PATH, a plain file path, or postgres://USER@HOST:PORT/DB",
        })?;
        let defaults = Settings::new(database.clone());
        let pool_size: u32 =
            parse(&get, "DATABASE_POOL_SIZE", "a whole number from 1 to 1000", |n: &u32| (1..=1000).contains(n))?
                .unwrap_or(defaults.pool.max_size);
        let checkout_timeout =
            parse(&get, "DATABASE_TIMEOUT_MS", "milliseconds from 1 to 60000", |n: &u64| (1..=60_000).contains(n))?
                .map_or(defaults.pool.checkout_timeout, Duration::from_millis);
        let connect_timeout =
            parse(&get, "DATABASE_CONNECT_TIMEOUT_S", "seconds from 0 to 3600", |n: &u64| *n <= 3600)?
                .map_or(defaults.connect_timeout, Duration::from_secs);
        let usage_flush_interval =
            parse(&get, "LAST_USED_FLUSH_SECS", "seconds from 1 to 60", |n: &u64| (1..=60).contains(n))?
                .map_or(defaults.usage_flush_interval, Duration::from_secs);
        let retention_days: u32 =
            parse(&get, "USAGE_RETENTION_DAYS", "days from 92 to 3650", |n: &u32| UsageRetention::new(*n).is_some())?
                .unwrap_or(defaults.usage_retention.days());
        let signups_per_hour: u32 =
            parse(&get, "RATE_LIMIT_SIGNUPS_PER_HOUR", "a whole number, 0 for no limit", |_: &u32| true)?.unwrap_or(10);
        let auth_failures_per_minute: u32 =
            parse(&get, "RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "a whole number, 0 for no limit", |_: &u32| true)?
                .unwrap_or(30);
        let leak_reports_per_hour: u32 =
            parse(&get, "RATE_LIMIT_LEAK_REPORTS_PER_HOUR", "a whole number, 0 for no limit", |_: &u32| true)?
                .unwrap_or(20);
        let writes_per_minute: u32 =
            parse(&get, "RATE_LIMIT_WRITES_PER_MINUTE", "a whole number, 0 for no limit", |_: &u32| true)?
                .unwrap_or(300);
        let internal_token = match get("INTERNAL_SERVICE_TOKEN") {
            None => None,
            Some(token) if token.trim().len() >= 16 => Some(InternalToken::new(token.trim())),
            Some(_) => {
                return Err(ConfigError {
                    variable: "INTERNAL_SERVICE_TOKEN",
                    value: "[REDACTED]".to_owned(),
                    expected: "at least 16 characters (or unset: no verification route)",
                })
            }
        };
        let webhook_key = match get("WEBHOOK_SECRET_KEY") {
            None => None,
            Some(raw) => Some(WebhookKey::from_base64(&raw).ok_or(ConfigError {
                variable: "WEBHOOK_SECRET_KEY",
                value: "[REDACTED]".to_owned(),
                expected: "32 bytes in base64, such as the output of `openssl rand -base64 32` (or unset: no webhooks)",
            })?),
        };
        let allow_private_targets = match get("WEBHOOK_ALLOW_PRIVATE_TARGETS").as_deref().map(str::trim) {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(ConfigError {
                    variable: "WEBHOOK_ALLOW_PRIVATE_TARGETS",
                    value: other.to_owned(),
                    expected: "1 (allow non-public targets) or 0",
                })
            }
        };
        let webhook_timeout =
            parse(&get, "WEBHOOK_TIMEOUT_MS", "milliseconds from 100 to 60000", |n: &u64| (100..=60_000).contains(n))?
                .map_or(defaults.webhooks.timeout, Duration::from_millis);
        let webhook_retry = parse(&get, "WEBHOOK_RETRY_HOURS", "hours from 1 to 168", |n: &u64| (1..=168).contains(n))?
            .map_or(defaults.webhooks.retry_for, |h| Duration::from_secs(h * 3600));
        let webhook_schedule =
            parse(&get, "WEBHOOK_SCHEDULE_SECS", "seconds from 1 to 3600", |n: &u64| (1..=3600).contains(n))?
                .map_or(defaults.webhooks.schedule_interval, Duration::from_secs);
        let trusted_proxies = match get("TRUSTED_PROXIES") {
            None => TrustedProxies::default(),
            Some(raw) => TrustedProxies::parse(&raw).map_err(|e| ConfigError {
                variable: "TRUSTED_PROXIES",
                value: raw,
                expected: match e {
                    TrustedProxiesError::NotAnAddress(_) => {
                        "a comma-separated list of IP addresses or CIDR blocks such as 10.0.0.0/8"
                    }
                    TrustedProxiesError::EveryAddress(_) => {
                        "blocks narrower than /0 (a /0 such as 0.0.0.0/0, ::/0 or ::ffff:0.0.0.0/96 would believe \
                         any client's X-Forwarded-For): list only your proxies"
                    }
                },
            })?,
        };
        let max_active_keys: u32 =
            parse(&get, "MAX_ACTIVE_KEYS_PER_ORG", "a whole number of keys from 1 to 100000", |n: &u32| {
                (1..=100_000).contains(n)
            })?
            .unwrap_or(defaults.max_active_keys);
        let cache_max_keys: u64 =
            parse(&get, "CACHE_MAX_KEYS", "a whole number of keys from 0 (no cache) to 10000000", |n: &u64| {
                *n <= 10_000_000
            })?
            .unwrap_or(defaults.cache.max_keys);
        let sync_interval =
            parse(&get, "CACHE_SYNC_INTERVAL_MS", "milliseconds from 10 to 500", |n: &u64| (10..=500).contains(n))?
                .map_or(defaults.cache.sync_interval, Duration::from_millis);
        let ttl = parse(&get, "CACHE_TTL_SECS", "seconds from 1 to 3600", |n: &u64| (1..=3600).contains(n))?
            .map_or(defaults.cache.ttl, Duration::from_secs);
        let warm_start =
            parse(&get, "CACHE_WARM_START_SECS", "seconds from 0 (no warm start) to 2592000 (30 days)", |n: &u64| {
                *n <= 2_592_000
            })?
            .map_or(defaults.cache.warm_start, Duration::from_secs);
        let bind_addr = match get("BIND_ADDR") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(raw) => resolve(&raw).ok_or(ConfigError {
                variable: "BIND_ADDR",
                value: raw,
                expected: "host:port such as 127.0.0.1:8080 or localhost:8080",
            })?,
        };
        let log_format = match get("LOG_FORMAT").as_deref() {
            None => None,
            Some("json") => Some(LogFormat::Json),
            Some("pretty") => Some(LogFormat::Pretty),
            Some(other) => {
                return Err(ConfigError { variable: "LOG_FORMAT", value: other.to_owned(), expected: "json or pretty" })
            }
        };
        let settings = Settings {
            pool: PoolOptions { max_size: pool_size, checkout_timeout },
            connect_timeout,
            usage_flush_interval,
            usage_retention: UsageRetention::new(retention_days).unwrap_or(defaults.usage_retention),
            cache: CacheSettings { max_keys: cache_max_keys, sync_interval, ttl, warm_start, ..defaults.cache },
            max_active_keys,
            database,
            webhooks: WebhookSettings {
                secret_key: webhook_key,
                allow_private_targets,
                timeout: webhook_timeout,
                retry_for: webhook_retry,
                schedule_interval: webhook_schedule,
            },
        };
        Ok(Self {
            settings,
            bind_addr,
            limits: LimitSettings {
                signups_per_hour,
                leak_reports_per_hour,
                auth_failures_per_minute,
                writes_per_minute,
                trusted_proxies,
            },
            internal_token,
            log_format,
        })
    }
}

fn parse<T: FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    expected: &'static str,
    valid: impl Fn(&T) -> bool,
) -> Result<Option<T>, ConfigError> {
    let Some(raw) = get(variable) else {
        return Ok(None);
    };
    match raw.trim().parse::<T>() {
        Ok(value) if valid(&value) => Ok(Some(value)),
        _ => Err(ConfigError { variable, value: raw, expected }),
    }
}

/// The first address `host:port` names (a literal address, or a name such as `localhost`).
fn resolve(raw: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    raw.trim().to_socket_addrs().ok()?.next()
}

/// A URL as it may be shown in an error: without its password.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn every_variable_read_is_listed_for_help_and_no_other() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        Config::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        })
        .expect("defaults");
        // The log filter reads its own variable (telemetry.rs).
        asked.borrow_mut().insert(tracing_subscriber::EnvFilter::DEFAULT_ENV.to_owned());
        let listed: std::collections::BTreeSet<String> = VARIABLES.iter().map(|(name, _)| (*name).to_owned()).collect();
        assert_eq!(asked.into_inner(), listed);
        assert_eq!(listed.len(), VARIABLES.len(), "each variable once");
        let help = variables_help();
        assert!(VARIABLES.iter().all(|(name, _)| help.contains(name)), "{help}");
    }

    #[test]
    fn no_configuration_means_sqlite_on_localhost_8080() {
        let config = config(&[]).expect("defaults");
        assert_eq!(config.settings.database, DatabaseTarget::Sqlite("account-api.db".into()));
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.settings.pool.checkout_timeout, Duration::from_secs(2));
        assert_eq!(config.settings.connect_timeout, Duration::from_secs(30));
        assert_eq!(config.limits.writes_per_minute, 300);
        let off = self::config(&[("RATE_LIMIT_WRITES_PER_MINUTE", "0")]).expect("0 turns it off");
        assert_eq!(off.limits.writes_per_minute, 0);
    }

    #[test]
    fn unset_variables_take_the_defaults_every_role_is_built_with() {
        let config = config(&[]).expect("defaults");
        let defaults = Settings::new(DatabaseTarget::Sqlite("account-api.db".into()));
        assert_eq!(format!("{:?}", config.settings), format!("{defaults:?}"));
    }

    #[test]
    fn bind_addr_accepts_a_host_name() {
        let config = config(&[("BIND_ADDR", "localhost:9000")]).expect("resolves");
        assert_eq!(config.bind_addr.port(), 9000);
        assert!(config.bind_addr.ip().is_loopback());
    }

    #[test]
    fn trusted_proxies_that_would_trust_every_address_stop_the_start() {
        for every in ["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96", "10.0.0.0/8, ::/0"] {
            let err = config(&[("TRUSTED_PROXIES", every)]).expect_err(every);
            assert_eq!(err.variable, "TRUSTED_PROXIES");
            assert!(err.to_string().contains("narrower than /0"), "{err}");
        }
        let proxies = config(&[("TRUSTED_PROXIES", "10.0.0.0/8, ::ffff:192.0.2.0/120")]).expect("valid");
        assert!(format!("{:?}", proxies.limits.trusted_proxies).contains("192.0.2.0/24"));
    }

    #[test]
    fn invalid_values_name_the_variable_and_what_it_accepts() {
        for (variable, value) in [
            ("BIND_ADDR", "localhost"),
            ("DATABASE_URL", "mysql://root:secret@db/app"),
            ("DATABASE_POOL_SIZE", "0"),
            ("DATABASE_TIMEOUT_MS", "soon"),
            ("LAST_USED_FLUSH_SECS", "600"),
            ("USAGE_RETENTION_DAYS", "91"),
            ("USAGE_RETENTION_DAYS", "3651"),
            ("LOG_FORMAT", "xml"),
            ("CACHE_SYNC_INTERVAL_MS", "2000"),
            ("CACHE_MAX_KEYS", "-1"),
            ("CACHE_TTL_SECS", "0"),
            ("CACHE_TTL_SECS", "3601"),
            ("CACHE_WARM_START_SECS", "2592001"),
            ("CACHE_WARM_START_SECS", "-1"),
            ("RATE_LIMIT_SIGNUPS_PER_HOUR", "ten"),
            ("RATE_LIMIT_AUTH_FAILURES_PER_MINUTE", "-3"),
            ("TRUSTED_PROXIES", "10.0.0.0/40"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, 0.0.0.0/0"),
            ("TRUSTED_PROXIES", "::/0"),
            ("TRUSTED_PROXIES", "::ffff:0.0.0.0/96"),
            ("MAX_ACTIVE_KEYS_PER_ORG", "0"),
            ("INTERNAL_SERVICE_TOKEN", "short"),
            ("RATE_LIMIT_LEAK_REPORTS_PER_HOUR", "x"),
            ("RATE_LIMIT_WRITES_PER_MINUTE", "4294967296"),
        ] {
            let err = config(&[(variable, value)]).expect_err(variable);
            assert_eq!(err.variable, variable);
            assert!(err.to_string().contains(variable), "{err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }
}
