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
//! - `verbosity=3`: runc asks CRIU for every debug line, each written with a system call of its
//!   own while the container is frozen (a 1 GiB process that wrote 2,600 scattered pages gave
//!   33,843 lines for one incremental dump). Info, warnings and errors stay. Herd's CRIU
//!   (patch 0012) lets the file's verbosity win over runc's; another CRIU keeps runc's.
//! - `skip-in-flight`: Herd waits for connections being opened to be accepted before a
//!   dump ([`crate::netlock::drain`]); a connection the application still has not accepted
//!   when that wait ends (it may never accept it) is left behind, as if its handshake had
//!   been lost, instead of failing the whole dump.
//!
//! - With the node's TLS files, `tls`, `tls-cacert`, `tls-cert`, `tls-key` and
//!   `tls-no-cn-verify` ([`tls_args`]): the source's CRIU, which runc starts (and runc 1.1 has
//!   no TLS flags), then speaks TLS on a migration's pages connection, as the destination's
//!   `criu page-server` and `criu lazy-pages` do with the same options on their command line
//!   ([`crate::page_server`]).
//!
//! The file is written where the agent keeps its run-time state.
//!
//! # CRIU's TLS
//!
//! CRIU 4.2.1 (`criu/tls.c`, gnutls) trusts only the CA file it is given (`--tls-cacert`: the
//! system's roots are not loaded then), presents the node's certificate, and checks the
//! peer's certificate chain and validity dates (`gnutls_certificate_verify_peers3`); a page
//! server requires the client's certificate (`GNUTLS_CERT_REQUIRE`). Both ends of a pages
//! connection are CRIUs on two nodes, each talking to a relay on 127.0.0.1 (the agents relay
//! the connection, see [`crate::relay`]), so the name CRIU would check is 127.0.0.1, which no
//! node's certificate holds: `tls-no-cn-verify` turns the name check off, and the certificate
//! still has to be one of the cluster CA's. Which node it is was settled by the control
//! connection, whose TLS checks the node's address.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use herd_tls::TlsFiles;

/// The OCI annotation runc reads the CRIU configuration file's path from.
pub const ANNOTATION: &str = "org.criu.config";

/// What the file says.
const SETTINGS: &str = "# Written by herd node: CRIU settings for this node's containers.
network-lock skip
manage-cgroups=ignore
file-locks
ghost-limit 256M
skip-in-flight
verbosity=3
";
// `=`: manage-cgroups' and verbosity's arguments are optional, and CRIU turns a line into
// `--key value`, which getopt reads as `--manage-cgroups` (soft mode) followed by a stray word.

/// CRIU's options for TLS on a pages connection with the node's `files`, as command-line
/// arguments.
pub fn tls_args(files: &TlsFiles) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--tls".into()];
    for (flag, path) in [("--tls-cacert", &files.ca), ("--tls-cert", &files.cert), ("--tls-key", &files.key)] {
        args.push(flag.into());
        args.push(path.into());
    }
    args.push("--tls-no-cn-verify".into());
    args
}

/// A line `key path`, if CRIU can read `path` back from it.
fn path_line(key: &str, what: &str, path: &Path) -> anyhow::Result<String> {
    let text = path.to_str().with_context(|| format!("the {what} {} is not named in UTF-8", path.display()))?;
    // CRIU splits a line at white space and reads quotes and '#' itself.
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c == '"' || c == '#' || c == '\\') {
        bail!("CRIU's configuration file cannot name the {what} {text:?}: white space, quotes, '#' or '\\' in it");
    }
    Ok(format!("{key} {text}\n"))
}

/// The same options as lines of the configuration file (`--key value` becomes `key value`).
fn tls_lines(files: &TlsFiles) -> anyhow::Result<String> {
    let mut lines = String::from("tls\ntls-no-cn-verify\n");
    for (key, path) in [("tls-cacert", &files.ca), ("tls-cert", &files.cert), ("tls-key", &files.key)] {
        lines.push_str(&path_line(key, "TLS file", path)?);
    }
    Ok(lines)
}

/// The file's content, with TLS when `tls` is given and the dirty-track keeper's socket when
/// `keeper` is.
fn settings(tls: Option<&TlsFiles>, keeper: Option<&Path>) -> anyhow::Result<String> {
    let mut text = SETTINGS.to_string();
    if let Some(files) = tls {
        text.push_str("# TLS on migrations' pages connections, with the node's certificate.\n");
        text.push_str(&tls_lines(files)?);
    }
    if let Some(socket) = keeper {
        text.push_str("# The agent holds CRIU's dirty-memory trackers between dumps (no soft-dirty here).\n");
        text.push_str(&path_line("dirty-track-keeper", "keeper socket", socket)?);
    }
    Ok(text)
}

/// Writes, into `run_dir`, the file that asks a dump to track written pages for the next one
/// (see [`crate::runc::CheckpointOpts::track_mem_config`]), and returns its path.
pub fn write_track_mem(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = run_dir.join("criu-track-mem.conf");
    std::fs::write(&path, "# Written by herd node: a dump that tracks written pages for the next.\ntrack-mem\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes the configuration into `run_dir` and returns its path.
pub fn write(run_dir: &Path, tls: Option<&TlsFiles>, keeper: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = run_dir.join("criu.conf");
    std::fs::write(&path, settings(tls, keeper)?).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &str) -> TlsFiles {
        TlsFiles::in_dir(Path::new(dir), "n1")
    }

    #[test]
    fn tls_goes_into_the_file_and_onto_the_command_line_alike() {
        let plain = settings(None, None).unwrap();
        assert!(!plain.contains("tls"), "{plain}");
        let text = settings(Some(&files("/var/lib/herd/tls")), None).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("tls")).collect();
        assert_eq!(
            lines,
            [
                "tls",
                "tls-no-cn-verify",
                "tls-cacert /var/lib/herd/tls/ca.crt",
                "tls-cert /var/lib/herd/tls/n1.crt",
                "tls-key /var/lib/herd/tls/n1.key"
            ]
        );
        // The command line says the same, as `--key value`.
        let args: Vec<String> =
            tls_args(&files("/var/lib/herd/tls")).into_iter().map(|a| a.into_string().unwrap()).collect();
        let mut from_file: Vec<String> = Vec::new();
        for l in &lines {
            let mut words = l.split(' ');
            from_file.push(format!("--{}", words.next().unwrap()));
            from_file.extend(words.map(str::to_string));
        }
        let (mut a, mut b) = (args.clone(), from_file);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(args[0], "--tls");
    }

    #[test]
    fn paths_criu_would_misread_are_refused() {
        for dir in ["/var/lib/my herd", "/x\"y", "/x#y", "/x\\y"] {
            let e = settings(Some(&files(dir)), None).unwrap_err();
            assert!(e.to_string().contains("cannot name the TLS file"), "{dir}: {e}");
            let e = settings(None, Some(&Path::new(dir).join("keeper.sock"))).unwrap_err();
            assert!(e.to_string().contains("cannot name the keeper socket"), "{dir}: {e}");
        }
    }

    #[test]
    fn the_keeper_socket_is_named_where_there_is_one() {
        let text = settings(None, Some(Path::new("/run/herd/n1/dirty-track.sock"))).unwrap();
        assert!(text.lines().any(|l| l == "dirty-track-keeper /run/herd/n1/dirty-track.sock"), "{text}");
        assert!(!settings(None, None).unwrap().contains("dirty-track"));
    }
}
