//! Removing everything a node made: containers and their shims, overlay mounts, network
//! namespaces and cgroups. `herd down` runs it after stopping the agent (and after a crash),
//! so it works from the node's directories alone.

use std::path::Path;

pub use crate::paths::NodePaths;
use crate::{cgroups, overlay};

/// Removes a cgroup subtree in every hierarchy (see [`cgroups::remove_tree`]).
pub fn remove_cgroup_tree(path: &str) -> Vec<String> {
    cgroups::remove_tree(path)
}

fn kill_pidfile(path: &Path) {
    let Some(pid) = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<i32>().ok()) else { return };
    if pid > 1 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Kills and removes every container of the node and everything it held. Idempotent.
pub async fn purge_node(paths: &NodePaths) -> Vec<String> {
    let mut problems = Vec::new();
    let runc_root = paths.runc_root();
    if runc_root.exists()
        && let Some(binary) = crate::tools::find_executable("runc")
    {
        let runc = crate::runc::Runc { binary, root: runc_root.clone(), criu: None };
        match runc.list().await {
            Ok(list) => {
                for (id, _) in list {
                    let _ = runc.kill(&id, libc::SIGKILL, true).await;
                    if let Err(e) = runc.delete(&id, true).await {
                        problems.push(format!("deleting container {id}: {e}"));
                    }
                }
            }
            Err(e) => problems.push(format!("listing containers in {}: {e}", runc_root.display())),
        }
    }
    // Shims exit once their container is gone; kill any that linger.
    if let Ok(entries) = std::fs::read_dir(paths.containers_dir()) {
        for e in entries.flatten() {
            kill_pidfile(&e.path().join("state").join(crate::shim::SHIM_PID_FILE));
        }
    }
    for dir in [paths.data_dir.as_path(), paths.run_dir.as_path()] {
        match overlay::mounts_under(dir) {
            Ok(mounts) => {
                for m in mounts {
                    if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                        problems.push(format!("unmounting {}: {e}", m.display()));
                    }
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if let Ok(entries) = std::fs::read_dir(paths.netns_dir()) {
        for e in entries.flatten() {
            if let Err(e) = std::fs::remove_file(e.path()) {
                problems.push(format!("removing {}: {e}", paths.netns_dir().display()));
            }
        }
    }
    problems.extend(cgroups::remove_tree(&paths.cgroup_parent));
    if let Err(e) = std::fs::remove_dir_all(&paths.run_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(format!("removing {}: {e}", paths.run_dir.display()));
    }
    problems
}
