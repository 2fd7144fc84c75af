//! A container holding what CRIU cannot checkpoint (here an io_uring instance) is refused by
//! `herd migrate` and `herd checkpoint` before it is frozen, with the resource named, and keeps
//! running where it is.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};

const T: Duration = Duration::from_secs(60);

/// How far the io_uring program has counted.
fn count(cluster: &Cluster) -> u64 {
    let log = cluster.ok(&["logs", "uring"]);
    log.lines().rev().find_map(|l| l.strip_prefix("n=")?.split_once(' ')?.0.parse().ok()).unwrap_or(0)
}

#[test]
fn io_uring_is_refused_before_the_freeze_and_the_container_runs_on() {
    let cluster = Cluster::up(55, 2);
    cluster.import_busybox_with(&["uring"]);
    // Herd's seccomp profile refuses io_uring (docs/design/confinement.md): a program that
    // needs it cannot start confined, and one that runs unconfined is what is refused below.
    cluster.ok(&["run", "--name", "confined", "busybox", "--", "/bin/uring"]);
    cluster.wait_state("confined", "exited", T);
    // Its error is on the log's stderr, which `herd logs` prints on its own, as `docker logs`.
    let err = String::from_utf8_lossy(&cluster.herd(&["logs", "confined"]).stderr).to_string();
    assert!(err.contains("io_uring_setup: Operation not permitted"), "{err}");
    cluster.ok(&["run", "--name", "uring", "--security-opt", "seccomp=unconfined", "busybox", "--", "/bin/uring"]);
    let counts_on = |from: u64| wait_for("the program to count on", T, || (count(&cluster) > from + 10).then_some(()));
    counts_on(0);
    let node = cluster.container("uring").node;
    let pid = cluster.container("uring").pid;

    for mode in ["cold", "postcopy"] {
        let err = cluster.fails(&["migrate", "uring", "--mode", mode]);
        assert!(err.contains("an io_uring instance (anon_inode:[io_uring])"), "{err}");
        assert!(err.contains("process") && err.contains("(uring)"), "the process is named: {err}");
        let c = cluster.container("uring");
        assert_eq!((c.state.as_str(), c.node.as_str(), c.pid), ("running", node.as_str(), pid), "it did not move");
        counts_on(count(&cluster));
    }
    for args in [&["checkpoint", "uring"][..], &["checkpoint", "--leave-running", "uring"]] {
        let err = cluster.fails(args);
        assert!(err.contains("cannot be checkpointed") && err.contains("io_uring"), "{err}");
        let c = cluster.container("uring");
        assert_eq!((c.state.as_str(), c.pid), ("running", pid), "it was not stopped");
        assert!(c.checkpoints.is_empty(), "no checkpoint was recorded");
        counts_on(count(&cluster));
    }
}

/// An inotify watch on a file of the overlay root (`tests/fixtures/watcher.c`) is refused before
/// the freeze with the process and the watch named; so is a file unlinked while another link
/// to it remains. The container runs on.
#[test]
fn an_overlay_watch_and_a_file_that_needs_link_remap_are_refused() {
    let cluster = Cluster::up(80, 2);
    cluster.import_busybox_with(&["watcher"]);
    cluster.ok(&["run", "--name", "watch", "busybox", "--", "sh", "-c", "touch /w; exec /bin/watcher /w"]);
    cluster.wait_log("watch", "watching /w", T);
    let pid = cluster.container("watch").pid;
    let err = cluster.fails(&["migrate", "watch"]);
    assert!(err.contains("(watcher) watches a file of its overlay root"), "{err}");
    assert_eq!((cluster.state("watch"), cluster.container("watch").pid), ("running".to_string(), pid));

    let script = "echo x > /a; ln /a /b; exec 7</a; rm /a; echo ready; while :; do sleep 1; done";
    cluster.ok(&["run", "--name", "remap", "busybox", "--", "sh", "-c", script]);
    cluster.wait_log("remap", "ready", T);
    let err = cluster.fails(&["checkpoint", "--leave-running", "remap"]);
    assert!(err.contains("/a (deleted) as fd 7") && err.contains("--link-remap"), "{err}");
    assert_eq!(cluster.state("remap"), "running");
}
