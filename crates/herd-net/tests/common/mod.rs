//! Shared by the integration tests: the root check, a cleanup guard that
//! removes everything a test created (even when an assertion fails), and
//! helpers that run `ip`/`ping` inside a namespace to check the results.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use herd_net::{NetError, Netlink, Netns};
use ipnet::Ipv4Net;

/// Fails the test (never skips it) when not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the herd-net integration tests need root (they create network namespaces, veths, \
         bridges and routes): run them as root, e.g. `sudo -E cargo test -p herd-net`"
    );
}

pub fn pid() -> u32 {
    std::process::id()
}

/// An interface name unique to this test process: `<prefix><pid in hex><suffix>`.
pub fn unique_ifname(prefix: &str, suffix: &str) -> String {
    let name = format!("{prefix}{:x}{suffix}", pid());
    assert!(name.len() <= 15, "test interface name {name} too long");
    name
}

/// Third octet of a 10.199.N.0/24 pair (N and N+1) for a test that touches the
/// host's routing table, varied by pid so two concurrent test runs rarely meet.
pub fn host_subnet_octet() -> u8 {
    (2 * (pid() % 100)) as u8
}

/// Everything a test creates, removed on drop (or by [`Cleanup::teardown`]):
/// host routes, host links, pinned namespaces and the test's directory.
/// Record each thing before creating it, so a half-made one is removed too.
pub struct Cleanup {
    pub dir: PathBuf,
    state: Mutex<Recorded>,
    done: bool,
}

#[derive(Default, Clone)]
struct Recorded {
    host_routes: Vec<Ipv4Net>,
    host_links: Vec<String>,
    netns: Vec<PathBuf>,
}

impl Cleanup {
    pub fn new(tag: &str) -> Cleanup {
        let dir = std::env::temp_dir().join(format!("herd-net-test-{}-{tag}", pid()));
        Cleanup { dir, state: Mutex::default(), done: false }
    }

    pub fn host_route(&self, dest: Ipv4Net) {
        self.state.lock().unwrap().host_routes.push(dest);
    }

    pub fn host_link(&self, name: &str) {
        self.state.lock().unwrap().host_links.push(name.to_string());
    }

    /// Records and creates a pinned namespace `name` under the test directory.
    pub fn netns(&self, name: &str) -> Netns {
        let path = self.dir.join(name);
        self.state.lock().unwrap().netns.push(path.clone());
        Netns::create(&path).unwrap_or_else(|e| panic!("creating netns {name}: {e}"))
    }

    pub fn netns_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Removes everything and returns what is still there afterwards.
    pub fn teardown(mut self) -> Vec<String> {
        self.done = true;
        let recorded = self.state.lock().unwrap().clone();
        run_cleanup(&self.dir, &recorded);
        leftovers(&self.dir, &recorded)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.done {
            let recorded = self.state.lock().unwrap().clone();
            run_cleanup(&self.dir, &recorded);
        }
    }
}

/// Removes what was recorded, with this crate, on a thread with its own
/// runtime (a Drop may run inside the test's runtime, which cannot block).
/// Never panics: it may run while a failed test unwinds.
fn run_cleanup(dir: &Path, recorded: &Recorded) {
    let recorded = recorded.clone();
    let dir = dir.to_path_buf();
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cleanup runtime");
        runtime.block_on(async {
            match Netlink::new() {
                Ok(host) => {
                    for dest in &recorded.host_routes {
                        if let Err(e) = host.delete_route(*dest).await {
                            eprintln!("cleanup: {e}");
                        }
                    }
                    for link in &recorded.host_links {
                        if let Err(e) = host.delete_link(link).await {
                            eprintln!("cleanup: {e}");
                        }
                    }
                }
                Err(e) => eprintln!("cleanup: {e}"),
            }
        });
        for path in recorded.netns.iter().rev() {
            if let Err(e) = Netns::remove(path) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Err(e) = std::fs::remove_dir(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cleanup: removing {}: {e}", dir.display());
        }
    })
    .join();
    if joined.is_err() {
        eprintln!("cleanup thread panicked");
    }
}

/// What remains of the recorded things, as human-readable lines.
fn leftovers(dir: &Path, recorded: &Recorded) -> Vec<String> {
    let mut left = Vec::new();
    for link in &recorded.host_links {
        if ip_host(&["link", "show", "dev", link]).status.success() {
            left.push(format!("host link {link}"));
        }
    }
    for dest in &recorded.host_routes {
        let out = ip_host(&["-4", "route", "show", &dest.to_string()]);
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            left.push(format!("host route {dest}"));
        }
    }
    let temp_prefix = format!("ht{:06x}", pid() & 0xff_ffff);
    let links = String::from_utf8_lossy(&ip_host(&["-o", "link"]).stdout).to_string();
    if links.contains(&temp_prefix) {
        left.push(format!("temporary veth {temp_prefix}* in the host netns"));
    }
    for path in &recorded.netns {
        if path.exists() {
            left.push(format!("netns file {}", path.display()));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mountinfo.contains(dir.to_str().unwrap()) {
        left.push(format!("mounts under {}", dir.display()));
    }
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    left
}

/// Runs `ip ARGS` in the host (the test's) namespace.
pub fn ip_host(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("running ip (is iproute2 installed?)")
}

/// Runs `ip ARGS` inside `ns`; returns stdout, panics with stderr on failure.
pub fn ip_in(ns: &Netns, args: &[&str]) -> String {
    let out = ip_in_raw(ns, args);
    assert!(
        out.status.success(),
        "ip {} in {}: {}",
        args.join(" "),
        ns.path().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `ip ARGS` inside `ns` and returns its output whatever the status.
pub fn ip_in_raw(ns: &Netns, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ns.run(move || Command::new("ip").args(&args).output())
        .expect("entering netns")
        .expect("running ip (is iproute2 installed?)")
}

/// Interface names in `ns`.
pub fn links_in(ns: &Netns) -> Vec<String> {
    ip_in(ns, &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap().to_string())
        .collect()
}

/// `ping` (iputils) if installed, else busybox's.
fn ping_command() -> Command {
    let has = |prog: &str| Command::new(prog).arg("--help").output().map(|_| true).unwrap_or(false);
    if has("ping") {
        Command::new("ping")
    } else if has("busybox") {
        let mut c = Command::new("busybox");
        c.arg("ping");
        c
    } else {
        panic!("no ping: install iputils-ping or busybox-static");
    }
}

/// One ping (`-c1 -W2`) to `dest` from the test's namespace, or from `from`.
pub fn ping(from: Option<&Netns>, dest: Ipv4Addr) -> Result<(), String> {
    let run = move || {
        let mut cmd = ping_command();
        cmd.args(["-c1", "-W2", &dest.to_string()]).output()
    };
    let out = match from {
        Some(ns) => ns.run(run).map_err(|e| e.to_string())?,
        None => run(),
    }
    .map_err(|e| format!("running ping: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ping {dest} from {}: {}{}",
            from.map(|n| n.path().display().to_string()).unwrap_or_else(|| "the host".into()),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Reads a sysctl inside `ns`.
pub fn sysctl_in(ns: &Netns, key: &str) -> String {
    let key = key.to_string();
    ns.run(move || herd_net::read_sysctl(&key)).expect("entering netns").unwrap_or_else(|e| panic!("{e}"))
}

pub fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

pub fn assert_not_found<T: std::fmt::Debug>(r: Result<T, NetError>) {
    assert!(matches!(r, Err(NetError::NotFound(_))), "expected NotFound, got {r:?}");
}
