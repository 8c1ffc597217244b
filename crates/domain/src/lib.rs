//! The Account API's domain: entities that can only hold valid values, the ports the
//! adapters implement, and the services that hold every business rule.
//!
//! This crate knows no web framework and no database, so that other services can depend
//! on it alone (for example to verify API keys).

pub mod model;
pub mod ports;
pub mod service;

pub use model::*;
pub use ports::*;
pub use service::*;
