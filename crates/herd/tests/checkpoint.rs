//! Checkpoint and restore: on the container's own node, onto another node (`--node`), and
//! through an exported image directory (`--image-dir`); the container continues from its
//! saved state, with its address and its log. Bad requests are explained and change nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{COUNTER, Cluster, EchoClient, counted, wait_for};
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

/// Waits until the counter has counted `more` numbers past `seen`, unbroken.
fn counts_on(cluster: &Cluster, seen: u64, more: u64) -> u64 {
    let log = wait_for("the counter to count on", T, || {
        let log = cluster.ok(&["logs", "counter"]);
        (counts(&log).len() as u64 > seen + more).then_some(log)
    });
    counted(&log)
}

/// Whether node `node` still holds anything of container `id`.
fn node_holds(cluster: &Cluster, node: &str, id: &str) -> bool {
    let dir = cluster.data_dir.join("nodes").join(node);
    dir.join("containers").join(id).exists() || dir.join("checkpoints").join(id).exists()
}

#[test]
fn a_checkpoint_moves_to_another_node_and_through_an_image_dir() {
    let cluster = Cluster::up(18, 2);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "counter", "--node", "n1", "--memory", "64m", "busybox", "--", "sh", "-c", COUNTER]);
    let before = cluster.wait_state("counter", "running", T);
    cluster.wait_log("counter", "n=10 ", T);

    // Checkpointed on n1, restored on n2: same address, and it counts on from where it was.
    assert_eq!(cluster.ok(&["checkpoint", "counter"]).trim(), "ck1");
    let seen = counted(&cluster.ok(&["logs", "counter"]));
    cluster.ok(&["restore", "counter", "--node", "n2"]);
    let c = cluster.wait_runs_only_on("counter", "n2", T);
    assert_eq!((c.ip, c.id.as_str()), (before.ip, before.id.as_str()));
    let cks: Vec<(&str, &str)> = c.checkpoints.iter().map(|k| (k.id.as_str(), k.node.as_str())).collect();
    assert_eq!(cks, [("ck1", "n2")], "the checkpoint moved with the container");
    let seen = counts_on(&cluster, seen, 10);
    assert!(!node_holds(&cluster, "n1", &c.id), "n1 let go of everything it held for the container");
    let events = cluster.ok(&["events"]);
    assert!(events.contains("restored from ck1 on n2, moved from n1"), "{events}");

    // Exported while it keeps running: a whole checkpoint directory on this machine.
    let dir = cluster.dir.path().join("export-running");
    assert_eq!(
        cluster.ok(&["checkpoint", "counter", "--leave-running", "--image-dir", dir.to_str().unwrap()]).trim(),
        "ck2"
    );
    assert_eq!(cluster.state("counter"), "running");
    let manifest = herd_image::verify_checkpoint_dir(&dir).unwrap();
    assert_eq!((manifest.container.id.as_str(), manifest.checkpoint.id.as_str()), (c.id.as_str(), "ck2"));
    for part in ["checkpoint.json", "criu", "rootfs-diff.tar"] {
        assert!(dir.join(part).exists(), "{part} is missing from the export");
    }

    // Exported on n2 as it stops, restored from the directory onto n1.
    let dir = cluster.dir.path().join("export");
    cluster.ok(&["checkpoint", "counter", "--image-dir", dir.to_str().unwrap()]);
    let seen = counted(&cluster.ok(&["logs", "counter"])).max(seen);
    cluster.ok(&["restore", "counter", "--image-dir", dir.to_str().unwrap(), "--node", "n1"]);
    let c = cluster.wait_runs_only_on("counter", "n1", T);
    assert_eq!(c.ip, before.ip);
    let cks: Vec<(&str, &str)> = c.checkpoints.iter().map(|k| (k.id.as_str(), k.node.as_str())).collect();
    assert_eq!(cks, [("ck4", "n1")], "the directory became the newest checkpoint, on n1");
    counts_on(&cluster, seen, 10);
    assert!(!node_holds(&cluster, "n2", &c.id), "n2 let go of everything it held for the container");

    // The same directory restores on the container's own node too (after a stop).
    cluster.ok(&["stop", "-t", "0", "counter"]);
    cluster.ok(&["restore", "counter", "--image-dir", dir.to_str().unwrap()]);
    assert_eq!(cluster.state("counter"), "running");
    assert_eq!(cluster.container("counter").node, "n1");

    // A checkpoint taken before a migration is brought from the node the container left.
    assert_eq!(cluster.ok(&["checkpoint", "counter", "--leave-running"]).trim(), "ck6");
    cluster.ok(&["migrate", "counter", "--to", "n2", "--mode", "cold"]);
    cluster.ok(&["stop", "-t", "0", "counter"]);
    cluster.ok(&["restore", "counter", "--checkpoint", "ck6"]);
    let c = cluster.wait_runs_only_on("counter", "n2", T);
    assert!(c.checkpoints.iter().any(|k| (k.id.as_str(), k.node.as_str()) == ("ck6", "n2")), "{:?}", c.checkpoints);
    cluster.ok(&["rm", "-f", "counter"]);
    assert!(!node_holds(&cluster, "n1", &c.id), "herd rm deleted the checkpoints left on n1");
    assert!(!node_holds(&cluster, "n2", &c.id));
}

/// Copies checkpoint directory `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn bad_checkpoint_and_restore_requests_are_explained() {
    let cluster = Cluster::up(19, 2);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "counter", "--node", "n1", "busybox", "--", "sh", "-c", COUNTER]);
    cluster.ok(&["run", "--name", "other", "--node", "n1", "busybox", "--", "sleep", "3600"]);
    cluster.wait_log("counter", "n=5 ", T);
    cluster.wait_state("other", "running", T);
    let good = cluster.dir.path().join("good");
    let dir_arg = |p: &Path| p.to_str().unwrap().to_string();
    cluster.ok(&["checkpoint", "counter", "--leave-running", "--image-dir", &dir_arg(&good)]);

    // A running container is not restored into, from a node's checkpoint or a directory.
    let err = cluster.fails(&["restore", "counter", "--node", "n2"]);
    assert!(err.contains("container counter is running: stop it"), "{err}");
    let err = cluster.fails(&["restore", "counter", "--image-dir", &dir_arg(&good)]);
    assert!(err.contains("container counter is running: stop it"), "{err}");
    // An export never overwrites anything.
    let err = cluster.fails(&["checkpoint", "counter", "--image-dir", &dir_arg(&good)]);
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(cluster.state("counter"), "running", "nothing was checkpointed");

    cluster.ok(&["checkpoint", "counter"]);
    let err = cluster.fails(&["restore", "counter", "--node", "n9"]);
    assert!(err.contains("no such node: n9 (the nodes are: n1, n2)"), "{err}");
    let err = cluster.fails(&["restore", "counter", "--node", "n2", "--checkpoint", "ck7"]);
    assert!(err.contains("container counter has no checkpoint ck7 (it has: ck1, ck2)"), "{err}");

    // Directories that are not whole checkpoints of this container.
    let missing = cluster.dir.path().join("missing");
    let err = cluster.fails(&["restore", "counter", "--image-dir", &dir_arg(&missing)]);
    assert!(err.contains("is not a usable Herd checkpoint: it is not a directory"), "{err}");
    let empty = cluster.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = cluster.fails(&["restore", "counter", "--image-dir", &dir_arg(&empty)]);
    assert!(err.contains("is not a usable Herd checkpoint: it has no checkpoint.json"), "{err}");
    let corrupt = cluster.dir.path().join("corrupt");
    copy_dir(&good, &corrupt);
    let pages = std::fs::read_dir(corrupt.join("criu"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("pages-"))
        .expect("CRIU wrote a pages image");
    let mut bytes = std::fs::read(&pages).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&pages, bytes).unwrap();
    let err = cluster.fails(&["restore", "counter", "--image-dir", &dir_arg(&corrupt), "--node", "n2"]);
    assert!(err.contains("digest mismatch"), "{err}");
    std::fs::remove_file(&pages).unwrap();
    let err = cluster.fails(&["restore", "counter", "--image-dir", &dir_arg(&corrupt)]);
    assert!(err.contains("is missing"), "{err}");
    let foreign = cluster.dir.path().join("foreign");
    cluster.ok(&["checkpoint", "other", "--image-dir", &dir_arg(&foreign)]);
    let err = cluster.fails(&["restore", "counter", "--image-dir", &dir_arg(&foreign)]);
    assert!(err.contains("holds a checkpoint of container other"), "{err}");

    // A directory whose manifest was edited to other image layers passes the CLI's checks, but
    // not the Control node's (the manifest no longer matches its signature); signed again with
    // the cluster's key, the node refuses it. The container stays restorable where it was.
    let edited = cluster.dir.path().join("edited");
    copy_dir(&good, &edited);
    let manifest_path = edited.join("checkpoint.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["container"]["layers"][0]["digest"] = format!("sha256:{}", "0".repeat(64)).into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let err = cluster.fails(&["restore", "counter", "--image-dir", &dir_arg(&edited), "--node", "n2"]);
    assert!(err.contains("does not match its signature"), "{err}");
    cluster.sign_checkpoint(&edited);
    let err = cluster.fails(&["restore", "counter", "--image-dir", &dir_arg(&edited), "--node", "n2"]);
    assert!(
        err.contains("node n2 cannot take the checkpoint of counter") && err.contains("other image layers"),
        "{err}"
    );
    let c = cluster.container("counter");
    assert_eq!((c.node.as_str(), c.state), ("n1", ContainerState::Checkpointed));
    assert!(!node_holds(&cluster, "n2", &c.id), "n2 dropped what it received");

    // A node that is down takes nothing.
    let stopped = cluster.stop_agent("n2");
    wait_for("n2 to be marked down", T, || {
        let nodes: Vec<herd_proto::api::NodeInfo> = cluster.json(&["nodes"]);
        nodes.iter().any(|n| n.name == "n2" && n.state == herd_proto::api::NodeState::Down).then_some(())
    });
    let err = cluster.fails(&["restore", "counter", "--node", "n2"]);
    assert!(err.contains("node n2 is down"), "{err}");
    let err = cluster.fails(&["restore", "counter", "--image-dir", &dir_arg(&good), "--node", "n2"]);
    assert!(err.contains("node n2 is down"), "{err}");
    stopped.resume();

    // After all that, the container restores where it was and counts on.
    cluster.ok(&["restore", "counter"]);
    let c = cluster.wait_runs_only_on("counter", "n1", T);
    assert_eq!(c.state, ContainerState::Running);
    let seen = counted(&cluster.ok(&["logs", "counter"]));
    counts_on(&cluster, seen, 5);
}

#[test]
fn a_checkpoint_left_running_matches_the_files_it_writes() {
    // The container appends to an open file all the time. Packed after the container resumed,
    // the writable layer would be newer than the memory CRIU saved (here the packer, seeing the
    // file grow under it, failed the checkpoint; a restore may fail on the file's size).
    let cluster = Cluster::up(34, 1);
    cluster.import_busybox();
    let writer =
        "i=0; exec 3>>/grow; while true; do echo $i >&3; [ $((i % 200)) = 0 ] && echo \"n=$i\"; i=$((i+1)); done";
    cluster.ok(&["run", "--name", "writer", "busybox", "--", "sh", "-c", writer]);
    cluster.wait_log("writer", "n=2000", T);
    for round in 1..=3 {
        let ck = cluster.ok(&["checkpoint", "writer", "--leave-running"]).trim().to_string();
        assert_eq!(cluster.state("writer"), "running", "round {round}: the container runs on after its checkpoint");
        let seen = cluster.ok(&["logs", "writer"]).lines().filter(|l| l.starts_with("n=")).count();
        cluster.ok(&["stop", "-t", "0", "writer"]);
        cluster.ok(&["restore", "writer", "--checkpoint", &ck]);
        assert_eq!(cluster.state("writer"), "running", "round {round}: restored from {ck}");
        wait_for("the restored writer to write on", T, || {
            let lines = cluster.ok(&["logs", "writer"]).lines().filter(|l| l.starts_with("n=")).count();
            (lines > seen + 2).then_some(())
        });
    }
}

#[test]
fn tcp_connections_survive_a_checkpoint_and_a_restore() {
    // Herd holds the container's TCP itself around the dump and the restore, and must let it
    // go again: a connection from the host goes on through both.
    let cluster = Cluster::up(35, 1);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "echo", "busybox", "--", "nc", "-ll", "-p", "9000", "-e", "cat"]);
    let server = cluster.wait_state("echo", "running", T);
    let mut client = EchoClient::connect(server.ip, 9000, T);
    assert_eq!(client.echo("hello"), "hello");

    cluster.ok(&["checkpoint", "echo", "--leave-running"]);
    assert_eq!(client.echo("after the checkpoint"), "after the checkpoint", "after a checkpoint left running");

    let ck = cluster.ok(&["checkpoint", "echo"]).trim().to_string();
    assert_eq!(cluster.state("echo"), "checkpointed");
    cluster.ok(&["restore", "echo", "--checkpoint", &ck]);
    assert_eq!(cluster.state("echo"), "running");
    assert_eq!(client.echo("after the restore"), "after the restore", "the same connection after the restore");
}

/// The bytes of a checkpoint's own memory pages (not its parent's), on node n1.
fn own_pages(cluster: &Cluster, id: &str, checkpoint: &str) -> u64 {
    let criu = cluster.data_dir.join(format!("nodes/n1/checkpoints/{id}/{checkpoint}/criu"));
    std::fs::read_dir(&criu)
        .unwrap_or_else(|e| panic!("{}: {e}", criu.display()))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_checkpoint_left_running_dumps_only_the_memory_written_since_the_last() {
    let tracks = std::process::Command::new("criu").args(["check", "--feature", "mem_dirty_track"]).output();
    assert!(
        tracks.is_ok_and(|o| o.status.success()),
        "CRIU here does not track dirty memory: run scripts/setup.sh (it builds Herd's CRIU)"
    );
    let mut cluster = Cluster::up(95, 1);
    cluster.import_busybox_with(&["memhog", "vmchurn"]);
    // 64 MiB, 1 MiB of it rewritten every second.
    cluster.ok(&["run", "--name", "hog", "--memory", "128m", "busybox", "--", "memhog", "64", "1"]);
    cluster.wait_log("hog", "filled", T);
    let id = cluster.container("hog").id;
    let first = cluster.ok(&["checkpoint", "hog", "--leave-running"]).trim().to_string();
    let second = cluster.ok(&["checkpoint", "hog", "--leave-running"]).trim().to_string();
    let (full, incremental) = (own_pages(&cluster, &id, &first), own_pages(&cluster, &id, &second));
    eprintln!("pages dumped: {full} bytes, then {incremental}");
    assert!(full > 60 << 20, "the first checkpoint dumped {full} bytes of pages");
    assert!(incremental < full / 8, "the second dumped {incremental} bytes of pages, the first {full}");

    // Each checkpoint is whole: the first one deleted, the second still restores, and the
    // memory is what memhog wrote.
    std::fs::remove_dir_all(cluster.data_dir.join(format!("nodes/n1/checkpoints/{id}/{first}"))).unwrap();
    cluster.ok(&["stop", "-t", "0", "hog"]);
    cluster.ok(&["restore", "hog", "--checkpoint", &second]);
    cluster.memhog_checks_more("hog", 2, T);

    // Memory changed in every way tracking could miss, through three checkpoints in a row.
    cluster.ok(&["run", "--name", "churn", "busybox", "--", "vmchurn"]);
    cluster.wait_log("churn", "child 1 checked=", T);
    let mut last = String::new();
    for _ in 0..3 {
        last = cluster.ok(&["checkpoint", "churn", "--leave-running"]).trim().to_string();
        cluster.wait_log("churn", "parent step=", T);
    }
    cluster.ok(&["stop", "-t", "0", "churn"]);
    let checks = |log: &str| log.matches("parent step=").count();
    let before = checks(&cluster.ok(&["logs", "churn"]));
    cluster.ok(&["restore", "churn", "--checkpoint", &last]);
    wait_for("churn to check its memory after the restore", T, || {
        let log = cluster.ok(&["logs", "churn"]);
        assert!(!log.contains("MISMATCH"), "vmchurn found its memory changed:\n{log}");
        (checks(&log) >= before + 3).then_some(())
    });
    cluster.down();
}
