//! Live migration: containers holding 0 MiB, 256 MiB and 1 GiB of touched memory migrate
//! between two nodes of a local cluster in each mode, beside Podman's checkpoint --export /
//! restore --import of the same container on the same machine, and beside a plain TCP copy of
//! the same bytes over the same link, and beside writing the same amount of fresh memory (what
//! a destination must do at least once). Prints downtime, total time and bytes moved, the ratios,
//! and how far each figure is from issue 3's goals.
//!
//! Run as root: `cargo build --release --bin herd --bin migration && target/release/migration`.
//! `SIZES=0,256` and `RUNS=1` shorten it; `PODMAN=0` leaves the baseline out.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_bench::memhog::{herd_migration_dirtying, memhog_rootfs, wait_until};
use herd_bench::{BenchCluster, Stats, require};
use herd_proto::migration::MigrationReport;

const INDEX: u8 = 2;
const MODES: [&str; 3] = ["cold", "postcopy", "precopy"];
/// What the pre-copy container rewrites every second, MiB (issue 20's goal is for 10 MiB/s).
const PRECOPY_DIRTY: u64 = 10;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // Helper modes for the link baseline, run inside the nodes' network namespaces.
    match args.get(1).map(String::as_str) {
        Some("--sink") => return sink(args[2].parse()?),
        Some("--source") => return source(&args[2], args[3].parse()?),
        _ => {}
    }
    require("/bin/busybox", "apt-get install busybox-static (scripts/setup.sh)")?;
    let sizes: Vec<u64> = env_list("SIZES", &[0, 256, 1024]);
    let runs: usize = std::env::var("RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let podman = std::env::var("PODMAN").map(|v| v != "0").unwrap_or(true);
    println!("migration: {sizes:?} MiB of touched memory, {runs} runs each (medians), 2 nodes on one machine");

    let cluster = BenchCluster::up(INDEX, 2)?;
    let scratch = tempfile::tempdir()?;
    let rootfs = scratch.path().join("memhog-rootfs");
    memhog_rootfs(&rootfs)?;
    cluster.ok(&["image", "import", "busybox", rootfs.to_str().unwrap()])?;

    let mut results = Vec::new();
    for &size in &sizes {
        for mode in MODES {
            let mut reports = Vec::new();
            let mut refused = None;
            for run in 0..runs {
                let dirty = if mode == "precopy" { PRECOPY_DIRTY } else { 0 };
                match herd_migration_dirtying(&cluster, size, dirty, mode, run)? {
                    Ok(r) => reports.push(r),
                    Err(why) => {
                        refused = Some(why);
                        break;
                    }
                }
            }
            results.push(HerdResult { size, mode, reports, refused });
        }
    }
    // The link baseline: the bytes of each cold migration, copied n1 -> n2 over TCP.
    let mut link = Vec::new();
    for r in results.iter().filter(|r| r.mode == "cold" && !r.reports.is_empty()) {
        let bytes = median_u64(r.reports.iter().map(|m| m.memory_bytes + m.fs_bytes));
        let times: Vec<Duration> = (0..runs).map(|_| link_copy(&cluster, bytes)).collect::<anyhow::Result<_>>()?;
        link.push((r.size, bytes, Stats::of(&times).median));
    }
    drop(cluster);
    // The memory baseline: a destination writes every byte of a container's memory into
    // memory it has never touched, which costs more than rewriting touched memory (and, in a
    // virtual machine, more again when the host has to back it first).
    let memory: Vec<(u64, Duration, Duration)> = sizes
        .iter()
        .filter(|&&s| s > 0)
        .map(|&size| {
            let (fresh, again): (Vec<_>, Vec<_>) = (0..runs).map(|_| write_fresh_memory(size << 20)).unzip();
            (size, Stats::of(&fresh).median, Stats::of(&again).median)
        })
        .collect();

    let mut baseline = Vec::new();
    if podman {
        match podman_baseline(&rootfs, &sizes, runs) {
            Ok(b) => baseline = b,
            Err(e) => println!("\nPodman baseline not run: {e:#}"),
        }
    }
    report(&results, &baseline, &link, &memory);
    Ok(())
}

struct HerdResult {
    size: u64,
    mode: &'static str,
    reports: Vec<MigrationReport>,
    refused: Option<String>,
}

impl HerdResult {
    fn downtime(&self) -> Duration {
        Stats::of(&self.reports.iter().map(|r| Duration::from_millis(r.downtime_ms)).collect::<Vec<_>>()).median
    }
    fn total(&self) -> Duration {
        Stats::of(&self.reports.iter().map(|r| Duration::from_millis(r.total_ms)).collect::<Vec<_>>()).median
    }
    fn bytes(&self) -> u64 {
        median_u64(self.reports.iter().map(|r| r.memory_bytes + r.fs_bytes))
    }
}

/// Writes `bytes` of freshly mapped memory, then writes it again: how long each took.
fn write_fresh_memory(bytes: u64) -> (Duration, Duration) {
    let mut v: Vec<u8> = Vec::with_capacity(bytes as usize);
    let started = Instant::now();
    v.resize(bytes as usize, 1);
    let fresh = started.elapsed();
    let started = Instant::now();
    v.fill(2);
    std::hint::black_box(&v);
    (fresh, started.elapsed())
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

// ---------------------------------------------------------------------------- the link

const LINK_PORT: u16 = 18999;

/// Copies `bytes` over TCP from node n1's namespace to node n2's; returns how long it took.
fn link_copy(cluster: &BenchCluster, bytes: u64) -> anyhow::Result<Duration> {
    let exe = std::env::current_exe()?;
    let netns = |node: &str| format!("herd-{}-{node}", cluster.name);
    let n2 = format!("10.98.{INDEX}.12:{LINK_PORT}");
    let mut sink = Command::new("ip")
        .args(["netns", "exec", &netns("n2")])
        .arg(&exe)
        .args(["--sink", &LINK_PORT.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    // The sink prints "ready" once it listens.
    let mut ready = [0u8; 6];
    sink.stdout.as_mut().unwrap().read_exact(&mut ready)?;
    let started = Instant::now();
    let status = Command::new("ip")
        .args(["netns", "exec", &netns("n1")])
        .arg(&exe)
        .args(["--source", &n2, &bytes.to_string()])
        .status()?;
    let out = sink.wait_with_output()?;
    let elapsed = started.elapsed();
    if !status.success() || !out.status.success() {
        bail!("the link copy failed");
    }
    Ok(elapsed)
}

fn sink(port: u16) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
    println!("ready");
    std::io::stdout().flush()?;
    let (mut s, _) = listener.accept()?;
    let mut buf = vec![0u8; 1 << 20];
    while s.read(&mut buf)? > 0 {}
    Ok(())
}

fn source(addr: &str, bytes: u64) -> anyhow::Result<()> {
    let mut s = std::net::TcpStream::connect(addr)?;
    let buf = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    // Wait for the sink to have read everything (it closes when done).
    let _ = s.read(&mut [0u8; 1])?;
    Ok(())
}

// ---------------------------------------------------------------------------- Podman

struct PodmanResult {
    size: u64,
    downtime: Duration,
    bytes: u64,
}

/// Podman 4's `container checkpoint --export` then `container restore --import` of the same
/// memhog container (setup notes in ../shared/PLATFORM.md): the container is stopped from the
/// start of the checkpoint until the restored one runs.
fn podman_baseline(rootfs: &Path, sizes: &[u64], runs: usize) -> anyhow::Result<Vec<PodmanResult>> {
    let version = podman(&["--version"]).context("podman is not installed (apt-get install podman)")?;
    println!("\nbaseline: {}", version.trim());
    let image = "localhost/herd-bench-memhog:latest";
    let tar = std::env::temp_dir().join("herd-bench-memhog-rootfs.tar");
    let status = Command::new("tar").arg("-C").arg(rootfs).arg("-cf").arg(&tar).arg(".").status()?;
    if !status.success() {
        bail!("packing the rootfs for podman");
    }
    podman(&["import", tar.to_str().unwrap(), image])?;
    let mut out = Vec::new();
    for &size in sizes {
        let mut times = Vec::new();
        let mut bytes = 0;
        for run in 0..runs {
            let name = format!("herd-bench-pm-{size}-{run}");
            let export: PathBuf = std::env::temp_dir().join(format!("{name}.tar"));
            let _ = podman(&["rm", "-f", &name, &format!("{name}-r")]);
            podman(&[
                "run",
                "-d",
                "--name",
                &name,
                "--runtime",
                "runc",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
                image,
                "/bin/memhog",
                &size.to_string(),
            ])?;
            wait_until(&format!("{name} to fill its memory"), Duration::from_secs(120), || {
                Ok(podman(&["logs", &name])?.contains("filled"))
            })?;
            let started = Instant::now();
            podman(&["container", "checkpoint", "--export", export.to_str().unwrap(), "--compress", "none", &name])?;
            podman(&["container", "restore", "--import", export.to_str().unwrap(), "--name", &format!("{name}-r")])?;
            times.push(started.elapsed());
            bytes = std::fs::metadata(&export).map(|m| m.len()).unwrap_or(0);
            let _ = podman(&["rm", "-f", &name, &format!("{name}-r")]);
            let _ = std::fs::remove_file(&export);
        }
        out.push(PodmanResult { size, downtime: Stats::of(&times).median, bytes });
    }
    let _ = podman(&["rmi", "-f", image]);
    let _ = std::fs::remove_file(&tar);
    Ok(out)
}

fn podman(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("podman").args(args).output()?;
    if !out.status.success() {
        bail!("podman {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

// ---------------------------------------------------------------------------- the report

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn report(
    results: &[HerdResult],
    podman: &[PodmanResult],
    link: &[(u64, u64, Duration)],
    memory: &[(u64, Duration, Duration)],
) {
    println!(
        "\n{:<9} {:<9} {:>10} {:>10} {:>11} {:>12} {:>16}",
        "memory", "mode", "downtime", "total", "moved", "podman down", "podman/herd down"
    );
    for r in results {
        let size = format!("{} MiB", r.size);
        if let Some(why) = &r.refused {
            println!("{size:<9} {:<9} refused here: {why}", r.mode);
            continue;
        }
        let base = podman.iter().find(|p| p.size == r.size);
        println!(
            "{size:<9} {:<9} {:>10} {:>10} {:>11} {:>12} {:>16}",
            r.mode,
            secs(r.downtime()),
            secs(r.total()),
            mib(r.bytes()),
            base.map_or("-".into(), |p| secs(p.downtime)),
            base.map_or("-".into(), |p| format!("{:.1}x", p.downtime.as_secs_f64() / r.downtime().as_secs_f64()))
        );
    }
    for p in podman {
        println!("podman {} MiB: downtime {} with {} exported", p.size, secs(p.downtime), mib(p.bytes));
    }
    for (size, bytes, t) in link {
        println!(
            "link: {} ({size} MiB container's cold migration) copied n1 -> n2 over TCP in {}",
            mib(*bytes),
            secs(*t)
        );
    }
    for (size, fresh, again) in memory {
        println!(
            "memory: {size} MiB written into fresh memory in {} (written again: {}), in this process",
            secs(*fresh),
            secs(*again)
        );
    }

    println!("\ngoals (issue 3):");
    let find =
        |size: u64, mode: &str| results.iter().find(|r| r.size == size && r.mode == mode && !r.reports.is_empty());
    let goal = |what: &str, value: Option<f64>, limit: f64, unit: &str, lower_is_better: bool| match value {
        None => println!("  {what}: not measured"),
        Some(v) => {
            let met = if lower_is_better { v < limit } else { v >= limit };
            let gap = if lower_is_better { v / limit } else { limit / v };
            println!(
                "  {what}: {v:.3}{unit} (goal {}{limit}{unit}): {}",
                if lower_is_better { "< " } else { ">= " },
                if met { "met".to_string() } else { format!("not met, {gap:.2}x the goal") }
            );
        }
    };
    let gib_post = find(1024, "postcopy");
    goal("1 GiB post-copy downtime", gib_post.map(|r| r.downtime().as_secs_f64()), 0.25, " s", true);
    let ratio = gib_post
        .zip(podman.iter().find(|p| p.size == 1024))
        .map(|(r, p)| p.downtime.as_secs_f64() / r.downtime().as_secs_f64());
    goal("1 GiB post-copy downtime, Podman / Herd", ratio, 30.0, "x", false);
    goal(
        "idle small container downtime (0 MiB, post-copy)",
        find(0, "postcopy").map(|r| r.downtime().as_secs_f64()),
        0.2,
        " s",
        true,
    );
    goal("1 GiB post-copy total", gib_post.map(|r| r.total().as_secs_f64()), 1.5, " s", true);
    for (size, _, t) in link {
        if let Some(r) = find(*size, "cold") {
            goal(
                &format!("{size} MiB cold total / link copy of the same bytes"),
                Some(r.total().as_secs_f64() / t.as_secs_f64()),
                1.3,
                "x",
                true,
            );
            // A stop-and-copy restores only once its last page has arrived, and the restore
            // writes every page into memory the container has never touched.
            if let Some((_, fresh, _)) = memory.iter().find(|(s, ..)| s == size) {
                let least = *t + *fresh;
                println!(
                    "    the least any stop-and-copy takes here: link copy + writing fresh memory = {} ({:.2}x the link copy)",
                    secs(least),
                    least.as_secs_f64() / t.as_secs_f64()
                );
            }
        }
    }

    println!("\ngoals (issue 20: pre-copy without soft-dirty, stop-and-copy near the limit):");
    let least = |size: u64| {
        let t = link.iter().find(|(s, ..)| *s == size).map(|(_, _, t)| *t)?;
        let fresh = memory.iter().find(|(s, ..)| *s == size).map(|(_, f, _)| *f)?;
        Some((t + fresh).as_secs_f64())
    };
    let gib_pre = find(1024, "precopy");
    goal(
        &format!("1 GiB pre-copy downtime, rewriting {PRECOPY_DIRTY} MiB/s"),
        gib_pre.map(|r| r.downtime().as_secs_f64()),
        0.3,
        " s",
        true,
    );
    goal(
        "1 GiB pre-copy total / (link copy + fresh-memory write)",
        gib_pre.zip(least(1024)).map(|(r, l)| r.total().as_secs_f64() / l),
        2.0,
        "x",
        true,
    );
    goal(
        "1 GiB stop-and-copy (cold) total / (link copy + fresh-memory write)",
        find(1024, "cold").zip(least(1024)).map(|(r, l)| r.total().as_secs_f64() / l),
        1.5,
        "x",
        true,
    );
}
