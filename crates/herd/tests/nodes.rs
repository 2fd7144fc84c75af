//! Node management on a real cluster: operator labels steer placement, draining a node moves
//! its running containers away and keeps new ones off it, activating it lets them back.

mod common;

use std::time::Duration;

use common::Cluster;
use herd_proto::api::{DrainReport, NodeInfo};
use herd_proto::state::Availability;

const T: Duration = Duration::from_secs(60);
const SLEEP: [&str; 4] = ["busybox", "--", "sleep", "3600"];

fn node(cluster: &Cluster, name: &str) -> NodeInfo {
    let nodes: Vec<NodeInfo> = cluster.json(&["nodes"]);
    nodes.into_iter().find(|n| n.name == name).unwrap_or_else(|| panic!("herd nodes lists no {name}"))
}

fn run(cluster: &Cluster, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&SLEEP);
    cluster.ok(&args);
    cluster.wait_state(name, "running", T).node
}

#[test]
fn labels_drain_and_activate_steer_placement() {
    let cluster = Cluster::up(26, 2);
    cluster.import_busybox();

    // An operator label places a container; spread alone would pick n1.
    let out = cluster.ok(&["nodes", "label", "n2", "disk=ssd", "tier=gold"]);
    assert!(out.contains("disk=ssd"), "{out}");
    assert_eq!(node(&cluster, "n2").labels.get("disk").map(String::as_str), Some("ssd"));
    assert_eq!(run(&cluster, "fast", &["--constraint", "node.labels.disk==ssd"]), "n2");
    // Removing it (KEY-) takes it out of placement's sight.
    cluster.ok(&["nodes", "label", "n2", "disk-"]);
    assert!(!node(&cluster, "n2").labels.contains_key("disk"));
    let err =
        cluster.fails(&["run", "--name", "nope", "--constraint", "node.labels.disk==ssd", "busybox", "--", "true"]);
    assert!(err.contains("no node has label disk"), "{err}");

    // Drain n1: the running container moves, the exited one is reported and stays.
    assert_eq!(run(&cluster, "mover", &["--node", "n1"]), "n1");
    cluster.ok(&["run", "--name", "done", "--node", "n1", "busybox", "--", "true"]);
    cluster.wait_state("done", "exited", T);
    let report: DrainReport = cluster.json(&["nodes", "drain", "n1"]);
    assert_eq!(report.moved.len(), 1, "{report:?}");
    assert_eq!((report.moved[0].container.as_str(), report.moved[0].to.as_str()), ("mover", "n2"));
    assert_eq!(report.stayed.len(), 1, "{report:?}");
    assert_eq!(report.stayed[0].container, "done");
    assert!(report.stayed[0].reason.contains("exited"), "{report:?}");
    cluster.wait_runs_only_on("mover", "n2", T);
    assert_eq!(cluster.container("done").node, "n1");
    assert_eq!(node(&cluster, "n1").availability, Availability::Drain);
    let events = cluster.ok(&["events"]);
    assert!(events.contains("drain of node n1: container mover moved to n2"), "{events}");
    assert!(events.contains("drain of node n1: container done stays"), "{events}");

    // While it drains, new containers go elsewhere and asking for it says why not.
    assert_eq!(run(&cluster, "elsewhere", &[]), "n2");
    let err = cluster.fails(&["run", "--name", "pinned", "--node", "n1", "busybox", "--", "true"]);
    assert!(err.contains("node n1 is draining"), "{err}");
    // Draining an empty node says so in text.
    let out = cluster.ok(&["nodes", "drain", "n1"]);
    assert!(out.contains("node n1 is draining") && out.contains("kept done on n1"), "{out}");

    // With both drained, n2's containers have nowhere to go: they stay, running, and the
    // report says why.
    let report: DrainReport = cluster.json(&["nodes", "drain", "n2"]);
    assert!(report.moved.is_empty(), "{report:?}");
    let stayed: Vec<&str> = report.stayed.iter().map(|s| s.container.as_str()).collect();
    assert_eq!(stayed, ["elsewhere", "fast", "mover"], "{report:?}");
    assert!(report.stayed.iter().all(|s| s.reason.contains("node n1 is draining")), "{report:?}");
    for name in stayed {
        cluster.wait_runs_only_on(name, "n2", T);
    }
    cluster.ok(&["nodes", "activate", "n2"]);

    // Activated, it takes containers again.
    cluster.ok(&["nodes", "activate", "n1"]);
    assert_eq!(node(&cluster, "n1").availability, Availability::Active);
    assert_eq!(run(&cluster, "pinned", &["--node", "n1"]), "n1");
    let table = cluster.ok(&["nodes"]);
    assert!(table.contains("AVAIL") && table.contains("tier=gold"), "{table}");

    // Unknown nodes and malformed changes are refused, naming the problem.
    for args in [&["nodes", "drain", "n9"][..], &["nodes", "activate", "n9"], &["nodes", "label", "n9", "a=b"]] {
        let err = cluster.fails(args);
        assert!(err.contains("no such node: n9"), "{args:?}: {err}");
    }
    let err = cluster.fails(&["nodes", "label", "n1", "zone"]);
    assert!(err.contains("invalid label") && err.contains("zone"), "{err}");
}
