//! The agent survives its own restart, and a node that stops heartbeating is marked down.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use herd_proto::api::{NodeInfo, NodeState};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(30);

fn node_state(cluster: &Cluster, node: &str) -> NodeState {
    let nodes: Vec<NodeInfo> = cluster.json(&["nodes"]);
    nodes.into_iter().find(|n| n.name == node).unwrap().state
}

#[test]
fn containers_outlive_their_agent_and_are_adopted_again() {
    let cluster = Cluster::up(5, 2);
    cluster.import_busybox();
    cluster.ok(&[
        "run",
        "--name",
        "long",
        "--node",
        "n1",
        "busybox",
        "--",
        "sh",
        "-c",
        "i=0; while true; do echo c$i; i=$((i+1)); sleep 0.1; done",
    ]);
    cluster.ok(&["run", "--name", "short", "--node", "n1", "busybox", "--", "sh", "-c", "sleep 2; exit 7"]);
    let long = cluster.wait_state("long", "running", T);
    cluster.wait_log("long", "c3", T);

    // Kill the agent: the supervisor starts a new one.
    let old = cluster.agent_pid("n1").expect("agent pid");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    let new = wait_for("a new n1 agent", T, || cluster.agent_pid("n1").filter(|p| *p != old));
    assert_ne!(new, old);

    // While it was gone, `short` exited: its exit code is collected by the new agent.
    let short = cluster.wait_state("short", "exited", T);
    assert_eq!(short.exit_code, Some(7));

    // `long` was never interrupted: same process, and its log kept growing.
    wait_for("n1 to be ready again", T, || (node_state(&cluster, "n1") == NodeState::Ready).then_some(()));
    let again = cluster.container("long");
    assert_eq!(again.pid, long.pid, "the container was restarted instead of adopted");
    assert_eq!(again.state.as_str(), "running");
    let before = cluster.ok(&["logs", "long"]).lines().count();
    wait_for("the log to grow after the restart", T, || {
        (cluster.ok(&["logs", "long"]).lines().count() > before + 3).then_some(())
    });

    // The adopted container is fully managed: stop collects its exit status.
    cluster.ok(&["stop", "-t", "0", "long"]);
    assert_eq!(cluster.container("long").exit_code, Some(137));
}

#[test]
fn a_silent_node_is_marked_down_and_back_up() {
    let cluster = Cluster::up(6, 2);
    let stopped = cluster.stop_agent("n2");
    let started = std::time::Instant::now();
    wait_for("n2 to be marked down", T, || (node_state(&cluster, "n2") == NodeState::Down).then_some(()));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "marked down after {took:?}");
    // The scheduler stops using it.
    cluster.import_busybox();
    let err = cluster.fails(&["run", "--node", "n2", "busybox", "--", "true"]);
    assert!(err.contains("n2 (health filter: node is down)"), "{err}");
    stopped.resume();
    wait_for("n2 to be ready again", T, || (node_state(&cluster, "n2") == NodeState::Ready).then_some(()));
    let events = cluster.ok(&["events"]);
    assert!(events.contains("node down n2") && events.contains("node ready n2"), "{events}");
}

#[test]
fn the_control_node_continues_after_a_restart() {
    let cluster = Cluster::up(10, 2);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "a", "--node", "n1", "busybox", "--", "sleep", "3600"]);
    cluster.ok(&["run", "--name", "b", "--node", "n2", "busybox", "--", "sh", "-c", "exit 4"]);
    let a = cluster.wait_state("a", "running", T);
    cluster.wait_state("b", "exited", T);

    let old = cluster.up_state().control_pid.expect("control pid");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    wait_for("a new Control node", T, || cluster.up_state().control_pid.filter(|p| *p != old));
    wait_for("the API to answer again", T, || cluster.herd(&["ps"]).status.success().then_some(()));

    // The state came back from the broker: containers, their states, their addresses.
    let again = cluster.container("a");
    assert_eq!((again.state.as_str(), again.ip, again.node.as_str()), ("running", a.ip, "n1"));
    assert_eq!(cluster.container("b").exit_code, Some(4));
    wait_for("both nodes to be ready", T, || {
        let nodes: Vec<NodeInfo> = cluster.json(&["nodes"]);
        nodes.iter().all(|n| n.state == NodeState::Ready).then_some(())
    });
    // Addresses in use are not handed out twice, names stay taken, and containers are managed.
    cluster.ok(&["run", "--name", "c", "busybox", "--", "sleep", "3600"]);
    let c = cluster.container("c");
    assert_ne!(c.ip, a.ip);
    assert_ne!(c.ip, cluster.container("b").ip);
    assert!(cluster.fails(&["run", "--name", "a", "busybox", "--", "true"]).contains("already in use"));
    cluster.ok(&["stop", "-t", "0", "a"]);
    assert_eq!(cluster.container("a").exit_code, Some(137));
}
