//! Scale: placement throughput and API latency with 100,000 containers on 1,000 simulated
//! nodes, and 2,000 real busybox containers on 4 local nodes, beside the published reference
//! points of kube-scheduler, Nomad and Docker Swarm.
//!
//! Run as root: `cargo build --release --bin herd --bin scale && target/release/scale
//! [sched] [api] [real]` (all three without arguments). Sizes: `SCALE_NODES` (1000),
//! `SCALE_CONTAINERS` (100000), `SCALE_REAL` (2000); rounds of the scheduler part:
//! `SCALE_SCHED_ROUNDS` (5); requests in flight: `SCALE_CONCURRENCY`
//! (64, simulated nodes) and `SCALE_REAL_CONCURRENCY` (4, real containers).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use herd_bench::{BenchCluster, Stats, ms, time};
use herd_cli::Client;
use herd_proto::api::{ContainerInfo, RunRequest};
use herd_proto::state::{Limits, Resources};
use herd_sched::{Candidate, Hosted, Request, Strategy, place};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let all = wanted.is_empty();
    let nodes = env_or("SCALE_NODES", 1000);
    let containers = env_or("SCALE_CONTAINERS", 100_000);
    let real = env_or("SCALE_REAL", 2000);
    let concurrency = env_or("SCALE_CONCURRENCY", 64);
    println!("scale: reference points: kube-scheduler's scalability bar 90 pods/s; Nomad's million-container");
    println!("test about 3,750 placements/s on large servers; Swarm classic 30,000 containers on 1,000 nodes");
    println!("with 230 ms median delay. This machine: {} CPUs.", std::thread::available_parallelism()?);
    if all || wanted.iter().any(|w| w == "sched") {
        scheduler(nodes, containers, env_or("SCALE_SCHED_ROUNDS", 5));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if all || wanted.iter().any(|w| w == "api") {
        runtime.block_on(simulated(nodes, containers, concurrency))?;
    }
    if all || wanted.iter().any(|w| w == "real") {
        runtime.block_on(real_containers(real, env_or("SCALE_REAL_CONCURRENCY", 4)))?;
    }
    Ok(())
}

/// The scheduler alone: `containers` placements onto `nodes` nodes, each placement updating
/// the chosen node as the Control node does. Each case runs `rounds` times from empty nodes
/// and the median rate is reported with the slowest and fastest round: on a shared 2-core VM
/// one round of the same binary varied from 16,500 to 25,300 placements/s.
fn scheduler(nodes: usize, containers: usize, rounds: usize) {
    println!(
        "\n## scheduler: {containers} placements on {nodes} nodes (herd_sched::place, one thread), {rounds} rounds"
    );
    println!(
        "{:<34} {:>14} {:>14} {:>22}",
        "strategy / request", "placements/s", "per placement", "rounds: slowest-fastest"
    );
    let cases: [(&str, Strategy, Vec<String>); 4] = [
        ("spread", Strategy::Spread, vec![]),
        ("binpack", Strategy::Binpack, vec![]),
        ("random", Strategy::Random { seed: 7 }, vec![]),
        ("spread + constraint zone==a", Strategy::Spread, vec!["node.labels.zone==a".to_string()]),
    ];
    for (what, strategy, constraints) in cases {
        let req = Request { cpus_milli: 100, memory_bytes: 64 << 20, ..Default::default() }
            .with_expressions(&constraints, &[])
            .expect("valid expressions");
        let took: Vec<Duration> = (0..rounds.max(1)).map(|_| place_all(nodes, containers, &req, strategy)).collect();
        let stats = Stats::of(&took);
        let per_sec = |d: Duration| containers as f64 / d.as_secs_f64();
        println!(
            "{:<34} {:>14.0} {:>11.1} µs {:>22}",
            what,
            per_sec(stats.median),
            stats.median.as_secs_f64() * 1e6 / containers as f64,
            format!("{:.0}-{:.0}", per_sec(stats.max), per_sec(*took.iter().min().expect("a round")))
        );
    }
    println!("goal: at least 20,000 placements/s");
}

/// One round: `containers` placements of `req` onto `nodes` empty nodes; the time they took.
fn place_all(nodes: usize, containers: usize, req: &Request, strategy: Strategy) -> Duration {
    let mut cands: Vec<Candidate> = (0..nodes)
        .map(|i| {
            let mut c =
                Candidate::new(&format!("sim-{:04}", i + 1), Resources { cpus_milli: 64_000, memory_bytes: 256 << 30 });
            c.labels = BTreeMap::from([("zone".to_string(), ["a", "b", "c"][i % 3].to_string())]);
            c
        })
        .collect();
    let index: std::collections::HashMap<String, usize> =
        cands.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
    let start = Instant::now();
    for i in 0..containers {
        let strategy = match strategy {
            Strategy::Random { seed } => Strategy::Random { seed: seed.wrapping_add(i as u64) },
            s => s,
        };
        let node = place(&cands, req, strategy).expect("room for every container");
        let c = &mut cands[index[&node]];
        c.allocated.cpus_milli += req.cpus_milli;
        c.allocated.memory_bytes += req.memory_bytes;
        c.containers += 1;
        c.hosted.push(Hosted { name: format!("c{i}"), image: "busybox:latest".to_string() });
    }
    start.elapsed()
}

/// Creates `count` containers named `{prefix}{i}` through the API with `concurrency`
/// requests in flight; returns each request's latency, in the order of `i`, and the wall time.
async fn create_many(
    client: &Client,
    prefix: &str,
    count: usize,
    concurrency: usize,
    memory: u64,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let start = Instant::now();
    let mut results: Vec<(usize, anyhow::Result<Duration>)> = futures::stream::iter(0..count)
        .map(|i| {
            let req = RunRequest {
                name: Some(format!("{prefix}{i:06}")),
                image: "busybox".to_string(),
                command: vec!["sleep".into(), "86400".into()],
                limits: Limits { memory_bytes: Some(memory), ..Default::default() },
                ..Default::default()
            };
            async move {
                let t = Instant::now();
                let created: anyhow::Result<ContainerInfo> = client.post("/v1/containers", &req).await;
                (i, created.map(|_| t.elapsed()))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = start.elapsed();
    results.sort_by_key(|(i, _)| *i);
    let latencies = results.into_iter().map(|(_, r)| r).collect::<anyhow::Result<Vec<_>>>()?;
    Ok((latencies, wall))
}

/// Memory of a process: (current RSS, peak RSS) in bytes.
fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
}

/// `count` containers done in `wall`, as a rate.
fn print_rate(what: &str, count: usize, wall: Duration) {
    let secs = wall.as_secs_f64();
    println!("{what:<40} {:>10.1} containers/s ({count} in {secs:.1} s)", count as f64 / secs);
}

fn print_latencies(what: &str, samples: &[Duration]) {
    let s = Stats::of(samples);
    println!("{what:<40} median {:>10}  p90 {:>10}  max {:>10}", ms(s.median), ms(s.p90), ms(s.max));
}

/// Times `herd ps` (the CLI, table output) `runs` times; fails unless it lists `expected` rows.
fn time_ps(cluster: &BenchCluster, expected: usize, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::new();
    for _ in 0..runs {
        let (d, listing) = time(|| cluster.ok(&["ps"]));
        let rows = listing?.lines().count().saturating_sub(1);
        if rows != expected {
            bail!("herd ps listed {rows} containers, expected {expected}");
        }
        out.push(d);
    }
    Ok(out)
}

/// 100,000 containers on 1,000 simulated nodes, through the API.
async fn simulated(nodes: usize, containers: usize, concurrency: usize) -> anyhow::Result<()> {
    println!(
        "\n## API: {containers} containers on {nodes} simulated nodes (herd up --sim-nodes), {concurrency} requests in flight"
    );
    let sim_nodes = nodes.to_string();
    let cluster =
        BenchCluster::up_with(6, 0, Some("10.64.0.0/12"), &["--sim-nodes", &sim_nodes, "--node-timeout", "30"])?;
    cluster.import_busybox()?;
    let client = cluster.client()?;
    let control = cluster.state()?.control_pid.context("the Control node's pid")?;
    let (rss_before, _) = rss(control)?;

    let (latencies, wall) = create_many(&client, "s", containers, concurrency, 64 << 20).await?;
    print_rate("accepted through the API", containers, wall);
    print_latencies("POST /v1/containers latency", &latencies);

    let mut inspect = Vec::new();
    for i in (0..containers).step_by((containers / 200).max(1)) {
        let t = Instant::now();
        let _: ContainerInfo = client.get(&format!("/v1/containers/s{i:06}")).await?;
        inspect.push(t.elapsed());
    }
    print_latencies(&format!("GET /v1/containers/NAME at {containers}"), &inspect);
    let mut api_list = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let all: Vec<ContainerInfo> = client.get("/v1/containers").await?;
        api_list.push(t.elapsed());
        if all.len() != containers {
            bail!("GET /v1/containers listed {}, expected {containers}", all.len());
        }
    }
    print_latencies(&format!("GET /v1/containers with {containers}"), &api_list);
    let list = tokio::task::block_in_place(|| time_ps(&cluster, containers, 5))?;
    print_latencies(&format!("herd ps with {containers}"), &list);
    let (rss_now, peak) = rss(control)?;
    println!(
        "{:<40} {} now, {} peak ({} before the containers)",
        "Control node memory (RSS)",
        mib(rss_now),
        mib(peak),
        mib(rss_before)
    );
    println!("goals: 2,000 containers/s accepted; herd ps under 1 s; Control node under 1 GiB");
    Ok(())
}

/// 2,000 real busybox containers on 4 local nodes: started, listed and removed.
async fn real_containers(count: usize, concurrency: usize) -> anyhow::Result<()> {
    println!("\n## real containers: {count} busybox containers on 4 local nodes, {concurrency} requests in flight");
    let cluster = BenchCluster::up_with(7, 4, Some("10.80.0.0/14"), &[])?;
    cluster.import_busybox()?;
    let client = cluster.client()?;
    let (latencies, wall) = create_many(&client, "r", count, concurrency, 16 << 20).await?;
    print_rate("started", count, wall);
    print_latencies("API to running (POST /v1/containers)", &latencies);
    // Whether a start gets slower as the nodes fill up.
    let quarter = (count / 4).max(1);
    for (q, part) in latencies.chunks(quarter).enumerate() {
        let from = q * quarter;
        print_latencies(&format!("  containers {from}-{}", from + part.len() - 1), part);
    }
    let list = tokio::task::block_in_place(|| time_ps(&cluster, count, 5))?;
    print_latencies(&format!("herd ps with {count}"), &list);
    let start = Instant::now();
    let removed: Vec<anyhow::Result<()>> = futures::stream::iter(0..count)
        .map(|i| {
            let client = &client;
            async move { client.delete(&format!("/v1/containers/r{i:06}?force=true")).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    removed.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let took = start.elapsed();
    print_rate("removed (forced)", count, took);
    println!("goal: median API to running under 300 ms");
    Ok(())
}
