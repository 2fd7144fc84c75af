//! A workload trace: per container, CPU demand (cores) and memory (bytes) at every step, and
//! reading one from CSV.
//!
//! CSV format: a header naming the columns `time`, `container`, `cpu` and `memory_bytes` (in
//! any order; other columns are ignored), then one row per container per step. `time` is in
//! seconds (any origin); times must be evenly spaced, and every container needs a row at every
//! time. `cpu` is demand in cores (>= 0), `memory_bytes` a byte count (>= 0).

use std::collections::{BTreeMap, HashMap};

use crate::error::PolicyError;

#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub step_secs: f64,
    pub names: Vec<String>,
    /// `cpu[container][step]`, cores.
    pub cpu: Vec<Vec<f64>>,
    /// `memory[container][step]`, bytes.
    pub memory: Vec<Vec<u64>>,
}

const COLUMNS: [&str; 4] = ["time", "container", "cpu", "memory_bytes"];

impl Trace {
    pub fn steps(&self) -> usize {
        self.cpu.first().map_or(0, Vec::len)
    }

    /// Reads the CSV format described in the module docs.
    pub fn from_csv(text: &str) -> Result<Trace, PolicyError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| PolicyError::Trace("the file is empty".into()))?;
        let header: Vec<&str> = header.split(',').map(str::trim).collect();
        let mut col = [0usize; 4];
        for (i, name) in COLUMNS.iter().enumerate() {
            col[i] = header.iter().position(|h| h == name).ok_or_else(|| PolicyError::BadTrace {
                line: 1,
                why: format!("no `{name}` column (need {})", COLUMNS.join(",")),
            })?;
        }
        let mut rows: BTreeMap<i64, HashMap<String, (f64, u64)>> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for (i, line) in lines {
            let line_no = i + 1;
            let bad = |why: String| PolicyError::BadTrace { line: line_no, why };
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let field = |c: usize, name: &str| -> Result<&str, PolicyError> {
                match fields.get(col[c]) {
                    Some(v) if !v.is_empty() => Ok(v),
                    _ => Err(bad(format!("missing `{name}`"))),
                }
            };
            let number = |c: usize, name: &str| -> Result<f64, PolicyError> {
                let v = field(c, name)?;
                let x: f64 = v.parse().map_err(|_| bad(format!("`{name}` = `{v}` is not a number")))?;
                if !x.is_finite() || (c != 0 && x < 0.0) {
                    return Err(bad(format!("`{name}` = `{v}` must be a finite number >= 0")));
                }
                Ok(x)
            };
            let time = number(0, "time")?;
            let name = field(1, "container")?.to_string();
            let cpu = number(2, "cpu")?;
            let mem = number(3, "memory_bytes")?;
            let at = (time * 1000.0).round() as i64;
            if !order.contains(&name) {
                order.push(name.clone());
            }
            if rows.entry(at).or_default().insert(name.clone(), (cpu, mem.round() as u64)).is_some() {
                return Err(bad(format!("a second row for container `{name}` at time {time}")));
            }
        }
        if rows.is_empty() {
            return Err(PolicyError::Trace("no rows after the header".into()));
        }
        let times: Vec<i64> = rows.keys().copied().collect();
        let step_ms = if times.len() > 1 { times[1] - times[0] } else { 60_000 };
        for w in times.windows(2) {
            if w[1] - w[0] != step_ms {
                return Err(PolicyError::Trace(format!(
                    "times are not evenly spaced: {} s after {} s, but the first step is {} s",
                    w[1] as f64 / 1000.0,
                    w[0] as f64 / 1000.0,
                    step_ms as f64 / 1000.0
                )));
            }
        }
        let mut trace = Trace {
            step_secs: step_ms as f64 / 1000.0,
            names: order.clone(),
            cpu: vec![Vec::with_capacity(times.len()); order.len()],
            memory: vec![Vec::with_capacity(times.len()); order.len()],
        };
        for (t, row) in &rows {
            for (i, name) in order.iter().enumerate() {
                let (cpu, mem) = row.get(name).ok_or_else(|| {
                    PolicyError::Trace(format!("container `{name}` has no row at time {} s", *t as f64 / 1000.0))
                })?;
                trace.cpu[i].push(*cpu);
                trace.memory[i].push(*mem);
            }
        }
        Ok(trace)
    }

    /// The trace as CSV in the format [`Trace::from_csv`] reads.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("time,container,cpu,memory_bytes\n");
        for t in 0..self.steps() {
            for (i, name) in self.names.iter().enumerate() {
                out.push_str(&format!(
                    "{},{name},{:.4},{}\n",
                    t as f64 * self.step_secs,
                    self.cpu[i][t],
                    self.memory[i][t]
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_trace() {
        let t =
            Trace::from_csv("container,time,cpu,memory_bytes\nw1,0,1.5,100\nw2,0,0.5,200\nw2,60,1,200\nw1,60,2,100\n")
                .unwrap();
        assert_eq!(t.step_secs, 60.0);
        assert_eq!(t.names, ["w1", "w2"]);
        assert_eq!(t.cpu, vec![vec![1.5, 2.0], vec![0.5, 1.0]]);
        assert_eq!(t.memory[1], vec![200, 200]);
        assert_eq!(Trace::from_csv(&t.to_csv()).unwrap(), t);
    }

    #[test]
    fn bad_traces_are_clear_errors() {
        let e = |s: &str| Trace::from_csv(s).unwrap_err().to_string();
        assert_eq!(e(""), "trace: the file is empty");
        assert!(e("time,container,cpu\n").contains("no `memory_bytes` column"));
        assert_eq!(e("time,container,cpu,memory_bytes\n0,a,lots,1\n"), "trace line 2: `cpu` = `lots` is not a number");
        assert_eq!(e("time,container,cpu,memory_bytes\n0,a,,1\n"), "trace line 2: missing `cpu`");
        assert_eq!(e("time,container,cpu,memory_bytes\n0,a,1\n"), "trace line 2: missing `memory_bytes`");
        assert!(e("time,container,cpu,memory_bytes\n0,a,-1,1\n").contains(">= 0"));
        assert!(
            e("time,container,cpu,memory_bytes\n0,a,1,1\n0,b,1,1\n60,a,1,1\n").contains("`b` has no row at time 60")
        );
        assert!(e("time,container,cpu,memory_bytes\n0,a,1,1\n60,a,1,1\n180,a,1,1\n").contains("not evenly spaced"));
        assert!(e("time,container,cpu,memory_bytes\n0,a,1,1\n0,a,1,1\n").contains("second row"));
    }
}
