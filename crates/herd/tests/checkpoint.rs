//! Checkpoint and restore on the container's own node: the container continues from its
//! saved state.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use herd_proto::state::ContainerState;

const T: Duration = Duration::from_secs(60);

/// The numbers the counter printed, in order. Each line also shows what the counter found
/// in its file in the writable layer, which must be the previous number.
fn counts(log: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((n, s)) = line.strip_prefix("n=").and_then(|r| r.split_once(" s=")) else { continue };
        let n: u64 = n.parse().unwrap();
        if n > 0 {
            assert_eq!(s, (n - 1).to_string(), "the file in the writable layer lost its content: {line:?}");
        }
        out.push(n);
    }
    out
}

#[test]
fn a_restored_container_continues_from_its_checkpoint() {
    let cluster = Cluster::up(3, 2);
    cluster.import_busybox();
    // The counter lives in the shell's memory; a file in the writable layer records it too.
    let script =
        "i=0; while true; do echo \"n=$i s=$(cat /state 2>/dev/null)\"; echo $i > /state; i=$((i+1)); sleep 0.1; done";
    cluster.ok(&["run", "--name", "counter", "--memory", "64m", "busybox", "--", "sh", "-c", script]);
    cluster.wait_log("counter", "n=5 ", T);

    let ck = cluster.ok(&["checkpoint", "counter"]);
    assert_eq!(ck.trim(), "ck1");
    let c = cluster.container("counter");
    assert_eq!(c.state, ContainerState::Checkpointed);
    assert_eq!(c.checkpoints.len(), 1);
    assert!(c.checkpoints[0].size_bytes > 0);
    let saved = counts(&cluster.ok(&["logs", "counter"]));
    let last = *saved.last().unwrap();
    assert_eq!(saved, (0..=last).collect::<Vec<_>>(), "the log before the checkpoint is whole");

    // Nothing runs while it is checkpointed.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counts(&cluster.ok(&["logs", "counter"])).last(), Some(&last));

    cluster.ok(&["restore", "counter"]);
    assert_eq!(cluster.state("counter"), "running");
    let log = wait_for("the counter to continue", T, || {
        let log = cluster.ok(&["logs", "counter"]);
        (counts(&log).len() as u64 > last + 5).then_some(log)
    });
    let all = counts(&log);
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>(), "the counter continued from {last}: {all:?}");

    // A checkpoint that leaves the container running, then a restore of the older one.
    let ck2 = cluster.ok(&["checkpoint", "--leave-running", "counter"]);
    assert_eq!(ck2.trim(), "ck2");
    assert_eq!(cluster.state("counter"), "running");
    let err = cluster.fails(&["restore", "counter", "--checkpoint", "ck1"]);
    assert!(err.contains("is running"), "{err}");
    cluster.ok(&["stop", "-t", "0", "counter"]);
    let err = cluster.fails(&["restore", "counter", "--checkpoint", "ck9"]);
    assert!(err.contains("has no checkpoint ck9 (it has: ck1, ck2)"), "{err}");
    cluster.ok(&["restore", "counter", "--checkpoint", "ck1"]);
    // ck1's counter runs again: the number after the first checkpoint appears a second time.
    wait_for("ck1's counter to run again", T, || {
        let again = counts(&cluster.ok(&["logs", "counter"])).iter().filter(|n| **n == last + 1).count();
        (again == 2).then_some(())
    });
    let text = cluster.ok(&["inspect", "counter"]);
    assert!(text.contains("ck1") && text.contains("ck2"), "{text}");
    cluster.ok(&["rm", "-f", "counter"]);
    assert!(!cluster.data_dir.join("nodes/n1/checkpoints").read_dir().is_ok_and(|mut d| d.next().is_some()));
}
