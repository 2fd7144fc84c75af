//! A time series: its values, optional timestamps, how evenly they are spaced, and an optional
//! season length given by the user.

use crate::error::ForecastError;
use crate::timestamp::{self, Millis};

/// Gaps between timestamps within this fraction of the median gap count as even.
const EVEN_TOLERANCE: f64 = 0.1;

/// One series to forecast.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    name: String,
    values: Vec<f64>,
    timestamps: Option<Vec<Millis>>,
    season: Option<usize>,
}

/// How the timestamps of a series are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spacing {
    /// No timestamps: rows are taken as evenly spaced.
    Unknown,
    /// Every gap is within 10% of the median gap (`step_ms`).
    Even { step_ms: Millis },
    /// Some gap is further than 10% from the median; rows are then taken as evenly spaced at
    /// the median gap (a stated fallback, see [`crate::Selection::notes`]).
    Uneven { median_ms: Millis, min_ms: Millis, max_ms: Millis },
}

impl Series {
    /// A series without timestamps.
    pub fn new(name: impl Into<String>, values: Vec<f64>) -> Self {
        Series { name: name.into(), values, timestamps: None, season: None }
    }

    /// Adds one timestamp per value; they must strictly increase.
    pub fn with_timestamps(mut self, timestamps: Vec<Millis>) -> Result<Self, ForecastError> {
        assert_eq!(timestamps.len(), self.values.len(), "one timestamp per value");
        if let Some(i) = timestamps.windows(2).position(|w| w[1] <= w[0]) {
            return Err(ForecastError::TimestampsNotIncreasing {
                // Row i + 1 (0-based) is line i + 3 of a CSV file with a header and no blank lines.
                line: i as u64 + 3,
                previous: timestamp::format(timestamps[i]),
                current: timestamp::format(timestamps[i + 1]),
            });
        }
        self.timestamps = Some(timestamps);
        Ok(self)
    }

    /// Uses this season length instead of detecting one.
    pub fn with_season(mut self, season: usize) -> Self {
        self.season = Some(season);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn values(&self) -> &[f64] {
        &self.values
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn timestamps(&self) -> Option<&[Millis]> {
        self.timestamps.as_deref()
    }

    /// The season length the user gave, if any.
    pub fn given_season(&self) -> Option<usize> {
        self.season
    }

    /// How evenly the timestamps are spaced.
    pub fn spacing(&self) -> Spacing {
        let Some(ts) = self.timestamps.as_deref().filter(|t| t.len() >= 2) else {
            return Spacing::Unknown;
        };
        let mut gaps: Vec<Millis> = ts.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        let median = gaps[gaps.len() / 2];
        let (min, max) = (gaps[0], gaps[gaps.len() - 1]);
        let tolerance = median as f64 * EVEN_TOLERANCE;
        if (median - min) as f64 <= tolerance && (max - median) as f64 <= tolerance {
            Spacing::Even { step_ms: median }
        } else {
            Spacing::Uneven { median_ms: median, min_ms: min, max_ms: max }
        }
    }

    /// The timestamps of the `horizon` steps after the last row, when the series has timestamps.
    pub fn future_timestamps(&self, horizon: usize) -> Option<Vec<Millis>> {
        let last = *self.timestamps.as_deref()?.last()?;
        let step = match self.spacing() {
            Spacing::Even { step_ms } => step_ms,
            Spacing::Uneven { median_ms, .. } => median_ms,
            Spacing::Unknown => return None,
        };
        Some((1..=horizon as i64).map(|k| last + k * step).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_even_uneven_unknown() {
        let s = Series::new("x", vec![1.0; 4]);
        assert_eq!(s.spacing(), Spacing::Unknown);
        let s = s.with_timestamps(vec![0, 1000, 2050, 3000]).unwrap();
        assert_eq!(s.spacing(), Spacing::Even { step_ms: 1000 });
        assert_eq!(s.future_timestamps(2), Some(vec![4000, 5000]));
        let s = Series::new("x", vec![1.0; 4]).with_timestamps(vec![0, 1000, 5000, 6000]).unwrap();
        assert_eq!(s.spacing(), Spacing::Uneven { median_ms: 1000, min_ms: 1000, max_ms: 4000 });
    }

    #[test]
    fn timestamps_must_increase() {
        let err = Series::new("x", vec![1.0; 3]).with_timestamps(vec![0, 1000, 1000]).unwrap_err();
        assert!(matches!(err, ForecastError::TimestampsNotIncreasing { line: 4, .. }), "{err}");
        assert!(err.to_string().contains("line 4"), "{err}");
    }
}
