//! Holds a container's TCP traffic while its processes are dumped, moved or restored.
//!
//! While CRIU has a container's sockets in repair mode, and between the dump and the
//! restore, a TCP segment that reaches the container's namespace must be dropped, so the
//! peer retransmits, and never answered with a reset, which would end the connection. Herd
//! locks the namespace itself around every dump and restore, with two iptables rules, and
//! tells CRIU not to lock it a second time (`network-lock skip`, see [`crate::criu_config`]):
//! the lock must outlast CRIU anyway on a migration's source, and on its destination it
//! must be in place before the namespace's link comes up.

use std::path::Path;

use anyhow::bail;
use herd_net::Netns;

/// Drops TCP in and out of the namespace at `netns`, until [`unlock`].
pub fn lock(netns: &Path) -> anyhow::Result<()> {
    iptables_restore(netns, LOCK_RULES)
}

/// Locks the namespace at `netns` like [`lock`], but first lets the connections being opened
/// finish: new connection requests (SYNs) are dropped at once, then, for at most `within`,
/// the lock waits until no handshake is half done (`SYN_RECV`) and the accept queue of every
/// listening socket of process `pid` (the container's, whose namespace's tables it reads) is
/// empty. CRIU dumps neither (a half-open connection is lost, and a listening socket with
/// connections waiting to be accepted makes the dump fail), while a client whose SYN was
/// dropped simply sends it again, to wherever the container runs by then. Returns what
/// was still pending when the lock closed (0 and 0 when drained).
pub async fn lock_drained(netns: &Path, pid: u32, within: std::time::Duration) -> anyhow::Result<Pending> {
    iptables_restore(netns, SYN_LOCK_RULES)?;
    let deadline = tokio::time::Instant::now() + within;
    let mut pending = Pending::read(pid);
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        pending = Pending::read(pid);
    }
    let locked = iptables_restore(netns, LOCK_RULES);
    let unsyn = iptables_restore(netns, SYN_UNLOCK_RULES);
    locked?;
    unsyn?;
    Ok(pending)
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

const LOCK_RULES: &str = "*filter\n-I INPUT -p tcp -j DROP\n-I OUTPUT -p tcp -j DROP\nCOMMIT\n";
const UNLOCK_RULES: &str = "*filter\n-D INPUT -p tcp -j DROP\n-D OUTPUT -p tcp -j DROP\nCOMMIT\n";
/// New connection requests only, while the ones under way finish ([`lock_drained`]).
const SYN_LOCK_RULES: &str = "*filter\n-I INPUT -p tcp --syn -j DROP\nCOMMIT\n";
const SYN_UNLOCK_RULES: &str = "*filter\n-D INPUT -p tcp --syn -j DROP\nCOMMIT\n";

/// Runs `iptables-restore --noflush` with `rules` inside the namespace at `netns`.
fn iptables_restore(netns: &Path, rules: &'static str) -> anyhow::Result<()> {
    let bin = crate::tools::find_executable("iptables-restore")
        .ok_or_else(|| anyhow::anyhow!("iptables-restore not found: install iptables"))?;
    let ns = Netns::open(netns)?;
    let out = ns.run(move || -> std::io::Result<std::process::Output> {
        let mut child = std::process::Command::new(bin)
            .args(["-w", "--noflush"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        use std::io::Write;
        child.stdin.take().expect("piped").write_all(rules.as_bytes())?;
        child.wait_with_output()
    })??;
    if !out.status.success() {
        bail!("iptables-restore in {}: {}", netns.display(), String::from_utf8_lossy(&out.stderr).trim());
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
