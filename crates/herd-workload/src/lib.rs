//! Workload characterisation from recorded metrics, as pure logic (no I/O besides the text it
//! is handed).
//!
//! A [`Recording`] holds each container's samples (CPU, memory, block I/O, network, pressure
//! stall, throttling), read from the Control node's recorded series or from CSV. [`features`]
//! summarises each container (means, peaks, burstiness); [`classify`] puts it into one class
//! (cpu-bound, memory-bound, io-bound, network-bound, idle, bursty) by stated rules;
//! [`importance`] ranks the features by how much they matter for predicting a performance
//! signal (CPU pressure stall, else throttling) with a random forest; [`report`] puts it all
//! together. [`models`] compares the forecasting models of `herd-forecast` on the CPU and memory
//! series of each class's containers and keeps the best per class. A recording is written back as the simulator's trace CSV by
//! [`Recording::to_trace_csv`]. See `docs/design/workloads.md`.

pub mod classify;
mod error;
pub mod features;
pub mod importance;
pub mod models;
pub mod recording;
pub mod report;

pub use classify::{Class, ClassRules};
pub use error::WorkloadError;
pub use features::Features;
pub use models::{ClassModels, ModelLimits, ModelsReport, class_models};
pub use recording::{FIELDS, Field, Recording, Sample};
pub use report::{Report, report};
