//! Parsing and printing of resource quantities: memory sizes and CPU shares.

use std::fmt;

/// A malformed quantity, with the text that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid memory size {0:?}: use a number with an optional unit b, k, m or g (for example 256m)")]
    Memory(String),
    #[error("invalid CPU count {0:?}: use a positive decimal number of CPUs (for example 0.5)")]
    Cpus(String),
    #[error(
        "invalid pids limit {0:?}: use a number of processes from 1 to 4194304 (the most Linux allows), or -1 for no limit"
    )]
    Pids(String),
}

/// The largest pids limit: Linux's `PID_MAX_LIMIT` on 64-bit machines (2^22). No more
/// processes can exist, and a cgroup's `pids.max` refuses anything larger.
pub const MAX_PIDS: u64 = 1 << 22;

/// Parses a pids limit the way `docker run --pids-limit` does: a number of processes, where 0
/// and -1 (any negative number) mean no limit (`None`). Above [`MAX_PIDS`] is an error.
///
/// ```
/// assert_eq!(herd_proto::units::parse_pids_limit("100"), Ok(Some(100)));
/// assert_eq!(herd_proto::units::parse_pids_limit("-1"), Ok(None));
/// assert!(herd_proto::units::parse_pids_limit("18446744073709551615").is_err());
/// ```
pub fn parse_pids_limit(text: &str) -> Result<Option<u64>, UnitError> {
    let err = || UnitError::Pids(text.to_string());
    let value: i64 = text.trim().parse().map_err(|_| err())?;
    match u64::try_from(value) {
        Err(_) | Ok(0) => Ok(None),
        Ok(v) if v <= MAX_PIDS => Ok(Some(v)),
        Ok(_) => Err(err()),
    }
}

/// Parses a memory size the way `docker run --memory` does: a number with an optional
/// unit `b`, `k`, `m`, `g` or `t` (binary multiples, case-insensitive, an optional trailing `b`/`ib`).
///
/// ```
/// assert_eq!(herd_proto::units::parse_memory("256m"), Ok(256 << 20));
/// assert_eq!(herd_proto::units::parse_memory("1.5GiB"), Ok(3 << 29));
/// ```
pub fn parse_memory(text: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Memory(text.to_string());
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let unit = unit.trim();
    let unit = unit.strip_suffix("ib").or_else(|| unit.strip_suffix('b')).unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(err()),
    };
    let value: f64 = num.parse().map_err(|_| err())?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

/// Parses a CPU count (`0.5`, `2`) into thousandths of a CPU.
///
/// ```
/// assert_eq!(herd_proto::units::parse_cpus("0.5"), Ok(500));
/// ```
pub fn parse_cpus(text: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Cpus(text.to_string());
    let value: f64 = text.trim().parse().map_err(|_| err())?;
    if !value.is_finite() || value <= 0.0 || value > 1_000_000.0 {
        return Err(err());
    }
    let milli = (value * 1000.0).round() as u64;
    if milli == 0 { Err(err()) } else { Ok(milli) }
}

/// A byte count printed with a binary unit: `256MiB`, `1.5GiB`, `512B`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{}B", self.0);
        }
        let mut v = self.0 as f64 / 1024.0;
        let mut i = 0;
        while v >= 1024.0 && i + 1 < UNITS.len() {
            v /= 1024.0;
            i += 1;
        }
        if (v - v.round()).abs() < 0.05 { write!(f, "{:.0}{}", v, UNITS[i]) } else { write!(f, "{:.1}{}", v, UNITS[i]) }
    }
}

/// Thousandths of a CPU printed as a decimal CPU count: `0.5`, `2`.
pub struct Cpus(pub u64);

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = self.0 % 1000;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{frac:03}");
            write!(f, "{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("1024"), Ok(1024));
        assert_eq!(parse_memory("10b"), Ok(10));
        assert_eq!(parse_memory("4k"), Ok(4096));
        assert_eq!(parse_memory("256m"), Ok(256 << 20));
        assert_eq!(parse_memory("256MB"), Ok(256 << 20));
        assert_eq!(parse_memory("2G"), Ok(2 << 30));
        assert_eq!(parse_memory("0.5g"), Ok(512 << 20));
        for bad in ["", "m", "12x", "-1m", "1..2m", "abc", "1 m m"] {
            assert!(parse_memory(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cpu_counts() {
        assert_eq!(parse_cpus("0.5"), Ok(500));
        assert_eq!(parse_cpus("2"), Ok(2000));
        assert_eq!(parse_cpus("0.25"), Ok(250));
        for bad in ["0", "-1", "abc", "", "0.0001", "inf", "NaN"] {
            assert!(parse_cpus(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn pids_limits() {
        assert_eq!(parse_pids_limit("1"), Ok(Some(1)));
        assert_eq!(parse_pids_limit(" 4194304 "), Ok(Some(MAX_PIDS)));
        assert_eq!(parse_pids_limit("0"), Ok(None));
        assert_eq!(parse_pids_limit("-1"), Ok(None));
        for bad in ["4194305", "18446744073709551615", "9223372036854775808", "1.5", "", "many"] {
            assert!(parse_pids_limit(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn printing() {
        assert_eq!(Bytes(512).to_string(), "512B");
        assert_eq!(Bytes(256 << 20).to_string(), "256MiB");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5GiB");
        assert_eq!(Cpus(500).to_string(), "0.5");
        assert_eq!(Cpus(2000).to_string(), "2");
        assert_eq!(Cpus(1250).to_string(), "1.25");
    }
}
