//! `herd up` and `herd down`: a whole cluster on one machine, started for real.
//!
//! `herd up` starts a NATS broker (with JetStream), a Control node and N Compute node
//! agents. Each Compute node is a separate test host: its own network namespace plugged
//! into a cluster bridge, its own data directory and runc root, so nodes share nothing but
//! the network. A supervisor restarts a component that dies, and on `herd down` or Ctrl-C
//! stops containers, components and the network it built, leaving nothing behind.

mod certs;
mod demo;
mod layout;
mod mntns;
mod network;
mod preflight;
mod supervisor;
mod teardown;

pub use demo::busybox_rootfs;
pub use layout::{Layout, NodeLayout, UpOptions, UpState};
pub use supervisor::{DEFAULT_STOP_TIMEOUT, down, supervise_from_env as supervisor_from_env, up};
