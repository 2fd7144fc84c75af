//! The simulated runtime on a real control plane: `herd up --sim-nodes` adds nodes that
//! accept containers without running them, beside a real node, for scale tests.

mod common;

use std::time::Duration;

use common::Cluster;
use herd_proto::api::{ContainerInfo, NodeInfo};

#[test]
fn simulated_nodes_take_containers_and_refuse_what_needs_a_process() {
    let cluster = Cluster::up_with(28, 1, &["--sim-nodes", "12", "--node-cpus", "1"]);
    cluster.import_busybox();

    // Twelve simulated nodes beside the real one, each labelled as such.
    let nodes: Vec<NodeInfo> = cluster.json(&["nodes"]);
    let sims: Vec<&NodeInfo> = nodes.iter().filter(|n| n.name.starts_with("sim-")).collect();
    assert_eq!(sims.len(), 12, "{:?}", nodes.iter().map(|n| &n.name).collect::<Vec<_>>());
    assert!(sims.iter().all(|n| n.labels.get("runtime").map(String::as_str) == Some("sim")), "{sims:?}");
    assert!(nodes.iter().any(|n| n.name == "n1" && !n.labels.contains_key("runtime")));

    // Spread puts 26 containers two to a node; the simulated ones report them running.
    for i in 0..26 {
        cluster.ok(&["run", "--name", &format!("s{i:02}"), "busybox", "--", "sleep", "3600"]);
    }
    let listed: Vec<ContainerInfo> = cluster.json(&["ps"]);
    assert_eq!(listed.len(), 26);
    for n in &nodes {
        let here = listed.iter().filter(|c| c.node == n.name).count();
        assert_eq!(here, 2, "node {} holds {here} containers", n.name);
    }
    let table = cluster.ok(&["ps"]);
    assert_eq!(table.lines().count(), 27, "{table}");
    assert!(table.lines().all(|l| l.starts_with("NAME") || l.contains("running")), "{table}");

    // Placement rules see the label; the real node runs its containers for real.
    cluster.ok(&[
        "run",
        "--name",
        "real",
        "--constraint",
        "runtime!=sim",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo up; sleep 3600",
    ]);
    assert_eq!(cluster.container("real").node, "n1");
    cluster.wait_log("real", "up", Duration::from_secs(20));

    // Stop and remove work on a simulated node; checkpoint and migrate are refused with
    // the reason, and the container is left as it was.
    let sim = listed.iter().find(|c| c.node.starts_with("sim-")).unwrap();
    // The Control node already knows a simulated node has no CRIU; the node would refuse too.
    let err = cluster.fails(&["checkpoint", &sim.name]);
    assert!(err.contains(&format!("node {} cannot checkpoint", sim.node)), "{err}");
    let err = cluster.fails(&["migrate", &sim.name, "--to", "n1"]);
    assert!(err.contains("CRIU"), "{err}");
    assert_eq!(cluster.wait_state(&sim.name, "running", Duration::from_secs(10)).node, sim.node);
    cluster.ok(&["stop", &sim.name]);
    assert_eq!(cluster.wait_state(&sim.name, "exited", Duration::from_secs(10)).exit_code, Some(0));
    cluster.ok(&["rm", &sim.name]);
    assert!(cluster.fails(&["inspect", &sim.name]).contains("no such container"));
}
