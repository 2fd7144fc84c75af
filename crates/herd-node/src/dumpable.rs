//! What CRIU cannot dump, found before a container is frozen.
//!
//! CRIU refuses a process that holds a file it has no dumper for, but only once the container
//! is frozen and the dump is under way. A node looks first ([`check`]): every open file of
//! every process of the container, and every file it maps, against what CRIU 4.2 dumps
//! (`criu/files.c`, `criu/sockets.c`, `criu/sk-inet.c`):
//! - anonymous inodes: eventfd, eventpoll, inotify, fanotify, signalfd, timerfd, pidfd and
//!   BPF maps are dumped; io_uring, userfaultfd, perf events, BPF programs and the rest are not;
//! - character devices: the memory devices (`/dev/null`, `/dev/zero`, `/dev/random`...),
//!   `/dev/net/tun` and terminals are; other devices are not, open or mapped;
//! - sockets (asked for their family, type and protocol through a duplicate, `pidfd_getfd`):
//!   unix, inet and inet6 (TCP, UDP, UDP-Lite, ping, raw), packet and netlink are; any other
//!   family (VSOCK, AF_ALG, XDP...) or protocol (MPTCP, SCTP) is not. Not checked here: a unix
//!   stream socket connected to a process outside the container (CRIU refuses it during the
//!   dump, and the container then runs on).
//!
//! - what runc's way of calling CRIU keeps it from carrying: a process in a network or cgroup
//!   namespace other than the container's (CRIU takes the container's network namespace as
//!   external, `--empty-ns network`, and then dumps no other; it cannot dump a cgroup
//!   namespace nested in a container that has none);
//! - an inotify watch or fanotify mark on the container's overlay root: CRIU records a
//!   watched file by its handle, and overlayfs gives none (CRIU: "Can't dump that handle");
//! - an open file unlinked from the path it was opened by while another link to it remains:
//!   CRIU would need `--link-remap`, which Herd leaves off (docs/design/zdtm.md);
//!
//! - a process that uses every descriptor its open-file limit allows: CRIU's parasite needs
//!   one more in it (a memfd), and without it CRIU fails during the dump with a misleading
//!   `remote_mprotect failed` (compel goes on after the failed `memfd_create`).
//!
//! A refusal names the process, the file and why, so the container keeps running where it is
//! and its owner knows what to change.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Anonymous inodes CRIU dumps (`anon_inode:<name>` links).
const DUMPED_ANON: [&str; 9] =
    ["[eventfd]", "[eventpoll]", "inotify", "[fanotify]", "[signalfd]", "[timerfd]", "[pidfd]", "bpf-map", "[pidfs]"];

/// Linux's device majors: memory devices, misc devices, ttys and pseudo-terminals.
const MEM_MAJOR: u64 = 1;
const MISC_MAJOR: u64 = 10;
const TUN_MINOR: u64 = 200;

/// Why CRIU cannot dump the file behind link `link` (what `/proc/PID/fd/N` reads), of type
/// `kind` and device `rdev` (for character devices); `None` when it can.
pub fn undumpable_file(link: &str, kind: FileKind, rdev: u64) -> Option<String> {
    match kind {
        FileKind::Anon => {
            let name = link.strip_prefix("anon_inode:").unwrap_or(link);
            if DUMPED_ANON.contains(&name) {
                None
            } else {
                let what = match name {
                    "[io_uring]" => "an io_uring instance".to_string(),
                    "[userfaultfd]" => "a userfaultfd".to_string(),
                    "[perf_event]" => "a perf event".to_string(),
                    "bpf-prog" => "a BPF program".to_string(),
                    other => format!("the kernel object {other}"),
                };
                Some(format!("{what} ({link}), which CRIU cannot checkpoint"))
            }
        }
        FileKind::CharDevice => {
            let (major, minor) = (libc::major(rdev) as u64, libc::minor(rdev) as u64);
            let tty = matches!(major, 4 | 5 | 136..=143);
            if major == MEM_MAJOR || (major == MISC_MAJOR && minor == TUN_MINOR) || tty {
                None
            } else {
                Some(format!("the device {link} ({major}:{minor}), which CRIU cannot checkpoint"))
            }
        }
        FileKind::Other => None,
    }
}

/// What kind of file an open file is, as far as [`undumpable_file`] cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An anonymous inode (`anon_inode:...`).
    Anon,
    CharDevice,
    Other,
}

/// Why CRIU cannot dump a mapping of `path` (a `/proc/PID/maps` path); `None` when it can.
pub fn undumpable_mapping(path: &str) -> Option<String> {
    let device = path.starts_with("/dev/") && !path.starts_with("/dev/shm/");
    let dumped = matches!(path, "/dev/zero" | "/dev/null") || path.starts_with("/dev/pts/");
    (device && !dumped).then(|| format!("a mapping of the device {path}, which CRIU cannot checkpoint"))
}

/// A socket's family, type and protocol (`SO_DOMAIN`, `SO_TYPE`, `SO_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketKind {
    pub family: i32,
    pub kind: i32,
    pub protocol: i32,
}

/// Why CRIU cannot dump a socket of `kind`; `None` when it can (`criu/sockets.c`,
/// `can_dump_ipproto` in `criu/sk-inet.c`).
pub fn undumpable_socket(kind: SocketKind) -> Option<String> {
    let inet_ok = kind.kind == libc::SOCK_RAW
        || matches!(
            kind.protocol,
            0 | libc::IPPROTO_TCP
                | libc::IPPROTO_UDP
                | libc::IPPROTO_UDPLITE
                | libc::IPPROTO_ICMP
                | libc::IPPROTO_ICMPV6
        );
    let ok = match kind.family {
        libc::AF_UNIX | libc::AF_NETLINK | libc::AF_PACKET => true,
        libc::AF_INET | libc::AF_INET6 => inet_ok,
        _ => false,
    };
    if ok {
        return None;
    }
    let what = match (kind.family, kind.protocol) {
        (libc::AF_INET | libc::AF_INET6, libc::IPPROTO_MPTCP) => "an MPTCP socket".to_string(),
        (libc::AF_INET | libc::AF_INET6, libc::IPPROTO_SCTP) => "an SCTP socket".to_string(),
        (libc::AF_INET | libc::AF_INET6, p) => format!("an IP socket of protocol {p}"),
        (libc::AF_VSOCK, _) => "a VSOCK socket".to_string(),
        (libc::AF_ALG, _) => "a kernel crypto (AF_ALG) socket".to_string(),
        (libc::AF_XDP, _) => "an XDP socket".to_string(),
        (f, _) => format!("a socket of address family {f}"),
    };
    Some(format!("{what}, which CRIU cannot checkpoint"))
}

/// The kind of socket `fd` of process `pid`, asked of a duplicate of it (`pidfd_getfd(2)`).
fn socket_kind(pid: u32, fd: i32) -> std::io::Result<SocketKind> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain syscalls; each returned descriptor is owned at once.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sock = unsafe { OwnedFd::from_raw_fd(dup as i32) };
    let get = |opt: libc::c_int| -> std::io::Result<i32> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` describe a valid buffer for an int option.
        let rc = unsafe {
            libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, opt, (&mut value as *mut libc::c_int).cast(), &mut len)
        };
        if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(value) }
    };
    Ok(SocketKind { family: get(libc::SO_DOMAIN)?, kind: get(libc::SO_TYPE)?, protocol: get(libc::SO_PROTOCOL)? })
}

/// Everything CRIU could not dump in processes `pids` (each named with its pid and command).
/// Processes that exit meanwhile are skipped.
pub fn check(pids: &[u32]) -> Vec<String> {
    let mut problems = Vec::new();
    let init = container_init(pids);
    let ns_of = |pid: u32, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok();
    let (init_net, init_cgroup) = (init.and_then(|p| ns_of(p, "net")), init.and_then(|p| ns_of(p, "cgroup")));
    // The overlay root's device, as the kernel encodes it in fdinfo (`sdev:`).
    let root_dev = init.and_then(|p| std::fs::metadata(format!("/proc/{p}/root")).ok()).map(|m| kernel_dev(m.dev()));
    for &pid in pids {
        let proc = Path::new("/proc").join(pid.to_string());
        let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default().trim().to_string();
        let who = format!("process {pid} ({comm})");
        if init_net.is_some() && ns_of(pid, "net").is_some_and(|ns| Some(&ns) != init_net.as_ref()) {
            problems.push(format!(
                "{who} is in a network namespace of its own, which CRIU cannot checkpoint in a container \
                 (runc has it take the container's as external, and it then dumps no other)"
            ));
        }
        if init_cgroup.is_some() && ns_of(pid, "cgroup").is_some_and(|ns| Some(&ns) != init_cgroup.as_ref()) {
            problems.push(format!(
                "{who} is in a cgroup namespace of its own, which CRIU cannot checkpoint in a container that has none"
            ));
        }
        let Ok(fds) = std::fs::read_dir(proc.join("fd")) else { continue }; // it exited
        let limit = std::fs::read_to_string(proc.join("limits")).ok().and_then(|l| open_files_limit(&l));
        let mut below_limit = 0u64;
        for fd in fds.flatten() {
            let n = fd.file_name().to_string_lossy().into_owned();
            if let (Some((soft, _)), Ok(number)) = (limit, n.parse::<u64>())
                && number < soft
            {
                below_limit += 1;
            }
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            let link = link.to_string_lossy().into_owned();
            if link.starts_with("socket:[") {
                // A socket closed meanwhile is no problem; one that cannot be asked is left to CRIU.
                if let Ok(kind) = n.parse().map_err(std::io::Error::other).and_then(|fd| socket_kind(pid, fd))
                    && let Some(why) = undumpable_socket(kind)
                {
                    problems.push(format!("{who} holds {why} ({link}) as fd {n}"));
                }
                continue;
            }
            let kind = if link.starts_with("anon_inode:") {
                FileKind::Anon
            } else {
                match std::fs::metadata(fd.path()) {
                    Ok(m) if m.file_type().is_char_device() => FileKind::CharDevice,
                    _ => FileKind::Other,
                }
            };
            let meta = std::fs::metadata(fd.path()).ok();
            let rdev = meta.as_ref().map(|m| m.rdev()).unwrap_or(0);
            if let Some(why) = undumpable_file(&link, kind, rdev) {
                problems.push(format!("{who} holds {why} as fd {n}"));
            }
            if matches!(link.as_str(), "anon_inode:inotify" | "anon_inode:[fanotify]")
                && let Some(dev) = root_dev
                && let Ok(info) = std::fs::read_to_string(proc.join("fdinfo").join(&n))
                && watches_device(&info, dev)
            {
                problems.push(format!(
                    "{who} watches a file of its overlay root through {link} (fd {n}), and CRIU records a watched \
                     file by a handle overlayfs does not give: watch a volume's files instead"
                ));
            }
            if link.ends_with(" (deleted)") && meta.as_ref().is_some_and(|m| m.nlink() > 0) {
                problems.push(format!(
                    "{who} holds {link} as fd {n}, unlinked where it was opened while another link to it remains, \
                     which CRIU carries only with --link-remap (Herd leaves it off)"
                ));
            }
        }
        if let Some((soft, hard)) = limit
            && below_limit >= soft
        {
            problems.push(format!(
                "{who} has all {soft} descriptors of its open-file limit in use, and CRIU needs one more in it \
                 to checkpoint it: let it close one, or have it raise its soft limit (up to {hard})"
            ));
        }
        if let Ok(maps) = std::fs::read_to_string(proc.join("maps")) {
            let mut seen = HashSet::new();
            for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
                if seen.insert(path)
                    && let Some(why) = undumpable_mapping(path)
                {
                    problems.push(format!("{who} holds {why}"));
                }
            }
        }
    }
    problems
}

/// The container's first process among `pids`: the one whose parent is not one of them.
fn container_init(pids: &[u32]) -> Option<u32> {
    pids.iter().copied().find(|pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse::<u32>().ok());
        ppid.is_some_and(|ppid| !pids.contains(&ppid))
    })
}

/// A device number as the kernel keeps it (`MKDEV`: the major above 20 bits of minor), which
/// fdinfo prints, from the one stat(2) gives.
fn kernel_dev(dev: u64) -> u64 {
    (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev))
}

/// Whether an inotify or fanotify fdinfo text has a watch or mark on device `dev` (`sdev:`, hex).
fn watches_device(fdinfo: &str, dev: u64) -> bool {
    fdinfo.lines().filter(|l| l.starts_with("inotify ") || l.starts_with("fanotify ")).any(|l| {
        l.split_whitespace()
            .find_map(|f| f.strip_prefix("sdev:"))
            .and_then(|d| u64::from_str_radix(d, 16).ok())
            .is_some_and(|d| d == dev)
    })
}

/// The soft and hard open-file limits in a `/proc/PID/limits` text.
fn open_files_limit(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_limit(limits), Some((1024, 524288)));
        assert_eq!(open_files_limit("Max open files            unlimited unlimited files"), None);
    }

    /// What [`check`] finds in a bash running `script`, once it has printed "ready" (and
    /// waits in `read`: during an exec, /proc/PID/fd may not be readable).
    fn check_of_script(script: &str) -> Vec<String> {
        let mut child = std::process::Command::new("bash")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the script failed before it was ready");
        let problems = check(&[child.id()]);
        let _ = child.kill();
        let _ = child.wait();
        problems
    }

    /// A process that has used up its open-file limit is refused, naming the limit.
    #[test]
    fn a_process_out_of_descriptors_is_refused() {
        // It waits in `read` rather than exec'ing a sleeper: during an exec, /proc/PID/fd may
        // not be readable, and the check would see no descriptor at all.
        let script = "ulimit -n 64; for i in $(seq 3 63); do eval \"exec $i</dev/null\"; done; echo ready; read -r _";
        let problems = check_of_script(script);
        assert!(problems.iter().any(|p| p.contains("all 64 descriptors of its open-file limit")), "{problems:?}");
    }

    #[test]
    fn watches_are_matched_by_their_device() {
        let info =
            "pos:\t0\nflags:\t00\nmnt_id:\t15\ninotify wd:1 ino:a3 sdev:3a mask:fff ignored_mask:0 fhandle-bytes:8\n";
        assert!(watches_device(info, 0x3a));
        assert!(!watches_device(info, 0x800001));
        assert!(!watches_device("pos:\t0\n", 0x3a));
        // An anonymous device 0:58 as stat(2) gives it, and as the kernel does.
        assert_eq!(kernel_dev(libc::makedev(0, 58)), 58);
        assert_eq!(kernel_dev(libc::makedev(8, 1)), 8 << 20 | 1);
    }

    /// A file unlinked while another link to it remains is refused; one with no link left
    /// (which CRIU keeps as a ghost file) is not.
    #[test]
    fn a_file_unlinked_beside_another_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, ghost) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("ghost"));
        std::fs::write(&a, "x").unwrap();
        std::fs::hard_link(&a, &b).unwrap();
        std::fs::write(&ghost, "y").unwrap();
        let script = format!(
            "exec 7<{} 8<{}; rm {} {}; echo ready; read -r _",
            a.display(),
            ghost.display(),
            a.display(),
            ghost.display()
        );
        let problems = check_of_script(&script);
        let remapped: Vec<_> = problems.iter().filter(|p| p.contains("--link-remap")).collect();
        assert_eq!(remapped.len(), 1, "{problems:?}");
        assert!(remapped[0].contains("as fd 7"), "{problems:?}");
    }

    #[test]
    fn anonymous_inodes_criu_dumps_pass_and_others_are_named() {
        for ok in ["anon_inode:[eventfd]", "anon_inode:[eventpoll]", "anon_inode:inotify", "anon_inode:[timerfd]"] {
            assert_eq!(undumpable_file(ok, FileKind::Anon, 0), None, "{ok}");
        }
        let why = undumpable_file("anon_inode:[io_uring]", FileKind::Anon, 0).unwrap();
        assert!(why.starts_with("an io_uring instance"), "{why}");
        assert!(undumpable_file("anon_inode:[perf_event]", FileKind::Anon, 0).unwrap().contains("perf event"));
    }

    #[test]
    fn devices_criu_dumps_pass_and_others_are_named() {
        let dev = |major: u32, minor: u32| libc::makedev(major, minor);
        assert_eq!(undumpable_file("/dev/null", FileKind::CharDevice, dev(1, 3)), None);
        assert_eq!(undumpable_file("/dev/net/tun", FileKind::CharDevice, dev(10, 200)), None);
        assert_eq!(undumpable_file("/dev/pts/0", FileKind::CharDevice, dev(136, 0)), None);
        let why = undumpable_file("/dev/dri/card0", FileKind::CharDevice, dev(226, 0)).unwrap();
        assert!(why.contains("/dev/dri/card0 (226:0)"), "{why}");
        assert_eq!(undumpable_mapping("/dev/zero"), None);
        assert_eq!(undumpable_mapping("/dev/shm/x"), None);
        assert_eq!(undumpable_mapping("/usr/lib/libc.so.6"), None);
        assert!(undumpable_mapping("/dev/dri/card0").is_some());
    }

    #[test]
    fn socket_kinds_criu_dumps_pass_and_others_are_named() {
        let k = |family, kind, protocol| SocketKind { family, kind, protocol };
        assert_eq!(undumpable_socket(k(libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP)), None);
        assert_eq!(undumpable_socket(k(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP)), None);
        assert_eq!(undumpable_socket(k(libc::AF_INET, libc::SOCK_RAW, 200)), None);
        assert_eq!(undumpable_socket(k(libc::AF_UNIX, libc::SOCK_STREAM, 0)), None);
        let why = undumpable_socket(k(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP)).unwrap();
        assert!(why.starts_with("an MPTCP socket"), "{why}");
        assert!(undumpable_socket(k(libc::AF_VSOCK, libc::SOCK_STREAM, 0)).unwrap().contains("VSOCK"));
    }

    #[test]
    fn this_process_is_checked() {
        // The test runner holds nothing CRIU cannot dump but what we add.
        let me = std::process::id();
        let before = check(&[me]);
        // An unbound TCP socket (not in any /proc/net table, yet dumped by CRIU) passes.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let unbound = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0) };
        assert!(unbound >= 0);
        assert_eq!(check(&[me]), before, "sockets CRIU dumps are not problems");
        unsafe { libc::close(unbound) };
        drop(tcp);
        // io_uring_setup(2): an io_uring instance, as a real program would hold.
        let mut params = [0u8; 120];
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
        if fd < 0 {
            panic!("io_uring_setup failed: {}", std::io::Error::last_os_error());
        }
        let after = check(&[me]);
        unsafe { libc::close(fd as i32) };
        let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
        assert_eq!(new.len(), 1, "{after:?}");
        assert!(new[0].contains("an io_uring instance") && new[0].contains(&format!("fd {fd}")), "{}", new[0]);
    }
}
