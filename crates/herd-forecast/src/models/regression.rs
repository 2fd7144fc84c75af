//! A learned regression on lagged features: ridge regression from `smartcore`.
//!
//! Each training row predicts `y[t]` from:
//! - the last [`LAGS`] values `y[t-1] .. y[t-LAGS]`;
//! - with a season `s`: the seasonal lag `y[t-s]`, and the position in the season as
//!   `sin`/`cos` of its first two harmonics (`2πk·(t mod s)/s`, k = 1, 2).
//!
//! Features are standardised by smartcore and a small ridge penalty keeps the strongly
//! correlated lags stable. Features that are constant in the training data carry no
//! information (and cannot be standardised) and are left out; with none left the model is
//! the training mean (stated in its description). Forecasts are recursive: each predicted
//! value becomes a lag for the next step.

use std::f64::consts::TAU;

use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::ridge_regression::{RidgeRegression, RidgeRegressionParameters, RidgeRegressionSolverName};

use super::{Fitted, Model, ModelFailure};

/// How many recent values are features.
pub const LAGS: usize = 3;
/// Ridge penalty per training row, on standardised features.
const ALPHA_PER_ROW: f64 = 1e-4;
/// Training rows needed per coefficient.
const ROWS_PER_FEATURE: usize = 2;

/// Ridge regression on lagged features.
pub struct Regression;

type Ridge = RidgeRegression<f64, f64, DenseMatrix<f64>, Vec<f64>>;

struct FittedRegression {
    history: Vec<f64>,
    season: Option<usize>,
    /// A season that was not used (no longer than the lags, or longer than half the history).
    dropped: Option<usize>,
    /// Which of the features are used (the others were constant).
    used: Vec<bool>,
    model: Option<Ridge>,
    /// The prediction when no feature varies.
    mean: f64,
}

/// The feature vector for position `t`, reading earlier values from `y` (`y.len() >= t`).
fn features(y: &[f64], t: usize, season: Option<usize>) -> Vec<f64> {
    let mut f: Vec<f64> = (1..=LAGS).map(|k| y[t - k]).collect();
    if let Some(s) = season {
        f.push(y[t - s]);
        let phase = (t % s) as f64 / s as f64;
        for k in [1.0, 2.0] {
            f.push((TAU * k * phase).sin());
            f.push((TAU * k * phase).cos());
        }
    }
    f
}

fn first_row(season: Option<usize>) -> usize {
    season.unwrap_or(0).max(LAGS)
}

fn failure(e: impl std::fmt::Display) -> ModelFailure {
    ModelFailure(format!("ridge regression: {e}"))
}

impl Model for Regression {
    fn name(&self) -> &'static str {
        "regression"
    }

    fn fit(&self, history: &[f64], season: Option<usize>) -> Result<Box<dyn Fitted>, ModelFailure> {
        // A season of 2 adds nothing the lags do not have; a season as long as the history
        // would leave no rows. Drop it rather than fail (the description says so).
        let dropped = season.filter(|&s| s <= LAGS || history.len() < 2 * s);
        let season = season.filter(|_| dropped.is_none());
        let start = first_row(season);
        let n_features = LAGS + if season.is_some() { 5 } else { 0 };
        let rows = history.len().saturating_sub(start);
        let needed = start + ROWS_PER_FEATURE * (n_features + 1);
        if history.len() < needed {
            return Err(ModelFailure(format!(
                "needs at least {needed} points of history for its {n_features} features, has {}",
                history.len()
            )));
        }
        let x: Vec<Vec<f64>> = (start..history.len()).map(|t| features(history, t, season)).collect();
        let y: Vec<f64> = history[start..].to_vec();
        let mean = y.iter().sum::<f64>() / rows as f64;
        let used: Vec<bool> = (0..n_features)
            .map(|j| {
                let first = x[0][j];
                x.iter().any(|row| (row[j] - first).abs() > 1e-12 * first.abs().max(1.0))
            })
            .collect();
        let model = if used.iter().any(|u| *u) {
            let x: Vec<Vec<f64>> = x.iter().map(|row| select(row, &used)).collect();
            let x = DenseMatrix::from_2d_vec(&x).map_err(failure)?;
            let params = RidgeRegressionParameters::default()
                .with_alpha(ALPHA_PER_ROW * rows as f64)
                .with_normalize(true)
                .with_solver(RidgeRegressionSolverName::Cholesky);
            Some(Ridge::fit(&x, &y, params).map_err(failure)?)
        } else {
            None
        };
        Ok(Box::new(FittedRegression { history: history.to_vec(), season, dropped, used, model, mean }))
    }
}

fn select(row: &[f64], used: &[bool]) -> Vec<f64> {
    row.iter().zip(used).filter(|(_, u)| **u).map(|(v, _)| *v).collect()
}

impl Fitted for FittedRegression {
    fn describe(&self) -> String {
        let mut d = format!("ridge on lags 1..{LAGS}");
        match (self.season, self.dropped) {
            (Some(s), _) => d.push_str(&format!(", seasonal lag {s} and season phase")),
            (None, Some(s)) if s <= LAGS => d.push_str(&format!(" (season {s} is within the lags)")),
            (None, Some(s)) => d.push_str(&format!(", no season (less than two seasons of {s} in the history)")),
            (None, None) => d.push_str(", no season"),
        }
        if self.model.is_none() {
            d.push_str(" (no feature varies: training mean)");
        }
        d
    }

    fn forecast(&self, horizon: usize) -> Result<Vec<f64>, ModelFailure> {
        let Some(model) = &self.model else {
            return Ok(vec![self.mean; horizon]);
        };
        let mut y = self.history.clone();
        for _ in 0..horizon {
            let row = select(&features(&y, y.len(), self.season), &self.used);
            let x = DenseMatrix::from_2d_vec(&vec![row]).map_err(failure)?;
            let next = model.predict(&x).map_err(failure)?[0];
            y.push(next);
        }
        Ok(y.split_off(self.history.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_linear_trend() {
        let y: Vec<f64> = (0..60).map(|i| 3.0 + 0.5 * i as f64).collect();
        let f = Regression.fit(&y, None).unwrap();
        let next = f.forecast(5).unwrap();
        for (k, v) in next.iter().enumerate() {
            let want = 3.0 + 0.5 * (60 + k) as f64;
            assert!((v - want).abs() < 0.5, "step {k}: {v} vs {want}");
        }
    }

    #[test]
    fn learns_a_season() {
        let wave = |i: usize| 50.0 + 10.0 * (i as f64 * TAU / 24.0).sin();
        let y: Vec<f64> = (0..24 * 6).map(wave).collect();
        let f = Regression.fit(&y, Some(24)).unwrap();
        assert!(f.describe().contains("seasonal lag 24"), "{}", f.describe());
        for (k, v) in f.forecast(24).unwrap().iter().enumerate() {
            assert!((v - wave(144 + k)).abs() < 0.5, "step {k}: {v} vs {}", wave(144 + k));
        }
    }

    #[test]
    fn constant_history_gives_its_value() {
        let f = Regression.fit(&[7.0; 30], None).unwrap();
        assert_eq!(f.forecast(3).unwrap(), vec![7.0; 3]);
        assert!(f.describe().contains("training mean"));
    }

    #[test]
    fn too_short_history_is_a_failure() {
        let err = Regression.fit(&[1.0, 2.0, 3.0, 4.0], None).err().unwrap();
        assert!(err.0.contains("needs at least 11 points"), "{err}");
    }
}
