//! The errors a user can get from forecasting, each carrying what is needed to fix the input.

use thiserror::Error;

/// Why a series could not be read or forecast. Models that fail are not errors: they are
/// reported as failed in the [`Selection`](crate::Selection) and the others are still compared.
#[derive(Debug, Error, PartialEq)]
pub enum ForecastError {
    /// The CSV could not be read at all (bad quoting, invalid UTF-8, I/O error).
    #[error("cannot read the CSV: {0}")]
    Csv(String),
    /// The CSV has no header row.
    #[error("the CSV is empty: a header row naming the columns is needed")]
    NoHeader,
    /// A requested column is not in the header.
    #[error("no column named {name:?}; the columns are: {}{hint}", available.join(", "))]
    MissingColumn { name: String, available: Vec<String>, hint: String },
    /// A value cell is empty or not a finite number.
    #[error("line {line}, column {column} ({name:?}): {problem}")]
    BadValue { line: u64, column: usize, name: String, problem: String },
    /// A timestamp cell could not be parsed.
    #[error(
        "line {line}, column {column} ({name:?}): {text:?} is not a timestamp \
         (expected RFC 3339 such as 2024-05-01T12:00:00Z, or Unix seconds or milliseconds)"
    )]
    BadTimestamp { line: u64, column: usize, name: String, text: String },
    /// Timestamps must strictly increase from one row to the next.
    #[error(
        "line {line}: timestamp {current} is not after the previous row's {previous}; sort the rows by time and remove duplicates"
    )]
    TimestampsNotIncreasing { line: u64, previous: String, current: String },
    /// Not enough history for the requested horizon.
    #[error(
        "too little history: a horizon of {horizon} needs at least {needed} rows \
         ({horizon} held out to measure accuracy and at least {min_training} to train on), but there are {have}"
    )]
    TooFewRows { horizon: usize, needed: usize, min_training: usize, have: usize },
    /// The horizon must be at least one step.
    #[error("the horizon must be at least 1 step")]
    ZeroHorizon,
    /// A season length given by the user cannot be used.
    #[error("invalid season length {season}: {reason}")]
    BadSeason { season: usize, reason: String },
    /// Every model failed (should not happen: the naive model only needs one value).
    #[error("no model could forecast this series: {0}")]
    NoModel(String),
}
