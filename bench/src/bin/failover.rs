//! Control node failover (issue 18's goals), on local clusters:
//!
//! 1. Failover: `herd up --ha` (three Control replicas, three brokers, two nodes). The
//!    leader is killed with SIGKILL, `ROUNDS` times (default 5); each round times, from the
//!    kill, the first `herd ps` the new leader serves and the first `herd run` that succeeds.
//!    Baseline, side by side: a lone Control node (plain `herd up`) killed the same way, which
//!    its supervisor starts again.
//! 2. Cost: the same three replicas with 10,000 containers (`CONTAINERS`) on simulated nodes;
//!    each replica's CPU (over 20 s) and resident memory, leader against followers; then
//!    three failovers with that many containers to load.
//!
//! Run as root: `cargo build --release --bin herd --bin failover && target/release/failover`.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use herd_bench::{BenchCluster, Row, Stats, print_table};
use herd_proto::api::{ContainerInfo, RunRequest};
use herd_proto::control::{ControlStatus, Role};

/// Clusters of this benchmark: 30 (with 31 and 32: three replicas take three API ports, three
/// brokers three broker ports), 34 for the baseline, 36 (with 37, 38) for the cost.
const HA: u8 = 30;
const ALONE: u8 = 34;
const COST: u8 = 36;

fn signal(pid: u32, sig: i32) -> anyhow::Result<()> {
    // SAFETY: a plain kill(2).
    if unsafe { libc::kill(pid as i32, sig) } != 0 {
        anyhow::bail!("signal {sig} to {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn pid_of(cluster: &BenchCluster, name: &str) -> anyhow::Result<Option<u32>> {
    let state = cluster.state()?;
    Ok(state.control_pids.iter().find(|(n, _)| n == name).and_then(|(_, p)| *p))
}

/// The leading replica's name and pid once one leads and all three report.
fn leader(cluster: &BenchCluster) -> anyhow::Result<(String, u32)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(out) = cluster.ok(&["control", "status", "--json"]) {
            let s: ControlStatus = serde_json::from_str(&out)?;
            let fresh = s.replicas.iter().filter(|r| herd_proto::now_millis().saturating_sub(r.at) < 3000).count();
            if let Some(l) = s.lease.filter(|l| !l.released)
                && fresh == 3
                && s.replicas.iter().any(|r| r.name == l.replica && r.role == Role::Leader)
                && let Some(pid) = pid_of(cluster, &l.replica)?
            {
                return Ok((l.replica, pid));
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no replica led within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `herd ARGS` until it succeeds; the time from `since`.
fn until_ok(cluster: &BenchCluster, args: &[&str], since: Instant) -> anyhow::Result<Duration> {
    loop {
        if cluster.run(args)?.status.success() {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(since.elapsed() < Duration::from_secs(60), "herd {} failed for 60 s", args.join(" "));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the Control node (the leader, with replicas) `rounds` times; the times to the first
/// `herd ps` served and the first `herd run` that succeeded.
fn failovers(cluster: &BenchCluster, rounds: usize, replicas: bool) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut ps, mut run) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (name, pid) = if replicas {
            leader(cluster)?
        } else {
            ("control".to_string(), cluster.state()?.control_pid.context("the Control node's pid")?)
        };
        signal(pid, libc::SIGKILL)?;
        let killed = Instant::now();
        let served = until_ok(cluster, &["ps"], killed)?;
        let ran = until_ok(
            cluster,
            &["run", "--name", &format!("r{round}-{}", u8::from(replicas)), "busybox", "--", "sleep", "3600"],
            killed,
        )?;
        println!("  round {round}: {name} killed; herd ps served after {served:.2?}, herd run after {ran:.2?}");
        ps.push(served);
        run.push(ran);
        // The supervisor starts the killed one again: wait for it before the next round.
        let deadline = Instant::now() + Duration::from_secs(60);
        while pid_of(cluster, &name)?.is_none_or(|p| p == pid)
            || (!replicas && cluster.run(&["ps"])?.status.code() != Some(0))
        {
            anyhow::ensure!(Instant::now() < deadline, "{name} was not started again");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok((ps, run))
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("/proc/PID/stat")?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(kb * 1024)
}

async fn cost(containers: usize) -> anyhow::Result<()> {
    println!("\n## Cost of the replicas: {containers} containers on 100 simulated nodes");
    let cluster =
        BenchCluster::up_with(COST, 0, Some("10.64.0.0/12"), &["--ha", "--sim-nodes", "100", "--node-timeout", "30"])?;
    cluster.import_busybox()?;
    let client = cluster.client()?;
    let started = Instant::now();
    let results: Vec<anyhow::Result<ContainerInfo>> = futures::stream::iter(0..containers)
        .map(|i| {
            let req = RunRequest {
                name: Some(format!("s{i:06}")),
                image: "busybox".to_string(),
                command: vec!["sleep".into(), "86400".into()],
                ..Default::default()
            };
            let client = &client;
            async move { client.post("/v1/containers", &req).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    println!("  created in {:.1?} ({failed} failed)", started.elapsed());
    let (leader_name, _) = leader(&cluster)?;
    let pids: Vec<(String, u32)> =
        cluster.state()?.control_pids.iter().filter_map(|(n, p)| Some((n.clone(), (*p)?))).collect();
    let before: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect::<anyhow::Result<_>>()?;
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    let leader_rss = pids.iter().find(|(n, _)| *n == leader_name).map(|(_, p)| rss_bytes(*p)).transpose()?.unwrap_or(0);
    println!("  {:<10} {:<9} {:>10} {:>12} {:>14}", "replica", "role", "CPU", "memory", "vs leader's");
    for ((name, pid), before) in pids.iter().zip(before) {
        let cpu = (cpu_seconds(*pid)? - before) / window.as_secs_f64() * 100.0;
        let rss = rss_bytes(*pid)?;
        let role = if *name == leader_name { "leader" } else { "follower" };
        println!(
            "  {name:<10} {role:<9} {cpu:>9.1}% {:>8} MiB {:>13.2}x",
            rss >> 20,
            rss as f64 / leader_rss.max(1) as f64
        );
    }
    println!("  goal: each follower under 5 % of a core and under 2x the leader's memory");
    println!("failover with {containers} containers (the new leader loads them all):");
    failovers(&cluster, 3, true)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let containers: usize = std::env::var("CONTAINERS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);

    println!("## Failover: the Control node killed with SIGKILL, {rounds} rounds");
    let (ha_ps, ha_run) = {
        println!("three replicas (herd up --ha):");
        let cluster = BenchCluster::up_with(HA, 2, None, &["--ha"])?;
        cluster.import_busybox()?;
        failovers(&cluster, rounds, true)?
    };
    let (alone_ps, alone_run) = {
        println!("baseline: one Control node, started again by its supervisor (herd up):");
        let cluster = BenchCluster::up(ALONE, 2)?;
        cluster.import_busybox()?;
        failovers(&cluster, rounds, false)?
    };
    print_table(
        "From the kill to the first request served",
        "one node",
        &[
            Row { what: "herd ps served".into(), herd: Stats::of(&ha_ps), baseline: Stats::of(&alone_ps) },
            Row { what: "herd run succeeded".into(), herd: Stats::of(&ha_run), baseline: Stats::of(&alone_run) },
        ],
    );
    println!("goal: the first request served by the new leader within 2 s of the leader's death");

    if containers > 0 {
        cost(containers).await?;
    }
    Ok(())
}
