//! Named volumes move with their container (`herd migrate`): copied while it runs, the last
//! changes while it is frozen, checked on arrival; a damaged transfer leaves it running on the
//! source with its volume as it was; containers that share a volume neither move nor are
//! planned to move by a policy.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use common::{Cluster, wait_for};
use herd_proto::migration::{MigrationReport, Outcome};
use herd_proto::policy::PolicyInfo;

const T: Duration = Duration::from_secs(60);

/// Writes into its volume for as long as it runs: a log of consecutive numbers (one line
/// per write), the last number in `count`, plus an 8 MiB file, a directory with its own
/// owner and mode and a link out of the volume made once.
const WRITER: &str = "mkdir -p /data/conf && chown 1234:5678 /data/conf && chmod 750 /data/conf; \
    [ -f /data/blob ] || dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null; \
    ln -sfn /etc/passwd /data/link; \
    i=$(cat /data/count 2>/dev/null || echo 0); \
    while true; do i=$((i+1)); echo $i >> /data/log; echo $i > /data/count; echo \"wrote $i\"; sleep 0.02; done";

fn volume(cluster: &Cluster, node: &str, name: &str) -> PathBuf {
    cluster.data_dir.join("nodes").join(node).join("volumes").join(name)
}

/// Checks the writer's log in the volume at `dir` is one unbroken run 1, 2, ... with `count`
/// in step; returns its last number.
fn written(dir: &std::path::Path) -> u64 {
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let mut last = 0;
    // A line being written as it is read may be cut: only whole lines count.
    let whole = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    for line in whole.lines() {
        let n: u64 = line.parse().unwrap_or_else(|_| panic!("a damaged line {line:?} in {}", dir.display()));
        assert_eq!(n, last + 1, "the log in {} skips or repeats after {last}", dir.display());
        last = n;
    }
    last
}

/// Waits until the writer has written `more` lines past `seen` into the volume at `dir`.
fn writes_on(dir: &std::path::Path, seen: u64, more: u64) -> u64 {
    wait_for(&format!("more writes into {}", dir.display()), T, || {
        let n = written(dir);
        (n >= seen + more).then_some(n)
    })
}

fn migrate(cluster: &Cluster, name: &str, to: &str, mode: &str) -> MigrationReport {
    cluster.json(&["migrate", name, "--to", to, "--mode", mode])
}

#[test]
fn a_volume_moves_with_its_container_cold_and_postcopy() {
    let cluster = Cluster::up(70, 2);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "writer", "--node", "n1", "-v", "data:/data", "busybox", "--", "sh", "-c", WRITER]);
    cluster.wait_state("writer", "running", T);
    let mut seen = writes_on(&volume(&cluster, "n1", "data"), 0, 20);
    let blob = std::fs::read(volume(&cluster, "n1", "data").join("blob")).unwrap();
    assert_eq!(blob.len(), 8 << 20);

    for (from, to, mode) in [("n1", "n2", "cold"), ("n2", "n1", "postcopy")] {
        let report = migrate(&cluster, "writer", to, mode);
        assert_eq!(report.outcome, Outcome::Migrated, "{report:?}");
        assert!(report.volume_size >= 8 << 20, "{mode}: the volume's size: {report:?}");
        assert!(report.volume_bytes >= 8 << 20 && report.fs_bytes < 8 << 20, "{mode}: volume bytes: {report:?}");
        assert!(report.phases.iter().any(|p| p.phase == "volume data 1"), "{mode}: {:?}", report.phases);
        assert!(report.phases.iter().any(|p| p.phase == "volume data frozen"), "{mode}: {:?}", report.phases);
        cluster.wait_runs_only_on("writer", to, T);
        // Every write made up to the freeze arrived (a gap would show in the log), and the
        // container goes on writing into its volume on the destination.
        let dir = volume(&cluster, to, "data");
        let now = written(&dir);
        assert!(now >= seen, "{mode}: the destination's log ends at {now}, {seen} were written before");
        seen = writes_on(&dir, now, 20);
        // (read between the writer's truncation and its write, the file is empty)
        let count: u64 =
            wait_for("a count", T, || std::fs::read_to_string(dir.join("count")).ok()?.trim().parse().ok());
        assert!(count + 5 >= seen, "{mode}: count {count} lags the log at {seen}");
        assert_eq!(std::fs::read(dir.join("blob")).unwrap(), blob, "{mode}: the 8 MiB file changed");
        let conf = std::fs::metadata(dir.join("conf")).unwrap();
        assert_eq!((conf.uid(), conf.gid(), conf.mode() & 0o7777), (1234, 5678, 0o750), "{mode}: owner and mode");
        assert_eq!(std::fs::read_link(dir.join("link")).unwrap(), PathBuf::from("/etc/passwd"));
        // The source's copy is gone, and so is the destination's staging copy.
        assert!(!volume(&cluster, from, "data").exists(), "{mode}: the volume is still on {from}");
        let c = cluster.container("writer");
        assert!(!cluster.data_dir.join(format!("nodes/{to}/containers/{}/volumes", c.id)).exists());
    }
    // The volume's bytes are under the migration's bandwidth budget: 8 MiB at 4 MiB/s.
    let text = cluster.ok(&["migrate", "writer", "--to", "n2", "--mode", "cold", "--bandwidth", "4m"]);
    assert!(text.contains("volumes     "), "herd migrate prints the volumes' size: {text}");
    let report = cluster.container("writer").migrations.pop().unwrap();
    let first_pass = report.phases.iter().find(|p| p.phase == "volume data 1").unwrap();
    assert!(first_pass.ms >= 1800, "8 MiB moved in {} ms under a 4 MiB/s budget", first_pass.ms);
    seen = writes_on(&volume(&cluster, "n2", "data"), seen, 10);

    // The volume is placed with its users now: a new container that mounts it lands on n2,
    // sees what the writer wrote, and from then on neither moves.
    cluster.ok(&[
        "run",
        "--name",
        "reader",
        "-v",
        "data:/data:ro",
        "busybox",
        "--",
        "sh",
        "-c",
        // Read again while it falls between the writer's truncation and its write.
        "while c=$(cat /data/count); [ -z \"$c\" ]; do sleep 0.05; done; echo $c; sleep 3600",
    ]);
    let reader = cluster.wait_state("reader", "running", T);
    assert_eq!(reader.node, "n2");
    let log = cluster.wait_log("reader", "\n", T);
    assert!(log.trim().parse::<u64>().unwrap() >= seen, "{log}");
    for (name, other) in [("writer", "reader"), ("reader", "writer")] {
        let err = cluster.fails(&["migrate", name, "--to", "n1"]);
        assert!(
            err.contains(&format!(
                "container {name} cannot move: its volume data is also used by {other} on node n2, and containers that share a volume do not move"
            )),
            "{err}"
        );
    }
    cluster.wait_runs_only_on("writer", "n2", T);
    writes_on(&volume(&cluster, "n2", "data"), seen, 10);
}

#[test]
fn a_damaged_volume_transfer_aborts_and_the_container_runs_on() {
    // The source damages one byte of the last pass (while frozen), once.
    let cluster = Cluster::up_with_env(71, 2, &[], &[("HERD_FAULT_INJECT", "volume-corrupt")]);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "writer", "--node", "n1", "-v", "data:/data", "busybox", "--", "sh", "-c", WRITER]);
    let before = cluster.wait_state("writer", "running", T);
    let source = volume(&cluster, "n1", "data");
    let seen = writes_on(&source, 0, 20);
    let blob = std::fs::read(source.join("blob")).unwrap();

    let err = cluster.fails(&["migrate", "writer", "--to", "n2", "--mode", "cold"]);
    assert!(err.contains("volume data of writer did not arrive intact"), "{err}");
    assert!(err.contains("arrived damaged"), "{err}");
    assert!(err.contains("keeps running on n1"), "{err}");
    // It runs on the source only, with its volume as it was, and goes on writing into it.
    let c = cluster.wait_runs_only_on("writer", "n1", T);
    assert_eq!(c.ip, before.ip);
    writes_on(&source, seen, 20);
    assert_eq!(std::fs::read(source.join("blob")).unwrap(), blob);
    // The destination kept nothing: no volume, no container.
    assert!(!volume(&cluster, "n2", "data").exists(), "the destination kept a copy of the volume");
    let left: Vec<_> = std::fs::read_dir(cluster.data_dir.join("nodes/n2/containers")).unwrap().collect();
    assert!(left.is_empty(), "the destination kept {left:?}");
    let report = cluster.container("writer").migrations.pop().unwrap();
    assert!(matches!(report.outcome, Outcome::Aborted { ref reason } if reason.contains("arrived damaged")));

    // A volume of the same name that a removed container left on n2 is not overwritten.
    let leftover = volume(&cluster, "n2", "data");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("keep"), b"mine").unwrap();
    let err = cluster.fails(&["migrate", "writer", "--to", "n2"]);
    assert!(err.contains("node n2 already has a volume named data"), "{err}");
    assert_eq!(std::fs::read(leftover.join("keep")).unwrap(), b"mine");
    cluster.wait_runs_only_on("writer", "n1", T);
    std::fs::remove_dir_all(&leftover).unwrap();

    // The fault fired once: the next migration carries the volume whole.
    let report = migrate(&cluster, "writer", "n2", "cold");
    assert_eq!(report.outcome, Outcome::Migrated);
    let dir = volume(&cluster, "n2", "data");
    writes_on(&dir, written(&dir), 20);
    assert_eq!(std::fs::read(dir.join("blob")).unwrap(), blob);
    assert!(!source.exists());

    // herd restore --node does not carry volumes: refused, with the way that does.
    cluster.ok(&["checkpoint", "writer"]);
    let err = cluster.fails(&["restore", "writer", "--node", "n1"]);
    assert!(
        err.contains("its volume data stays on node n2, and herd restore --node does not carry volumes")
            && err.contains("herd migrate"),
        "{err}"
    );
    cluster.ok(&["restore", "writer"]);
    cluster.wait_runs_only_on("writer", "n2", T);
    writes_on(&dir, written(&dir), 20);
}

fn policy(cluster: &Cluster) -> PolicyInfo {
    cluster.json(&["policy", "show"])
}

#[test]
fn containers_sharing_a_volume_are_refused_and_never_planned() {
    let cluster = Cluster::up_with(72, 2, &["--node-cpus", "1", "--policy-interval", "1"]);
    cluster.import_busybox();
    // Three burners that share a volume make n1 hot (up to 0.9 of its 1 core; the threshold
    // is low so that a machine busy with other work still sees it hot).
    for b in ["b1", "b2", "b3"] {
        cluster.ok(&[
            "run",
            "--name",
            b,
            "--node",
            "n1",
            "--cpus",
            "0.3",
            "-v",
            "shared:/data",
            "busybox",
            "--",
            "sh",
            "-c",
            "while :; do :; done",
        ]);
    }
    let err = cluster.fails(&["migrate", "b1", "--to", "n2"]);
    assert!(
        err.contains("container b1 cannot move: its volume shared is also used by b2, b3 on node n1, and containers that share a volume do not move (as a group or apart)"),
        "{err}"
    );
    cluster.ok(&["policy", "set", "hotspot:threshold=0.35,k=2,n=3,margin=0.1"]);
    wait_for("n1 hot", T, || {
        let stats: Vec<herd_proto::api::ContainerStats> = cluster.json(&["stats", "--no-stream"]);
        (stats.iter().filter(|s| s.node == "n1").filter_map(|s| s.cpu_cores).sum::<f64>() > 0.4).then_some(())
    });
    let from = policy(&cluster).evaluations;
    wait_for("6 policy evaluations", T, || (policy(&cluster).evaluations >= from + 6).then_some(()));
    let decisions: Vec<herd_proto::policy::PolicyDecision> = cluster.json(&["policy", "explain"]);
    assert!(decisions.is_empty(), "the policy planned moves it cannot make: {decisions:?}");
    let events = cluster.ok(&["events"]);
    assert!(!events.contains("policy fail"), "{events}");
    // A burner that shares nothing is what the policy moves (small enough for n2 to take).
    cluster.run_cpu_burner("free", "n1", "0.1");
    wait_for("the policy to move free to n2", T, || (cluster.container("free").node == "n2").then_some(()));
    for b in ["b1", "b2", "b3"] {
        assert_eq!(cluster.container(b).node, "n1");
    }
}
