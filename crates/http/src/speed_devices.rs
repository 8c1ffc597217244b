//! The speed devices of this adapter and what each replaces, exposed for the benchmark
//! `benches/speed_devices.rs` only: the figures that justify them are in
//! docs/performance.md.

use account_domain::Organization;
use actix_web::web::Bytes;
use time::OffsetDateTime;

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

/// A timestamp as the answers format it, by hand.
pub fn rfc3339_by_hand(at: OffsetDateTime) -> String {
    crate::timestamp::rfc3339(at)
}

/// The same timestamp through the `time` crate's formatter (whole seconds, `Z`).
pub fn rfc3339_with_time(at: OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at).to_offset(time::UtcOffset::UTC);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
