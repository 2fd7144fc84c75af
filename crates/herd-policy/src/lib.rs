//! Herd's migration policy engine, as pure logic: no I/O, no clock, no async.
//!
//! A [`Cluster`] snapshot (nodes with capacity and a power model, containers with their recent
//! demand samples) goes into a [`Policy`], which proposes a [`Plan`] of explained moves and
//! nodes that can go idle. The [`Engine`] wraps a policy with the safeguards a running cluster
//! needs (a bound on concurrent migrations, a per-container cool-down, hysteresis against
//! ping-pong). [`CostModel`] predicts what a migration costs. [`sim`] replays a workload trace
//! through the same engine and policies. See `docs/design/policies.md`.

pub mod cluster;
pub mod cost;
pub mod demand;
pub mod engine;
mod error;
pub mod plan;
pub mod policies;
pub mod sim;
pub mod spec;

pub use cluster::{Cluster, Container, Node, PowerModel};
pub use cost::{CostModel, MigrationCost};
pub use demand::{CachedForecast, DemandForecast, GivenForecast};
pub use engine::{Engine, EngineConfig};
pub use error::PolicyError;
pub use plan::{Explanation, Figure, IdleNode, Move, Plan};
pub use policies::Policy;
pub use spec::{POLICY_NAMES, parse_policy};
