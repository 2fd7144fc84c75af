//! Herd's metrics core: everything between the kernel's counter files and the figures people
//! and tools see, as pure logic with no runtime (no tokio, no NATS).
//!
//! - [`cgroup`]: parsers for the cgroup v1 and v2 files of one container, and
//!   [`cgroup::ContainerCounters`], its raw cumulative counters and gauges.
//! - [`node`]: parsers for the `/proc` files of a node (`stat`, `loadavg`, `meminfo`,
//!   `net/dev`, `diskstats`) and [`node::NodeCounters`].
//! - [`psi`]: the pressure-stall (PSI) file format, shared by cgroups and `/proc/pressure`.
//! - [`read`]: the only file I/O: reads the files above under a given root (so tests can point
//!   it at a temporary tree), tolerating missing or broken files.
//! - [`rate`]: two counter snapshots to rates, with counter resets handled.
//! - [`sample`]: the compact, serialisable samples a Compute node publishes, and their batch.
//! - [`history`]: the Control node's bounded in-memory time-series store.
//! - [`prometheus`]: the latest samples in Prometheus text exposition format 0.0.4.
//!
//! The Compute node's sampler keeps a [`read::CgroupReader`] per container (files held open;
//! [`read::CgroupReader::set_net_pid`] adds its network namespace's counters) and one
//! [`read::NodeReader`], and every interval reads them, keeps the [`rate::Snapshot`]s for the
//! next interval, builds [`sample::ContainerSample`]s and a [`sample::NodeSample`] and
//! publishes them as a [`sample::Batch`]. The Control node decodes batches into a
//! [`history::History`] and renders [`prometheus::render`] for `GET /metrics`.

pub mod cgroup;
pub mod history;
pub mod node;
mod parse;
pub mod prometheus;
pub mod psi;
pub mod rate;
pub mod read;
pub mod sample;

pub use parse::ParseError;
