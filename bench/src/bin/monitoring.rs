//! Monitoring overhead: N idle containers (busybox `sleep`) on one node sampled every second;
//! the node agent's CPU time and peak RSS over the measuring window, and the delay from a
//! sample being taken to it being visible through the API. Beside it, in the same run, the
//! same figures collected the way a user would without Herd: `runc events --stats` for every
//! container every second.
//!
//! Run as root: `cargo build --release --bin herd --bin monitoring && target/release/monitoring`.
//! `CONTAINERS=200` and `SECONDS=30` shorten it (defaults: 1,000 containers, 60 s).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_bench::{BenchCluster, require};
use herd_proto::api::{ContainerInfo, ContainerStats};

const INDEX: u8 = 3;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time (user + system) of process `pid`, from /proc.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("odd /proc stat")?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).context("odd status line")?.parse()?)
}

/// CPU time used by this process's waited-for children so far.
fn children_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() -> anyhow::Result<()> {
    require("/bin/busybox", "apt-get install busybox-static (scripts/setup.sh)")?;
    let count = env_or("CONTAINERS", 1000) as usize;
    let window = Duration::from_secs(env_or("SECONDS", 60));
    println!("monitoring: {count} idle containers on one node, sampled every second, measured for {window:?}");

    let cluster = BenchCluster::up(INDEX, 1)?;
    cluster.import_busybox()?;
    let started = Instant::now();
    for i in 0..count {
        cluster.ok(&["run", "--name", &format!("idle{i:04}"), "busybox", "--", "sleep", "86400"])?;
    }
    println!("started {count} containers in {:.0?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats: Vec<ContainerStats> = serde_json::from_str(&cluster.ok(&["stats", "--no-stream", "--json"])?)?;
        if stats.len() == count && stats.iter().all(|s| s.time.is_some()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {} of {count} containers have samples", stats.iter().filter(|s| s.time.is_some()).count());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let state = herd_up::UpState::load(&std::path::PathBuf::from("/run/herd").join(&cluster.name))?
        .context("the cluster's state")?;
    let agent = state.node_pids.first().and_then(|(_, p)| *p).context("the agent's pid")?;

    // Herd: the agent's CPU over the window, and the delay from sample to API.
    let cpu0 = cpu_time(agent)?;
    let t0 = Instant::now();
    let mut delays = Vec::new();
    let mut last_seen = 0;
    while t0.elapsed() < window {
        let stats: Vec<ContainerStats> = serde_json::from_str(&cluster.ok(&["stats", "--no-stream", "--json"])?)?;
        let now = herd_proto::now_millis();
        let newest = stats.iter().filter_map(|s| s.time).max().unwrap_or(0);
        if newest > last_seen {
            if last_seen > 0 {
                delays.push(now.saturating_sub(newest));
            }
            last_seen = newest;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let herd_cpu = cpu_time(agent)? - cpu0;
    let herd_window = t0.elapsed();
    let rss_peak = status_kib(agent, "VmHWM")?;
    let rss_now = status_kib(agent, "VmRSS")?;

    // Baseline: runc events --stats for every container, every second, four at a time.
    let ps: Vec<ContainerInfo> = serde_json::from_str(&cluster.ok(&["ps", "--json"])?)?;
    let ids: Vec<String> = ps.iter().map(|c| c.id.clone()).collect();
    let root = state.layout.nodes[0].run_dir.join("runc");
    let base0 = children_cpu();
    let t1 = Instant::now();
    let mut rounds = 0;
    let mut late_rounds = 0;
    while t1.elapsed() < window {
        let round = Instant::now();
        for chunk in ids.chunks(ids.len().div_ceil(4)) {
            let mut children = Vec::new();
            for id in chunk {
                children.push(
                    Command::new("runc")
                        .arg("--root")
                        .arg(&root)
                        .args(["events", "--stats", id])
                        .stdout(std::process::Stdio::null())
                        .spawn()?,
                );
                if children.len() >= 4 {
                    for mut c in children.drain(..) {
                        c.wait()?;
                    }
                }
            }
            for mut c in children {
                c.wait()?;
            }
        }
        rounds += 1;
        match Duration::from_secs(1).checked_sub(round.elapsed()) {
            Some(rest) => std::thread::sleep(rest),
            None => late_rounds += 1,
        }
    }
    let base_cpu = children_cpu() - base0;
    let base_window = t1.elapsed();
    drop(cluster);

    let pct = |cpu: Duration, wall: Duration| cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    let herd_pct = pct(herd_cpu, herd_window);
    let base_pct = pct(base_cpu, base_window);
    delays.sort();
    let median_delay = delays.get(delays.len() / 2).copied().unwrap_or(0);
    let max_delay = delays.last().copied().unwrap_or(0);
    println!("\n{:<44} {:>14} {:>14}", "", "herd agent", "runc events");
    println!("{:<44} {:>13.2}% {:>13.2}%", "CPU, percent of one core", herd_pct, base_pct);
    println!(
        "{:<44} {:>11} MiB {:>14}",
        "peak RSS (VmHWM; now)",
        format!("{} ({})", rss_peak / 1024, rss_now / 1024),
        "-"
    );
    println!(
        "{:<44} {:>11} ms {:>14}",
        "sample to API delay, median (max)",
        format!("{median_delay} ({max_delay})"),
        "-"
    );
    println!("runc events: {rounds} rounds of {count} containers, {late_rounds} of them longer than the 1 s interval");
    println!("\ngoals (issue 4), at {count} containers:");
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    println!("  agent CPU < 2% of one core: {herd_pct:.2}%: {}", verdict(herd_pct < 2.0));
    println!("  agent RSS < 64 MiB: {} MiB peak: {}", rss_peak / 1024, verdict(rss_peak < 64 * 1024));
    // Per container sample, since runc events may not keep up with one round a second.
    let herd_per = herd_cpu.as_secs_f64() / (herd_window.as_secs_f64() * count as f64);
    let base_per = base_cpu.as_secs_f64() / (rounds.max(1) * count) as f64;
    println!("  CPU per container sample: herd {:.1} us, runc events {:.1} us", herd_per * 1e6, base_per * 1e6);
    let ratio = base_per / herd_per.max(1e-12);
    println!("  >= 20x less CPU than runc events (per sample): {ratio:.1}x: {}", verdict(ratio >= 20.0));
    println!("  sample to API < 1.5 s: {max_delay} ms at most: {}", verdict(max_delay < 1500));
    Ok(())
}
