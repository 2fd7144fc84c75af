//! The keeper of CRIU's dirty-memory trackers, on kernels without soft-dirty.
//!
//! There Herd's CRIU (patch 0010 in `scripts/criu-patches`) tracks which pages a container's
//! processes write with a userfaultfd opened inside each process: after a dump it
//! write-protects the pages, the kernel lifts a page's protection when it is written, and
//! the next dump reads which pages were written. The protection lasts only while the
//! userfaultfd is open, and CRIU exits after every dump, so between a migration's pre-copy
//! rounds CRIU hands the descriptors to the agent (`--dirty-track-keeper`, in the node's
//! CRIU configuration), which holds them until the next round takes them back.
//!
//! # Wire format
//!
//! A unix seqpacket socket (mode 0600) in the agent's run directory. One request per packet,
//! one answer per request, in ASCII:
//!
//! ```text
//! take <root pid> <pid> <start time> <token>   ->  "ok" with the descriptor (SCM_RIGHTS), or "none"
//! keep <root pid> <pid> <start time> <token>   with the descriptor  ->  "ok"
//! ```
//!
//! A process is named by its pid and its start time (field 22 of `/proc/PID/stat`), so a
//! reused pid is another process; the root pid is the container's first process. The token
//! names the dump the tracking counts from: a dump that keeps its trackers writes a fresh
//! token into its images, and the next dump asks with its parent's token. The keeper gives a
//! tracker back only for the token it was kept with, and drops it otherwise.
//!
//! Dropping a tracker is always safe: a dump that does not get its tracker back counts every
//! page of that process as written. Trackers are dropped when their process is gone (checked
//! at every request), when a migration of their container ends ([`Keeper::forget`]), and an
//! hour after they were kept.

use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, accept, bind,
    listen, recvmsg, sendmsg, socket,
};

/// How long an unclaimed tracker is held.
const MAX_AGE: Duration = Duration::from_secs(3600);

/// A process: its container's first process, its pid and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Process {
    root: i32,
    pid: i32,
    start: u64,
}

struct Held {
    token: String,
    tracker: OwnedFd,
    kept: Instant,
}

/// The agent's keeper: a socket CRIU connects to, and the trackers it holds.
pub struct Keeper {
    path: PathBuf,
    held: Mutex<HashMap<Process, Held>>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper").field("path", &self.path).field("held", &self.len()).finish()
    }
}

impl Keeper {
    /// Listens at `path` (replacing a socket an earlier agent left) and serves CRIU's
    /// requests on threads of its own.
    pub fn start(path: &Path) -> anyhow::Result<Arc<Keeper>> {
        let _ = std::fs::remove_file(path);
        let listener = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
            .context("creating the dirty-track keeper's socket")?;
        let addr = UnixAddr::new(path)?;
        bind(listener.as_raw_fd(), &addr).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listen(&listener, Backlog::new(16)?)?;
        let keeper = Arc::new(Keeper { path: path.to_path_buf(), held: Mutex::new(HashMap::new()) });
        let serving = keeper.clone();
        std::thread::Builder::new().name("dirty-keeper".into()).spawn(move || serving.accept_loop(listener))?;
        Ok(keeper)
    }

    /// The socket's path, for CRIU's `--dirty-track-keeper`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops the trackers of the container whose first process is `root`: its migration is
    /// over, and a later one starts with a full dump anyway.
    pub fn forget(&self, root: i32) {
        let mut held = self.held.lock().unwrap();
        let before = held.len();
        held.retain(|p, _| p.root != root);
        if held.len() < before {
            tracing::debug!("dirty-track keeper: dropped {} trackers of process {root}", before - held.len());
        }
    }

    /// How many trackers are held.
    pub fn len(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn accept_loop(self: Arc<Self>, listener: OwnedFd) {
        loop {
            match accept(listener.as_raw_fd()) {
                Ok(fd) => {
                    // SAFETY: accept returned a new descriptor that nothing else owns.
                    let conn = unsafe { OwnedFd::from_raw_fd(fd) };
                    let keeper = self.clone();
                    let spawned =
                        std::thread::Builder::new().name("dirty-keeper-conn".into()).spawn(move || keeper.serve(conn));
                    if let Err(e) = spawned {
                        tracing::warn!("dirty-track keeper: cannot serve a connection: {e}");
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!("dirty-track keeper: accept failed, no more trackers are kept: {e}");
                    return;
                }
            }
        }
    }

    /// Serves one CRIU's requests until it closes the connection.
    fn serve(&self, conn: OwnedFd) {
        loop {
            let (text, fd) = match receive(conn.as_raw_fd()) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("dirty-track keeper: reading a request: {e}");
                    return;
                }
            };
            let (answer, give) = self.handle(&text, fd);
            if let Err(e) = send(conn.as_raw_fd(), answer, give.as_ref()) {
                tracing::warn!("dirty-track keeper: answering {text:?}: {e}");
                return;
            }
        }
    }

    /// The answer to one request, with the descriptor to send back.
    fn handle(&self, request: &str, fd: Option<OwnedFd>) -> (&'static str, Option<OwnedFd>) {
        let words: Vec<&str> = request.split_ascii_whitespace().collect();
        let parsed = match words.as_slice() {
            [verb, root, pid, start, token] => root
                .parse()
                .ok()
                .zip(pid.parse().ok())
                .zip(start.parse().ok())
                .map(|((root, pid), start)| (*verb, Process { root, pid, start }, token.to_string())),
            _ => None,
        };
        let Some((verb, process, token)) = parsed else {
            tracing::warn!("dirty-track keeper: a request it does not understand: {request:?}");
            return ("error", None);
        };
        let mut held = self.held.lock().unwrap();
        held.retain(|p, h| h.kept.elapsed() < MAX_AGE && start_time(p.pid) == Some(p.start));
        match (verb, fd) {
            ("keep", Some(tracker)) => {
                held.insert(process, Held { token, tracker, kept: Instant::now() });
                ("ok", None)
            }
            ("take", None) => match held.remove(&process) {
                Some(h) if h.token == token => ("ok", Some(h.tracker)),
                Some(_) => {
                    tracing::debug!("dirty-track keeper: process {} asked from another dump, dropped", process.pid);
                    ("none", None)
                }
                None => ("none", None),
            },
            _ => {
                tracing::warn!("dirty-track keeper: a request it does not understand: {request:?}");
                ("error", None)
            }
        }
    }
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`, field 22), if it runs.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything, spaces included.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// One packet: its text and the descriptor it carried. `None` at the end of the connection.
fn receive(conn: RawFd) -> nix::Result<Option<(String, Option<OwnedFd>)>> {
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(conn, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fd = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel installed this descriptor for us; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
        }
    }
    let n = msg.bytes;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some((String::from_utf8_lossy(&buf[..n]).into_owned(), fd)))
}

fn send(conn: RawFd, text: &str, fd: Option<&OwnedFd>) -> nix::Result<()> {
    let iov = [IoSlice::new(text.as_bytes())];
    let fds;
    let cmsgs: Vec<ControlMessage> = match fd {
        Some(f) => {
            fds = [f.as_raw_fd()];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => Vec::new(),
    };
    sendmsg::<()>(conn, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    /// CRIU's side of the protocol.
    struct Client(OwnedFd);

    impl Client {
        fn connect(path: &Path) -> Client {
            let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
            nix::sys::socket::connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
            Client(fd)
        }

        fn call(&self, text: &str, fd: Option<&OwnedFd>) -> (String, Option<OwnedFd>) {
            send(self.0.as_raw_fd(), text, fd).unwrap();
            receive(self.0.as_raw_fd()).unwrap().expect("the keeper closed the connection")
        }
    }

    fn inode(fd: &impl AsFd) -> u64 {
        let file = std::fs::File::from(fd.as_fd().try_clone_to_owned().unwrap());
        file.metadata().unwrap().ino()
    }

    #[test]
    fn a_tracker_comes_back_only_for_the_dump_it_was_kept_with() {
        let dir = tempfile::tempdir().unwrap();
        let keeper = Keeper::start(&dir.path().join("keeper.sock")).unwrap();
        let me = std::process::id() as i32;
        let start = start_time(me).unwrap();
        let key = format!("{me} {me} {start}");
        let tracker: OwnedFd = std::fs::File::open("/proc/self/stat").unwrap().into();
        let ino = inode(&tracker);

        let criu = Client::connect(keeper.path());
        assert_eq!(criu.call(&format!("take {key} t0"), None).0, "none", "nothing is held yet");
        assert_eq!(criu.call(&format!("keep {key} t1"), Some(&tracker)).0, "ok");
        drop(tracker);
        assert_eq!(keeper.len(), 1);

        // Another CRIU, the next round: the right token gets the same descriptor back, once.
        let next = Client::connect(keeper.path());
        let (answer, fd) = next.call(&format!("take {key} t1"), None);
        assert_eq!(answer, "ok");
        assert_eq!(inode(&fd.expect("no descriptor with the answer")), ino);
        assert_eq!(next.call(&format!("take {key} t1"), None).0, "none", "given twice");

        // A dump whose parent is another one: the tracker is dropped, not given.
        let tracker: OwnedFd = std::fs::File::open("/proc/self/stat").unwrap().into();
        assert_eq!(next.call(&format!("keep {key} t2"), Some(&tracker)).0, "ok");
        let (answer, fd) = next.call(&format!("take {key} t1"), None);
        assert_eq!((answer.as_str(), fd.is_none()), ("none", true));
        assert!(keeper.is_empty());
        assert_eq!(next.call(&format!("take {key} t2"), None).0, "none");
    }

    #[test]
    fn trackers_of_gone_processes_and_forgotten_containers_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let keeper = Keeper::start(&dir.path().join("keeper.sock")).unwrap();
        let criu = Client::connect(keeper.path());
        let me = std::process::id() as i32;
        let start = start_time(me).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id() as i32;
        child.wait().unwrap();
        let fd = || -> OwnedFd { std::fs::File::open("/proc/self/stat").unwrap().into() };

        assert_eq!(criu.call(&format!("keep {me} {gone} 12345 t"), Some(&fd())).0, "ok");
        assert_eq!(criu.call(&format!("keep {me} {me} {} t", start + 1), Some(&fd())).0, "ok");
        assert_eq!(criu.call(&format!("keep {me} {me} {start} t"), Some(&fd())).0, "ok");
        // The next request drops the trackers of processes that are not there (any more).
        assert_eq!(criu.call("nonsense", None).0, "error");
        assert_eq!(keeper.len(), 1);
        keeper.forget(me + 1);
        assert_eq!(keeper.len(), 1);
        keeper.forget(me);
        assert!(keeper.is_empty());
    }
}
