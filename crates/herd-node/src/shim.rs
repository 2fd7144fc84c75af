//! The per-container shim: a small process (the `herd` binary run as `herd shim
//! <args>`) that starts a container with runc, owns its stdio pipes, writes its log,
//! collects its exit status as its child subreaper, and outlives the agent, which
//! re-adopts containers by reading the shim's files.
//!
//! Files in the container's state directory (owned by the agent):
//! - `shim.pid`: the shim's pid (decimal), written atomically when it starts;
//! - `container.pid`: the container's init pid, written by runc (`--pid-file`);
//! - `log.jsonl`, `log.<offset>.jsonl`: the container's output, one JSON
//!   [`herd_proto::node::LogEntry`] per line, in files rotated at the container's log
//!   limits (see [`crate::logs`]); appended to, so a restored container's log continues
//!   the checkpointed one's;
//! - `exit.json`: the container's [`ExitStatus`], written atomically (tmp + rename)
//!   just before the shim exits; removed when a shim starts;
//! - `runc.log`: runc's JSON log of the `run` / `restore` invocation (appended);
//! - `shim.log`: the shim's own problems, one text line each (only created when
//!   there is something to say).
//!
//! Starting: [`spawn_shim`] runs the shim, which daemonizes (fork, setsid, chdir /,
//! stdio on /dev/null), runs `runc run -d` (or `runc restore -d`) with its pipes as
//! the container's stdout/stderr and reports the outcome over a pipe inherited
//! through the environment variable [`REPORT_FD_ENV`]. After that it sleeps in
//! `poll(2)` on the two pipes and a signalfd for SIGCHLD, with no timer while the
//! container runs.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd_proto::node::LogStream;
use serde::{Deserialize, Serialize};

use crate::logs::{LineSplitter, LogLimits, LogWriter};
use crate::runc::{Runc, last_runc_error};

/// The shim's pid file in the state directory.
pub const SHIM_PID_FILE: &str = "shim.pid";
/// The container's init pid, written by runc.
pub const CONTAINER_PID_FILE: &str = "container.pid";
/// The container's exit status, written by the shim before it exits.
pub const EXIT_FILE: &str = "exit.json";
/// runc's log of the run / restore invocation.
pub const RUNC_LOG_FILE: &str = "runc.log";
/// The shim's own diagnostics.
pub const SHIM_LOG_FILE: &str = "shim.log";
/// The environment variable through which [`spawn_shim`] passes the report pipe.
pub const REPORT_FD_ENV: &str = "HERD_SHIM_REPORT_FD";
/// How long runc may take to start or restore a container before the shim kills it (and
/// everything it started) and reports the failure.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How much longer than its time limit [`spawn_shim`] waits for the shim's report before it
/// gives up on the shim itself.
const REPORT_GRACE: Duration = Duration::from_secs(10);
/// A restore whose CRIU log grows past this many bytes, or [`RESTORE_LOG_PER_IMAGE_BYTE`]
/// times the bytes of its images other than memory pages if that is more, is stuck (a small
/// restore here logs tens of KiB; CRIU 4.2.1 spinning on a damaged image logged 30 MB/s):
/// the shim kills it. (That was at runc's debug verbosity; the node's CRIU configuration now
/// asks for less, [`crate::criu_config`], and the restore's time limit stays.)
pub const MAX_RESTORE_LOG: u64 = 64 << 20;
/// What CRIU logs grows with the objects it restores (processes, files, sockets), which its
/// images other than the memory pages describe: nginx with 200 workers and 10,000 TCP
/// connections logged more than 64 MiB.
pub const RESTORE_LOG_PER_IMAGE_BYTE: u64 = 64;

/// The bound on the CRIU log of a restore from `images` (see [`MAX_RESTORE_LOG`]).
pub fn restore_log_limit(images: &Path) -> u64 {
    let described: u64 = std::fs::read_dir(images)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with("pages-"))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    MAX_RESTORE_LOG.max(described.saturating_mul(RESTORE_LOG_PER_IMAGE_BYTE))
}
/// How long the shim keeps reading the pipes after the container exited while
/// some of its (former) processes still hold them open.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How the shim starts the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShimMode {
    /// `runc run -d`.
    Run,
    /// `runc restore -d` from a checkpoint.
    Restore {
        image_path: PathBuf,
        work_path: PathBuf,
        tcp_established: bool,
        /// Post-copy: pages come from a `criu lazy-pages` daemon whose socket is in `work_path`.
        #[serde(default)]
        lazy_pages: bool,
    },
}

/// Everything a shim needs; convertible to and from its command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimArgs {
    /// The runc container id.
    pub id: String,
    /// The per-container directory the shim keeps its files in (owned by the agent).
    pub state_dir: PathBuf,
    /// The OCI bundle (holding `config.json`).
    pub bundle: PathBuf,
    pub runc: Runc,
    pub mode: ShimMode,
    /// How long runc may take to start or restore the container ([`START_TIMEOUT`]).
    pub start_timeout: Duration,
    /// When the log rotates, and how much of it is kept.
    pub log: LogLimits,
}

impl ShimArgs {
    /// The command line (after the `shim` subcommand):
    /// `--id ID --state-dir DIR --bundle DIR --runc-binary PATH --runc-root DIR
    /// --start-timeout-ms N --log-max-size BYTES --log-max-files N [--criu PATH]
    /// [--restore-image DIR --restore-work DIR [--tcp-established] [--lazy-pages]]`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--id".into(),
            self.id.clone().into(),
            "--state-dir".into(),
            self.state_dir.clone().into(),
            "--bundle".into(),
            self.bundle.clone().into(),
            "--runc-binary".into(),
            self.runc.binary.clone().into(),
            "--runc-root".into(),
            self.runc.root.clone().into(),
            "--start-timeout-ms".into(),
            self.start_timeout.as_millis().to_string().into(),
            "--log-max-size".into(),
            self.log.max_size.to_string().into(),
            "--log-max-files".into(),
            self.log.max_files.to_string().into(),
        ];
        if let Some(criu) = &self.runc.criu {
            a.push("--criu".into());
            a.push(criu.clone().into());
        }
        if let ShimMode::Restore { image_path, work_path, tcp_established, lazy_pages } = &self.mode {
            a.push("--restore-image".into());
            a.push(image_path.clone().into());
            a.push("--restore-work".into());
            a.push(work_path.clone().into());
            if *tcp_established {
                a.push("--tcp-established".into());
            }
            if *lazy_pages {
                a.push("--lazy-pages".into());
            }
        }
        a
    }

    /// Parses what [`ShimArgs::to_args`] produced.
    pub fn parse(args: &[OsString]) -> Result<Self, String> {
        let mut id = None;
        let mut state_dir = None;
        let mut bundle = None;
        let mut binary = None;
        let mut root = None;
        let mut criu = None;
        let mut start_timeout = None;
        let mut log_max_size = None;
        let mut log_max_files = None;
        let mut image = None;
        let mut work = None;
        let mut tcp = false;
        let mut lazy = false;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let flag = flag.to_str().ok_or_else(|| format!("bad shim argument {flag:?}"))?;
            if flag == "--tcp-established" {
                tcp = true;
                continue;
            }
            if flag == "--lazy-pages" {
                lazy = true;
                continue;
            }
            let slot = match flag {
                "--id" => &mut id,
                "--state-dir" => &mut state_dir,
                "--bundle" => &mut bundle,
                "--runc-binary" => &mut binary,
                "--runc-root" => &mut root,
                "--criu" => &mut criu,
                "--start-timeout-ms" => &mut start_timeout,
                "--log-max-size" => &mut log_max_size,
                "--log-max-files" => &mut log_max_files,
                "--restore-image" => &mut image,
                "--restore-work" => &mut work,
                _ => return Err(format!("unknown shim argument {flag}")),
            };
            let value = it.next().ok_or_else(|| format!("shim argument {flag} needs a value"))?;
            if slot.replace(value.clone()).is_some() {
                return Err(format!("shim argument {flag} given twice"));
            }
        }
        let need = |v: Option<OsString>, name: &str| v.ok_or_else(|| format!("missing shim argument --{name}"));
        let id = need(id, "id")?.into_string().map_err(|v| format!("bad container id {v:?}"))?;
        let start_timeout = match start_timeout {
            // A shim started by an agent of an earlier version.
            None => START_TIMEOUT,
            Some(ms) => Duration::from_millis(
                ms.to_str().and_then(|v| v.parse().ok()).ok_or_else(|| format!("bad --start-timeout-ms {ms:?}"))?,
            ),
        };
        // A shim started by an agent of an earlier version keeps the default limits.
        let number = |v: Option<OsString>, name: &str| -> Result<Option<u64>, String> {
            v.map(|v| v.to_str().and_then(|t| t.parse().ok()).ok_or_else(|| format!("bad --{name} {v:?}"))).transpose()
        };
        let defaults = LogLimits::default();
        let log = LogLimits {
            max_size: number(log_max_size, "log-max-size")?.unwrap_or(defaults.max_size),
            max_files: number(log_max_files, "log-max-files")?
                .map(|n| u32::try_from(n).map_err(|_| format!("bad --log-max-files {n}")))
                .transpose()?
                .unwrap_or(defaults.max_files),
        };
        let mode = match (image, work) {
            (None, None) if !tcp && !lazy => ShimMode::Run,
            (Some(image), Some(work)) => ShimMode::Restore {
                image_path: image.into(),
                work_path: work.into(),
                tcp_established: tcp,
                lazy_pages: lazy,
            },
            _ => {
                return Err("--restore-image, --restore-work, --tcp-established and --lazy-pages go together".into());
            }
        };
        Ok(ShimArgs {
            id,
            state_dir: need(state_dir, "state-dir")?.into(),
            bundle: need(bundle, "bundle")?.into(),
            runc: Runc {
                binary: need(binary, "runc-binary")?.into(),
                root: need(root, "runc-root")?.into(),
                criu: criu.map(PathBuf::from),
            },
            mode,
            start_timeout,
            log,
        })
    }

    /// The same arguments with every path made absolute (the shim runs in `/`).
    fn absolute(&self) -> io::Result<ShimArgs> {
        let mut a = self.clone();
        a.state_dir = std::path::absolute(&a.state_dir)?;
        a.bundle = std::path::absolute(&a.bundle)?;
        a.runc.root = std::path::absolute(&a.runc.root)?;
        // A bare binary name is looked up on PATH; a relative path is not.
        if a.runc.binary.components().count() > 1 {
            a.runc.binary = std::path::absolute(&a.runc.binary)?;
        }
        if let Some(criu) = &a.runc.criu
            && criu.components().count() > 1
        {
            a.runc.criu = Some(std::path::absolute(criu)?);
        }
        if let ShimMode::Restore { image_path, work_path, .. } = &mut a.mode {
            *image_path = std::path::absolute(&*image_path)?;
            *work_path = std::path::absolute(&*work_path)?;
        }
        Ok(a)
    }
}

/// The pids of a started container and its shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimStarted {
    pub shim_pid: u32,
    pub container_pid: u32,
}

/// How the container's init ended (the content of `exit.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + the signal number when a signal killed it.
    pub code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// When the shim collected it (unix millis).
    pub finished_at: u64,
}

/// Starting a shim failed.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The shim process could not be started.
    #[error("cannot start the shim: {0}")]
    Spawn(#[source] io::Error),
    /// The shim reported a failure: runc's error message (or the shim's own).
    #[error("{0}")]
    Start(String),
    /// The shim ended without a report.
    #[error("the shim exited without reporting ({0})")]
    NoReport(String),
    /// runc did not finish within the time limit (or its restore was stuck): it was killed
    /// with everything it had started, and the container deleted. Says which.
    #[error("{0}")]
    Timeout(String),
}

/// What the shim tells [`spawn_shim`] (one JSON document on the report pipe).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Report {
    Started {
        shim_pid: u32,
        container_pid: u32,
    },
    Failed {
        message: String,
    },
    /// runc was killed: it did not finish in time, or its restore was stuck.
    Stuck {
        message: String,
    },
}

/// Starts `exe` with `prefix_args` + `args.to_args()` as a shim that outlives the
/// caller, and waits until runc has started or restored the container, or failed: the shim
/// reports as soon as runc exits, and kills runc (with CRIU and whatever they started) once
/// `args.start_timeout` has passed or a restore is stuck. On failure the shim has exited and
/// removed the runc state. Blocking: call it from `spawn_blocking` in async code.
pub fn spawn_shim(exe: &Path, prefix_args: &[&str], args: &ShimArgs) -> Result<ShimStarted, ShimError> {
    spawn_shim_timeout(exe, prefix_args, args, args.start_timeout)
}

/// [`spawn_shim`] with another time limit (restoring a large checkpoint can take a
/// while). Should the shim itself not report by [`REPORT_GRACE`] after it, its process group
/// is killed and the container force-deleted.
pub fn spawn_shim_timeout(
    exe: &Path,
    prefix_args: &[&str],
    args: &ShimArgs,
    timeout: Duration,
) -> Result<ShimStarted, ShimError> {
    let mut args = args.absolute().map_err(ShimError::Spawn)?;
    args.start_timeout = timeout;
    std::fs::create_dir_all(&args.state_dir).map_err(ShimError::Spawn)?;
    let (report_r, report_w) = pipe().map_err(ShimError::Spawn)?;
    let w = report_w.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(prefix_args)
        .args(args.to_args())
        .env(REPORT_FD_ENV, w.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: fcntl is async-signal-safe; it only clears close-on-exec on the
    // report pipe's write end in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(w, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(ShimError::Spawn)?;
    drop(report_w);
    let deadline = Instant::now() + timeout + REPORT_GRACE;
    let report = read_report(&report_r, deadline);
    // The first shim process exits as soon as it has forked the real shim.
    let status = match &report {
        Ok(Some(_)) => child.wait().ok(),
        _ => {
            // Nothing reported in time: wait briefly, in case the process merely
            // failed before daemonizing, then give up on it.
            let until = Instant::now() + Duration::from_secs(1);
            loop {
                match child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                    _ => {
                        let _ = child.kill();
                        break child.wait().ok();
                    }
                }
            }
        }
    };
    match report {
        Ok(Some(bytes)) => match serde_json::from_slice::<Report>(&bytes) {
            Ok(Report::Started { shim_pid, container_pid }) => Ok(ShimStarted { shim_pid, container_pid }),
            Ok(Report::Failed { message }) => Err(ShimError::Start(message)),
            Ok(Report::Stuck { message }) => Err(ShimError::Timeout(message)),
            Err(e) => Err(ShimError::NoReport(format!("unreadable report {:?}: {e}", String::from_utf8_lossy(&bytes)))),
        },
        Ok(None) => {
            let what = match status {
                Some(s) if !s.success() => format!("first shim process: {s}"),
                _ => "the shim died".to_string(),
            };
            Err(ShimError::NoReport(what))
        }
        Err(()) => {
            if let Some(pid) = live_shim(&args.state_dir) {
                // The shim leads its own process group (setsid): runc and CRIU too.
                // SAFETY: plain syscall.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            let _ = args.runc.delete_force_blocking(&args.id);
            Err(ShimError::Timeout(format!(
                "the shim of {} did not report within {:?}: it was killed",
                args.id,
                timeout + REPORT_GRACE
            )))
        }
    }
}

/// Reads the report pipe to its end: `Ok(Some(bytes))` for a report, `Ok(None)` at
/// end of file without one, `Err(())` at the deadline.
fn read_report(fd: &OwnedFd, deadline: Instant) -> Result<Option<Vec<u8>>, ()> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(());
        }
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Ok(None);
        }
        if r == 0 {
            continue; // the loop head checks the deadline
        }
        // SAFETY: reading into a stack buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Ok(None);
        }
        if n == 0 {
            let trimmed = out.trim_ascii();
            return Ok(if trimmed.is_empty() { None } else { Some(trimmed.to_vec()) });
        }
        out.extend_from_slice(&buf[..n as usize]);
        if out.len() > 1 << 20 {
            return Ok(Some(out)); // not a report; let parsing fail
        }
    }
}

/// The container's exit status, once its shim has written `exit.json`.
pub fn read_exit(state_dir: &Path) -> Option<ExitStatus> {
    let bytes = std::fs::read(state_dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The shim's pid if that process is alive and is a shim for this `state_dir`
/// (its command line holds `--state-dir <state_dir>`).
pub fn live_shim(state_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(state_dir.join(SHIM_PID_FILE)).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let want = std::path::absolute(state_dir).ok()?;
    let want = want.as_os_str().as_bytes();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.windows(2).any(|w| w[0] == b"--state-dir" && w[1] == want).then_some(pid)
}

/// Resolves when process `pid` exits (at once if there is no such process). Works
/// for processes that are not the caller's children (pidfd). Needs a tokio runtime
/// with IO enabled. Beware pid reuse: check the pid (e.g. [`live_shim`]) first.
pub async fn wait_for_exit(pid: u32) -> io::Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) { Ok(()) } else { Err(e) };
    }
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and the same for
    // the AsyncFd's whole life.
    let afd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
    let _ready = afd.readable().await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The shim process.

/// The shim's entry point (`herd shim <args>`): never returns. Call it from `main`
/// before any other thread exists (no tokio runtime): it forks to leave its
/// parent, then runs single-threaded until the container has exited.
pub fn shim_main(args: ShimArgs) -> ! {
    let report_fd: Option<RawFd> = std::env::var(REPORT_FD_ENV).ok().and_then(|v| v.parse().ok());
    // SAFETY: single-threaded at this point (documented requirement).
    unsafe { std::env::remove_var(REPORT_FD_ENV) };
    // Descriptors the caller leaked (a jobserver, a terminal's pipes) must not stay
    // open for the shim's whole life, nor reach runc and the container.
    close_other_fds(report_fd);
    let report = report_fd.and_then(|fd| {
        // SAFETY: F_GETFD only checks that the fd is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return None;
        }
        // Not for runc or the container.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: the fd was handed to this process for this purpose alone.
        Some(unsafe { File::from_raw_fd(fd) })
    });
    // SAFETY: resetting a signal disposition. An ignored SIGCHLD survives exec and
    // would make the kernel reap the container without telling the shim.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    // SAFETY: fork in a single-threaded process; the parent leaves at once without
    // running any destructor.
    match unsafe { libc::fork() } {
        -1 => {
            let mut reporter = Reporter(report);
            reporter.send(&Report::Failed { message: format!("shim: fork: {}", io::Error::last_os_error()) });
            std::process::exit(1)
        }
        0 => {}
        _ => unsafe { libc::_exit(0) },
    }
    // SAFETY: plain syscalls on this process.
    unsafe {
        libc::setsid();
        libc::chdir(c"/".as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
    let mut shim = Shim { args, reporter: Reporter(report) };
    let code = match shim.run() {
        Ok(()) => 0,
        Err(e) => {
            shim.note(&e);
            shim.reporter.send(&Report::Failed { message: format!("shim: {e}") });
            1
        }
    };
    std::process::exit(code)
}

/// Closes every descriptor above 2 except `keep`.
fn close_other_fds(keep: Option<RawFd>) {
    let ranges: &[(u32, u32)] = match keep {
        Some(k) if k > 3 => &[(3, k as u32 - 1), (k as u32 + 1, u32::MAX)],
        Some(3) => &[(4, u32::MAX)],
        _ => &[(3, u32::MAX)],
    };
    for &(first, last) in ranges {
        // SAFETY: close_range only closes descriptors; nothing in this process
        // uses the ones above 2 yet (except `keep`).
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) } != 0 {
            // Kernels before 5.9: close what /proc lists.
            let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            for fd in fds {
                if fd as u32 >= first && fd as u32 <= last {
                    // SAFETY: see above.
                    unsafe { libc::close(fd) };
                }
            }
        }
    }
}

/// The report pipe's write end (sends at most once).
struct Reporter(Option<File>);

impl Reporter {
    fn send(&mut self, report: &Report) {
        if let Some(mut f) = self.0.take()
            && let Ok(json) = serde_json::to_vec(report)
        {
            let _ = f.write_all(&json);
        }
    }
}

struct Shim {
    args: ShimArgs,
    reporter: Reporter,
}

/// One of the container's output pipes.
struct Stream {
    fd: OwnedFd,
    kind: LogStream,
    open: bool,
    lines: LineSplitter,
}

impl Shim {
    fn path(&self, name: &str) -> PathBuf {
        self.args.state_dir.join(name)
    }

    /// Appends a line to `shim.log` (best effort).
    fn note(&self, what: &dyn std::fmt::Display) {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(self.path(SHIM_LOG_FILE)) {
            let _ = writeln!(f, "{} shim {}: {what}", herd_proto::now_millis(), std::process::id());
        }
    }

    fn run(&mut self) -> io::Result<()> {
        // SAFETY: prctl on this process.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::other(format!("PR_SET_CHILD_SUBREAPER: {}", io::Error::last_os_error())));
        }
        write_atomic(&self.path(SHIM_PID_FILE), std::process::id().to_string().as_bytes())?;
        for stale in [EXIT_FILE, CONTAINER_PID_FILE] {
            match std::fs::remove_file(self.path(stale)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let sigchld = sigchld_fd()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let log_path = self.path(RUNC_LOG_FILE);
        let log_offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let pid_path = self.path(CONTAINER_PID_FILE);
        let a = &self.args;
        // What CRIU logs while it restores (runc names the file).
        let restore_log = match &a.mode {
            ShimMode::Run => None,
            ShimMode::Restore { work_path, image_path, .. } => {
                Some((work_path.join("restore.log"), restore_log_limit(image_path)))
            }
        };
        let mut cmd = match &a.mode {
            ShimMode::Run => a.runc.run_command(&a.id, &a.bundle, &pid_path, &log_path),
            ShimMode::Restore { image_path, work_path, tcp_established, lazy_pages } => a.runc.restore_command(
                &a.id,
                &a.bundle,
                image_path,
                work_path,
                *tcp_established,
                *lazy_pages,
                &pid_path,
                &log_path,
            ),
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        let spawned = cmd.spawn();
        drop(cmd); // closes the shim's copies of the pipes' write ends
        let mut runc = spawned.map_err(|e| io::Error::other(format!("cannot run {}: {e}", a.runc.binary.display())))?;
        let status = match self.wait_runc(&mut runc, &sigchld, restore_log.as_ref().map(|(p, l)| (p.as_path(), *l))) {
            Ok(status) => status,
            Err(message) => {
                // runc's children (CRIU, and the processes CRIU restored, which leave runc's
                // process group) are the shim's now or as soon as their parents die.
                kill_children(Duration::from_secs(5));
                // A killed CRIU leaves the mounts it made in its work directory (its cgroup
                // yard: a tmpfs with every controller below it).
                if let ShimMode::Restore { work_path, .. } = &a.mode {
                    for e in unmount_below(work_path) {
                        self.note(&format_args!("cleaning up after a stuck start: {e}"));
                    }
                }
                if let Err(e) = a.runc.delete_force_blocking(&a.id) {
                    self.note(&format_args!("cleaning up after a stuck start: {e}"));
                }
                self.note(&message);
                self.reporter.send(&Report::Stuck { message });
                std::process::exit(1);
            }
        };
        set_nonblocking(&out_r)?;
        set_nonblocking(&err_r)?;
        let container_pid = if status.success() {
            std::fs::read_to_string(&pid_path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .ok_or_else(|| format!("runc succeeded but left no pid in {}", pid_path.display()))
        } else {
            let message = last_runc_error(&log_path, log_offset)
                .or_else(|| last_line(&err_r))
                .unwrap_or_else(|| format!("runc exited with {status}"));
            Err(message)
        };
        let container_pid = match container_pid {
            Ok(pid) => pid,
            Err(message) => {
                if let Err(e) = a.runc.delete_force_blocking(&a.id) {
                    self.note(&format_args!("cleaning up after a failed start: {e}"));
                }
                self.note(&message);
                self.reporter.send(&Report::Failed { message });
                std::process::exit(1);
            }
        };
        self.reporter.send(&Report::Started { shim_pid: std::process::id(), container_pid });

        let mut writer = match LogWriter::open(&self.args.state_dir, self.args.log) {
            Ok(w) => Some(w),
            Err(e) => {
                self.note(&format_args!("cannot open the log: {e}"));
                None
            }
        };
        let mut streams = [
            Stream { fd: out_r, kind: LogStream::Stdout, open: true, lines: LineSplitter::new() },
            Stream { fd: err_r, kind: LogStream::Stderr, open: true, lines: LineSplitter::new() },
        ];
        let exit = self.event_loop(&sigchld, &mut streams, container_pid as libc::pid_t, &mut writer);
        let json = serde_json::to_vec(&exit).map_err(io::Error::other)?;
        write_atomic(&self.path(EXIT_FILE), &json)
    }

    /// Waits for runc to exit; kills it and says why when it has not by the time limit, or
    /// when the CRIU log of a restore (`restore_log`: the file and its bound, see
    /// [`restore_log_limit`]) grows past its bound.
    fn wait_runc(
        &self,
        runc: &mut std::process::Child,
        sigchld: &OwnedFd,
        restore_log: Option<(&Path, u64)>,
    ) -> Result<std::process::ExitStatus, String> {
        let limit = self.args.start_timeout;
        let deadline = Instant::now() + limit;
        let what = match &self.args.mode {
            ShimMode::Run => "runc run",
            ShimMode::Restore { .. } => "runc restore",
        };
        let stuck = loop {
            match runc.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {}
                Err(e) => break format!("waiting for {what}: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break format!("{what} did not finish within {limit:?}: it was killed");
            }
            if let Some((log, bound)) = restore_log
                && std::fs::metadata(log).is_ok_and(|m| m.len() > bound)
            {
                break format!(
                    "CRIU wrote more than {} MiB to {} without finishing the restore: it is stuck, and was killed",
                    bound >> 20,
                    log.display()
                );
            }
            // Woken by SIGCHLD; a restore's log is looked at a few times a second.
            let mut pfd = libc::pollfd { fd: sigchld.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let nap = if restore_log.is_some() { left.min(Duration::from_millis(200)) } else { left };
            let ms = nap.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            drain_signalfd(sigchld);
        };
        let _ = runc.kill();
        let _ = runc.wait();
        Err(stuck)
    }

    /// Logs the container's output until it has exited and both pipes reached end
    /// of file (or [`EXIT_GRACE`] after its exit); returns its exit status.
    fn event_loop(
        &self,
        sigchld: &OwnedFd,
        streams: &mut [Stream; 2],
        container_pid: libc::pid_t,
        writer: &mut Option<LogWriter>,
    ) -> ExitStatus {
        let mut exit: Option<(ExitStatus, Instant)> = None;
        let write_failed = std::cell::Cell::new(false);
        let check = |r: io::Result<()>| {
            if let Err(e) = r
                && !write_failed.replace(true)
            {
                self.note(&format_args!("writing the log: {e}"));
            }
        };
        // Lines are collected, and written once per wake-up: a chatty container costs a
        // write per batch of lines, not per line.
        let emit = |kind: LogStream, time: u64, line: &[u8], writer: &mut Option<LogWriter>| {
            if let Some(w) = writer {
                check(w.write_line(kind, time, line));
            }
        };
        let flush = |writer: &mut Option<LogWriter>| {
            if let Some(w) = writer {
                check(w.flush());
            }
        };
        // The container may have exited before this loop started.
        reap(container_pid, &mut exit);
        loop {
            let timeout = match &exit {
                None => -1,
                Some(_) if !streams.iter().any(|s| s.open) => break,
                Some((_, at)) => {
                    let left = EXIT_GRACE.saturating_sub(at.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    left.as_millis().max(1) as i32
                }
            };
            let mut pfds = [
                libc::pollfd { fd: sigchld.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: -1, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: -1, events: libc::POLLIN, revents: 0 },
            ];
            for (i, s) in streams.iter().enumerate() {
                if s.open {
                    pfds[i + 1].fd = s.fd.as_raw_fd();
                }
            }
            // SAFETY: valid pollfds; negative fds are ignored.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    self.note(&format_args!("poll: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            for (i, s) in streams.iter_mut().enumerate() {
                if s.open && pfds[i + 1].revents != 0 {
                    let time = herd_proto::now_millis();
                    // Bounded, so that a chatty stream cannot starve the other.
                    for _ in 0..16 {
                        // SAFETY: reading into the splitter's free space.
                        let spare = s.lines.spare();
                        let n = unsafe { libc::read(s.fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
                        if n > 0 {
                            s.lines.filled(n as usize);
                            let kind = s.kind;
                            s.lines.drain(|l| emit(kind, time, l, writer));
                            continue;
                        }
                        let e = io::Error::last_os_error();
                        if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        if n == 0 || e.kind() != io::ErrorKind::WouldBlock {
                            // End of file (or a broken pipe): flush the partial line.
                            s.open = false;
                            let kind = s.kind;
                            s.lines.finish(|l| emit(kind, time, l, writer));
                        }
                        break;
                    }
                }
            }
            flush(writer);
            if pfds[0].revents != 0 {
                drain_signalfd(sigchld);
                reap(container_pid, &mut exit);
            }
        }
        for s in streams.iter_mut().filter(|s| s.open) {
            let kind = s.kind;
            let time = herd_proto::now_millis();
            s.lines.finish(|l| emit(kind, time, l, writer));
        }
        flush(writer);
        exit.map(|(e, _)| e).expect("the loop ends only after the container exited")
    }
}

/// Kills every child of the shim, and the processes that become its children as their
/// parents die (it is their subreaper), until it has none left or `limit` has passed.
fn kill_children(limit: Duration) {
    let me = std::process::id();
    let until = Instant::now() + limit;
    loop {
        let children = children_of(me);
        for pid in &children {
            // SAFETY: plain syscall on a child of this process.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        // Reap whatever has died (zombies are listed as children too).
        let mut status = 0;
        // SAFETY: plain waitpid.
        while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
        if children.is_empty() || Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pids whose parent is `parent` (from `/proc/*/stat`).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ...": comm may hold anything, so split after the last ')'.
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

/// Reaps every child that has exited; records the container's status.
fn reap(container_pid: libc::pid_t, exit: &mut Option<(ExitStatus, Instant)>) {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break; // 0: none exited; -1: no children (ECHILD)
        }
        if pid == container_pid && exit.is_none() {
            let (code, signal) = if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                (128 + sig, Some(sig))
            } else {
                (libc::WEXITSTATUS(status), None)
            };
            *exit = Some((ExitStatus { code, signal, finished_at: herd_proto::now_millis() }, Instant::now()));
        }
    }
}

/// Blocks SIGCHLD and returns a non-blocking signalfd for it.
fn sigchld_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset manipulation and syscalls on this (single-threaded) process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn drain_signalfd(fd: &OwnedFd) {
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: reading whole siginfo structures into one.
    while unsafe { libc::read(fd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size) }
        == size as isize
    {}
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an owned fd.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The last non-empty line of what is waiting in a (non-blocking) pipe: what runc
/// printed on stderr before failing.
fn last_line(fd: &OwnedFd) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut file = File::from(fd.try_clone().ok()?);
    let n = file.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string())
}

/// Writes `path` atomically: a temporary file beside it, then rename.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(OsStr::new(".tmp"));
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Detaches every mount at or below `dir` (deepest first, see [`crate::overlay::mounts_under`]);
/// returns what could not be unmounted.
fn unmount_below(dir: &Path) -> Vec<String> {
    let points = match crate::overlay::mounts_under(dir) {
        Ok(points) => points,
        Err(e) => return vec![format!("{e:#}")],
    };
    let mut problems = Vec::new();
    for p in points {
        match nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
            // Gone with its parent's detach meanwhile.
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => problems.push(format!("unmounting {}: {e}", p.display())),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(mode: ShimMode) -> ShimArgs {
        ShimArgs {
            id: "c-1".into(),
            state_dir: "/var/lib/herd/c-1".into(),
            bundle: "/var/lib/herd/c-1/bundle".into(),
            runc: Runc {
                binary: "runc".into(),
                root: "/run/herd/runc".into(),
                criu: Some("/usr/local/sbin/criu".into()),
            },
            mode,
            start_timeout: Duration::from_millis(1500),
            log: LogLimits { max_size: 1 << 20, max_files: 3 },
        }
    }

    #[test]
    fn args_round_trip() {
        for mode in [
            ShimMode::Run,
            ShimMode::Restore {
                image_path: "/img".into(),
                work_path: "/work".into(),
                tcp_established: true,
                lazy_pages: false,
            },
            ShimMode::Restore {
                image_path: "/img".into(),
                work_path: "/work".into(),
                tcp_established: false,
                lazy_pages: true,
            },
        ] {
            let mut a = sample(mode);
            assert_eq!(ShimArgs::parse(&a.to_args()).unwrap(), a);
            a.runc.criu = None;
            assert_eq!(ShimArgs::parse(&a.to_args()).unwrap(), a);
        }
        // A shim started by an earlier agent has no time limit on its command line.
        let mut earlier = sample(ShimMode::Run).to_args();
        let at = earlier.iter().position(|a| a == "--start-timeout-ms").unwrap();
        earlier.drain(at..at + 2);
        assert_eq!(ShimArgs::parse(&earlier).unwrap().start_timeout, START_TIMEOUT);
        let at = earlier.iter().position(|a| a == "--log-max-size").unwrap();
        earlier.drain(at..at + 4);
        assert_eq!(ShimArgs::parse(&earlier).unwrap().log, LogLimits::default());
        assert!(ShimArgs::parse(&["--id".into()]).is_err());
        assert!(ShimArgs::parse(&["--what".into(), "x".into()]).is_err());
        let mut v = sample(ShimMode::Run).to_args();
        v.push("--tcp-established".into());
        assert!(ShimArgs::parse(&v).is_err());
    }

    #[test]
    fn exit_and_liveness_files() {
        let dir = std::env::temp_dir().join(format!("herd-shim-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_exit(&dir), None);
        let e = ExitStatus { code: 137, signal: Some(9), finished_at: 5 };
        write_atomic(&dir.join(EXIT_FILE), &serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(read_exit(&dir), Some(e));
        // Our own pid is alive but is not a shim for this directory.
        std::fs::write(dir.join(SHIM_PID_FILE), std::process::id().to_string()).unwrap();
        assert_eq!(live_shim(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
