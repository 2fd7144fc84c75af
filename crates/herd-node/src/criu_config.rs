//! The CRIU configuration file a node gives runc for its containers.
//!
//! runc passes CRIU a configuration file named by a container's `org.criu.config` annotation
//! (`/etc/criu/runc.conf` without one), and the file's settings win over runc's. Herd uses it
//! for what runc 1.1 has no flag for:
//!
//! - `network-lock nftables`: CRIU locks a container's network while it dumps or restores
//!   TCP connections. Its default, iptables, runs `iptables-restore` and `ip6tables-restore`
//!   to lock and again to unlock (plus an `iptables -C` check): about 70 ms of a dump and
//!   60 ms of a restore here, all of it while the container is stopped. The nftables method
//!   does the same from within CRIU, through libnftables.
//!
//! The file is written where the agent keeps its run-time state and only holds what this
//! node's CRIU supports; a node whose CRIU lacks nftables locking keeps the default.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The OCI annotation runc reads the CRIU configuration file's path from.
pub const ANNOTATION: &str = "org.criu.config";

/// Writes the configuration for the CRIU at `criu` into `run_dir`, and returns its path, or
/// `None` when there is nothing to set (runc then uses its default file).
pub fn write(run_dir: &Path, criu: &Path) -> anyhow::Result<Option<PathBuf>> {
    if !crate::facts::criu_feature(criu, "network_lock_nftables") {
        tracing::info!(
            "CRIU locks container networks with iptables (no nftables support): dumps and restores take longer"
        );
        return Ok(None);
    }
    let path = run_dir.join("criu.conf");
    let text = "# Written by herd node: CRIU settings for this node's containers.\nnetwork-lock nftables\n";
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(path))
}
