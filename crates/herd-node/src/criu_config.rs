//! The CRIU configuration file a node gives runc for its containers.
//!
//! runc passes CRIU a configuration file named by a container's `org.criu.config` annotation
//! (`/etc/criu/runc.conf` without one), and the file's settings win over runc's. Herd uses it
//! for what runc 1.1 has no flag for; both settings take time out of every dump and restore,
//! while the container is stopped:
//!
//! - `network-lock nftables`: CRIU locks a container's network while it dumps or restores
//!   TCP connections. Its default, iptables, runs `iptables-restore` and `ip6tables-restore`
//!   to lock and again to unlock (plus an `iptables -C` check): about 70 ms of a dump and
//!   60 ms of a restore here. The nftables method does the same from within CRIU, through
//!   libnftables. Only where `criu check --feature network_lock_nftables` passes.
//! - `manage-cgroups ignore`: runc creates the container's cgroup, sets its limits from the
//!   runtime config and starts CRIU's restore inside it, so the restored processes are born
//!   there; CRIU need not record and replay the cgroups as well (it mounted every controller
//!   to read them: about 13 ms of a dump). A Herd container has no cgroup namespace and no
//!   cgroups of its own below its cgroup, so nothing is lost.
//!
//! The file is written where the agent keeps its run-time state.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The OCI annotation runc reads the CRIU configuration file's path from.
pub const ANNOTATION: &str = "org.criu.config";

/// Writes the configuration for the CRIU at `criu` into `run_dir` and returns its path.
pub fn write(run_dir: &Path, criu: &Path) -> anyhow::Result<PathBuf> {
    let mut text = String::from("# Written by herd node: CRIU settings for this node's containers.\n");
    text.push_str("manage-cgroups ignore\n");
    if crate::facts::criu_feature(criu, "network_lock_nftables") {
        text.push_str("network-lock nftables\n");
    } else {
        tracing::info!(
            "CRIU locks container networks with iptables (no nftables support): dumps and restores take longer"
        );
    }
    let path = run_dir.join("criu.conf");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
