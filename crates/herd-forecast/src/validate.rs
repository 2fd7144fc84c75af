//! Rolling-origin validation and model selection.
//!
//! The last `horizon` points are held out, and so are up to [`MAX_FOLDS`] - 1 earlier windows of
//! `horizon` points each while at least `max(horizon, MIN_TRAINING)` points remain before them:
//! for each window (fold) every model is fitted on everything before it and forecasts it. MAE,
//! RMSE and MAPE are pooled over all held-out points. The model with the lowest RMSE wins (on
//! a tie the simpler one, in the order naive, seasonal-naive, ets, regression); it is then
//! refitted on the whole series to forecast the `horizon` steps after it. A model that fails in
//! any fold is reported as failed with its reason and the others are still compared.
//!
//! The season length is found once on the whole series (see [`crate::season`]), so every fold
//! and the final fit use the same one.

use serde::Serialize;

use crate::error::ForecastError;
use crate::metrics::{Accuracy, accuracy};
use crate::models::{self, Model};
use crate::season::{self, Season};
use crate::series::{Series, Spacing};
use crate::timestamp;

/// The fewest points any fold trains on.
pub const MIN_TRAINING: usize = 10;
/// The most validation folds.
pub const MAX_FOLDS: usize = 3;

/// How one model did in the validation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelResult {
    pub name: String,
    /// The variant fitted on the latest fold (e.g. the ETS form chosen).
    pub detail: Option<String>,
    /// Pooled accuracy over every held-out point; `None` when the model failed.
    pub accuracy: Option<Accuracy>,
    /// Why the model failed, if it did.
    pub failed: Option<String>,
}

/// One forecast step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastPoint {
    /// 1 for the first step after the last row.
    pub step: usize,
    /// RFC 3339 (UTC), when the series has timestamps.
    pub timestamp: Option<String>,
    pub value: f64,
}

/// The outcome: how every model did, which one won, and its forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    pub series: String,
    pub rows: usize,
    pub horizon: usize,
    pub season: Season,
    /// Validation folds, each holding out `horizon` points.
    pub folds: usize,
    /// Held-out points the accuracy figures cover (`folds * horizon`).
    pub held_out_points: usize,
    /// The criterion the winner was picked by.
    pub ranked_by: &'static str,
    pub models: Vec<ModelResult>,
    /// The winning model's name.
    pub best: String,
    /// The winner's forecast after refitting on the whole series.
    pub forecast: Vec<ForecastPoint>,
    /// Fallbacks taken and other things the user should know.
    pub notes: Vec<String>,
}

impl Selection {
    /// The result of the named model.
    pub fn model(&self, name: &str) -> Option<&ModelResult> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// Compares every model on `series` by rolling-origin validation and forecasts `horizon`
/// steps with the best one.
pub fn select_best(series: &Series, horizon: usize) -> Result<Selection, ForecastError> {
    select_best_of(series, horizon, &models::all())
}

/// [`select_best`] over the given models (the first that ties wins).
pub fn select_best_of(
    series: &Series,
    horizon: usize,
    candidates: &[Box<dyn Model>],
) -> Result<Selection, ForecastError> {
    if horizon == 0 {
        return Err(ForecastError::ZeroHorizon);
    }
    let n = series.len();
    let min_training = horizon.max(MIN_TRAINING);
    if n < horizon + min_training {
        return Err(ForecastError::TooFewRows { horizon, needed: horizon + min_training, min_training, have: n });
    }
    let season = season::detect(series)?;
    let values = series.values();
    let origins = fold_origins(n, horizon);

    let mut notes = Vec::new();
    if let Spacing::Uneven { median_ms, min_ms, max_ms } = series.spacing() {
        notes.push(format!(
            "timestamps are not evenly spaced (gaps from {} s to {} s): rows are taken as evenly spaced, \
             and forecast timestamps step by the median gap of {} s",
            min_ms as f64 / 1000.0,
            max_ms as f64 / 1000.0,
            median_ms as f64 / 1000.0
        ));
    }

    let results: Vec<ModelResult> =
        candidates.iter().map(|m| validate(m.as_ref(), values, &origins, horizon, season.length)).collect();

    // Rank the models that worked by RMSE; `min_by` keeps the first of equals.
    let mut ranked: Vec<usize> = (0..results.len()).filter(|&i| results[i].accuracy.is_some()).collect();
    ranked.sort_by(|&a, &b| rmse(&results[a]).total_cmp(&rmse(&results[b])));
    let mut chosen = None;
    for i in ranked {
        match models::fit_and_forecast(candidates[i].as_ref(), values, season.length, horizon) {
            Ok((forecast, _)) => {
                chosen = Some((i, forecast));
                break;
            }
            Err(e) => notes.push(format!(
                "{} won the validation but failed on the whole series ({e}); the next best is used",
                results[i].name
            )),
        }
    }
    let Some((best, forecast)) = chosen else {
        let reasons: Vec<String> =
            results.iter().map(|r| format!("{}: {}", r.name, r.failed.as_deref().unwrap_or("failed"))).collect();
        return Err(ForecastError::NoModel(reasons.join("; ")));
    };
    let stamps = series.future_timestamps(horizon);
    let forecast = forecast
        .into_iter()
        .enumerate()
        .map(|(k, value)| ForecastPoint {
            step: k + 1,
            timestamp: stamps.as_ref().map(|s| timestamp::format(s[k])),
            value,
        })
        .collect();
    Ok(Selection {
        series: series.name().to_string(),
        rows: n,
        horizon,
        season,
        folds: origins.len(),
        held_out_points: origins.len() * horizon,
        ranked_by: "rmse",
        best: results[best].name.clone(),
        models: results,
        forecast,
        notes,
    })
}

/// Fold origins for a series of `n` points, latest first: each fold trains on
/// `values[..origin]` and tests on the next `horizon` points. Empty when the series is too
/// short for one fold.
pub(crate) fn fold_origins(n: usize, horizon: usize) -> Vec<usize> {
    let min_training = horizon.max(MIN_TRAINING);
    (1..=MAX_FOLDS).map_while(|k| n.checked_sub(k * horizon).filter(|&o| o >= min_training)).collect()
}

/// One model's forecasts of every fold's held-out points.
pub(crate) struct HeldOut {
    pub actual: Vec<f64>,
    pub predicted: Vec<f64>,
    /// The variant fitted on the latest fold.
    pub detail: Option<String>,
}

/// Runs `model` over every fold: its [`HeldOut`] forecasts, or why it failed (and the variant
/// fitted before it did).
pub(crate) fn held_out(
    model: &dyn Model,
    values: &[f64],
    origins: &[usize],
    horizon: usize,
    season: Option<usize>,
) -> Result<HeldOut, (String, Option<String>)> {
    let mut actual = Vec::new();
    let mut predicted = Vec::new();
    let mut detail = None;
    for (k, &origin) in origins.iter().enumerate() {
        match models::fit_and_forecast(model, &values[..origin], season, horizon) {
            Ok((forecast, describe)) => {
                actual.extend_from_slice(&values[origin..origin + horizon]);
                predicted.extend(forecast);
                detail.get_or_insert(describe);
            }
            Err(e) => return Err((format!("fold {} (trained on {origin} points): {e}", k + 1), detail)),
        }
    }
    Ok(HeldOut { actual, predicted, detail })
}

fn rmse(r: &ModelResult) -> f64 {
    r.accuracy.as_ref().map_or(f64::INFINITY, |a| a.rmse)
}

/// Runs one model over every fold and pools its errors.
fn validate(
    model: &dyn Model,
    values: &[f64],
    origins: &[usize],
    horizon: usize,
    season: Option<usize>,
) -> ModelResult {
    let name = model.name().to_string();
    match held_out(model, values, origins, horizon, season) {
        Ok(HeldOut { actual, predicted, detail }) => {
            ModelResult { name, detail, accuracy: Some(accuracy(&actual, &predicted)), failed: None }
        }
        Err((why, detail)) => ModelResult { name, detail, accuracy: None, failed: Some(why) },
    }
}

#[cfg(test)]
mod tests;
