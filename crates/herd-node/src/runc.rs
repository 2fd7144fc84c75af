//! A typed wrapper of the `runc` command line.
//!
//! Every invocation passes `--root` (and `--criu` when configured) and asks runc
//! to log as JSON into a file of its own (`--log <file> --log-format json`): when
//! runc fails, the error carries runc's own message, the last entry of that log
//! whose level is `error` (or, failing that, what runc printed on stderr).
//!
//! The async methods are for the node agent; [`Runc::run_command`] and
//! [`Runc::restore_command`] build the commands the shim runs itself, so that it
//! can hand them its own pipes as stdio.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// How to invoke runc: its binary, its state directory and the CRIU it should use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runc {
    /// The runc executable, e.g. `/usr/sbin/runc` (or just `runc` to search `PATH`).
    pub binary: PathBuf,
    /// runc's `--root`: where it keeps the state of the containers it manages.
    pub root: PathBuf,
    /// runc's `--criu`: the CRIU binary for checkpoint and restore (runc's default,
    /// `criu` on `PATH`, when `None`).
    pub criu: Option<PathBuf>,
}

/// What `runc state` / `runc list` say about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuncState {
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The container's init process on the host (0 once it has stopped).
    pub pid: u32,
}

/// Options of [`Runc::checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointOpts {
    /// Where CRIU writes the images (created if missing).
    pub image_path: PathBuf,
    /// Where CRIU writes its log (`dump.log`) and other work files (created if missing).
    pub work_path: PathBuf,
    /// Keep the container running after the dump (otherwise CRIU kills it and runc
    /// deletes it).
    pub leave_running: bool,
    /// Dump established TCP connections (`--tcp-established`).
    pub tcp_established: bool,
    /// Send memory pages to (or, with `lazy_pages`, serve them at) a CRIU page server.
    pub page_server: Option<std::net::SocketAddr>,
    /// Post-copy: dump everything but memory, then serve pages until the restored side has
    /// them all (`--lazy-pages`).
    pub lazy_pages: bool,
    /// The fd (in runc's process) on which runc writes a `\0` once the images are ready.
    pub status_fd: Option<i32>,
    /// Pre-copy round: dump memory only and leave the container running (`--pre-dump`).
    pub pre_dump: bool,
    /// The previous dump's images, relative to `image_path` (`--parent-path`): only the pages
    /// written since it are dumped.
    pub parent_path: Option<PathBuf>,
    /// A CRIU configuration file naming `track-mem`, given to CRIU through its
    /// `CRIU_CONFIG_FILE` variable: a dump without a parent that starts tracking written
    /// pages for the next one (runc asks CRIU to track only for pre-dumps and with a parent).
    pub track_mem_config: Option<PathBuf>,
}

impl CheckpointOpts {
    /// A plain checkpoint into `image_path`.
    pub fn new(image_path: PathBuf, work_path: PathBuf) -> Self {
        CheckpointOpts {
            image_path,
            work_path,
            leave_running: false,
            tcp_established: true,
            page_server: None,
            lazy_pages: false,
            status_fd: None,
            pre_dump: false,
            parent_path: None,
            track_mem_config: None,
        }
    }
}

/// A failed runc invocation.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    /// runc could not be started at all.
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// runc ran and failed; `message` is runc's own error message.
    #[error("runc {command} failed: {message}")]
    Failed { command: String, message: String },
    /// runc succeeded but printed something this wrapper does not understand.
    #[error("unexpected output from runc {command}: {message}")]
    Output { command: String, message: String },
    /// Preparing the invocation failed (log file, image directories).
    #[error("runc {command}: {source}")]
    Io {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuncError {
    /// True when runc failed because it does not know the container.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuncError::Failed { message, .. } if is_not_exist_message(message))
    }
}

fn is_not_exist_message(message: &str) -> bool {
    message.contains("container does not exist")
}

/// Unique per-invocation log file names (pid + counter) in the temporary directory.
static LOG_SEQ: AtomicU64 = AtomicU64::new(0);

/// A runc `--log` file for one invocation, removed on drop.
struct TempLog(PathBuf);

impl TempLog {
    fn new() -> TempLog {
        let seq = LOG_SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        TempLog(std::env::temp_dir().join(format!("herd-runc-{}-{seq}-{nanos}.log", std::process::id())))
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The message of the last `"level":"error"` entry of a runc JSON log, reading from
/// byte `offset` on (runc appends to its log: pass the length the file had before
/// the invocation to ignore older entries).
pub fn last_runc_error(log_file: &Path, offset: u64) -> Option<String> {
    let mut file = std::fs::File::open(log_file).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut last = None;
    for line in BufReader::new(file).split(b'\n') {
        let Ok(line) = line else { break };
        #[derive(Deserialize)]
        struct Entry {
            level: Option<String>,
            msg: Option<String>,
        }
        if let Ok(Entry { level: Some(level), msg: Some(msg) }) = serde_json::from_slice(&line)
            && (level == "error" || level == "fatal")
        {
            last = Some(msg);
        }
    }
    last
}

/// runc's message for a failed invocation: its log, else its stderr, else its status.
fn failure_message(log_file: &Path, offset: u64, stderr: &[u8], status: std::process::ExitStatus) -> String {
    if let Some(msg) = last_runc_error(log_file, offset) {
        return msg;
    }
    let stderr = String::from_utf8_lossy(stderr);
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        // The last non-empty line is the fatal error runc prints on exit.
        return stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(stderr).to_string();
    }
    format!("runc exited with {status}")
}

/// The arguments of `runc checkpoint` for `opts` (after the global options).
fn checkpoint_args(id: &str, opts: &CheckpointOpts) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "checkpoint".into(),
        "--image-path".into(),
        opts.image_path.clone().into(),
        "--work-path".into(),
        opts.work_path.clone().into(),
    ];
    if opts.leave_running {
        args.push("--leave-running".into());
    }
    if opts.tcp_established {
        args.push("--tcp-established".into());
    }
    if let Some(addr) = opts.page_server {
        args.push("--page-server".into());
        args.push(addr.to_string().into());
    }
    if opts.lazy_pages {
        args.push("--lazy-pages".into());
    }
    if let Some(fd) = opts.status_fd {
        args.push("--status-fd".into());
        args.push(fd.to_string().into());
    }
    if opts.pre_dump {
        args.push("--pre-dump".into());
    }
    if let Some(parent) = &opts.parent_path {
        args.push("--parent-path".into());
        args.push(parent.clone().into());
    }
    args.push(id.into());
    args
}

impl Runc {
    /// A runc invocation with the global options in place: `--root`, `--criu`, and
    /// `--log <log_file> --log-format json`.
    fn command(&self, log_file: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        if let Some(criu) = &self.criu {
            cmd.arg("--criu").arg(criu);
        }
        cmd.arg("--log").arg(log_file).args(["--log-format", "json"]);
        cmd
    }

    /// Runs `runc <global options> <args>` and returns its stdout, or its error.
    async fn exec(&self, name: &str, args: &[OsString]) -> Result<Vec<u8>, RuncError> {
        self.exec_with_env(name, args, &[]).await
    }

    /// [`Runc::exec`] with variables added to runc's environment (which CRIU inherits).
    async fn exec_with_env(
        &self,
        name: &str,
        args: &[OsString],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Vec<u8>, RuncError> {
        let log = TempLog::new();
        let mut cmd = self.command(&log.0);
        cmd.args(args).envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let output = tokio::process::Command::from(cmd)
            .output()
            .await
            .map_err(|source| RuncError::Spawn { binary: self.binary.clone(), source })?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(RuncError::Failed {
                command: name.to_string(),
                message: failure_message(&log.0, 0, &output.stderr, output.status),
            })
        }
    }

    /// runc's version, e.g. `1.1.5+ds1` (the first line of `runc --version`).
    pub async fn version(&self) -> Result<String, RuncError> {
        let output = tokio::process::Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| RuncError::Spawn { binary: self.binary.clone(), source })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(RuncError::Failed {
                command: "--version".into(),
                message: failure_message(Path::new(""), 0, &output.stderr, output.status),
            });
        }
        let first = stdout.lines().next().unwrap_or_default();
        match first.strip_prefix("runc version ") {
            Some(v) => Ok(v.trim().to_string()),
            None => Err(RuncError::Output { command: "--version".into(), message: first.to_string() }),
        }
    }

    /// The container's state, or `None` when runc does not know `id`.
    pub async fn state(&self, id: &str) -> Result<Option<RuncState>, RuncError> {
        match self.exec("state", &["state".into(), id.into()]).await {
            Ok(stdout) => serde_json::from_slice::<RuncState>(&stdout)
                .map(Some)
                .map_err(|e| RuncError::Output { command: "state".into(), message: e.to_string() }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container runc knows under its root, with its state.
    pub async fn list(&self) -> Result<Vec<(String, RuncState)>, RuncError> {
        let stdout = self.exec("list", &["list".into(), "--format".into(), "json".into()]).await?;
        #[derive(Deserialize)]
        struct Item {
            id: String,
            status: String,
            pid: u32,
        }
        // runc prints `null` when there is no container.
        let items: Option<Vec<Item>> = serde_json::from_slice(&stdout)
            .map_err(|e| RuncError::Output { command: "list".into(), message: e.to_string() })?;
        Ok(items.unwrap_or_default().into_iter().map(|i| (i.id, RuncState { status: i.status, pid: i.pid })).collect())
    }

    /// Sends `signal` to the container's init (to all its processes when `all`).
    pub async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec!["kill".into()];
        if all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(signal.to_string().into());
        self.exec("kill", &args).await.map(drop)
    }

    /// Deletes the container's runc state (and cgroup); `force` kills it first if it
    /// still runs. Succeeds when runc does not know `id`. Either way, what runc leaves of
    /// it is removed too (see [`Runc::remove_leftovers`]).
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec!["delete".into()];
        if force {
            args.push("--force".into());
        }
        args.push(id.into());
        self.unmount_criu_root(id)?;
        match self.exec("delete", &args).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => self.remove_leftovers(id),
        }
    }

    /// The blocking twin of `delete(id, true)`, for the shim and for clean-up paths
    /// that cannot await. Errors other than "does not exist" are returned.
    pub fn delete_force_blocking(&self, id: &str) -> Result<(), RuncError> {
        self.unmount_criu_root(id)?;
        let log = TempLog::new();
        let output = self
            .command(&log.0)
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| RuncError::Spawn { binary: self.binary.clone(), source })?;
        let message = failure_message(&log.0, 0, &output.stderr, output.status);
        if output.status.success() || is_not_exist_message(&message) {
            self.remove_leftovers(id)
        } else {
            Err(RuncError::Failed { command: "delete".into(), message })
        }
    }

    /// runc's directory of container `id` (`None` for an id that is not a plain name).
    fn state_dir(&self, id: &str) -> Option<PathBuf> {
        (!id.is_empty() && !id.contains('/') && id != "." && id != "..").then(|| self.root.join(id))
    }

    /// Unmounts `<root>/<id>/criu-root`, the bind mount of the container's root filesystem
    /// that `runc restore` makes for CRIU and unmounts when it returns. A restore that was
    /// killed leaves it mounted, and `runc delete` then removes the container's files through
    /// it (it calls `RemoveAll` on the directory of a container it does not know) before
    /// failing on the mount point. Call it only when no runc process works on `id`.
    fn unmount_criu_root(&self, id: &str) -> Result<(), RuncError> {
        let Some(dir) = self.state_dir(id) else { return Ok(()) };
        let criu_root = dir.join("criu-root");
        let fail = |e: String| RuncError::Io {
            command: format!("unmounting {}", criu_root.display()),
            source: std::io::Error::other(e),
        };
        // Mounted more than once if restores were killed more than once.
        while crate::overlay::is_mountpoint(&criu_root).map_err(|e| fail(format!("{e:#}")))? {
            nix::mount::umount2(&criu_root, nix::mount::MntFlags::MNT_DETACH).map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    }

    /// Removes runc's directory of container `id` when runc does not know the container (the
    /// directory has no `state.json`): a `runc restore` that fails late or is killed leaves it,
    /// with `criu-root` in it, and runc answers "container does not exist" to everything but
    /// `restore`, which fails with "container with given ID already exists". Call it only
    /// when no runc process works on `id`.
    pub fn remove_leftovers(&self, id: &str) -> Result<(), RuncError> {
        let Some(dir) = self.state_dir(id) else { return Ok(()) };
        if std::fs::symlink_metadata(&dir).is_err() || dir.join("state.json").exists() {
            return Ok(());
        }
        self.unmount_criu_root(id)?;
        let fail = |source: std::io::Error| RuncError::Io { command: format!("removing {}", dir.display()), source };
        // Never delete through a mount: the container's own files could be under it.
        let mounts = crate::overlay::mounts_under(&dir).map_err(|e| fail(std::io::Error::other(format!("{e:#}"))))?;
        if let Some(m) = mounts.first() {
            return Err(fail(std::io::Error::other(format!("{} is still mounted", m.display()))));
        }
        std::fs::remove_dir_all(&dir).map_err(fail)
    }

    /// Checkpoints the container with CRIU into `opts.image_path`.
    pub async fn checkpoint(&self, id: &str, opts: &CheckpointOpts) -> Result<(), RuncError> {
        for dir in [&opts.image_path, &opts.work_path] {
            std::fs::create_dir_all(dir).map_err(|source| RuncError::Io { command: "checkpoint".into(), source })?;
        }
        let env: Vec<_> = opts.track_mem_config.iter().map(|c| ("CRIU_CONFIG_FILE", c.as_os_str())).collect();
        self.exec_with_env("checkpoint", &checkpoint_args(id, opts), &env).await.map(drop)
    }

    /// `runc checkpoint` as a command to spawn with stdio, fds and cgroup of the caller's
    /// choosing (post-copy keeps it running while it serves pages). Its log goes to `log_file`
    /// (see [`last_runc_error`]). The image and work directories must exist.
    pub fn checkpoint_command(&self, id: &str, opts: &CheckpointOpts, log_file: &Path) -> Command {
        let mut cmd = self.command(log_file);
        cmd.args(checkpoint_args(id, opts));
        cmd
    }

    /// Freezes every process of the container (`runc pause`).
    ///
    /// With cgroup v1, runc 1.1 gives the freezer about 1,000 quick tries (some 0.2 s) and
    /// thaws the container again when it is still `FREEZING` after them ("unable to
    /// freeze"): on a loaded machine, a container busy in system calls (nginx under wrk) can
    /// take longer. The pause is tried again, a few times, after a short wait.
    pub async fn pause(&self, id: &str) -> Result<(), RuncError> {
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            match self.exec("pause", &["pause".into(), id.into()]).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < ATTEMPTS && e.to_string().contains("unable to freeze") => {
                    tracing::info!("{id}: runc could not freeze it at try {attempt} of {ATTEMPTS}; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Thaws a paused container (`runc resume`).
    pub async fn resume(&self, id: &str) -> Result<(), RuncError> {
        self.exec("resume", &["resume".into(), id.into()]).await.map(drop)
    }

    /// `runc run -d --bundle <bundle> --pid-file <pid_file> <id>`, logging to
    /// `log_file`. Stdio is left for the caller to set: without a terminal runc
    /// hands its own stdio to the container.
    pub fn run_command(&self, id: &str, bundle: &Path, pid_file: &Path, log_file: &Path) -> Command {
        let mut cmd = self.command(log_file);
        cmd.args(["run", "-d", "--bundle"]).arg(bundle).arg("--pid-file").arg(pid_file).arg(id);
        cmd
    }

    /// `runc restore -d --bundle <bundle> --image-path <image_path> --work-path
    /// <work_path> [--tcp-established] --pid-file <pid_file> <id>`, logging to
    /// `log_file`. runc maps the checkpoint's external stdio pipes onto its own
    /// stdio (CRIU inherit-fd), so the restored processes write into the caller's
    /// stdio.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_command(
        &self,
        id: &str,
        bundle: &Path,
        image_path: &Path,
        work_path: &Path,
        tcp_established: bool,
        lazy_pages: bool,
        pid_file: &Path,
        log_file: &Path,
    ) -> Command {
        let mut cmd = self.command(log_file);
        cmd.args(["restore", "-d", "--bundle"])
            .arg(bundle)
            .arg("--image-path")
            .arg(image_path)
            .arg("--work-path")
            .arg(work_path);
        if tcp_established {
            cmd.arg("--tcp-established");
        }
        if lazy_pages {
            cmd.arg("--lazy-pages");
        }
        cmd.arg("--pid-file").arg(pid_file).arg(id);
        cmd
    }
}

/// What [`Runc::exec_command`] runs, and how (runc takes the rest from the container's
/// configuration: namespaces, cgroup, capabilities, user, environment, working directory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOpts {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs added after the container's environment (a later one wins).
    pub env: Vec<String>,
    /// Another working directory.
    pub cwd: Option<String>,
    /// Another user: uid, gid and supplementary groups.
    pub user: Option<crate::user::Identity>,
    /// Give the process a terminal (runc makes one in the container and copies between it
    /// and runc's own terminal, which must be its stdio).
    pub tty: bool,
}

/// The arguments of `runc exec` for `opts` (after the global options).
fn exec_args(id: &str, opts: &ExecOpts, pid_file: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["exec".into(), "--pid-file".into(), pid_file.into()];
    if opts.tty {
        args.push("--tty".into());
    }
    if let Some(cwd) = &opts.cwd {
        args.push("--cwd".into());
        args.push(cwd.into());
    }
    if let Some(id) = &opts.user {
        args.push("--user".into());
        args.push(format!("{}:{}", id.uid, id.gid).into());
        for g in &id.additional_gids {
            args.push("--additional-gids".into());
            args.push(g.to_string().into());
        }
    }
    for e in &opts.env {
        args.push("--env".into());
        args.push(e.into());
    }
    args.push(id.into());
    args.extend(opts.args.iter().map(OsString::from));
    args
}

impl Runc {
    /// `runc exec` of `opts` in container `id`, writing the process's pid (on the host) to
    /// `pid_file` once it started, and logging to `log_file` (see [`last_runc_error`]). runc
    /// stays the process's parent, forwards signals to it and exits with its status (128 +
    /// signal when a signal killed it). Stdio is left for the caller to set.
    pub fn exec_command(&self, id: &str, opts: &ExecOpts, pid_file: &Path, log_file: &Path) -> Command {
        let mut cmd = self.command(log_file);
        cmd.args(exec_args(id, opts, pid_file));
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runc() -> Runc {
        Runc { binary: "runc".into(), root: "/run/x".into(), criu: Some("/usr/local/sbin/criu".into()) }
    }

    #[test]
    fn run_command_args() {
        let cmd = runc().run_command("c1", Path::new("/b"), Path::new("/s/pid"), Path::new("/s/log"));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--root",
                "/run/x",
                "--criu",
                "/usr/local/sbin/criu",
                "--log",
                "/s/log",
                "--log-format",
                "json",
                "run",
                "-d",
                "--bundle",
                "/b",
                "--pid-file",
                "/s/pid",
                "c1"
            ]
        );
    }

    #[test]
    fn restore_command_args() {
        let mut r = runc();
        r.criu = None;
        let cmd = r.restore_command(
            "c1",
            Path::new("/b"),
            Path::new("/img"),
            Path::new("/w"),
            true,
            false,
            Path::new("/s/pid"),
            Path::new("/s/log"),
        );
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--root",
                "/run/x",
                "--log",
                "/s/log",
                "--log-format",
                "json",
                "restore",
                "-d",
                "--bundle",
                "/b",
                "--image-path",
                "/img",
                "--work-path",
                "/w",
                "--tcp-established",
                "--pid-file",
                "/s/pid",
                "c1"
            ]
        );
    }

    #[test]
    fn exec_command_args() {
        let opts = ExecOpts {
            args: vec!["ls".into(), "-l".into(), "--all".into()],
            env: vec!["A=1".into()],
            cwd: Some("/tmp".into()),
            user: Some(crate::user::Identity { uid: 1000, gid: 100, additional_gids: vec![100, 27] }),
            tty: true,
        };
        let cmd = runc().exec_command("c1", &opts, Path::new("/s/pid"), Path::new("/s/log"));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args[8..],
            [
                "exec",
                "--pid-file",
                "/s/pid",
                "--tty",
                "--cwd",
                "/tmp",
                "--user",
                "1000:100",
                "--additional-gids",
                "100",
                "--additional-gids",
                "27",
                "--env",
                "A=1",
                "c1",
                "ls",
                "-l",
                "--all"
            ]
        );
        let plain = runc().exec_command(
            "c1",
            &ExecOpts { args: vec!["true".into()], ..Default::default() },
            Path::new("/p"),
            Path::new("/l"),
        );
        let args: Vec<_> = plain.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args[8..], ["exec", "--pid-file", "/p", "c1", "true"]);
    }

    #[test]
    fn last_error_of_log() {
        let path = TempLog::new();
        std::fs::write(
            &path.0,
            concat!(
                "{\"level\":\"error\",\"msg\":\"old\",\"time\":\"t\"}\n",
                "{\"level\":\"warning\",\"msg\":\"w\",\"time\":\"t\"}\n",
                "{\"level\":\"error\",\"msg\":\"runc run failed: boom\",\"time\":\"t\"}\n",
                "{\"level\":\"info\",\"msg\":\"later\",\"time\":\"t\"}\n",
                "not json\n",
            ),
        )
        .unwrap();
        assert_eq!(last_runc_error(&path.0, 0).as_deref(), Some("runc run failed: boom"));
        let len = std::fs::metadata(&path.0).unwrap().len();
        assert_eq!(last_runc_error(&path.0, len), None);
    }
}
