//! The Account API's domain: entities that can only hold valid values, the ports the
//! adapters implement, the use cases that hold every business rule (`service`), and the
//! machinery that makes them fast (`runtime`).
//!
//! This crate knows no web framework and no database, so that other services can depend
//! on it alone (for example to verify API keys).

pub mod model;
pub mod ports;
pub mod runtime;
pub mod service;

pub use model::*;
pub use ports::*;
pub use runtime::{Authentication, ClientAddress, DroppedUses, UsageFlush};
pub use service::*;
