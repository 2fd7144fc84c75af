//! Shared pieces of Herd's benchmarks: a cluster driven through the real `herd` binary,
//! timing statistics, and result tables that put Herd beside its baseline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod memhog;
pub mod zdtm;

/// The `herd` binary next to the benchmark's own (build both with `--release`).
pub fn herd_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HERD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("benchmark location")?;
    let mut p = dir.join("herd");
    // A test's binary lives one level down, in deps/.
    if !p.exists() && dir.ends_with("deps") {
        p = dir.parent().context("benchmark location")?.join("herd");
    }
    if !p.exists() {
        bail!("{} not found: build it first (cargo build --release --bin herd) or set HERD_BIN", p.display());
    }
    Ok(p)
}

/// A local cluster for one benchmark, stopped and purged on drop.
pub struct BenchCluster {
    pub name: String,
    pub herd: PathBuf,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl BenchCluster {
    /// `herd up --detach` with a name, subnets and ports of its own (`index` keeps
    /// benchmarks apart from each other and from the default cluster).
    pub fn up(index: u8, nodes: usize) -> anyhow::Result<BenchCluster> {
        Self::up_with(index, nodes, None, &[])
    }

    /// Like [`BenchCluster::up`], with a container range of its own (`cidr`) and more
    /// `herd up` flags.
    pub fn up_with(index: u8, nodes: usize, cidr: Option<&str>, extra: &[&str]) -> anyhow::Result<BenchCluster> {
        let herd = herd_binary()?;
        let dir = tempfile::tempdir()?;
        let name = format!("bench{index}");
        let c = BenchCluster { config: dir.path().join("config.toml"), name, herd, dir };
        let _ = c.run(&["down", "--name", &c.name, "--purge", "-t", "1"]);
        let subnet = format!("10.98.{index}.0/24");
        let cidr = cidr.map(str::to_string).unwrap_or_else(|| format!("10.{}.0.0/16", 200 + index as u32));
        let api = (18700 + index as u32).to_string();
        let broker = (18400 + index as u32).to_string();
        let data = format!("/var/lib/herd-bench/{}", c.name);
        let nodes = nodes.to_string();
        let mut args = vec![
            "up",
            "--detach",
            "--name",
            &c.name,
            "--nodes",
            &nodes,
            "--subnet",
            &subnet,
            "--container-cidr",
            &cidr,
            "--api-port",
            &api,
            "--broker-port",
            &broker,
            "--data-dir",
            &data,
        ];
        args.extend_from_slice(extra);
        // A benchmark's layers need little room: the node's default reserve (5% of the
        // filesystem) would refuse them on a host disk that is merely full-ish.
        let out = Command::new(&c.herd)
            .args(&args)
            .env("HERD_CONFIG", &c.config)
            .env("HERD_NODE_DISK_RESERVE", "1g")
            .output()
            .context("running herd up")?;
        if !out.status.success() {
            bail!("herd {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(c)
    }

    /// A client of the cluster's API, as `herd` builds it from the cluster's config.
    pub fn client(&self) -> anyhow::Result<herd_cli::Client> {
        herd_cli::Client::new(&herd_cli::CliConfig::load(&self.config)?)
    }

    /// The cluster's state as `herd up` recorded it (component pids, layout).
    pub fn state(&self) -> anyhow::Result<herd_up::UpState> {
        herd_up::UpState::load(&herd_up::UpOptions::defaults(&self.name).run_dir)?
            .with_context(|| format!("cluster {} has no state: is it up?", self.name))
    }

    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(&self.herd).args(args).env("HERD_CONFIG", &self.config).output().context("running herd")
    }

    /// Runs `herd ARGS`, failing with its error output unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!("herd {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Imports a busybox root filesystem as image `busybox`.
    pub fn import_busybox(&self) -> anyhow::Result<PathBuf> {
        let rootfs = self.dir.path().join("busybox");
        herd_up::busybox_rootfs(&rootfs)?;
        self.ok(&["image", "import", "busybox", rootfs.to_str().unwrap()])?;
        Ok(rootfs)
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        // HERD_BENCH_LOGS=DIR keeps the components' logs of the run in DIR/<cluster>.
        if let Some(keep) = std::env::var_os("HERD_BENCH_LOGS") {
            let logs = herd_up::UpOptions::defaults(&self.name).run_dir.join("logs");
            let to = Path::new(&keep).join(&self.name);
            let _ = std::fs::create_dir_all(&to);
            let _ = Command::new("cp").arg("-a").arg(&logs).arg(&to).status();
        }
        let _ = self.run(&["down", "--name", &self.name, "--purge", "-t", "1"]);
    }
}

/// Times `f` once.
pub fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let v = f();
    (start.elapsed(), v)
}

/// Summary of a set of timings.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub median: Duration,
    pub p90: Duration,
    pub max: Duration,
}

impl Stats {
    pub fn of(samples: &[Duration]) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        let mut s = samples.to_vec();
        s.sort();
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        Stats { n: s.len(), median: at(0.5), p90: at(0.9), max: s[s.len() - 1] }
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One row of a result table: Herd beside its baseline.
pub struct Row {
    pub what: String,
    pub herd: Stats,
    pub baseline: Stats,
}

/// Prints rows as a table with the ratio of medians (Herd / baseline).
pub fn print_table(title: &str, baseline: &str, rows: &[Row]) {
    println!("\n{title}");
    println!("{:<34} {:>22} {:>22} {:>10}", "", "herd median (p90)", format!("{baseline} median (p90)"), "herd/base");
    for r in rows {
        println!(
            "{:<34} {:>22} {:>22} {:>9.2}x",
            r.what,
            format!("{} ({})", ms(r.herd.median), ms(r.herd.p90)),
            format!("{} ({})", ms(r.baseline.median), ms(r.baseline.p90)),
            r.herd.median.as_secs_f64() / r.baseline.median.as_secs_f64().max(1e-9)
        );
    }
}

/// Whether `path` exists, for preflight checks with a clear message.
pub fn require(path: &str, hint: &str) -> anyhow::Result<()> {
    if Path::new(path).exists() { Ok(()) } else { bail!("{path} is missing: {hint}") }
}
