//! Placement on a real cluster: constraints, affinities and strategies given to `herd run`, and
//! placement failures that explain themselves and leave nothing behind.

mod common;

use std::time::Duration;

use common::Cluster;
use herd_proto::api::ContainerInfo;

fn names(cluster: &Cluster) -> Vec<String> {
    let list: Vec<ContainerInfo> = cluster.json(&["ps", "-a"]);
    let mut names: Vec<String> = list.into_iter().map(|c| c.name).collect();
    names.sort();
    names
}

#[test]
fn constraints_and_affinities_steer_placement_and_failures_explain_themselves() {
    let cluster = Cluster::up_with(23, 2, &["--node-label", "n1:zone=a", "--node-label", "n2:zone=b"]);
    cluster.import_busybox();
    let sleep = ["busybox", "--", "sleep", "3600"];
    let run = |extra: &[&str]| {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&sleep);
        cluster.ok(&args);
    };

    // A constraint on the node's name keeps it off n1.
    run(&["--name", "away", "--constraint", "node.name!=n1"]);
    assert_eq!(cluster.container("away").node, "n2");
    // Labels from herd up --node-label, in both spellings; spread alone would pick n1.
    run(&["--name", "zoned", "--constraint", "node.labels.zone==b"]);
    assert_eq!(cluster.container("zoned").node, "n2");
    run(&["--name", "zoned1", "-e", "constraint:zone!=b", "--constraint", "node.arch!=nosuch"]);
    assert_eq!(cluster.container("zoned1").node, "n1");

    // Affinity wins over spread: n2 is the fuller node, but web is there.
    run(&["--name", "web", "--node", "n2"]);
    run(&["--name", "friend", "--affinity", "container==web"]);
    assert_eq!(cluster.container("friend").node, "n2");
    // Swarm's spelling through -e, which does not end up in the environment.
    run(&["--name", "swarm", "-e", "affinity:container==web", "-e", "X=1"]);
    let swarm = cluster.container("swarm");
    assert_eq!(swarm.node, "n2");
    assert!(swarm.env.iter().any(|e| e == "X=1"), "{:?}", swarm.env);
    assert!(!swarm.env.iter().any(|e| e.starts_with("affinity:")), "{:?}", swarm.env);
    run(&["--name", "swarm1", "-e", "constraint:node.name==n1"]);
    assert_eq!(cluster.container("swarm1").node, "n1");
    // Anti-affinity, and binpack choosing the fuller node.
    run(&["--name", "loner", "--affinity", "container!=web"]);
    assert_eq!(cluster.container("loner").node, "n1");
    run(&["--name", "packed", "--strategy", "binpack"]);
    assert_eq!(cluster.container("packed").node, "n2");

    let before = names(&cluster);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--constraint", "node.labels.rack==r1"],
            &["no node has label rack", "n1 (constraint filter: node.labels.rack==r1 not met: node has no label rack)"],
        ),
        (
            &["--constraint", "zone==c"],
            &["n1 (constraint filter: node.labels.zone==c not met: node.labels.zone is a)", "n2 (constraint filter"],
        ),
        (
            &["--constraint", "node.name==n9"],
            &["n1 (constraint filter: node.name==n9 not met: node.name is n1)", "n2 (constraint filter"],
        ),
        (
            &["--affinity", "container==ghost"],
            &["(affinity filter: container==ghost not met: node runs no container ghost)"],
        ),
        (&["--constraint", "zone=a"], &["invalid constraint \"zone=a\": expected KEY==VALUE or KEY!=VALUE"]),
        (&["--constraint", "node.colour==red"], &["unknown key \"node.colour\""]),
        (&["--affinity", "volume==data"], &["invalid affinity \"volume==data\": unknown key \"volume\""]),
        (&["-e", "constraint:zone"], &["invalid constraint \"constraint:zone\""]),
        (&["--strategy", "fill"], &["invalid value 'fill'"]),
    ];
    for (extra, wants) in cases {
        let mut args = vec!["run", "--name", "nowhere"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&sleep);
        let err = cluster.fails(&args);
        for want in *wants {
            assert!(err.contains(want), "herd {}: expected {want:?} in {err:?}", args.join(" "));
        }
        assert_eq!(names(&cluster), before, "herd {} left something behind", args.join(" "));
    }

    // A container keeps its rules when it moves: zoned (zone==b, on n2) may not go to n1,
    // away (node.name!=n1) neither, and a container without rules may.
    for (name, rule) in [("zoned", "node.labels.zone==b not met"), ("away", "node.name!=n1 not met")] {
        let err = cluster.fails(&["migrate", name]);
        assert!(err.contains(&format!("n1 (constraint filter: {rule}")), "herd migrate {name}: {err}");
        let err = cluster.fails(&["migrate", name, "--to", "n1"]);
        assert!(err.contains("constraint filter"), "herd migrate {name} --to n1: {err}");
        assert_eq!(cluster.wait_state(name, "running", Duration::from_secs(10)).node, "n2");
    }
}
