//! `herd exec` on a node: runs a process in a running container with `runc exec` and carries
//! its stdio over the session's stream ([`herd_proto::exec`]).
//!
//! The Control node asks for a session with `ExecPrepare`; the node checks the container
//! runs, opens a one-time listener (the transfer protocol's, [`crate::transfer`], authenticated
//! with the session's token; the node's guard keeps containers off it) and answers its
//! address. When the Control node connects, the node runs `runc exec`: runc joins the
//! container's namespaces and cgroup and takes capabilities, user, environment and working
//! directory from the container's configuration unless the request says otherwise. Without a
//! terminal runc's stdio are pipes, copied to the process's; with one, runc's stdio is a
//! pseudo-terminal the node opens (runc makes the process's terminal inside the container and
//! copies between the two, and resizes it when the node's terminal is resized).
//!
//! runc writes the process's pid to a file once it runs. Until then nothing the process could
//! have written exists, and what comes out is runc's own complaint: it is held back, and when
//! runc exits without a pid the session ends with runc's reason and Docker's exit codes (127:
//! not found, 126: cannot be run). A client that goes away ends the session: the process and
//! its descendants are killed. A container that stops takes its exec processes with it (they
//! are in its pid namespace).
//!
//! While a session is in progress the container is not checkpointed or migrated: CRIU cannot
//! dump a process whose terminal or pipes lead outside the container ([`Sessions::refusal`]).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_proto::exec::{self as proto, ExecRequest, Frame, SessionInfo, TermSize};
use herd_proto::node::NodeReply;
use herd_proto::state::ContainerState;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::watch;

use crate::runc::{ExecOpts, Runc, last_runc_error};
use crate::runtime::{OpResult, Runtime};
use crate::transfer::{Accepted, Budget, Listener, Stream, Ticket, write_flushed};

/// How long the Control node has to open a prepared session's stream.
const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// How long an exec waits for another operation on the container (a stop, a checkpoint) to end.
const OP_WAIT: Duration = Duration::from_secs(30);
/// After runc exited, how long the last of the output may take to arrive.
const DRAIN: Duration = Duration::from_secs(2);
/// How often runc's pid file is looked for while the process starts.
const PID_POLL: Duration = Duration::from_millis(10);
/// How long a process that is being killed may take to go, before runc is killed too.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The exec sessions in progress on this node, by container id.
#[derive(Debug, Default)]
pub struct Sessions {
    by_container: Mutex<HashMap<String, Vec<SessionInfo>>>,
}

/// A session's place in [`Sessions`], given up when dropped.
#[derive(Debug)]
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    id: String,
    session: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut map = self.sessions.by_container.lock().unwrap();
        if let Some(list) = map.get_mut(&self.id) {
            list.retain(|s| s.session != self.session);
            if list.is_empty() {
                map.remove(&self.id);
            }
        }
    }
}

impl Sessions {
    /// Records a session of container `id` until the guard is dropped.
    pub fn begin(self: &Arc<Self>, id: &str, info: SessionInfo) -> SessionGuard {
        let session = info.session.clone();
        self.by_container.lock().unwrap().entry(id.to_string()).or_default().push(info);
        SessionGuard { sessions: self.clone(), id: id.to_string(), session }
    }

    fn set_pid(&self, id: &str, session: &str, pid: u32) {
        if let Some(s) =
            self.by_container.lock().unwrap().get_mut(id).and_then(|l| l.iter_mut().find(|s| s.session == session))
        {
            s.pid = Some(pid);
        }
    }

    /// The sessions of container `id`.
    pub fn of(&self, id: &str) -> Vec<SessionInfo> {
        self.by_container.lock().unwrap().get(id).cloned().unwrap_or_default()
    }

    /// Why container `name` (`id`) cannot be checkpointed or migrated now (`action`, e.g.
    /// "migrate it"), if sessions are in progress.
    pub fn refusal(&self, id: &str, name: &str, action: &str) -> Option<String> {
        let sessions = self.of(id);
        (!sessions.is_empty()).then(|| proto::sessions_block(name, &sessions, action))
    }
}

/// Where a node keeps its sessions' pid files and runc logs.
pub fn sessions_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("exec")
}

/// Kills what the sessions of an earlier agent left running (their clients went with that
/// agent's connections) and removes their files. A pid is only trusted if its process
/// started before runc wrote the file (so a reused pid is left alone).
pub fn kill_leftovers(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(sessions_dir(run_dir)) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "pid")
            && let (Some(pid), Ok(written)) = (read_pid(&path), e.metadata().and_then(|m| m.modified()))
            && process_started(pid).is_some_and(|t| t <= written + Duration::from_secs(1))
        {
            tracing::info!("killing process {pid}, left running by an exec session of an earlier agent");
            kill_tree(pid);
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// When process `pid` started, from `/proc` (its start in clock ticks after boot).
fn process_started(pid: u32) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the 20th after the command name's closing parenthesis.
    let ticks: u64 = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(boot) + Duration::from_millis(ticks * 1000 / hz))
}

/// A session id is a file name here: short, and letters and digits only.
fn validate_session(session: &str) -> OpResult<()> {
    if !session.is_empty() && session.len() <= 64 && session.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!("invalid exec session id {session:?}"))
    }
}

/// Everything a session needs once its stream arrives.
struct Plan {
    runc: Runc,
    id: String,
    name: String,
    session: String,
    opts: ExecOpts,
    interactive: bool,
    size: Option<TermSize>,
    /// The pid file and runc's log of the session.
    pid_file: PathBuf,
    log_file: PathBuf,
}

impl Runtime {
    /// `ExecPrepare`: checks that container `id` runs, records the session (the container is
    /// not checkpointed or migrated until it ends) and opens its one-time listener.
    pub async fn exec_prepare(
        self: &Arc<Self>,
        id: &str,
        session: &str,
        token: String,
        req: ExecRequest,
    ) -> OpResult<NodeReply> {
        req.validate()?;
        validate_session(session)?;
        let c = self.get(id)?;
        let name = c.spec.name.clone();
        let _op = tokio::time::timeout(OP_WAIT, c.op.lock()).await.map_err(|_| {
            format!(
                "container {name} is busy with another operation (a stop, checkpoint or migration) that did not end within {}s: try again",
                OP_WAIT.as_secs()
            )
        })?;
        if c.live.lock().unwrap().state != Some(ContainerState::Running) {
            return Err(format!("container {name} is not running on node {}", self.cfg.node));
        }
        let user = match &req.user {
            None => None,
            // Resolved as `herd run --user` resolves it (crate::user), groups included.
            Some(u) => {
                Some(crate::user::resolve_in(&c.paths.rootfs(), u).map_err(|e| format!("{e:#} in container {name}"))?)
            }
        };
        let dir = sessions_dir(&self.cfg.paths.run_dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let ticket = Ticket { migration: session.to_string(), token };
        let listener = Listener::bind_with(
            std::net::IpAddr::V4(self.cfg.address),
            ticket,
            Budget::unlimited(),
            self.cfg.tls.clone(),
        )
        .await
        .map_err(|e| format!("opening the exec session's listener: {e}"))?;
        let address = listener.local_addr();
        let guard = self.execs.begin(
            id,
            SessionInfo {
                session: session.to_string(),
                cmd: req.cmd.join(" "),
                pid: None,
                started_at: herd_proto::now_millis(),
            },
        );
        let plan = Plan {
            runc: self.cfg.runc.clone(),
            id: id.to_string(),
            name,
            session: session.to_string(),
            opts: ExecOpts { args: req.cmd, env: req.env, cwd: req.workdir, user, tty: req.tty },
            interactive: req.interactive,
            size: req.size,
            pid_file: dir.join(format!("{session}.pid")),
            log_file: dir.join(format!("{session}.log")),
        };
        let sessions = self.execs.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(CONNECT_WAIT, listener.accept()).await {
                Ok(Ok(Accepted::Exec(stream))) => stream,
                Ok(Ok(_)) => {
                    tracing::warn!("exec session {}: a connection of another purpose arrived; dropped", plan.session);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!("exec session {}: {e}", plan.session);
                    return;
                }
                Err(_) => {
                    tracing::warn!("exec session {}: nobody connected within {CONNECT_WAIT:?}", plan.session);
                    return;
                }
            };
            drop(listener);
            run_session(stream, &plan, &sessions).await;
            for f in [&plan.pid_file, &plan.log_file] {
                let _ = std::fs::remove_file(f);
            }
            drop(guard);
        });
        Ok(NodeReply::ExecReady { address })
    }
}

/// The process's stdio as the node holds it.
enum Output {
    Pipes { stdout: Option<ChildStdout>, stderr: Option<ChildStderr> },
    Pty { master: Option<AsyncFd<OwnedFd>> },
}

/// Where the client's input goes.
enum Input {
    None,
    Pipe(ChildStdin),
    Pty(AsyncFd<OwnedFd>),
}

/// Starts `runc exec` with pipes, or with a pseudo-terminal as its controlling terminal.
fn spawn(plan: &Plan) -> io::Result<(Child, Input, Output)> {
    let _ = std::fs::remove_file(&plan.pid_file);
    let mut cmd = plan.runc.exec_command(&plan.id, &plan.opts, &plan.pid_file, &plan.log_file);
    if !plan.opts.tty {
        cmd.stdin(if plan.interactive { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let input = child.stdin.take().map_or(Input::None, Input::Pipe);
        let output = Output::Pipes { stdout: child.stdout.take(), stderr: child.stderr.take() };
        return Ok((child, input, output));
    }
    let size = plan.size.unwrap_or(TermSize { cols: 80, rows: 24 });
    let winsize = nix::pty::Winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&winsize), None).map_err(io::Error::from)?;
    // Raw from the start: the container's terminal does the line discipline, and runc makes
    // this one raw only once it has that terminal, after output may have passed (a "\n" then
    // became "\r\r\n").
    let mut modes = nix::sys::termios::tcgetattr(&pty.slave).map_err(io::Error::from)?;
    nix::sys::termios::cfmakeraw(&mut modes);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &modes).map_err(io::Error::from)?;
    for fd in [&pty.master, &pty.slave] {
        set_cloexec_nonblocking(fd, fd.as_raw_fd() == pty.master.as_raw_fd())?;
    }
    cmd.stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    // SAFETY: setsid and ioctl are async-signal-safe; runc becomes the leader of a session
    // whose controlling terminal is the pty (its stdin), so it gets SIGWINCH on a resize.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let child = cmd.spawn()?;
    // The command holds the slave's copies: only runc may keep it open, so that reading the
    // master ends when runc is gone.
    drop(cmd);
    // SAFETY: both are owned fds that stay open as long as their AsyncFd.
    let (writer, reader) = unsafe {
        (
            AsyncFd::register(pty.master.try_clone()?).map_err(io::Error::from)?,
            AsyncFd::register(pty.master).map_err(io::Error::from)?,
        )
    };
    Ok((child, Input::Pty(writer), Output::Pty { master: Some(reader) }))
}

fn set_cloexec_nonblocking(fd: &OwnedFd, nonblocking: bool) -> io::Result<()> {
    // SAFETY: fcntl on an owned fd.
    unsafe {
        if libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        if nonblocking {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Reads a pty master; its end (EIO once no slave is open) reads as 0.
async fn read_pty(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = fd.readable().await?;
        // SAFETY: reading into a buffer of the given length.
        match ready.try_io(|f| {
            let n = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
        }) {
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_pty(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut ready = fd.writable().await?;
        // SAFETY: writing from a buffer of the given length.
        match ready.try_io(|f| {
            let n = unsafe { libc::write(f.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
        }) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

fn resize_pty(fd: &AsyncFd<OwnedFd>, size: TermSize) {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ with a valid winsize; the kernel signals the terminal's foreground
    // process group (runc), which resizes the container's terminal.
    unsafe { libc::ioctl(fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// Reads the client's frames and acts on them; returns when the client is gone (or broke the
/// framing). Runs beside the output loop, so a process that does not read its input never
/// stops its output from flowing.
async fn client_input(mut rd: ReadHalf<Stream>, mut input: Input, session: String) {
    let mut dec = proto::Decoder::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.push(&buf[..n]);
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("exec session {session}: {e}");
                    return;
                }
            };
            match (frame, &mut input) {
                (Frame::Stdin(data), Input::Pipe(stdin)) => {
                    let written = stdin.write_all(&data).await;
                    // The process closed its input: what else comes is dropped.
                    if written.is_err() {
                        input = Input::None;
                    }
                }
                (Frame::Stdin(data), Input::Pty(master)) => {
                    let _ = write_pty(master, &data).await;
                }
                (Frame::StdinEof, Input::Pipe(_)) => input = Input::None,
                (Frame::Resize(size), Input::Pty(master)) => resize_pty(master, size),
                _ => {}
            }
        }
    }
}

/// Runs one session on its stream, until the process has exited and its exit code is sent,
/// or the client has gone and the process is killed.
async fn run_session(stream: Stream, plan: &Plan, sessions: &Sessions) {
    let (rd, mut wr) = tokio::io::split(stream);
    let (mut child, input, mut output) = match spawn(plan) {
        Ok(spawned) => spawned,
        Err(e) => {
            let msg = format!("cannot run runc exec in container {}: {e}", plan.name);
            let _ = send(&mut wr, &[Frame::Error(msg), Frame::Exit(126)]).await;
            return;
        }
    };
    let (gone_tx, mut gone) = watch::channel(false);
    let reader = tokio::spawn({
        let session = plan.session.clone();
        async move {
            client_input(rd, input, session).await;
            let _ = gone_tx.send(true);
        }
    });
    let mut started: Option<u32> = None;
    // Frames held back until the process is known to run.
    let mut early: Vec<u8> = Vec::new();
    let mut out_buf = vec![0u8; 64 << 10];
    let mut err_buf = vec![0u8; 64 << 10];
    let mut pty_buf = vec![0u8; 64 << 10];
    let mut poll = tokio::time::interval(PID_POLL);
    let mut client_gone = false;
    let status = loop {
        let event = {
            let (stdout, stderr, master) = match &mut output {
                Output::Pipes { stdout, stderr } => (stdout.as_mut(), stderr.as_mut(), None),
                Output::Pty { master } => (None, None, master.as_ref()),
            };
            let (out_open, err_open, pty_open) = (stdout.is_some(), stderr.is_some(), master.is_some());
            tokio::select! {
                r = async { stdout.unwrap().read(&mut out_buf).await }, if out_open => Event::Read(1, r),
                r = async { stderr.unwrap().read(&mut err_buf).await }, if err_open => Event::Read(2, r),
                r = async { read_pty(master.unwrap(), &mut pty_buf).await }, if pty_open => Event::Read(0, r),
                s = child.wait() => Event::Exited(s.ok()),
                _ = gone.wait_for(|g| *g) => Event::Gone,
                _ = poll.tick(), if started.is_none() => Event::Tick,
            }
        };
        let frame = match event {
            Event::Read(which, Ok(n)) if n > 0 => Some(match which {
                1 => Frame::Stdout(out_buf[..n].to_vec()),
                2 => Frame::Stderr(err_buf[..n].to_vec()),
                _ => Frame::Stdout(pty_buf[..n].to_vec()),
            }),
            Event::Read(which, _) => {
                close(&mut output, which);
                None
            }
            Event::Exited(status) => break status,
            Event::Gone => {
                client_gone = true;
                break None;
            }
            Event::Tick => {
                if let Some(pid) = read_pid(&plan.pid_file) {
                    started = Some(pid);
                    sessions.set_pid(&plan.id, &plan.session, pid);
                    let mut bytes = Frame::Started { pid }.encode();
                    bytes.append(&mut early);
                    if write_flushed(&mut wr, &bytes).await.is_err() {
                        client_gone = true;
                        break None;
                    }
                }
                None
            }
        };
        if let Some(frame) = frame {
            if started.is_some() {
                if write_flushed(&mut wr, &frame.encode()).await.is_err() {
                    client_gone = true;
                    break None;
                }
            } else {
                early.extend_from_slice(&frame.encode());
            }
        }
    };
    if client_gone {
        reader.abort();
        end_process(&mut child, &plan.pid_file, started).await;
        tracing::info!("exec session {} in {}: the client went away; the process was killed", plan.session, plan.name);
        return;
    }
    // runc exited: the rest of the output, then the outcome.
    let announced = started.is_some();
    let deadline = tokio::time::Instant::now() + DRAIN;
    let mut rest: Vec<Frame> = Vec::new();
    loop {
        let (read, which) = match &mut output {
            Output::Pipes { stdout: Some(s), .. } => (tokio::time::timeout_at(deadline, s.read(&mut out_buf)).await, 1),
            Output::Pipes { stderr: Some(s), .. } => (tokio::time::timeout_at(deadline, s.read(&mut err_buf)).await, 2),
            Output::Pty { master: Some(m) } => (tokio::time::timeout_at(deadline, read_pty(m, &mut out_buf)).await, 0),
            _ => break,
        };
        match read {
            Ok(Ok(n)) if n > 0 && which == 2 => rest.push(Frame::Stderr(err_buf[..n].to_vec())),
            Ok(Ok(n)) if n > 0 => rest.push(Frame::Stdout(out_buf[..n].to_vec())),
            Ok(_) => close(&mut output, which),
            Err(_) => break,
        }
    }
    let mut frames: Vec<Frame> = Vec::new();
    let code = match started.or_else(|| read_pid(&plan.pid_file)) {
        Some(pid) => {
            if !announced {
                frames.push(Frame::Started { pid });
                // Output held back before the pid was seen goes first.
                let mut dec = proto::Decoder::new();
                dec.push(&early);
                while let Ok(Some(f)) = dec.next_frame() {
                    frames.push(f);
                }
            }
            frames.append(&mut rest);
            status.map_or(255, exit_code)
        }
        None => {
            let why = last_runc_error(&plan.log_file, 0).unwrap_or_else(|| "runc exec failed without a reason".into());
            let code = proto::start_failure_code(&why);
            let what = if code == 127 { "not found" } else { "cannot be run" };
            let cmd = plan.opts.args.first().map(String::as_str).unwrap_or_default();
            frames.push(Frame::Error(format!(
                "{cmd:?} {what} in container {}: {}",
                plan.name,
                why.trim_start_matches("runc exec failed: ").trim_start_matches("exec failed: ")
            )));
            code
        }
    };
    frames.push(Frame::Exit(code));
    reader.abort();
    let _ = send(&mut wr, &frames).await;
    let _ = wr.shutdown().await;
}

/// What the session's loop waits for.
enum Event {
    /// Output: 1 stdout, 2 stderr, 0 the terminal.
    Read(u8, io::Result<usize>),
    Exited(Option<std::process::ExitStatus>),
    Gone,
    Tick,
}

/// Marks one output as ended: 1 stdout, 2 stderr, 0 the terminal.
fn close(output: &mut Output, which: u8) {
    match (output, which) {
        (Output::Pipes { stdout, .. }, 1) => *stdout = None,
        (Output::Pipes { stderr, .. }, 2) => *stderr = None,
        (Output::Pty { master }, 0) => *master = None,
        _ => {}
    }
}

async fn send(wr: &mut WriteHalf<Stream>, frames: &[Frame]) -> io::Result<()> {
    let mut bytes = Vec::new();
    for f in frames {
        match f {
            Frame::Stdout(d) => bytes.extend(proto::data_frames(d, Frame::Stdout)),
            Frame::Stderr(d) => bytes.extend(proto::data_frames(d, Frame::Stderr)),
            f => bytes.extend(f.encode()),
        }
    }
    write_flushed(wr, &bytes).await
}

/// The exit code of runc, which is its process's: 128 + signal when a signal ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn read_pid(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok().filter(|p| *p > 0)
}

/// Kills the session's process and its descendants, then runc.
async fn end_process(child: &mut Child, pid_file: &Path, started: Option<u32>) {
    let mut pid = started.or_else(|| read_pid(pid_file));
    // runc may be about to start it: give it a moment to say which process it is.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while pid.is_none() && tokio::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        tokio::time::sleep(PID_POLL).await;
        pid = read_pid(pid_file);
    }
    if let Some(pid) = pid {
        tokio::task::spawn_blocking(move || kill_tree(pid)).await.ok();
    }
    if tokio::time::timeout(KILL_WAIT, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Stops `pid` and every descendant (so none can fork away meanwhile), then kills them all.
pub fn kill_tree(pid: u32) {
    let mut tree: HashSet<u32> = HashSet::from([pid]);
    for _ in 0..100 {
        for p in &tree {
            // SAFETY: plain syscall.
            unsafe { libc::kill(*p as libc::pid_t, libc::SIGSTOP) };
        }
        let children = parents();
        let more: Vec<u32> =
            children.iter().filter(|(c, p)| tree.contains(p) && !tree.contains(c)).map(|(c, _)| *c).collect();
        if more.is_empty() {
            break;
        }
        tree.extend(more);
    }
    for p in &tree {
        // SAFETY: plain syscall.
        unsafe { libc::kill(*p as libc::pid_t, libc::SIGKILL) };
    }
}

/// Every process with its parent (from `/proc/*/stat`).
fn parents() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold anything, so split after the last ')'.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_file_names() {
        assert!(validate_session("e0123abc").is_ok());
        assert!(validate_session("../x").is_err());
        assert!(validate_session("").is_err());
    }

    #[test]
    fn sessions_are_recorded_until_dropped() {
        let sessions = Arc::new(Sessions::default());
        assert_eq!(sessions.refusal("c1", "web", "migrate it"), None);
        let info = SessionInfo { session: "e1".into(), cmd: "sh".into(), pid: None, started_at: 0 };
        let a = sessions.begin("c1", info.clone());
        let b = sessions.begin("c1", SessionInfo { session: "e2".into(), ..info });
        sessions.set_pid("c1", "e1", 77);
        let why = sessions.refusal("c1", "web", "migrate it").unwrap();
        assert!(why.contains("2 exec sessions") && why.contains("pid 77"), "{why}");
        drop(a);
        assert_eq!(sessions.of("c1").len(), 1);
        drop(b);
        assert!(sessions.of("c1").is_empty());
        assert_eq!(sessions.refusal("c1", "web", "migrate it"), None);
    }

    #[test]
    fn leftovers_of_an_earlier_agent_are_killed_and_reused_pids_spared() {
        let run = tempfile::tempdir().unwrap();
        let dir = sessions_dir(run.path());
        std::fs::create_dir_all(&dir).unwrap();
        let mut left = std::process::Command::new("/bin/sleep").arg("600").spawn().unwrap();
        std::fs::write(dir.join("e1.pid"), left.id().to_string()).unwrap();
        std::fs::write(dir.join("e1.log"), "").unwrap();
        // A pid file older than its process: the pid was reused.
        let mut reused = std::process::Command::new("/bin/sleep").arg("600").spawn().unwrap();
        let old = dir.join("e2.pid");
        std::fs::write(&old, reused.id().to_string()).unwrap();
        let f = std::fs::File::options().write(true).open(&old).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600)).unwrap();
        kill_leftovers(run.path());
        assert_eq!(left.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(reused.try_wait().unwrap().is_none(), "a process with a reused pid was killed");
        reused.kill().unwrap();
        reused.wait().unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    /// The Control node's hello (`herd_proto::exec::exec_hello`) opens an exec listener, with
    /// the session's token only.
    #[tokio::test]
    async fn only_the_sessions_ticket_opens_its_listener() {
        let token = "ab".repeat(32);
        let ticket = Ticket { migration: "e1".into(), token: token.clone() };
        let listener = Listener::bind([127, 0, 0, 1].into(), ticket, Budget::unlimited()).await.unwrap();
        let answer = |hello: Vec<u8>| {
            let addr = listener.local_addr();
            async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(&hello).await.unwrap();
                let mut a = [9u8; 1];
                s.read_exact(&mut a).await.map(|_| a[0]).unwrap_or(255)
            }
        };
        assert_eq!(answer(proto::exec_hello("e1", &"cd".repeat(32))).await, 1, "a wrong token is refused");
        assert_eq!(answer(proto::exec_hello("e2", &token)).await, 1, "another session's id is refused");
        assert_eq!(answer(proto::exec_hello("e1", &token)).await, 0);
        let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
        assert!(matches!(accepted, Accepted::Exec(_)), "{accepted:?}");
    }

    #[test]
    fn kill_tree_kills_descendants() {
        let mut sh =
            std::process::Command::new("/bin/sh").args(["-c", "sleep 600 & sleep 600 & wait"]).spawn().unwrap();
        let me = sh.id();
        let kids =
            |parent: u32| parents().into_iter().filter(|(_, p)| *p == parent).map(|(c, _)| c).collect::<Vec<_>>();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while kids(me).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "the shell never started its children");
            std::thread::sleep(Duration::from_millis(20));
        }
        let sleepers = kids(me);
        kill_tree(me);
        sh.wait().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for pid in sleepers {
            // Reparented to init (or a subreaper), which reaps them once they are dead.
            while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
                assert!(std::time::Instant::now() < deadline, "{pid} survived");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
