//! Who a container's processes run as: `USER[:GROUP]` (`herd run --user`, the image's
//! `User`) resolved in the container's own `/etc/passwd` and `/etc/group`, as Docker does it
//! (moby's `getUser` over libcontainer's `GetExecUser`):
//!
//! - a user name must be in `passwd`; a number need not be (then its group is 0);
//! - without a group, the user's primary group from `passwd`, and as supplementary groups
//!   every group of `/etc/group` that lists the user by name;
//! - with a group (name from `/etc/group`, or a number that need not be there), that group
//!   and no supplementary ones;
//! - the primary group is always among the supplementary groups too (moby does so since
//!   GHSA-rc4r-wh2q-q6c4, so that dropping a supplementary group cannot gain access).
//!
//! `HOME` comes from runc, which looks the uid up in the same `passwd` when the environment
//! has none (`/` otherwise).
//!
//! The files are read on the node from the container's mounted root filesystem, which is the
//! container's to write: they are opened with `openat2(RESOLVE_IN_ROOT)` (a symlink cannot
//! lead out of the root), only as regular files, and only up to [`MAX_FILE`] bytes.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use herd_proto::process::{UserSpec, numeric_id};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// The largest `/etc/passwd` or `/etc/group` read.
pub const MAX_FILE: u64 = 16 << 20;

/// What the container's process is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one first.
    pub additional_gids: Vec<u32>,
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// The entries of a `passwd` file; comments, blank and malformed lines are skipped.
fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter(|l| !l.trim_start().starts_with('#')).filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next().filter(|n| !n.is_empty())?;
        let _password = f.next()?;
        let uid = numeric_id(f.next()?)?;
        let gid = numeric_id(f.next()?)?;
        Some(PasswdEntry { name, uid, gid })
    })
}

/// The entries of a `group` file; comments, blank and malformed lines are skipped.
fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter(|l| !l.trim_start().starts_with('#')).filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next().filter(|n| !n.is_empty())?;
        let _password = f.next()?;
        let gid = numeric_id(f.next()?)?;
        let members = f.next().unwrap_or("").split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
        Some(GroupEntry { name, gid, members })
    })
}

/// Resolves `spec` against the container's `passwd` and `group` files (`None`: missing).
pub fn resolve(spec: &UserSpec, passwd: Option<&str>, group: Option<&str>) -> Result<Identity, String> {
    let found = passwd.and_then(|text| {
        passwd_entries(text).find(|e| match spec.uid() {
            Some(uid) => e.uid == uid,
            None => e.name == spec.user,
        })
    });
    let (uid, mut gid, matched_name) = match (&found, spec.uid()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name)),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) => {
            return Err(format!(
                "unable to find user {}: no matching entry in the container's /etc/passwd{}",
                spec.user,
                if passwd.is_none() { " (it has none)" } else { "" }
            ));
        }
    };
    let mut sgids = Vec::new();
    match &spec.group {
        Some(wanted) => {
            let by_number = numeric_id(wanted);
            let entry = group.and_then(|text| {
                group_entries(text).find(|g| match by_number {
                    Some(n) => g.gid == n,
                    None => g.name == wanted,
                })
            });
            gid = match (entry, by_number) {
                (Some(g), _) => g.gid,
                (None, Some(n)) => n,
                (None, None) => {
                    return Err(format!(
                        "unable to find group {wanted}: no matching entry in the container's /etc/group{}",
                        if group.is_none() { " (it has none)" } else { "" }
                    ));
                }
            };
        }
        None => {
            if let (Some(name), Some(text)) = (matched_name, group) {
                sgids = group_entries(text).filter(|g| g.members.contains(&name)).map(|g| g.gid).collect();
            }
        }
    }
    let mut additional_gids = vec![gid];
    for g in sgids {
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    Ok(Identity { uid, gid, additional_gids })
}

/// Reads `path` (relative, e.g. `etc/passwd`) inside `rootfs` as the container would see it:
/// symlinks are followed within the root only. `None` when it does not exist.
pub fn read_in_root(rootfs: &Path, path: &str) -> anyhow::Result<Option<String>> {
    let root = std::fs::File::open(rootfs).map_err(|e| anyhow::anyhow!("opening {}: {e}", rootfs.display()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd: OwnedFd = match openat2(root.as_fd(), path, how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => return Ok(None),
        Err(e) => anyhow::bail!("opening the container's /{path}: {e}"),
    };
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        anyhow::bail!("the container's /{path} is not a regular file");
    }
    if meta.len() > MAX_FILE {
        anyhow::bail!("the container's /{path} is larger than {} MiB", MAX_FILE >> 20);
    }
    let mut bytes = Vec::new();
    file.by_ref().take(MAX_FILE).read_to_end(&mut bytes)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Resolves `user` (`USER[:GROUP]`; empty: root) in the container whose root filesystem is
/// mounted at `rootfs`.
pub fn resolve_in(rootfs: &Path, user: &str) -> anyhow::Result<Identity> {
    if user.is_empty() {
        return Ok(Identity { uid: 0, gid: 0, additional_gids: vec![0] });
    }
    let spec = UserSpec::parse(user).map_err(|e| anyhow::anyhow!(e.0))?;
    let passwd = read_in_root(rootfs, "etc/passwd")?;
    let group = read_in_root(rootfs, "etc/group")?;
    resolve(&spec, passwd.as_deref(), group.as_deref()).map_err(anyhow::Error::msg)
}

/// Sets the process user of a runtime config.
pub fn apply(config: &mut oci_spec::runtime::Spec, id: &Identity) {
    let mut user = oci_spec::runtime::User::default();
    user.set_uid(id.uid);
    user.set_gid(id.gid);
    user.set_additional_gids(Some(id.additional_gids.clone()));
    if let Some(process) = config.process_mut().as_mut() {
        process.set_user(user);
    }
}

/// Resolves the user of the container whose bundle is at `bundle` and root filesystem at
/// `rootfs` again and writes it into the bundle's `config.json` (for a container whose config
/// was written before its root filesystem was there: a migration's destination).
pub fn update_config(bundle: &Path, rootfs: &Path, user: &str) -> anyhow::Result<()> {
    let path = bundle.join("config.json");
    let mut config: oci_spec::runtime::Spec = serde_json::from_slice(&std::fs::read(&path)?)?;
    apply(&mut config, &resolve_in(rootfs, user)?);
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken:x:notanumber:1::/:
postgres:x:104:111:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash
redis:x:105:112::/var/lib/redis:/usr/sbin/nologin
";
    const GROUP: &str = "\
root:x:0:
ssl-cert:x:110:postgres
postgres:x:111:
redis:x:112:
audio:x:29:redis, postgres
staff:x:50:
";

    fn id(spec: &str) -> Result<Identity, String> {
        resolve(&UserSpec::parse(spec).unwrap(), Some(PASSWD), Some(GROUP))
    }

    fn ident(uid: u32, gid: u32, additional: &[u32]) -> Identity {
        Identity { uid, gid, additional_gids: additional.to_vec() }
    }

    #[test]
    fn names_resolve_with_their_groups() {
        assert_eq!(id("postgres").unwrap(), ident(104, 111, &[111, 110, 29]));
        assert_eq!(id("redis").unwrap(), ident(105, 112, &[112, 29]));
        assert_eq!(id("root").unwrap(), ident(0, 0, &[0]));
        // A uid in passwd is the user of that line, with its groups.
        assert_eq!(id("104").unwrap(), ident(104, 111, &[111, 110, 29]));
    }

    #[test]
    fn an_explicit_group_replaces_the_groups() {
        assert_eq!(id("postgres:staff").unwrap(), ident(104, 50, &[50]));
        assert_eq!(id("postgres:0").unwrap(), ident(104, 0, &[0]));
        assert_eq!(id("redis:4242").unwrap(), ident(105, 4242, &[4242]));
        assert_eq!(id("1000:staff").unwrap(), ident(1000, 50, &[50]));
    }

    #[test]
    fn unknown_numbers_are_allowed_and_names_are_not() {
        assert_eq!(id("1000").unwrap(), ident(1000, 0, &[0]));
        assert_eq!(id("1000:1000").unwrap(), ident(1000, 1000, &[1000]));
        let err = id("nobody").unwrap_err();
        assert_eq!(err, "unable to find user nobody: no matching entry in the container's /etc/passwd");
        let err = id("postgres:wheel").unwrap_err();
        assert_eq!(err, "unable to find group wheel: no matching entry in the container's /etc/group");
        // Without the files, only numbers.
        let none = |s: &str| resolve(&UserSpec::parse(s).unwrap(), None, None);
        assert_eq!(none("7:8").unwrap(), ident(7, 8, &[8]));
        assert!(none("postgres").unwrap_err().contains("(it has none)"));
        assert!(none("0:staff").unwrap_err().contains("unable to find group staff"));
        // A malformed line matches nothing.
        assert!(id("broken").is_err());
    }

    #[test]
    fn files_are_read_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, "evil:x:0:0::/:\n").unwrap();
        // An absolute symlink is resolved inside the root, where it points at nothing.
        std::os::unix::fs::symlink(&outside, root.join("etc/passwd")).unwrap();
        assert_eq!(read_in_root(&root, "etc/passwd").unwrap(), None);
        // A relative one cannot climb out either.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../secret", root.join("etc/passwd")).unwrap();
        assert_eq!(read_in_root(&root, "etc/passwd").unwrap(), None);
        // A fifo is refused without blocking; a regular file is read.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(&root.join("etc/passwd"), Mode::from_bits_truncate(0o644)).unwrap();
        let err = read_in_root(&root, "etc/passwd").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::fs::write(root.join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(root.join("etc/group"), GROUP).unwrap();
        assert_eq!(resolve_in(&root, "postgres").unwrap(), ident(104, 111, &[111, 110, 29]));
        assert_eq!(resolve_in(&root, "").unwrap(), ident(0, 0, &[0]));
        assert_eq!(read_in_root(&root, "etc/missing").unwrap(), None);
    }
}
