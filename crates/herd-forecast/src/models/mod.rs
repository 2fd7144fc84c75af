//! The forecasting models, behind one trait: fit on a history, then forecast `h` steps.
//!
//! - [`naive`]: the last value, repeated (the baseline everything must beat);
//! - [`naive::SeasonalNaive`]: the value one season earlier (the naive value without a season);
//! - [`ets`]: exponential smoothing from `augurs-ets` (AutoETS picks error/trend/damping by
//!   AICc), on the series with its season removed by MSTL (`augurs-mstl`) when it has one;
//! - [`regression`]: a ridge regression (`smartcore`) on lagged values, the seasonal lag and
//!   the position in the season, forecasting recursively one step at a time.

pub mod ets;
pub mod naive;
pub mod regression;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Why a model could not fit or forecast; the other models are still compared.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFailure(pub String);

impl fmt::Display for ModelFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A forecasting method, not yet fitted.
pub trait Model {
    /// The short name users select and read (`naive`, `seasonal-naive`, `ets`, `regression`).
    fn name(&self) -> &'static str;
    /// Learns from `history` (oldest first); `season` is the season length in samples, if any.
    fn fit(&self, history: &[f64], season: Option<usize>) -> Result<Box<dyn Fitted>, ModelFailure>;
}

/// A fitted model.
pub trait Fitted {
    /// The variant that was fitted, in words (e.g. which ETS form, which features).
    fn describe(&self) -> String;
    /// The next `horizon` values after the history.
    fn forecast(&self, horizon: usize) -> Result<Vec<f64>, ModelFailure>;
}

/// Every model, simplest first (on equal errors the simpler one wins).
pub fn all() -> Vec<Box<dyn Model>> {
    vec![
        Box::new(naive::Naive),
        Box::new(naive::SeasonalNaive),
        Box::new(ets::Ets::default()),
        Box::new(regression::Regression),
    ]
}

/// The model `name` names (as [`Model::name`] spells it), if there is one.
pub fn by_name(name: &str) -> Option<Box<dyn Model>> {
    all().into_iter().find(|m| m.name() == name)
}

/// Fits `model` and forecasts `horizon` steps, turning a panic inside a model crate and
/// non-finite output into a [`ModelFailure`] so that one model cannot take the others down.
pub fn fit_and_forecast(
    model: &dyn Model,
    history: &[f64],
    season: Option<usize>,
    horizon: usize,
) -> Result<(Vec<f64>, String), ModelFailure> {
    let run = || -> Result<(Vec<f64>, String), ModelFailure> {
        let fitted = model.fit(history, season)?;
        let values = fitted.forecast(horizon)?;
        if values.len() != horizon {
            return Err(ModelFailure(format!("gave {} values for a horizon of {horizon}", values.len())));
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(ModelFailure(format!("forecast a non-finite value ({bad})")));
        }
        Ok((values, fitted.describe()))
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown reason".into());
            Err(ModelFailure(format!("the model crashed: {msg}")))
        }
    }
}
