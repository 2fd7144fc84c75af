//! Packing the writable (upper) directory of a container's overlayfs root as an OCI layer, the
//! inverse of [`crate::extract_layer`]: checkpoints save it, restores and migrations unpack it.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::pack::{Node, Packer, context, walk};

/// Prefix of OCI whiteout names.
const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The capability number of `CAP_SYS_ADMIN`.
const CAP_SYS_ADMIN: u32 = 21;
/// Prefix of the extended attributes overlayfs keeps its own state in.
const OVERLAY_PREFIX: &[u8] = b"trusted.overlay.";

/// Writes the overlayfs upper directory `upper` as an uncompressed OCI layer tar to `out`, so
/// that [`extract_layer`](crate::extract_layer) with [`Compression::None`] into an empty
/// directory gives back the same upper directory.
///
/// - Overlayfs whiteouts (character devices 0/0) become empty files `.wh.NAME`; a directory
///   whose [`OPAQUE_XATTR`](crate::OPAQUE_XATTR) is `y` is stored followed by a
///   `DIR/.wh..wh..opq` marker.
/// - Otherwise entries are stored as [`pack_dir`](crate::pack_dir) stores them (relative paths
///   in name order, `upper` itself not an entry, symlinks verbatim, hard links, modes, numeric
///   owners, mtimes), and FIFOs too. The `security.capability` and `user.*` extended
///   attributes are kept as PAX `SCHILY.xattr.` records, the ones `extract_layer` applies;
///   other extended attributes, devices and sockets are dropped. The metadata of `upper`
///   itself is not stored.
/// - Overlay features whose state lives in the upper directory and that a layer cannot carry
///   are errors: `redirect_dir` (`trusted.overlay.redirect`), `metacopy`
///   (`trusted.overlay.metacopy`) and xattr whiteouts. So is a file whose name starts with
///   `.wh.`, which a layer would turn into a whiteout.
///
/// Reading `trusted.*` attributes needs `CAP_SYS_ADMIN`; without it this is an error rather
/// than a layer that silently lost its opaque directories. Nothing may write to `upper` while
/// it is packed (freeze or stop the container): a file that changes is an error naming it.
pub fn pack_upper(upper: &Path, out: impl Write) -> io::Result<()> {
    if !can_read_trusted_xattrs() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "pack {}: reading overlayfs whiteout attributes (trusted.overlay.*) needs \
                 CAP_SYS_ADMIN; run as root",
                upper.display()
            ),
        ));
    }
    let mut packer = Packer::new(out);
    walk(upper, |node| pack_node(&mut packer, node))?;
    packer.finish()
}

fn pack_node<W: Write>(packer: &mut Packer<W>, node: &Node<'_>) -> io::Result<()> {
    let name = node.rel.file_name().unwrap_or_default();
    let file_type = node.meta.file_type();
    let is_whiteout = file_type.is_char_device() && node.meta.rdev() == 0;
    if name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return Err(invalid(
            node.path,
            "its name starts with `.wh.`, which an OCI layer can only hold as a whiteout; \
             rename it",
        ));
    }
    if is_whiteout {
        // Checked before hard links: overlayfs makes whiteouts as links of one shared inode.
        let mut marker = OsString::from(WHITEOUT_PREFIX);
        marker.push(name);
        return packer.empty_file(node, &node.rel.with_file_name(marker), 0o600);
    }
    if !(file_type.is_dir() || file_type.is_file() || file_type.is_symlink() || file_type.is_fifo()) {
        // Other devices and sockets: skipped.
        return Ok(());
    }
    let attrs = UpperAttrs::read(node.path)?;
    if file_type.is_dir() {
        packer.directory(node, &attrs.kept)?;
        if attrs.opaque {
            packer.empty_file(node, &node.rel.join(OPAQUE_MARKER), 0o600)?;
        }
        Ok(())
    } else if file_type.is_file() {
        packer.file(node, &attrs.kept)
    } else if file_type.is_symlink() {
        // Neither security.capability nor user.* can be set on a symlink.
        if packer.hard_link(node)? {
            return Ok(());
        }
        packer.symlink(node)
    } else {
        packer.fifo(node, &attrs.kept)
    }
}

/// Whether a copy of an upper directory keeps the extended attribute `name` (as a layer does):
/// `security.capability` and `user.*`. Overlayfs' own (`trusted.overlay.*`) are read apart.
pub fn kept_xattr(name: &[u8]) -> bool {
    name == b"security.capability" || name.starts_with(b"user.")
}

/// What the extended attributes of an entry of an upper directory say, for a copy of it (a
/// layer, or a migration's copy of the directory): what to keep, and whether a directory is
/// opaque. Overlay features a copy cannot carry are errors (see [`pack_upper`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpperAttrs {
    /// `security.capability` and `user.*`, by name.
    pub kept: Vec<(String, Vec<u8>)>,
    /// `trusted.overlay.opaque` is `y`.
    pub opaque: bool,
}

impl UpperAttrs {
    /// Reads the attributes of `path` (a symlink itself, not its target). Needs
    /// `CAP_SYS_ADMIN` to see `trusted.*` (see [`can_read_trusted_xattrs`]).
    pub fn read(path: &Path) -> io::Result<UpperAttrs> {
        let mut attrs = UpperAttrs { kept: Vec::new(), opaque: false };
        for name in list_xattrs(path)? {
            let bytes = name.as_bytes();
            if let Some(overlay) = bytes.strip_prefix(OVERLAY_PREFIX) {
                attrs.overlay(path, overlay, &name)?;
            } else if kept_xattr(bytes) {
                let Some(text) = name.to_str() else {
                    return Err(invalid(
                        path,
                        &format!(
                            "extended attribute {name:?} has a name that is not UTF-8, which \
                             a layer cannot store"
                        ),
                    ));
                };
                // Gone since listed: nothing to keep.
                if let Some(value) = get_xattr(path, &name)? {
                    attrs.kept.push((text.to_string(), value));
                }
            }
            // Other attributes (security labels, ACLs, trusted.*): not part of a layer.
        }
        Ok(attrs)
    }

    /// Handles `trusted.overlay.NAME`; `name` is `NAME`.
    fn overlay(&mut self, path: &Path, name: &[u8], full: &OsStr) -> io::Result<()> {
        match name {
            b"opaque" => match get_xattr(path, full)?.as_deref() {
                Some(b"y") => self.opaque = true,
                None => {}
                // `x`: a directory holding xattr whiteouts.
                Some(b"x") => return Err(unsupported(path, "xattr whiteouts (opaque=x)")),
                Some(other) => {
                    return Err(invalid(
                        path,
                        &format!(
                            "trusted.overlay.opaque is {:?}, which overlayfs does not write",
                            String::from_utf8_lossy(other)
                        ),
                    ));
                }
            },
            b"redirect" => {
                return Err(unsupported(path, "redirect_dir (trusted.overlay.redirect)"));
            }
            b"metacopy" => return Err(unsupported(path, "metacopy (trusted.overlay.metacopy)")),
            b"whiteout" | b"whiteouts" => {
                return Err(unsupported(path, "xattr whiteouts (trusted.overlay.whiteout)"));
            }
            // origin, impure, nlink, protattr, uuid, ... are overlayfs' bookkeeping about lower
            // and index directories, which a restored upper does without; escaped attributes
            // (`trusted.overlay.overlay.*`) are trusted.* of the container's, which layers
            // never carry.
            _ => {}
        }
        Ok(())
    }
}

fn unsupported(path: &Path, feature: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "{}: the overlay uses {feature}, which a copy of its upper directory cannot carry; \
             mount the overlay without it",
            path.display()
        ),
    )
}

fn invalid(path: &Path, reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {reason}", path.display()))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| invalid(path, "the path contains a NUL byte"))
}

/// The names of the extended attributes of `path` (a symlink itself, not its target).
fn list_xattrs(path: &Path) -> io::Result<Vec<OsString>> {
    let c = c_path(path)?;
    let buf = read_sized(path, "list extended attributes of", |buf, len| {
        // SAFETY: valid NUL-terminated path and a buffer of `len` bytes (null when 0).
        unsafe { libc::llistxattr(c.as_ptr(), buf.cast(), len) }
    })?;
    Ok(buf
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| OsString::from_vec(name.to_vec()))
        .collect())
}

/// The value of the extended attribute `name` of `path`, `None` if it has none.
fn get_xattr(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let c = c_path(path)?;
    let c_name =
        CString::new(name.as_bytes()).map_err(|_| invalid(path, "an extended attribute name contains a NUL byte"))?;
    read_sized(path, "read extended attributes of", |buf, len| {
        // SAFETY: valid NUL-terminated strings and a buffer of `len` bytes (null when 0).
        unsafe { libc::lgetxattr(c.as_ptr(), c_name.as_ptr(), buf.cast(), len) }
    })
}

/// Calls `call` for the size, then with a buffer of that size, until the result fits (the
/// value may grow in between). `None` for `ENODATA`.
fn read_sized(
    path: &Path,
    action: &str,
    mut call: impl FnMut(*mut u8, usize) -> libc::ssize_t,
) -> io::Result<Option<Vec<u8>>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENODATA) {
                return Ok(None);
            }
            return Err(context(err, action, path));
        }
        let mut buf = vec![0u8; size as usize];
        let got = call(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => continue,
            Some(libc::ENODATA) => return Ok(None),
            _ => return Err(context(err, action, path)),
        }
    }
}

/// Whether this process may read `trusted.*` extended attributes: without `CAP_SYS_ADMIN`
/// the kernel hides them instead of failing, so an opaque directory would look like a plain one.
pub fn can_read_trusted_xattrs() -> bool {
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => has_sys_admin(&status).unwrap_or(false),
        // SAFETY: geteuid has no preconditions and cannot fail.
        Err(_) => (unsafe { libc::geteuid() }) == 0,
    }
}

/// Whether the `CapEff` line of a `/proc/PID/status` text has `CAP_SYS_ADMIN`.
fn has_sys_admin(status: &str) -> Option<bool> {
    let hex = status.lines().find_map(|line| line.strip_prefix("CapEff:"))?.trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << CAP_SYS_ADMIN) != 0)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;
    use std::path::PathBuf;

    use super::*;

    fn require_root() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "the pack_upper tests need root (whiteout devices, trusted.* attributes)");
    }

    fn mknod_whiteout(path: &Path) {
        let c = c_path(path).unwrap();
        // SAFETY: valid path.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
        assert_eq!(rc, 0, "mknod {}: {}", path.display(), io::Error::last_os_error());
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        let c = c_path(path).unwrap();
        let name = CString::new(name).unwrap();
        // SAFETY: valid strings and a buffer with its length.
        let rc = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        assert_eq!(rc, 0, "setxattr {}: {}", path.display(), io::Error::last_os_error());
    }

    /// `(path, entry type, data, PAX records)` of one tar entry.
    type Listed = (String, tar::EntryType, Vec<u8>, Vec<(String, Vec<u8>)>);

    /// The entries of a tar.
    fn entries(tar: &[u8]) -> Vec<Listed> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = entry.header().entry_type();
            let mut xattrs = Vec::new();
            if let Some(pax) = entry.pax_extensions().unwrap() {
                for ext in pax {
                    let ext = ext.unwrap();
                    xattrs.push((ext.key().unwrap().to_string(), ext.value_bytes().to_vec()));
                }
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.push((path, kind, data, xattrs));
        }
        out
    }

    fn pack(dir: &Path) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        pack_upper(dir, &mut out)?;
        Ok(out)
    }

    /// An upper directory as overlayfs leaves it: `a` deleted, `d` deleted and made again
    /// (opaque) with `new` in it, `e/z` edited.
    fn upper_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::TempDir::new().unwrap();
        let upper = tmp.path().join("upper");
        fs::create_dir_all(upper.join("d")).unwrap();
        fs::create_dir_all(upper.join("e")).unwrap();
        mknod_whiteout(&upper.join("a"));
        set_xattr(&upper.join("d"), OPAQUE_NAME, b"y");
        // Overlayfs bookkeeping that the layer leaves out.
        set_xattr(&upper.join("e"), "trusted.overlay.impure", b"y");
        fs::write(upper.join("d/new"), "new").unwrap();
        fs::write(upper.join("e/z"), "z2").unwrap();
        set_xattr(&upper.join("e/z"), "trusted.overlay.origin", b"\x00");
        set_xattr(&upper.join("e/z"), "user.note", b"kept");
        (tmp, upper)
    }

    const OPAQUE_NAME: &str = "trusted.overlay.opaque";

    #[test]
    fn whiteouts_and_opaque_directories_become_oci_markers() {
        require_root();
        let (_tmp, upper) = upper_dir();
        let tar = pack(&upper).unwrap();
        let entries = entries(&tar);
        let listed: Vec<(&str, tar::EntryType)> = entries.iter().map(|(p, k, _, _)| (p.as_str(), *k)).collect();
        use tar::EntryType::{Directory, Regular};
        assert_eq!(
            listed,
            [
                (".wh.a", Regular),
                ("d", Directory),
                ("d/.wh..wh..opq", Regular),
                ("d/new", Regular),
                ("e", Directory),
                ("e/z", Regular),
            ]
        );
        assert!(entries[0].2.is_empty() && entries[2].2.is_empty(), "markers are empty");
        // Only user.* (and security.capability) go into the layer, never trusted.*.
        for (path, _, _, xattrs) in &entries {
            let expected: &[(String, Vec<u8>)] =
                if path == "e/z" { &[("SCHILY.xattr.user.note".to_string(), b"kept".to_vec())] } else { &[] };
            assert_eq!(xattrs, expected, "{path}");
        }
        assert_eq!(pack(&upper).unwrap(), tar, "packing is deterministic");
    }

    #[test]
    fn whiteouts_sharing_an_inode_are_not_hard_links() {
        require_root();
        let (_tmp, upper) = upper_dir();
        // Overlayfs makes whiteouts as links of one shared whiteout inode.
        fs::hard_link(upper.join("a"), upper.join("b")).unwrap();
        fs::hard_link(upper.join("a"), upper.join("d/x")).unwrap();
        let entries = entries(&pack(&upper).unwrap());
        for name in [".wh.a", ".wh.b", "d/.wh.x"] {
            let found = entries.iter().find(|(p, ..)| p == name);
            assert!(
                matches!(found, Some((_, tar::EntryType::Regular, data, _)) if data.is_empty()),
                "{name}: {found:?}"
            );
        }
        assert!(entries.iter().all(|(_, k, ..)| *k != tar::EntryType::Link));
    }

    #[test]
    fn overlay_features_a_layer_cannot_carry_are_errors() {
        require_root();
        for (name, value, want) in [
            ("trusted.overlay.redirect", &b"/old"[..], "redirect_dir"),
            ("trusted.overlay.metacopy", &b""[..], "metacopy"),
            (OPAQUE_NAME, &b"x"[..], "xattr whiteouts"),
        ] {
            let (_tmp, upper) = upper_dir();
            set_xattr(&upper.join("e"), name, value);
            let err = pack(&upper).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
            let message = err.to_string();
            assert!(message.contains(want) && message.contains(&*upper.join("e").to_string_lossy()), "{message}");
        }
    }

    #[test]
    fn a_file_named_like_a_whiteout_is_an_error() {
        require_root();
        let (_tmp, upper) = upper_dir();
        fs::write(upper.join("e/.wh.y"), "").unwrap();
        let err = pack(&upper).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("e/.wh.y"), "{err}");
    }

    #[test]
    fn reads_cap_sys_admin_from_proc_status() {
        let status = |eff: &str| format!("Name:\tx\nCapPrm:\t000001ffffffffff\nCapEff:\t{eff}\n");
        assert_eq!(has_sys_admin(&status("000001ffffffffff")), Some(true));
        assert_eq!(has_sys_admin(&status("0000000000200000")), Some(true));
        assert_eq!(has_sys_admin(&status("000001ffffdfffff")), Some(false));
        assert_eq!(has_sys_admin(&status("0000000000000000")), Some(false));
        assert_eq!(has_sys_admin("Name:\tx\n"), None);
    }
}
