//! Logging through tracing, as JSON lines or human-readable text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; `RUST_LOG` filters (default `info`).
pub fn init(format: Option<LogFormat>) {
    let filter = EnvFilter::try_from_default_env()
        // actix logs each malformed request from a client at ERROR: noise, not our fault.
        .unwrap_or_else(|_| EnvFilter::new("info,actix_http::h1::dispatcher=off"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() { LogFormat::Pretty } else { LogFormat::Json });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // A second call (tests) keeps the first subscriber.
    let _ = installed;
}
