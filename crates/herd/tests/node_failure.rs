//! Containers survive node failure (docs/design/ha.md): checkpoint tickers keep versions off
//! the node, a failed node's containers are rescheduled by their policies, and a node cut off
//! from the cluster fences its containers so that none runs twice. Faults are real: every
//! process of a node killed with SIGKILL and its link cut, or its link cut alone.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{COUNTER, Cluster, wait_for};

/// Cuts (`up` false) or heals node `node`'s link to the cluster network, at the host end of
/// its veth: the broker, the Control node and the other nodes are all behind it.
fn set_link(cluster: &Cluster, node: &str, up: bool) {
    let dev = cluster.node_layout(node).host_if;
    let out = Command::new("ip")
        .args(["link", "set", "dev", &dev, if up { "up" } else { "down" }])
        .output()
        .expect("running ip");
    assert!(out.status.success(), "ip link set {dev}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Heals the link whatever happens to the test.
struct Cut<'a>(&'a Cluster, &'a str);

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        set_link(self.0, self.1, true);
    }
}

/// Power loss of node `node`: its link cut and every process of it killed at once (its
/// agent, the processes in its mount namespace such as shims, and its containers, found by
/// their cgroups). The `herd up` supervisor starts the agent again, as a machine that comes
/// back would, but it stays cut off until the link is healed.
fn power_off<'a>(cluster: &'a Cluster, node: &'a str) -> Cut<'a> {
    set_link(cluster, node, false);
    let layout = cluster.node_layout(node);
    let agent = cluster.agent_pid(node).expect("the node's agent runs");
    let mntns = std::fs::read_link(format!("/proc/{agent}/ns/mnt")).unwrap();
    let cgroup = format!("{}/", layout.cgroup_parent.trim_end_matches('/'));
    let of_node = |pid: i32| {
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|ns| ns == mntns)
            || std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.lines().any(|l| l.contains(&cgroup) || l.ends_with(&layout.cgroup_parent)))
    };
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| *pid != std::process::id() as i32 && of_node(*pid))
        .collect();
    assert!(pids.len() >= 2, "found only {pids:?} as the processes of node {node}");
    for pid in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
    }
    Cut(cluster, node)
}

/// The numbers of a [`COUNTER`] log, checked to be one unbroken sequence from its first.
fn counter_lines(log: &str) -> Vec<u64> {
    let numbers: Vec<u64> = log
        .lines()
        .filter_map(|l| l.strip_prefix("n=").and_then(|r| r.split_once(" s=")).map(|(n, _)| n.parse().unwrap()))
        .collect();
    for w in numbers.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the counter skipped or repeated: {numbers:?}");
    }
    numbers
}

/// Waits until herd has `name` running on `node`, and runc runs it there and nowhere else (a
/// dead node's runc may still list it as stopped).
fn wait_moved(cluster: &Cluster, name: &str, node: &str) -> herd_proto::api::ContainerInfo {
    wait_for(&format!("{name} to run on {node}"), Duration::from_secs(60), || {
        // The Control node may be restarting: not answering is not an answer.
        let out = cluster.herd(&["inspect", name, "--json"]);
        let c: herd_proto::api::ContainerInfo = serde_json::from_slice(&out.stdout).ok()?;
        let live: Vec<(String, String)> =
            cluster.runc_copies(&c.id).into_iter().filter(|(_, s)| s == "running" || s == "paused").collect();
        (c.node == node && c.state.as_str() == "running" && live == [(node.to_string(), "running".to_string())])
            .then_some(c)
    })
}

fn node_ready(cluster: &Cluster, node: &str) -> bool {
    let nodes: Vec<herd_proto::api::NodeInfo> = cluster.json(&["nodes"]);
    nodes.iter().any(|n| n.name == node && n.state == herd_proto::api::NodeState::Ready)
}

/// Runs a [`COUNTER`] named `name` on n1 with a ticker every 2 s.
fn run_counter_on_n1(cluster: &Cluster, name: &str) {
    cluster.ok(&["run", "--name", name, "--node", "n1", "--checkpoint-every", "2s", "busybox", "sh", "-c", COUNTER]);
}

fn events(cluster: &Cluster) -> String {
    cluster.ok(&["events", "-n", "1000"])
}

#[test]
fn a_node_that_loses_power_has_its_containers_restored_elsewhere() {
    let mut cluster = Cluster::up(74, 2);
    cluster.import_busybox();
    cluster.ok(&[
        "run",
        "--name",
        "tick",
        "--node",
        "n1",
        "--checkpoint-every",
        "2s",
        "--checkpoint-versions",
        "3",
        "busybox",
        "sh",
        "-c",
        COUNTER,
    ]);
    cluster.ok(&[
        "run",
        "--name",
        "fresh",
        "--node",
        "n1",
        "--on-node-failure",
        "restart",
        "busybox",
        "sh",
        "-c",
        "echo started; sleep 1000",
    ]);
    cluster.ok(&["run", "--name", "plain", "--node", "n1", "busybox", "sleep", "1000"]);
    // Bad settings are refused with their reason.
    let err = cluster.fails(&["run", "--on-node-failure", "restore", "busybox", "sleep", "1"]);
    assert!(err.contains("add --checkpoint-every"), "{err}");

    // Versions build up: a base, then deltas that store a fraction of it; retention keeps 3.
    let tick = wait_for("the ticker to store four versions", Duration::from_secs(60), || {
        let c = cluster.container("tick");
        (c.versions.last().is_some_and(|v| v.version >= 4)).then_some(c)
    });
    assert!(tick.versions.len() <= 3 + 2, "retention kept {:?}", tick.versions);
    let delta = tick.versions.iter().find(|v| v.base != v.version).expect("a delta version");
    // This container is tiny (200 KB) and idle: a delta stores its CRIU images of registers,
    // timers and the like again (35-40 % of the whole here, 53 % once under CI's load), not its
    // memory; a version stored whole would take 85-90 % (a base, after its own duplicates).
    assert!(delta.stored_bytes < delta.full_bytes * 3 / 4, "a delta stored {delta:?}");
    let first_id = tick.id.clone();
    let listed = cluster.ok(&["checkpoint", "ls", "tick"]);
    assert!(
        listed.contains(&format!("v{}", delta.version)) && listed.contains("version store (delta on v"),
        "{listed}"
    );
    let json: serde_json::Value = serde_json::from_str(&cluster.ok(&["checkpoint", "ls", "tick", "--json"])).unwrap();
    assert!(!json["versions"].as_array().unwrap().is_empty(), "{json}");

    let before = *counter_lines(&cluster.ok(&["logs", "tick"])).last().unwrap();
    let _cut = power_off(&cluster, "n1");

    // The ticker's container is restored on n2 from a version: it counts on from where the
    // version was taken, at most about one ticker interval back.
    let tick = wait_moved(&cluster, "tick", "n2");
    assert_eq!(tick.id, first_id);
    assert_eq!(tick.generation, 1);
    let log = wait_for("tick to count on n2", Duration::from_secs(30), || {
        let log = cluster.ok(&["logs", "tick"]);
        (counter_lines(&log).len() > 10).then_some(log)
    });
    let resumed_at = counter_lines(&log)[0];
    assert!(resumed_at > 0, "tick started over instead of being restored: {log}");
    // 2 s between versions at up to 20 counts a second, and the time the last one took.
    assert!(
        before.saturating_sub(resumed_at) <= 80,
        "lost {} counts (from {before} back to {resumed_at})",
        before - resumed_at
    );

    // The restart policy starts a fresh copy; no policy leaves the container where it was.
    wait_moved(&cluster, "fresh", "n2");
    cluster.wait_log("fresh", "started", Duration::from_secs(10));
    let plain = cluster.container("plain");
    assert_eq!(plain.node, "n1");
    assert!(plain.node_down, "{plain:?}");
    let ev = events(&cluster);
    assert!(ev.contains("node n1 failed"), "{ev}");
    assert!(ev.contains("container tick of failed node n1 restored on n2 from version"), "{ev}");
    assert!(ev.contains("container fresh of failed node n1 started fresh from its image on n2"), "{ev}");

    // Power and link come back: n1's agent finds its copies moved on and drops them.
    drop(_cut);
    wait_for("n1 to be ready again", Duration::from_secs(60), || node_ready(&cluster, "n1").then_some(()));
    cluster.wait_runs_only_on("tick", "n2", Duration::from_secs(30));
    cluster.wait_runs_only_on("fresh", "n2", Duration::from_secs(30));
    counter_lines(&cluster.ok(&["logs", "tick"]));

    // Any kept version can be restored by hand, onto any node.
    cluster.ok(&["stop", "tick"]);
    let err = cluster.fails(&["restore", "tick", "--version", "999"]);
    assert!(err.contains("has no version 999"), "{err}");
    let oldest = cluster.container("tick").versions[0].version.to_string();
    cluster.ok(&["restore", "tick", "--version", &oldest, "--node", "n1"]);
    let tick = cluster.wait_runs_only_on("tick", "n1", Duration::from_secs(60));
    assert_eq!(tick.generation, 2);
    cluster.down();
}

#[test]
fn a_node_cut_off_fences_its_containers_and_drops_them_once_they_moved() {
    let mut cluster = Cluster::up(75, 2);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "tick", "--node", "n1", "--checkpoint-every", "2s", "busybox", "sh", "-c", COUNTER]);
    cluster.ok(&["run", "--name", "plain", "--node", "n1", "busybox", "sleep", "1000"]);
    // A policy given after the start counts too: n1 fences it, n2 starts it afresh.
    cluster.ok(&["run", "--name", "later", "--node", "n1", "busybox", "sleep", "1000"]);
    let err = cluster.fails(&["update", "later", "--on-node-failure", "restore"]);
    assert!(err.contains("add --checkpoint-every"), "{err}");
    cluster.ok(&["update", "later", "--on-node-failure", "restart"]);
    let id = wait_for("a first version", Duration::from_secs(60), || {
        let c = cluster.container("tick");
        (!c.versions.is_empty()).then_some(c.id)
    });
    let plain_id = cluster.container("plain").id;

    set_link(&cluster, "n1", false);
    let cut = Cut(&cluster, "n1");
    // Whenever the container runs on n2, the copy on n1 is frozen: it never runs twice.
    wait_for("tick to run on n2", Duration::from_secs(60), || {
        let copies = cluster.runc_copies(&id);
        let on_n2 = copies.iter().any(|(n, s)| n == "n2" && s == "running");
        let on_n1 = copies.iter().find(|(n, _)| n == "n1").map(|(_, s)| s.clone());
        if on_n2 {
            assert_eq!(on_n1.as_deref(), Some("paused"), "tick runs on n2 while n1 holds {on_n1:?}");
        }
        on_n2.then_some(())
    });
    // A container without a policy is not fenced: nothing else will run it.
    assert_eq!(cluster.runc_copies(&plain_id), [("n1".to_string(), "running".to_string())]);

    // Started on n2 while its fenced copy on n1 stays frozen.
    let later = cluster.container("later").id;
    wait_for("later to run on n2", Duration::from_secs(60), || {
        let copies = cluster.runc_copies(&later);
        copies.contains(&("n2".to_string(), "running".to_string())).then_some(copies)
    });
    assert!(cluster.runc_copies(&later).contains(&("n1".to_string(), "paused".to_string())));
    drop(cut);
    // Back in the cluster, n1 finds tick moved on (generation 1 on n2) and removes its copy.
    cluster.wait_runs_only_on("tick", "n2", Duration::from_secs(60));
    let c = cluster.container("tick");
    assert_eq!((c.node.as_str(), c.generation), ("n2", 1));
    counter_lines(&cluster.ok(&["logs", "tick"]));
    cluster.wait_runs_only_on("later", "n2", Duration::from_secs(60));
    cluster.down();
}

/// Flips one byte in the middle of each of `objects` in the broker's version store.
fn damage_versions(cluster: &Cluster, objects: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let broker = herd_broker::Broker::connect(&cluster.broker_config()).await.unwrap();
        let store = broker.versions_store().await.unwrap();
        for name in objects {
            let mut bytes = Vec::new();
            store.get(name).await.unwrap_or_else(|e| panic!("{name}: {e}")).read_to_end(&mut bytes).await.unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            herd_broker::put_object(&store, name, &mut &bytes[..]).await.unwrap();
        }
    });
}

#[test]
fn damaged_versions_fall_back_to_older_ones_then_to_a_fresh_start() {
    let mut cluster = Cluster::up(76, 2);
    cluster.import_busybox();
    for name in ["newest-bad", "all-bad"] {
        run_counter_on_n1(&cluster, name);
    }
    for name in ["newest-bad", "all-bad"] {
        wait_for("three versions", Duration::from_secs(60), || {
            (cluster.container(name).versions.len() >= 3).then_some(())
        });
    }
    let _cut = power_off(&cluster, "n1");
    // No version can be added now: damage them before the failure is declared (3 s).
    let newest = cluster.container("newest-bad");
    let v = newest.versions.last().unwrap();
    assert_ne!(v.base, v.version, "the newest version is a delta: {v:?}");
    damage_versions(&cluster, &[format!("{}.v{}.pack", newest.id, v.version)]);
    let all = cluster.container("all-bad");
    let base = all.versions.first().unwrap();
    assert_eq!(base.base, base.version, "the oldest version kept is a base: {base:?}");
    damage_versions(&cluster, &[format!("{}.v{}.pack", all.id, base.version)]);

    wait_moved(&cluster, "newest-bad", "n2");
    wait_moved(&cluster, "all-bad", "n2");
    let ev = events(&cluster);
    let previous = newest.versions[newest.versions.len() - 2].version;
    assert!(ev.contains(&format!("version {} of newest-bad did not restore on n2", v.version)), "{ev}");
    assert!(ev.contains(&format!("newest-bad of failed node n1 restored on n2 from version {previous}")), "{ev}");
    assert!(ev.contains("damaged"), "the fallback says why: {ev}");
    assert!(ev.contains("container all-bad of failed node n1 started fresh from its image on n2"), "{ev}");
    // Restored memory counts on; the fresh start counts from 0.
    let resumed = wait_for("newest-bad to count", Duration::from_secs(30), || {
        let n = counter_lines(&cluster.ok(&["logs", "newest-bad"]));
        (n.len() > 5).then_some(n[0])
    });
    assert!(resumed > 0);
    let fresh = wait_for("all-bad to count", Duration::from_secs(30), || {
        let n = counter_lines(&cluster.ok(&["logs", "all-bad"]));
        (n.len() > 5).then_some(n[0])
    });
    assert_eq!(fresh, 0);
    drop(_cut);
    cluster.down();
}

#[test]
fn a_control_node_killed_while_rescheduling_finishes_after_its_restart() {
    let mut cluster = Cluster::up(77, 2);
    cluster.import_busybox();
    let names: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
    for name in &names {
        run_counter_on_n1(&cluster, name);
    }
    for name in &names {
        wait_for("a version", Duration::from_secs(60), || (!cluster.container(name).versions.is_empty()).then_some(()));
    }
    let _cut = power_off(&cluster, "n1");
    // Kill the Control node as soon as it starts rescheduling (the first container moves).
    wait_for("the rescheduling to start", Duration::from_secs(30), || {
        names.iter().any(|n| cluster.container(n).node == "n2").then_some(())
    });
    let control = cluster.up_state().control_pid.expect("the Control node runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(control as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // The supervisor starts it again; it finishes the job, and each runs once, on n2.
    for name in &names {
        wait_moved(&cluster, name, "n2");
        let c = cluster.container(name);
        assert!(c.generation >= 1, "{name} was not moved by a rescheduling: {c:?}");
    }
    drop(_cut);
    cluster.down();
}

#[test]
fn a_stopped_agent_drops_the_copies_that_moved_on_once_it_runs_again() {
    let mut cluster = Cluster::up(78, 2);
    cluster.import_busybox();
    run_counter_on_n1(&cluster, "tick");
    let id = wait_for("a first version", Duration::from_secs(60), || {
        let c = cluster.container("tick");
        (!c.versions.is_empty()).then_some(c.id)
    });
    // An agent that cannot run cannot fence: its node is declared failed and the container
    // restored on n2, while n1's copy runs on. Once the agent runs again, it finds the copy
    // moved on (a newer generation elsewhere) and removes it.
    let stopped = cluster.stop_agent("n1");
    wait_for("tick to run on n2", Duration::from_secs(60), || {
        cluster.runc_copies(&id).contains(&("n2".to_string(), "running".to_string())).then_some(())
    });
    stopped.resume();
    cluster.wait_runs_only_on("tick", "n2", Duration::from_secs(30));
    counter_lines(&cluster.ok(&["logs", "tick"]));
    cluster.down();
}

/// Where the node tracks written memory (here, userfaultfd write-protection through Herd's
/// CRIU), a version after its group's base dumps only the pages written since the previous
/// version. Restored, such a version is whole: memory changed in every way tracking could
/// miss reads back as it was written.
#[test]
fn incremental_versions_hold_the_memory_written_since_the_last_and_restore_whole() {
    let tracks = Command::new("criu").args(["check", "--feature", "mem_dirty_track"]).output();
    assert!(
        tracks.is_ok_and(|o| o.status.success()),
        "CRIU here does not track dirty memory: run scripts/setup.sh (it builds Herd's CRIU)"
    );
    let mut cluster = Cluster::up(94, 2);
    cluster.import_busybox_with(&["memhog", "vmchurn"]);
    let ticked = ["--node", "n1", "--checkpoint-every", "2s", "--checkpoint-versions", "4", "busybox", "--"];
    // 64 MiB, 1 MiB of it rewritten every second.
    cluster.ok(&[&["run", "--name", "hog", "--memory", "128m"][..], &ticked, &["memhog", "64", "1"]].concat());
    cluster.ok(&[&["run", "--name", "churn"][..], &ticked, &["vmchurn"]].concat());

    let hog = wait_for("hog's ticker to store two incremental versions", Duration::from_secs(90), || {
        let c = cluster.container("hog");
        (c.versions.iter().filter(|v| v.memory_parent.is_some()).count() >= 2).then_some(c)
    });
    eprintln!("hog's versions: {:#?}", hog.versions);
    for pair in hog.versions.windows(2).filter(|p| p[1].memory_parent.is_some()) {
        let (parent, v) = (&pair[0], &pair[1]);
        assert_eq!(v.memory_parent, Some(parent.version), "{v:?}");
        // A restore puts together this dump and its parents': this dump is what it adds,
        // about the 2 MiB written since the parent, not 64 MiB. (What it stores says less:
        // memhog's pages repeat, so even a full dump stores little.)
        let dumped = v.full_bytes.saturating_sub(parent.full_bytes);
        assert!(dumped < 8 << 20, "an incremental version dumped {dumped} bytes: {v:?}");
    }
    let listed = cluster.ok(&["checkpoint", "ls", "hog"]);
    assert!(listed.contains("memory written since v"), "{listed}");

    // The newest version of churn, two or more incremental dumps from its base, restored on
    // n2: its processes check every byte of their memory and find what they wrote.
    let newest = wait_for("churn's ticker to store a second incremental version", Duration::from_secs(90), || {
        let c = cluster.container("churn");
        let v = c.versions.last()?.clone();
        (v.memory_parent.is_some() && v.version >= v.base + 2).then_some(v)
    });
    cluster.ok(&["stop", "churn"]);
    let checks = |log: &str| log.matches("parent step=").count();
    let before = checks(&cluster.ok(&["logs", "churn"]));
    cluster.ok(&["restore", "churn", "--version", &newest.version.to_string(), "--node", "n2"]);
    cluster.wait_runs_only_on("churn", "n2", Duration::from_secs(60));
    wait_for("churn to check its memory after the restore", Duration::from_secs(60), || {
        let log = cluster.ok(&["logs", "churn"]);
        assert!(!log.contains("MISMATCH"), "vmchurn found its memory changed:\n{log}");
        (checks(&log) >= before + 3).then_some(())
    });

    // The same for hog, from an incremental version.
    let newest = cluster.container("hog").versions.iter().rev().find(|v| v.memory_parent.is_some()).unwrap().clone();
    cluster.ok(&["stop", "hog"]);
    cluster.ok(&["restore", "hog", "--version", &newest.version.to_string(), "--node", "n2"]);
    cluster.wait_runs_only_on("hog", "n2", Duration::from_secs(60));
    cluster.memhog_checks_more("hog", 2, Duration::from_secs(60));
    cluster.down();
}
