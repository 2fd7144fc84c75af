//! The baselines: the last value (naive) and the value one season earlier (seasonal naive).

use super::{Fitted, Model, ModelFailure};

/// Repeats the last value.
pub struct Naive;

/// Repeats the last season; without a season (or with less than one season of history) it is
/// the naive model, and says so in its description.
pub struct SeasonalNaive;

struct LastSeason {
    /// The values repeated, oldest first (one value for the naive fallback).
    pattern: Vec<f64>,
    describe: String,
}

impl Model for Naive {
    fn name(&self) -> &'static str {
        "naive"
    }

    fn fit(&self, history: &[f64], _season: Option<usize>) -> Result<Box<dyn Fitted>, ModelFailure> {
        let last = *history.last().ok_or_else(|| ModelFailure("no history".into()))?;
        Ok(Box::new(LastSeason { pattern: vec![last], describe: "last value".into() }))
    }
}

impl Model for SeasonalNaive {
    fn name(&self) -> &'static str {
        "seasonal-naive"
    }

    fn fit(&self, history: &[f64], season: Option<usize>) -> Result<Box<dyn Fitted>, ModelFailure> {
        match season {
            Some(s) if s >= 2 && history.len() >= s => Ok(Box::new(LastSeason {
                pattern: history[history.len() - s..].to_vec(),
                describe: format!("value one season ({s} samples) earlier"),
            })),
            _ => {
                let why = match season {
                    Some(s) => format!("less than one season ({s}) of history"),
                    None => "no season".into(),
                };
                let last = *history.last().ok_or_else(|| ModelFailure("no history".into()))?;
                Ok(Box::new(LastSeason { pattern: vec![last], describe: format!("last value ({why})") }))
            }
        }
    }
}

impl Fitted for LastSeason {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn forecast(&self, horizon: usize) -> Result<Vec<f64>, ModelFailure> {
        Ok(self.pattern.iter().copied().cycle().take(horizon).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_repeats_the_last_value() {
        let f = Naive.fit(&[1.0, 2.0, 3.0], Some(2)).unwrap();
        assert_eq!(f.forecast(3).unwrap(), vec![3.0, 3.0, 3.0]);
        assert!(Naive.fit(&[], None).is_err());
    }

    #[test]
    fn seasonal_naive_repeats_the_last_season() {
        let f = SeasonalNaive.fit(&[1.0, 2.0, 3.0, 10.0, 20.0, 30.0], Some(3)).unwrap();
        assert_eq!(f.forecast(5).unwrap(), vec![10.0, 20.0, 30.0, 10.0, 20.0]);
    }

    #[test]
    fn seasonal_naive_without_a_season_is_naive() {
        let f = SeasonalNaive.fit(&[1.0, 2.0], None).unwrap();
        assert_eq!(f.forecast(2).unwrap(), vec![2.0, 2.0]);
        assert_eq!(f.describe(), "last value (no season)");
        let f = SeasonalNaive.fit(&[1.0, 2.0], Some(5)).unwrap();
        assert_eq!(f.forecast(1).unwrap(), vec![2.0]);
    }
}
