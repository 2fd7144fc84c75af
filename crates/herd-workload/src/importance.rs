//! Which recorded features matter most for a container's performance.
//!
//! Performance is the time tasks waited for CPU: the CPU pressure stall (`psi_cpu_some10`)
//! where the kernel reports it, else the share of periods throttled by the CPU limit
//! (`throttled_pct`; cgroup v1 has no pressure stall). Each sample of every container is one
//! row: the target, and the other fields of the same sample as features (block I/O and network
//! as read + written sums). A random forest (`smartcore`, 50 trees, depth at most 8) learns
//! the target from the features on four rows in five; its impurity-based importances (the mean
//! decrease in variance of the splits on each feature, summing to 1) rank the features, and
//! its R² on the fifth row held out says whether the ranking means anything (near or below 0:
//! the features do not predict the target, and a note says so).
//!
//! A random forest rather than a linear model because stall grows with load non-linearly (it
//! stays near zero until a resource saturates), and rather than mutual information because
//! the forest ranks features jointly (two copies of one signal share its importance instead of
//! both looking important).

use serde::Serialize;
use smartcore::ensemble::random_forest_regressor::{RandomForestRegressor, RandomForestRegressorParameters};
use smartcore::linalg::basic::matrix::DenseMatrix;

use crate::recording::{Field, Recording, Sample};

/// Features of one sample, by name, and how to read each.
const ROW_FEATURES: [(&str, &[Field]); 9] = [
    ("cpu", &[Field::CPU]),
    ("memory_bytes", &[Field::MEMORY]),
    ("blk_bps", &[Field::BLK_READ, Field::BLK_WRITE]),
    ("net_bps", &[Field::NET_RX, Field::NET_TX]),
    ("pgfaults_per_s", &[Field::PGFAULTS]),
    ("pids", &[Field::PIDS]),
    ("cpu_limit_pct", &[Field::CPU_LIMIT_PCT]),
    ("psi_mem_some10", &[Field::PSI_MEM]),
    ("psi_io_some10", &[Field::PSI_IO]),
];

/// At least this many rows with the target measured.
pub const MIN_ROWS: usize = 30;
/// At most this many rows are used (evenly spaced), to bound the forest's fitting time.
const MAX_ROWS: usize = 2000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub feature: String,
    /// Share of the forest's variance reduction, 0..=1.
    pub importance: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Importance {
    /// The performance signal predicted.
    pub target: String,
    pub rows: usize,
    /// R² of the forest on the held-out rows.
    pub held_out_r2: f64,
    /// Most important first; features never measured or constant are left out.
    pub ranking: Vec<Ranked>,
    pub notes: Vec<String>,
}

fn value(s: &Sample, fields: &[Field]) -> Option<f64> {
    let vals: Vec<Option<f64>> = fields.iter().map(|f| s.get(*f)).collect();
    if vals.iter().all(Option::is_none) { None } else { Some(vals.iter().map(|v| v.unwrap_or(0.0)).sum()) }
}

/// The ranking for `rec`, or why there is none.
pub fn importance(rec: &Recording) -> Result<Importance, String> {
    let samples: Vec<&Sample> = rec.containers.values().flatten().collect();
    let varies = |f: Field| {
        let v: Vec<f64> = samples.iter().filter_map(|s| s.get(f)).collect();
        v.len() >= MIN_ROWS && v.iter().any(|x| (x - v[0]).abs() > 1e-9)
    };
    let target = if varies(Field::PSI_CPU) {
        Field::PSI_CPU
    } else if varies(Field::THROTTLED_PCT) {
        Field::THROTTLED_PCT
    } else {
        return Err(format!(
            "no performance signal to predict: neither psi_cpu_some10 (CPU pressure stall; cgroup v2 only) nor \
             throttled_pct (containers with a CPU limit) has {MIN_ROWS} samples that vary"
        ));
    };
    let rows: Vec<&Sample> = samples.iter().copied().filter(|s| s.get(target).is_some()).collect();
    let mut notes = Vec::new();
    // Keep the features measured in at least 90% of the rows and not constant.
    let kept: Vec<usize> = (0..ROW_FEATURES.len())
        .filter(|&i| {
            let v: Vec<f64> = rows.iter().filter_map(|s| value(s, ROW_FEATURES[i].1)).collect();
            v.len() * 10 >= rows.len() * 9 && v.iter().any(|x| (x - v[0]).abs() > 1e-9)
        })
        .collect();
    if kept.is_empty() {
        return Err("every feature is missing or constant where the target is measured".into());
    }
    let mut table: Vec<(Vec<f64>, f64)> = rows
        .iter()
        .filter_map(|s| {
            let x: Option<Vec<f64>> = kept.iter().map(|&i| value(s, ROW_FEATURES[i].1)).collect();
            Some((x?, s.get(target)?))
        })
        .collect();
    if table.len() < MIN_ROWS {
        return Err(format!("only {} samples have the target and every feature ({MIN_ROWS} needed)", table.len()));
    }
    if table.len() > MAX_ROWS {
        let every = table.len() as f64 / MAX_ROWS as f64;
        table = (0..MAX_ROWS).map(|k| table[(k as f64 * every) as usize].clone()).collect();
        notes.push(format!("{} of the {} rows used, evenly spaced", MAX_ROWS, rows.len()));
    }
    let (train, test): (Vec<_>, Vec<_>) = table.iter().enumerate().partition(|(i, _)| i % 5 != 4);
    let matrix = |part: &[(usize, &(Vec<f64>, f64))]| -> Result<(DenseMatrix<f64>, Vec<f64>), String> {
        let x: Vec<Vec<f64>> = part.iter().map(|(_, r)| r.0.clone()).collect();
        let y: Vec<f64> = part.iter().map(|(_, r)| r.1).collect();
        Ok((DenseMatrix::from_2d_vec(&x).map_err(|e| e.to_string())?, y))
    };
    let (x_train, y_train) = matrix(&train)?;
    let (x_test, y_test) = matrix(&test)?;
    let params = RandomForestRegressorParameters::default().with_n_trees(50).with_max_depth(8).with_seed(7);
    let forest = RandomForestRegressor::fit(&x_train, &y_train, params).map_err(|e| format!("random forest: {e}"))?;
    let predicted = forest.predict(&x_test).map_err(|e| format!("random forest: {e}"))?;
    let held_out_r2 = r2(&y_test, &predicted);
    let weights = forest.compute_feature_importances().map_err(|e| format!("random forest: {e}"))?;
    let mut ranking: Vec<Ranked> = kept
        .iter()
        .zip(&weights)
        .map(|(&i, &w)| Ranked { feature: ROW_FEATURES[i].0.to_string(), importance: w })
        .collect();
    ranking.sort_by(|a, b| b.importance.total_cmp(&a.importance));
    if held_out_r2 < 0.2 {
        notes.push(format!(
            "the forest predicts {} poorly on held-out samples (R² {held_out_r2:.2}): the ranking says little",
            target.name()
        ));
    }
    Ok(Importance { target: target.name().to_string(), rows: table.len(), held_out_r2, ranking, notes })
}

/// The coefficient of determination of `predicted` against `actual` (1: perfect; 0: no better
/// than the mean; 0 too when `actual` is constant).
fn r2(actual: &[f64], predicted: &[f64]) -> f64 {
    let mean = actual.iter().sum::<f64>() / actual.len().max(1) as f64;
    let total: f64 = actual.iter().map(|a| (a - mean).powi(2)).sum();
    let residual: f64 = actual.iter().zip(predicted).map(|(a, p)| (a - p).powi(2)).sum();
    if total > 0.0 { 1.0 - residual / total } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::FIELDS;

    /// Throttling driven by CPU use against a limit; network is noise.
    fn recording(with_target: bool) -> Recording {
        let mut rec = Recording::default();
        let mut noise = 12345u64;
        for i in 0..400 {
            noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let cpu = (i % 40) as f64 / 40.0;
            let mut values = [None; FIELDS.len()];
            values[Field::CPU.0] = Some(cpu);
            values[Field::NET_RX.0] = Some((noise >> 33) as f64 % 1000.0);
            values[Field::MEMORY.0] = Some(1e6);
            if with_target {
                values[Field::THROTTLED_PCT.0] = Some(if cpu > 0.5 { (cpu - 0.5) * 200.0 } else { 0.0 });
            }
            rec.push(&format!("c{}", i % 4), Sample { t: i as f64, values });
        }
        rec
    }

    #[test]
    fn finds_the_feature_that_drives_throttling() {
        let imp = importance(&recording(true)).unwrap();
        assert_eq!(imp.target, "throttled_pct");
        assert_eq!(imp.ranking[0].feature, "cpu", "{imp:?}");
        assert!(imp.ranking[0].importance > 0.8, "{imp:?}");
        assert!(imp.held_out_r2 > 0.9, "{imp:?}");
        // memory is constant: left out.
        assert!(imp.ranking.iter().all(|r| r.feature != "memory_bytes"));
    }

    #[test]
    fn no_performance_signal_is_a_stated_reason() {
        let err = importance(&recording(false)).unwrap_err();
        assert!(err.contains("no performance signal"), "{err}");
    }

    #[test]
    fn r2_of_perfect_and_mean_predictions() {
        assert_eq!(r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0);
        assert_eq!(r2(&[1.0, 2.0, 3.0], &[2.0, 2.0, 2.0]), 0.0);
    }
}
