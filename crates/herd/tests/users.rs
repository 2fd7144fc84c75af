//! Containers whose processes switched to another user (as most server software does) are
//! checkpointed, restored and migrated like any other, on this machine too, where root lacks
//! CAP_SYS_RESOURCE and so may not read another user's resource limits with prlimit(2)
//! (Herd's CRIU reads them from /proc instead: scripts/criu-patches/0006).

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};

const T: Duration = Duration::from_secs(60);

/// The numbers the counter printed, each with the user it ran as.
fn counted_as(log: &str, uid: &str) -> u64 {
    let mut next = 0;
    for line in log.lines() {
        let Some((n, u)) = line.split_once(' ') else { continue };
        assert_eq!(n.parse::<u64>().unwrap(), next, "the counter skipped or repeated at {line:?}");
        assert_eq!(u, uid, "the counter runs as another user at {line:?}");
        next += 1;
    }
    next
}

#[test]
fn a_process_that_switched_user_moves_in_every_mode() {
    let cluster = Cluster::up(54, 2);
    cluster.import_busybox();
    let script = "i=0; while true; do echo \"$i $(id -u)\"; i=$((i+1)); sleep 0.05; done";
    cluster.ok(&["run", "--name", "nobody", "busybox", "--", "su", "-s", "/bin/sh", "nobody", "-c", script]);
    let counts_on = |seen: u64| {
        wait_for("the counter to count on as nobody", T, || {
            let n = counted_as(&cluster.ok(&["logs", "nobody"]), "65534");
            (n > seen + 10).then_some(n)
        })
    };
    let mut seen = counts_on(0);
    let uid_on_host = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next().unwrap().to_string()
    };
    for mode in ["postcopy", "cold", "postcopy", "cold"] {
        let before = cluster.container("nobody").node;
        cluster.ok(&["migrate", "nobody", "--mode", mode]);
        let c = cluster.container("nobody");
        assert_ne!(c.node, before, "{mode} moved it");
        seen = counts_on(seen);
    }
    // Checkpointed, then restored on the other node.
    cluster.ok(&["checkpoint", "nobody"]);
    let other = if cluster.container("nobody").node == "n1" { "n2" } else { "n1" };
    cluster.ok(&["restore", "nobody", "--node", other]);
    counts_on(seen);
    // The shell that counts runs as nobody on the host too: busybox's su execs it, so it is
    // the container's first process (its children come and go: sleep, id).
    let c = cluster.container("nobody");
    assert_eq!(uid_on_host(c.pid.unwrap()), "65534");
}
