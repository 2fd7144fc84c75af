//! A mount namespace for each local Compute node, as each machine of a real cluster has its
//! own mount table.
//!
//! A node mounts two things per container (the overlay root and the pin of its network
//! namespace), and runc 1.1 reads the whole `/proc/self/mountinfo` four times per container
//! start. Sharing the host's mount table, the four nodes of a local cluster made every start
//! pay for every node's mounts: `runc run` took 286 ms with 3,000 mounts against 64 ms with 25.
//! In a namespace of its own a node sees the host's mounts (it is the host's slave, so later
//! host mounts reach it) and only its own, and its mounts never reach the host.
//!
//! The namespace outlives its agent: it is pinned by a bind mount at
//! `RUN_DIR/mntns/NODE` (on a private mount, which the kernel requires), so a restarted agent
//! joins the namespace that holds its containers' mounts. [`remove`] unpins it, and the
//! kernel frees its mounts once no process is left in it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Where the mount namespace of `node` is pinned.
pub fn pin_path(run_dir: &Path, node: &str) -> PathBuf {
    pins_dir(run_dir).join(node)
}

fn pins_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("mntns")
}

/// Creates the mount namespace pinned at `pin`, unless it exists already.
pub fn create(pin: &Path) -> anyhow::Result<()> {
    let dir = pin.parent().context("a pin path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !herd_node::overlay::is_mountpoint(dir)? {
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("bind-mounting {} onto itself", dir.display()))?;
    }
    // A pin may not be seen from inside the namespace it pins: nothing under `dir` propagates.
    mount(None::<&str>, dir, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
        .with_context(|| format!("making {} private", dir.display()))?;
    if herd_node::overlay::is_mountpoint(pin)? {
        return Ok(());
    }
    std::fs::write(pin, b"").with_context(|| format!("creating {}", pin.display()))?;

    // A thread with a filesystem context of its own enters the new namespace; this thread,
    // still in the host's, pins it through the other's /proc entry.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<libc::pid_t>>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let pins = dir.to_path_buf();
    let holder = std::thread::spawn(move || {
        let entered = (|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS | nix::sched::CloneFlags::CLONE_NEWNS)
                .context("unshare(CLONE_NEWNS)")?;
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
                .context("making / a slave of the host's mounts")?;
            // The copy of the pins (other nodes' namespaces) would keep those alive.
            umount2(&pins, MntFlags::MNT_DETACH).with_context(|| format!("unmounting {} inside", pins.display()))?;
            Ok(nix::unistd::gettid().as_raw())
        })();
        let _ = ready_tx.send(entered);
        let _ = done_rx.recv();
    });
    let pinned = ready_rx.recv().context("the namespace thread ended early").and_then(|tid| {
        let source = format!("/proc/self/task/{}/ns/mnt", tid?);
        mount(Some(source.as_str()), pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("pinning a mount namespace at {}", pin.display()))
    });
    let _ = done_tx.send(());
    let _ = holder.join();
    if pinned.is_err() {
        let _ = std::fs::remove_file(pin);
    }
    pinned
}

/// Unpins every node's mount namespace under `run_dir` and removes the pins. Idempotent.
pub fn remove(run_dir: &Path) -> Vec<String> {
    let dir = pins_dir(run_dir);
    let mut problems = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for pin in entries.flatten().map(|e| e.path()) {
            if let Err(e) = umount2(&pin, MntFlags::MNT_DETACH)
                && e != nix::errno::Errno::EINVAL
            {
                problems.push(format!("unpinning the mount namespace at {}: {e}", pin.display()));
            }
            if let Err(e) = std::fs::remove_file(&pin) {
                problems.push(format!("removing {}: {e}", pin.display()));
            }
        }
    }
    if herd_node::overlay::is_mountpoint(&dir).unwrap_or(false)
        && let Err(e) = umount2(&dir, MntFlags::MNT_DETACH)
    {
        problems.push(format!("unmounting {}: {e}", dir.display()));
    }
    problems
}
