//! The composition root of the Account API: configuration, logging, database, wiring of
//! the adapters around the domain, and the HTTP server's life cycle.

pub mod config;
pub mod startup;
pub mod telemetry;

pub use config::Config;
pub use startup::Application;
