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

/// Runs `herd ARGS` for every `args`, all at once, and returns each one's output.
fn run_at_once(cluster: &Cluster, runs: &[Vec<String>]) -> Vec<std::process::Output> {
    let start = std::sync::Barrier::new(runs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|args| {
                let start = &start;
                s.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let mut cmd = cluster.command(&args);
                    start.wait();
                    cmd.output().expect("running herd")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `herd run --name NAME ARGS busybox -- sleep 3600` for each name.
fn sleepers(names: &[String], args: &[&str]) -> Vec<Vec<String>> {
    names
        .iter()
        .map(|name| {
            let mut run: Vec<String> = ["run", "--name", name].map(String::from).to_vec();
            run.extend(args.iter().map(|a| a.to_string()));
            run.extend(["busybox", "--", "sleep", "3600"].map(String::from));
            run
        })
        .collect()
}

/// The error output of the commands that failed.
fn refusals(outs: &[std::process::Output]) -> Vec<String> {
    outs.iter().filter(|o| !o.status.success()).map(|o| String::from_utf8_lossy(&o.stderr).to_string()).collect()
}

/// Placements made at the same moment each see the others: a node's last free memory or a
/// host port goes to exactly one of them, and those that lose are told why.
#[test]
fn concurrent_runs_never_overcommit_a_node() {
    let cluster = Cluster::up_with(30, 0, &["--sim-nodes", "2", "--node-memory", "1g"]);
    cluster.import_busybox();

    // Two nodes of 1 GiB hold eight 256 MiB containers; ten ask at once.
    let names: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let outs = run_at_once(&cluster, &sleepers(&names, &["--memory", "256m"]));
    let refused = refusals(&outs);
    assert_eq!(outs.len() - refused.len(), 8, "refused: {refused:?}");
    for err in &refused {
        assert!(err.contains("resources filter: not enough memory"), "{err}");
    }
    let nodes: Vec<NodeInfo> = cluster.json(&["nodes"]);
    for n in &nodes {
        assert_eq!(n.allocated.memory_bytes, 1 << 30, "{}: {:?} of {:?}", n.name, n.allocated, n.capacity);
        assert_eq!(n.containers, 4, "{}", n.name);
    }
    let listed: Vec<ContainerInfo> = cluster.json(&["ps"]);
    assert_eq!(listed.len(), 8);

    // One host port, three containers asking for it at once: one per node, the third refused.
    let names: Vec<String> = (0..3).map(|i| format!("p{i}")).collect();
    let refused = refusals(&run_at_once(&cluster, &sleepers(&names, &["-p", "8080:80"])));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("port filter: host port 0.0.0.0:8080/tcp is taken"), "{}", refused[0]);
    let listed: Vec<ContainerInfo> = cluster.json(&["ps"]);
    let mut port_nodes: Vec<&str> =
        listed.iter().filter(|c| c.name.starts_with('p')).map(|c| c.node.as_str()).collect();
    port_nodes.sort();
    assert_eq!(port_nodes, ["sim-0001", "sim-0002"], "{listed:?}");
}
