//! Network namespaces pinned by a bind mount at a path the caller chooses, and
//! running code inside one on a dedicated thread (never on a tokio worker,
//! whose namespace must not change under the tasks it runs).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statfs::{self, NSFS_MAGIC};

use crate::NetError;

/// The calling thread's own network namespace file. `/proc/self/ns/net` would
/// be the main thread's, which is not the same thing once a thread setns()es.
pub(crate) const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// A network namespace pinned by a bind mount at `path`.
///
/// The value only remembers the path: the namespace lives as long as the
/// mount (or anything else inside it) does, not as long as this value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    path: PathBuf,
}

impl Netns {
    /// Creates a new network namespace and pins it at `path`, creating the
    /// parent directories and an empty file to mount onto.
    ///
    /// The namespace is made on a dedicated std thread (`unshare(CLONE_NEWNET)`
    /// there, then a bind mount of `/proc/thread-self/ns/net` onto the file), so
    /// the calling thread never changes namespace. Fails with
    /// [`NetError::AlreadyExists`] if `path` already holds a namespace. An
    /// empty regular file already at `path` (say, left by a crash between the
    /// two steps) is reused. On failure, a file this call created is removed.
    pub fn create(path: &Path) -> Result<Netns, NetError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            fs::create_dir_all(parent)
                .map_err(|e| NetError::io(format!("creating directory {} for a netns file", parent.display()), e))?;
        }

        let created = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Ok(_file) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match open_netns(path) {
                    Ok(_) => {
                        return Err(NetError::AlreadyExists(format!("a network namespace at {}", path.display())));
                    }
                    Err(NetError::NotANetns { .. }) => {}
                    Err(e) => return Err(e),
                }
                let meta = fs::metadata(path).map_err(|e| NetError::io(format!("inspecting {}", path.display()), e))?;
                if !meta.is_file() || meta.len() != 0 {
                    return Err(NetError::AlreadyExists(format!(
                        "{} (and it is not an empty file a netns could be mounted on)",
                        path.display()
                    )));
                }
                false
            }
            Err(e) => {
                return Err(NetError::io(format!("creating netns file {}", path.display()), e));
            }
        };

        let target = path.to_path_buf();
        let result = run_on_thread("herd-netns-new", move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                NetError::io(
                    format!("creating a network namespace for {} (unshare(CLONE_NEWNET))", target.display()),
                    e,
                )
            })?;
            nix::mount::mount(Some(THREAD_NETNS), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
                NetError::io(
                    format!("pinning the new network namespace at {} (bind mount of {THREAD_NETNS})", target.display()),
                    e,
                )
            })
            // The thread ends here; the mount keeps the namespace alive.
        })
        .and_then(|r| r);

        match result {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "created network namespace");
                Ok(Netns { path: path.to_path_buf() })
            }
            Err(e) => {
                if created {
                    let _ = fs::remove_file(path);
                }
                Err(e)
            }
        }
    }

    /// Opens an existing pinned network namespace. Fails with
    /// [`NetError::NotFound`] if `path` does not exist and
    /// [`NetError::NotANetns`] if it is not a network namespace.
    pub fn open(path: &Path) -> Result<Netns, NetError> {
        open_netns(path)?;
        Ok(Netns { path: path.to_path_buf() })
    }

    /// The path the namespace is pinned at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unpins the namespace at `path` (unmount with `MNT_DETACH`) and removes
    /// the file. Ok if it is already gone; idempotent. The kernel destroys the
    /// namespace (and the interfaces in it) once nothing else holds it.
    pub fn remove(path: &Path) -> Result<(), NetError> {
        // A path could hold stacked mounts; unmount namespaces until the plain
        // file shows through (bounded, in case something keeps remounting).
        for _ in 0..8 {
            match statfs::statfs(path) {
                Ok(fs) if fs.filesystem_type() == NSFS_MAGIC => match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
                    Ok(()) => {}
                    Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
                    Err(e) => {
                        return Err(NetError::io(format!("unmounting network namespace {}", path.display()), e));
                    }
                },
                Ok(_) => break,
                Err(Errno::ENOENT) => return Ok(()),
                Err(e) => {
                    return Err(NetError::io(format!("inspecting network namespace file {}", path.display()), e));
                }
            }
        }
        match fs::remove_file(path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "removed network namespace");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetError::io(format!("removing network namespace file {}", path.display()), e)),
        }
    }

    /// Sets the network sysctl `key` (a path under `/proc/sys/net`, such as
    /// `ipv4/ping_group_range`) of this namespace to `value`.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<(), NetError> {
        let path = format!("/proc/sys/net/{key}");
        let (p, v) = (path.clone(), value.to_string());
        // /proc/sys/net shows the namespace of the thread that opens it.
        self.run(move || fs::write(&p, v))?.map_err(|e| NetError::io(format!("setting {path} in {}", self.label()), e))
    }

    /// Runs `f` on a fresh std thread that has `setns()` into this namespace,
    /// waits for it and returns its result. Blocks the calling thread; from
    /// async code prefer [`Netns::run_async`]. A panic in `f` is propagated.
    ///
    /// Sockets `f` opens stay in this namespace after it returns, and child
    /// processes it spawns start in it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetError> {
        let fd = open_netns(&self.path)?;
        let label = self.label();
        run_on_thread("herd-netns-run", move || enter(fd, &label).map(|()| f()))?
    }

    /// Like [`Netns::run`], but waits without blocking the async runtime.
    pub async fn run_async<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetError> {
        let fd = open_netns(&self.path)?;
        run_in_fd_async(fd, self.label(), f).await
    }

    /// How errors name this namespace.
    pub(crate) fn label(&self) -> String {
        format!("netns {}", self.path.display())
    }
}

/// Opens `path` and checks it is a network namespace; the returned fd can be
/// given to setns() or IFLA_NET_NS_FD.
pub(crate) fn open_netns(path: &Path) -> Result<OwnedFd, NetError> {
    open_netns_file(path).map(OwnedFd::from)
}

fn open_netns_file(path: &Path) -> Result<File, NetError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(NetError::NotFound(format!("network namespace file {}", path.display())));
        }
        Err(e) => {
            return Err(NetError::io(format!("opening network namespace {}", path.display()), e));
        }
    };
    check_netns_fd(&file, path)?;
    Ok(file)
}

fn check_netns_fd(file: &File, path: &Path) -> Result<(), NetError> {
    let fs = statfs::fstatfs(file.as_fd()).map_err(|e| NetError::io(format!("inspecting {}", path.display()), e))?;
    if fs.filesystem_type() != NSFS_MAGIC {
        return Err(NetError::NotANetns { path: path.to_path_buf(), reason: "no namespace is mounted there".into() });
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the namespace
    // type of the open nsfs file; `file` is a valid open descriptor.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(NetError::io(
            format!("asking the namespace type of {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    if kind != libc::CLONE_NEWNET {
        return Err(NetError::NotANetns {
            path: path.to_path_buf(),
            reason: format!("it is another kind of namespace (type {kind:#x})"),
        });
    }
    Ok(())
}

/// setns() the calling thread into the network namespace `fd`.
fn enter(fd: OwnedFd, label: &str) -> Result<(), NetError> {
    nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|e| NetError::io(format!("entering {label} (setns)"), e))
}

/// Runs `f` on a new named std thread and joins it, re-raising its panic.
fn run_on_thread<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetError> {
    let handle = thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| NetError::Thread { context: name.to_string(), error: e })?;
    match handle.join() {
        Ok(v) => Ok(v),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `f` on a new std thread that entered the network namespace `fd`, and
/// awaits it without blocking the runtime. Re-raises a panic of `f`.
pub(crate) async fn run_in_fd_async<T: Send + 'static>(
    fd: OwnedFd,
    label: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_label = label.clone();
    thread::Builder::new()
        .name("herd-netns-run".into())
        .spawn(move || {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || enter(fd, &thread_label).map(|()| f())));
            let _ = tx.send(result);
        })
        .map_err(|e| NetError::Thread { context: format!("running code in {label}"), error: e })?;
    match rx.await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => Err(NetError::io(
            format!("running code in {label}"),
            io::Error::other("the namespace thread ended without an answer"),
        )),
    }
}

/// Identity of a namespace file: nsfs device and inode, as `stat` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NsId {
    dev: u64,
    ino: u64,
}

impl NsId {
    fn of_meta(meta: &fs::Metadata) -> NsId {
        NsId { dev: meta.dev(), ino: meta.ino() }
    }

    /// The calling thread's network namespace.
    pub(crate) fn current_thread() -> io::Result<NsId> {
        fs::metadata(THREAD_NETNS).map(|m| NsId::of_meta(&m))
    }
}

impl std::fmt::Display for NsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// A handle on some network namespace that stays valid however the namespace
/// is named (or unpinned) later: what a [`crate::Netlink`] remembers about the
/// namespace its socket lives in.
#[derive(Debug, Clone)]
pub(crate) struct NsRef {
    fd: Arc<OwnedFd>,
    id: NsId,
    label: Arc<str>,
}

impl NsRef {
    /// The calling thread's current network namespace.
    pub(crate) fn current() -> Result<NsRef, NetError> {
        let file = File::open(THREAD_NETNS).map_err(|e| NetError::io(format!("opening {THREAD_NETNS}"), e))?;
        let meta = file.metadata().map_err(|e| NetError::io(format!("inspecting {THREAD_NETNS}"), e))?;
        let id = NsId::of_meta(&meta);
        let host = fs::metadata("/proc/1/ns/net").map(|m| NsId::of_meta(&m) == id).unwrap_or(false);
        let label = if host { format!("the host netns ({id})") } else { format!("netns {id}") };
        Ok(NsRef { fd: Arc::new(file.into()), id, label: label.into() })
    }

    /// The namespace pinned at `ns`'s path, kept open.
    pub(crate) fn of(ns: &Netns) -> Result<NsRef, NetError> {
        let file = open_netns_file(ns.path())?;
        let meta = file.metadata().map_err(|e| NetError::io(format!("inspecting {}", ns.label()), e))?;
        Ok(NsRef { id: NsId::of_meta(&meta), fd: Arc::new(file.into()), label: ns.label().into() })
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    fn dup(&self) -> Result<OwnedFd, NetError> {
        self.fd.try_clone().map_err(|e| NetError::io(format!("duplicating the fd of {}", self.label), e))
    }

    /// Runs `f` on a thread inside this namespace and joins it (see [`Netns::run`]).
    pub(crate) fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetError> {
        let fd = self.dup()?;
        let label = self.label.to_string();
        run_on_thread("herd-netns-run", move || enter(fd, &label).map(|()| f()))?
    }

    /// Whether the calling thread is in this namespace right now.
    pub(crate) fn is_current_thread(&self) -> bool {
        NsId::current_thread().map(|id| id == self.id).unwrap_or(false)
    }

    /// Runs `f` on a thread inside this namespace (see [`run_in_fd_async`]).
    pub(crate) async fn run_async<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetError> {
        run_in_fd_async(self.dup()?, self.label.to_string(), f).await
    }
}
