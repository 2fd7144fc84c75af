//! The errors a user can hit: a CSV that cannot be read, a recording with nothing in it.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum WorkloadError {
    #[error("line {line}: {why}")]
    BadLine { line: u64, why: String },
    #[error("{0}")]
    Bad(String),
}
