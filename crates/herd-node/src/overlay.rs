//! The container's root filesystem: an overlay of the cached read-only image layers and a
//! per-container writable upper layer.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// The layers to stack for an image that may list one layer more than once (bottom first):
/// only the topmost occurrence of each is kept. overlayfs refuses a directory given twice as a
/// lower layer (the mount fails with ELOOP, "Too many symbolic links encountered").
///
/// Why dropping the lower occurrences changes nothing: say layer X is at positions i < j. In
/// an overlay, what a path shows comes from the topmost layer that has it, and a directory
/// merges with the layers below only down to the first layer where it is opaque or whited
/// out. Every name X_i has (file, directory, whiteout, opaque marker) X_j has too, identical,
/// and higher. So a lookup that reaches X_i has passed X_j first: X_j answered any file or
/// whiteout X_i would answer; where X_j's directory is opaque the lookup stopped at X_j; and
/// where it goes on merging, X_i adds no entry that X_j did not already give. The layers
/// between the two may add, change or delete (whiteout) what X has, and X_j sets those paths
/// back exactly as it would when applied a second time, as `docker` applies a layer list in
/// order. Removing X_i therefore leaves every lookup and every directory listing the same.
pub fn distinct_layers(lower_bottom_first: &[PathBuf]) -> Vec<&PathBuf> {
    let mut kept: Vec<&PathBuf> = Vec::with_capacity(lower_bottom_first.len());
    for (i, layer) in lower_bottom_first.iter().enumerate() {
        if !lower_bottom_first[i + 1..].contains(layer) {
            kept.push(layer);
        }
    }
    kept
}

/// Mounts `lower` (bottom layer first, as images list them; a layer listed more than once
/// counts once, see [`distinct_layers`]) under `upper` at `target`.
pub fn mount_overlay(lower_bottom_first: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> anyhow::Result<()> {
    if lower_bottom_first.is_empty() {
        bail!("an image needs at least one layer");
    }
    let lower_bottom_first = distinct_layers(lower_bottom_first);
    for d in [upper, work, target] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if is_mountpoint(target)? {
        return Ok(());
    }
    // overlayfs wants the uppermost lower layer first.
    let lower: Vec<String> = lower_bottom_first.iter().rev().map(|p| p.display().to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if options.len() >= 4000 {
        bail!("too many image layers for one overlay mount ({})", lower.len());
    }
    mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .with_context(|| format!("mounting the overlay root at {}", target.display()))
}

/// Unmounts `target` if something is mounted there.
pub fn unmount(target: &Path) -> anyhow::Result<()> {
    if !is_mountpoint(target)? {
        return Ok(());
    }
    umount2(target, MntFlags::MNT_DETACH).with_context(|| format!("unmounting {}", target.display()))
}

/// Whether `path` is a mount point. `statx` answers that for the path alone (Linux 5.8 and
/// later); `/proc/self/mountinfo`, which lists every mount of the namespace and took 35 ms to
/// read with 3,000 containers' mounts, is the fallback for older kernels.
pub fn is_mountpoint(path: &Path) -> anyhow::Result<bool> {
    match mount_root_attr(path) {
        Ok(Some(is_root)) => Ok(is_root),
        Ok(None) => Ok(mounts_under(path)?.iter().any(|m| m == path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("statx {}", path.display())),
    }
}

/// `STATX_ATTR_MOUNT_ROOT` of `path`, or `None` when the kernel does not report it.
fn mount_root_attr(path: &Path) -> std::io::Result<Option<bool>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: statx writes into `buf`, a plain-data struct for which all-zero is valid, and
    // reads the NUL-terminated `c_path`, which outlives the call.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT;
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c_path.as_ptr(), flags, 0, &mut buf) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let attr = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok((buf.stx_attributes_mask & attr != 0).then_some(buf.stx_attributes & attr != 0))
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    Ok(out)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v as char);
            i += 4;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_layer_keeps_its_topmost_place() {
        let p = |s: &str| PathBuf::from(s);
        let layers = [p("/l/a"), p("/l/b"), p("/l/a"), p("/l/c"), p("/l/b")];
        assert_eq!(distinct_layers(&layers), [&p("/l/a"), &p("/l/c"), &p("/l/b")]);
        let plain = [p("/l/a"), p("/l/b")];
        assert_eq!(distinct_layers(&plain), [&p("/l/a"), &p("/l/b")]);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn root_is_a_mountpoint() {
        assert!(is_mountpoint(Path::new("/")).unwrap());
        assert!(!is_mountpoint(Path::new("/nonexistent/dir")).unwrap());
    }

    #[test]
    fn statx_agrees_with_mountinfo() {
        let dir = tempfile::tempdir().unwrap();
        for path in [Path::new("/"), Path::new("/proc"), Path::new("/sys"), dir.path()] {
            let listed = mounts_under(path).unwrap().iter().any(|m| m == path);
            assert_eq!(mount_root_attr(path).unwrap(), Some(listed), "{}", path.display());
        }
    }
}
