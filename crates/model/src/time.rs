//! Timestamps: milliseconds since the Unix epoch in storage, RFC 3339 on the wire.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the form every timestamp is stored in (portable SQL).
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// Renders stored milliseconds as RFC 3339 in UTC with millisecond precision.
pub fn rfc3339_millis(millis: i64) -> String {
    match jiff::Timestamp::from_millisecond(millis) {
        Ok(timestamp) => format!("{timestamp:.3}"),
        Err(_) => String::from("1970-01-01T00:00:00.000Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_utc_with_millis() {
        assert_eq!(
            rfc3339_millis(1_448_365_151_000),
            "2015-11-24T11:39:11.000Z"
        );
    }
}
