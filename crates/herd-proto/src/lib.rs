//! Herd's wire protocol: every type that crosses a process boundary.
//!
//! - [`api`]: the HTTP+JSON API the Control node serves to the CLI and dashboard.
//! - [`node`]: requests the Control node sends a Compute node agent over NATS, and their replies.
//! - [`state`]: the records kept in JetStream key-value buckets (the cluster state).
//! - [`migration`]: live migration modes, records and reports.
//! - [`policy`]: the policy engine's settings and explained decisions.
//! - [`pull`]: `herd image pull`'s request and progress.
//! - [`checkpoint`]: the manifest of a checkpoint, on a node and in an exported image directory.
//! - [`control`]: the Control replicas' lease and reports, and `herd control status`.
//! - [`ha`]: checkpoint tickers, their stored versions, and what a node failure does.
//! - [`subjects`]: NATS subject, bucket and stream names.
//! - [`join`]: joining a machine with a one-time token, and the members the broker admits.
//! - [`hostconfig`]: published ports, shared network namespaces and named volumes.
//! - [`exec`]: `herd exec`'s request and the framed stream of a session.
//! - [`logs`]: how much of a container's output its node keeps.
//! - [`process`]: the user a container runs as and its working directory.
//! - [`units`] and [`names`]: parsing and validation shared by the CLI, the Control node and the agent.
//!
//! This crate does no I/O, so it is tested fast and shared by every component.

pub mod api;
pub mod checkpoint;
pub mod confinement;
pub mod control;
pub mod exec;
pub mod ha;
pub mod hostconfig;
pub mod join;
pub mod logs;
pub mod migration;
pub mod names;
pub mod node;
pub mod policy;
pub mod process;
pub mod pull;
pub mod state;
pub mod subjects;
pub mod units;

/// Milliseconds since the Unix epoch, the one time format on the wire.
pub type UnixMillis = u64;

/// The current time as [`UnixMillis`].
pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
