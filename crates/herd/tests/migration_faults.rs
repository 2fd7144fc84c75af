//! Live migration under faults: an agent that dies at each phase (on either side), a network
//! cut mid-transfer and a Control node killed mid-migration. Whatever happens, the container
//! ends up running on exactly one node with its state intact, and never runs on two at once.
//!
//! Agents die through fault injection (`HERD_FAULT_INJECT`, see herd-node's `fault_point`):
//! the agent `_exit`s at the named point, as in a crash, and `herd up` restarts it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{COUNTER, Cluster, wait_for};

const T: Duration = Duration::from_secs(90);

/// The cluster's environment for fault tests: the named fault points, and a short stall timeout
/// so a cut network is noticed in seconds.
fn faults(points: &'static str) -> [(&'static str, &'static str); 2] {
    [("HERD_FAULT_INJECT", points), ("HERD_MIGRATION_STALL_SECS", "5")]
}

/// Watches, until dropped, that container `id` never runs on two nodes at once.
struct NeverTwice {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<String>>>,
}

impl NeverTwice {
    fn watch(cluster: &Cluster, id: &str) -> NeverTwice {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, id) = (stop.clone(), id.to_string());
        // The watcher only runs `runc list`, so it needs the node roots, not the cluster.
        let roots: Vec<(String, std::path::PathBuf)> =
            cluster.up_state().layout.nodes.iter().map(|n| (n.name.clone(), n.run_dir.join("runc"))).collect();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let mut running = Vec::new();
                for (node, root) in &roots {
                    let out = std::process::Command::new("runc")
                        .arg("--root")
                        .arg(root)
                        .args(["list", "--format", "json"])
                        .output()
                        .expect("running runc list");
                    let list: Option<Vec<serde_json::Value>> = serde_json::from_slice(&out.stdout).unwrap_or(None);
                    for c in list.unwrap_or_default() {
                        let pid = c["pid"].as_u64().unwrap_or(0);
                        if c["id"] == id.as_str() && c["status"] == "running" && common::process_runs(pid) {
                            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                            running
                                .push(format!("{node} (pid {pid}: {})", stat.rsplit_once(')').unwrap_or_default().1));
                        }
                    }
                }
                if running.len() > 1 {
                    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                    return Some(format!(
                        "{id} ran on {running:?} at once (at {:.3} s since the epoch)",
                        at.as_secs_f64()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        });
        NeverTwice { stop, thread: Some(thread) }
    }

    fn check(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(problem) = self.thread.take().unwrap().join().unwrap() {
            panic!("{problem}");
        }
    }
}

#[test]
fn a_destination_agent_dying_before_or_after_the_restore_leaves_exactly_one_copy() {
    let cluster = Cluster::up_with_env(14, 2, &[], &faults("dest-before-restore,dest-after-restore"));
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "counter", "--node", "n1", "busybox", "--", "sh", "-c", COUNTER]);
    let id = cluster.wait_state("counter", "running", T).id;
    let mut seen = cluster.counts_on("counter", 0, T);
    let watch = NeverTwice::watch(&cluster, &id);

    // Each node dies once before and once after restoring (the markers make each fault fire
    // once per node): before, the source resumes; after, the destination keeps the container.
    for (mode, from, to) in [("cold", "n1", "n2"), ("postcopy", "n2", "n1")] {
        let agent = cluster.agent_pid(to).unwrap();
        let out = cluster.herd(&["migrate", "counter", "--to", to, "--mode", mode]);
        assert!(!out.status.success(), "the {mode} migration survived its destination's crash?");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(from), "the error should say where {mode} left the container: {err}");
        cluster.wait_runs_only_on("counter", from, T);
        seen = cluster.counts_on("counter", seen, T);
        cluster.wait_agent_restarted(to, agent, T);

        // The second attempt dies after the restore: the container is the destination's.
        let agent = cluster.agent_pid(to).unwrap();
        let _ = cluster.herd(&["migrate", "counter", "--to", to, "--mode", mode]);
        cluster.wait_runs_only_on("counter", to, T);
        seen = cluster.counts_on("counter", seen, T);
        cluster.wait_agent_restarted(to, agent, T);
    }
    watch.check();
    // Nothing of the migrations is left on the node the counter left.
    wait_for("n2 to forget the counter", T, || {
        (std::fs::read_dir(cluster.data_dir.join("nodes/n2/containers")).unwrap().count() == 0).then_some(())
    });
}

#[test]
fn a_source_agent_dying_mid_migration_leaves_exactly_one_copy() {
    let cluster = Cluster::up_with_env(15, 2, &[], &faults("source-after-checkpoint,source-before-let-go"));
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "counter", "--node", "n1", "busybox", "--", "sh", "-c", COUNTER]);
    let id = cluster.wait_state("counter", "running", T).id;
    let seen = cluster.counts_on("counter", 0, T);
    let watch = NeverTwice::watch(&cluster, &id);

    // Frozen and checkpointed, then the source dies before sending anything: the container was
    // never restored elsewhere, so it resumes on the source when its agent is back.
    let agent = cluster.agent_pid("n1").unwrap();
    let out = cluster.herd(&["migrate", "counter", "--to", "n2", "--mode", "cold"]);
    assert!(!out.status.success(), "the migration survived its source's crash?");
    cluster.wait_runs_only_on("counter", "n1", T);
    let seen = cluster.counts_on("counter", seen, T);
    cluster.wait_agent_restarted("n1", agent, T);

    // The destination runs it, then the source dies before letting go: the pages still flow
    // (the page proxy outlives the agent), and the restarted source lets go.
    let _ = cluster.herd(&["migrate", "counter", "--to", "n2", "--mode", "postcopy"]);
    cluster.wait_runs_only_on("counter", "n2", T);
    cluster.counts_on("counter", seen, T);
    watch.check();
    wait_for("n1 to forget the counter", T, || {
        (std::fs::read_dir(cluster.data_dir.join("nodes/n1/containers")).unwrap().count() == 0).then_some(())
    });
}

/// Starts memhog container `hog` holding `mib` MiB on n1 and, once it checked its memory, a
/// cold migration of it to n2 at 8 MiB/s (so it takes a while), watched by [`NeverTwice`].
fn hog_migrating_slowly(cluster: &Cluster, mib: u32) -> (NeverTwice, std::process::Child) {
    cluster.import_busybox_with_memhog();
    cluster.ok(&["run", "--name", "hog", "--node", "n1", "busybox", "--", "memhog", &mib.to_string()]);
    let id = cluster.wait_state("hog", "running", T).id;
    cluster.wait_log("hog", "check 1 ok", T);
    let watch = NeverTwice::watch(cluster, &id);
    let mut migration = cluster.command(&["migrate", "hog", "--to", "n2", "--mode", "cold", "--bandwidth", "8m"]);
    migration.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    (watch, migration.spawn().unwrap())
}

/// Runs `iptables ARGS` in the network namespace of node `node`.
fn node_iptables(cluster: &Cluster, node: &str, args: &[&str]) {
    let netns = format!("herd-{}-{node}", cluster.name);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &netns, "iptables", "-w"])
        .args(args)
        .output()
        .expect("running iptables");
    assert!(out.status.success(), "iptables {args:?} in {netns}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_network_cut_mid_transfer_leaves_the_container_where_it_was() {
    let cluster = Cluster::up_with_env(16, 2, &[], &faults(""));
    // 48 MiB at 8 MiB/s take about 6 s: cut n1 from n2 once the pages are moving.
    let (watch, migration) = hog_migrating_slowly(&cluster, 48);
    // CRIU's dump log appears once the dump, and with it the pages, has started.
    let scratch = cluster.node_view("n1", &cluster.run_dir().join("nodes/n1/scratch/migrations"));
    wait_for("the pages to move", T, || {
        let mut dirs = std::fs::read_dir(&scratch).ok()?;
        dirs.any(|d| d.is_ok_and(|d| d.path().join("dump-work/dump.log").exists())).then_some(())
    });
    let n2 = cluster.node_address("n2").to_string();
    node_iptables(&cluster, "n1", &["-I", "INPUT", "-s", &n2, "-j", "DROP"]);
    node_iptables(&cluster, "n1", &["-I", "OUTPUT", "-d", &n2, "-j", "DROP"]);

    let out = migration.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the migration went through a cut network?");
    assert!(err.contains("keeps running on n1") || err.contains("runs on n1 again"), "{err}");
    cluster.wait_runs_only_on("hog", "n1", T);
    cluster.memhog_checks_more("hog", 2, T);

    // With the network back, the same container migrates.
    node_iptables(&cluster, "n1", &["-D", "INPUT", "-s", &n2, "-j", "DROP"]);
    node_iptables(&cluster, "n1", &["-D", "OUTPUT", "-d", &n2, "-j", "DROP"]);
    cluster.ok(&["migrate", "hog", "--to", "n2", "--mode", "postcopy"]);
    cluster.wait_runs_only_on("hog", "n2", T);
    cluster.memhog_checks_more("hog", 2, T);
    watch.check();
}

/// Cuts node `node` off node `peer` (both directions, in `node`'s namespace) until dropped.
struct NetworkCut<'a> {
    cluster: &'a Cluster,
    node: &'static str,
    peer: String,
}

impl<'a> NetworkCut<'a> {
    fn new(cluster: &'a Cluster, node: &'static str, peer: &str) -> NetworkCut<'a> {
        let peer = cluster.node_address(peer).to_string();
        node_iptables(cluster, node, &["-I", "INPUT", "-s", &peer, "-j", "DROP"]);
        node_iptables(cluster, node, &["-I", "OUTPUT", "-d", &peer, "-j", "DROP"]);
        NetworkCut { cluster, node, peer }
    }
}

impl Drop for NetworkCut<'_> {
    fn drop(&mut self) {
        node_iptables(self.cluster, self.node, &["-D", "INPUT", "-s", &self.peer, "-j", "DROP"]);
        node_iptables(self.cluster, self.node, &["-D", "OUTPUT", "-d", &self.peer, "-j", "DROP"]);
    }
}

#[test]
fn a_network_cut_before_the_freeze_or_briefly_during_post_copy_loses_nothing() {
    let cluster = Cluster::up_with_env(33, 2, &[], &faults(""));
    cluster.import_busybox_with_memhog();
    cluster.ok(&["run", "--name", "hog", "--node", "n1", "busybox", "--", "memhog", "48"]);
    let id = cluster.wait_state("hog", "running", T).id;
    cluster.wait_log("hog", "check 1 ok", T);
    let watch = NeverTwice::watch(&cluster, &id);

    // Cut before the source freezes: the destination prepares (its orders come through the
    // broker), the source cannot reach it and the container never stops running on n1.
    {
        let _cut = NetworkCut::new(&cluster, "n1", "n2");
        for mode in ["cold", "postcopy"] {
            let err = cluster.fails(&["migrate", "hog", "--to", "n2", "--mode", mode]);
            assert!(err.contains("keeps running on n1") || err.contains("runs on n1 again"), "{mode}: {err}");
            assert_eq!(cluster.wait_runs_only_on("hog", "n1", T).node, "n1");
        }
    }
    cluster.memhog_checks_more("hog", 1, T);

    // A cut shorter than the stall timeout (5 s here) while post-copy pages stream at 8 MiB/s
    // (48 MiB: about 6 s) after the container already runs on n2: TCP carries on when the
    // network is back, and every page arrives intact.
    let mut migration = cluster.command(&["migrate", "hog", "--to", "n2", "--mode", "postcopy", "--bandwidth", "8m"]);
    migration.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let migration = migration.spawn().unwrap();
    cluster.wait_runs_only_on("hog", "n2", T);
    {
        let _cut = NetworkCut::new(&cluster, "n2", "n1");
        // The fault is a cut of a given length: this sleep is its duration, not a wait.
        std::thread::sleep(Duration::from_millis(1500));
    }
    let out = migration.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the post-copy migration failed after a short cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.wait_runs_only_on("hog", "n2", T);
    cluster.memhog_checks_more("hog", 2, T);
    watch.check();
}

#[test]
fn a_control_node_killed_mid_migration_resolves_it_when_it_returns() {
    let cluster = Cluster::up(17, 2);
    let (watch, migration) = hog_migrating_slowly(&cluster, 32);
    // Once the source sends (its scratch directory appears), the pages take about 4 s.
    let scratch = cluster.node_view("n1", &cluster.run_dir().join("nodes/n1/scratch/migrations"));
    wait_for("the source to send", T, || std::fs::read_dir(&scratch).ok().and_then(|mut d| d.next()).map(|_| ()));
    let control = cluster.up_state().control_pid.expect("the Control node's pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(control as i32), nix::sys::signal::Signal::SIGKILL).unwrap();

    // The client lost its Control node; the nodes finish the hand-off between themselves, the
    // restarted Control node learns from the destination how it ended, and the client, which
    // waited for that in the migration journal, reports it.
    let out = migration.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.contains("migrated hog from n1 to n2"),
        "the client reports the outcome: {said}"
    );
    wait_for("the Control node to be back", T, || cluster.herd(&["ps"]).status.success().then_some(()));
    let c = cluster.wait_runs_only_on("hog", "n2", T);
    assert_eq!(c.state.as_str(), "running");
    wait_for("the restarted Control node to resolve the migration", T, || {
        cluster.ok(&["events"]).contains("resolved: it runs on n2").then_some(())
    });
    cluster.memhog_checks_more("hog", 2, T);
    watch.check();
    // The next migration is not blocked by the one the crash interrupted.
    cluster.ok(&["migrate", "hog", "--to", "n1"]);
    cluster.wait_runs_only_on("hog", "n1", T);
}

#[test]
fn a_control_node_dying_before_it_tells_the_source_to_send_rolls_the_migration_back() {
    // The Control node dies once, right after it journalled the migration as transferring and
    // before the source heard of it: the destination waits for a source that will never come.
    let cluster = Cluster::up_with_env(93, 2, &[], &faults("control-before-send"));
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "counter", "--node", "n1", "busybox", "--", "sh", "-c", COUNTER]);
    let id = cluster.wait_state("counter", "running", T).id;
    let seen = cluster.counts_on("counter", 0, T);
    let watch = NeverTwice::watch(&cluster, &id);

    // The restarted Control node finds the source knows nothing of it and rolls it back at
    // once, rather than after the destination's five minutes; the client reports that.
    let out = cluster.herd(&["migrate", "counter", "--to", "n2", "--mode", "cold"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && said.contains("was rolled back"), "{said}");
    cluster.wait_runs_only_on("counter", "n1", T);
    let seen = cluster.counts_on("counter", seen, T);
    let control_log = std::fs::read_to_string(cluster.run_dir().join("logs/control.log")).unwrap();
    assert!(control_log.contains("n1 never got the request to send it"), "{control_log}");
    assert!(cluster.ok(&["events"]).contains("resolved: it runs on n1"));
    wait_for("n2 to drop what it prepared", T, || {
        (std::fs::read_dir(cluster.data_dir.join("nodes/n2/containers")).unwrap().count() == 0).then_some(())
    });

    // The fault fired once: the next migration goes through.
    cluster.ok(&["migrate", "counter", "--to", "n2", "--mode", "cold"]);
    cluster.wait_runs_only_on("counter", "n2", T);
    cluster.counts_on("counter", seen, T);
    watch.check();
}
