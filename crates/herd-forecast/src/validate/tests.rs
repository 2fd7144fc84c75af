//! Model selection on synthetic series whose right answer is known.

use std::f64::consts::TAU;

use super::*;
use crate::models::{Fitted, ModelFailure};

/// Deterministic noise in [-1, 1) (a linear congruential generator; no RNG crate needed).
fn noise(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// Hourly samples over `days` days: a daily cycle around 50 with noise.
fn daily_cycle(days: usize) -> Series {
    let mut rand = noise(7);
    let n = days * 24;
    let values = (0..n).map(|i| 50.0 + 20.0 * (i as f64 * TAU / 24.0).sin() + 2.0 * rand()).collect();
    let start = 1_714_521_600_000; // 2024-05-01T00:00:00Z
    Series::new("cpu", values).with_timestamps((0..n as i64).map(|i| start + i * 3_600_000).collect()).unwrap()
}

fn rmse_of(s: &Selection, name: &str) -> f64 {
    s.model(name).and_then(|m| m.accuracy.as_ref()).unwrap_or_else(|| panic!("{name} failed: {s:#?}")).rmse
}

#[test]
fn daily_cycle_beats_the_naive_baseline() {
    let s = select_best(&daily_cycle(10), 24).unwrap();
    assert_eq!(s.season.length, Some(24), "{:?}", s.season);
    assert_eq!((s.folds, s.held_out_points), (3, 72));
    let naive = rmse_of(&s, "naive");
    for better in ["seasonal-naive", "ets", "regression"] {
        assert!(rmse_of(&s, better) < naive / 2.0, "{better} vs naive {naive}: {s:#?}");
    }
    assert_ne!(s.best, "naive");
    assert_eq!(s.forecast.len(), 24);
    assert_eq!(s.forecast[0].timestamp.as_deref(), Some("2024-05-11T00:00:00Z"));
    // The forecast follows the cycle: the peak (6 h after midnight) is high, the trough low.
    assert!(s.forecast[5].value > 60.0 && s.forecast[17].value < 40.0, "{:?}", s.forecast);
}

#[test]
fn linear_trend_beats_seasonal_naive() {
    let mut rand = noise(3);
    let values: Vec<f64> = (0..120).map(|i| 10.0 + 0.8 * i as f64 + 0.5 * rand()).collect();
    let s = select_best(&Series::new("mem", values), 12).unwrap();
    assert_eq!(s.season.length, None, "{:?}", s.season);
    let seasonal_naive = rmse_of(&s, "seasonal-naive");
    let learned = rmse_of(&s, "ets").min(rmse_of(&s, "regression"));
    assert!(learned < seasonal_naive / 3.0, "{learned} vs {seasonal_naive}: {s:#?}");
    assert!(s.best == "ets" || s.best == "regression", "{}", s.best);
    let last = s.forecast.last().unwrap().value;
    assert!((last - (10.0 + 0.8 * 131.0)).abs() < 3.0, "{:?}", s.forecast);
}

#[test]
fn constant_series_has_no_error() {
    let s = select_best(&Series::new("c", vec![4.0; 60]), 6).unwrap();
    for m in &s.models {
        if let Some(a) = &m.accuracy {
            assert!(a.mae < 1e-6 && a.rmse < 1e-6 && a.mape.unwrap() < 1e-6, "{m:?}");
        }
    }
    // The baselines and the regression cannot fail on a constant.
    for name in ["naive", "seasonal-naive", "regression"] {
        assert!(s.model(name).unwrap().accuracy.is_some(), "{name}: {s:#?}");
    }
    assert!(s.forecast.iter().all(|p| (p.value - 4.0).abs() < 1e-6), "{:?}", s.forecast);
    assert_eq!(s.forecast[0].timestamp, None);
}

#[test]
fn too_little_history_says_how_much_is_needed() {
    let err = select_best(&Series::new("x", vec![1.0; 15]), 8).unwrap_err();
    assert_eq!(err, ForecastError::TooFewRows { horizon: 8, needed: 18, min_training: 10, have: 15 });
    assert!(err.to_string().contains("needs at least 18 rows"), "{err}");
    let err = select_best(&Series::new("x", vec![1.0; 25]), 20).unwrap_err();
    assert!(err.to_string().contains("needs at least 40 rows"), "{err}");
    assert_eq!(select_best(&Series::new("x", vec![1.0; 30]), 0).unwrap_err(), ForecastError::ZeroHorizon);
}

#[test]
fn fewer_folds_when_history_is_short() {
    let s = select_best(&Series::new("x", (0..25).map(f64::from).collect()), 10).unwrap();
    assert_eq!((s.folds, s.held_out_points), (1, 10));
}

struct Broken;
impl Model for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn fit(&self, _: &[f64], _: Option<usize>) -> Result<Box<dyn Fitted>, ModelFailure> {
        Err(ModelFailure("cannot fit".into()))
    }
}

struct Panics;
impl Model for Panics {
    fn name(&self) -> &'static str {
        "panics"
    }
    fn fit(&self, _: &[f64], _: Option<usize>) -> Result<Box<dyn Fitted>, ModelFailure> {
        panic!("boom")
    }
}

#[test]
fn failing_models_are_reported_and_the_others_compared() {
    let candidates: Vec<Box<dyn Model>> =
        vec![Box::new(Broken), Box::new(Panics), Box::new(crate::models::naive::Naive)];
    let s = select_best_of(&Series::new("x", (0..40).map(f64::from).collect()), 5, &candidates).unwrap();
    assert_eq!(s.best, "naive");
    assert_eq!(s.model("broken").unwrap().failed.as_deref(), Some("fold 1 (trained on 35 points): cannot fit"));
    assert!(s.model("panics").unwrap().failed.as_deref().unwrap().contains("crashed: boom"), "{s:#?}");
    let err = select_best_of(&Series::new("x", vec![1.0; 40]), 5, &candidates[..1]).unwrap_err();
    assert!(err.to_string().contains("broken: fold 1"), "{err}");
}

#[test]
fn uneven_timestamps_are_noted() {
    let mut ts: Vec<i64> = (0..40).map(|i| i * 60_000).collect();
    ts[20..].iter_mut().for_each(|t| *t += 600_000);
    let series = Series::new("x", (0..40).map(f64::from).collect()).with_timestamps(ts).unwrap();
    let s = select_best(&series, 5).unwrap();
    assert!(s.notes[0].contains("not evenly spaced"), "{:?}", s.notes);
}

#[test]
fn selection_serialises_to_json() {
    let s = select_best(&Series::new("x", (0..40).map(f64::from).collect()), 5).unwrap();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["ranked_by"], "rmse");
    assert_eq!(json["models"].as_array().unwrap().len(), 4);
    assert_eq!(json["forecast"][0]["step"], 1);
    assert_eq!(json["season"]["rule"], "none");
}
