//! Timestamps as the API shows them: RFC 3339, UTC, whole seconds, `Z`.

use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.to_offset(UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| unreachable!("a four-digit year formats"))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn times_are_utc_with_z() {
        assert_eq!(
            super::rfc3339(datetime!(2024-01-01 01:00:00.75 +01:00)),
            "2024-01-01T00:00:00Z"
        );
    }
}
