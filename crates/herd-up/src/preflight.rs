//! Checks, before `herd up` changes anything, that the machine can run a cluster.

use std::path::PathBuf;

use anyhow::bail;
use herd_node::tools;

/// The programs `herd up` starts or needs.
pub struct Programs {
    pub nats_server: PathBuf,
    pub iptables: PathBuf,
}

pub fn check() -> anyhow::Result<Programs> {
    if !nix::unistd::geteuid().is_root() {
        bail!("herd up must run as root: it drives runc, CRIU, cgroups and network namespaces (try sudo herd up)");
    }
    tools::require_runc(None)?;
    tools::require_criu(None)?;
    let nats_server = tools::find_executable("nats-server").ok_or_else(|| {
        anyhow::anyhow!("nats-server not found: Herd needs nats-server >= 2.11 (scripts/setup.sh installs it)")
    })?;
    let version = tools::program_version(&nats_server).and_then(|v| tools::parse_version(&v)).unwrap_or((0, 0, 0));
    if (version.0, version.1) < (2, 11) {
        bail!(
            "{} is nats-server {}.{}.{}: Herd needs >= 2.11: 2.9 serves no key-value buckets to its client, and 2.10 can start a clustered server that never sends its raft messages (scripts/setup.sh installs 2.11)",
            nats_server.display(),
            version.0,
            version.1,
            version.2
        );
    }
    let iptables = tools::find_executable("iptables").ok_or_else(|| {
        anyhow::anyhow!("iptables not found: install it with apt-get install iptables (CRIU needs it too)")
    })?;
    if !std::path::Path::new("/sys/fs/cgroup").exists() {
        bail!("/sys/fs/cgroup is missing: Herd needs cgroups mounted");
    }
    Ok(Programs { nats_server, iptables })
}
