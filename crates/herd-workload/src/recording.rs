//! A recording: each container's samples over time, one value (or none: not measured) per
//! field of [`FIELDS`]; read from CSV, built from the Control node's recorded series, and
//! written as the simulator's trace CSV.
//!
//! CSV format (the same one [`Recording::to_trace_csv`] writes, a superset of the trace CSV
//! `herd sim --trace` reads): a header naming the columns, then one row per container per
//! sample. `time` (seconds, any origin), `container` and `cpu` (cores) are required in every
//! row; `memory_bytes` and the other columns of [`FIELDS`] are optional, and an empty cell in
//! them means "not measured". Other columns are ignored and named in [`Recording::ignored`].

use std::collections::BTreeMap;

use crate::error::WorkloadError;

/// What a sample holds, in this order: the trace's `cpu` (cores) and `memory_bytes`, then the
/// recorded fields of the same names as the Control node's series (`herd_metrics`).
pub const FIELDS: [&str; 13] = [
    "cpu",
    "memory_bytes",
    "cpu_limit_pct",
    "throttled_pct",
    "blk_read_bps",
    "blk_write_bps",
    "net_rx_bps",
    "net_tx_bps",
    "pgfaults_per_s",
    "pids",
    "psi_cpu_some10",
    "psi_mem_some10",
    "psi_io_some10",
];

/// An index into [`FIELDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field(pub usize);

impl Field {
    pub const CPU: Field = Field(0);
    pub const MEMORY: Field = Field(1);
    pub const CPU_LIMIT_PCT: Field = Field(2);
    pub const THROTTLED_PCT: Field = Field(3);
    pub const BLK_READ: Field = Field(4);
    pub const BLK_WRITE: Field = Field(5);
    pub const NET_RX: Field = Field(6);
    pub const NET_TX: Field = Field(7);
    pub const PGFAULTS: Field = Field(8);
    pub const PIDS: Field = Field(9);
    pub const PSI_CPU: Field = Field(10);
    pub const PSI_MEM: Field = Field(11);
    pub const PSI_IO: Field = Field(12);

    pub fn name(self) -> &'static str {
        FIELDS[self.0]
    }

    /// The field of the Control node's container series this one comes from.
    pub fn recorded_name(self) -> &'static str {
        match self {
            Field::CPU => "cpu_cores",
            Field::MEMORY => "mem_bytes",
            f => f.name(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds, any origin.
    pub t: f64,
    pub values: [Option<f64>; FIELDS.len()],
}

impl Sample {
    pub fn get(&self, f: Field) -> Option<f64> {
        self.values[f.0]
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recording {
    /// Each container's samples, oldest first, by name.
    pub containers: BTreeMap<String, Vec<Sample>>,
    /// Columns of the CSV that were not used.
    pub ignored: Vec<String>,
}

impl Recording {
    /// Adds one sample of `container` (kept in time order).
    pub fn push(&mut self, container: &str, sample: Sample) {
        let v = self.containers.entry(container.to_string()).or_default();
        let at = v.partition_point(|s| s.t <= sample.t);
        v.insert(at, sample);
    }

    /// Adds the points of a recorded series of `name`: `fields` names its columns (as the
    /// Control node's series do, [`Field::recorded_name`]) and each point is a time in ms since
    /// the Unix epoch and one value per column. Points without a CPU figure are left out (a
    /// sample always has one; a bucket with none is a gap); non-finite values are not measured.
    pub fn push_recorded<'a>(
        &mut self,
        name: &str,
        fields: &[String],
        points: impl IntoIterator<Item = (u64, &'a [Option<f32>])>,
    ) {
        let cols: Vec<Option<usize>> =
            (0..FIELDS.len()).map(|i| fields.iter().position(|f| f == Field(i).recorded_name())).collect();
        for (ts_ms, row) in points {
            let mut values = [None; FIELDS.len()];
            for (i, c) in cols.iter().enumerate() {
                values[i] = c.and_then(|c| row.get(c).copied().flatten()).map(f64::from).filter(|v| v.is_finite());
            }
            if values[Field::CPU.0].is_some() {
                self.push(name, Sample { t: ts_ms as f64 / 1000.0, values });
            }
        }
    }

    /// Reads the CSV format of the module docs. Errors name the line (the header is line 1),
    /// the column and the text.
    pub fn from_csv(text: &str) -> Result<Recording, WorkloadError> {
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| WorkloadError::BadLine { line: 1, why: e.to_string() })?
            .iter()
            .map(str::to_string)
            .collect();
        if header.iter().all(String::is_empty) {
            return Err(WorkloadError::Bad("the file is empty: a header row is needed".into()));
        }
        let find = |name: &str| header.iter().position(|h| h == name);
        let need = |name: &str| {
            find(name).ok_or_else(|| WorkloadError::BadLine {
                line: 1,
                why: format!("no `{name}` column (the columns are: {})", header.join(",")),
            })
        };
        let time_col = need("time")?;
        let name_col = need("container")?;
        need("cpu")?;
        let cols: Vec<Option<usize>> = FIELDS.iter().map(|f| find(f)).collect();
        let mut rec = Recording {
            ignored: header
                .iter()
                .filter(|h| !["time", "container"].contains(&h.as_str()) && !FIELDS.contains(&h.as_str()))
                .cloned()
                .collect(),
            ..Recording::default()
        };
        for row in reader.records() {
            let row = row.map_err(|e| WorkloadError::BadLine {
                line: e.position().map_or(0, |p| p.line()),
                why: e.to_string(),
            })?;
            let line = row.position().map_or(0, |p| p.line());
            let bad = |why: String| WorkloadError::BadLine { line, why };
            let cell = |c: usize| row.get(c).unwrap_or("");
            let number = |c: usize| -> Result<Option<f64>, WorkloadError> {
                let text = cell(c);
                if text.is_empty() {
                    return Ok(None);
                }
                match text.parse::<f64>() {
                    Ok(x) if x.is_finite() && (c == time_col || x >= 0.0) => Ok(Some(x)),
                    Ok(_) => {
                        Err(bad(format!("column {} `{}` = `{text}`: must be a finite number >= 0", c + 1, header[c])))
                    }
                    Err(_) => Err(bad(format!("column {} `{}` = `{text}` is not a number", c + 1, header[c]))),
                }
            };
            let required =
                |c: usize| number(c)?.ok_or_else(|| bad(format!("column {} `{}` is empty", c + 1, header[c])));
            let t = required(time_col)?;
            let name = cell(name_col);
            if name.is_empty() {
                return Err(bad(format!("column {} `container` is empty", name_col + 1)));
            }
            let mut values = [None; FIELDS.len()];
            for (i, col) in cols.iter().enumerate() {
                if let Some(c) = col {
                    values[i] = if i == Field::CPU.0 { Some(required(*c)?) } else { number(*c)? };
                }
            }
            if rec.containers.get(name).is_some_and(|v| v.iter().any(|s| s.t == t)) {
                return Err(bad(format!("a second row for container `{name}` at time {t}")));
            }
            rec.push(name, Sample { t, values });
        }
        if rec.containers.is_empty() {
            return Err(WorkloadError::Bad("no rows after the header".into()));
        }
        Ok(rec)
    }

    /// The recording as a trace CSV on an even grid of `step_secs` from the first sample of any
    /// container to the last: `time,container,cpu,memory_bytes` and the other fields. Each
    /// container's value at a grid time is the mean of its samples in `[time, time + step)`.
    /// The trace needs `cpu` and `memory_bytes` in every row, so: before a container's first
    /// sample and after its last it did not exist, and demands 0 (both are 0); inside a gap,
    /// its last value before the gap is carried over. Other fields are empty when not
    /// measured. Returns the text and how many cells were filled in, by those two rules.
    pub fn to_trace_csv(&self, step_secs: f64) -> Result<(String, Filled), WorkloadError> {
        if !(step_secs.is_finite() && step_secs > 0.0) {
            return Err(WorkloadError::Bad(format!("the step must be a positive number of seconds, not {step_secs}")));
        }
        let all = self.containers.values().flatten();
        let (first, last) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| (a.min(s.t), b.max(s.t)));
        if !first.is_finite() {
            return Err(WorkloadError::Bad("no samples to export".into()));
        }
        let steps = ((last - first) / step_secs).floor() as usize + 1;
        let mut grid: Vec<Vec<[Option<f64>; FIELDS.len()]>> = Vec::new();
        for samples in self.containers.values() {
            let mut sums = vec![[(0.0, 0u32); FIELDS.len()]; steps];
            for s in samples {
                let k = (((s.t - first) / step_secs).floor() as usize).min(steps - 1);
                for (i, v) in s.values.iter().enumerate() {
                    if let Some(v) = v {
                        sums[k][i].0 += v;
                        sums[k][i].1 += 1;
                    }
                }
            }
            grid.push(sums.iter().map(|row| row.map(|(sum, n)| (n > 0).then(|| sum / n as f64))).collect());
        }
        let mut filled = Filled::default();
        let mut out = String::from("time,");
        out.push_str("container,");
        out.push_str(&FIELDS.join(","));
        out.push('\n');
        for k in 0..steps {
            for (c, name) in self.containers.keys().enumerate() {
                let rows = &grid[c];
                let mut row = rows[k];
                for f in [Field::CPU, Field::MEMORY] {
                    if row[f.0].is_none() {
                        let before = rows[..k].iter().rev().find_map(|r| r[f.0]);
                        let after = rows[k + 1..].iter().any(|r| r[f.0].is_some());
                        row[f.0] = Some(match (before, after) {
                            (Some(v), true) => {
                                filled.carried += 1;
                                v
                            }
                            _ => {
                                filled.absent += 1;
                                0.0
                            }
                        });
                    }
                }
                out.push_str(&format!("{},{}", round(first + k as f64 * step_secs), csv_name(name)));
                for v in row {
                    out.push(',');
                    if let Some(v) = v {
                        out.push_str(&round(v));
                    }
                }
                out.push('\n');
            }
        }
        Ok((out, filled))
    }
}

/// Cells [`Recording::to_trace_csv`] had to fill in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Filled {
    /// Inside a gap: the last value before it, carried over.
    pub carried: usize,
    /// Before the first or after the last sample: 0.
    pub absent: usize,
}

fn round(v: f64) -> String {
    let r = (v * 1e4).round() / 1e4;
    format!("{r}")
}

/// Container names never hold commas or quotes in Herd, but a CSV from elsewhere might.
fn csv_name(name: &str) -> String {
    if name.contains([',', '"', '\n']) { format!("\"{}\"", name.replace('"', "\"\"")) } else { name.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, cpu: f64, mem: Option<f64>) -> Sample {
        let mut values = [None; FIELDS.len()];
        values[0] = Some(cpu);
        values[1] = mem;
        Sample { t, values }
    }

    #[test]
    fn reads_required_and_optional_columns() {
        let r = Recording::from_csv(
            "time,container,cpu,memory_bytes,net_rx_bps,colour\n1,a,0.5,100,,red\n0,a,0.25,100,20,blue\n0,b,1,,,\n",
        )
        .unwrap();
        assert_eq!(r.ignored, ["colour"]);
        let a = &r.containers["a"];
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].t, a[0].get(Field::CPU), a[0].get(Field::NET_RX)), (0.0, Some(0.25), Some(20.0)));
        assert_eq!(a[1].get(Field::NET_RX), None);
        assert_eq!(r.containers["b"][0].get(Field::MEMORY), None);
    }

    #[test]
    fn bad_csv_is_a_clear_error() {
        let e = |s: &str| Recording::from_csv(s).unwrap_err().to_string();
        assert!(e("").contains("empty"));
        assert!(e("time,cpu\n0,1\n").contains("no `container` column"), "{}", e("time,cpu\n0,1\n"));
        assert_eq!(e("time,container,cpu\n"), "no rows after the header");
        assert_eq!(e("time,container,cpu\n0,a,\n"), "line 2: column 3 `cpu` is empty");
        assert_eq!(e("time,container,cpu\n0,a,1\n1,a,lots\n"), "line 3: column 3 `cpu` = `lots` is not a number");
        assert!(e("time,container,cpu,pids\n0,a,1,-2\n").contains("`pids` = `-2`: must be a finite number >= 0"));
        assert!(e("time,container,cpu\n0,a,NaN\n").contains("finite"));
        assert!(e("time,container,cpu\n0,a,1\n0,a,2\n").contains("second row"));
        assert!(e("time,container,cpu\n0,,1\n").contains("`container` is empty"));
    }

    #[test]
    fn exports_an_even_grid_filling_gaps_and_absence() {
        let mut r = Recording::default();
        // a: samples at 0, 1 (same 2 s bucket: averaged), then a gap, then 6.
        r.push("a", sample(0.0, 1.0, Some(10.0)));
        r.push("a", sample(1.0, 3.0, Some(30.0)));
        r.push("a", sample(6.0, 4.0, Some(40.0)));
        // b starts late.
        r.push("b", sample(4.0, 0.5, Some(5.0)));
        let (csv, filled) = r.to_trace_csv(2.0).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], format!("time,container,{}", FIELDS.join(",")));
        let cells = |i: usize| lines[i].split(',').take(4).collect::<Vec<_>>().join(",");
        assert_eq!(cells(1), "0,a,2,20");
        assert_eq!(cells(2), "0,b,0,0");
        assert_eq!(cells(3), "2,a,2,20");
        assert_eq!(cells(5), "4,a,2,20");
        assert_eq!(cells(6), "4,b,0.5,5");
        assert_eq!(cells(7), "6,a,4,40");
        // b's last sample is at 4: at 6 it no longer exists.
        assert_eq!(cells(8), "6,b,0,0");
        // cpu and memory: a's gap at 2 and 4 is carried over, b is absent at 0, 2 and 6.
        assert_eq!(filled, Filled { carried: 2 * 2, absent: 3 * 2 });
        assert!(r.to_trace_csv(0.0).is_err());
        assert!(Recording::default().to_trace_csv(1.0).is_err());
    }
}
