//! The errors users can hit: a policy name or parameter that does not exist or does not parse,
//! and a trace that cannot be read.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum PolicyError {
    #[error("unknown policy `{name}` (known: {known})")]
    UnknownPolicy { name: String, known: String },
    #[error("policy `{policy}` has no parameter `{param}` (it takes: {known})")]
    UnknownParam { policy: String, param: String, known: String },
    #[error("policy `{policy}`: parameter `{param}` = `{value}`: {why}")]
    BadValue { policy: String, param: String, value: String, why: String },
    #[error("policy spec `{spec}`: {why}")]
    BadSpec { spec: String, why: String },
    #[error("trace line {line}: {why}")]
    BadTrace { line: usize, why: String },
    #[error("trace: {0}")]
    Trace(String),
}
