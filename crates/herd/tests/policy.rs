//! The policy engine end to end. Nodes offer 1 CPU each (`--node-cpus 1`), which is what the
//! policies measure utilisation against: a node's load is the summed CPU use of its
//! containers. Under `none`, a hot node stays hot; under `hotspot`, a burner is moved off the
//! node once it gets hot, within 15 s, and the decision is explained in `herd events`.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, wait_for};
use herd_proto::api::{ContainerStats, Event};
use herd_proto::policy::{PolicyDecision, PolicyInfo};

const T: Duration = Duration::from_secs(60);
/// Each burner's CPU limit, in cores of a node's 1.
const BURN: &str = "0.3";
/// Hot above 70% in 2 of the last 3 samples: two burners (0.6) are not, three (0.9) are; a
/// receiver stays at or below 60%, so one burner (0.3) can go to the idle node and the hot one
/// falls to 0.6. (`herd policy show` prints the spec with its parameters as the engine has them.)
const HOTSPOT: &str = "hotspot:threshold=0.7,k=2,n=3,margin=0.1";

/// The summed CPU use of the running containers on `node`, by `herd stats`.
fn node_load(cluster: &Cluster, node: &str) -> f64 {
    let stats: Vec<ContainerStats> = cluster.json(&["stats", "--no-stream"]);
    stats.iter().filter(|s| s.node == node).filter_map(|s| s.cpu_cores).sum()
}

fn policy(cluster: &Cluster) -> PolicyInfo {
    cluster.json(&["policy", "show"])
}

/// Waits until `n` more evaluations have run.
fn wait_evaluations(cluster: &Cluster, n: u64) {
    let from = policy(cluster).evaluations;
    wait_for(&format!("{n} more policy evaluations"), T, || (policy(cluster).evaluations >= from + n).then_some(()));
}

fn nodes_of(cluster: &Cluster, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| cluster.container(n).node).collect()
}

#[test]
fn hotspot_policy_moves_load_off_a_hot_node_and_explains_why() {
    let cluster = Cluster::up_with(25, 2, &["--node-cpus", "1", "--policy-interval", "1"]);
    let info = policy(&cluster);
    assert_eq!((info.spec.as_str(), info.interval_secs), ("none", 1.0));
    let err = cluster.fails(&["policy", "set", "nosuch"]);
    assert!(err.contains("unknown policy `nosuch`") && err.contains("hotspot"), "{err}");
    let err = cluster.fails(&["policy", "set", "hotspot", "--param", "treshold=0.5"]);
    assert!(err.contains("no parameter `treshold`"), "{err}");
    assert_eq!(policy(&cluster).spec, "none", "a bad spec changed the policy");

    // Under none, a hot n1 stays as it is.
    cluster.import_busybox();
    for b in ["b1", "b2", "b3"] {
        cluster.run_cpu_burner(b, "n1", BURN);
    }
    wait_for("n1 hot (three burners over 0.7 cores)", T, || (node_load(&cluster, "n1") > 0.7).then_some(()));
    wait_evaluations(&cluster, 3);
    assert_eq!(nodes_of(&cluster, &["b1", "b2", "b3"]), ["n1", "n1", "n1"], "policy none moved a container");
    let decisions: Vec<PolicyDecision> = cluster.json(&["policy", "explain"]);
    assert!(decisions.is_empty(), "{decisions:?}");

    // Hotspot, with n1 below its threshold: nothing moves either.
    cluster.ok(&["rm", "--force", "b3"]);
    let set =
        cluster.ok(&["policy", "set", "hotspot", "-p", "threshold=70%", "-p", "margin=10%", "-p", "k=2", "-p", "n=3"]);
    assert!(set.contains(HOTSPOT), "{set}");
    wait_evaluations(&cluster, 3);
    assert_eq!(nodes_of(&cluster, &["b1", "b2"]), ["n1", "n1"], "hotspot moved a container off a node below threshold");

    // A third burner makes n1 a hot spot: one burner goes to n2.
    cluster.run_cpu_burner("b4", "n1", BURN);
    let formed = Instant::now();
    let moved = wait_for("a burner moved to n2", T, || {
        let nodes = nodes_of(&cluster, &["b1", "b2", "b4"]);
        nodes.iter().position(|n| n == "n2").map(|i| ["b1", "b2", "b4"][i])
    });
    let delay = formed.elapsed();
    eprintln!("policy moved {moved} to n2 {:.1} s after the hot spot formed", delay.as_secs_f64());
    assert!(delay < Duration::from_secs(15), "the move came {delay:?} after the hot spot formed");

    // The decision is explained, in herd events and herd policy explain.
    let events: Vec<Event> = cluster.json(&["events", "-n", "200"]);
    let decide = events
        .iter()
        .find(|e| e.kind == "policy" && e.action == "decide" && e.name == moved)
        .unwrap_or_else(|| panic!("no policy decision event for {moved}: {events:#?}"));
    assert_eq!(decide.node.as_deref(), Some("n1"));
    for part in ["hotspot", "from_util=", "predicted gain", "estimated cost", "downtime", "to n2"] {
        assert!(decide.message.contains(part), "{part:?} is not in {:?}", decide.message);
    }
    let decision = wait_for("the decision's outcome", T, || {
        let ds: Vec<PolicyDecision> = cluster.json(&["policy", "explain"]);
        ds.into_iter().find(|d| d.container == moved && d.outcome != "migrating")
    });
    assert_eq!((decision.outcome.as_str(), decision.from.as_str(), decision.to.as_str()), ("moved", "n1", "n2"));
    assert!(decision.figures.iter().any(|f| f.name == "from_util" && f.value > 0.7), "{decision:?}");

    // n1's load falls below the threshold, and stays put (one move was enough).
    wait_for("n1's load under 0.7 cores", T, || (node_load(&cluster, "n1") < 0.7).then_some(()));
    wait_evaluations(&cluster, 3);
    let ds: Vec<PolicyDecision> = cluster.json(&["policy", "explain"]);
    assert_eq!(ds.len(), 1, "more moves than needed: {ds:?}");
    let text = cluster.ok(&["policy", "explain"]);
    assert!(text.contains(&format!("{moved} n1 -> n2 [moved]")), "{text}");
}
