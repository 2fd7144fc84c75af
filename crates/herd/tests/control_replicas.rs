//! `herd up --ha`: three Control replicas elect a leader through a lease in a three-server
//! broker. The faults are real: the leader killed with SIGKILL (idle, during a burst of
//! `herd run`, during a migration), paused with SIGSTOP past its lease, and every replica
//! and broker restarted one at a time. Throughout, the CLI finds the new leader by itself,
//! the counter counts on unbroken, every container runs on exactly one node, and every
//! migration ends exactly once. A request of an older term is refused by the node it is
//! sent to, and a write past the lease never leaves.
//!
//! Index 85: with three replicas and three brokers this cluster also takes the API ports and
//! broker ports of indexes 86 and 87, which no other test may use.

mod common;

use std::time::{Duration, Instant};

use common::{COUNTER, Cluster, wait_for};
use herd_proto::control::{ControlStatus, Role};
use herd_proto::migration::{MigrationPhase, MigrationRecord};

const T: Duration = Duration::from_secs(90);

fn signal(pid: u32, sig: i32) {
    // SAFETY: a plain kill(2).
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "signal {sig} to {pid}");
}

/// `herd control status`; `None` while no replica can say (a broker failing over).
fn try_status(cluster: &Cluster) -> Option<ControlStatus> {
    let out = cluster.herd(&["control", "status", "--json"]);
    if !out.status.success() {
        eprintln!("herd control status: {}", String::from_utf8_lossy(&out.stderr).trim());
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn status(cluster: &Cluster) -> ControlStatus {
    wait_for("herd control status", T, || try_status(cluster))
}

fn counts_on(cluster: &Cluster, seen: u64) -> u64 {
    cluster.counts_on_through_failover("counter", seen, T)
}

/// Waits until `name` runs on `node` and nowhere else, as herd and runc both see it, asking
/// again when a command fails while the control plane fails over.
fn runs_only_on(cluster: &Cluster, name: &str, node: &str) {
    wait_for(&format!("{name} to run on {node} only"), T, || {
        let out = cluster.herd(&["inspect", name, "--json"]);
        if !out.status.success() {
            eprintln!("herd inspect: {}", String::from_utf8_lossy(&out.stderr).trim());
            return None;
        }
        let c: herd_proto::api::ContainerInfo = serde_json::from_slice(&out.stdout).ok()?;
        let copies = cluster.runc_copies(&c.id);
        (c.node == node && c.state.as_str() == "running" && copies == [(node.to_string(), "running".to_string())])
            .then_some(())
    })
}

/// The leading replica's name and pid, once every replica reports and one leads.
fn leader(cluster: &Cluster) -> (String, u32, u64) {
    wait_for("one replica to lead", T, || {
        let s = try_status(cluster)?;
        let lease = s.lease.filter(|l| !l.released)?;
        // A replica that stopped reporting (paused, dead) may have said it led.
        let fresh = |r: &&herd_proto::control::ReplicaReport| herd_proto::now_millis().saturating_sub(r.at) < 3000;
        let leaders: Vec<_> = s.replicas.iter().filter(fresh).filter(|r| r.role == Role::Leader).collect();
        if leaders.len() != 1 || leaders[0].name != lease.replica {
            return None;
        }
        let pid = cluster.up_state().control_pids.iter().find(|(n, _)| *n == lease.replica).and_then(|(_, p)| *p)?;
        Some((lease.replica, pid, lease.term))
    })
}

/// Kills the leader with SIGKILL; returns how long until `herd ps` was served again, and
/// checks a new replica leads in a newer term.
fn kill_leader(cluster: &Cluster) -> Duration {
    kill(cluster, leader(cluster))
}

fn kill(cluster: &Cluster, (old, pid, term): (String, u32, u64)) -> Duration {
    signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    let out = cluster.herd(&["ps"]);
    let served = killed.elapsed();
    assert!(out.status.success(), "herd ps after the leader died: {}", String::from_utf8_lossy(&out.stderr));
    let (new, _, new_term) = leader(cluster);
    assert!(new_term > term, "the term moves on: {term} -> {new_term}");
    eprintln!("leader {old} (term {term}) killed: {new} leads (term {new_term}); herd ps served after {served:?}");
    served
}

#[test]
fn the_leader_fails_and_another_replica_carries_on() {
    let cluster = Cluster::up_with(85, 2, &["--ha"]);
    // Each replica reports every second: the last may not have yet when herd up returns.
    let s = wait_for("three replicas to report", T, || Some(status(&cluster)).filter(|s| s.replicas.len() == 3));
    assert_eq!(s.state_peers.len(), 3, "the state has three replicas: {s:?}");
    cluster.import_busybox_with_memhog();
    cluster.ok(&["run", "--name", "counter", "--node", "n1", "busybox", "--", "sh", "-c", COUNTER]);
    let mut seen = cluster.counts_on("counter", 0, T);

    // 1. Killed while idle.
    let served = kill_leader(&cluster);
    assert!(served < Duration::from_secs(10), "herd ps was served again after {served:?}");
    seen = cluster.counts_on("counter", seen, T);
    cluster.wait_runs_only_on("counter", "n1", T);

    // 2. Killed during a burst of herd run: each run either succeeds or says it may not
    // have; whatever exists afterwards runs once.
    let before = leader(&cluster);
    let burst: Vec<_> = (0..6)
        .map(|i| {
            let mut cmd = cluster.command(&["run", "--name", &format!("burst-{i}"), "busybox", "--", "sleep", "600"]);
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(30)); // the first requests on their way
    kill(&cluster, before);
    for (i, child) in burst.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let name = format!("burst-{i}");
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{name}: {} {}", out.status, err.trim());
        if out.status.success() {
            cluster.wait_state(&name, "running", T);
        } else {
            assert!(!err.trim().is_empty(), "a failed run says why");
        }
        if cluster.herd(&["inspect", &name]).status.success() {
            let c = cluster.container(&name);
            let copies = wait_for(&format!("{name} to settle"), T, || {
                let copies = cluster.runc_copies(&c.id);
                (copies.iter().filter(|(_, s)| s == "running").count() <= 1).then_some(copies)
            });
            assert!(copies.len() <= 1, "{name} exists on one node at most: {copies:?}");
        }
    }

    // 3. Killed in each phase of a migration of a memhog moving at 4 MiB/s: as soon as the
    // journal has it (before the freeze), while it transfers (cold), and once the
    // destination runs while pages still stream (post-copy). Each migration ends exactly
    // once, completed or rolled back, and `herd migrate` reports which.
    cluster.ok(&["run", "--name", "hog", "--node", "n1", "busybox", "--", "memhog", "32"]);
    cluster.wait_log("hog", "check 1 ok", T);
    let mut on = "n1";
    let hog = cluster.container("hog").id;
    for (round, (when, mode)) in
        [("journalled", "cold"), ("transferring", "cold"), ("running on the destination", "postcopy")]
            .into_iter()
            .enumerate()
    {
        let to = if on == "n1" { "n2" } else { "n1" };
        let mut migrate = cluster.command(&["migrate", "hog", "--to", to, "--mode", mode, "--bandwidth", "4m"]);
        migrate.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let migrate = migrate.spawn().unwrap();
        let before = leader(&cluster);
        wait_for(&format!("the migration to be {when}"), T, || {
            let ms: Vec<MigrationRecord> = cluster.json(&["migrations", "hog"]);
            let m = ms.get(round)?;
            let ready = match round {
                0 => true,
                1 => m.phase == MigrationPhase::Transferring,
                // Post-copy: the destination runs while the pages still stream.
                _ => !m.phase.is_final() && cluster.runc_copies(&hog).contains(&(to.to_string(), "running".into())),
            };
            ready.then_some(())
        });
        kill(&cluster, before);
        let out = migrate.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("leader killed when the migration was {when}: herd migrate: {} {said}", out.status);
        let ms: Vec<MigrationRecord> = wait_for("the migration to end", T, || {
            let ms: Vec<MigrationRecord> = cluster.json(&["migrations", "hog"]);
            ms.iter().all(|m| m.phase.is_final()).then_some(ms)
        });
        assert_eq!(ms.len(), round + 1, "one migration a round: {ms:?}");
        if ms[round].phase == MigrationPhase::Done {
            on = to;
        }
        assert_eq!(out.status.success(), on == to, "herd migrate reports the outcome: {said}");
        cluster.wait_runs_only_on("hog", on, T);
        cluster.memhog_checks_more("hog", 2, T);
    }
    seen = cluster.counts_on("counter", seen, T);

    // 4. Paused past its lease: another leads; continued, the old leader finds itself
    // deposed and stops (the supervisor starts it again as a follower).
    // (A container of its own to stop: each of the burst's runs may or may not have made one.)
    cluster.ok(&["run", "--name", "to-stop", "busybox", "--", "sleep", "600"]);
    cluster.wait_state("to-stop", "running", T);
    let (old, pid, term) = leader(&cluster);
    signal(pid, libc::SIGSTOP);
    let paused = Instant::now();
    cluster.ok(&["run", "--name", "while-paused", "busybox", "--", "sleep", "600"]);
    eprintln!("herd run while the leader was paused: {:?}", paused.elapsed());
    // A stop is the same asked twice: the CLI asks the new leader again.
    let stopping = Instant::now();
    cluster.ok(&["stop", "-t", "1", "to-stop"]);
    eprintln!("herd stop while the leader was paused: {:?}", stopping.elapsed());
    let (new, _, new_term) = leader(&cluster);
    assert!(new != old && new_term > term, "{new} leads after {old} was paused");
    signal(pid, libc::SIGCONT);
    wait_for("the paused leader to stop", T, || (!common::process_runs(pid as u64)).then_some(()));
    wait_for("the old leader to be started again", T, || {
        let state = cluster.up_state();
        let now = state.control_pids.iter().find(|(n, _)| *n == old)?.1?;
        (now != pid && common::process_runs(now as u64)).then_some(())
    });
    let log = std::fs::read_to_string(cluster.run_dir().join("logs").join(format!("{old}.log"))).unwrap();
    assert!(log.contains("lost its lease"), "the old leader says why it stopped");
    cluster.wait_state("while-paused", "running", T);
    assert_eq!(cluster.state("to-stop"), "exited", "the stop took effect");
    seen = cluster.counts_on("counter", seen, T);

    // 5. Every replica restarted and every broker killed, one at a time, while the counter
    // migrates: nothing restarts, nothing is lost.
    let mut on = "n1"; // the counter's node
    let components: Vec<(String, u32)> = {
        let state = cluster.up_state();
        state.control_pids.iter().chain(state.broker_pids.iter()).map(|(n, p)| (n.clone(), p.unwrap())).collect()
    };
    for (name, pid) in components {
        // Replicas stop cleanly (SIGTERM); brokers are killed (SIGKILL), harsher than a
        // rolling restart.
        signal(pid, if name.starts_with("broker") { libc::SIGKILL } else { libc::SIGTERM });
        let to = if on == "n1" { "n2" } else { "n1" };
        let out = cluster.herd(&["migrate", "counter", "--to", to]);
        eprintln!("{name} restarted: herd migrate: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        if out.status.success() {
            on = to;
        } else {
            let events = String::from_utf8_lossy(&cluster.herd(&["events"]).stdout).to_string();
            let tail: Vec<&str> = events.lines().rev().take(12).collect();
            eprintln!("the events before it, newest first:\n{}", tail.join("\n"));
        }
        wait_for(&format!("{name} to be back"), T, || {
            let state = cluster.up_state();
            let now = state.control_pids.iter().chain(state.broker_pids.iter()).find(|(n, _)| *n == name)?.1?;
            (now != pid).then_some(())
        });
        runs_only_on(&cluster, "counter", on);
        seen = counts_on(&cluster, seen);
    }
    let (_, _, term) = leader(&cluster);

    // 6. What a deposed leader would send: a node refuses a request of an older term (here,
    // asking to stop the counter), and a write through a fence past its hold never leaves.
    let counter_id = cluster.container("counter").id;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use herd_proto::node::{NodeRequest, NodeResult};
        let broker = herd_broker::Broker::connect(&cluster.broker_config()).await.unwrap();
        let later = Instant::now() + Duration::from_secs(60);
        let stale = broker.with_fence(herd_broker::Fence::new(term - 1, later));
        let req = NodeRequest::Stop { id: counter_id.clone(), timeout_secs: 1 };
        let answer: NodeResult =
            stale.request(herd_proto::subjects::node_rpc(on), "node", &req, Duration::from_secs(20)).await.unwrap();
        let err = answer.expect_err("a request of an older term is refused").message;
        assert!(err.contains("no longer leads"), "{err}");
        let expired = broker.with_fence(herd_broker::Fence::new(term, Instant::now()));
        let bucket = expired.bucket::<String>("herd-test-fenced").await.unwrap();
        let err = bucket.put("k", &"v".to_string()).await.unwrap_err();
        assert!(format!("{err:#}").contains("no longer leads"), "{err:#}");
        assert!(bucket.get("k").await.unwrap().is_none(), "the refused write did not land");
    });
    runs_only_on(&cluster, "counter", on);
    for name in ["while-paused", "hog", "counter"] {
        let c = cluster.container(name);
        assert_eq!(c.state.as_str(), "running", "{name} still runs");
    }
}
