//! The actix-web adapter of the Account API: routes, request and response types, the
//! authentication extractor, and the one mapping from domain errors to HTTP.

mod account_render;
mod auth;
mod body;
mod client_ip;
mod console;
pub mod decode;
mod envelope;
mod error;
mod limits;
mod metrics;
mod middleware;
mod openapi;
mod routes;
#[doc(hidden)]
pub mod speed_devices;
mod timestamp;

pub use client_ip::{TrustedProxies, TrustedProxiesError};
pub use error::{ApiError, ErrorCode};
pub use limits::{AbuseLimits, LimitSettings};
pub use metrics::Metrics;
pub use openapi::openapi_json;
pub use routes::{configure, InternalToken, ReadinessCheck, MAX_BODY_BYTES};
