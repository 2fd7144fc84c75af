//! Herd's workload forecasting: predict a series (a container's CPU or memory, or any column of
//! a CSV) over a horizon, comparing several models by rolling-origin validation and keeping the
//! one with the lowest RMSE on held-out points; [`compare_pooled`] does the same for a group of
//! series (the containers of one workload class) with the errors pooled over the group.
//!
//! Pure logic: no I/O besides reading the CSV text it is given. See
//! `docs/design/forecasting.md` for the models, the crates used and the validation.

mod csv_input;
mod error;
pub mod metrics;
pub mod models;
pub mod pooled;
pub mod season;
mod series;
pub mod timestamp;
mod validate;

pub use csv_input::read_csv;
pub use error::ForecastError;
pub use metrics::{Accuracy, accuracy};
pub use pooled::{PooledComparison, PooledModel, compare_pooled};
pub use season::{Season, SeasonRule};
pub use series::{Series, Spacing};
pub use validate::{ForecastPoint, MAX_FOLDS, MIN_TRAINING, ModelResult, Selection, select_best};
