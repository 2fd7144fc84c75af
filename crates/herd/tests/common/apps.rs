//! Real server software in containers, and its own clients driving it from the host: the
//! images `scripts/apps-images.sh` builds from Debian's packages, and the clients from its
//! client root (run with `chroot`, so the host needs none of them installed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use super::{Cluster, wait_for};

/// Where `scripts/apps-images.sh` keeps the images and the clients' root.
pub fn apps_dir() -> PathBuf {
    std::env::var_os("HERD_APPS_DIR").map(PathBuf::from).unwrap_or_else(|| "/var/cache/herd-setup/apps".into())
}

/// The clients' root (`pgbench`, `psql`, `redis-benchmark`, `redis-cli`, `mosquitto_pub/sub`).
pub fn clients_root() -> PathBuf {
    apps_dir().join("clients")
}

/// Fails (never skips) when the images are missing.
pub fn require_apps(images: &[&str]) {
    for image in images {
        let tar = apps_dir().join(format!("{image}.tar"));
        assert!(tar.exists(), "{} is missing: scripts/setup.sh builds it (scripts/apps-images.sh)", tar.display());
    }
    assert!(
        clients_root().join("usr/bin/psql").exists(),
        "the clients' root {} is missing: scripts/setup.sh builds it (scripts/apps-images.sh)",
        clients_root().display()
    );
}

/// A command of the clients' root, run from the host through `chroot`.
pub fn client(program: &str) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(clients_root()).arg(program);
    cmd
}

/// Runs a client to its end; panics with its output when it fails.
pub fn run_client(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("running a client through chroot");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}): {text}", out.status);
    text
}

/// A client running in the background; its output collected when it ends. The output goes
/// to a file, not a pipe: a pipe read only at the end fills (64 KiB) and stops the client.
pub struct Background {
    child: Option<Child>,
    output: std::fs::File,
    what: String,
}

impl Background {
    pub fn start(mut cmd: Command, what: &str) -> Background {
        let output = tempfile::tempfile().expect("a file for a client's output");
        cmd.stdout(output.try_clone().unwrap()).stderr(output.try_clone().unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Background { child: Some(child), output, what: what.into() }
    }

    /// Waits for the client's end (at most `timeout`); returns whether it succeeded and its
    /// output, stdout then stderr.
    pub fn finish(mut self, timeout: Duration) -> (bool, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(_status) = child.try_wait().unwrap() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = child.wait().unwrap();
        let mut bytes = Vec::new();
        std::io::Seek::rewind(&mut self.output).unwrap();
        std::io::Read::read_to_end(&mut self.output, &mut bytes).unwrap();
        (status.success(), String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Like [`Background::finish`], and panics when the client failed.
    pub fn finish_ok(self, timeout: Duration) -> String {
        let what = self.what.clone();
        let (ok, text) = self.finish(timeout);
        assert!(ok, "{what} failed: {text}");
        text
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    /// Imports image `name` (a rootfs tarball from `scripts/apps-images.sh`) as `name`.
    pub fn import_app(&self, name: &str) {
        let tar = apps_dir().join(format!("{name}.tar"));
        self.ok(&["image", "import", name, tar.to_str().unwrap()]);
    }

    /// Waits until `addr` accepts TCP connections (from the host).
    pub fn wait_port(&self, addr: &str, timeout: Duration) {
        wait_for(&format!("{addr} to accept connections"), timeout, || {
            std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)).ok()
        });
    }

    /// The node other than the container's (of a two-node cluster).
    pub fn other_node(&self, container: &str) -> String {
        if self.container(container).node == "n1" { "n2".into() } else { "n1".into() }
    }
}

/// The longest gap between consecutive lines of a client's output that carry a timestamp
/// (seconds, as the first field), e.g. pgbench's per-transaction log: the stall a client saw.
pub fn longest_gap(timestamps: &[f64]) -> f64 {
    timestamps.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// `path` inside the clients' root, as the host sees it.
pub fn in_clients_root(path: &str) -> PathBuf {
    clients_root().join(Path::new(path).strip_prefix("/").unwrap_or(Path::new(path)))
}

// ------------------------------------------------------------------ PostgreSQL

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub fn psql(ip: &str, sql: &str) -> String {
    run_client(client(&format!("{PG_BIN}/psql")).args(["-h", ip, "-U", "postgres", "-At", "-c", sql]))
        .trim()
        .to_string()
}

/// pgbench's TPC-B-like run against `ip` for `secs` seconds with `clients` clients. `-n`: no
/// vacuum before the run, which would also truncate the history the invariant counts.
pub fn pgbench(ip: &str, clients: u32, secs: u32) -> Background {
    let mut cmd = client(&format!("{PG_BIN}/pgbench"));
    let (clients, secs) = (clients.to_string(), secs.to_string());
    cmd.args(["-h", ip, "-U", "postgres", "-n", "-c", &clients, "-j", "2", "-T", &secs, "-P", "1", "postgres"]);
    Background::start(cmd, "pgbench")
}

/// Checks what pgbench printed: every client ran to the end, no transaction failed.
pub fn assert_pgbench_clean(out: &str, during: &str) {
    assert!(!out.contains("aborted"), "a pgbench client was aborted during {during}: {out}");
    let failed = out.lines().find(|l| l.starts_with("number of failed transactions")).unwrap_or_else(|| {
        panic!("pgbench printed no summary during {during}: {out}");
    });
    assert!(failed.starts_with("number of failed transactions: 0 "), "during {during}: {failed}");
    let processed: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next()?.trim().parse().ok())
        .unwrap_or(0);
    assert!(processed > 100, "pgbench processed only {processed} transactions during {during}");
}

/// TPC-B's invariant: the balances of accounts, tellers and branches, and the history's
/// deltas, sum to the same.
pub fn assert_balances_agree(ip: &str, after: &str) {
    let sums = psql(
        ip,
        "select (select sum(abalance) from pgbench_accounts), (select sum(tbalance) from pgbench_tellers), \
         (select sum(bbalance) from pgbench_branches), (select coalesce(sum(delta), 0) from pgbench_history)",
    );
    let parts: Vec<&str> = sums.split('|').collect();
    assert_eq!(parts.len(), 4, "{sums}");
    assert!(
        parts.iter().all(|p| *p == parts[0]),
        "the balances disagree after {after} (accounts|tellers|branches|history): {sums}"
    );
}

/// Waits until PostgreSQL at `ip` takes queries (its port opens while it still starts up).
pub fn wait_for_postgres(ip: &str, timeout: Duration) {
    crate::common::wait_for("PostgreSQL to accept queries", timeout, || {
        let out =
            client(&format!("{PG_BIN}/psql")).args(["-h", ip, "-U", "postgres", "-c", "select 1"]).output().ok()?;
        out.status.success().then_some(())
    });
}
