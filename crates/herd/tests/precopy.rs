//! Pre-copy migration, on a kernel that tracks dirty memory (soft-dirty): memory moves in
//! rounds while the container runs, and the final stop-and-copy moves only what it wrote since.
//!
//! This machine's kernel lacks soft-dirty (`../shared/PLATFORM.md`), so where `criu check`
//! says so, the test runs itself again in a virtual machine booting a Debian kernel that has
//! it (`common::vm`), and passes when it passes there.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{COUNTER, Cluster, EchoClient, counted, vm, wait_for};
use herd_proto::migration::{MigrationMode, MigrationReport, Outcome};

/// Set in the guest, where the test runs for real.
const IN_VM: &str = "HERD_TEST_IN_VM";
/// Generous: in the guest every instruction is emulated.
const T: Duration = Duration::from_secs(300);

fn kernel_tracks_dirty_memory() -> bool {
    Command::new("criu").args(["check", "--feature", "mem_dirty_track"]).output().is_ok_and(|o| o.status.success())
}

/// Runs `scenario` here if this kernel tracks dirty memory (or this is the guest), in a guest
/// otherwise.
fn on_a_dirty_tracking_kernel(name: &str, scenario: fn()) {
    if std::env::var_os(IN_VM).is_some() || kernel_tracks_dirty_memory() {
        scenario();
        return;
    }
    let exe = std::env::current_exe().unwrap().display().to_string();
    let args = [exe, "--exact".into(), name.into(), "--nocapture".into(), "--test-threads".into(), "1".into()];
    let cwd = std::env::current_dir().unwrap();
    let outcome = vm::run(&args, &cwd, &[(IN_VM, "1")], Duration::from_secs(25 * 60));
    assert_eq!(outcome.exit_code, 0, "{name} failed in the guest (its console is above)");
    assert!(outcome.console.contains("test result: ok. 1 passed"), "{name} did not run in the guest");
}

#[test]
fn precopy_moves_memory_in_rounds_while_the_container_runs() {
    on_a_dirty_tracking_kernel("precopy_moves_memory_in_rounds_while_the_container_runs", || {
        // The destination's agent dies once, as its first pre-copy round's pages arrive; then
        // the source's, once it finished a round (where the kernel has no soft-dirty, it holds
        // CRIU's trackers then).
        let faults = "dest-during-precopy,source-after-precopy-round";
        let cluster = Cluster::up_with_env(37, 2, &[], &[("HERD_FAULT_INJECT", faults)]);
        cluster.import_busybox_with(&["memhog", "vmchurn"]);
        let counter =
            ["run", "--name", "counter", "--node", "n1", "--memory", "64m", "busybox", "--", "sh", "-c", COUNTER];
        cluster.ok(&counter);
        let before = cluster.wait_state("counter", "running", T);
        cluster.wait_log("counter", "n=10 ", T);

        // A migration whose destination dies during pre-copy leaves the container running
        // where it was, and only there.
        let agent = cluster.agent_pid("n2").unwrap();
        let out = cluster.herd(&["migrate", "counter", "--to", "n2", "--mode", "precopy"]);
        assert!(!out.status.success(), "the migration survived its destination's crash?");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("keeps running on n1"), "{err}");
        cluster.wait_runs_only_on("counter", "n1", T);
        cluster.wait_agent_restarted("n2", agent, T);
        cluster.counts_on("counter", counted(&cluster.ok(&["logs", "counter"])), T);

        // A migration whose source dies after a round (with the trackers it held) leaves the
        // container running where it was, and only there.
        let agent = cluster.agent_pid("n1").unwrap();
        let out = cluster.herd(&["migrate", "counter", "--to", "n2", "--mode", "precopy"]);
        assert!(!out.status.success(), "the migration survived its source's crash?");
        cluster.wait_agent_restarted("n1", agent, T);
        cluster.wait_runs_only_on("counter", "n1", T);
        cluster.counts_on("counter", counted(&cluster.ok(&["logs", "counter"])), T);

        // Then a counter with a file in its writable layer carries on where it was.
        let report: MigrationReport = cluster.json(&["migrate", "counter", "--to", "n2", "--mode", "precopy"]);
        assert_eq!((report.mode, &report.outcome), (MigrationMode::Precopy, &Outcome::Migrated), "{report:?}");
        let rounds = precopy_rounds(&report);
        assert!(!rounds.is_empty(), "no pre-copy round in {report:?}");
        let c = cluster.container("counter");
        assert_eq!((c.node.as_str(), c.state.as_str(), c.ip), ("n2", "running", before.ip), "{c:?}");
        cluster.counts_on("counter", counted(&cluster.ok(&["logs", "counter"])), T);

        // A TCP connection from the host to the container goes on through the move.
        cluster.ok(&["run", "--name", "echo", "--node", "n1", "busybox", "--", "nc", "-ll", "-p", "9000", "-e", "cat"]);
        let server = cluster.wait_state("echo", "running", T);
        let mut client = EchoClient::connect(server.ip, 9000, T);
        assert_eq!(client.echo("before"), "before");
        let report: MigrationReport = cluster.json(&["migrate", "echo", "--to", "n2", "--mode", "precopy"]);
        assert_eq!((report.mode, &report.outcome), (MigrationMode::Precopy, &Outcome::Migrated), "{report:?}");
        assert_eq!(client.echo("after"), "after");

        // 128 MiB written with a pattern, 2 MiB of it rewritten every second: the first round
        // moves all of it while it runs, the final stop-and-copy only what was written since
        // the last round, and the pages of every round add up to intact memory.
        cluster
            .ok(&["run", "--name", "hog", "--node", "n1", "--memory", "256m", "busybox", "--", "memhog", "128", "2"]);
        cluster.wait_log("hog", "check 1 ok", T);
        let report: MigrationReport = cluster.json(&["migrate", "hog", "--to", "n2", "--mode", "precopy"]);
        assert_eq!(report.outcome, Outcome::Migrated, "{report:?}");
        let rounds = precopy_rounds(&report);
        eprintln!("pre-copy rounds (bytes): {rounds:?}; memory moved: {}", report.memory_bytes);
        assert!(rounds[0] >= 128 << 20, "the first round moved only {} bytes: {report:?}", rounds[0]);
        let final_copy = report.memory_bytes - rounds.iter().sum::<u64>();
        assert!(final_copy < 16 << 20, "the stop-and-copy moved {final_copy} bytes, not just the dirty pages");
        if let [.., prev, last] = rounds[..] {
            assert!(last < rounds[0] && prev <= rounds[0], "later rounds move only dirty pages: {rounds:?}");
        }
        // At once back, cold. The restore left the memory to `criu lazy-pages` reading the
        // rounds' images (where the node's CRIU can), so the container ran before all of it
        // was in place: the dump waits until it is, or it would miss what is not. (Here the
        // pages are usually all in before the dump starts; a 1 GiB memhog moved at once
        // after a pre-copy was corrupted before the wait was added.)
        let back: MigrationReport = cluster.json(&["migrate", "hog", "--to", "n1", "--mode", "cold"]);
        assert_eq!(back.outcome, Outcome::Migrated, "{back:?}");
        cluster.memhog_checks_more("hog", 2, T);
        assert_eq!(cluster.container("hog").node, "n1");

        // --safe: auto never picks post-copy (both nodes here could), and post-copy itself is
        // refused; both nodes track dirty memory, so pre-copy.
        let err = cluster.fails(&["migrate", "hog", "--safe", "--mode", "postcopy"]);
        assert!(err.contains("--safe forbids post-copy"), "{err}");
        let safe: MigrationReport = cluster.json(&["migrate", "hog", "--to", "n2", "--safe"]);
        assert_eq!((safe.mode, &safe.outcome), (MigrationMode::Precopy, &Outcome::Migrated), "{safe:?}");
        assert!(safe.mode_reason.contains("safe"), "{}", safe.mode_reason);
        cluster.memhog_checks_more("hog", 1, T);

        // Memory changed in every way tracking could miss while the rounds run: pages
        // rewritten and dropped, areas unmapped and mapped again, moved (mremap), written by
        // another process (process_vm_writev) and through a shared mapping, by processes
        // forked again and again. Each process checks every byte of its memory as it goes:
        // after two moves it still finds what it wrote.
        cluster.ok(&["run", "--name", "churn", "--node", "n1", "busybox", "--", "vmchurn"]);
        cluster.wait_log("churn", "child 1 checked=", T);
        let moved_and_checked = |to: &str| {
            let checks = cluster.ok(&["logs", "churn"]).matches("parent step=").count();
            let report: MigrationReport = cluster.json(&["migrate", "churn", "--to", to, "--mode", "precopy"]);
            assert_eq!(report.outcome, Outcome::Migrated, "{report:?}");
            eprintln!("vmchurn to {to}: pre-copy rounds (bytes): {:?}", precopy_rounds(&report));
            wait_for("vmchurn to check its memory after the move", T, || {
                let log = cluster.ok(&["logs", "churn"]);
                assert!(!log.contains("MISMATCH"), "vmchurn found its memory changed:\n{log}");
                (log.matches("parent step=").count() >= checks + 3).then_some(())
            });
        };
        moved_and_checked("n2");
        // Back to n1. Each node's fault points fire once: first n1's agent dies as the first
        // round's pages arrive, then n2's once it finished a round (and with it the trackers
        // it held). Each time churn runs on, on n2 only; the third try moves it.
        for dying in ["n1", "n2"] {
            let agent = cluster.agent_pid(dying).unwrap();
            let out = cluster.herd(&["migrate", "churn", "--to", "n1", "--mode", "precopy"]);
            assert!(!out.status.success(), "the migration survived the crash of {dying}'s agent?");
            cluster.wait_agent_restarted(dying, agent, T);
            cluster.wait_runs_only_on("churn", "n2", T);
        }
        moved_and_checked("n1");
        let log = cluster.ok(&["logs", "churn"]);
        assert!(!log.contains("MISMATCH"), "{log}");
        assert_eq!(cluster.container("churn").state.as_str(), "running");
        // Neither node keeps the rounds' images.
        for node in ["n1", "n2"] {
            let scratch = cluster.node_view(node, &cluster.run_dir().join(format!("nodes/{node}/scratch/migrations")));
            wait_for(&format!("{node} to remove its migrations' scratch directories"), T, || {
                (std::fs::read_dir(&scratch).unwrap().count() == 0).then_some(())
            });
        }
    });
}

/// The bytes each pre-copy round of `report` moved, in order.
fn precopy_rounds(report: &MigrationReport) -> Vec<u64> {
    report.phases.iter().filter(|p| p.phase.starts_with("precopy ")).map(|p| p.bytes.unwrap_or(0)).collect()
}
