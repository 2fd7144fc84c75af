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

/// Lets TCP through the namespace at `netns` again.
pub fn unlock(netns: &Path) -> anyhow::Result<()> {
    iptables_restore(netns, UNLOCK_RULES)
}

const LOCK_RULES: &str = "*filter\n-I INPUT -p tcp -j DROP\n-I OUTPUT -p tcp -j DROP\nCOMMIT\n";
const UNLOCK_RULES: &str = "*filter\n-D INPUT -p tcp -j DROP\n-D OUTPUT -p tcp -j DROP\nCOMMIT\n";

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
