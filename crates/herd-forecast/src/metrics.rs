//! Accuracy of a forecast against held-out actual values: MAE, RMSE and MAPE.

use serde::Serialize;

/// Accuracy over a set of held-out points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accuracy {
    /// How many held-out points the figures cover.
    pub points: usize,
    /// Mean absolute error, in the series' unit.
    pub mae: f64,
    /// Root mean squared error, in the series' unit. Models are ranked by it.
    pub rmse: f64,
    /// Mean absolute percentage error, in percent; `None` when undefined (see `mape_absent`).
    pub mape: Option<f64>,
    /// Why MAPE is absent, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mape_absent: Option<String>,
}

/// Compares `forecast` with `actual` point by point. Both must have the same, non-zero length
/// (the validation guarantees it).
///
/// MAPE divides by the actual value, so it is undefined when an actual value is zero: it is then
/// reported as absent with the reason rather than as infinity or a silently skipped point.
pub fn accuracy(actual: &[f64], forecast: &[f64]) -> Accuracy {
    assert_eq!(actual.len(), forecast.len(), "accuracy needs as many forecasts as actual values");
    let n = actual.len();
    if n == 0 {
        return Accuracy { points: 0, mae: 0.0, rmse: 0.0, mape: None, mape_absent: Some("no points".into()) };
    }
    let errors = actual.iter().zip(forecast).map(|(a, f)| a - f);
    let (abs_sum, sq_sum) = errors.fold((0.0, 0.0), |(abs, sq), e| (abs + e.abs(), sq + e * e));
    let zeros = actual.iter().filter(|a| **a == 0.0).count();
    let (mape, mape_absent) = if zeros > 0 {
        (None, Some(format!("undefined: {zeros} of the {n} held-out actual values are zero")))
    } else {
        let pct: f64 = actual.iter().zip(forecast).map(|(a, f)| ((a - f) / a).abs()).sum();
        (Some(100.0 * pct / n as f64), None)
    };
    Accuracy { points: n, mae: abs_sum / n as f64, rmse: (sq_sum / n as f64).sqrt(), mape, mape_absent }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_example() {
        // errors: -1, 2, 0, -3 -> |e| sum 6, e^2 sum 14
        let actual = [10.0, 20.0, 30.0, 40.0];
        let forecast = [11.0, 18.0, 30.0, 43.0];
        let a = accuracy(&actual, &forecast);
        assert_eq!(a.points, 4);
        assert!((a.mae - 1.5).abs() < 1e-12, "{a:?}");
        assert!((a.rmse - (14.0f64 / 4.0).sqrt()).abs() < 1e-12, "{a:?}");
        // |e|/a: 0.1, 0.1, 0, 0.075 -> mean 0.06875 -> 6.875 %
        assert!((a.mape.unwrap() - 6.875).abs() < 1e-9, "{a:?}");
        assert!(a.mape_absent.is_none());
    }

    #[test]
    fn perfect_forecast_has_zero_errors() {
        let a = accuracy(&[1.0, 2.0], &[1.0, 2.0]);
        assert_eq!((a.mae, a.rmse, a.mape), (0.0, 0.0, Some(0.0)));
    }

    #[test]
    fn mape_is_absent_with_a_reason_when_an_actual_is_zero() {
        let a = accuracy(&[0.0, 2.0, 0.0], &[1.0, 2.0, 1.0]);
        assert_eq!(a.mape, None);
        assert_eq!(a.mape_absent.as_deref(), Some("undefined: 2 of the 3 held-out actual values are zero"));
        assert!((a.mae - 2.0 / 3.0).abs() < 1e-12);
        assert!(a.rmse.is_finite());
    }

    #[test]
    fn rmse_weighs_large_errors_more_than_mae() {
        let a = accuracy(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 4.0]);
        assert_eq!(a.mae, 1.0);
        assert_eq!(a.rmse, 2.0);
    }
}
