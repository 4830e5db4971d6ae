//! The quota day: which calendar day a submission counts against, and when it ends.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// The current quota day in `zone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuotaDay {
    /// `YYYY-MM-DD` in the quota time zone.
    pub(crate) day: String,
    /// When the next day starts, RFC 3339.
    pub(crate) resets_at: String,
    /// Seconds until then (at least 1), for `Retry-After`.
    pub(crate) seconds_left: u64,
}

/// The quota day containing `now`.
pub(crate) fn quota_day(zone: &TimeZone, now: Timestamp) -> QuotaDay {
    let zoned = now.to_zoned(zone.clone());
    let date = zoned.date();
    let next_midnight = date
        .checked_add(1.day())
        .ok()
        .and_then(|tomorrow| tomorrow.to_zoned(zone.clone()).ok())
        .map(|midnight| midnight.timestamp())
        .unwrap_or(now);
    let seconds_left = next_midnight
        .as_second()
        .saturating_sub(now.as_second())
        .max(1) as u64;
    QuotaDay {
        day: date.to_string(),
        resets_at: next_midnight.to_string(),
        seconds_left,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_day_turns_at_1600_utc() {
        let zone = TimeZone::get("Asia/Shanghai").expect("bundled tzdb");
        let before: Timestamp = "2026-11-28T15:59:00Z".parse().expect("timestamp");
        let after: Timestamp = "2026-11-28T16:00:00Z".parse().expect("timestamp");
        let day = quota_day(&zone, before);
        assert_eq!((day.day.as_str(), day.seconds_left), ("2026-11-28", 60));
        assert_eq!(day.resets_at, "2026-11-28T16:00:00Z");
        assert_eq!(quota_day(&zone, after).day, "2026-11-29");
    }
}
