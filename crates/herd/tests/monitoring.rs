//! Monitoring end to end: the node samplers' figures of a CPU-burning and a memory-holding
//! container show in `herd stats` and in Prometheus's `/metrics`, and a container's series
//! goes on across a migration, with the migration marked on it.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Cluster, wait_for};
use herd_proto::api::ContainerStats;

const T: Duration = Duration::from_secs(60);

/// `GET path` on the cluster's API with its token; returns the status code and body.
fn api_get(cluster: &Cluster, path: &str, with_token: bool) -> (u16, String) {
    let cfg = herd_cli::CliConfig::load(&cluster.config).unwrap();
    let (mut s, addr) = common::api_connect(&cfg);
    let auth = if with_token { format!("Authorization: Bearer {}\r\n", cfg.token) } else { String::new() };
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// A child process killed when dropped, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stats(cluster: &Cluster, name: &str) -> ContainerStats {
    let all: Vec<ContainerStats> = cluster.json(&["stats", "--no-stream", name]);
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

/// The value of the first `/metrics` line of `metric` for container `name`.
fn metric(text: &str, metric: &str, name: &str) -> Option<f64> {
    let label = format!("container=\"{name}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
}

#[test]
fn stats_and_metrics_show_busy_containers_and_series_follow_a_migration() {
    let cluster = Cluster::up(20, 2);
    cluster.import_busybox_with_memhog();
    // herd events --follow prints what happens from now on, one JSON object per line.
    let mut follow = cluster.command(&["events", "--follow", "--json", "-n", "0"]);
    follow.stdout(std::process::Stdio::piped());
    let mut follow = KillOnDrop(follow.spawn().unwrap());
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = follow.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    cluster.run_cpu_burner("burn", "n1", "0.5");
    cluster.ok(&["run", "--name", "hog", "--node", "n2", "--memory", "128m", "busybox", "--", "memhog", "64"]);
    cluster.wait_log("hog", "filled", T);
    let started = wait_for("the start of burn in herd events --follow", T, || {
        let line = lines.recv_timeout(Duration::from_millis(100)).ok()?;
        let e: herd_proto::api::Event = serde_json::from_str(&line).unwrap();
        assert_ne!(e.kind, "image", "--follow -n 0 printed an event from before it started: {e:?}");
        (e.name == "burn" && e.action == "start").then_some(e)
    });
    assert_eq!(started.node.as_deref(), Some("n1"));
    drop(follow);

    // herd stats: the burner uses its half CPU, the hog its 64 MiB.
    let burn = wait_for("the burner's CPU figure", T, || {
        let s = stats(&cluster, "burn");
        s.cpu_cores.is_some_and(|c| c > 0.3).then_some(s)
    });
    assert!(burn.cpu_cores.unwrap() < 0.65, "a 0.5 CPU limit, yet {burn:?}");
    assert!(burn.cpu_percent_of_limit.unwrap() > 60.0, "{burn:?}");
    assert!(burn.cpu_throttled_percent.unwrap() > 0.0, "{burn:?}");
    assert_eq!((burn.node.as_str(), burn.pids), ("n1", Some(1)));
    let hog = wait_for("the hog's memory figure", T, || {
        let s = stats(&cluster, "hog");
        s.memory_bytes.is_some_and(|m| m >= 64 << 20).then_some(s)
    });
    assert_eq!(hog.memory_limit_bytes, Some(128 << 20));
    assert!(hog.memory_rss_bytes.unwrap() >= 64 << 20, "{hog:?}");
    let table = cluster.ok(&["stats", "--no-stream"]);
    assert!(table.contains("burn") && table.contains("hog") && table.contains("MEM USAGE / LIMIT"), "{table}");
    let err = cluster.fails(&["stats", "--no-stream", "ghost"]);
    assert!(err.contains("no such container: ghost"), "{err}");

    // Prometheus: the same figures, with counters that grow; nothing without the token.
    let (code, text) = api_get(&cluster, "/metrics", true);
    assert_eq!(code, 200);
    assert!(text.contains("# TYPE herd_container_cpu_usage_seconds_total counter"), "{text}");
    let cpu_before = metric(&text, "herd_container_cpu_usage_seconds_total", "burn").expect("burn's CPU counter");
    assert!(metric(&text, "herd_container_memory_usage_bytes", "hog").unwrap() >= (64 << 20) as f64);
    wait_for("burn's CPU counter to grow", T, || {
        let (_, text) = api_get(&cluster, "/metrics", true);
        (metric(&text, "herd_container_cpu_usage_seconds_total", "burn")? > cpu_before + 0.5).then_some(())
    });
    assert_eq!(api_get(&cluster, "/metrics", false).0, 401);

    // A migration: the burner's series goes on from the other node, with the move marked.
    let t0 = herd_proto::now_millis();
    cluster.ok(&["migrate", "burn", "--to", "n2"]);
    wait_for("samples of burn from n2", T, || {
        let s = stats(&cluster, "burn");
        (s.node == "n2" && s.time.is_some_and(|t| t > t0 + 1500) && s.cpu_cores.is_some_and(|c| c > 0.3)).then_some(())
    });
    let (code, body) = api_get(&cluster, "/v1/containers/burn/series", true);
    assert_eq!(code, 200, "{body}");
    let series: herd_metrics::history::QueryResult = serde_json::from_str(&body).unwrap();
    let nodes: Vec<&str> = series.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(nodes, ["n1", "n2"], "one series across both nodes: {:?}", series.nodes);
    assert!(
        series.events.iter().any(|e| e.kind == "migration" && e.text.contains("from n1 to n2")),
        "{:?}",
        series.events
    );
    let cpu = series.column("cpu_cores").expect("a cpu_cores column");
    let busy = |range: &mut dyn Iterator<Item = &(u64, Option<f32>)>| {
        range.filter(|(_, v)| v.is_some_and(|v| v > 0.3)).count()
    };
    assert!(busy(&mut cpu.iter().filter(|(t, _)| *t < t0)) >= 2, "busy before the move: {cpu:?}");
    assert!(busy(&mut cpu.iter().filter(|(t, _)| *t > t0)) >= 1, "busy after the move: {cpu:?}");
    // Bad ranges are explained.
    let (code, body) = api_get(&cluster, "/v1/containers/burn/series?from=20&to=10", true);
    assert_eq!(code, 400, "{body}");
}

/// Container `name`'s series from `from` to now.
fn series_since(cluster: &Cluster, name: &str, from: u64) -> herd_metrics::history::QueryResult {
    let (code, body) = api_get(cluster, &format!("/v1/containers/{name}/series?from={from}"), true);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_silent_node_leaves_a_marked_gap_and_samples_survive_a_broker_restart() {
    let cluster = Cluster::up(22, 1);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "idle", "busybox", "--", "sleep", "3600"]);
    let t0 = herd_proto::now_millis();
    wait_for("samples of idle", T, || series_since(&cluster, "idle", t0).last_ts_ms.filter(|t| *t > t0));
    let agent = cluster.agent_pid("n1").unwrap();

    // The node goes silent (its agent stopped): the series shows a gap up to now, no values.
    let stopped = cluster.stop_agent("n1");
    let silent_from = herd_proto::now_millis();
    let trailing = wait_for("a trailing gap in the series", T, || {
        let s = series_since(&cluster, "idle", t0);
        let gap = *s.gaps.last()?;
        (gap.to_ms > gap.from_ms + 3000 && s.points.iter().all(|p| p.ts_ms <= gap.from_ms)).then_some(gap)
    });
    assert!(trailing.from_ms <= silent_from, "{trailing:?} starts after the agent stopped at {silent_from}");
    // The silence ends when SIGCONT is sent: a sample can be taken before `resume` returns.
    let resumed = herd_proto::now_millis();
    stopped.resume();
    let s = wait_for("samples after the agent resumed", T, || {
        let s = series_since(&cluster, "idle", t0);
        s.last_ts_ms.is_some_and(|t| t > resumed).then_some(s)
    });
    let gap = s
        .gaps
        .iter()
        .find(|g| g.from_ms <= silent_from && g.to_ms >= resumed)
        .unwrap_or_else(|| panic!("no gap over the silence ({silent_from}..{resumed}): {:?}", s.gaps));
    assert!(
        s.points.iter().all(|p| p.ts_ms <= gap.from_ms || p.ts_ms >= gap.to_ms),
        "values inside the gap {gap:?}: {:?}",
        s.points
    );
    cluster.wait_state("idle", "running", T);

    // The broker dies and `herd up` restarts it: the sampler and the Control node carry on.
    let state = cluster.up_state();
    let (broker, control) = (state.broker_pid.unwrap(), state.control_pid.unwrap());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(broker as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let killed = herd_proto::now_millis();
    wait_for("a new broker", T, || cluster.up_state().broker_pid.filter(|p| *p != broker));
    wait_for("samples through the new broker", T, || {
        series_since(&cluster, "idle", t0).last_ts_ms.filter(|t| *t > killed + 1000)
    });
    let stats = stats(&cluster, "idle");
    assert!(stats.time.is_some_and(|t| t > killed) && stats.memory_bytes.is_some(), "{stats:?}");
    assert_eq!(cluster.agent_pid("n1"), Some(agent), "the agent was restarted");
    assert_eq!(cluster.up_state().control_pid, Some(control), "the Control node was restarted");
}
