//! Timestamps as the API shows them: RFC 3339, UTC, whole seconds, `Z`.

use time::{OffsetDateTime, UtcOffset};

/// Formats by hand: this runs on every response of the hot path, and a format description
/// interpreted at run time costs several times more.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    let year = at.year();
    if !(0..=9999).contains(&year) {
        // Outside RFC 3339's four-digit years; never produced by this service's clock.
        return format!(
            "{year:+}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        );
    }
    let mut out = [0u8; 20];
    let mut put = |pos: usize, value: u32, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            out[pos + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year.unsigned_abs(), 4);
    put(5, u32::from(u8::from(at.month())), 2);
    put(8, u32::from(at.day()), 2);
    put(11, u32::from(at.hour()), 2);
    put(14, u32::from(at.minute()), 2);
    put(17, u32::from(at.second()), 2);
    for (pos, sep) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'Z')] {
        out[pos] = sep;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn times_are_utc_with_z() {
        assert_eq!(super::rfc3339(datetime!(2024-01-01 01:00:00.75 +01:00)), "2024-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(datetime!(2024-12-31 23:59:59 UTC)), "2024-12-31T23:59:59Z");
        assert_eq!(super::rfc3339(datetime!(0987-03-04 05:06:07 UTC)), "0987-03-04T05:06:07Z");
    }
}
