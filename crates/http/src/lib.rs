//! The actix-web adapter of the Account API: routes, request and response types, the
//! authentication extractor, and the one mapping from domain errors to HTTP.

mod auth;
mod body;
mod dto;
mod envelope;
mod error;
mod middleware;
mod routes;
mod timestamp;

pub use error::ApiError;
pub use routes::{configure, ReadinessCheck, MAX_BODY_BYTES};
