//! Timestamp cells: RFC 3339 text or Unix time as a number of seconds or milliseconds.
//!
//! A number is read as milliseconds when its magnitude is at least 10^11 (10^11 seconds is
//! the year 5138, 10^11 milliseconds is March 1973), and as seconds otherwise; fractions of
//! a second are kept to the millisecond.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Numbers at least this large are Unix milliseconds, smaller ones Unix seconds.
const MILLIS_THRESHOLD: f64 = 1e11;

/// Parses one timestamp cell; `None` when it is neither RFC 3339 nor a finite number.
pub fn parse(text: &str) -> Option<Millis> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(n) = text.parse::<f64>() {
        if !n.is_finite() {
            return None;
        }
        let millis = if n.abs() >= MILLIS_THRESHOLD { n } else { n * 1000.0 };
        // Beyond what chrono can represent the value is surely a mistake.
        let millis = millis.round();
        return (millis.abs() < 8.0e15).then_some(millis as i64);
    }
    DateTime::parse_from_rfc3339(text).ok().map(|d| d.timestamp_millis())
}

/// RFC 3339 in UTC, with milliseconds only when they are not zero.
pub fn format(t: Millis) -> String {
    match DateTime::<Utc>::from_timestamp_millis(t) {
        Some(d) if t % 1000 == 0 => d.to_rfc3339_opts(SecondsFormat::Secs, true),
        Some(d) => d.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => format!("{t} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse("1970-01-01T00:00:10Z"), Some(10_000));
        assert_eq!(parse("1970-01-01T01:00:10+01:00"), Some(10_000));
        assert_eq!(parse(" 2024-05-01T12:00:00.250Z "), Some(1_714_564_800_250));
    }

    #[test]
    fn unix_seconds_and_milliseconds() {
        assert_eq!(parse("1714564800"), Some(1_714_564_800_000));
        assert_eq!(parse("1714564800.5"), Some(1_714_564_800_500));
        assert_eq!(parse("1714564800250"), Some(1_714_564_800_250));
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("60"), Some(60_000));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "yesterday", "2024-05-01", "2024-13-01T00:00:00Z", "NaN", "inf", "1e300"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_as_utc_rfc3339() {
        assert_eq!(format(1_714_564_800_000), "2024-05-01T12:00:00Z");
        assert_eq!(format(1_714_564_800_250), "2024-05-01T12:00:00.250Z");
    }
}
