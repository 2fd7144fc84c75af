//! Model comparison pooled over several series: which model forecasts a *group* of series
//! best (the containers of one workload class), rather than one series.
//!
//! Each series is validated on its own (its own season, the same rolling-origin folds as
//! [`crate::select_best`]) and every model's held-out errors are pooled over all the series'
//! points, so MAE, RMSE and MAPE are per point of the group and a long or large series weighs
//! in proportion to its points and its scale. The lowest pooled RMSE wins (on a tie the
//! simpler model, in the order of [`crate::models::all`]).
//!
//! A series too short for one fold is skipped with the reason. A model that cannot fit one of
//! the series is not dropped from the comparison: on that series its place is taken by the
//! naive forecast (the last value), which is also what a user of the choice does when the
//! model fails on a container, and the number of such fallbacks is reported. Every model is
//! thus judged on the same points.

use serde::Serialize;

use crate::metrics::{Accuracy, accuracy};
use crate::models::{self, Model, naive::Naive};
use crate::season;
use crate::series::Series;
use crate::validate::{MIN_TRAINING, fold_origins, held_out};

/// A series that took part, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PooledSeries {
    pub name: String,
    pub points: usize,
    pub folds: usize,
    /// The season found in it, samples.
    pub season: Option<usize>,
}

/// A series left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedSeries {
    pub name: String,
    pub why: String,
}

/// How one model did over the whole group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PooledModel {
    pub name: String,
    /// Pooled over every held-out point of every series.
    pub accuracy: Accuracy,
    /// Series on which it could not fit, so the naive forecast stood in for it.
    pub fell_back: usize,
    /// Why it could not fit the first of those.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fell_back_why: Option<String>,
}

/// The outcome of [`compare_pooled`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PooledComparison {
    pub horizon: usize,
    pub ranked_by: &'static str,
    pub series: Vec<PooledSeries>,
    pub skipped: Vec<SkippedSeries>,
    /// Every model, in the order compared; empty when no series could be validated.
    pub models: Vec<PooledModel>,
    /// The winner, `None` when no series could be validated.
    pub best: Option<String>,
}

impl PooledComparison {
    pub fn model(&self, name: &str) -> Option<&PooledModel> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// Compares every model of [`models::all`] on `series`, pooled (module docs).
pub fn compare_pooled(series: &[Series], horizon: usize) -> PooledComparison {
    compare_pooled_of(series, horizon, &models::all())
}

/// [`compare_pooled`] over the given models (the first that ties wins).
pub fn compare_pooled_of(series: &[Series], horizon: usize, candidates: &[Box<dyn Model>]) -> PooledComparison {
    let horizon = horizon.max(1);
    let mut used = Vec::new();
    let mut skipped = Vec::new();
    let mut actual = Vec::new();
    let mut predicted: Vec<Vec<f64>> = vec![Vec::new(); candidates.len()];
    let mut fell_back: Vec<(usize, Option<String>)> = vec![(0, None); candidates.len()];
    for s in series {
        let origins = fold_origins(s.len(), horizon);
        if origins.is_empty() {
            let needed = horizon + horizon.max(MIN_TRAINING);
            skipped.push(SkippedSeries {
                name: s.name().to_string(),
                why: format!("too little history: {} points, a horizon of {horizon} needs {needed}", s.len()),
            });
            continue;
        }
        let season = match season::detect(s) {
            Ok(season) => season.length,
            Err(e) => {
                skipped.push(SkippedSeries { name: s.name().to_string(), why: e.to_string() });
                continue;
            }
        };
        // Naive cannot fail on a non-empty history; if it somehow did, the series is left out.
        let naive = match held_out(&Naive, s.values(), &origins, horizon, season) {
            Ok(h) => {
                actual.extend(h.actual);
                h.predicted
            }
            Err((why, _)) => {
                skipped.push(SkippedSeries { name: s.name().to_string(), why: format!("naive failed: {why}") });
                continue;
            }
        };
        for (i, m) in candidates.iter().enumerate() {
            match held_out(m.as_ref(), s.values(), &origins, horizon, season) {
                Ok(h) => predicted[i].extend(h.predicted),
                Err((why, _)) => {
                    predicted[i].extend_from_slice(&naive);
                    fell_back[i].0 += 1;
                    fell_back[i].1.get_or_insert(format!("{}: {why}", s.name()));
                }
            }
        }
        used.push(PooledSeries { name: s.name().to_string(), points: s.len(), folds: origins.len(), season });
    }
    let models: Vec<PooledModel> = if used.is_empty() {
        Vec::new()
    } else {
        candidates
            .iter()
            .zip(predicted)
            .zip(fell_back)
            .map(|((m, p), (n, why))| PooledModel {
                name: m.name().to_string(),
                accuracy: accuracy(&actual, &p),
                fell_back: n,
                fell_back_why: why,
            })
            .collect()
    };
    // `min_by` keeps the first of equals: the simpler model.
    let best = models.iter().min_by(|a, b| a.accuracy.rmse.total_cmp(&b.accuracy.rmse)).map(|m| m.name.clone());
    PooledComparison { horizon, ranked_by: "rmse", series: used, skipped, models, best }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::TAU;

    use super::*;

    /// Deterministic noise in [-1, 1).
    fn noise(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    fn cycle(name: &str, seed: u64, n: usize, period: usize, amplitude: f64) -> Series {
        let mut rand = noise(seed);
        let values = (0..n).map(|i| 5.0 + amplitude * (i as f64 * TAU / period as f64).sin() + 0.05 * rand()).collect();
        Series::new(name, values)
    }

    #[test]
    fn a_group_of_cycles_is_won_by_a_seasonal_model_and_errors_are_pooled() {
        let group = [cycle("a", 1, 240, 24, 2.0), cycle("b", 2, 200, 24, 1.0), cycle("c", 3, 15, 24, 1.0)];
        let r = compare_pooled(&group, 12);
        assert_eq!(r.series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].why.contains("15 points, a horizon of 12 needs 24"), "{:?}", r.skipped);
        assert_eq!(r.series[0].season, Some(24));
        // Three folds of 12 points in each validated series, pooled.
        let naive = r.model("naive").unwrap();
        assert_eq!(naive.accuracy.points, 2 * 3 * 12);
        let best = r.best.as_deref().unwrap();
        assert_ne!(best, "naive", "{r:#?}");
        assert!(r.model(best).unwrap().accuracy.rmse < naive.accuracy.rmse / 3.0, "{r:#?}");
    }

    #[test]
    fn a_model_that_cannot_fit_a_series_falls_back_to_naive_there() {
        // 24 points with a horizon of 2: the regression needs more history in its folds than
        // the first series has (it fails), the second is long enough.
        let short = Series::new("short", (0..14).map(|i| i as f64).collect());
        let long = Series::new("long", (0..60).map(|i| i as f64).collect());
        let r = compare_pooled(&[short, long], 2);
        let reg = r.model("regression").unwrap();
        assert_eq!(reg.fell_back, 1, "{r:#?}");
        assert!(reg.fell_back_why.as_deref().unwrap().starts_with("short: fold"), "{reg:?}");
        assert_eq!(reg.accuracy.points, r.model("naive").unwrap().accuracy.points);
    }

    #[test]
    fn nothing_long_enough_has_no_winner() {
        let r = compare_pooled(&[Series::new("x", vec![1.0; 5])], 10);
        assert_eq!(r.best, None);
        assert!(r.models.is_empty());
        assert_eq!(r.skipped.len(), 1);
    }
}
