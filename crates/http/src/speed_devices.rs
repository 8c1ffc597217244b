//! The speed device of this adapter and what it replaces, exposed for the benchmark
//! `benches/speed_devices.rs` only: the figures that justify it are in docs/performance.md.

use account_domain::Organization;
use actix_web::web::Bytes;

use crate::envelope::Envelope;
use crate::routes::account::AccountDto;

/// The `GET /v1/account` body as the route answers it: from the worker's memo.
pub fn account_body_memoized(org: &Organization) -> Bytes {
    crate::account_render::account_body(org)
}

/// The same body serialized afresh, as it would be without the memo.
pub fn account_body_serialized(org: &Organization) -> Vec<u8> {
    serde_json::to_vec(&Envelope::new(AccountDto::from(org))).unwrap_or_default()
}
