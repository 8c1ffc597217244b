//! Entities and value types of the domain.

mod allowed_ips;
mod api_key;
mod audit;
mod ids;
mod key_secret;
mod organization;
mod plan;
mod plan_period;
mod text;
mod usage;
mod webhook;
mod webhook_notice;

pub use allowed_ips::*;
pub use api_key::*;
pub use audit::*;
pub use ids::*;
pub use key_secret::*;
pub use organization::*;
pub use plan::*;
pub use plan_period::*;
pub use text::TextError;
pub use usage::*;
pub use webhook::*;
pub use webhook_notice::*;
