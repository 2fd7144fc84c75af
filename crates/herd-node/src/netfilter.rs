//! A container's own firewall rules, carried with its checkpoint.
//!
//! runc hands CRIU the container's network namespace as an external one, so CRIU dumps the
//! sockets in it but not the namespace: its iptables rules stay behind, and a container
//! restored into a new namespace (on another node, or on this one after a checkpoint) would
//! come back without them. Only a container holding `CAP_NET_ADMIN` (`herd run --cap-add
//! NET_ADMIN`) can have rules of its own; for it a node saves the namespace's IPv4 and IPv6
//! tables (`iptables-save`, `ip6tables-save`, and the legacy back end's where the node has
//! it) into the checkpoint's images ([`RULES_FILE`]), Herd's own lock rules left out (see [`crate::netlock`]), and puts them back in the new
//! namespace before the restore ([`restore`]), with the lock kept in place: the lock's rules
//! are written into the restored filter table, so no packet passes between the two.
//!
//! The file is checked before it is applied, as the rest of a checkpoint is: only table,
//! chain, rule and `COMMIT` lines, and no option that runs a program (`--modprobe`).
//!
//! Not carried: rules made with `nft` itself in tables of its own (the node would need the
//! `nft` tool, and iptables' tables read back through it do not always parse).

use std::path::Path;

use anyhow::{Context, bail};
use herd_net::Netns;
use herd_proto::hostconfig::HostConfig;

/// The rules' file in a checkpoint's CRIU image directory: for each tool that found rules of
/// the container's, a line `#herd:TOOL`, then what `TOOL-save` printed.
pub const RULES_FILE: &str = "herd-netfilter.rules";

/// The tools whose tables are saved: the node's own back end (nf_tables on Debian) for IPv4
/// and IPv6, and the legacy (x_tables) one. [`crate::netlock`]'s lock is in the first two.
const TOOLS: [(&str, bool); 4] =
    [("iptables", true), ("ip6tables", true), ("iptables-legacy", false), ("ip6tables-legacy", false)];

/// What starts a tool's section of [`RULES_FILE`].
const SECTION: &str = "#herd:";

/// The most bytes of rules a checkpoint may carry.
const MAX_RULES: u64 = 4 << 20;

/// Whether a container of `host` may change its namespace's firewall rules.
pub fn may_have_rules(host: &HostConfig) -> bool {
    host.capabilities().contains(&"CAP_NET_ADMIN")
}

/// Saves the firewall rules of the namespace at `netns` into `images` when it has any of its
/// own (beyond empty built-in chains that accept everything, and Herd's lock).
pub fn save(netns: &Path, images: &Path) -> anyhow::Result<()> {
    let ns = Netns::open(netns)?;
    let saved = ns.run(|| -> anyhow::Result<Vec<(&'static str, String)>> {
        let mut saved = Vec::new();
        for (tool, required) in TOOLS {
            let bin = format!("{tool}-save");
            if !required && crate::tools::find_executable(&bin).is_none() {
                continue;
            }
            saved.push((tool, run(&bin)?));
        }
        Ok(saved)
    })??;
    let mut text = String::new();
    for (tool, save) in saved {
        if let Some(own) = own_rules(&save) {
            text.push_str(&format!("{SECTION}{tool}\n{own}"));
        }
    }
    if text.is_empty() {
        return Ok(());
    }
    let path = images.join(RULES_FILE);
    std::fs::create_dir_all(images).with_context(|| format!("creating {}", images.display()))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Puts the rules saved in `images` (if any) into the namespace at `netns` of a container of
/// `host`, which [`crate::netlock::lock`] holds: the lock stays. A container that may not
/// have rules of its own gets none: a checkpoint that carries some is refused.
pub fn restore(netns: &Path, images: &Path, host: &HostConfig) -> anyhow::Result<()> {
    let path = images.join(RULES_FILE);
    let text = match std::fs::File::open(&path) {
        Ok(f) => {
            use std::io::Read;
            let mut text = String::new();
            f.take(MAX_RULES + 1).read_to_string(&mut text).with_context(|| format!("reading {}", path.display()))?;
            if text.len() as u64 > MAX_RULES {
                bail!("{} is larger than {MAX_RULES} bytes", path.display());
            }
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    if !may_have_rules(host) {
        bail!("the checkpoint carries firewall rules, which a container without CAP_NET_ADMIN cannot have made");
    }
    let sections = sections(&text).context("the checkpoint's firewall rules")?;
    let ns = Netns::open(netns)?;
    ns.run(move || -> anyhow::Result<()> {
        for (tool, rules) in sections {
            apply(&format!("{tool}-restore"), &rules)?;
        }
        Ok(())
    })?
    .with_context(|| format!("restoring the container's firewall rules in {}", netns.display()))
}

/// The sections of a [`RULES_FILE`], each tool's rules checked, the lock added where it is.
fn sections(text: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    let mut rest = text.strip_prefix(SECTION).context("it does not start with a tool's section")?;
    loop {
        let (tool, body) = rest.split_once('\n').unwrap_or((rest, ""));
        let (tool, locked) = TOOLS
            .into_iter()
            .find(|(t, _)| *t == tool)
            .with_context(|| format!("a section for {tool:?}, which is not a tool Herd saves"))?;
        let (rules, next) = match body.find(&format!("\n{SECTION}")) {
            Some(i) => (&body[..=i], Some(&body[i + 1 + SECTION.len()..])),
            None => (body, None),
        };
        let rules = checked(rules).with_context(|| format!("{tool}'s rules"))?;
        out.push((tool, if locked { with_lock(&rules) } else { rules }));
        match next {
            Some(n) => rest = n,
            None => return Ok(out),
        }
    }
}

/// Runs `bin` (an `*tables-save`) and returns what it printed.
fn run(bin: &str) -> anyhow::Result<String> {
    let path =
        crate::tools::find_executable(bin).ok_or_else(|| anyhow::anyhow!("{bin} not found: install iptables"))?;
    let out = std::process::Command::new(&path).output().with_context(|| format!("running {bin}"))?;
    if !out.status.success() {
        bail!("{bin}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).with_context(|| format!("{bin} printed something that is not UTF-8"))
}

/// Feeds `rules` to `bin` (an `*tables-restore`), unless there are none.
fn apply(bin: &str, rules: &str) -> anyhow::Result<()> {
    use std::io::Write;
    if rules.trim().is_empty() {
        return Ok(());
    }
    let path =
        crate::tools::find_executable(bin).ok_or_else(|| anyhow::anyhow!("{bin} not found: install iptables"))?;
    let mut child = std::process::Command::new(&path)
        .arg("-w")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {bin}"))?;
    let written = child.stdin.take().expect("piped").write_all(rules.as_bytes());
    let out = child.wait_with_output()?;
    written.with_context(|| format!("writing to {bin}"))?;
    if !out.status.success() {
        bail!("{bin}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Herd's lock and drain rules as `iptables-save` prints them (see [`crate::netlock`]).
const HERD_RULES: [&str; 3] = [
    "-A INPUT -p tcp -m mark ! --mark 0xc114 -j DROP",
    "-A OUTPUT -p tcp -m mark ! --mark 0xc114 -j DROP",
    "-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j DROP",
];

/// The lock's rules, as [`with_lock`] puts them first in a restored filter table.
const LOCK_LINES: &str = "-I INPUT -p tcp -m mark ! --mark 0xC114 -j DROP\n\
                          -I OUTPUT -p tcp -m mark ! --mark 0xC114 -j DROP\n";

/// The container's own part of an `iptables-save` text: without comments, counters and
/// Herd's rules, and `None` when nothing is left but built-in chains that accept everything.
fn own_rules(save: &str) -> Option<String> {
    let mut out = String::new();
    let mut own = false;
    for line in save.lines() {
        if line.starts_with('#') || HERD_RULES.contains(&line) {
            continue;
        }
        if let Some(chain) = line.strip_prefix(':') {
            // `:NAME POLICY [PACKETS:BYTES]`; a chain of its own has the policy `-`.
            let mut f = chain.split_whitespace();
            let (name, policy) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            own |= policy != "ACCEPT";
            out.push_str(&format!(":{name} {policy} [0:0]\n"));
            continue;
        }
        own |= line.starts_with("-A ");
        out.push_str(line);
        out.push('\n');
    }
    own.then_some(out)
}

/// `rules` if every line is one `iptables-restore` takes from a save, and none asks it to run
/// a program.
fn checked(rules: &str) -> anyhow::Result<String> {
    for (n, line) in rules.lines().enumerate() {
        let kind_ok = line.is_empty()
            || line == "COMMIT"
            || (line.starts_with('*') && !line.contains(' '))
            || line.starts_with(':')
            || line.starts_with("-A ");
        if !kind_ok || line.contains("--modprobe") {
            bail!("line {} is not a saved rule: {line:?}", n + 1);
        }
    }
    Ok(rules.to_string())
}

/// `rules` with the lock's rules first in its filter table: the table is replaced at once,
/// so the lock holds throughout. A text without a filter table leaves the lock as it is.
fn with_lock(rules: &str) -> String {
    let mut out = String::new();
    let mut in_filter = false;
    for line in rules.lines() {
        if line.starts_with('*') {
            in_filter = line == "*filter";
        }
        if in_filter && line == "COMMIT" {
            out.push_str(LOCK_LINES);
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "# Generated by iptables-save v1.8.9 (nf_tables) on Mon Dec  7 07:10:00 2026\n\
*filter\n\
:INPUT ACCEPT [12:900]\n\
:FORWARD ACCEPT [0:0]\n\
:OUTPUT ACCEPT [3:180]\n\
-A INPUT -p tcp -m mark ! --mark 0xc114 -j DROP\n\
-A INPUT -p tcp -m tcp --dport 8080 -j REJECT --reject-with tcp-reset\n\
-A OUTPUT -p tcp -m mark ! --mark 0xc114 -j DROP\n\
COMMIT\n\
# Completed on Mon Dec  7 07:10:00 2026\n";

    #[test]
    fn a_containers_own_rules_are_kept_and_herds_lock_left_out() {
        let own = own_rules(SAVED).unwrap();
        assert_eq!(
            own,
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A INPUT -p tcp -m tcp --dport 8080 -j REJECT --reject-with tcp-reset\nCOMMIT\n"
        );
        // Herd's lock alone, or nothing at all, is nothing of its own.
        let lock_only: String = SAVED.lines().filter(|l| !l.contains("8080")).map(|l| format!("{l}\n")).collect();
        assert_eq!(own_rules(&lock_only), None);
        assert_eq!(own_rules(""), None);
        // A policy that drops, or a chain of its own, is.
        assert!(own_rules("*filter\n:INPUT DROP [1:2]\nCOMMIT\n").is_some());
        assert!(own_rules("*nat\n:mine - [0:0]\nCOMMIT\n").is_some());
    }

    #[test]
    fn restored_rules_keep_the_lock_in_the_same_table() {
        let own = own_rules(SAVED).unwrap();
        let locked = with_lock(&checked(&own).unwrap());
        let filter: Vec<&str> = locked.lines().collect();
        assert_eq!(
            filter[filter.len() - 3..],
            [
                "-I INPUT -p tcp -m mark ! --mark 0xC114 -j DROP",
                "-I OUTPUT -p tcp -m mark ! --mark 0xC114 -j DROP",
                "COMMIT"
            ]
        );
        // Another table is left without them.
        assert_eq!(with_lock("*nat\n:mine - [0:0]\nCOMMIT\n"), "*nat\n:mine - [0:0]\nCOMMIT\n");
    }

    #[test]
    fn a_rules_file_is_read_by_section() {
        let own = own_rules(SAVED).unwrap();
        let text = format!("{SECTION}iptables\n{own}{SECTION}iptables-legacy\n*filter\n-A INPUT -j DROP\nCOMMIT\n");
        let got = sections(&text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "iptables");
        assert!(got[0].1.contains("-I INPUT -p tcp -m mark ! --mark 0xC114 -j DROP"), "the lock is kept: {}", got[0].1);
        assert_eq!(got[1], ("iptables-legacy", "*filter\n-A INPUT -j DROP\nCOMMIT\n".to_string()));
        let err = format!("{:#}", sections(&format!("{SECTION}sh\nrm -rf /\n")).unwrap_err());
        assert!(err.contains("not a tool Herd saves"), "{err}");
        assert!(sections("*filter\nCOMMIT\n").is_err());
    }

    #[test]
    fn rules_are_restored_only_into_a_container_that_may_have_them() {
        let dir = tempfile::tempdir().unwrap();
        let nowhere = Path::new("/nonexistent/netns");
        // No rules saved: nothing to do, whoever the container is.
        restore(nowhere, dir.path(), &HostConfig::default()).unwrap();
        std::fs::write(dir.path().join(RULES_FILE), format!("{SECTION}iptables\n*filter\nCOMMIT\n")).unwrap();
        let err = restore(nowhere, dir.path(), &HostConfig::default()).unwrap_err().to_string();
        assert!(err.contains("without CAP_NET_ADMIN"), "{err}");
    }

    #[test]
    fn a_forged_rules_file_is_refused() {
        let err = checked("*filter\n-A INPUT -j DROP --modprobe=/tmp/x\nCOMMIT\n").unwrap_err().to_string();
        assert!(err.contains("line 2 is not a saved rule"), "{err}");
        assert!(checked("*filter\n-F INPUT\nCOMMIT\n").is_err());
        assert!(checked("*filter -M /tmp/x\nCOMMIT\n").is_err());
    }
}
