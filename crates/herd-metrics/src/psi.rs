//! Pressure stall information (PSI): the format of `/proc/pressure/{cpu,memory,io}` and of a
//! cgroup v2 directory's `cpu.pressure`, `memory.pressure` and `io.pressure`.
//!
//! ```text
//! some avg10=1.26 avg60=3.06 avg300=7.99 total=852201529
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//!
//! `avg*` are the percentage of wall time some (or all) runnable tasks were stalled over the
//! last 10, 60 and 300 seconds; `total` is the cumulative stall time in microseconds. The
//! `full` line is absent from `cpu` pressure on kernels before 5.13.

use serde::{Deserialize, Serialize};

use crate::parse::{ParseError, bad_line};

/// One line of a pressure file.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PsiLine {
    /// Percent of the last 10 s.
    pub avg10: f64,
    /// Percent of the last 60 s.
    pub avg60: f64,
    /// Percent of the last 300 s.
    pub avg300: f64,
    /// Cumulative stall time, microseconds.
    pub total_us: u64,
}

/// A whole pressure file.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pressure {
    /// Some tasks stalled.
    pub some: PsiLine,
    /// All non-idle tasks stalled at once (absent for CPU on older kernels).
    pub full: Option<PsiLine>,
}

/// Parses a pressure file. `some` is required; `full` is optional; unknown keys are ignored.
pub fn parse_pressure(s: &str) -> Result<Pressure, ParseError> {
    if s.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut some = None;
    let mut full = None;
    for (i, line) in s.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let Some(kind) = fields.next() else { continue };
        let slot = match kind {
            "some" => &mut some,
            "full" => &mut full,
            _ => continue,
        };
        let (mut a10, mut a60, mut a300, mut total) = (None, None, None, None);
        for f in fields {
            let Some((k, v)) = f.split_once('=') else {
                return Err(bad_line(i, "expected `key=value` fields", line));
            };
            let bad = || bad_line(i, "expected a number", line);
            match k {
                "avg10" => a10 = Some(parse_avg(v).ok_or_else(bad)?),
                "avg60" => a60 = Some(parse_avg(v).ok_or_else(bad)?),
                "avg300" => a300 = Some(parse_avg(v).ok_or_else(bad)?),
                "total" => total = Some(v.parse::<u64>().map_err(|_| bad())?),
                _ => {}
            }
        }
        match (a10, a60, a300, total) {
            (Some(avg10), Some(avg60), Some(avg300), Some(total_us)) => {
                *slot = Some(PsiLine { avg10, avg60, avg300, total_us })
            }
            _ => return Err(bad_line(i, "expected avg10=, avg60=, avg300= and total=", line)),
        }
    }
    Ok(Pressure { some: some.ok_or(ParseError::Missing("`some` line"))?, full })
}

fn parse_avg(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_node_cpu_pressure() {
        // /proc/pressure/cpu of this machine (kernel 6.18).
        let p = parse_pressure(include_str!("../tests/fixtures/proc/pressure_cpu")).unwrap();
        assert!(p.some.avg10 >= 0.0 && p.some.avg300 >= 0.0);
        assert!(p.some.total_us > 0);
        assert!(p.full.is_some());
    }

    #[test]
    fn recorded_cgroup_pressure() {
        // io.pressure of a cgroup on the v2 mount (/sys/fs/cgroup/unified/...) after a dd.
        let p = parse_pressure(include_str!("../tests/fixtures/v2-hybrid/io.pressure")).unwrap();
        assert_eq!(p.some.avg10, 0.32);
        assert_eq!(p.some.total_us, 209895);
        assert_eq!(p.full.unwrap().total_us, 209676);
    }

    #[test]
    fn some_only_and_errors() {
        let p = parse_pressure("some avg10=1.50 avg60=0.25 avg300=0.00 total=12\n").unwrap();
        assert_eq!(p.some, PsiLine { avg10: 1.5, avg60: 0.25, avg300: 0.0, total_us: 12 });
        assert_eq!(p.full, None);
        assert_eq!(parse_pressure(""), Err(ParseError::Empty));
        assert_eq!(
            parse_pressure("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
            Err(ParseError::Missing("`some` line"))
        );
        assert!(matches!(
            parse_pressure("some avg10=x avg60=0.00 avg300=0.00 total=0"),
            Err(ParseError::BadLine { line: 1, .. })
        ));
        assert!(parse_pressure("some avg10=0.00 total=0").is_err());
        assert!(parse_pressure("some avg10=0.00 avg60 avg300=0.00 total=0").is_err());
        assert!(parse_pressure("some avg10=NaN avg60=0.00 avg300=0.00 total=0").is_err());
    }
}
