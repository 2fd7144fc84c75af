//! Test harness for end-to-end tests: a real local cluster (`herd up --detach`) per test,
//! torn down (`herd down --purge`) when the test ends, pass or fail.
#![allow(dead_code)]

pub mod apps;
pub mod vm;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

pub const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// The disk reserve of a test cluster's nodes (`HERD_NODE_DISK_RESERVE`).
pub const TEST_DISK_RESERVE: &str = "1g";

/// Fails (never skips) when the machine cannot run real clusters.
pub fn require_machine() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests run real clusters and must run as root (the README's test command does)"
    );
    for (tool, hint) in [
        ("runc", "apt-get install runc"),
        ("criu", "scripts/setup.sh builds CRIU 4.2.1"),
        ("nats-server", "scripts/setup.sh installs nats-server 2.10"),
        ("iptables", "apt-get install iptables"),
    ] {
        assert!(herd_node_find(tool), "{tool} is missing: {hint} (run scripts/setup.sh before the tests)");
    }
    assert!(Path::new("/bin/busybox").exists(), "/bin/busybox is missing: apt-get install busybox-static");
}

fn herd_node_find(tool: &str) -> bool {
    ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

/// Polls `cond` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
/// A stream both ways.
pub trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// A connection to the API of `cfg` for hand-written HTTP: TLS checked against the config's
/// CA when the API is `https://`; and the API's `host:port`.
pub fn api_connect(cfg: &herd_cli::CliConfig) -> (Box<dyn ReadWrite>, String) {
    let (tls, addr) = match cfg.api.strip_prefix("https://") {
        Some(a) => (true, a),
        None => (false, cfg.api.trim_start_matches("http://")),
    };
    let addr = addr.trim_end_matches('/').to_string();
    let tcp = std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    if !tls {
        return (Box::new(tcp), addr);
    }
    let config =
        herd_tls::config::client_config_from_pem(cfg.ca.as_deref().expect("an https API comes with its CA"), None)
            .unwrap();
    let host = addr.rsplit_once(':').unwrap().0.to_string();
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    (Box::new(rustls::StreamOwned::new(conn, tcp)), addr)
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running local cluster, stopped and purged on drop.
pub struct Cluster {
    pub name: String,
    pub index: u8,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    down: bool,
}

impl Cluster {
    /// Starts cluster `herd-t<index>` with `nodes` nodes. Each test uses its own index, so
    /// clusters of tests running side by side use different names, subnets and ports.
    pub fn up(index: u8, nodes: usize) -> Cluster {
        Self::up_with(index, nodes, &[])
    }

    pub fn up_with(index: u8, nodes: usize, extra: &[&str]) -> Cluster {
        Self::up_with_env(index, nodes, extra, &[])
    }

    /// Like [`Cluster::up_with`], with environment variables for every component (fault
    /// injection, timeouts).
    pub fn up_with_env(index: u8, nodes: usize, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        require_machine();
        let name = format!("t{index}");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let data_dir = PathBuf::from(format!("/var/lib/herd-test/{name}"));
        let cluster = Cluster { name: name.clone(), index, config, data_dir, dir, down: false };
        // A cluster left over by an earlier, killed run of this test must go first.
        let _ = cluster.herd(&["down", "--name", &name, "--purge", "-t", "1"]);
        cluster.start(nodes, extra, env);
        cluster
    }

    /// `herd up --detach` of this cluster (again, after a `herd down` that kept its data).
    pub fn start(&self, nodes: usize, extra: &[&str], env: &[(&str, &str)]) {
        let index = self.index;
        let mut args: Vec<String> = vec![
            "up".into(),
            "--detach".into(),
            "--name".into(),
            self.name.clone(),
            "--nodes".into(),
            nodes.to_string(),
            "--subnet".into(),
            format!("10.99.{index}.0/24"),
            "--container-cidr".into(),
            format!("10.{}.0.0/16", 100 + index as u32),
            "--api-port".into(),
            (17700 + index as u32).to_string(),
            "--broker-port".into(),
            (17400 + index as u32).to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.command(&refs);
        // A test's layers need little room: the node's default reserve (5% of the
        // filesystem) would fail every test on a host disk that is merely full-ish.
        // A test of the reserve itself sets its own in `env`.
        cmd.env("HERD_NODE_DISK_RESERVE", TEST_DISK_RESERVE);
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("running herd up");
        assert!(out.status.success(), "herd up failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(HERD);
        cmd.args(args).env("HERD_CONFIG", &self.config).env_remove("RUST_LOG");
        cmd
    }

    /// Runs `herd ARGS` and returns its output, whatever its exit status.
    pub fn herd(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running herd")
    }

    /// Runs `herd ARGS`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.herd(args);
        assert!(
            out.status.success(),
            "herd {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs `herd ARGS`, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.herd(args);
        assert!(
            !out.status.success(),
            "herd {} should have failed but printed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// Runs `herd ARGS --json` and decodes its output.
    pub fn json<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("herd {} printed bad JSON ({e}): {out}", a.join(" ")))
    }

    pub fn container(&self, name: &str) -> herd_proto::api::ContainerInfo {
        self.json(&["inspect", name])
    }

    pub fn state(&self, name: &str) -> String {
        self.container(name).state.as_str().to_string()
    }

    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) -> herd_proto::api::ContainerInfo {
        wait_for(&format!("{name} to be {state}"), timeout, || {
            let c = self.container(name);
            (c.state.as_str() == state).then_some(c)
        })
    }

    /// Waits until `herd logs NAME` contains `needle`; returns the log.
    pub fn wait_log(&self, name: &str, needle: &str, timeout: Duration) -> String {
        wait_for(&format!("{needle:?} in the log of {name}"), timeout, || {
            let out = self.ok(&["logs", name]);
            out.contains(needle).then_some(out)
        })
    }

    /// Imports the busybox image as `busybox`.
    pub fn import_busybox(&self) {
        let rootfs = self.dir.path().join("busybox-rootfs");
        if !rootfs.exists() {
            herd_up::busybox_rootfs(&rootfs).unwrap();
        }
        self.ok(&["image", "import", "busybox", rootfs.to_str().unwrap()]);
    }

    /// Imports `busybox` with `/bin/memhog` (tests/fixtures/memhog.c, built statically) in it.
    pub fn import_busybox_with_memhog(&self) {
        self.import_busybox_with(&["memhog"]);
    }

    /// Imports `busybox` with test programs in `/bin`: each `tests/fixtures/NAME.c`, built
    /// statically.
    pub fn import_busybox_with(&self, programs: &[&str]) {
        let rootfs = self.dir.path().join("busybox-rootfs");
        if !rootfs.exists() {
            herd_up::busybox_rootfs(&rootfs).unwrap();
        }
        for name in programs {
            let source = format!("{}/tests/fixtures/{name}.c", env!("CARGO_MANIFEST_DIR"));
            let out = Command::new("gcc")
                .args(["-static", "-O2", "-o"])
                .arg(rootfs.join("bin").join(name))
                .arg(&source)
                .output()
                .expect("gcc (build-essential) is needed to build the test programs");
            assert!(out.status.success(), "building {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.ok(&["image", "import", "busybox", rootfs.to_str().unwrap()]);
    }

    /// Signs the manifest of checkpoint directory `dir` with the cluster's own key, read from
    /// the Control node's data directory: what someone who got past the signature would have
    /// (to test the checks behind it).
    pub fn sign_checkpoint(&self, dir: &Path) {
        let key_file = self.data_dir.join("control").join("checkpoint-signing.key");
        let key = herd_image::signing::SigningKey::parse(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
        let sig = key.sign(&std::fs::read(dir.join("checkpoint.json")).unwrap());
        std::fs::write(dir.join("checkpoint.sig"), herd_image::signing::signature_file(&sig)).unwrap();
    }

    /// The cluster's state file, as herd up wrote it.
    pub fn up_state(&self) -> herd_up::UpState {
        herd_up::UpState::load(&self.run_dir()).unwrap().expect("the cluster is up")
    }

    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from("/run/herd").join(&self.name)
    }

    pub fn agent_pid(&self, node: &str) -> Option<u32> {
        self.up_state().node_pids.iter().find(|(n, _)| n == node).and_then(|(_, p)| *p)
    }

    /// `path` as node `node` sees it: through its agent's root, in the node's own mount
    /// namespace (where its scratch tmpfs and container roots are mounted).
    pub fn node_view(&self, node: &str, path: &std::path::Path) -> PathBuf {
        let pid = self.agent_pid(node).unwrap_or_else(|| panic!("node {node} has no agent running"));
        PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path))
    }

    /// How a test connects to the cluster's broker, with `herd up`'s own credentials.
    pub fn broker_config(&self) -> herd_broker::BrokerConfig {
        let password = std::fs::read_to_string(self.run_dir().join("secrets/broker-up")).unwrap();
        herd_broker::BrokerConfig::new(self.up_state().layout.broker_url(), "test")
            .with_credentials("up", password.trim())
            .with_tls(Some(self.tls_files("up")))
    }

    /// The TLS files `herd up` issued to component `name` (`up`, `user`, `n1`, `control`...).
    pub fn tls_files(&self, name: &str) -> herd_tls::TlsFiles {
        herd_tls::TlsFiles::in_dir(&self.run_dir().join("secrets/tls"), name)
    }

    pub fn node_netns(&self, node: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(format!("herd-{}-{node}", self.name))
    }

    /// Stops the cluster now (also done on drop).
    pub fn down(&mut self) {
        if !self.down {
            self.down = true;
            let out = self.herd(&["down", "--name", &self.name, "--purge", "-t", "1"]);
            assert!(out.status.success(), "herd down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

impl Cluster {
    /// Prints what the cluster's components logged, to explain a failed test.
    pub fn dump_logs(&self) {
        // Keep every log whole for a closer look (the cluster's own directories are purged).
        let keep = std::env::temp_dir().join("herd-test-logs").join(&self.name);
        let _ = std::fs::remove_dir_all(&keep);
        let _ = std::fs::create_dir_all(&keep);
        if let Ok(entries) = std::fs::read_dir(self.run_dir().join("logs")) {
            for e in entries.flatten() {
                let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
            }
        }
        // CRIU's logs of failed restores, which the nodes keep.
        for node in std::fs::read_dir(self.run_dir().join("nodes")).into_iter().flatten().flatten() {
            for e in std::fs::read_dir(node.path().join("failed-restores")).into_iter().flatten().flatten() {
                let name = format!("{}-{}", node.file_name().to_string_lossy(), e.file_name().to_string_lossy());
                let _ = std::fs::copy(e.path(), keep.join(name));
            }
        }
        eprintln!("the cluster's logs are kept in {}", keep.display());
        eprintln!(
            "---- events of cluster {} ----\n{}",
            self.name,
            String::from_utf8_lossy(&self.herd(&["events"]).stdout)
        );
        let Ok(entries) = std::fs::read_dir(self.run_dir().join("logs")) else { return };
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            // A broker's debug log is long: its word on placing streams and on its peers first.
            let placement: Vec<&str> = lines
                .iter()
                .filter(|l| ["Peer selection", "placement", "peer", "offline"].iter().any(|w| l.contains(w)))
                .copied()
                .collect();
            if !placement.is_empty() {
                let last = &placement[placement.len().saturating_sub(60)..];
                eprintln!(
                    "---- {}: placement and peers (last {}) ----\n{}",
                    e.path().display(),
                    last.len(),
                    last.join("\n")
                );
            }
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!("---- {} (last {} lines) ----\n{}", e.path().display(), tail.len(), tail.join("\n"));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("HERD_TEST_KEEP_LOGS").is_some() {
            self.dump_logs();
        }
        if !self.down {
            self.down = true;
            let _ = self.herd(&["down", "--name", &self.name, "--purge", "-t", "1"]);
        }
    }
}

/// Sends one line over TCP to `ip:port` and returns what comes back.
pub fn tcp_exchange(ip: Ipv4Addr, port: u16, send: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(send.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A connection from the host to an echo server in a container (`nc -ll -p PORT -e cat`),
/// kept open through whatever a test does to the container.
pub struct EchoClient {
    writer: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl EchoClient {
    /// Connects to `ip:port` once the server accepts (within `timeout`).
    pub fn connect(ip: Ipv4Addr, port: u16, timeout: Duration) -> EchoClient {
        let stream = wait_for("the echo server to accept", timeout, || {
            std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(1)).ok()
        });
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        EchoClient { writer: stream.try_clone().unwrap(), reader: std::io::BufReader::new(stream) }
    }

    /// Sends `line` and returns the line that comes back (without its newline).
    pub fn echo(&mut self, line: &str) -> String {
        use std::io::{BufRead, Write};
        self.writer.write_all(format!("{line}\n").as_bytes()).expect("writing to the echo server");
        let mut back = String::new();
        self.reader.read_line(&mut back).expect("reading from the echo server");
        back.trim_end_matches('\n').to_string()
    }
}

impl Cluster {
    /// The nodes where runc has container `id`, with its runc status ("running", "paused",
    /// ...): the ground truth for "the container runs exactly once".
    pub fn runc_copies(&self, id: &str) -> Vec<(String, String)> {
        let mut copies = Vec::new();
        for node in &self.up_state().layout.nodes {
            let out = Command::new("runc")
                .arg("--root")
                .arg(node.run_dir.join("runc"))
                .args(["list", "--format", "json"])
                .output()
                .expect("running runc list");
            let list: Option<Vec<serde_json::Value>> = serde_json::from_slice(&out.stdout).unwrap_or(None);
            for c in list.unwrap_or_default() {
                if c["id"] == id {
                    let mut status = c["status"].as_str().unwrap_or("").to_string();
                    // runc calls a container "running" while its init is seized by CRIU, or
                    // killed and not reaped yet.
                    if status == "running" && !process_runs(c["pid"].as_u64().unwrap_or(0)) {
                        status = "stopped or dying".into();
                    }
                    copies.push((node.name.clone(), status));
                }
            }
        }
        copies
    }

    /// The memory limit of the cgroup that container `id`'s init process is in on `node`, as
    /// the kernel has it (cgroup v1 or v2), and that cgroup's path.
    pub fn memory_limit_on(&self, node: &str, id: &str) -> (String, u64) {
        let run_dir = self.node_layout(node).run_dir;
        let out = Command::new("runc").arg("--root").arg(run_dir.join("runc")).args(["state", id]).output().unwrap();
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runc state of the container");
        let pid = state["pid"].as_u64().expect("a running container has a pid");
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        // v1: "N:memory:/path"; v2 only: "0::/path".
        let v1 = cgroups.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()));
        let (path, file) = match v1 {
            Some(p) => (p.clone(), format!("/sys/fs/cgroup/memory{p}/memory.limit_in_bytes")),
            None => {
                let p = cgroups.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 line").to_string();
                (p.clone(), format!("/sys/fs/cgroup{p}/memory.max"))
            }
        };
        let limit = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        (path, limit.trim().parse().unwrap_or(u64::MAX))
    }

    /// Waits until `name` runs on `node` and nowhere else, as herd and runc both see it.
    pub fn wait_runs_only_on(&self, name: &str, node: &str, timeout: Duration) -> herd_proto::api::ContainerInfo {
        wait_for(&format!("{name} to run on {node} only"), timeout, || {
            let c = self.container(name);
            let copies = self.runc_copies(&c.id);
            (c.node == node && c.state.as_str() == "running" && copies == [(node.to_string(), "running".to_string())])
                .then_some(c)
        })
    }

    /// The address of `node` on the cluster network.
    pub fn node_address(&self, node: &str) -> Ipv4Addr {
        self.node_layout(node).address
    }

    /// Where `herd up` put node `node`: its address, directories and namespaces.
    pub fn node_layout(&self, node: &str) -> herd_up::NodeLayout {
        let nodes = self.up_state().layout.nodes;
        nodes.into_iter().find(|n| n.name == node).unwrap_or_else(|| panic!("{node} is not a node of the cluster"))
    }
}

impl Cluster {
    /// Waits until node `node` has an agent other than `old_pid` that serves requests (it
    /// subscribes before its first heartbeat, so a heartbeat newer than its start shows it).
    pub fn wait_agent_restarted(&self, node: &str, old_pid: u32, timeout: Duration) {
        wait_for(&format!("a new agent on {node}"), timeout, || self.agent_pid(node).filter(|p| *p != old_pid));
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        wait_for(&format!("the new agent on {node} to heartbeat"), timeout, || {
            let nodes: Vec<herd_proto::api::NodeInfo> = self.json(&["nodes"]);
            let n = nodes.into_iter().find(|n| n.name == node)?;
            (n.last_heartbeat.is_some_and(|t| t > since) && n.state == herd_proto::api::NodeState::Ready).then_some(())
        });
    }
}

/// Whether process `pid` exists and runs: not a zombie, not stopped (CRIU seizes the tasks it
/// dumps with ptrace, and runc still calls such a container "running").
pub fn process_runs(pid: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state is the first field after the parenthesised command name.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if pid == 0 || matches!(state, Some("Z" | "X" | "x" | "t" | "T")) {
        return false;
    }
    // A task with SIGKILL pending is on its way out (CRIU kills what it dumped that way).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let sigkill_pending = status.lines().any(|l| {
        let Some((key, mask)) = l.split_once(':') else { return false };
        matches!(key, "SigPnd" | "ShdPnd") && u64::from_str_radix(mask.trim(), 16).is_ok_and(|m| m & (1 << 8) != 0)
    });
    !sigkill_pending
}

/// A counter for migration and checkpoint tests: each line is the next number and what the
/// writable layer's file held, which must be the previous number.
pub const COUNTER: &str =
    "i=0; while true; do echo \"n=$i s=$(cat /state 2>/dev/null)\"; echo $i > /state; i=$((i+1)); sleep 0.05; done";

/// Checks a [`COUNTER`]'s log is one unbroken sequence with its file in step; returns its length.
pub fn counted(log: &str) -> u64 {
    let mut next = 0;
    for line in log.lines() {
        let Some((n, s)) = line.strip_prefix("n=").and_then(|r| r.split_once(" s=")) else { continue };
        let n: u64 = n.parse().unwrap();
        assert_eq!(n, next, "the counter skipped or repeated: {line:?} after {}", next as i64 - 1);
        if n > 0 {
            assert_eq!(s, (n - 1).to_string(), "the writable layer lost its content at {line:?}");
        }
        next += 1;
    }
    next
}

impl Cluster {
    /// Waits until [`COUNTER`] container `name` has counted 20 past `seen`, its whole log one
    /// unbroken sequence; returns the new count.
    /// Like [`Cluster::counts_on`], asking again when `herd logs` fails: for tests that fail
    /// a broker or a Control replica over, during which a command may fail with an error.
    pub fn counts_on_through_failover(&self, name: &str, seen: u64, timeout: Duration) -> u64 {
        wait_for(&format!("{name} to count on"), timeout, || {
            let out = self.herd(&["logs", name]);
            if !out.status.success() {
                eprintln!("herd logs: {}", String::from_utf8_lossy(&out.stderr).trim());
                return None;
            }
            let n = counted(&String::from_utf8_lossy(&out.stdout));
            (n > seen + 20).then_some(n)
        })
    }

    pub fn counts_on(&self, name: &str, seen: u64, timeout: Duration) -> u64 {
        wait_for(&format!("{name} to count on"), timeout, || {
            let n = counted(&self.ok(&["logs", name]));
            (n > seen + 20).then_some(n)
        })
    }

    /// Waits until memhog container `name` has checked its memory `more` more times, and
    /// asserts it never found it corrupted; returns the log.
    pub fn memhog_checks_more(&self, name: &str, more: usize, timeout: Duration) -> String {
        let checks = |log: &str| log.lines().filter(|l| l.ends_with(" ok")).count();
        let before = checks(&self.ok(&["logs", name]));
        wait_for(&format!("{name} to check its memory {more} more times"), timeout, || {
            let log = self.ok(&["logs", name]);
            assert!(!log.contains("CORRUPT"), "{name}'s memory was corrupted: {log}");
            (checks(&log) >= before + more).then_some(log)
        })
    }
}

/// A node agent stopped with SIGSTOP (a node that goes silent); continued on
/// [`StoppedAgent::resume`] or, whatever happens, on drop.
pub struct StoppedAgent(nix::unistd::Pid);

impl StoppedAgent {
    pub fn resume(self) {
        nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT).unwrap();
    }
}

impl Drop for StoppedAgent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

impl Cluster {
    /// Runs busybox container `name` on `node` spinning on the CPU, limited to `cpus`.
    pub fn run_cpu_burner(&self, name: &str, node: &str, cpus: &str) {
        self.ok(&[
            "run",
            "--name",
            name,
            "--node",
            node,
            "--cpus",
            cpus,
            "busybox",
            "--",
            "sh",
            "-c",
            "while :; do :; done",
        ]);
    }

    /// Stops node `node`'s agent with SIGSTOP until the returned guard resumes it.
    pub fn stop_agent(&self, node: &str) -> StoppedAgent {
        let pid = nix::unistd::Pid::from_raw(self.agent_pid(node).expect("agent pid") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        StoppedAgent(pid)
    }
}
