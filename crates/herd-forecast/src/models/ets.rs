//! Exponential smoothing from `augurs-ets`.
//!
//! `augurs-ets` 0.10 fits non-seasonal ETS only (its seasonal forms are not implemented and
//! panic), so a season is handled the way `augurs` recommends: MSTL (`augurs-mstl`, STL
//! decomposition) removes the seasonal component, AutoETS forecasts the rest, and the last
//! season of the seasonal component is added back. With no season, or less than two seasons of
//! history, AutoETS runs on the raw series (a stated fallback, shown in the description).

use augurs_core::{Fit, Predict};
use augurs_ets::AutoETS;
use augurs_ets::trend::AutoETSTrendModel;
use augurs_mstl::MSTLModel;

use super::{Fitted, Model, ModelFailure};

/// ETS fits on at most this many recent points (or four seasons, if more): older points
/// barely move exponentially weighted states, and fitting time grows with the length (about
/// 6 s for 20,000 points in a debug build).
pub const MAX_HISTORY: usize = 2000;

/// AutoETS with additive or multiplicative error, any trend (damped or not), no seasonal part.
const SPEC: &str = "ZZN";

/// Exponential smoothing, seasonal through MSTL.
pub struct Ets {
    /// Fit on at most this many recent points (or four seasons, if more).
    pub max_history: usize,
}

impl Default for Ets {
    fn default() -> Self {
        Ets { max_history: MAX_HISTORY }
    }
}

enum Inner {
    Plain(augurs_ets::FittedAutoETS),
    Seasonal(augurs_mstl::FittedMSTLModel),
}

struct FittedEts {
    inner: Inner,
    describe: String,
}

fn auto_ets() -> Result<AutoETS, ModelFailure> {
    AutoETS::new(1, SPEC).map_err(|e| ModelFailure(format!("AutoETS: {e}")))
}

impl Model for Ets {
    fn name(&self) -> &'static str {
        "ets"
    }

    fn fit(&self, history: &[f64], season: Option<usize>) -> Result<Box<dyn Fitted>, ModelFailure> {
        let keep = self.max_history.max(4 * season.unwrap_or(0));
        let (history, window) = match history.len().checked_sub(keep) {
            Some(skip) if skip > 0 => (&history[skip..], format!(", on the last {keep} points")),
            _ => (history, String::new()),
        };
        let mut fallback = None;
        if let Some(s) = season {
            if history.len() >= 2 * s {
                let mstl = MSTLModel::new(vec![s], AutoETSTrendModel::from(auto_ets()?));
                match mstl.fit(history) {
                    Ok(fit) => {
                        return Ok(Box::new(FittedEts {
                            inner: Inner::Seasonal(fit),
                            describe: format!(
                                "MSTL (season {s}) + AutoETS {SPEC} on the deseasonalised series{window}"
                            ),
                        }));
                    }
                    Err(e) => fallback = Some(format!("MSTL failed ({e})")),
                }
            } else {
                fallback = Some(format!("less than two seasons ({}) of history", 2 * s));
            }
        }
        let fit = auto_ets()?.fit(history).map_err(|e| ModelFailure(format!("AutoETS: {e}")))?;
        let mut describe = format!("AutoETS {}{window}", fit.model().model_type());
        if let Some(why) = fallback {
            describe.push_str(&format!(", without season: {why}"));
        }
        Ok(Box::new(FittedEts { inner: Inner::Plain(fit), describe }))
    }
}

impl Fitted for FittedEts {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn forecast(&self, horizon: usize) -> Result<Vec<f64>, ModelFailure> {
        let forecast = match &self.inner {
            Inner::Plain(m) => m.predict(horizon, None).map_err(|e| ModelFailure(format!("AutoETS: {e}")))?,
            Inner::Seasonal(m) => m.predict(horizon, None).map_err(|e| ModelFailure(format!("MSTL: {e}")))?,
        };
        Ok(forecast.point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_linear_trend() {
        let y: Vec<f64> = (0..40).map(|i| 5.0 + 2.0 * i as f64).collect();
        let f = Ets::default().fit(&y, None).unwrap();
        let next = f.forecast(3).unwrap();
        for (k, v) in next.iter().enumerate() {
            let want = 5.0 + 2.0 * (40 + k) as f64;
            assert!((v - want).abs() < 1.0, "step {k}: {v} vs {want} ({})", f.describe());
        }
    }

    #[test]
    fn seasonal_through_mstl_and_falls_back_without_enough_seasons() {
        let y: Vec<f64> = (0..96).map(|i| 10.0 + (i as f64 * std::f64::consts::TAU / 24.0).sin()).collect();
        let f = Ets::default().fit(&y, Some(24)).unwrap();
        assert!(f.describe().starts_with("MSTL"), "{}", f.describe());
        let next = f.forecast(24).unwrap();
        for (k, v) in next.iter().enumerate() {
            let want = 10.0 + ((96 + k) as f64 * std::f64::consts::TAU / 24.0).sin();
            assert!((v - want).abs() < 0.2, "step {k}: {v} vs {want}");
        }
        let f = Ets::default().fit(&y[..30], Some(24)).unwrap();
        assert!(f.describe().contains("without season"), "{}", f.describe());
    }

    #[test]
    fn long_histories_are_cut_to_the_recent_points() {
        let y: Vec<f64> = (0..300).map(|i| i as f64).collect();
        let f = Ets { max_history: 100 }.fit(&y, None).unwrap();
        assert!(f.describe().ends_with("on the last 100 points"), "{}", f.describe());
        let next = f.forecast(1).unwrap()[0];
        assert!((next - y.len() as f64).abs() < 1.0, "{next}");
    }

    #[test]
    fn too_little_history_is_a_failure_not_a_panic() {
        assert!(Ets::default().fit(&[1.0, 2.0, 3.0], None).is_err());
    }
}
