//! CRIU's own test suite (ZDTM, `test/zdtm/static`) through Herd: what `herd checkpoint` +
//! `herd restore`, `herd migrate --mode cold` and `herd migrate --mode postcopy` carry of
//! each kernel feature a test holds, beside plain CRIU on the same machine.
//!
//! The suite's conventions, kept: each test is started by the command of its Makefile's
//! `NAME.pid` rule (collected by `scripts/zdtm-image.sh` into the image's
//! `/zdtm/static/commands`), as the unprivileged user zdtm.py gives it (`ZDTM_UID`, unless
//! its `.desc` says `suid`), after its `.checkskip`; it daemonises once its state is set
//! up, writing `NAME.pid`; after the moves it gets SIGTERM, checks its state and writes
//! PASS or FAIL to `NAME.out`. In Herd a test runs in a container of the `zdtm` image whose
//! first process, a shell, starts it and then sleeps, keeping the container alive.
//!
//! A test is moved through the three Herd columns in one container, one after the other;
//! only when that chain fails is each column run again alone, in a fresh container, to say
//! which one broke it. The baseline is the suite's own runner, `zdtm.py run -a -f h`, whose
//! TAP report [`Baseline::from_tap`] reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::BenchCluster;

/// Where `scripts/zdtm-image.sh` leaves the image and its list of tests.
pub const IMAGE_DIR: &str = "/var/cache/herd-setup/zdtm";

/// The uid, gid and groups zdtm.py runs a test as unless its `.desc` says `suid`.
const ZDTM_USER: &str = "ZDTM_UID=18943 ZDTM_GID=58467 ZDTM_GROUPS='27495 48244'";

/// What the CI runs on every change (`bench/tests/zdtm.rs`): tests that pass plain CRIU here,
/// at least one from each feature group Herd carries.
#[rustfmt::skip]
pub const CI_SUBSET: &[&str] = &[
    // processes and threads
    "busyloop00", "sleeping00", "pid00", "zombie00", "zombie01", "wait00", "pthread00", "pthread01", "env00",
    "cmdlinenv00", "umask00", "rlimits00", "fpu00", "futex", "rseq00", "pdeath_sig",
    "stopped", "stopped12",
    // security
    "caps00", "groups", "seccomp_filter", "seccomp_no_new_privs",
    // memory
    "maps00", "maps02", "mprotect00", "mlock_setuid", "memfd01", "memfd02", "mmx00", "vdso01", "thp_disable",
    // files
    "write_read00", "unlink_fstat00", "file_append", "file_locks00", "fifo", "fifo_wronly", "deleted_dev", "memfd00",
    "cwd00", "file_attr", "aio00",
    // pipes and sockets
    "pipe00", "pipe01", "socket_listen", "socket_udp", "socket-tcp", "socket-tcp6", "socket-tcp-fin-wait1",
    "socket-tcpbuf", "socket-tcpbuf6", "sockets00", "sockets01", "sk-unix-unconn", "scm00", "packet_sock",
    // timers, signals, events
    "timers", "timers01", "timerfd", "posix_timers", "sigaltstack", "sigpending", "signalfd00", "eventfs00", "epoll",
    "epoll01", "poll",
    // terminals
    "pty00", "pty01",
];

/// One column of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    /// `herd checkpoint` (it stops) and `herd restore` on the same node.
    CheckpointRestore,
    /// `herd migrate --mode cold` to the other node.
    Cold,
    /// `herd migrate --mode postcopy` to the other node.
    Postcopy,
}

impl Column {
    pub const ALL: [Column; 3] = [Column::CheckpointRestore, Column::Cold, Column::Postcopy];

    pub fn title(self) -> &'static str {
        match self {
            Column::CheckpointRestore => "checkpoint+restore",
            Column::Cold => "migrate cold",
            Column::Postcopy => "migrate postcopy",
        }
    }
}

/// How a test fared in one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The test wrote FAIL (or nothing) after the moves: its state did not survive.
    Fail(String),
    /// A Herd command failed (the container was moved no further).
    Error(String),
    /// Not run, with the reason.
    Skip(String),
}

impl Outcome {
    pub fn is_pass(&self) -> bool {
        matches!(self, Outcome::Pass)
    }

    pub fn short(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "FAIL",
            Outcome::Error(_) => "error",
            Outcome::Skip(_) => "skip",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Outcome::Pass => "",
            Outcome::Fail(s) | Outcome::Error(s) | Outcome::Skip(s) => s,
        }
    }
}

/// What a test's `.desc` says, of what matters here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desc {
    /// zdtm flavours it runs in (`h`, `ns`, `uns`); all three when the desc says nothing.
    pub flavors: Vec<String>,
    pub flags: Vec<String>,
    /// CRIU features it needs (`criu check --feature`).
    pub features: Vec<String>,
    /// CRIU options its dump and restore need (`opts`, `dopts`, `ropts`).
    pub opts: Vec<String>,
    /// Architectures it is for, when it says.
    pub arch: Vec<String>,
    /// Why it could not be read: a few are Python code that zdtm.py evaluates.
    pub unreadable: Option<String>,
}

impl Desc {
    /// Reads a `.desc`: a Python dict of strings (and lists of strings), as the suite writes
    /// them. Keys it does not use are skipped.
    pub fn parse(text: &str) -> anyhow::Result<Desc> {
        let mut d = Desc { flavors: vec!["h".into(), "ns".into(), "uns".into()], ..Desc::default() };
        let mut tokens = Tokens { s: text.as_bytes(), i: 0 };
        tokens.expect(b'{')?;
        loop {
            if tokens.peek() == Some(b'}') {
                break;
            }
            let key = tokens.string()?;
            tokens.expect(b':')?;
            let words: Vec<String> = match tokens.peek() {
                Some(b'[') => {
                    tokens.expect(b'[')?;
                    let mut v = Vec::new();
                    while tokens.peek() != Some(b']') {
                        v.push(tokens.string()?);
                        if tokens.peek() == Some(b',') {
                            tokens.expect(b',')?;
                        }
                    }
                    tokens.expect(b']')?;
                    v
                }
                _ => tokens.string()?.split_whitespace().map(str::to_string).collect(),
            };
            match key.as_str() {
                "flavor" => d.flavors = words,
                "flags" => d.flags = words,
                "feature" => d.features = words,
                "opts" | "dopts" | "ropts" => d.opts.extend(words),
                "arch" => d.arch = words,
                _ => {}
            }
            match tokens.peek() {
                Some(b',') => tokens.expect(b',')?,
                Some(b'}') => {}
                other => bail!("expected , or }} at byte {}, found {:?}", tokens.i, other.map(char::from)),
            }
        }
        Ok(d)
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// The lexer of [`Desc::parse`].
struct Tokens<'a> {
    s: &'a [u8],
    i: usize,
}

impl Tokens<'_> {
    /// The next byte that is not blank or in a `#` comment.
    fn peek(&mut self) -> Option<u8> {
        loop {
            match self.s.get(self.i) {
                Some(c) if c.is_ascii_whitespace() => self.i += 1,
                Some(b'#') => {
                    while self.i < self.s.len() && self.s[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                other => return other.copied(),
            }
        }
    }

    fn expect(&mut self, c: u8) -> anyhow::Result<()> {
        if self.peek() != Some(c) {
            bail!("expected {:?} at byte {}", char::from(c), self.i);
        }
        self.i += 1;
        Ok(())
    }

    /// A quoted string, or a bare word (a number).
    fn string(&mut self) -> anyhow::Result<String> {
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                let start = self.i + 1;
                let len = self.s[start..].iter().position(|&c| c == q).context("unterminated string")?;
                self.i = start + len + 1;
                Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'.') {
                    self.i += 1;
                }
                if self.i == start {
                    bail!("unexpected {:?} at byte {}", char::from(self.s[start]), start);
                }
                Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
            }
            None => bail!("unexpected end"),
        }
    }
}

/// One test of the suite.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    /// Its start command, run from `/zdtm/static`.
    pub command: String,
    pub desc: Desc,
    /// zdtm.py runs a hook of its that sets up or tears down something on the host.
    pub hooked: bool,
    pub checkskip: bool,
}

/// The suite as the image holds it, read from the CRIU source it was built from.
pub fn load_suite(criu_static: &Path) -> anyhow::Result<Vec<TestCase>> {
    let dir = Path::new(IMAGE_DIR);
    let commands = std::fs::read_to_string(dir.join("commands"))
        .with_context(|| format!("{}/commands is missing: run scripts/zdtm-image.sh", IMAGE_DIR))?;
    let hooked = std::fs::read_to_string(dir.join("hooked")).unwrap_or_default();
    let hooked: Vec<&str> = hooked.lines().collect();
    let mut tests = Vec::new();
    for line in commands.lines() {
        let Some((name, command)) = line.split_once('\t') else { bail!("bad line in commands: {line}") };
        let desc_path = criu_static.join(format!("{name}.desc"));
        let desc = match std::fs::read_to_string(&desc_path) {
            Ok(text) => Desc::parse(&text).unwrap_or_else(|e| Desc {
                unreadable: Some(format!("{}: {e:#}", desc_path.display())),
                ..Desc::default()
            }),
            Err(_) => Desc::parse("{}")?,
        };
        tests.push(TestCase {
            name: name.to_string(),
            command: command.to_string(),
            desc,
            hooked: hooked.contains(&name),
            checkskip: criu_static.join(format!("{name}.checkskip")).exists(),
        });
    }
    Ok(tests)
}

/// The CRIU source tree that `scripts/setup.sh` unpacked (the suite's `.desc` files and its
/// runner).
pub fn criu_source() -> anyhow::Result<std::path::PathBuf> {
    let stamp = std::fs::read_to_string("/usr/local/share/herd/criu.build")
        .context("CRIU is not built here: run scripts/setup.sh")?;
    let version = stamp.split_whitespace().next().context("empty CRIU build stamp")?;
    Ok(Path::new("/var/cache/herd-setup/criu").join(format!("criu-{version}")))
}

/// Why Herd does not run a test at all, from its `.desc` alone; `criu_has` says whether this
/// machine's CRIU has a feature.
pub fn not_run_because(t: &TestCase, criu_has: &mut dyn FnMut(&str) -> bool) -> Option<String> {
    let d = &t.desc;
    if d.unreadable.is_some() {
        return Some("its .desc is Python code that only zdtm.py evaluates".into());
    }
    if !d.arch.is_empty() && !d.arch.iter().any(|a| a == std::env::consts::ARCH) {
        return Some(format!("for {} only", d.arch.join(", ")));
    }
    if d.has_flag("noauto") {
        return Some("the suite runs it by hand only (noauto)".into());
    }
    if let Some(f) = d.features.iter().find(|f| !criu_has(f)) {
        return Some(format!("this CRIU lacks feature {f}"));
    }
    if !d.flavors.iter().any(|f| f == "h") {
        return Some(format!(
            "needs zdtm to make its namespaces ({} flavour), which takes CAP_SYS_ADMIN in a container",
            d.flavors.join("/")
        ));
    }
    if t.hooked {
        return Some("needs its hook to set up the host (cgroups, links or firewall rules made outside)".into());
    }
    None
}

/// Plain CRIU's results here: the suite's own runner, in its host flavour.
#[derive(Debug, Default, Clone)]
pub struct Baseline {
    /// Test name → `Pass`, `Fail` or `Skip(reason)`.
    pub results: BTreeMap<String, Outcome>,
}

impl Baseline {
    /// Reads zdtm.py's TAP report (`--report DIR` writes `criu-testreport.tap`).
    pub fn from_tap(text: &str) -> Baseline {
        let mut results = BTreeMap::new();
        for line in text.lines() {
            let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
                (false, r)
            } else if let Some(r) = line.strip_prefix("ok ") {
                (true, r)
            } else {
                continue;
            };
            let Some((_, rest)) = rest.split_once(" - ") else { continue };
            let (name, comment) = match rest.split_once(" # ") {
                Some((n, c)) => (n.trim(), c.trim()),
                None => (rest.trim(), ""),
            };
            let Some(name) = name.strip_prefix("zdtm/static/") else { continue };
            let outcome = if let Some(reason) = comment.strip_prefix("SKIP") {
                Outcome::Skip(reason.trim().to_string())
            } else if ok {
                Outcome::Pass
            } else {
                Outcome::Fail(comment.to_string())
            };
            results.insert(name.to_string(), outcome);
        }
        Baseline { results }
    }

    /// Runs the suite's own runner over every static test (`zdtm.py run -a -f h`), and reads
    /// its report.
    pub fn run(criu_src: &Path, report_dir: &Path) -> anyhow::Result<Baseline> {
        let _ = std::fs::remove_dir_all(report_dir);
        let out = Command::new("./zdtm.py")
            .args(["run", "-a", "-f", "h", "--keep-going", "--parallel", "2", "-T", "zdtm/static/.*", "--report"])
            .arg(report_dir)
            .current_dir(criu_src.join("test"))
            // Its Python is Debian's, which has the protobuf module CRIU's bindings need.
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running zdtm.py")?;
        let tap = report_dir.join("criu-testreport.tap");
        let text = std::fs::read_to_string(&tap)
            .with_context(|| format!("zdtm.py ({out}) wrote no report at {}", tap.display()))?;
        Ok(Baseline::from_tap(&text))
    }
}

/// The container name of test `test` (`tag` keeps reruns apart).
fn container_name(test: &str, tag: &str) -> String {
    let clean: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    format!("z{tag}-{clean}")
}

/// The first process of a test's container: the test's `.checkskip`, then its start command
/// as zdtm.py runs it; a line on standard output says how that went, then it sleeps.
fn wrapper_script(t: &TestCase) -> String {
    let user = if t.desc.has_flag("suid") { String::new() } else { format!("export {ZDTM_USER}; ") };
    let checkskip = if t.checkskip {
        format!("if ! ./{n}.checkskip >/dev/null 2>&1; then echo ZDTM-CHECKSKIP; exec sleep infinity; fi; ", n = t.name)
    } else {
        String::new()
    };
    format!(
        "cd /zdtm/static || exit 1; {checkskip}{user}if {cmd}; then echo ZDTM-STARTED; else echo ZDTM-START-FAILED $?; fi; \
         exec sleep infinity",
        cmd = t.command
    )
}

/// Runs `herd ARGS` on `cluster`, giving up after `limit`: Ok(stdout) or Err(its error).
fn herd(cluster: &BenchCluster, args: &[&str], limit: Duration) -> Result<String, String> {
    let mut child = Command::new(&cluster.herd)
        .args(args)
        .env("HERD_CONFIG", &cluster.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running herd: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("herd {} {HUNG} {limit:?}", args.join(" ")));
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| format!("herd: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.trim().lines().last().unwrap_or("failed without a message").to_string())
    }
}

/// How long one Herd command may take.
const STEP: Duration = Duration::from_secs(90);
/// What the error of a command that took longer says.
const HUNG: &str = "took more than";

/// A test's container, removed on drop.
struct TestContainer<'a> {
    cluster: &'a BenchCluster,
    name: String,
}

impl Drop for TestContainer<'_> {
    fn drop(&mut self) {
        let _ = herd(self.cluster, &["rm", "-f", &self.name], STEP);
    }
}

/// How starting a test went.
enum Started<'a> {
    Running(TestContainer<'a>),
    /// Its `.checkskip` said no, or it did not start: not a result of a move.
    NotRun(Outcome),
}

fn start<'a>(cluster: &'a BenchCluster, t: &TestCase, tag: &str) -> Started<'a> {
    let name = container_name(&t.name, tag);
    let _ = herd(cluster, &["rm", "-f", &name], STEP);
    let script = wrapper_script(t);
    // CRIU's tests call what a served program does not (new namespaces, mounts, keyrings,
    // their own seccomp filters...): they run unconfined, as they would under Docker.
    let mut args = vec!["run", "--name", &name, "--memory", "4g", "--security-opt", "seccomp=unconfined"];
    for cap in capabilities_needed(&t.name) {
        args.extend(["--cap-add", cap]);
    }
    args.extend(["zdtm", "--", "/bin/sh", "-c", &script]);
    if let Err(e) = herd(cluster, &args, STEP) {
        return Started::NotRun(Outcome::Error(format!("herd run: {e}")));
    }
    let c = TestContainer { cluster, name };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = herd(cluster, &["logs", &c.name], STEP).unwrap_or_default();
        if logs.contains("ZDTM-STARTED") {
            return Started::Running(c);
        }
        if logs.contains("ZDTM-CHECKSKIP") {
            return Started::NotRun(Outcome::Skip("its checkskip says this system lacks what it tests".into()));
        }
        if let Some(line) = logs.lines().find(|l| l.contains("ZDTM-START-FAILED")) {
            let out = read_out(cluster, &c.name, &t.name);
            return Started::NotRun(Outcome::Skip(format!(
                "does not start in a Herd container ({}): {}",
                line.trim(),
                last_line(&out)
            )));
        }
        if Instant::now() > deadline {
            let out = read_out(cluster, &c.name, &t.name);
            return Started::NotRun(Outcome::Skip(format!(
                "does not start in a Herd container (not within 60 s): {}",
                last_line(&out)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn last_line(s: &str) -> String {
    s.trim().lines().last().unwrap_or("").trim().to_string()
}

/// The test's output file, whatever it holds.
fn read_out(cluster: &BenchCluster, container: &str, test: &str) -> String {
    herd(cluster, &["exec", container, "sh", "-c", &format!("tail -c 4000 /zdtm/static/{test}.out")], STEP)
        .unwrap_or_default()
}

/// Moves container `c` through `column`.
fn apply(c: &TestContainer, column: Column) -> Result<(), String> {
    let cl = c.cluster;
    match column {
        Column::CheckpointRestore => {
            herd(cl, &["checkpoint", &c.name], STEP).map_err(|e| format!("herd checkpoint: {e}"))?;
            herd(cl, &["restore", &c.name], STEP).map_err(|e| format!("herd restore: {e}"))?;
        }
        Column::Cold => {
            herd(cl, &["migrate", &c.name, "--mode", "cold"], STEP).map_err(|e| format!("herd migrate: {e}"))?;
        }
        Column::Postcopy => {
            herd(cl, &["migrate", &c.name, "--mode", "postcopy"], STEP).map_err(|e| format!("herd migrate: {e}"))?;
        }
    }
    Ok(())
}

/// SIGTERM to the test, as the suite sends it after a restore; then its verdict.
fn finish(c: &TestContainer, t: &TestCase) -> Outcome {
    // Its parent is the container's sleeping first process, which does not reap it: a zombie
    // has finished.
    let script = format!(
        "cd /zdtm/static; p=$(cat {n}.pid) || exit 3; kill -TERM $p || exit 4; i=0; \
         while [ $i -lt 600 ] && [ -d /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null; \
         do sleep 0.1; i=$((i+1)); done; tail -c 4000 {n}.out",
        n = t.name
    );
    match herd(c.cluster, &["exec", &c.name, "sh", "-c", &script], STEP) {
        Ok(out) if out.split_whitespace().any(|w| w == "PASS") => Outcome::Pass,
        Ok(out) => Outcome::Fail(last_line(&out)),
        Err(e) => Outcome::Error(format!("after the moves: {e}")),
    }
}

/// Runs test `t` through every column: once as a chain, then, if that failed, each column
/// alone. `tag` names its containers. A test whose dump CRIU must refuse (`crfail`) passes
/// a column when Herd refuses that move and the test, left running, still passes.
pub fn run_test(cluster: &BenchCluster, t: &TestCase, tag: &str) -> BTreeMap<Column, Outcome> {
    if t.desc.has_flag("crfail") {
        return run_refused(cluster, t, tag);
    }
    let mut results = BTreeMap::new();
    let c = match start(cluster, t, tag) {
        Started::Running(c) => c,
        Started::NotRun(o) => {
            for col in Column::ALL {
                results.insert(col, o.clone());
            }
            return results;
        }
    };
    let chain = Column::ALL.iter().try_for_each(|&col| apply(&c, col));
    let verdict = match chain {
        Ok(()) => finish(&c, t),
        Err(e) => Outcome::Error(e),
    };
    drop(c);
    // A move that hung would hang again in each column alone.
    let hung = matches!(&verdict, Outcome::Error(e) if e.contains(HUNG));
    if verdict.is_pass() || hung {
        for col in Column::ALL {
            results.insert(col, verdict.clone());
        }
        return results;
    }
    for col in Column::ALL {
        let outcome = match start(cluster, t, tag) {
            Started::Running(c) => match apply(&c, col) {
                Ok(()) => finish(&c, t),
                Err(e) => Outcome::Error(e),
            },
            Started::NotRun(o) => o,
        };
        results.insert(col, outcome);
    }
    results
}

/// [`run_test`] for a test whose every move must be refused, in one container.
fn run_refused(cluster: &BenchCluster, t: &TestCase, tag: &str) -> BTreeMap<Column, Outcome> {
    let c = match start(cluster, t, tag) {
        Started::Running(c) => c,
        Started::NotRun(o) => return Column::ALL.into_iter().map(|col| (col, o.clone())).collect(),
    };
    let moved: Vec<(Column, bool)> = Column::ALL.into_iter().map(|col| (col, apply(&c, col).is_ok())).collect();
    let verdict = finish(&c, t);
    moved
        .into_iter()
        .map(|(col, ok)| {
            let outcome = if ok && !verdict.is_pass() {
                Outcome::Fail(format!("moved, though CRIU should refuse to dump it (crfail): {}", verdict.detail()))
            } else if verdict.is_pass() {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("refused, but the test did not run on intact: {}", verdict.detail()))
            };
            (col, outcome)
        })
        .collect()
}

/// Runs `tests` on `cluster` with `jobs` at a time, printing a line per test as it ends.
pub fn run_all(cluster: &BenchCluster, tests: &[TestCase], jobs: usize) -> BTreeMap<String, BTreeMap<Column, Outcome>> {
    let queue = Mutex::new(tests.iter().enumerate());
    let results = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for worker in 0..jobs.max(1) {
            let (queue, results) = (&queue, &results);
            s.spawn(move || {
                loop {
                    let Some((i, t)) = queue.lock().unwrap().next() else { break };
                    let started = Instant::now();
                    let r = run_test(cluster, t, &worker.to_string());
                    let cells: Vec<String> = Column::ALL.iter().map(|c| format!("{:>5}", r[c].short())).collect();
                    let why = r.values().find(|o| !o.is_pass()).map(|o| o.detail().to_string()).unwrap_or_default();
                    println!(
                        "[{:>3}/{}] {:<32} {} {:>5.1}s {}",
                        i + 1,
                        tests.len(),
                        t.name,
                        cells.join(" "),
                        started.elapsed().as_secs_f64(),
                        why
                    );
                    results.lock().unwrap().insert(t.name.clone(), r);
                }
            });
        }
    });
    results.into_inner().unwrap()
}

/// Whether this machine's CRIU has `feature` (`criu check --feature`), remembered.
pub fn criu_feature_checker() -> impl FnMut(&str) -> bool {
    let mut known: BTreeMap<String, bool> = BTreeMap::new();
    move |feature: &str| {
        *known.entry(feature.to_string()).or_insert_with(|| {
            Command::new("criu")
                .args(["check", "--feature", feature])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
    }
}

/// The capabilities beyond Docker's default set that a test needs to start: its container is
/// run with them (`herd run --cap-add`), as a Docker user would run it (`docker run
/// --cap-add`). Its checkpoint may then hold them, and no more, at a restore.
pub fn capabilities_needed(test: &str) -> &'static [&'static str] {
    match test {
        "socket-raw"
        | "sk-netlink"
        | "socket-tcp-reseted"
        | "socket-tcp-ipt-nfconntrack"
        | "socket-tcp-nft-nfconntrack"
        | "socket-tcp-syn-sent" => &["NET_ADMIN"],
        "maps01" | "fanotify00" | "cgroupns" | "shmemfd" | "shmemfd-priv" | "timens_nested" | "timens_for_kids"
        | "cgroup_stray" | "cgroup_ignore" => &["SYS_ADMIN"],
        "sched_prio00" | "sched_policy00" => &["SYS_NICE"],
        _ => &[],
    }
}

/// Why a test that plain CRIU passes here fails through Herd, or does not start in a Herd
/// container, where that is understood (the table shows it beside the failure's own message).
pub fn known_cause(test: &str) -> Option<&'static str> {
    Some(match test {
        "socket-tcp-close0" | "socket-dump-tcp-close" => {
            "tests CRIU's --tcp-close, which closes connections at the restore; Herd keeps them open"
        }
        "inotify00" | "inotify04" => {
            "an inotify watch on the overlay root: CRIU records the file by a handle overlayfs does not give (Docker and Podman \
             containers too); Herd refuses it before the freeze"
        }
        "unlink_fstat03" => {
            "needs CRIU's --link-remap, which Herd leaves off (docs/design/zdtm.md); Herd refuses it before the freeze"
        }
        "file_locks01" => "compares inode numbers, which change when the writable layer is unpacked at a restore",
        "sched_policy00" => "sets a real-time policy: its cgroup has no real-time CPU time (cpu.rt_runtime_us 0)",
        "socket_icmp" | "socket6_icmp" => "writes net.ipv4.ping_group_range; /proc/sys is read-only in a container",
        "socket-tcp-ipt-nfconntrack" | "socket-tcp-nft-nfconntrack" => {
            "makes a network namespace of its own (CAP_SYS_ADMIN); runc has CRIU treat the container's as \
             external, and CRIU then dumps no other (--empty-ns network)"
        }
        "cgroupns" => {
            "makes a cgroup namespace of its own, which CRIU cannot dump in a container that has none; Herd refuses it before \
         the freeze"
        }
        "cgroup_stray" => "moves processes into cgroups it made: runc restores them into the container's own",
        "fanotify00" => {
            "a fanotify mark on the overlay root: CRIU records the file by a handle overlayfs does not give (Docker and \
             Podman containers too); Herd refuses it before the freeze"
        }
        "rtc" | "console" | "vt" => "opens a device a container does not have",
        _ => return None,
    })
}

/// The feature group a test belongs to, by its name, for the table.
pub fn group_of(test: &str) -> &'static str {
    const GROUPS: &[(&str, &[&str])] = &[
        ("sockets: TCP", &["socket-tcp", "socket_listen", "sk-freebind", "socket-closed-tcp", "tcp"]),
        (
            "sockets: UDP, raw, packet, netlink",
            &[
                "socket_udp",
                "socket6_udp",
                "socket_icmp",
                "socket6_icmp",
                "socket_udplite",
                "packet_sock",
                "netlink",
                "sk-netlink",
                "socket_snd_addr",
                "socket_dgram",
                "sock_filter",
                "socket_close_data",
                "socket_aio",
                "unbound_sock",
                "sock_opts",
                "sock_peek",
                "sk-unix-dgram",
                "socket-raw",
                "sock_ip_opts",
            ],
        ),
        ("sockets: unix", &["sk-unix", "sockets", "socket-ext", "scm", "del_standalone_un", "unix"]),
        ("timers and clocks", &["timer", "posix_timers", "itimer", "clock", "timens", "pthread_timers"]),
        ("signals", &["sig", "ptrace_sig", "pending"]),
        ("event notification", &["epoll", "eventfs", "inotify", "fanotify", "signalfd", "fd_from_pidfd", "pidfd"]),
        ("SysV and POSIX IPC", &["msgque", "sem", "shm", "posix_mqueue", "mq"]),
        ("terminals", &["pty", "tty", "vt", "console"]),
        (
            "memory",
            &[
                "maps",
                "mprotect",
                "mlock",
                "mmx",
                "vdso",
                "huge",
                "thp",
                "madvise",
                "mem-touch",
                "mremap",
                "uffd",
                "memfd",
                "ghost_holes",
                "lazy",
                "mntns_shmem",
                "shm-",
                "pagemap",
                "big",
                "write_read10",
                "transparent",
            ],
        ),
        (
            "files and links",
            &[
                "file",
                "write_read",
                "unlink",
                "fifo",
                "deleted",
                "link",
                "cwd",
                "chroot",
                "fd",
                "ofd",
                "fsync",
                "fdt",
                "dup",
                "overmount",
                "mknod",
                "pipe",
                "sparse",
                "xattr",
                "attr",
                "perm",
                "opath",
                "tempfs",
                "dir",
                "aio",
                "fallocate",
                "rename",
                "fanotify",
                "flock",
                "lseek",
                "memfd",
                "procfs",
                "proc",
                "umask",
            ],
        ),
        (
            "mounts and namespaces",
            &[
                "mnt",
                "mount",
                "mntns",
                "ns",
                "bind",
                "tmpfs",
                "sysfs",
                "devpts",
                "netns",
                "uts",
                "ipc",
                "userns",
                "cgroup",
                "autofs",
                "binfmt",
                "sb_",
                "shared",
                "slave",
                "private",
                "unbindable",
                "remap",
            ],
        ),
        (
            "security",
            &[
                "caps",
                "seccomp",
                "apparmor",
                "selinux",
                "groups",
                "mlock_setuid",
                "rlimit",
                "prctl",
                "personality",
                "loginuid",
                "child_subreaper",
                "no_new_privs",
            ],
        ),
        ("processes and threads", &[""]),
    ];
    GROUPS
        .iter()
        .find(|(_, prefixes)| prefixes.iter().any(|p| test.starts_with(p)))
        .map(|(g, _)| *g)
        .unwrap_or("processes and threads")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descs_are_read_as_the_suite_writes_them() {
        let d = Desc::parse("{'opts': '--tcp-established', 'flags': 'nouser samens', 'feature' : 'tcp_half_closed'}\n")
            .unwrap();
        assert_eq!(d.opts, ["--tcp-established"]);
        assert_eq!(d.flags, ["nouser", "samens"]);
        assert_eq!(d.features, ["tcp_half_closed"]);
        assert_eq!(d.flavors, ["h", "ns", "uns"]);
        let d = Desc::parse("# a comment\n{'flavor': 'ns uns', 'deps': ['/bin/sh', '/bin/mount'], 'timeout': 60,}")
            .unwrap();
        assert_eq!(d.flavors, ["ns", "uns"]);
        assert!(Desc::parse("{'flags': 'suid'").is_err());
        assert!(Desc::parse("{'flags' 'suid'}").is_err());
    }

    #[test]
    fn the_suites_report_gives_pass_fail_and_skip() {
        let tap = "TAP version 13\n1..4\nok 1 - zdtm/static/env00\nok 2 - zdtm/static/autofs # SKIP no autofs feature\n\
                   not ok 3 - zdtm/static/cgroup_ifpriomap # flavor h\nok 4 - zdtm/transition/fork\n";
        let b = Baseline::from_tap(tap);
        assert_eq!(b.results.len(), 3);
        assert_eq!(b.results["env00"], Outcome::Pass);
        assert_eq!(b.results["autofs"], Outcome::Skip("no autofs feature".into()));
        assert!(matches!(b.results["cgroup_ifpriomap"], Outcome::Fail(_)));
    }

    #[test]
    fn container_names_are_valid() {
        assert_eq!(container_name("socket_udp-corked", "0"), "z0-socket-udp-corked");
        assert!(herd_proto::names::validate_container_name(&container_name("Sk_unix.x", "12")).is_ok());
    }
}
