//! Real server software moved under its own clients' load, beside the same run without a move:
//! PostgreSQL under pgbench, Redis under redis-benchmark, nginx and Tomcat under wrk,
//! Mosquitto with a QoS 1 producer and consumer (the images and clients of
//! `scripts/apps-images.sh`). For each program and mode (none, cold, post-copy) it prints
//! Herd's downtime, the longest stall the client saw, its failed requests and its throughput,
//! and the throughput against the run without a move.
//!
//! ```sh
//! cargo build --release --bin herd --bin apps && target/release/apps [SECONDS] [PROGRAM...]
//! ```
//!
//! SECONDS (60 by default) is each run's length; the move happens in its middle.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_bench::BenchCluster;

const INDEX: u8 = 21;
const PG: &str = "/usr/lib/postgresql/15/bin";

fn apps_dir() -> PathBuf {
    std::env::var_os("HERD_APPS_DIR").map(PathBuf::from).unwrap_or_else(|| "/var/cache/herd-setup/apps".into())
}

fn client(program: &str) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(apps_dir().join("clients")).arg(program);
    cmd
}

/// What one run of a client measured.
#[derive(Debug, Default, Clone)]
struct Run {
    /// Requests, transactions or messages done per second.
    throughput: f64,
    /// The longest time the client waited for anything (its longest request, or the longest
    /// gap in its progress), seconds.
    stall: f64,
    failed: u64,
    /// Herd's report of the move, when there was one.
    downtime_ms: Option<u64>,
}

/// A program under test: how to start it and how its client measures a run.
trait App {
    fn name(&self) -> &'static str;
    fn image(&self) -> &'static str;
    fn run_args(&self) -> Vec<String>;
    fn port(&self) -> u16;
    fn prepare(&self, _ip: &str) -> anyhow::Result<()> {
        Ok(())
    }
    /// Starts the client for `secs` seconds; `finish` waits for it and measures.
    fn start(&self, ip: &str, secs: u64) -> anyhow::Result<Box<dyn FnOnce() -> anyhow::Result<Run>>>;
}

fn spawn(mut cmd: Command) -> anyhow::Result<std::process::Child> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("starting a client")
}

fn output(child: std::process::Child) -> anyhow::Result<String> {
    let out = child.wait_with_output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("the client failed ({}): {}", out.status, text.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
    }
    Ok(text)
}

struct Postgres;

impl App for Postgres {
    fn name(&self) -> &'static str {
        "PostgreSQL 15 / pgbench"
    }
    fn image(&self) -> &'static str {
        "postgres"
    }
    fn run_args(&self) -> Vec<String> {
        let cmd = format!(
            "runuser -u postgres -- {PG}/postgres -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf"
        );
        ["--memory", "1g", "postgres", "--", "sh", "-c", &cmd].iter().map(|s| s.to_string()).collect()
    }
    fn port(&self) -> u16 {
        5432
    }
    fn prepare(&self, ip: &str) -> anyhow::Result<()> {
        output(spawn({
            let mut c = client(&format!("{PG}/pgbench"));
            c.args(["-h", ip, "-U", "postgres", "-i", "-s", "10", "postgres"]);
            c
        })?)?;
        Ok(())
    }
    fn start(&self, ip: &str, secs: u64) -> anyhow::Result<Box<dyn FnOnce() -> anyhow::Result<Run>>> {
        // Per-transaction logs (-l) in the clients' root: their completion times give the stall.
        let logs = apps_dir().join("clients/tmp/pgbench-logs");
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs)?;
        let mut cmd = client(&format!("{PG}/pgbench"));
        cmd.args(["-h", ip, "-U", "postgres", "-n", "-c", "8", "-j", "2", "-T", &secs.to_string()]);
        cmd.args(["-l", "--log-prefix=/tmp/pgbench-logs/tx", "postgres"]);
        let child = spawn(cmd)?;
        Ok(Box::new(move || {
            let text = output(child)?;
            let tps = text
                .lines()
                .find_map(|l| l.strip_prefix("tps = "))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0.0);
            let failed = text
                .lines()
                .find_map(|l| l.strip_prefix("number of failed transactions: "))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(u64::MAX);
            let mut done: Vec<f64> = Vec::new();
            for e in std::fs::read_dir(&logs)?.flatten() {
                for line in std::fs::read_to_string(e.path())?.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if let (Some(s), Some(us)) = (f.get(4), f.get(5))
                        && let (Ok(s), Ok(us)) = (s.parse::<f64>(), us.parse::<f64>())
                    {
                        done.push(s + us / 1e6);
                    }
                }
            }
            done.sort_by(f64::total_cmp);
            let stall = done.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
            Ok(Run { throughput: tps, stall, failed, downtime_ms: None })
        }))
    }
}

struct Redis;

impl App for Redis {
    fn name(&self) -> &'static str {
        "Redis 7 / redis-benchmark"
    }
    fn image(&self) -> &'static str {
        "redis"
    }
    fn run_args(&self) -> Vec<String> {
        let cmd = "runuser -u redis -- redis-server /etc/redis/redis.conf";
        ["--memory", "1g", "redis", "--", "sh", "-c", cmd].iter().map(|s| s.to_string()).collect()
    }
    fn port(&self) -> u16 {
        6379
    }
    fn start(&self, ip: &str, secs: u64) -> anyhow::Result<Box<dyn FnOnce() -> anyhow::Result<Run>>> {
        // redis-benchmark runs a number of requests, not a time: it runs in rounds of 200,000
        // until the time is up; its latency summaries give the longest request.
        let ip = ip.to_string();
        let handle = std::thread::spawn(move || -> anyhow::Result<Run> {
            let (start, mut done, mut stall, mut failed) = (Instant::now(), 0u64, 0f64, 0u64);
            while start.elapsed() < Duration::from_secs(secs) {
                let mut cmd = client("/usr/bin/redis-benchmark");
                cmd.args(["-h", &ip, "-c", "100", "-P", "16", "-t", "set,get", "-r", "100000", "-n", "200000"]);
                let text = output(spawn(cmd)?)?;
                done += 400_000;
                failed += text.to_lowercase().matches("error").count() as u64;
                // "  avg       min       p50       p95       p99       max" then the values (ms).
                let lines: Vec<&str> = text.lines().collect();
                for (i, l) in lines.iter().enumerate() {
                    if l.contains("latency summary") {
                        let max = lines.get(i + 2).and_then(|v| v.split_whitespace().last()?.parse::<f64>().ok());
                        stall = stall.max(max.unwrap_or(0.0) / 1000.0);
                    }
                }
            }
            Ok(Run { throughput: done as f64 / start.elapsed().as_secs_f64(), stall, failed, downtime_ms: None })
        });
        Ok(Box::new(move || handle.join().map_err(|_| anyhow::anyhow!("the client thread panicked"))?))
    }
}

/// An HTTP server under wrk (100 keep-alive connections).
struct Http {
    name: &'static str,
    image: &'static str,
    args: &'static [&'static str],
    port: u16,
}

impl App for Http {
    fn name(&self) -> &'static str {
        self.name
    }
    fn image(&self) -> &'static str {
        self.image
    }
    fn run_args(&self) -> Vec<String> {
        self.args.iter().map(|s| s.to_string()).collect()
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn start(&self, ip: &str, secs: u64) -> anyhow::Result<Box<dyn FnOnce() -> anyhow::Result<Run>>> {
        let mut cmd = Command::new("wrk");
        cmd.args(["-t", "2", "-c", "100", "-d", &format!("{secs}s"), "--timeout", "10s"]);
        cmd.arg(format!("http://{ip}:{}/", self.port));
        let child = spawn(cmd)?;
        Ok(Box::new(move || {
            let text = output(child)?;
            let rps = text.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok());
            let max = text
                .lines()
                .find(|l| l.trim_start().starts_with("Latency"))
                .and_then(|l| l.split_whitespace().nth(3))
                .map(seconds_of)
                .unwrap_or(0.0);
            let mut failed = 0;
            if let Some(l) = text.lines().find(|l| l.contains("Socket errors")) {
                failed += l.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).sum::<u64>();
            }
            if let Some(l) = text.lines().find(|l| l.contains("Non-2xx")) {
                failed += l.split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or(0);
            }
            Ok(Run { throughput: rps.unwrap_or(0.0), stall: max, failed, downtime_ms: None })
        }))
    }
}

/// wrk's durations: `12.3ms`, `1.20s`, `850.00us`, `2.00m`.
fn seconds_of(text: &str) -> f64 {
    let (n, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len()));
    let n: f64 = n.parse().unwrap_or(0.0);
    match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        _ => n,
    }
}

struct Mosquitto;

impl App for Mosquitto {
    fn name(&self) -> &'static str {
        "Mosquitto 2 / QoS 1"
    }
    fn image(&self) -> &'static str {
        "mosquitto"
    }
    fn run_args(&self) -> Vec<String> {
        ["--memory", "256m", "mosquitto", "--", "mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
    fn port(&self) -> u16 {
        1883
    }
    fn start(&self, ip: &str, secs: u64) -> anyhow::Result<Box<dyn FnOnce() -> anyhow::Result<Run>>> {
        // A message every 2 ms; the subscriber prints each with its arrival time.
        let count = secs * 500;
        let mut sub = client("/usr/bin/mosquitto_sub");
        sub.args(["-h", ip, "-t", "bench", "-q", "1", "-c", "-i", "bench-sub", "-C", &count.to_string()]);
        sub.args(["-W", &(secs + 60).to_string(), "-F", "%U %p"]);
        let sub = spawn(sub)?;
        std::thread::sleep(Duration::from_millis(500));
        let ip = ip.to_string();
        let publisher = std::thread::spawn(move || -> anyhow::Result<()> {
            let mut cmd = client("/usr/bin/mosquitto_pub");
            cmd.args(["-h", &ip, "-t", "bench", "-q", "1", "-i", "bench-pub", "-l"]).stdin(Stdio::piped());
            let mut child = spawn(cmd)?;
            let mut stdin = child.stdin.take().unwrap();
            let start = Instant::now();
            for i in 0..count {
                use std::io::Write;
                writeln!(stdin, "{i}")?;
                let due = start + Duration::from_millis(2 * (i + 1));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            drop(stdin);
            output(child)?;
            Ok(())
        });
        Ok(Box::new(move || {
            publisher.join().map_err(|_| anyhow::anyhow!("the publisher panicked"))??;
            let text = output(sub)?;
            let mut seen = std::collections::BTreeSet::new();
            let mut times = Vec::new();
            for l in text.lines() {
                let mut f = l.split_whitespace();
                if let (Some(t), Some(n)) = (f.next(), f.next())
                    && let (Ok(t), Ok(n)) = (t.parse::<f64>(), n.parse::<u64>())
                {
                    times.push(t);
                    seen.insert(n);
                }
            }
            let stall = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
            let span = times.last().zip(times.first()).map(|(l, f)| l - f).unwrap_or(1.0).max(1e-3);
            Ok(Run {
                throughput: seen.len() as f64 / span,
                stall,
                failed: count - seen.len() as u64,
                downtime_ms: None,
            })
        }))
    }
}

fn apps() -> Vec<Box<dyn App>> {
    vec![
        Box::new(Postgres),
        Box::new(Redis),
        Box::new(Http {
            name: "nginx / wrk",
            image: "nginx",
            args: &["--memory", "256m", "nginx", "--", "nginx"],
            port: 80,
        }),
        Box::new(Http {
            name: "Tomcat 10 (JVM) / wrk",
            image: "tomcat",
            args: &[
                "--memory",
                "1g",
                "tomcat",
                "--",
                "sh",
                "-c",
                "runuser -u tomcat -- env CATALINA_HOME=/usr/share/tomcat10 CATALINA_BASE=/var/lib/tomcat10 \
                 CATALINA_TMPDIR=/tmp JAVA_OPTS=-Xmx256m /usr/share/tomcat10/bin/catalina.sh run",
            ],
            port: 8080,
        }),
        Box::new(Mosquitto),
    ]
}

fn container_ip(cluster: &BenchCluster, name: &str) -> anyhow::Result<String> {
    let info: serde_json::Value = serde_json::from_str(&cluster.ok(&["inspect", name, "--json"])?)?;
    Ok(info["ip"].as_str().context("no address")?.to_string())
}

fn wait_port(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{addr} does not accept connections")
}

fn measure(cluster: &BenchCluster, app: &dyn App, ip: &str, secs: u64, mode: Option<&str>) -> anyhow::Result<Run> {
    let finish = app.start(ip, secs)?;
    let mut downtime_ms = None;
    if let Some(mode) = mode {
        std::thread::sleep(Duration::from_secs(secs / 2));
        let report: serde_json::Value =
            serde_json::from_str(&cluster.ok(&["migrate", "app", "--mode", mode, "--json"])?)?;
        downtime_ms = report["downtime_ms"].as_u64();
    }
    let mut run = finish()?;
    run.downtime_ms = downtime_ms;
    Ok(run)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(60);
    let only: Vec<&String> = args.iter().filter(|a| a.parse::<u64>().is_err()).collect();
    herd_bench::require("/usr/bin/wrk", "apt-get install wrk (scripts/setup.sh does)")?;
    let mut table = Vec::new();
    for app in apps() {
        if !only.is_empty() && !only.iter().any(|o| app.image() == o.as_str()) {
            continue;
        }
        eprintln!("== {} ({secs} s runs)", app.name());
        let cluster = BenchCluster::up(INDEX, 2)?;
        let tar = apps_dir().join(format!("{}.tar", app.image()));
        cluster.ok(&["image", "import", app.image(), tar.to_str().unwrap()])?;
        let mut run = vec!["run".to_string(), "--name".into(), "app".into()];
        run.extend(app.run_args());
        cluster.ok(&run.iter().map(String::as_str).collect::<Vec<_>>())?;
        let ip = container_ip(&cluster, "app")?;
        wait_port(&format!("{ip}:{}", app.port()))?;
        app.prepare(&ip)?;
        // Both nodes unpack the image before the measured runs.
        cluster.ok(&["migrate", "app", "--mode", "cold"])?;
        let base = measure(&cluster, app.as_ref(), &ip, secs, None)?;
        table.push((app.name(), "none", base.clone(), base.throughput));
        for mode in ["cold", "postcopy"] {
            let moved = measure(&cluster, app.as_ref(), &ip, secs, Some(mode))?;
            table.push((app.name(), mode, moved, base.throughput));
        }
    }
    println!("\nReal programs moved under their own clients ({secs} s runs, the move in the middle):\n");
    println!("| program / client | move | downtime | client's longest stall | failed | throughput | vs no move |");
    println!("|---|---|---|---|---|---|---|");
    for (name, mode, r, base) in &table {
        println!(
            "| {name} | {mode} | {} | {:.3} s | {} | {:.0}/s | {:.1} % |",
            r.downtime_ms.map(|d| format!("{d} ms")).unwrap_or_else(|| "-".into()),
            r.stall,
            r.failed,
            r.throughput,
            100.0 * r.throughput / base.max(1e-9)
        );
    }
    Ok(())
}
