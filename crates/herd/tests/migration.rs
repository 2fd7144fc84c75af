//! Live migration end to end: a migrated container carries on with its memory, its files, its
//! address, its TCP connections and its log; bad requests change nothing.

mod common;

use std::time::Duration;

use common::{COUNTER, Cluster, EchoClient, counted, wait_for};
use herd_proto::api::ContainerInfo;
use herd_proto::migration::{MigrationMode, MigrationReport, Outcome};

const T: Duration = Duration::from_secs(60);

fn migrate(cluster: &Cluster, name: &str, to: &str, mode: &str) -> MigrationReport {
    cluster.json(&["migrate", name, "--to", to, "--mode", mode])
}

#[test]
fn cold_and_postcopy_migrations_carry_memory_files_logs_and_address() {
    let cluster = Cluster::up(11, 2);
    cluster.import_busybox_with_memhog();
    cluster.ok(&["run", "--name", "counter", "--node", "n1", "--memory", "64m", "busybox", "--", "sh", "-c", COUNTER]);
    let before = cluster.wait_state("counter", "running", T);
    cluster.wait_log("counter", "n=10 ", T);

    let mut seen = 0;
    for (to, mode, want) in [("n2", "cold", MigrationMode::Cold), ("n1", "postcopy", MigrationMode::Postcopy)] {
        let report = migrate(&cluster, "counter", to, mode);
        assert_eq!(report.mode, want);
        assert_eq!(report.outcome, Outcome::Migrated);
        assert_eq!(report.destination, to);
        assert!(report.downtime_ms > 0 && report.downtime_ms <= report.total_ms, "{report:?}");
        assert!(report.memory_bytes > 0 && report.fs_bytes > 0, "{report:?}");
        let c = cluster.container("counter");
        assert_eq!((c.node.as_str(), c.state.as_str(), c.ip), (to, "running", before.ip), "{c:?}");
        assert_eq!(c.started_at, before.started_at, "the container keeps its start time");
        // It runs in its own cgroup on the destination, with its limit.
        let (cgroup, limit) = cluster.memory_limit_on(to, &c.id);
        assert!(cgroup.ends_with(&c.id), "{mode}: the restored process is in {cgroup}");
        assert_eq!(limit, 64 << 20, "{mode}: the memory limit after the move");
        // It goes on counting from where it was, with its file, and the log holds both parts.
        let log = wait_for("the counter to count on after the move", T, || {
            let log = cluster.ok(&["logs", "counter"]);
            (counted(&log) > seen + 20).then_some(log)
        });
        seen = counted(&log);
    }
    let c = cluster.container("counter");
    assert_eq!(c.migrations.len(), 2);
    let text = cluster.ok(&["inspect", "counter"]);
    assert!(text.contains("n1 -> n2  cold") && text.contains("n2 -> n1  postcopy"), "{text}");
    let events = cluster.ok(&["events"]);
    assert!(events.contains("migration done counter"), "{events}");
    // The source let go of everything, and neither node keeps a migration's scratch files.
    assert_eq!(std::fs::read_dir(cluster.data_dir.join("nodes/n2/containers")).unwrap().count(), 0);
    for node in ["n1", "n2"] {
        let scratch = cluster.node_view(node, &cluster.run_dir().join(format!("nodes/{node}/scratch/migrations")));
        wait_for(&format!("{node} to remove its migrations' scratch directories"), T, || {
            (std::fs::read_dir(&scratch).unwrap().count() == 0).then_some(())
        });
    }

    // 256 MiB written with a pattern come back intact after post-copy.
    cluster.ok(&["run", "--name", "hog", "--node", "n1", "busybox", "--", "memhog", "256"]);
    cluster.wait_log("hog", "check 1 ok", T);
    let report = migrate(&cluster, "hog", "n2", "postcopy");
    assert!(report.memory_bytes >= 256 << 20, "only {} bytes of memory moved", report.memory_bytes);
    cluster.memhog_checks_more("hog", 2, T);
    assert_eq!(cluster.container("hog").state.as_str(), "running");
}

/// The writable layer moves in passes while the container runs, then its last changes while
/// it is frozen: what the container deleted from its image stays deleted (whiteouts), a
/// directory it made anew hides the image's (opaque), and its files, hard and symbolic links
/// and FIFOs arrive as they were; a file it writes through a shared mapping (whose times do
/// not move on each write) arrives as it was at the freeze.
#[test]
fn the_writable_layer_moves_with_its_deletions_links_and_last_writes() {
    let cluster = Cluster::up(38, 2);
    cluster.import_busybox_with(&["mapcount"]);
    cluster.ok(&["run", "--name", "mapped", "--node", "n1", "busybox", "--", "mapcount", "/counter.map"]);
    let setup = "rm /bin/ls; rm -rf /etc; mkdir /etc; echo mine > /etc/only; \
                 dd if=/dev/urandom of=/big bs=1M count=8 2>/dev/null; ln /big /big2; ln -s big /link; mkfifo /fifo; \
                 echo ready; i=0; while true; do echo $i > /tail.new; mv /tail.new /tail; i=$((i+1)); sleep 0.02; done";
    cluster.ok(&["run", "--name", "fs", "--node", "n1", "busybox", "--", "sh", "-c", setup]);
    cluster.wait_log("fs", "ready", T);
    let look = "ls /etc; test -e /bin/ls && echo ls-is-back; md5sum /big /big2 | cut -c1-32; stat -c %h /big; \
                test -p /fifo && echo fifo; readlink /link";
    let before = cluster.ok(&["exec", "fs", "--", "sh", "-c", look]);
    assert_eq!(before.lines().next(), Some("only"), "{before}");
    assert!(!before.contains("ls-is-back") && before.contains("fifo\nbig"), "{before}");

    cluster.wait_log("mapped", "m=20\n", T);
    for (to, mode) in [("n2", "cold"), ("n1", "postcopy")] {
        let report = migrate(&cluster, "mapped", to, mode);
        assert_eq!(report.outcome, Outcome::Migrated, "{mode}: {report:?}");
        let tail_before: u64 = cluster.ok(&["exec", "fs", "--", "cat", "/tail"]).trim().parse().unwrap();
        let report = migrate(&cluster, "fs", to, mode);
        assert_eq!(report.outcome, Outcome::Migrated, "{mode}: {report:?}");
        for phase in ["writable layer 1", "writable layer frozen"] {
            assert!(report.phases.iter().any(|p| p.phase == phase), "{mode}: no {phase:?} in {:?}", report.phases);
        }
        let after = cluster.ok(&["exec", "fs", "--", "sh", "-c", look]);
        assert_eq!(after, before, "{mode}: the files differ after the move");
        // The writes go on from where they were (the last ones crossed while it was frozen).
        let tail_after: u64 = cluster.ok(&["exec", "fs", "--", "cat", "/tail"]).trim().parse().unwrap();
        assert!(tail_after >= tail_before, "{mode}: /tail went back from {tail_before} to {tail_after}");
        wait_for(&format!("{mode}: the writes to go on"), T, || {
            let now: u64 = cluster.ok(&["exec", "fs", "--", "cat", "/tail"]).trim().parse().ok()?;
            (now > tail_after).then_some(())
        });
    }
    // The mapped count went on from where it was at each freeze: one unbroken sequence.
    let log = wait_for("the mapped count to go on after the moves", T, || {
        let log = cluster.ok(&["logs", "mapped"]);
        let counts: Vec<u64> = log.lines().filter_map(|l| l.strip_prefix("m=")?.parse().ok()).collect();
        (counts.len() > 40).then_some(counts)
    });
    for pair in log.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "the mapped count went from {} to {} across a move", pair[0], pair[1]);
    }

    // A name a migration cannot carry is refused before the freeze, naming it; the container
    // runs on where it was.
    cluster.ok(&["exec", "fs", "--", "sh", "-c", "touch \"/odd-$(printf '\\377')\""]);
    let err = cluster.fails(&["migrate", "fs", "--to", "n2"]);
    assert!(err.contains("is not UTF-8"), "{err}");
    let c = cluster.container("fs");
    assert_eq!((c.node.as_str(), c.state.as_str()), ("n1", "running"), "{c:?}");
    let tail: u64 = cluster.ok(&["exec", "fs", "--", "cat", "/tail"]).trim().parse().unwrap();
    wait_for("the refused container to run on", T, || {
        let now: u64 = cluster.ok(&["exec", "fs", "--", "cat", "/tail"]).trim().parse().ok()?;
        (now > tail).then_some(())
    });
}

#[test]
fn tcp_connections_survive_migration() {
    let cluster = Cluster::up(12, 3);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "echo", "--node", "n1", "busybox", "--", "nc", "-ll", "-p", "9000", "-e", "cat"]);
    let server = cluster.wait_state("echo", "running", T);
    // A client on the host...
    let mut client = EchoClient::connect(server.ip, 9000, T);
    assert_eq!(client.echo("hello"), "hello");
    // ... and one in a container on a third node, pinging every 100 ms.
    let ping = format!("i=0; while true; do echo ping-$i; i=$((i+1)); sleep 0.1; done | nc {} 9000", server.ip);
    cluster.ok(&["run", "--name", "pinger", "--node", "n3", "busybox", "--", "sh", "-c", &ping]);
    cluster.wait_log("pinger", "ping-5", T);

    for (to, mode) in [("n2", "postcopy"), ("n1", "cold")] {
        let before = cluster.ok(&["logs", "pinger"]).lines().count();
        migrate(&cluster, "echo", to, mode);
        assert_eq!(cluster.container("echo").node, to);
        // The host's connection is the same one, and still works.
        assert_eq!(client.echo(&format!("after-{mode}")), format!("after-{mode}"));
        // The pinger's connection was never reset: its echoes keep coming, in order.
        wait_for("the pinger's echoes to continue", T, || {
            (cluster.ok(&["logs", "pinger"]).lines().count() > before + 10).then_some(())
        });
        let log = cluster.ok(&["logs", "pinger"]);
        for (i, line) in log.lines().enumerate() {
            assert_eq!(line, format!("ping-{i}"), "the pinger's stream broke");
        }
        assert_eq!(cluster.container("pinger").state.as_str(), "running");
    }
}

#[test]
fn bad_migrations_are_refused_and_the_container_keeps_running() {
    let cluster = Cluster::up_with(13, 2, &["--node-memory", "1g"]);
    cluster.import_busybox_with_memhog();
    cluster.ok(&["run", "--name", "big1", "--node", "n1", "--memory", "700m", "busybox", "--", "sleep", "3600"]);
    cluster.ok(&["run", "--name", "big2", "--node", "n2", "--memory", "700m", "busybox", "--", "sleep", "3600"]);
    cluster.ok(&["run", "--name", "done", "--node", "n1", "busybox", "--", "true"]);
    cluster.ok(&["run", "--name", "slow", "--node", "n1", "--memory", "128m", "busybox", "--", "memhog", "32"]);
    cluster.wait_log("slow", "filled", T);
    cluster.wait_state("done", "exited", T);
    let cases: &[(&[&str], &str)] = &[
        (&["migrate", "big1", "--to", "n1"], "already runs on n1"),
        (&["migrate", "big1", "--to", "n9"], "no such node: n9"),
        (&["migrate", "big1", "--to", "n2"], "not enough memory"),
        (&["migrate", "big1"], "no other node can take big1"),
        (&["migrate", "done", "--to", "n2"], "only a running container can migrate"),
        (&["migrate", "ghost", "--to", "n2"], "no such container: ghost"),
        (&["migrate", "slow", "--mode", "fast"], "invalid migration mode"),
    ];
    for (args, want) in cases {
        let err = cluster.fails(args);
        assert!(err.contains(want), "herd {}: expected {want:?} in {err}", args.join(" "));
    }
    // Two migrations of one container at once: the second is refused.
    let first = {
        let mut cmd =
            cluster.command(&["migrate", "slow", "--to", "n2", "--mode", "cold", "--bandwidth", "8m", "--json"]);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    wait_for("the first migration to start", T, || {
        cluster.ok(&["events"]).contains("migration start slow").then_some(())
    });
    let err = cluster.fails(&["migrate", "slow", "--to", "n2"]);
    assert!(err.contains("container slow is migrating to n2"), "{err}");
    // The migration's own work runs in the node's migration cgroup, under its CPU cap.
    let budget = ["/sys/fs/cgroup/cpu/herd/t13/n1/migration", "/sys/fs/cgroup/cpu,cpuacct/herd/t13/n1/migration"]
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.join("cpu.cfs_quota_us").exists())
        .expect("the node's migration cgroup (cgroup v1 cpu controller, as on this platform)");
    let quota = std::fs::read_to_string(budget.join("cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "100000", "one CPU by default");
    wait_for("the migration's helpers in the migration cgroup", T, || {
        let procs = std::fs::read_to_string(budget.join("cgroup.procs")).unwrap_or_default();
        (!procs.trim().is_empty()).then_some(())
    });
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: MigrationReport = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.memory_bytes >= 32 << 20);
    // With 8 MiB/s for 32 MiB of memory, the bandwidth budget was respected.
    assert!(report.total_ms >= 3000, "32 MiB moved in {} ms despite an 8 MiB/s budget", report.total_ms);
    // Everything refused is still running where it was.
    let all: Vec<ContainerInfo> = cluster.json(&["ps"]);
    let placed: Vec<(String, String)> = all.iter().map(|c| (c.name.clone(), c.node.clone())).collect();
    for (name, node) in [("big1", "n1"), ("big2", "n2"), ("slow", "n2")] {
        assert!(placed.contains(&(name.to_string(), node.to_string())), "{name} should run on {node}: {placed:?}");
    }
}
