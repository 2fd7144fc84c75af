//! Real server software moved under its own clients' load, beside the same run without a move:
//! PostgreSQL under pgbench, Redis under redis-benchmark, nginx and Tomcat under wrk,
//! Mosquitto with a QoS 1 producer and consumer (the images and clients of
//! `scripts/apps-images.sh`). For each program and mode (none, cold, post-copy, pre-copy) it
//! prints Herd's downtime, the longest stall the client saw, its failed requests and its
//! throughput, and the throughput against the run without a move.
//!
//! ```sh
//! cargo build --release --bin herd --bin apps && target/release/apps [SECONDS] [PROGRAM...]
//! ```
//!
//! SECONDS (60 by default) is each run's length; the move happens in its middle. PROGRAM picks
//! some of `postgres`, `redis`, `nginx`, `tomcat`, `mosquitto` and `many` (Tomcat with 200
//! request threads under 10,000 wrk connections: the goal's large container); all by default.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Herd's report of the move, when there was one: its downtime, and the bytes moved
    /// (memory, CRIU's other images, the writable layer).
    downtime_ms: Option<u64>,
    moved_bytes: Option<u64>,
}

/// A program under test: how to start it and how its client measures a run.
trait App {
    fn name(&self) -> &'static str;
    /// What picks it on the command line.
    fn key(&self) -> &'static str {
        self.image()
    }
    fn image(&self) -> &'static str;
    /// The moves it is measured with.
    fn modes(&self) -> &'static [&'static str] {
        &["cold", "postcopy", "precopy"]
    }
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
        // The port opens before the database takes queries ("the database system is starting up").
        let deadline = Instant::now() + Duration::from_secs(120);
        while !client(&format!("{PG}/psql"))
            .args(["-h", ip, "-U", "postgres", "-c", "select 1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .success()
        {
            if Instant::now() > deadline {
                bail!("PostgreSQL at {ip} takes no queries after 120 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
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
            Ok(Run { throughput: tps, stall, failed, ..Run::default() })
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
            Ok(Run { throughput: done as f64 / start.elapsed().as_secs_f64(), stall, failed, ..Run::default() })
        });
        Ok(Box::new(move || handle.join().map_err(|_| anyhow::anyhow!("the client thread panicked"))?))
    }
}

/// An HTTP server under wrk (`connections` keep-alive connections).
struct Http {
    name: &'static str,
    key: &'static str,
    image: &'static str,
    args: &'static [&'static str],
    port: u16,
    connections: u32,
    modes: &'static [&'static str],
}

impl App for Http {
    fn name(&self) -> &'static str {
        self.name
    }
    fn key(&self) -> &'static str {
        self.key
    }
    fn image(&self) -> &'static str {
        self.image
    }
    fn modes(&self) -> &'static [&'static str] {
        self.modes
    }
    fn run_args(&self) -> Vec<String> {
        self.args.iter().map(|s| s.to_string()).collect()
    }
    fn port(&self) -> u16 {
        self.port
    }
    /// Waits for an answer: a server can take connections before it accepts them (Tomcat
    /// while it starts), and a connection left waiting makes CRIU refuse the dump.
    fn prepare(&self, ip: &str) -> anyhow::Result<()> {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let answered = (|| -> std::io::Result<bool> {
                let addr = std::net::SocketAddr::new(ip.parse().map_err(std::io::Error::other)?, self.port);
                let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut head = [0u8; 12];
                s.read_exact(&mut head)?;
                Ok(head.starts_with(b"HTTP/1."))
            })();
            if answered.unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nothing answers HTTP at {ip}:{} after 120 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    fn start(&self, ip: &str, secs: u64) -> anyhow::Result<Box<dyn FnOnce() -> anyhow::Result<Run>>> {
        let mut cmd = Command::new("wrk");
        let connections = self.connections.to_string();
        cmd.args(["-t", "2", "-c", &connections, "-d", &format!("{secs}s"), "--timeout", "10s"]);
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
            if failed > 0 {
                eprintln!("   wrk saw errors:\n{text}");
            }
            Ok(Run { throughput: rps.unwrap_or(0.0), stall: max, failed, ..Run::default() })
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

/// Runs of the Mosquitto client so far.
static RUNS: AtomicU64 = AtomicU64::new(0);

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
        // Each run has its own topic: a persistent session of an earlier run (its subscriber
        // quits after `count` messages) holds nothing for this one.
        let topic = format!("bench/{}", std::process::id() as u64 * 1000 + RUNS.fetch_add(1, Ordering::Relaxed));
        sub.args(["-h", ip, "-t", &topic, "-q", "1", "-c", "-i", "bench-sub", "-C", &count.to_string()]);
        sub.args(["-W", &(secs + 60).to_string(), "-F", "%U %p"]);
        // Its output goes to a file: a pipe read only at the end would fill (64 KiB, some
        // 2,000 messages) and stop the subscriber.
        let received = tempfile::tempfile()?;
        sub.stdout(received.try_clone()?).stderr(Stdio::piped());
        let sub = sub.spawn().context("starting mosquitto_sub")?;
        std::thread::sleep(Duration::from_millis(500));
        let ip = ip.to_string();
        let publisher = std::thread::spawn(move || -> anyhow::Result<()> {
            let mut cmd = client("/usr/bin/mosquitto_pub");
            cmd.args(["-h", &ip, "-t", &topic, "-q", "1", "-i", "bench-pub", "-l"]).stdin(Stdio::piped());
            let mut child = spawn(cmd)?;
            let mut stdin = child.stdin.take().unwrap();
            let start = Instant::now();
            for i in 0..count {
                use std::io::Write;
                let sent = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
                writeln!(stdin, "{i} {sent:.6}")?;
                let due = start + Duration::from_millis(2 * (i + 1));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            drop(stdin);
            output(child)?;
            Ok(())
        });
        Ok(Box::new(move || {
            publisher.join().map_err(|_| anyhow::anyhow!("the publisher panicked"))??;
            output(sub)?;
            let mut text = String::new();
            let mut received = received;
            std::io::Seek::rewind(&mut received)?;
            std::io::Read::read_to_string(&mut received, &mut text)?;
            if let Some(dir) = std::env::var_os("HERD_BENCH_KEEP") {
                std::fs::write(PathBuf::from(dir).join("mosquitto_sub.txt"), &text)?;
            }
            // Each line: arrival time, then the payload (number, time published). The stall is
            // the longest any message took from its publisher to the subscriber.
            let mut seen = std::collections::BTreeSet::new();
            let (mut times, mut stall) = (Vec::new(), 0f64);
            for l in text.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if let [t, n, sent] = f[..]
                    && let (Ok(t), Ok(n), Ok(sent)) = (t.parse::<f64>(), n.parse::<u64>(), sent.parse::<f64>())
                {
                    times.push(t);
                    seen.insert(n);
                    stall = stall.max(t - sent);
                }
            }
            let span = times.last().zip(times.first()).map(|(l, f)| l - f).unwrap_or(1.0).max(1e-3);
            Ok(Run { throughput: seen.len() as f64 / span, stall, failed: count - seen.len() as u64, ..Run::default() })
        }))
    }
}

fn apps() -> Vec<Box<dyn App>> {
    vec![
        Box::new(Postgres),
        Box::new(Redis),
        Box::new(Http {
            name: "nginx / wrk",
            key: "nginx",
            image: "nginx",
            args: &["--memory", "256m", "nginx", "--", "nginx"],
            port: 80,
            connections: 100,
            modes: &["cold", "postcopy", "precopy"],
        }),
        Box::new(Http {
            name: "Tomcat 10 (JVM) / wrk",
            key: "tomcat",
            image: "tomcat",
            connections: 100,
            modes: &["cold", "postcopy", "precopy"],
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
        // The goal's large container: 200 threads (Tomcat's request pool, started whole) and
        // 10,000 open client connections. (nginx with 200 worker processes does not move: CRIU
        // took over 11 s to restore its workers' shared files; see docs/design/apps.md.)
        Box::new(Http {
            name: "Tomcat, 200 request threads / wrk, 10,000 connections",
            key: "many",
            image: "tomcat",
            connections: 10_000,
            modes: &["postcopy"],
            args: &[
                "--memory",
                "2g",
                "tomcat",
                "--",
                "sh",
                "-c",
                "sed -i 's/connectionTimeout=\"20000\"/connectionTimeout=\"60000\" maxThreads=\"200\" \
                 minSpareThreads=\"200\" maxConnections=\"12000\" acceptCount=\"2000\" maxKeepAliveRequests=\"-1\"/' /etc/tomcat10/server.xml \
                 && runuser -u tomcat -- env CATALINA_HOME=/usr/share/tomcat10 CATALINA_BASE=/var/lib/tomcat10 \
                 CATALINA_TMPDIR=/tmp JAVA_OPTS=-Xmx512m /usr/share/tomcat10/bin/catalina.sh run",
            ],
            port: 8080,
        }),
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
    let Some(mode) = mode else { return finish() };
    std::thread::sleep(Duration::from_secs(secs / 2));
    let moved = cluster.ok(&["migrate", "app", "--mode", mode, "--json"]);
    // The client runs to its end either way.
    let run = finish();
    let report: serde_json::Value = serde_json::from_str(&moved?)?;
    eprintln!("   {mode}: {report}");
    let mut run = run?;
    run.downtime_ms = report["downtime_ms"].as_u64();
    run.moved_bytes = Some(report["memory_bytes"].as_u64().unwrap_or(0) + report["fs_bytes"].as_u64().unwrap_or(0));
    Ok(run)
}

/// Processes and threads of process `pid` and its descendants.
fn count_tasks(pid: u32) -> (usize, usize) {
    let (mut processes, mut threads, mut pending) = (0, 0, vec![pid]);
    while let Some(p) = pending.pop() {
        processes += 1;
        for t in std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
            threads += 1;
            if let Ok(children) = std::fs::read_to_string(t.path().join("children")) {
                pending.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
    }
    (processes, threads)
}

/// Starts `app` on a fresh cluster and measures it without a move, then with each of its moves.
fn bench_app(app: &dyn App, secs: u64, table: &mut Vec<Row>) -> anyhow::Result<()> {
    let cluster = BenchCluster::up(INDEX, 2)?;
    let tar = apps_dir().join(format!("{}.tar", app.image()));
    cluster.ok(&["image", "import", app.image(), tar.to_str().unwrap()])?;
    let mut run = vec!["run".to_string(), "--name".into(), "app".into()];
    run.extend(app.run_args());
    cluster.ok(&run.iter().map(String::as_str).collect::<Vec<_>>())?;
    let ip = container_ip(&cluster, "app")?;
    wait_port(&format!("{ip}:{}", app.port()))?;
    app.prepare(&ip)?;
    let info: serde_json::Value = serde_json::from_str(&cluster.ok(&["inspect", "app", "--json"])?)?;
    if let Some(pid) = info["pid"].as_u64() {
        let (processes, threads) = count_tasks(pid as u32);
        eprintln!("   {processes} processes, {threads} threads");
    }
    // Both nodes unpack the image before the measured runs.
    cluster.ok(&["migrate", "app", "--mode", "cold"])?;
    let base = measure(&cluster, app, &ip, secs, None)?;
    table.push(Row { app: app.name(), mode: "none", run: Ok(base.clone()), base: base.throughput });
    for mode in app.modes() {
        let moved = measure(&cluster, app, &ip, secs, Some(mode)).map_err(|e| format!("{e:#}"));
        table.push(Row { app: app.name(), mode, run: moved, base: base.throughput });
    }
    Ok(())
}

/// One line of the table.
struct Row {
    app: &'static str,
    mode: &'static str,
    run: Result<Run, String>,
    /// The throughput without a move.
    base: f64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(60);
    let only: Vec<&String> = args.iter().filter(|a| a.parse::<u64>().is_err()).collect();
    herd_bench::require("/usr/bin/wrk", "apt-get install wrk (scripts/setup.sh does)")?;
    let mut table = Vec::new();
    for app in apps() {
        if !only.is_empty() && !only.iter().any(|o| app.key() == o.as_str()) {
            continue;
        }
        eprintln!("== {} ({secs} s runs)", app.name());
        // A program that cannot be set up gets its line, and the others still run.
        if let Err(e) = bench_app(app.as_ref(), secs, &mut table) {
            table.push(Row { app: app.name(), mode: "setup", run: Err(format!("{e:#}")), base: 0.0 });
        }
    }
    println!("\nReal programs moved under their own clients ({secs} s runs, the move in the middle):\n");
    println!(
        "| program / client | move | downtime | moved in it | client's longest stall | failed | throughput | vs no move |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for Row { app, mode, run, base } in &table {
        match run {
            Ok(r) => println!(
                "| {app} | {mode} | {} | {} | {:.3} s | {} | {:.0}/s | {:.1} % |",
                r.downtime_ms.map(|d| format!("{d} ms")).unwrap_or_else(|| "-".into()),
                r.moved_bytes.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into()),
                r.stall,
                r.failed,
                r.throughput,
                100.0 * r.throughput / base.max(1e-9)
            ),
            Err(e) => {
                println!("| {app} | {mode} | failed: {} |  |  |  |  |  |", e.replace('\n', " ").replace('|', "/"))
            }
        }
    }
    Ok(())
}
