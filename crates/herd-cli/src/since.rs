//! The times `herd logs --since` takes, as Docker takes them: a duration before now (`10m`,
//! `1h30m`, `2.5s`), a Unix timestamp in seconds (`1700000000`, `1700000000.5`), or a date and
//! time (RFC 3339 with its zone, `2024-05-01T12:00:00Z`, `2024-05-01T14:00:00+02:00`; without a
//! zone, `2024-05-01`, `2024-05-01T12:00`, `2024-05-01T12:00:00`, in local time).

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone};
use herd_proto::UnixMillis;

/// The time `text` names, in milliseconds since the Unix epoch; `now` is what durations count
/// back from.
pub fn parse_since(text: &str, now: UnixMillis) -> Result<UnixMillis, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "invalid time {text:?}: give a duration before now (10m, 1h30m), a Unix timestamp (1700000000) \
             or a date and time (2024-05-01T12:00:00Z, 2024-05-01)"
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    }
    if !text.contains('-') {
        return unix_seconds(text).ok_or_else(bad);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return millis(t.timestamp_millis()).ok_or_else(bad);
    }
    let local = |naive: NaiveDateTime| Local.from_local_datetime(&naive).earliest().map(|t| t.timestamp_millis());
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return local(naive).and_then(millis).ok_or_else(bad);
        }
    }
    if let Some((date, hour)) = text.split_once('T')
        && let (Ok(date), Ok(hour)) = (NaiveDate::parse_from_str(date, "%Y-%m-%d"), hour.parse::<u32>())
    {
        return date.and_hms_opt(hour, 0, 0).and_then(local).and_then(millis).ok_or_else(bad);
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date.and_hms_opt(0, 0, 0).and_then(local).and_then(millis).ok_or_else(bad);
    }
    Err(bad())
}

/// `SECONDS[.FRACTION]`.
fn unix_seconds(text: &str) -> Option<UnixMillis> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: u64 = format!("{frac:0<3}")[..3].parse().ok()?;
    secs.parse::<u64>().ok()?.checked_mul(1000)?.checked_add(ms)
}

fn millis(ms: i64) -> Option<UnixMillis> {
    u64::try_from(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_700_000_000_000;

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse_since("10m", NOW).unwrap(), NOW - 600_000);
        assert_eq!(parse_since("1h30m", NOW).unwrap(), NOW - 5_400_000);
        assert_eq!(parse_since("2.5s", NOW).unwrap(), NOW - 2_500);
        assert_eq!(parse_since("100000000h", NOW).unwrap(), 0);
    }

    #[test]
    fn unix_timestamps_are_seconds() {
        assert_eq!(parse_since("1700000000", NOW).unwrap(), 1_700_000_000_000);
        assert_eq!(parse_since("1700000000.25", NOW).unwrap(), 1_700_000_000_250);
        assert_eq!(parse_since("1700000000.000000001", NOW).unwrap(), 1_700_000_000_000);
        assert!(parse_since("17e9", NOW).is_err());
    }

    #[test]
    fn dates_with_and_without_zones() {
        assert_eq!(parse_since("2023-11-14T22:13:20Z", NOW).unwrap(), NOW);
        assert_eq!(parse_since("2023-11-15T00:13:20+02:00", NOW).unwrap(), NOW);
        assert_eq!(parse_since("2023-11-14T22:13:20.5Z", NOW).unwrap(), NOW + 500);
        let local = |y, mo, d, h, mi, s| {
            Local.with_ymd_and_hms(y, mo, d, h, mi, s).earliest().unwrap().timestamp_millis() as u64
        };
        assert_eq!(parse_since("2023-11-14T22:13:20", NOW).unwrap(), local(2023, 11, 14, 22, 13, 20));
        assert_eq!(parse_since("2023-11-14T22:13", NOW).unwrap(), local(2023, 11, 14, 22, 13, 0));
        assert_eq!(parse_since("2023-11-14T22", NOW).unwrap(), local(2023, 11, 14, 22, 0, 0));
        assert_eq!(parse_since("2023-11-14", NOW).unwrap(), local(2023, 11, 14, 0, 0, 0));
    }

    #[test]
    fn nonsense_is_explained() {
        for bad in ["", "yesterday", "2023-13-01", "10 parsecs", "-5m", "2023-11-14T25"] {
            let err = parse_since(bad, NOW).unwrap_err();
            assert!(err.starts_with("invalid time"), "{bad}: {err}");
        }
    }
}
