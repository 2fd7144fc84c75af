//! Integration tests of the shim, runc wrapper and logs against the real runc and
//! CRIU, and of a migration's pages over CRIU's TLS through Herd's relays. A `harness =
//! false` test: this binary is also the shim (`<exe> shim <args>` runs `shim_main`), the page
//! proxy (`<exe> page-proxy <args>`, as `herd page-proxy`) and a throw-away "agent" (`<exe>
//! spawner <args>` spawns a shim, prints its pids and exits).
//!
//! Needs root, runc, CRIU (/usr/local/sbin/criu or on PATH) and /bin/busybox; fails
//! (never skips) without them. Run `cargo test -p herd-node --test shim -- NAME` to
//! run the cases whose names contain NAME.

use std::ffi::OsString;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd_node::logs::{Log, LogLimits};
use herd_node::runc::{CheckpointOpts, Runc};
use herd_node::shim::{
    self, CONTAINER_PID_FILE, ShimArgs, ShimError, ShimMode, ShimStarted, live_shim, read_exit, spawn_shim,
    spawn_shim_timeout, wait_for_exit,
};
use herd_proto::node::{LogEntry, LogStream};
use tokio::runtime::Runtime;

const CRIU: &str = "/usr/local/sbin/criu";
const BUSYBOX: &str = "/bin/busybox";
/// Upper bound for every condition polled for.
const WAIT: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("shim") => match ShimArgs::parse(&args[2..]) {
            Ok(a) => shim::shim_main(a),
            Err(e) => {
                eprintln!("shim: {e}");
                std::process::exit(2);
            }
        },
        Some("spawner") => spawner(&args[2..]),
        Some("page-proxy") => page_proxy(&args[2..]),
        _ => {}
    }
    let arguments = libtest_mimic::Arguments::from_args();
    if let Err(e) = prerequisites() {
        eprintln!("herd-node shim tests cannot run: {e}");
        std::process::exit(1);
    }
    let env = std::sync::Arc::new(Env::new());
    type Case = fn(&Env, &Runtime);
    let cases: [(&str, Case); 11] = [
        ("exit_code_and_streams", exit_code_and_streams),
        ("kill_gives_137", kill_gives_137),
        ("shim_outlives_its_spawner", shim_outlives_its_spawner),
        ("runc_failure_is_reported_and_cleaned", runc_failure_is_reported_and_cleaned),
        ("checkpoint_restore_continues_log", checkpoint_restore_continues_log),
        ("pipes_held_open_after_exit", pipes_held_open_after_exit),
        ("start_timeout_kills_the_shim", start_timeout_kills_the_shim),
        ("a_stuck_restore_is_killed_whole", a_stuck_restore_is_killed_whole),
        ("tls_cold_pages_through_the_relays", tls_cold_pages_through_the_relays),
        ("tls_lazy_pages_through_page_proxies", tls_lazy_pages_through_page_proxies),
        ("tls_page_server_refuses_another_cluster", tls_page_server_refuses_another_cluster),
    ];
    let trials = cases
        .into_iter()
        .map(|(name, case)| {
            let env = env.clone();
            libtest_mimic::Trial::test(name, move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
                std::panic::catch_unwind(AssertUnwindSafe(|| case(&env, &rt))).map_err(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into());
                    libtest_mimic::Failed::from(msg)
                })
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&arguments, trials);
    drop(env);
    conclusion.exit();
}

/// `<exe> spawner <shim args>`: start a shim, print its pids as JSON, exit.
fn spawner(args: &[OsString]) -> ! {
    let args = ShimArgs::parse(args).expect("spawner: shim arguments");
    let exe = std::env::current_exe().expect("current_exe");
    match spawn_shim(&exe, &["shim"], &args) {
        Ok(s) => {
            println!("{}", serde_json::to_string(&s).unwrap());
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("spawner: {e}");
            std::process::exit(1)
        }
    }
}

/// `herd page-proxy`, as the herd binary runs it.
fn page_proxy(args: &[OsString]) -> ! {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let args = herd_node::pageproxy::ProxyArgs::parse(&args).expect("page-proxy: arguments");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(herd_node::pageproxy::run(args)) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("page-proxy: {e:#}");
            std::process::exit(1)
        }
    }
}

fn prerequisites() -> Result<(), String> {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return Err("they must run as root (runc and CRIU need it)".into());
    }
    if which("runc").is_none() {
        return Err("runc is not installed (apt-get install runc)".into());
    }
    if criu().is_none() {
        return Err(format!("CRIU is missing: neither {CRIU} nor criu on PATH (see shared/PLATFORM.md)"));
    }
    if !Path::new(BUSYBOX).exists() {
        return Err(format!("{BUSYBOX} is missing (apt-get install busybox-static)"));
    }
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn criu() -> Option<PathBuf> {
    if Path::new(CRIU).is_file() { Some(CRIU.into()) } else { which("criu") }
}

/// What all cases share: a runc root, a temporary directory and a cgroup parent,
/// all removed on drop.
struct Env {
    runc: Runc,
    dir: PathBuf,
    cgroup_parent: String,
    exe: PathBuf,
}

impl Env {
    fn new() -> Env {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("herd-test-{pid}"));
        std::fs::create_dir_all(&dir).unwrap();
        Env {
            runc: Runc {
                binary: which("runc").unwrap(),
                root: PathBuf::from(format!("/run/herd-test-{pid}")),
                criu: criu(),
            },
            dir,
            cgroup_parent: format!("herd-test-{pid}"),
            exe: std::env::current_exe().unwrap(),
        }
    }

    /// A fresh container for one case: bundle (busybox rootfs + config.json running
    /// `sh -c script`) and state directory.
    fn case(&self, name: &str, args: &[&str]) -> Case<'_> {
        self.case_ns(name, args, true)
    }

    /// [`Env::case`], with or without a pid namespace.
    fn case_ns(&self, name: &str, args: &[&str], pid_ns: bool) -> Case<'_> {
        let id = format!("herd-test-{}-{name}", std::process::id());
        let base = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&base);
        let bundle = base.join("bundle");
        let bin = bundle.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
        for tool in ["sh", "sleep", "echo", "cat", "ls", "true", "false", "seq"] {
            std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
        }
        for d in ["proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(bundle.join("rootfs").join(d)).unwrap();
        }
        let cgroup = format!("/{}/{id}", self.cgroup_parent);
        std::fs::write(bundle.join("config.json"), config_json(args, &cgroup, pid_ns)).unwrap();
        let state_dir = base.join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        Case { env: self, id, base, bundle, state_dir, cgroup }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Anything a case left behind (a case's own guard normally did it all).
        if let Ok(out) = Command::new(&self.runc.binary)
            .arg("--root")
            .arg(&self.runc.root)
            .args(["list", "-q"])
            .stderr(Stdio::null())
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.runc.delete_force_blocking(id);
            }
        }
        kill_cgroup_processes(&self.cgroup_parent);
        remove_cgroups(&self.cgroup_parent);
        let _ = std::fs::remove_dir_all(&self.runc.root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config_json(args: &[&str], cgroups_path: &str, pid_ns: bool) -> String {
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let mut namespaces = vec![
        serde_json::json!({ "type": "ipc" }),
        serde_json::json!({ "type": "uts" }),
        serde_json::json!({ "type": "mount" }),
        serde_json::json!({ "type": "network" }),
    ];
    if pid_ns {
        namespaces.insert(0, serde_json::json!({ "type": "pid" }));
    }
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "herd-test",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    serde_json::to_string_pretty(&config).unwrap()
}

/// One container of one case; on drop kills its shim and container and removes its
/// runc state, cgroup and files.
struct Case<'a> {
    env: &'a Env,
    id: String,
    base: PathBuf,
    bundle: PathBuf,
    state_dir: PathBuf,
    cgroup: String,
}

impl Case<'_> {
    fn args(&self, mode: ShimMode) -> ShimArgs {
        ShimArgs {
            id: self.id.clone(),
            state_dir: self.state_dir.clone(),
            bundle: self.bundle.clone(),
            runc: self.env.runc.clone(),
            mode,
            start_timeout: shim::START_TIMEOUT,
            log: LogLimits::default(),
        }
    }

    fn spawn(&self, mode: ShimMode) -> Result<ShimStarted, ShimError> {
        spawn_shim(&self.env.exe, &["shim"], &self.args(mode))
    }

    fn log(&self) -> Vec<LogEntry> {
        Log::new(&self.state_dir).read(0, u64::MAX).unwrap().entries
    }
}

impl Drop for Case<'_> {
    fn drop(&mut self) {
        if let Some(pid) = live_shim(&self.state_dir) {
            // SAFETY: plain syscall; live_shim checked the pid is our shim.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        kill_cgroup_processes(self.cgroup.trim_start_matches('/'));
        if let Err(e) = self.env.runc.delete_force_blocking(&self.id) {
            eprintln!("cleanup: {e}");
        }
        remove_cgroups(self.cgroup.trim_start_matches('/'));
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// SIGKILLs every process in the cgroup `rel` (and below) of the pids hierarchy.
fn kill_cgroup_processes(rel: &str) {
    fn walk(dir: &Path) {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: plain syscall.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&e.path());
                }
            }
        }
    }
    for hierarchy in ["pids", "freezer", "memory"] {
        let dir = Path::new("/sys/fs/cgroup").join(hierarchy).join(rel);
        if dir.is_dir() {
            // Thaw first: frozen processes do not die.
            let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
            walk(&dir);
        }
    }
}

/// Removes the cgroup directory `rel` (and everything below it) in every hierarchy.
fn remove_cgroups(rel: &str) {
    fn remove_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    remove_tree(&e.path());
                }
            }
        }
        // Processes just killed may take a moment to leave the cgroup.
        let until = Instant::now() + Duration::from_secs(5);
        while let Err(e) = std::fs::remove_dir(dir) {
            if e.kind() == std::io::ErrorKind::NotFound || Instant::now() > until {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("cleanup: cannot remove cgroup {}: {e}", dir.display());
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            let dir = h.path().join(rel);
            if dir.is_dir() {
                remove_tree(&dir);
            }
        }
    }
}

/// Polls `f` until it returns `Some`, failing after [`WAIT`].
fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {WAIT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_shim_exit(rt: &Runtime, pid: u32) {
    rt.block_on(async { tokio::time::timeout(WAIT, wait_for_exit(pid)).await })
        .unwrap_or_else(|_| panic!("shim {pid} did not exit within {WAIT:?}"))
        .expect("wait_for_exit");
}

/// The parent pid of `pid` (from /proc/<pid>/stat).
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn numbers(entries: &[LogEntry]) -> Vec<u64> {
    entries
        .iter()
        .map(|e| {
            assert_eq!(e.stream, LogStream::Stdout, "unexpected entry {e:?}");
            e.line.parse().unwrap_or_else(|_| panic!("not a number: {e:?}"))
        })
        .collect()
}

fn assert_consecutive(nums: &[u64], from: u64) {
    for (i, n) in nums.iter().enumerate() {
        assert_eq!(*n, from + i as u64, "log not consecutive: {nums:?}");
    }
}

const COUNTER: &str = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.2; done";

// ---------------------------------------------------------------------------
// The cases.

/// (1) Output on both streams lands in log.jsonl; exit code 3 is collected.
fn exit_code_and_streams(env: &Env, rt: &Runtime) {
    let c = env.case(
        "exit3",
        &["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2; printf 'no newline'; exit 3"],
    );
    let started = c.spawn(ShimMode::Run).expect("spawn_shim");
    assert!(started.container_pid > 0 && started.shim_pid > 0);
    assert_ne!(started.shim_pid, std::process::id());
    let pid_file = std::fs::read_to_string(c.state_dir.join(CONTAINER_PID_FILE)).unwrap();
    assert_eq!(pid_file.trim(), started.container_pid.to_string());

    wait_shim_exit(rt, started.shim_pid);
    let exit = read_exit(&c.state_dir).expect("exit.json after the shim exited");
    assert_eq!(exit.code, 3);
    assert_eq!(exit.signal, None);
    assert!(exit.finished_at > 0);
    assert_eq!(live_shim(&c.state_dir), None);

    let log = c.log();
    let of = |s: LogStream| log.iter().filter(|e| e.stream == s).map(|e| e.line.as_str()).collect::<Vec<_>>();
    assert_eq!(of(LogStream::Stdout), ["out1", "out2", "no newline"], "log: {log:?}");
    assert_eq!(of(LogStream::Stderr), ["err1", "err2"], "log: {log:?}");
    assert!(log.iter().all(|e| e.time > 0 && e.time <= exit.finished_at + 1000));
    let log = Log::new(&c.state_dir);
    let t = log.tail_offset(2).unwrap();
    assert_eq!(log.read(t, u64::MAX).unwrap().entries.len(), 2);

    let version = rt.block_on(env.runc.version()).expect("runc version");
    assert!(version.starts_with("1."), "runc version {version}");

    // runc still knows the stopped container until it is deleted.
    let state = rt.block_on(env.runc.state(&c.id)).unwrap().expect("runc state");
    assert_eq!(state.status, "stopped");
    rt.block_on(env.runc.delete(&c.id, false)).unwrap();
    assert_eq!(rt.block_on(env.runc.state(&c.id)).unwrap(), None);
    rt.block_on(env.runc.delete(&c.id, false)).expect("deleting a deleted container is fine");
}

/// (2) A long-running counter killed with SIGKILL through runc exits with 137.
fn kill_gives_137(env: &Env, rt: &Runtime) {
    let c = env.case("kill", &["sh", "-c", COUNTER]);
    let started = c.spawn(ShimMode::Run).expect("spawn_shim");
    wait_until("3 lines of output", || (c.log().len() >= 3).then_some(()));

    assert_eq!(live_shim(&c.state_dir), Some(started.shim_pid));
    assert_ne!(ppid(started.shim_pid), Some(std::process::id()), "the shim is still our child");
    assert_eq!(ppid(started.container_pid), Some(started.shim_pid), "the shim is not the container's parent");
    // stdio on /dev/null, the signalfd, the log and two pipes: nothing inherited.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", started.shim_pid))
        .unwrap()
        .flatten()
        .map(|e| format!("{:?} -> {:?}", e.file_name(), std::fs::read_link(e.path()).unwrap_or_default()))
        .collect();
    assert!(fds.len() <= 7, "the shim holds unexpected descriptors: {fds:#?}");
    let state = rt.block_on(env.runc.state(&c.id)).unwrap().expect("runc state");
    assert_eq!((state.status.as_str(), state.pid), ("running", started.container_pid));
    let list = rt.block_on(env.runc.list()).unwrap();
    assert!(list.iter().any(|(id, s)| id == &c.id && s.pid == started.container_pid), "list: {list:?}");
    assert!(read_exit(&c.state_dir).is_none());

    rt.block_on(env.runc.kill(&c.id, libc::SIGKILL, false)).expect("runc kill");
    wait_shim_exit(rt, started.shim_pid);
    let exit = read_exit(&c.state_dir).expect("exit.json");
    assert_eq!((exit.code, exit.signal), (137, Some(9)));
    assert_eq!(live_shim(&c.state_dir), None);
    let nums = numbers(&c.log());
    assert!(nums.len() >= 3);
    assert_consecutive(&nums, 0);

    // runc's own error messages come through.
    let err = rt.block_on(env.runc.kill("herd-test-no-such-container", 9, false)).unwrap_err();
    assert!(err.to_string().contains("container does not exist"), "{err}");
    rt.block_on(env.runc.delete(&c.id, true)).unwrap();
}

/// (3) The shim survives the process that spawned it and keeps logging.
fn shim_outlives_its_spawner(env: &Env, rt: &Runtime) {
    let c = env.case("orphan", &["sh", "-c", COUNTER]);
    let output = Command::new(&env.exe)
        .arg("spawner")
        .args(c.args(ShimMode::Run).to_args())
        .stdin(Stdio::null())
        .output()
        .expect("run the spawner");
    assert!(output.status.success(), "spawner failed: {}", String::from_utf8_lossy(&output.stderr));
    let started: ShimStarted = serde_json::from_slice(&output.stdout).expect("spawner output");
    // The spawner has exited (and been reaped); its shim lives on and still logs.
    assert_eq!(live_shim(&c.state_dir), Some(started.shim_pid));
    let before = c.log().len();
    wait_until("3 more lines after the spawner exited", || (c.log().len() >= before + 3).then_some(()));
    assert_eq!(ppid(started.container_pid), Some(started.shim_pid));

    rt.block_on(env.runc.kill(&c.id, libc::SIGKILL, false)).expect("runc kill");
    wait_shim_exit(rt, started.shim_pid);
    assert_eq!(read_exit(&c.state_dir).map(|e| e.code), Some(137));
    assert_consecutive(&numbers(&c.log()), 0);
}

/// (4) A container that cannot start: runc's message, no runc state left.
fn runc_failure_is_reported_and_cleaned(env: &Env, rt: &Runtime) {
    let c = env.case("fail", &["/nonexistent"]);
    let err = c.spawn(ShimMode::Run).expect_err("starting /nonexistent must fail");
    let ShimError::Start(message) = &err else { panic!("unexpected error kind: {err:?}") };
    assert!(
        message.contains("/nonexistent") && message.contains("no such file or directory"),
        "not runc's message: {message}"
    );
    assert_eq!(rt.block_on(env.runc.state(&c.id)).unwrap(), None);
    assert!(!rt.block_on(env.runc.list()).unwrap().iter().any(|(id, _)| id == &c.id));
    assert!(!env.runc.root.join(&c.id).exists(), "runc state directory left behind");
    wait_until("the failed shim to exit", || live_shim(&c.state_dir).is_none().then_some(()));
    assert_eq!(read_exit(&c.state_dir), None);
}

/// A counter in case `name`, run under a shim until it has printed `lines` lines, then
/// checkpointed into `<base>/image` (CRIU kills it) and its shim gone: the case, its first
/// shim and the images.
fn checkpointed_counter<'a>(env: &'a Env, rt: &Runtime, name: &str, lines: usize) -> (Case<'a>, ShimStarted, PathBuf) {
    let c = env.case(name, &["sh", "-c", COUNTER]);
    let first = c.spawn(ShimMode::Run).expect("spawn_shim");
    wait_until(&format!("{lines} lines of output"), || (c.log().len() >= lines).then_some(()));
    let image_path = c.base.join("image");
    let mut opts = CheckpointOpts::new(image_path.clone(), c.base.join("dump-work"));
    opts.tcp_established = false;
    rt.block_on(env.runc.checkpoint(&c.id, &opts)).expect("runc checkpoint");
    wait_shim_exit(rt, first.shim_pid);
    (c, first, image_path)
}

/// (5) Checkpoint a counter, restore it under a new shim: the log continues.
fn checkpoint_restore_continues_log(env: &Env, rt: &Runtime) {
    let (c, first, image_path) = checkpointed_counter(env, rt, "ckpt", 5);
    // CRIU killed the dumped processes; the old shim saw that.
    let old_exit = read_exit(&c.state_dir).expect("exit.json of the checkpointed container");
    assert_eq!(old_exit.signal, Some(libc::SIGKILL));
    assert_eq!(rt.block_on(env.runc.state(&c.id)).unwrap(), None, "runc forgets a checkpointed container");
    let before = numbers(&c.log());
    assert_consecutive(&before, 0);
    let last = *before.last().unwrap();

    let mode = ShimMode::Restore {
        image_path: image_path.clone(),
        work_path: c.base.join("restore-work"),
        tcp_established: false,
        lazy_pages: false,
    };
    let second = c.spawn(mode).expect("restoring shim");
    assert_ne!(second.shim_pid, first.shim_pid);
    assert_eq!(read_exit(&c.state_dir), None, "the new shim removes the stale exit.json");
    assert_eq!(live_shim(&c.state_dir), Some(second.shim_pid));
    let state = rt.block_on(env.runc.state(&c.id)).unwrap().expect("runc state after restore");
    assert_eq!((state.status.as_str(), state.pid), ("running", second.container_pid));
    assert_eq!(ppid(second.container_pid), Some(second.shim_pid), "restored tree not reparented to the shim");

    wait_until("3 lines from the restored container", || (c.log().len() >= before.len() + 3).then_some(()));
    let after = numbers(&c.log()[before.len()..]);
    assert_eq!(after[0], last + 1, "the restored counter does not continue: before {before:?}, after {after:?}");
    assert_consecutive(&after, last + 1);

    rt.block_on(env.runc.kill(&c.id, libc::SIGKILL, false)).expect("runc kill");
    wait_shim_exit(rt, second.shim_pid);
    let exit = read_exit(&c.state_dir).expect("exit.json of the restored container");
    assert_eq!((exit.code, exit.signal), (137, Some(9)));
    assert_eq!(live_shim(&c.state_dir), None);
    assert_consecutive(&numbers(&c.log()), 0);
    rt.block_on(env.runc.delete(&c.id, false)).unwrap();
}

/// (6) The container's init exits while a process it left behind (possible without
/// a pid namespace) still holds the pipes: the shim gives up on them after the
/// grace period and still records the exit.
fn pipes_held_open_after_exit(env: &Env, rt: &Runtime) {
    let c = env.case_ns("grace", &["sh", "-c", "sleep 60 & echo started; exit 5"], false);
    let started = c.spawn(ShimMode::Run).expect("spawn_shim");
    let t0 = Instant::now();
    wait_shim_exit(rt, started.shim_pid);
    let took = t0.elapsed();
    assert!(took >= shim::EXIT_GRACE - Duration::from_millis(200), "the shim did not wait for the pipes: {took:?}");
    assert!(took < shim::EXIT_GRACE + Duration::from_secs(5), "the shim waited too long: {took:?}");
    let exit = read_exit(&c.state_dir).expect("exit.json");
    assert_eq!((exit.code, exit.signal), (5, None));
    assert_eq!(c.log().iter().map(|e| e.line.as_str()).collect::<Vec<_>>(), ["started"]);
    // runc kills what is left of a container without a pid namespace.
    rt.block_on(env.runc.delete(&c.id, true)).unwrap();
}

/// (7) A runc that never finishes: the shim kills it at its time limit and reports a
/// timeout, then exits.
fn start_timeout_kills_the_shim(env: &Env, _rt: &Runtime) {
    let c = env.case("hang", &["true"]);
    let fake = c.base.join("fake-runc");
    let marker = c.base.join("fake-runc.pid");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ncase \"$*\" in *delete*) exit 0;; esac\necho $$ > {}\nexec sleep 600\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut args = c.args(ShimMode::Run);
    args.runc.binary = fake;
    let t0 = Instant::now();
    let err = spawn_shim_timeout(&env.exe, &["shim"], &args, Duration::from_secs(1)).expect_err("must time out");
    assert!(matches!(err, ShimError::Timeout(_)), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    wait_until("the shim to die", || live_shim(&c.state_dir).is_none().then_some(()));
    // The fake runc (if it got as far as starting) died with its shim.
    let Ok(fake_pid) = std::fs::read_to_string(&marker) else {
        return;
    };
    let fake_pid: u32 = fake_pid.trim().parse().unwrap();
    wait_until("the fake runc to die", || {
        let state = std::fs::read_to_string(format!("/proc/{fake_pid}/stat")).unwrap_or_default();
        (state.is_empty() || state.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'))).then_some(())
    });
}

/// The processes that have a file under `dir` open, or their root or working directory in it.
fn processes_using(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let links = ["root", "cwd"]
                .into_iter()
                .map(|l| proc.join(l))
                .chain(std::fs::read_dir(proc.join("fd")).into_iter().flatten().flatten().map(|e| e.path()));
            links.filter_map(|l| std::fs::read_link(l).ok()).any(|target| target.starts_with(dir))
        })
        .collect()
}

/// (8) A restore CRIU never finishes (its pages image cut short: CRIU 4.2.1 spins on it) is
/// killed whole at the shim's time limit, or sooner when CRIU's log runs away: runc, CRIU and
/// the processes CRIU had restored, and runc's state of the container. A good checkpoint then
/// restores under the same id.
fn a_stuck_restore_is_killed_whole(env: &Env, rt: &Runtime) {
    let (c, _, good) = checkpointed_counter(env, rt, "stuck", 3);
    let before = numbers(&c.log());

    // A copy of the images whose largest pages image is cut to one page.
    let damaged = c.base.join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    let mut largest = (0, PathBuf::new());
    for e in std::fs::read_dir(&good).unwrap().flatten() {
        let to = damaged.join(e.file_name());
        let size = std::fs::copy(e.path(), &to).unwrap();
        if e.file_name().to_string_lossy().starts_with("pages-") && size > largest.0 {
            largest = (size, to);
        }
    }
    assert!(largest.0 > 4096, "CRIU wrote no pages image of more than a page");
    std::fs::OpenOptions::new().write(true).open(&largest.1).unwrap().set_len(4096).unwrap();

    let restore = |image: &Path, work: &str| ShimMode::Restore {
        image_path: image.to_path_buf(),
        work_path: c.base.join(work),
        tcp_established: false,
        lazy_pages: false,
    };
    let t0 = Instant::now();
    let limit = Duration::from_secs(3);
    let err = spawn_shim_timeout(&env.exe, &["shim"], &c.args(restore(&damaged, "work-damaged")), limit)
        .expect_err("a stuck restore must fail");
    let took = t0.elapsed();
    let ShimError::Timeout(message) = &err else { panic!("not a timeout: {err:?}") };
    assert!(
        message.contains("runc restore did not finish within") || message.contains("CRIU wrote more than"),
        "{message}"
    );
    assert!(took < limit + Duration::from_secs(5), "the stuck restore was given up only after {took:?}");

    // Nothing of it is left: no process (runc, CRIU, the restored tree), no mount CRIU made
    // in its work directory and no runc state.
    wait_until("every process of the stuck restore to be gone", || processes_using(&c.base).is_empty().then_some(()));
    let work = c.base.join("work-damaged");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> =
        mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| Path::new(p).starts_with(&work)).collect();
    assert!(left.is_empty(), "the stuck restore left mounts behind: {left:?}");
    assert!(!env.runc.root.join(&c.id).exists(), "runc's state of the container was left behind");
    assert_eq!(rt.block_on(env.runc.state(&c.id)).unwrap(), None);
    wait_until("the failed shim to exit", || live_shim(&c.state_dir).is_none().then_some(()));

    // The good checkpoint restores under the same id and counts on.
    let second = c.spawn(restore(&good, "work-good")).expect("restoring the good checkpoint");
    wait_until("the restored counter to count on", || (c.log().len() >= before.len() + 2).then_some(()));
    assert_eq!(numbers(&c.log()[before.len()..])[0], before.last().unwrap() + 1);
    rt.block_on(env.runc.kill(&c.id, libc::SIGKILL, false)).expect("runc kill");
    wait_shim_exit(rt, second.shim_pid);
    rt.block_on(env.runc.delete(&c.id, false)).unwrap();
}

// ---------------------------------------------------------------------------
// Pages over CRIU's TLS, through the relays a migration uses.

/// A cluster CA, the source node's and the destination node's TLS files (in `dir`).
fn node_certificates(dir: &Path) -> (herd_tls::TlsFiles, herd_tls::TlsFiles) {
    use herd_tls::ca::{ClusterCa, Role, Subject};
    let week = Duration::from_secs(7 * 86400);
    let ca = ClusterCa::init(&dir.join("ca"), "test").unwrap();
    let node = |name: &str| Subject::new(name, Role::Node).with_ip([127, 0, 0, 1].into());
    let source = ca.issue_into(&node("source"), week, &dir.join("source")).unwrap();
    let destination = ca.issue_into(&node("destination"), week, &dir.join("destination")).unwrap();
    (source, destination)
}

/// Case `name`, running `args`, whose runc passes CRIU a node's configuration file with
/// TLS (`files`), as an agent's containers do.
fn tls_case<'a>(env: &'a Env, name: &str, args: &[&str], files: &herd_tls::TlsFiles) -> Case<'a> {
    let c = env.case(name, args);
    let run_dir = c.base.join("node-run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let conf = herd_node::criu_config::write(&run_dir, Some(files), None).unwrap();
    let config_path = c.bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["annotations"] = serde_json::json!({ herd_node::criu_config::ANNOTATION: conf.display().to_string() });
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    c
}

/// A counter in case `name` with the source node's CRIU configuration (TLS included),
/// running until it printed 5 lines. Returns the case, the source's and the destination's
/// TLS files.
fn tls_counter<'a>(env: &'a Env, name: &str) -> (Case<'a>, herd_tls::TlsFiles, herd_tls::TlsFiles) {
    let (source, destination) = node_certificates(&env.dir.join(format!("{name}-tls")));
    let c = tls_case(env, name, &["sh", "-c", COUNTER], &source);
    c.spawn(ShimMode::Run).expect("spawn_shim");
    wait_until("5 lines of output", || (c.log().len() >= 5).then_some(()));
    (c, source, destination)
}

/// The destination's listener of a migration, with the destination node's TLS.
async fn tls_listener(
    destination: &herd_tls::TlsFiles,
) -> (herd_node::transfer::Listener, herd_node::transfer::Ticket) {
    use herd_node::transfer::{Budget, Listener, Ticket, TransferTls};
    let ticket = Ticket::generate("m-criu-tls");
    let tls = TransferTls::new(destination).unwrap();
    let listener =
        Listener::bind_with([127, 0, 0, 1].into(), ticket.clone(), Budget::unlimited(), Some(tls)).await.unwrap();
    (listener, ticket)
}

/// The pages connection the listener accepted next.
async fn accept_pages(listener: &herd_node::transfer::Listener) -> tokio::net::TcpStream {
    match tokio::time::timeout(WAIT, listener.accept()).await.expect("no pages connection").unwrap() {
        herd_node::transfer::Accepted::Pages(s) => s,
        other => panic!("not a pages connection: {other:?}"),
    }
}

/// Copies the files of `from` that `to` does not have (the images the control connection
/// would carry beside the pages).
fn merge_images(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if !target.exists() {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Asserts that CRIU's log `log` shows a completed TLS handshake.
fn assert_tls_in_log(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(text.contains("TLS handshake completed"), "no TLS handshake in {}:\n{}", log.display(), tail(&text));
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Restores into case `c` from `images` (lazily when `lazy`) under a new shim, and checks
/// that its counter continues where `before` ended (the log of `c` continues `before`, or
/// starts after it when `c` is another case than the checkpointed one).
fn restore_and_check(c: &Case, images: &Path, work: &Path, lazy: bool, before: &[u64]) -> ShimStarted {
    let mode = ShimMode::Restore {
        image_path: images.to_path_buf(),
        work_path: work.to_path_buf(),
        tcp_established: false,
        lazy_pages: lazy,
    };
    let restored = c.spawn(mode).expect("restoring shim");
    let known = numbers(&c.log()).len().min(before.len());
    wait_until("3 lines from the restored container", || (c.log().len() >= known + 3).then_some(()));
    let after = numbers(&c.log()[known..]);
    assert_consecutive(&after, before.last().unwrap() + 1);
    restored
}

/// (9) Cold: the source's dump (runc checkpoint, CRIU told TLS by the configuration file)
/// sends pages through the source's relay, the migration's pages connection and the
/// destination's relay to a `criu page-server` with the destination's TLS files; both CRIUs
/// log the TLS handshake, and the container restores from what arrived.
fn tls_cold_pages_through_the_relays(env: &Env, _rt: &Runtime) {
    use herd_node::page_server::{connect_local, free_local_port, page_server_command};
    use herd_node::relay::relay;
    use herd_node::transfer::{Budget, connect_pages};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (c, _source, destination) = tls_counter(env, "tls-cold");
    let (src_images, dst_images, work) = (c.base.join("src-images"), c.base.join("dst-images"), c.base.join("dst"));
    std::fs::create_dir_all(&dst_images).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let criu = env.runc.criu.clone().unwrap();
    let before = numbers(&c.log());
    rt.block_on(async {
        let (listener, ticket) = tls_listener(&destination).await;
        let addr = listener.local_addr();
        // The destination: a page server for the pages connection, relayed (as migrate.rs).
        let receiving = {
            let (dst_images, work, criu) = (dst_images.clone(), work.clone(), criu.clone());
            tokio::spawn(async move {
                let stream = accept_pages(&listener).await;
                let port = free_local_port().unwrap();
                let cmd =
                    page_server_command(&criu, port, &dst_images, &work, "page-server.log", None, Some(&destination));
                let mut child = tokio::process::Command::from(cmd).spawn().unwrap();
                let local = connect_local(port, WAIT).await.unwrap();
                let relayed = relay(stream, local, &Budget::unlimited()).await;
                (child.wait().await.unwrap(), relayed)
            })
        };
        // The source: runc checkpoint's CRIU connects to a local relay to the destination.
        let remote = connect_pages(addr, &ticket).await.unwrap();
        let proxy = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let mut opts = CheckpointOpts::new(src_images.clone(), c.base.join("dump-work"));
        opts.tcp_established = false;
        opts.page_server = Some(proxy.local_addr().unwrap());
        let sending = tokio::spawn(async move {
            let (local, _) = proxy.accept().await.unwrap();
            relay(local, remote, &Budget::unlimited()).await
        });
        let dumped = tokio::time::timeout(WAIT, env.runc.checkpoint(&c.id, &opts)).await.expect("the dump hangs");
        let dump_log = c.base.join("dump-work/dump.log");
        if let Err(e) = dumped {
            panic!("runc checkpoint: {e}\n{}", tail(&std::fs::read_to_string(&dump_log).unwrap_or_default()));
        }
        let (sent, _) = tokio::time::timeout(WAIT, sending).await.expect("the source's relay hangs").unwrap().unwrap();
        let (status, received) = tokio::time::timeout(WAIT, receiving).await.expect("the page server hangs").unwrap();
        let ps_log = work.join("page-server.log");
        assert!(status.success(), "criu page-server: {status}\n{}", tail(&std::fs::read_to_string(&ps_log).unwrap()));
        let (received, _) = received.unwrap();
        assert_eq!(sent, received, "both relays moved the same bytes");
        assert!(sent > 32 << 10, "only {sent} bytes of pages");
        assert_tls_in_log(&dump_log);
        assert_tls_in_log(&ps_log);
        println!("    cold: {sent} bytes of CRIU's TLS records relayed");
    });
    let first_shim_gone = || read_exit(&c.state_dir).map(|_| ());
    wait_until("the checkpointed container's shim to exit", first_shim_gone);
    merge_images(&src_images, &dst_images);
    let restored = restore_and_check(&c, &dst_images, &c.base.join("restore-work"), false, &before);
    rt.block_on(env.runc.kill(&c.id, libc::SIGKILL, false)).expect("runc kill");
    rt.block_on(async { tokio::time::timeout(WAIT, wait_for_exit(restored.shim_pid)).await }).unwrap().unwrap();
}

/// (10) Post-copy: the source's dump (`runc checkpoint --lazy-pages`, TLS from the
/// configuration file) serves pages through a page proxy to the migration's pages connection;
/// on the destination, `criu lazy-pages` with the destination's TLS files connects to a local
/// port relayed to that connection by a second page proxy (as migrate.rs does with TLS). The
/// container restores lazily, every page arrives, and both CRIUs log the TLS handshake.
fn tls_lazy_pages_through_page_proxies(env: &Env, _rt: &Runtime) {
    use herd_node::page_server::{LazySource, connect_local, free_local_port, lazy_pages_command};
    use herd_node::transfer::connect_pages;
    use std::os::fd::AsRawFd;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (c, _source, destination) = tls_counter(env, "tls-lazy");
    // The destination node's container: its own id, bundle, state and cgroup (the source's
    // stays frozen until the last page has left).
    let d = tls_case(env, "tls-lazy-destination", &["true"], &destination);
    let (src_images, dst_images, work) =
        (c.base.join("src-images"), d.base.join("images"), d.base.join("restore-work"));
    std::fs::create_dir_all(&work).unwrap();
    let criu = env.runc.criu.clone().unwrap();
    let before = numbers(&c.log());
    let (listener, ticket) = rt.block_on(tls_listener(&destination));
    let addr = listener.local_addr();

    // The source: dump all but the pages, then serve them.
    let port = free_local_port().unwrap();
    let mut opts = CheckpointOpts::new(src_images.clone(), c.base.join("dump-work"));
    opts.tcp_established = false;
    opts.page_server = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    opts.lazy_pages = true;
    let (status_r, status_w) = nix::unistd::pipe().unwrap();
    opts.status_fd = Some(status_w.as_raw_fd());
    let runc_log = c.base.join("runc-checkpoint.log");
    let mut dump = env.runc.checkpoint_command(&c.id, &opts, &runc_log).spawn().expect("runc checkpoint");
    drop(status_w);
    let mut ready = [0u8; 1];
    let n = std::io::Read::read(&mut std::fs::File::from(status_r), &mut ready).unwrap();
    let dump_log = c.base.join("dump-work/dump.log");
    assert_eq!(
        n,
        1,
        "the lazy dump did not get ready:\n{}",
        tail(&std::fs::read_to_string(&dump_log).unwrap_or_default())
    );
    let src_report = c.base.join("source-proxy.report");
    let mut source_proxy = rt.block_on(async {
        let local = connect_local(port, WAIT).await.unwrap();
        let remote = connect_pages(addr, &ticket).await.unwrap();
        herd_node::pageproxy::spawn(
            &env.exe,
            remote.into_std().unwrap().into(),
            local.into_std().unwrap().into(),
            None,
            true,
            None,
            &src_report,
            None,
        )
        .unwrap()
    });

    // The destination: the images the control connection would carry, then criu lazy-pages
    // on a local port relayed to the pages connection by its own page proxy.
    merge_images(&src_images, &dst_images);
    let dst_report = c.base.join("destination-proxy.report");
    let (mut lazy, relaying) = rt.block_on(async {
        let stream = accept_pages(&listener).await;
        let local = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let source = LazySource::Port(local.local_addr().unwrap().port());
        let cmd = lazy_pages_command(&criu, &dst_images, &work, "lazy-pages.log", source, Some(&destination)).unwrap();
        let lazy = tokio::process::Command::from(cmd).spawn().unwrap();
        let (exe, report) = (env.exe.clone(), dst_report.clone());
        let relaying = tokio::spawn(async move {
            let (criu_end, _) =
                tokio::time::timeout(WAIT, local.accept()).await.expect("lazy-pages never connected").unwrap();
            let mut proxy = herd_node::pageproxy::spawn(
                &exe,
                stream.into_std().unwrap().into(),
                criu_end.into_std().unwrap().into(),
                None,
                true,
                None,
                &report,
                None,
            )
            .unwrap();
            proxy.wait().await.unwrap()
        });
        (lazy, relaying)
    });
    wait_until("criu lazy-pages to listen for the restore", || work.join("lazy-pages.socket").exists().then_some(()));
    let restored = restore_and_check(&d, &dst_images, &work, true, &before);

    // Every page arrives: lazy-pages, both proxies and the source's dump end well.
    rt.block_on(async {
        let lazy_log = work.join("lazy-pages.log");
        let status = tokio::time::timeout(WAIT, lazy.wait()).await.expect("lazy-pages hangs").unwrap();
        assert!(status.success(), "criu lazy-pages: {status}\n{}", tail(&std::fs::read_to_string(&lazy_log).unwrap()));
        let proxied = tokio::time::timeout(WAIT, relaying).await.expect("the destination's proxy hangs").unwrap();
        assert!(proxied.success(), "the destination's page proxy: {proxied}");
        let proxied = tokio::time::timeout(WAIT, source_proxy.wait()).await.expect("the source's proxy hangs").unwrap();
        assert!(proxied.success(), "the source's page proxy: {proxied}");
        assert_tls_in_log(&lazy_log);
    });
    let dumped = dump.wait().unwrap();
    assert!(
        dumped.success(),
        "runc checkpoint --lazy-pages: {dumped}\n{}",
        tail(&std::fs::read_to_string(&dump_log).unwrap_or_default())
    );
    assert_tls_in_log(&dump_log);
    let (to_local, to_peer) = herd_node::pageproxy::read_report(&src_report).expect("the source's proxy report");
    let (d_to_local, d_to_peer) =
        herd_node::pageproxy::read_report(&dst_report).expect("the destination's proxy report");
    assert_eq!((to_local, to_peer), (d_to_peer, d_to_local), "both proxies moved the same bytes");
    assert!(to_peer > 32 << 10, "only {to_peer} bytes of pages");
    println!("    post-copy: {to_peer} bytes of CRIU's TLS records to the destination, {to_local} back");
    // The source's container went once every page had left; the counter ran on here.
    wait_until("the source container's shim to exit", || read_exit(&c.state_dir).map(|_| ()));
    let mut counted = numbers(&c.log());
    counted.extend(numbers(&d.log()));
    assert_consecutive(&counted, 0);
    rt.block_on(env.runc.kill(&d.id, libc::SIGKILL, false)).expect("runc kill");
    rt.block_on(async { tokio::time::timeout(WAIT, wait_for_exit(restored.shim_pid)).await }).unwrap().unwrap();
}

/// (11) A page server with the destination's TLS files refuses a dump whose certificate is
/// another cluster's: the dump fails, CRIU says why, and the container runs on where it was.
fn tls_page_server_refuses_another_cluster(env: &Env, rt: &Runtime) {
    use herd_node::page_server::{connect_local, free_local_port, page_server_command};
    use herd_node::relay::relay;
    use herd_node::transfer::Budget;
    let (c, _source, _) = tls_counter(env, "tls-stranger");
    // The destination belongs to another cluster.
    let (_, destination) = node_certificates(&env.dir.join("tls-stranger-other-cluster"));
    let (src_images, dst_images, work) = (c.base.join("src-images"), c.base.join("dst-images"), c.base.join("dst"));
    std::fs::create_dir_all(&dst_images).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let criu = env.runc.criu.clone().unwrap();
    let port = free_local_port().unwrap();
    let cmd = page_server_command(&criu, port, &dst_images, &work, "page-server.log", None, Some(&destination));
    let before = c.log().len();
    let (dumped, status) = rt.block_on(async {
        let mut page_server = tokio::process::Command::from(cmd).spawn().unwrap();
        let proxy = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let mut opts = CheckpointOpts::new(src_images.clone(), c.base.join("dump-work"));
        opts.tcp_established = false;
        opts.page_server = Some(proxy.local_addr().unwrap());
        let relaying = tokio::spawn(async move {
            let (dump_end, _) = proxy.accept().await.unwrap();
            let page_server_end = connect_local(port, WAIT).await.unwrap();
            relay(dump_end, page_server_end, &Budget::unlimited()).await
        });
        let dumped = tokio::time::timeout(WAIT, env.runc.checkpoint(&c.id, &opts)).await.expect("the dump hangs");
        let status = tokio::time::timeout(WAIT, page_server.wait()).await.expect("the page server hangs").unwrap();
        relaying.abort();
        (dumped, status)
    });
    let dump_log = std::fs::read_to_string(c.base.join("dump-work/dump.log")).unwrap();
    let ps_log = std::fs::read_to_string(work.join("page-server.log")).unwrap();
    assert!(dumped.is_err(), "the dump to another cluster's page server succeeded");
    assert!(!status.success(), "the page server took a stranger's pages");
    // Each CRIU checked the other's certificate against its own cluster's CA.
    for (who, log) in [("the source's CRIU", &dump_log), ("the page server", &ps_log)] {
        assert!(log.contains("The certificate issuer is unknown"), "{who} did not refuse the peer:\n{}", tail(log));
    }
    for (who, log) in [("source", &dump_log), ("page server", &ps_log)] {
        let why: Vec<&str> = log.lines().filter(|l| l.contains("tls:")).collect();
        println!("    {who}: {}", why.join(" | "));
    }
    assert!(std::fs::read_dir(&dst_images).unwrap().next().is_none(), "pages were stored");
    // The container was not dumped: it runs on.
    wait_until("more output from the container", || (c.log().len() >= before + 2).then_some(()));
    assert_consecutive(&numbers(&c.log()), 0);
}
