//! The walking skeleton end to end: nodes, images, run, ps, inspect, logs, stop, rm.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use herd_proto::api::{ContainerInfo, NodeInfo, NodeState};
use herd_proto::state::{ContainerState, ImageRecord};

const T: Duration = Duration::from_secs(30);

#[test]
fn containers_run_are_listed_logged_stopped_and_removed() {
    let cluster = Cluster::up(1, 2);

    let nodes: Vec<NodeInfo> = cluster.json(&["nodes"]);
    assert_eq!(nodes.len(), 2);
    for n in &nodes {
        assert_eq!(n.state, NodeState::Ready, "{n:?}");
        assert!(n.capacity.cpus_milli >= 1000 && n.capacity.memory_bytes > 1 << 30, "{n:?}");
        assert_eq!(n.facts.criu_version.as_deref(), Some("4.2.1"));
    }
    let table = cluster.ok(&["nodes"]);
    assert!(table.contains("n1") && table.contains("ready"), "{table}");

    cluster.import_busybox();
    let images: Vec<ImageRecord> = cluster.json(&["image", "ls"]);
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name, "busybox:latest");
    assert_eq!(images[0].source, "rootfs directory");

    // A long-running container with limits, env and labels, on a chosen node.
    let name = cluster.ok(&[
        "run",
        "--name",
        "web",
        "--node",
        "n2",
        "--cpus",
        "0.5",
        "--memory",
        "64m",
        "--env",
        "GREETING=hello",
        "--label",
        "tier=front",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo $GREETING from $(hostname); echo to-stderr >&2; exec sleep 3600",
    ]);
    assert_eq!(name.trim(), "web");
    let web = cluster.wait_state("web", "running", T);
    assert_eq!(web.node, "n2");
    assert_eq!(web.limits.cpus_milli, Some(500));
    assert_eq!(web.limits.memory_bytes, Some(64 << 20));
    assert_eq!(web.labels.get("tier").map(String::as_str), Some("front"));
    assert!(web.ip.octets()[0] == 10 && web.ip.octets()[1] == 101, "{}", web.ip);
    assert!(web.pid.is_some() && web.started_at.is_some());

    // The limits reached the container's cgroup.
    let pid = web.pid.unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mem_path = cgroup.lines().find_map(|l| l.strip_suffix("").and_then(|l| l.split_once(":memory:"))).unwrap().1;
    let limit = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{mem_path}/memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    assert!(mem_path.starts_with("/herd/t1/n2/"), "{mem_path}");

    let logs = cluster.wait_log("web", "hello from web", T);
    assert!(!logs.contains("to-stderr"), "stderr went to stdout: {logs}");
    let out = cluster.herd(&["logs", "web"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"));

    // A container that exits on its own is reported with its exit code.
    cluster.ok(&["run", "--name", "three", "busybox", "--", "sh", "-c", "echo bye; exit 3"]);
    let three = cluster.wait_state("three", "exited", T);
    assert_eq!(three.exit_code, Some(3));
    assert!(three.finished_at.is_some());
    let ps = cluster.ok(&["ps"]);
    assert!(ps.contains("web") && !ps.contains("three"), "{ps}");
    let ps_all = cluster.ok(&["ps", "-a"]);
    assert!(ps_all.contains("exited (3)"), "{ps_all}");
    let all: Vec<ContainerInfo> = cluster.json(&["ps", "-a"]);
    assert_eq!(all.len(), 2);
    assert_eq!(cluster.ok(&["logs", "three"]), "bye\n");

    // The scheduler spreads: with web on n2, an unpinned container lands on n1.
    cluster.ok(&["run", "--name", "spread", "busybox", "--", "sleep", "3600"]);
    assert_eq!(cluster.container("spread").node, "n1");

    // logs -f follows until the container exits.
    cluster.ok(&[
        "run",
        "--name",
        "ticker",
        "busybox",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo t$i; sleep 0.3; done",
    ]);
    let follow = cluster.ok(&["logs", "-f", "ticker"]);
    assert_eq!(follow, "t1\nt2\nt3\n");

    // stop: busybox sleep as PID 1 ignores SIGTERM, so it is killed after the grace period.
    let started = std::time::Instant::now();
    cluster.ok(&["stop", "-t", "1", "web"]);
    let web = cluster.container("web");
    assert_eq!(web.state, ContainerState::Exited);
    assert_eq!(web.exit_code, Some(137));
    assert!(started.elapsed() >= Duration::from_secs(1));

    // inspect, human form.
    let text = cluster.ok(&["inspect", "web"]);
    for needle in ["Node:", "n2", "IP address:", "Memory limit:", "64MiB", "Exit code:", "137"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }

    // rm: refused while running, forced with -f; stopped ones go quietly.
    let err = cluster.fails(&["rm", "spread"]);
    assert!(err.contains("is running"), "{err}");
    cluster.ok(&["rm", "-f", "spread"]);
    cluster.ok(&["rm", "web", "three", "ticker"]);
    let all: Vec<ContainerInfo> = cluster.json(&["ps", "-a"]);
    assert!(all.is_empty(), "{all:?}");

    // Nothing of the removed containers is left on the nodes.
    let leftovers = std::fs::read_dir(cluster.data_dir.join("nodes/n2/containers")).unwrap().count();
    assert_eq!(leftovers, 0);
    cluster.ok(&["image", "rm", "busybox"]);
    let images: Vec<ImageRecord> = cluster.json(&["image", "ls"]);
    assert!(images.is_empty());
    wait_for("events to be recorded", T, || {
        let ev = cluster.ok(&["events"]);
        (ev.contains("container die three") && ev.contains("container remove web")).then_some(())
    });
}
