//! Where the Control node's policy comes from, end to end (cluster 32): the default (`none`),
//! the config file's `[control]` section when the Control node (re)starts without a
//! `--policy` flag, a policy stored by `herd policy set` that wins over the config file and
//! survives a restart of the Control node, and `herd policy reset` going back to the config.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use herd_proto::policy::PolicyInfo;

const T: Duration = Duration::from_secs(60);

fn policy(cluster: &Cluster) -> PolicyInfo {
    cluster.json(&["policy", "show"])
}

/// Kills the Control node; `herd up`'s supervisor starts it again with the same flags.
fn restart_control(cluster: &Cluster) {
    let old = cluster.up_state().control_pid.expect("the Control node's pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for("the Control node to be restarted", T, || {
        let new = cluster.up_state().control_pid.filter(|&p| p != old)?;
        cluster.herd(&["policy", "show", "--json"]).status.success().then_some(new)
    });
}

#[test]
fn a_stored_policy_survives_a_restart_and_wins_over_the_config_file() {
    let cluster = Cluster::up(32, 2);
    let p = policy(&cluster);
    assert_eq!((p.spec.as_str(), p.source.as_str()), ("none", "default"));

    // herd up wrote the config without a [control] section; the operator adds one.
    let mut text = std::fs::read_to_string(&cluster.config).unwrap();
    text.push_str("\n[control]\npolicy = \"balance:tolerance=0.5\"\npolicy_interval = 2.0\n");
    std::fs::write(&cluster.config, text).unwrap();
    restart_control(&cluster);
    let p = policy(&cluster);
    assert!(p.spec.starts_with("balance:tolerance=0.5"), "{p:?}");
    assert_eq!((p.source.as_str(), p.interval_secs), ("config", 2.0));

    cluster.ok(&["policy", "set", "hotspot", "-p", "threshold=90%"]);
    restart_control(&cluster);
    let p = policy(&cluster);
    assert!(p.spec.starts_with("hotspot:threshold=0.9"), "{p:?}");
    assert_eq!(p.source, "set");
    assert!(p.configured_spec.starts_with("balance"), "{p:?}");
    assert!(cluster.ok(&["policy", "show"]).contains("herd policy set (stored; overrides the configured balance"));

    let out = cluster.ok(&["policy", "reset"]);
    assert!(out.contains("balance:tolerance=0.5") && out.contains("[control]"), "{out}");
    restart_control(&cluster);
    let p = policy(&cluster);
    assert_eq!(p.source, "config", "{p:?}");
    assert!(cluster.ok(&["events"]).contains("policy reset to the configured balance"));

    // A bad spec changes nothing, stored or running.
    let err = cluster.fails(&["policy", "set", "hotspot", "-p", "treshold=90%"]);
    assert!(err.contains("treshold"), "{err}");
    restart_control(&cluster);
    assert_eq!(policy(&cluster).source, "config");
}
