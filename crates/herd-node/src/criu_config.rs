//! The CRIU configuration file a node gives runc for its containers.
//!
//! runc passes CRIU a configuration file named by a container's `org.criu.config` annotation
//! (`/etc/criu/runc.conf` without one), and the file's settings win over runc's. Herd uses it
//! for what runc 1.1 has no flag for, or Herd wants on every dump and restore. The first two take
//! time out of every dump and restore, while the container is stopped:
//!
//! - `network-lock skip`: Herd holds the container's TCP itself around every dump and
//!   restore ([`crate::netlock`]), so CRIU need not lock the network too. Its own lock cost
//!   here, with nftables, about 13 ms of a dump and 12 ms of a restore, most of it to unlock
//!   (with iptables, its default, about 70 and 60 ms: it runs `iptables-restore` and
//!   `ip6tables-restore` each time).
//! - `manage-cgroups=ignore`: runc creates the container's cgroup, sets its limits from the
//!   runtime config and starts CRIU's restore inside it, so the restored processes are born
//!   there; CRIU need not record and replay the cgroups as well (it mounted every controller
//!   to read and then to write them). A Herd container has no cgroup namespace and no cgroups
//!   of its own below its cgroup, so nothing is lost.
//! - `file-locks`: a container's processes may hold file locks (flock, POSIX and OFD locks,
//!   on files of its own root filesystem), which CRIU refuses to dump without it; with it,
//!   the locks are dumped and taken again at the restore, as Podman asks runc to do. CRIU's
//!   own test suite (bench/zdtm) has 14 tests that need it.
//! - Not `link-remap`: a file a process holds open after unlinking it, while another link to
//!   it remains, would be saved by linking it back under a temporary name; on overlayfs that
//!   name did not reach the writable layer Herd moves, and the restore failed after the
//!   container had stopped (ZDTM's `unlink_fstat03`). Refused at the dump, it runs on.
//! - `ghost-limit 256M`: a deleted file a process holds open travels inside the checkpoint, as
//!   memory does; CRIU refuses one larger than 1 MiB unless told more. A rotated log or a
//!   temporary file easily is.
//! - `skip-in-flight`: Herd waits for connections being opened to be accepted before a
//!   dump ([`crate::netlock::drain`]); a connection the application still has not accepted
//!   when that wait ends (it may never accept it) is left behind, as if its handshake had
//!   been lost, instead of failing the whole dump.
//!
//! The file is written where the agent keeps its run-time state.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The OCI annotation runc reads the CRIU configuration file's path from.
pub const ANNOTATION: &str = "org.criu.config";

/// What the file says.
const SETTINGS: &str = "# Written by herd node: CRIU settings for this node's containers.
network-lock skip
manage-cgroups=ignore
file-locks
ghost-limit 256M
skip-in-flight
";
// `=`: manage-cgroups' argument is optional, and CRIU turns a line into `--key value`, which
// getopt reads as `--manage-cgroups` (soft mode) followed by a stray word.

/// Writes the configuration into `run_dir` and returns its path.
pub fn write(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = run_dir.join("criu.conf");
    std::fs::write(&path, SETTINGS).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
