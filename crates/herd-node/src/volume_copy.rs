//! The destination's copy of a tree that a migration moves ([`crate::volume_tree`]): each
//! batch's entries created, updated or removed beneath the copy's root without following a
//! link, files written whole or patched ([`crate::tree_delta`]), and the copy checked against
//! what was sent.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, fstatat, mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

use crate::tree_delta;
use crate::volume_tree::{
    Entry, FileDigest, Kind, Layout, OPAQUE_XATTR, list_fd, open_beneath, open_dir, open_root, path_in, remove_deleted,
    scan, split, tree_digest,
};

/// The destination's copy of a volume, received into a staging directory.
pub struct Received {
    root: OwnedFd,
    layout: Layout,
    /// Every entry as received, with the digest of the content written for files.
    pub entries: BTreeMap<String, (Entry, Option<FileDigest>)>,
    /// The chunk digests of the files large enough to be patched ([`tree_delta`]).
    chunks: BTreeMap<String, Vec<FileDigest>>,
}

impl Received {
    /// Starts a copy in `dir`, which must exist and be empty.
    pub fn new(dir: &Path, layout: Layout) -> anyhow::Result<Received> {
        Ok(Received { root: open_root(dir)?, layout, entries: BTreeMap::new(), chunks: BTreeMap::new() })
    }

    /// What the copy is of.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Applies one batch: removes `deleted`, then creates or updates `changed`, reading each
    /// file's content from `content` in order: whole, or a patch of the copy here for the
    /// files whose index is in `patched`. Returns the digests of the files written.
    pub fn apply(
        &mut self,
        deleted: &[String],
        changed: &[Entry],
        patched: &HashSet<usize>,
        content: &mut impl Read,
    ) -> anyhow::Result<Vec<(String, FileDigest)>> {
        for d in deleted {
            check_path(d)?;
            let (parent, name) = split(d);
            let pfd = open_dir(self.root.as_fd(), parent).with_context(|| format!("opening the directory of {d:?}"))?;
            remove_at(pfd.as_fd(), name).with_context(|| format!("removing {d:?}"))?;
        }
        remove_deleted(&mut self.entries, deleted);
        remove_deleted(&mut self.chunks, deleted);
        let mut digests = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        for (i, e) in changed.iter().enumerate() {
            let digest = self
                .apply_one(e, patched.contains(&i), content, &mut buf)
                .with_context(|| format!("writing {:?}", e.path))?;
            if let Some(d) = digest {
                digests.push((e.path.clone(), d));
            }
            let digest = match &e.kind {
                Kind::Link { target } => self.entries.get(target).and_then(|(_, d)| *d),
                _ => digest,
            };
            self.entries.insert(e.path.clone(), (e.clone(), digest));
        }
        Ok(digests)
    }

    fn apply_one(
        &mut self,
        e: &Entry,
        patched: bool,
        content: &mut impl Read,
        buf: &mut [u8],
    ) -> anyhow::Result<Option<FileDigest>> {
        check_xattrs(self.layout, e)?;
        if patched {
            return self.patch_one(e, content).map(Some);
        }
        self.chunks.remove(&e.path);
        let root = self.root.as_fd();
        if e.path.is_empty() {
            if e.kind != Kind::Dir {
                bail!("the volume's root must be a directory");
            }
            set_owner_mode(root, ".", e)?;
            return Ok(None);
        }
        check_path(&e.path)?;
        let (parent, name) = split(&e.path);
        let pfd = open_dir(root, parent).context("opening its directory")?;
        let pfd = pfd.as_fd();
        let existing = match fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e.into()),
        };
        let existing_dir =
            existing.as_ref().is_some_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits());
        if existing.is_some() && !(existing_dir && e.kind == Kind::Dir) {
            remove_at(pfd, name)?;
        }
        let mut digest = None;
        match &e.kind {
            Kind::Dir => {
                if !existing_dir {
                    mkdirat(pfd, name, Mode::from_bits_truncate(0o700))?;
                }
            }
            Kind::File { size } => {
                let fd = nix::fcntl::openat(
                    pfd,
                    name,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )?;
                let mut f = std::fs::File::from(fd);
                let mut h = tree_delta::ContentHasher::new(*size);
                let mut left = *size;
                while left > 0 {
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    content.read_exact(&mut buf[..n]).context("receiving its content")?;
                    h.update(&buf[..n]);
                    f.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                let (d, chunks) = h.finish();
                if let Some(chunks) = chunks {
                    self.chunks.insert(e.path.clone(), chunks);
                }
                digest = Some(d);
            }
            Kind::Symlink { target } => symlinkat(target.as_str(), pfd, name)?,
            Kind::Link { target } => {
                check_path(target)?;
                let (tparent, tname) = split(target);
                let tfd = open_dir(root, tparent).context("opening the directory of the link's target")?;
                linkat(&tfd, tname, pfd, name, AtFlags::empty())?;
                // Same inode: its metadata came with the target.
                return Ok(None);
            }
            Kind::Fifo => mknodat(pfd, name, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)?,
            Kind::Device { char, rdev } => {
                let kind = if *char { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
                mknodat(pfd, name, kind, Mode::from_bits_truncate(0o600), *rdev)?
            }
        }
        set_owner_mode(pfd, name, e)?;
        // After the owner: chown clears security.capability.
        if self.layout == Layout::Upper {
            set_xattrs(pfd, name, e, existing_dir)?;
        }
        Ok(digest)
    }

    /// A file sent again as a patch of the copy here, which an earlier pass wrote.
    fn patch_one(&mut self, e: &Entry, content: &mut impl Read) -> anyhow::Result<FileDigest> {
        let Kind::File { size } = e.kind else { bail!("a patch for an entry that is not a file") };
        let old_size = match self.entries.get(&e.path) {
            Some((Entry { kind: Kind::File { size }, .. }, _)) => *size,
            _ => bail!("a patch for a file that was not sent before"),
        };
        let old = self.chunks.remove(&e.path).context("a patch for a file that was not sent in chunks")?;
        check_path(&e.path)?;
        let fd = open_beneath(self.root.as_fd(), &e.path, OFlag::O_WRONLY).context("opening the copy to patch")?;
        let f = std::fs::File::from(fd);
        let (digest, chunks, _) = tree_delta::apply_patch(&f, old_size, size, &old, content)?;
        self.chunks.insert(e.path.clone(), chunks);
        let (parent, name) = split(&e.path);
        let pfd = open_dir(self.root.as_fd(), parent).context("opening its directory")?;
        set_owner_mode(pfd.as_fd(), name, e)?;
        if self.layout == Layout::Upper {
            set_xattrs(pfd.as_fd(), name, e, true)?;
        }
        Ok(digest)
    }

    /// Gives every directory its modification time back (creating entries moved them),
    /// deepest first.
    pub fn settle_directories(&self) -> anyhow::Result<()> {
        for (path, (e, _)) in self.entries.iter().rev() {
            if e.kind == Kind::Dir {
                let (fd, name) = if path.is_empty() {
                    (nix::unistd::dup(&self.root)?, ".")
                } else {
                    let (parent, name) = split(path);
                    (open_dir(self.root.as_fd(), parent)?, name)
                };
                utimensat(&fd, name, &TimeSpec::UTIME_OMIT, &mtime(e), UtimensatFlags::NoFollowSymlink)
                    .with_context(|| format!("setting the time of {path:?}"))?;
            }
        }
        Ok(())
    }

    /// The checksum of what was received.
    pub fn digest(&self) -> String {
        tree_digest(self.entries.values().map(|(e, d)| (e, d.as_ref())))
    }

    /// Checks that the staging directory holds exactly what was received: the same entries
    /// with the same metadata (the content was checked as it was written).
    pub fn verify_on_disk(&self) -> anyhow::Result<()> {
        let disk = scan(self.root.as_fd(), self.layout)?;
        for (path, (e, _)) in &self.entries {
            match disk.get(path) {
                None => bail!("{path:?} is missing"),
                Some(s) if s.entry != *e => bail!("{path:?} is {:?} on disk, {:?} was sent", s.entry, e),
                Some(_) => {}
            }
        }
        if let Some(extra) = disk.keys().find(|p| !self.entries.contains_key(*p)) {
            bail!("{extra:?} is on disk but was never sent");
        }
        Ok(())
    }
}

fn mtime(e: &Entry) -> TimeSpec {
    TimeSpec::new(e.mtime, e.mtime_ns)
}

/// Owner first (chown clears setuid and setgid), then mode, then time; links themselves.
fn set_owner_mode(dir: BorrowedFd, name: &str, e: &Entry) -> anyhow::Result<()> {
    fchownat(dir, name, Some(Uid::from_raw(e.uid)), Some(Gid::from_raw(e.gid)), AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if !matches!(e.kind, Kind::Symlink { .. }) {
        // fchmodat cannot refuse to follow a link; the entry is not one, and it is ours.
        nix::sys::stat::fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(e.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
    }
    utimensat(dir, name, &TimeSpec::UTIME_OMIT, &mtime(e), UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}

/// Refuses, before anything is written, an attribute that a tree of `layout` does not carry:
/// a volume carries none, a writable layer only what `volume_tree::scan` reads of one.
fn check_xattrs(layout: Layout, e: &Entry) -> anyhow::Result<()> {
    for (name, value) in &e.xattrs {
        let carried = layout == Layout::Upper
            && (herd_image::kept_xattr(name.as_bytes()) || (name == OPAQUE_XATTR && value == &hex::encode(b"y")));
        if !carried {
            bail!("the source sent extended attribute {name:?} (or a value of it) that this copy does not carry");
        }
    }
    Ok(())
}

/// Gives the entry `name` in `dir` the attributes of `e`, removing those it had from an
/// earlier pass (`existed`) and no longer has. Symbolic links carry none.
fn set_xattrs(dir: BorrowedFd, name: &str, e: &Entry, existed: bool) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    if matches!(e.kind, Kind::Symlink { .. } | Kind::Link { .. }) || (e.xattrs.is_empty() && !existed) {
        return Ok(());
    }
    let entry = path_in(dir, OsStr::new(name));
    let path = std::ffi::CString::new(entry.as_os_str().as_bytes())?;
    if existed {
        let had = herd_image::UpperAttrs::read(&entry)?;
        let mut gone: Vec<String> = had.kept.into_iter().map(|(n, _)| n).collect();
        if had.opaque {
            gone.push(OPAQUE_XATTR.to_string());
        }
        for n in gone.iter().filter(|n| !e.xattrs.contains_key(*n)) {
            let cname = std::ffi::CString::new(n.as_str())?;
            // SAFETY: NUL-terminated path and name.
            if unsafe { libc::lremovexattr(path.as_ptr(), cname.as_ptr()) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ENODATA) {
                    return Err(err).with_context(|| format!("removing attribute {n}"));
                }
            }
        }
    }
    for (n, hex_value) in &e.xattrs {
        let value = hex::decode(hex_value).with_context(|| format!("attribute {n}: its value is not hex"))?;
        let cname = std::ffi::CString::new(n.as_str())?;
        // SAFETY: NUL-terminated path and name, and a buffer of `value.len()` bytes.
        if unsafe { libc::lsetxattr(path.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("setting attribute {n}"));
        }
    }
    Ok(())
}

/// Removes `name` in `dir`, a whole directory tree included, without following links.
fn remove_at(dir: BorrowedFd, name: &str) -> anyhow::Result<()> {
    remove_at_os(dir, OsStr::new(name))
}

fn remove_at_os(dir: BorrowedFd, name: &OsStr) -> anyhow::Result<()> {
    let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits() {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
        return Ok(());
    }
    let sub = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for n in list_fd(&sub)? {
        remove_at_os(sub.as_fd(), &n)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(())
}

/// Refuses paths that could leave the volume or name no file.
fn check_path(path: &str) -> anyhow::Result<()> {
    if path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path.split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.len() > 255)
    {
        bail!("unsafe path {path:?} in a volume");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in ["", "/etc", "a/../b", "..", "a//b", "a/./b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        check_path("a/b..c/.d").unwrap();
    }

    #[test]
    fn a_sent_path_through_a_link_is_refused() {
        let dst = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut received = Received::new(dst.path(), Layout::Volume).unwrap();
        let link = Entry {
            path: "l".into(),
            kind: Kind::Symlink { target: outside.path().display().to_string() },
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_ns: 0,
            xattrs: BTreeMap::new(),
        };
        received.apply(&[], &[link], &HashSet::new(), &mut std::io::empty()).unwrap();
        let file = Entry {
            path: "l/planted".into(),
            kind: Kind::File { size: 1 },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_ns: 0,
            xattrs: BTreeMap::new(),
        };
        assert!(received.apply(&[], &[file], &HashSet::new(), &mut &b"x"[..]).is_err());
        assert!(!outside.path().join("planted").exists());
    }

    /// Only the attributes the tree's layout carries are set: none on a volume, and on a
    /// writable layer no overlayfs feature but an opaque directory.
    #[test]
    fn attributes_a_tree_does_not_carry_are_refused() {
        let dir = |path: &str, xattrs: &[(&str, &str)]| Entry {
            path: path.into(),
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_ns: 0,
            xattrs: xattrs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        };
        let volume = tempfile::tempdir().unwrap();
        let mut received = Received::new(volume.path(), Layout::Volume).unwrap();
        let err = received.apply(&[], &[dir("d", &[("user.x", "00")])], &HashSet::new(), &mut std::io::empty());
        assert!(format!("{:#}", err.unwrap_err()).contains("\"user.x\""));
        assert!(!volume.path().join("d").exists());

        let upper = tempfile::tempdir().unwrap();
        let mut received = Received::new(upper.path(), Layout::Upper).unwrap();
        for bad in [("trusted.overlay.redirect", "2f78"), ("trusted.overlay.opaque", "78"), ("security.selinux", "00")]
        {
            let err = received.apply(&[], &[dir("d", &[bad])], &HashSet::new(), &mut std::io::empty());
            assert!(format!("{:#}", err.unwrap_err()).contains(bad.0), "{bad:?}");
            assert!(!upper.path().join("d").exists(), "{bad:?}");
        }
    }
}
