//! Which season length (in samples) a series has, and why.
//!
//! The rule, in order:
//! 1. a length the user gave (`--season N`; 1 means "no season");
//! 2. one day of samples, when the timestamps are evenly spaced, a day is a whole number
//!    (at least 2) of steps, and the series holds at least two days;
//! 3. otherwise the autocorrelation peak: after removing a least-squares line, the lag (2 to
//!    half the series, at most [`MAX_LAG`]) at a local maximum of the autocorrelation of at
//!    least [`MIN_ACF`]; among such peaks the shortest one within 90% of the highest is taken,
//!    so that a period wins over its multiples;
//! 4. otherwise no season.

use serde::Serialize;

use crate::error::ForecastError;
use crate::series::{Series, Spacing};

/// The longest lag the autocorrelation looks at (one day of minute samples fits).
pub const MAX_LAG: usize = 1500;
/// The least autocorrelation that counts as a season.
pub const MIN_ACF: f64 = 0.3;
const DAY_MS: i64 = 86_400_000;

/// The season used by the models.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Season {
    /// Samples per season; `None` when the series has none.
    pub length: Option<usize>,
    /// Which rule found it.
    pub rule: SeasonRule,
    /// In words, for people.
    pub why: String,
}

/// The rule that set the season.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeasonRule {
    Given,
    Daily,
    Autocorrelation,
    None,
}

/// Finds the season of `series` by the rule in the module documentation.
pub fn detect(series: &Series) -> Result<Season, ForecastError> {
    let n = series.len();
    if let Some(s) = series.given_season() {
        return match s {
            0 => Err(ForecastError::BadSeason { season: 0, reason: "use 1 for no season".into() }),
            1 => Ok(Season { length: None, rule: SeasonRule::Given, why: "no season (--season 1)".into() }),
            s if 2 * s > n => Err(ForecastError::BadSeason {
                season: s,
                reason: format!("two full seasons ({} rows) are needed, the series has {n}", 2 * s),
            }),
            s => Ok(Season { length: Some(s), rule: SeasonRule::Given, why: format!("given: {s} samples") }),
        };
    }
    let mut not_daily = "no timestamps".to_string();
    match series.spacing() {
        Spacing::Even { step_ms } if step_ms > 0 => {
            if DAY_MS % step_ms == 0 && DAY_MS / step_ms >= 2 {
                let per_day = (DAY_MS / step_ms) as usize;
                if n >= 2 * per_day {
                    return Ok(Season {
                        length: Some(per_day),
                        rule: SeasonRule::Daily,
                        why: format!("one day of samples every {} s", step_ms as f64 / 1000.0),
                    });
                }
                not_daily = format!("less than two days of samples ({n} rows, {per_day} a day)");
            } else {
                not_daily = format!("a day is not a whole number of {} s steps", step_ms as f64 / 1000.0);
            }
        }
        Spacing::Uneven { .. } => not_daily = "timestamps not evenly spaced".into(),
        _ => {}
    }
    Ok(match autocorrelation_peak(series.values()) {
        Some((lag, acf)) => Season {
            length: Some(lag),
            rule: SeasonRule::Autocorrelation,
            why: format!("autocorrelation peak {acf:.2} at lag {lag} ({not_daily})"),
        },
        None => Season {
            length: None,
            rule: SeasonRule::None,
            why: format!("no daily season ({not_daily}) and no autocorrelation peak of {MIN_ACF} or more"),
        },
    })
}

/// The season lag and its autocorrelation, if the detrended series has a clear peak.
pub fn autocorrelation_peak(values: &[f64]) -> Option<(usize, f64)> {
    let x = detrend(values);
    let denom: f64 = x.iter().map(|v| v * v).sum();
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let spread: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    let max_lag = (x.len() / 2).min(MAX_LAG);
    // Nothing but rounding noise left after the line (a constant or an exact trend): no season.
    if denom <= 1e-12 * spread.max(1.0) || max_lag < 3 {
        return None;
    }
    let acf: Vec<f64> =
        (0..=max_lag).map(|lag| x.iter().zip(&x[lag..]).map(|(a, b)| a * b).sum::<f64>() / denom).collect();
    let peaks: Vec<(usize, f64)> = (2..max_lag)
        .filter(|&l| acf[l] > acf[l - 1] && acf[l] >= acf[l + 1] && acf[l] >= MIN_ACF)
        .map(|l| (l, acf[l]))
        .collect();
    let best = peaks.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    peaks.into_iter().find(|p| p.1 >= 0.9 * best)
}

/// The values minus their least-squares line.
fn detrend(values: &[f64]) -> Vec<f64> {
    let n = values.len() as f64;
    if values.len() < 2 {
        return values.to_vec();
    }
    let t_mean = (n - 1.0) / 2.0;
    let y_mean = values.iter().sum::<f64>() / n;
    let (mut sty, mut stt) = (0.0, 0.0);
    for (i, y) in values.iter().enumerate() {
        let dt = i as f64 - t_mean;
        sty += dt * (y - y_mean);
        stt += dt * dt;
    }
    let slope = sty / stt;
    values.iter().enumerate().map(|(i, y)| y - y_mean - slope * (i as f64 - t_mean)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, period: usize) -> Vec<f64> {
        (0..n).map(|i| (i as f64 * std::f64::consts::TAU / period as f64).sin() + 0.01 * i as f64).collect()
    }

    #[test]
    fn daily_season_from_timestamps() {
        let ts = (0..48).map(|i| i * 3_600_000).collect();
        let s = Series::new("x", vec![1.0; 48]).with_timestamps(ts).unwrap();
        let season = detect(&s).unwrap();
        assert_eq!((season.length, season.rule), (Some(24), SeasonRule::Daily));
    }

    #[test]
    fn too_short_for_a_day_falls_back_to_autocorrelation() {
        let ts = (0..40).map(|i| i * 3_600_000).collect();
        let s = Series::new("x", wave(40, 8)).with_timestamps(ts).unwrap();
        let season = detect(&s).unwrap();
        assert_eq!((season.length, season.rule), (Some(8), SeasonRule::Autocorrelation), "{season:?}");
        assert!(season.why.contains("less than two days"), "{}", season.why);
    }

    #[test]
    fn autocorrelation_finds_the_period_not_its_multiples() {
        assert_eq!(autocorrelation_peak(&wave(300, 12)).map(|p| p.0), Some(12));
    }

    #[test]
    fn no_season_for_a_trend_or_a_constant() {
        let trend: Vec<f64> = (0..100).map(|i| 2.0 * i as f64 + 1.0).collect();
        assert_eq!(detect(&Series::new("x", trend)).unwrap().length, None);
        assert_eq!(detect(&Series::new("x", vec![3.0; 100])).unwrap().rule, SeasonRule::None);
    }

    #[test]
    fn given_season_is_checked() {
        let s = Series::new("x", vec![1.0; 10]);
        assert_eq!(detect(&s.clone().with_season(5)).unwrap().length, Some(5));
        assert_eq!(detect(&s.clone().with_season(1)).unwrap().length, None);
        assert!(detect(&s.clone().with_season(6)).is_err());
        assert!(detect(&s.with_season(0)).is_err());
    }
}
