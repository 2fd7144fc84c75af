//! Holds a container's TCP traffic while its processes are dumped, moved or restored.
//!
//! While CRIU has a container's sockets in repair mode, and between the dump and the
//! restore, a TCP segment that reaches the container's namespace must be dropped, so the
//! peer retransmits, and never answered with a reset, which would end the connection. Herd
//! locks the namespace itself around every dump and restore, with two iptables rules and the
//! same two for IPv6, and tells CRIU not to lock it a second time (`network-lock skip`, see
//! [`crate::criu_config`]):
//! the lock must outlast CRIU anyway on a migration's source, and on its destination it
//! must be in place before the namespace's link comes up.

use std::path::Path;

use anyhow::bail;
use herd_net::Netns;

/// Drops TCP in and out of the namespace at `netns`, until [`unlock`].
pub fn lock(netns: &Path) -> anyhow::Result<()> {
    iptables_restore(netns, LOCK_RULES)
}

/// Lets the connections being opened into the namespace at `netns` finish before a dump:
/// new connection requests (SYNs) are dropped from now on, then, for at most `within`, this
/// waits until no handshake is half done (`SYN_RECV`) and the accept queue of every listening
/// socket of process `pid` (the container's, whose namespace's tables it reads) is empty.
/// CRIU dumps neither (a half-open connection is lost, and a listening socket with connections
/// waiting to be accepted makes the dump fail), while a client whose SYN was dropped simply
/// sends it again, to wherever the container runs by then. The container runs on meanwhile;
/// [`lock_drained`] takes over once it is frozen, [`undrain`] gives up. Returns what was still
/// pending at the end (nothing when drained).
///
/// The full lock waits for the freeze because a process that runs under it can finish work
/// whose answer the lock drops, then close its socket: a socket no process holds is not
/// dumped, so the peer, still waiting for that answer, would meet a reset after the restore.
pub async fn drain(netns: &Path, pid: u32, within: std::time::Duration) -> anyhow::Result<Pending> {
    iptables_restore(netns, SYN_LOCK_RULES)?;
    let deadline = tokio::time::Instant::now() + within;
    let mut pending = Pending::read(pid);
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        pending = Pending::read(pid);
    }
    Ok(pending)
}

/// Locks a namespace that [`drain`] held, its processes frozen: like [`lock`].
pub fn lock_drained(netns: &Path) -> anyhow::Result<()> {
    iptables_restore(netns, LOCK_RULES)?;
    undrain(netns)
}

/// Lets new connections into a namespace that [`drain`] held (a dump that did not happen).
pub fn undrain(netns: &Path) -> anyhow::Result<()> {
    iptables_restore(netns, SYN_UNLOCK_RULES)
}

/// Connections of a network namespace that CRIU would not carry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Half-open connections (`SYN_RECV`).
    pub half_open: usize,
    /// Connections waiting in listening sockets' accept queues.
    pub unaccepted: usize,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.half_open == 0 && self.unaccepted == 0
    }

    /// Reads the TCP tables of the network namespace of process `pid` (none when it is gone).
    fn read(pid: u32) -> Pending {
        let mut p = Pending::default();
        for table in ["tcp", "tcp6"] {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
                p.add(&text);
            }
        }
        p
    }

    /// Counts what a `/proc/net/tcp` table shows: its fourth column is the state (03:
    /// SYN_RECV, 0A: LISTEN), its fifth `tx_queue:rx_queue`, where a listening socket's
    /// `rx_queue` is its accept queue's length.
    fn add(&mut self, table: &str) {
        for line in table.lines().skip(1) {
            let mut fields = line.split_whitespace().skip(3);
            let (Some(state), Some(queues)) = (fields.next(), fields.next()) else { continue };
            match state {
                "03" => self.half_open += 1,
                "0A" => {
                    let rx = queues.split_once(':').and_then(|(_, rx)| usize::from_str_radix(rx, 16).ok());
                    self.unaccepted += rx.unwrap_or(0);
                }
                _ => {}
            }
        }
    }
}

/// Lets TCP through the namespace at `netns` again.
pub fn unlock(netns: &Path) -> anyhow::Result<()> {
    iptables_restore(netns, UNLOCK_RULES)
}

/// The lock drops TCP but CRIU's own packets: restoring a connection that had sent its FIN
/// (FIN_WAIT, LAST_ACK, CLOSING), CRIU sends that FIN again on a raw socket marked `0xC114`
/// (`SOCCR_MARK`), and its own lock lets such packets through as these rules do. Dropped, the
/// send fails with EPERM and so does the restore.
const LOCK_RULES: &str = "*filter\n-I INPUT -p tcp -m mark ! --mark 0xC114 -j DROP\n\
                          -I OUTPUT -p tcp -m mark ! --mark 0xC114 -j DROP\nCOMMIT\n";
const UNLOCK_RULES: &str = "*filter\n-D INPUT -p tcp -m mark ! --mark 0xC114 -j DROP\n\
                            -D OUTPUT -p tcp -m mark ! --mark 0xC114 -j DROP\nCOMMIT\n";
/// New connection requests only, while the ones under way finish ([`drain`]).
const SYN_LOCK_RULES: &str = "*filter\n-I INPUT -p tcp --syn -j DROP\nCOMMIT\n";
const SYN_UNLOCK_RULES: &str = "*filter\n-D INPUT -p tcp --syn -j DROP\nCOMMIT\n";

/// Runs `iptables-restore --noflush` and `ip6tables-restore --noflush` with `rules` inside
/// the namespace at `netns`: TCP over IPv6 (a container's `::1` among others) is held as IPv4
/// is. Without the IPv6 half, a connection over `::1` whose first end CRIU restored sent its
/// queued data to a peer not restored yet, met a reset, and the restore failed (ZDTM's
/// `socket-tcpbuf6`).
fn iptables_restore(netns: &Path, rules: &'static str) -> anyhow::Result<()> {
    let mut bins = Vec::new();
    for name in ["iptables-restore", "ip6tables-restore"] {
        bins.push(
            crate::tools::find_executable(name).ok_or_else(|| anyhow::anyhow!("{name} not found: install iptables"))?,
        );
    }
    let ns = Netns::open(netns)?;
    // Both at once: the unlock is on the way from a restore to the container's first packet.
    let outs = ns.run(move || -> std::io::Result<Vec<(std::path::PathBuf, std::process::Output)>> {
        let mut children = Vec::new();
        for bin in bins {
            let spawned = std::process::Command::new(&bin)
                .args(["-w", "--noflush"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    // Its end of the pipe closes when `stdin` drops here.
                    let written = child.stdin.take().expect("piped").write_all(rules.as_bytes());
                    match written {
                        Ok(()) => Ok(child),
                        Err(e) => {
                            let _ = child.wait();
                            Err(e)
                        }
                    }
                });
            match spawned {
                Ok(child) => children.push((bin, child)),
                Err(e) => {
                    for (_, mut c) in children {
                        let _ = c.wait();
                    }
                    return Err(e);
                }
            }
        }
        children.into_iter().map(|(bin, child)| Ok((bin, child.wait_with_output()?))).collect()
    })??;
    for (bin, out) in outs {
        if !out.status.success() {
            bail!("{} in {}: {}", bin.display(), netns.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_connections_are_counted_from_the_tcp_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100000A:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100000A:1F90 0200000A:C350 03 00000000:00000000 00:00000000 00000000     0        0 0 1 0 100 0 0 10 0\n\
   2: 0100000A:1F90 0200000A:C351 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        let mut p = Pending::default();
        p.add(table);
        assert_eq!(p, Pending { half_open: 1, unaccepted: 3 });
        assert!(!p.is_empty());
    }
}
