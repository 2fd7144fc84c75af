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
//! - sockets: unix, inet and inet6 (TCP, UDP, UDP-Lite, ping, raw), packet and netlink are;
//!   any other family (VSOCK, AF_ALG, XDP...) or protocol (MPTCP, SCTP) is not, nor a unix
//!   stream socket connected to a process outside the container.
//!
//! A refusal names the process, the file and why, so the container keeps running where it is
//! and its owner knows what to change.

use std::collections::{HashMap, HashSet};
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

/// The sockets a network namespace holds, by inode, from its `/proc/PID/net` tables: the
/// families and protocols CRIU dumps.
#[derive(Debug, Default)]
pub struct Sockets {
    /// Inodes of sockets CRIU dumps.
    dumped: HashSet<u64>,
}

impl Sockets {
    /// Reads the tables of `net` (a `/proc/PID/net` directory).
    pub fn read(net: &Path) -> Sockets {
        let mut dumped = HashSet::new();
        for table in [
            "unix", "tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6", "icmp", "icmp6", "packet",
            "netlink",
        ] {
            if let Ok(text) = std::fs::read_to_string(net.join(table)) {
                dumped.extend(socket_inodes(table, &text));
            }
        }
        Sockets { dumped }
    }

    /// Why CRIU cannot dump socket `inode`; `None` when it can.
    pub fn undumpable(&self, inode: u64) -> Option<String> {
        (!self.dumped.contains(&inode)).then(|| {
            format!(
                "a socket (socket:[{inode}]) of a family or protocol CRIU cannot checkpoint (it dumps unix, TCP, UDP, \
                 raw, ping, packet and netlink sockets)"
            )
        })
    }
}

/// The inodes a `/proc/net/<table>` file lists.
fn socket_inodes(table: &str, text: &str) -> Vec<u64> {
    // The inode's column: unix and packet and netlink tables have their own layouts.
    let column = match table {
        "unix" => 6,
        "packet" => 8,
        "netlink" => 9,
        _ => 9,
    };
    text.lines().skip(1).filter_map(|l| l.split_whitespace().nth(column)?.parse().ok()).collect()
}

/// Everything CRIU could not dump in processes `pids` (each named with its pid and command).
/// Processes that exit meanwhile are skipped.
pub fn check(pids: &[u32]) -> Vec<String> {
    let mut problems = Vec::new();
    // Sockets are per network namespace: read each namespace's tables once.
    let mut tables: HashMap<u64, Sockets> = HashMap::new();
    for &pid in pids {
        let proc = Path::new("/proc").join(pid.to_string());
        let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default().trim().to_string();
        let who = format!("process {pid} ({comm})");
        let Ok(fds) = std::fs::read_dir(proc.join("fd")) else { continue }; // it exited
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            let link = link.to_string_lossy().into_owned();
            let n = fd.file_name().to_string_lossy().into_owned();
            if let Some(inode) = link.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                let Ok(inode) = inode.parse::<u64>() else { continue };
                let ns = std::fs::metadata(proc.join("ns/net")).map(|m| m.ino()).unwrap_or(0);
                let sockets = tables.entry(ns).or_insert_with(|| Sockets::read(&proc.join("net")));
                if let Some(why) = sockets.undumpable(inode) {
                    problems.push(format!("{who} holds {why} as fd {n}"));
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
            let rdev = std::fs::metadata(fd.path()).map(|m| m.rdev()).unwrap_or(0);
            if let Some(why) = undumpable_file(&link, kind, rdev) {
                problems.push(format!("{who} holds {why} as fd {n}"));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn socket_tables_give_their_inodes() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n";
        assert_eq!(socket_inodes("tcp", tcp), vec![4242]);
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                    0000000000000000: 00000002 00000000 00010000 0001 01 777 /run/x.sock\n";
        assert_eq!(socket_inodes("unix", unix), vec![777]);
    }

    #[test]
    fn this_process_is_checked() {
        // The test runner holds nothing CRIU cannot dump but what we add.
        let me = std::process::id();
        let before = check(&[me]);
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
