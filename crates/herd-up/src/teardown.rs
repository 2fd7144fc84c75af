//! Undoing a local cluster from its state file: what a clean `herd down` does after the
//! components have stopped, and what the next `herd up` or `herd down` does after a crash.

use std::time::{Duration, Instant};

use herd_node::cleanup::{NodePaths, purge_node, remove_cgroup_tree};

use crate::layout::UpState;
use crate::network;
use crate::supervisor::pid_alive;

async fn kill(pid: u32) {
    let target = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while pid_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
}

/// Removes every process, container, mount, namespace, cgroup, link and rule the cluster
/// made. Problems are reported and do not stop the rest.
pub async fn run(state: &UpState, purge: bool) {
    let layout = &state.layout;
    let pids = state
        .node_pids
        .iter()
        .filter_map(|(_, p)| *p)
        .chain(state.control_pid)
        .chain(state.control_pids.iter().filter_map(|(_, p)| *p))
        .filter(|p| pid_alive(*p) && *p != std::process::id());
    let mut pids: Vec<u32> = pids.collect();
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        kill(pid).await;
    }
    let mut problems = Vec::new();
    for node in &layout.nodes {
        let paths = NodePaths::new(&node.data_dir, &node.run_dir, &node.cgroup_parent);
        problems.extend(purge_node(&paths).await);
    }
    // With its processes gone, a node's mounts go with its namespace.
    problems.extend(crate::mntns::remove(&layout.opts.run_dir));
    let brokers = state.broker_pids.iter().filter_map(|(_, p)| *p).chain(state.broker_pid);
    for pid in brokers.collect::<std::collections::BTreeSet<_>>() {
        if pid_alive(pid) {
            kill(pid).await;
        }
    }
    problems.extend(network::teardown(state).await);
    problems.extend(remove_cgroup_tree(&format!("/herd/{}", layout.opts.name)));
    if let Err(e) = std::fs::remove_dir_all(&layout.opts.run_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(format!("removing {}: {e}", layout.opts.run_dir.display()));
    }
    // `/herd` is shared by all clusters on the machine: it goes with the last one, never
    // while another cluster still has a run directory (and may be creating cgroups under it:
    // runc fails if `/herd` vanishes between its mkdirs).
    let other_clusters =
        layout.opts.run_dir.parent().and_then(|d| std::fs::read_dir(d).ok()).is_some_and(|mut d| d.next().is_some());
    if !other_clusters {
        herd_node::cgroups::remove_if_empty("/herd");
    }
    if purge
        && let Err(e) = std::fs::remove_dir_all(&layout.opts.data_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(format!("removing {}: {e}", layout.opts.data_dir.display()));
    }
    for p in problems {
        eprintln!("warning: {p}");
        tracing::warn!("{p}");
    }
}
