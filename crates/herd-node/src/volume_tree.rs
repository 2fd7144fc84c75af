//! A tree of files as a migration moves it (a named volume, or a container's writable
//! layer): the tree listed with each entry's metadata, which entries changed since the last
//! pass, their content read on the source (written on the destination by
//! [`crate::volume_copy`]), and the checksum of the whole tree that both sides compare before
//! the destination restores ([design note](../../../docs/design/volumes.md)).
//!
//! Nothing here follows a symbolic link: the tree belongs to the container, which may plant
//! links to the node's files in it while it runs. Directories are walked through their file
//! descriptors, and every path is opened beneath the volume's root with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), on both nodes.
//!
//! What is carried: directories, regular files (content, size), symbolic links, hard links
//! between the volume's files, FIFOs and device nodes, each with its mode, owner, group and
//! modification time. Not carried: extended attributes and ACLs, sockets (a process that
//! listens on one recreates it), holes in sparse files (they arrive as zeros).
//!
//! The upper (writable) directory of a container's overlay root moves the same way
//! ([`Layout::Upper`]), with what overlayfs keeps there: whiteouts (character devices 0/0),
//! opaque directories (`trusted.overlay.opaque`), and the extended attributes an image
//! layer keeps (`security.capability`, `user.*`); other devices are left out, as a layer
//! leaves them out, and overlay features a copy cannot carry (redirects, metacopy) are errors.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tree_delta;

/// A file's content digest (SHA-256).
pub type FileDigest = [u8; 32];

/// How far before a scan a change time must lie for the entry to count as settled: a file
/// changed within the same tick of the kernel's coarse clock as it was listed could change
/// again without its times moving, so such an entry is read again in the next pass.
const RACY_NS: i128 = 100_000_000;

/// One directory, file or link of a volume, as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the volume's root, `/`-separated; `""` is the root itself.
    pub path: String,
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_ns: i64,
    /// Extended attributes carried ([`Layout::Upper`] only), by name, values in hex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// What a tree is, which says what of it is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A named volume: its files as they are.
    Volume,
    /// The upper directory of a container's overlay root (see the module's introduction).
    Upper,
}

/// The attribute overlayfs marks an opaque directory with.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    Dir,
    File {
        size: u64,
    },
    Symlink {
        target: String,
    },
    /// Another name of the regular file at `target`, which sorts before it (a hard link).
    Link {
        target: String,
    },
    Fifo,
    Device {
        char: bool,
        rdev: u64,
    },
}

impl Kind {
    /// Entries of different sorts are replaced, not updated.
    fn sort(&self) -> u8 {
        match self {
            Kind::Dir => 0,
            Kind::File { .. } | Kind::Link { .. } => 1,
            Kind::Symlink { .. } => 2,
            Kind::Fifo => 3,
            Kind::Device { .. } => 4,
        }
    }
}

/// What says that an entry changed on the source: any write, chmod, chown, rename onto it or
/// link count change moves its change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub dev: u64,
    pub ino: u64,
    pub size: i64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
}

impl Signature {
    fn of(st: &FileStat) -> Signature {
        Signature {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink,
        }
    }

    fn ctime_ns(&self) -> i128 {
        self.ctime.0 as i128 * 1_000_000_000 + self.ctime.1 as i128
    }
}

/// An entry as a scan found it.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub entry: Entry,
    pub sig: Signature,
}

/// The tree of a volume, by path (a directory sorts before what it holds).
pub type Tree = BTreeMap<String, Scanned>;

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") }
}

/// Splits `a/b/c` into `("a/b", "c")`.
pub(crate) fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", path),
    }
}

fn utf8(name: &OsStr, under: &str) -> anyhow::Result<String> {
    match name.to_str() {
        Some(s) => Ok(s.to_string()),
        None => bail!(
            "the name {:?} in {} is not UTF-8: a migration cannot move such names yet; rename it",
            name,
            if under.is_empty() { "the tree's root" } else { under }
        ),
    }
}

fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Opens `path` beneath `root` without following any symbolic link ("" is the root).
pub(crate) fn open_beneath(root: BorrowedFd, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let path = if path.is_empty() { "." } else { path };
    openat2(root, path, OpenHow::new().flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW).resolve(beneath()))
}

pub(crate) fn open_dir(root: BorrowedFd, path: &str) -> nix::Result<OwnedFd> {
    open_beneath(root, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

/// Opens a volume's root directory (a path the node chose, not the container).
pub fn open_root(dir: &Path) -> anyhow::Result<OwnedFd> {
    nix::fcntl::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty())
        .with_context(|| format!("opening volume {}", dir.display()))
}

fn entry_of(path: String, st: &FileStat, kind: Kind) -> Entry {
    Entry {
        path,
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: st.st_mtime,
        mtime_ns: st.st_mtime_nsec,
        xattrs: BTreeMap::new(),
    }
}

/// A path to `name` in the open directory `dir` that resolves through the descriptor (for the
/// calls that take no directory descriptor, such as the `l*xattr` family).
pub(crate) fn path_in(dir: BorrowedFd, name: &OsStr) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

/// The carried extended attributes of `name` in the directory `dir` of an upper directory.
fn upper_xattrs(dir: BorrowedFd, name: &OsStr) -> anyhow::Result<BTreeMap<String, String>> {
    let attrs = herd_image::UpperAttrs::read(&path_in(dir, name))?;
    let mut out: BTreeMap<String, String> = attrs.kept.into_iter().map(|(n, v)| (n, hex::encode(v))).collect();
    if attrs.opaque {
        out.insert(OPAQUE_XATTR.to_string(), hex::encode(b"y"));
    }
    Ok(out)
}

/// Lists the tree under `root`, never leaving it. Regular files with several names in it
/// become one `File` (the first name) and `Link`s to it.
pub fn scan(root: BorrowedFd, layout: Layout) -> anyhow::Result<Tree> {
    let mut tree = Tree::new();
    let st = fstat(root).context("inspecting the volume's root")?;
    tree.insert(String::new(), Scanned { entry: entry_of(String::new(), &st, Kind::Dir), sig: Signature::of(&st) });
    let mut pending = vec![String::new()];
    while let Some(dir) = pending.pop() {
        let fd = match open_dir(root, &dir) {
            Ok(fd) => fd,
            // Removed or replaced since it was listed (the container runs): the next pass sees it.
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV) => {
                tree.remove(&dir);
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("opening directory {dir:?} of the volume")),
        };
        for name in list_fd(&fd).with_context(|| format!("listing {dir:?}"))? {
            let name = name.as_os_str();
            let name_s = utf8(name, &dir)?;
            let path = join(&dir, &name_s);
            let st = match fstatat(&fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e).with_context(|| format!("inspecting {path:?} in the volume")),
            };
            let kind = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
                SFlag::S_IFDIR => {
                    pending.push(path.clone());
                    Kind::Dir
                }
                SFlag::S_IFREG => Kind::File { size: st.st_size as u64 },
                SFlag::S_IFLNK => match readlinkat(&fd, name) {
                    Ok(t) => Kind::Symlink { target: utf8(&t, &path)? },
                    Err(Errno::ENOENT | Errno::EINVAL) => continue,
                    Err(e) => return Err(e).with_context(|| format!("reading link {path:?}")),
                },
                SFlag::S_IFIFO => Kind::Fifo,
                SFlag::S_IFCHR => Kind::Device { char: true, rdev: st.st_rdev },
                SFlag::S_IFBLK => Kind::Device { char: false, rdev: st.st_rdev },
                // A socket is recreated by the process that listens on it.
                _ => continue,
            };
            let mut entry = entry_of(path, &st, kind);
            if layout == Layout::Upper {
                match entry.kind {
                    // A whiteout.
                    Kind::Device { char: true, rdev: 0 } => {}
                    Kind::Device { .. } => continue,
                    Kind::Symlink { .. } => {}
                    _ => {
                        entry.xattrs = match upper_xattrs(fd.as_fd(), name) {
                            Ok(x) => x,
                            // Gone since listed: the next pass sees it.
                            Err(e)
                                if e.downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error())
                                    == Some(libc::ENOENT) =>
                            {
                                continue;
                            }
                            Err(e) => return Err(e).with_context(|| format!("{:?} of the writable layer", entry.path)),
                        }
                    }
                }
            }
            tree.insert(entry.path.clone(), Scanned { entry, sig: Signature::of(&st) });
        }
    }
    // Hard links: the first name (in path order) carries the content.
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    for (path, s) in tree.iter_mut() {
        if matches!(s.entry.kind, Kind::File { .. }) && s.sig.nlink > 1 {
            match first.get(&(s.sig.dev, s.sig.ino)) {
                Some(target) => s.entry.kind = Kind::Link { target: target.clone() },
                None => {
                    first.insert((s.sig.dev, s.sig.ino), path.clone());
                }
            }
        }
    }
    Ok(tree)
}

/// What the destination holds of an entry, as the source last sent it.
#[derive(Debug, Clone)]
pub struct Known {
    pub entry: Entry,
    pub sig: Signature,
    /// Of a `File`'s content as sent.
    pub digest: Option<FileDigest>,
    /// Of its chunks, for a `File` large enough to be patched when it is sent again.
    pub chunks: Option<Vec<FileDigest>>,
    /// Listed so soon after its last change that it must be read again.
    pub racy: bool,
}

/// What one pass sends: the paths to remove (the topmost of each removed subtree, and entries
/// that became something else), then the entries to create or update, in path order.
#[derive(Debug, Default)]
pub struct Pass {
    pub deleted: Vec<String>,
    pub changed: Vec<Scanned>,
}

/// The changes from `known` (what the destination has) to `now` (the latest scan). Files in
/// `mapped` (device and inode of files the container maps shared and writable, whose times
/// do not move on every write) count as changed.
pub fn plan(known: &BTreeMap<String, Known>, now: &Tree, mapped: &HashSet<(u64, u64)>) -> Pass {
    let mut deleted: Vec<String> = Vec::new();
    for (path, k) in known {
        let gone = match now.get(path) {
            None => true,
            Some(s) => s.entry.kind.sort() != k.entry.kind.sort() || (path.is_empty() && s.entry.kind != Kind::Dir),
        };
        if gone && !path.is_empty() && !deleted.iter().any(|d| path.starts_with(&format!("{d}/"))) {
            deleted.push(path.clone());
        }
    }
    let mut changed: Vec<Scanned> = Vec::new();
    let mut rewritten: HashSet<&str> = HashSet::new();
    for (path, s) in now {
        let differs = match known.get(path) {
            None => true,
            Some(k) => {
                k.racy
                    || k.entry != s.entry
                    || k.sig != s.sig
                    || (matches!(s.entry.kind, Kind::File { .. } | Kind::Link { .. })
                        && mapped.contains(&(s.sig.dev, s.sig.ino)))
            }
        };
        // A file written again is a new inode on the destination: its other names follow.
        let relinked = matches!(&s.entry.kind, Kind::Link { target } if rewritten.contains(target.as_str()));
        if differs || relinked {
            if matches!(s.entry.kind, Kind::File { .. }) {
                rewritten.insert(path.as_str());
            }
            changed.push(s.clone());
        }
    }
    Pass { deleted, changed }
}

/// Whether an entry listed at `listed_ns` (ns since the epoch) changed too shortly before.
pub fn is_racy(sig: &Signature, listed_ns: i128) -> bool {
    sig.ctime_ns() > listed_ns - RACY_NS
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// Records a sent pass in `known`: `digests` are [`read_contents`]'s, `scanned_at` when the
/// pass's scan began (see [`is_racy`]).
pub fn remember(known: &mut BTreeMap<String, Known>, pass: &Pass, read: &HashMap<String, ReadFile>, scanned_at: i128) {
    remove_deleted(known, &pass.deleted);
    for s in &pass.changed {
        let (digest, chunks, moved) = match read.get(&s.entry.path) {
            Some(r) => (Some(r.digest), r.chunks.clone(), r.moved),
            None => (None, None, false),
        };
        let digest = match &s.entry.kind {
            Kind::Link { target } => known.get(target).and_then(|k| k.digest),
            _ => digest,
        };
        let racy = moved || is_racy(&s.sig, scanned_at);
        known.insert(s.entry.path.clone(), Known { entry: s.entry.clone(), sig: s.sig, digest, chunks, racy });
    }
}

/// The files of `changed` to send as patches: those the destination holds in chunks, as the
/// same inode on this side, with the chunk digests of that copy.
pub fn patchable(known: &BTreeMap<String, Known>, changed: &[Scanned]) -> HashMap<String, Vec<FileDigest>> {
    changed
        .iter()
        .filter(|s| matches!(s.entry.kind, Kind::File { size } if tree_delta::chunked(size)))
        .filter_map(|s| {
            let k = known.get(&s.entry.path)?;
            let same_file =
                matches!(k.entry.kind, Kind::File { .. }) && (k.sig.dev, k.sig.ino) == (s.sig.dev, s.sig.ino);
            Some((s.entry.path.clone(), k.chunks.clone().filter(|_| same_file)?))
        })
        .collect()
}

pub(crate) fn remove_deleted<T>(map: &mut BTreeMap<String, T>, deleted: &[String]) {
    for d in deleted {
        let prefix = format!("{d}/");
        map.retain(|p, _| p != d && !p.starts_with(&prefix));
    }
}

/// The checksum of a whole tree: every entry's metadata in path order, with each file's
/// content digest. The same on both nodes when the destination holds what the source has.
pub fn tree_digest<'a>(entries: impl Iterator<Item = (&'a Entry, Option<&'a FileDigest>)>) -> String {
    let mut h = Sha256::new();
    for (e, d) in entries {
        h.update(serde_json::to_vec(e).unwrap_or_default());
        match d {
            Some(d) => h.update(d),
            None => h.update(b"-"),
        }
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// What [`read_contents`] read of one file.
#[derive(Debug, Clone)]
pub struct ReadFile {
    pub digest: FileDigest,
    /// Its chunks' digests, for a file large enough to be patched later ([`tree_delta`]).
    pub chunks: Option<Vec<FileDigest>>,
    /// It changed while it was read: what was missing went as zeros, and it goes again.
    pub moved: bool,
    /// Content bytes written out (all of them, or a patch's changed chunks).
    pub sent: u64,
}

/// Reads the content of the files of `changed` (in order) from the tree at `root` into `out`:
/// whole, or for a file in `patch` (its path, and the chunk digests of the copy the destination
/// holds), as a patch ([`tree_delta`]). A file that changed is sent as far as it goes, padded
/// with zeros, and sent again in the next pass; `strict` (the container is frozen, nothing may
/// change) makes that an error instead. `corrupt` flips a byte after the digest was taken (a
/// test's fault point).
pub fn read_contents(
    root: BorrowedFd,
    changed: &[Scanned],
    patch: &HashMap<String, Vec<FileDigest>>,
    out: &mut impl Write,
    strict: bool,
    mut corrupt: bool,
) -> anyhow::Result<HashMap<String, ReadFile>> {
    let mut read = HashMap::new();
    let mut buf = vec![0u8; 1 << 20];
    for s in changed {
        let Kind::File { size } = s.entry.kind else { continue };
        let path = &s.entry.path;
        let file = match open_beneath(root, path, OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK) {
            Ok(fd) => {
                let st = fstat(&fd)?;
                (st.st_ino == s.sig.ino && st.st_dev == s.sig.dev).then(|| std::fs::File::from(fd))
            }
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR | Errno::EISDIR | Errno::ENXIO | Errno::EXDEV) => None,
            Err(e) => return Err(e).with_context(|| format!("opening {path:?}")),
        };
        let replaced = file.is_none();
        let mut source: Box<dyn Read> = match file {
            Some(f) => Box::new(f),
            None => Box::new(std::io::empty()),
        };
        let got = match patch.get(path) {
            Some(old) => {
                let p = tree_delta::write_patch(&mut source, size, old, out, &mut corrupt)
                    .with_context(|| format!("reading {path:?}"))?;
                ReadFile { digest: p.digest, chunks: Some(p.chunks), moved: p.moved, sent: p.sent }
            }
            None => read_whole(&mut source, size, out, &mut buf, &mut corrupt)
                .with_context(|| format!("reading {path:?}"))?,
        };
        let moved = got.moved || replaced;
        if moved && strict {
            bail!("{path:?} changed while the container was frozen: something else writes to it");
        }
        read.insert(path.clone(), ReadFile { moved, ..got });
    }
    out.flush().context("sending file content")?;
    Ok(read)
}

/// Copies the `size` bytes of `file` to `out` (zeros for what it lacks), digesting them.
fn read_whole(
    file: &mut impl Read,
    size: u64,
    out: &mut impl Write,
    buf: &mut [u8],
    corrupt: &mut bool,
) -> anyhow::Result<ReadFile> {
    let mut h = tree_delta::ContentHasher::new(size);
    let mut moved = false;
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = if moved {
            buf[..want].fill(0);
            want
        } else {
            match file.read(&mut buf[..want]) {
                Ok(0) => {
                    moved = true;
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        h.update(&buf[..n]);
        if std::mem::take(corrupt) {
            buf[0] ^= 0x5a;
        }
        out.write_all(&buf[..n]).context("sending file content")?;
        left -= n as u64;
    }
    let (digest, chunks) = h.finish();
    Ok(ReadFile { digest, chunks, moved, sent: size })
}

/// The names in the open directory `fd` (through its descriptor: the directory listed is
/// the one opened, wherever it has moved since).
pub(crate) fn list_fd(fd: &OwnedFd) -> std::io::Result<Vec<std::ffi::OsString>> {
    use std::os::fd::AsRawFd;
    std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))?.map(|e| e.map(|e| e.file_name())).collect()
}

/// Device and inode of every file that the processes `pids` map shared and writable: their
/// modification time does not move on each write through the mapping.
pub fn mapped_files(pids: &[i32]) -> HashSet<(u64, u64)> {
    let mut out = HashSet::new();
    for pid in pids {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { continue };
        out.extend(parse_shared_writable(&maps).map(|m| (m.dev, m.ino)));
    }
    out
}

/// The paths (as the kernel shows them in `/proc/PID/maps`) of the files on device `dev`
/// that the processes `pids` map shared and writable. A file of an overlay mount shows there
/// with the overlay's device and an inode number of the overlay's, not of its upper copy.
pub fn mapped_paths(pids: &[i32], dev: u64) -> HashSet<String> {
    let mut out = HashSet::new();
    for pid in pids {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { continue };
        out.extend(parse_shared_writable(&maps).filter(|m| m.dev == dev).map(|m| m.path.to_string()));
    }
    out
}

/// A shared, writable mapping of a file.
#[derive(Debug, PartialEq, Eq)]
struct SharedMapping<'a> {
    dev: u64,
    ino: u64,
    path: &'a str,
}

fn parse_shared_writable(maps: &str) -> impl Iterator<Item = SharedMapping<'_>> + '_ {
    maps.lines().filter_map(|line| {
        // Five fields, then the path (which may hold spaces) after padding.
        let mut rest = line;
        let mut fields = [""; 5];
        for f in fields.iter_mut() {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap_or(rest.len());
            (*f, rest) = rest.split_at(end);
        }
        let [_, perms, _, dev, ino] = fields;
        let p = perms.as_bytes();
        if p.len() < 4 || p[1] != b'w' || p[3] != b's' {
            return None;
        }
        let (major, minor) = dev.split_once(':')?;
        let (major, minor) = (u64::from_str_radix(major, 16).ok()?, u64::from_str_radix(minor, 16).ok()?);
        let ino: u64 = ino.parse().ok()?;
        (ino != 0).then(|| SharedMapping {
            dev: libc::makedev(major as u32, minor as u32),
            ino,
            path: rest.trim_start(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume_copy::Received;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn known_of(tree: &Tree) -> BTreeMap<String, Known> {
        tree.iter()
            .map(|(p, s)| {
                (p.clone(), Known { entry: s.entry.clone(), sig: s.sig, digest: None, chunks: None, racy: false })
            })
            .collect()
    }

    /// Copies `src` into `dst` through passes, as a migration does, and returns the bytes of
    /// content each pass sent.
    fn sync(src: &Path, known: &mut BTreeMap<String, Known>, dst: &mut Received) -> u64 {
        let root = open_root(src).unwrap();
        let scanned_at = now_ns();
        let tree = scan(root.as_fd(), dst.layout()).unwrap();
        let pass = plan(known, &tree, &HashSet::new());
        let patch = patchable(known, &pass.changed);
        let patched: HashSet<usize> =
            (0..pass.changed.len()).filter(|&i| patch.contains_key(&pass.changed[i].entry.path)).collect();
        let mut content = Vec::new();
        let read = read_contents(root.as_fd(), &pass.changed, &patch, &mut content, false, false).unwrap();
        let entries: Vec<Entry> = pass.changed.iter().map(|s| s.entry.clone()).collect();
        let written = dst.apply(&pass.deleted, &entries, &patched, &mut &content[..]).unwrap();
        for (path, d) in written {
            assert_eq!(read[&path].digest, d, "{path}");
        }
        remember(known, &pass, &read, scanned_at);
        read.values().map(|r| r.sent).sum()
    }

    fn source_digest(known: &BTreeMap<String, Known>) -> String {
        tree_digest(known.values().map(|k| (&k.entry, k.digest.as_ref())))
    }

    #[test]
    fn passes_carry_the_tree_and_then_only_its_changes() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir_all(s.join("a/b")).unwrap();
        std::fs::write(s.join("a/b/data"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(s.join("top"), b"hello").unwrap();
        std::fs::hard_link(s.join("top"), s.join("a/again")).unwrap();
        symlink("/etc/passwd", s.join("a/escape")).unwrap();
        std::fs::set_permissions(s.join("a"), std::fs::Permissions::from_mode(0o750)).unwrap();
        nix::unistd::mkfifo(&s.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        let mut known = BTreeMap::new();
        let mut received = Received::new(dst.path(), Layout::Volume).unwrap();
        assert_eq!(sync(s, &mut known, &mut received), (3 << 20) + 5);
        // Nothing changed (once the racy entries, written just now, were read again).
        for k in known.values_mut() {
            k.racy = false;
        }
        assert_eq!(sync(s, &mut known, &mut received), 0);
        // A large file written in place goes as a patch: only the chunk that changed.
        let data = std::fs::OpenOptions::new().write(true).open(s.join("a/b/data")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&data, b"patched!", 3 << 19).unwrap();
        assert_eq!(sync(s, &mut known, &mut received), tree_delta::DELTA_CHUNK as u64);
        assert_eq!(std::fs::read(dst.path().join("a/b/data")).unwrap(), std::fs::read(s.join("a/b/data")).unwrap());
        received.settle_directories().unwrap();
        received.verify_on_disk().unwrap();
        assert_eq!(received.digest(), source_digest(&known));
        // Changes: content, a removed subtree, a file that becomes a directory.
        std::fs::write(s.join("top"), b"hello, again").unwrap();
        std::fs::remove_dir_all(s.join("a/b")).unwrap();
        std::fs::remove_file(s.join("fifo")).unwrap();
        std::fs::create_dir(s.join("fifo")).unwrap();
        std::fs::write(s.join("fifo/inside"), b"x").unwrap();
        sync(s, &mut known, &mut received);
        received.settle_directories().unwrap();
        received.verify_on_disk().unwrap();
        assert_eq!(received.digest(), source_digest(&known));
        assert_eq!(std::fs::read(dst.path().join("a/again")).unwrap(), b"hello, again");
        assert!(!dst.path().join("a/b").exists());
        assert_eq!(std::fs::read_link(dst.path().join("a/escape")).unwrap(), Path::new("/etc/passwd"));
        let a = std::fs::metadata(dst.path().join("a")).unwrap();
        assert_eq!(a.permissions().mode() & 0o7777, 0o750);
        assert_eq!(
            a.modified().unwrap(),
            std::fs::metadata(s.join("a")).unwrap().modified().unwrap(),
            "directory times are carried"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(dst.path().join("a/again")).unwrap().ino(),
            std::fs::metadata(dst.path().join("top")).unwrap().ino(),
            "hard links stay links"
        );
    }

    #[test]
    fn a_damaged_byte_changes_the_file_digest() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), b"precious").unwrap();
        let root = open_root(src.path()).unwrap();
        let tree = scan(root.as_fd(), Layout::Volume).unwrap();
        let pass = plan(&BTreeMap::new(), &tree, &HashSet::new());
        let mut content = Vec::new();
        let digests = read_contents(root.as_fd(), &pass.changed, &HashMap::new(), &mut content, true, true).unwrap();
        let entries: Vec<Entry> = pass.changed.iter().map(|s| s.entry.clone()).collect();
        let mut received = Received::new(dst.path(), Layout::Volume).unwrap();
        let written = received.apply(&pass.deleted, &entries, &HashSet::new(), &mut &content[..]).unwrap();
        assert_ne!(written[0].1, digests["f"].digest);
        let mut known = BTreeMap::new();
        remember(&mut known, &pass, &digests, now_ns());
        assert_ne!(received.digest(), source_digest(&known));
    }

    #[test]
    fn changes_are_found_by_signature_mapping_and_racy_times() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"1").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/g"), b"2").unwrap();
        let root = open_root(dir.path()).unwrap();
        let tree = scan(root.as_fd(), Layout::Volume).unwrap();
        let mut known = known_of(&tree);
        assert!(plan(&known, &tree, &HashSet::new()).changed.is_empty());
        let f = &tree["f"].sig;
        let mapped = HashSet::from([(f.dev, f.ino)]);
        let p = plan(&known, &tree, &mapped);
        assert_eq!(p.changed.iter().map(|s| s.entry.path.as_str()).collect::<Vec<_>>(), ["f"]);
        known.get_mut("d/g").unwrap().racy = true;
        assert_eq!(plan(&known, &tree, &HashSet::new()).changed.len(), 1);
        // A removed directory is removed once, at its top.
        std::fs::remove_dir_all(dir.path().join("d")).unwrap();
        let now = scan(root.as_fd(), Layout::Volume).unwrap();
        assert_eq!(plan(&known, &now, &HashSet::new()).deleted, ["d"]);
        assert!(is_racy(f, f.ctime_ns()));
        assert!(!is_racy(f, f.ctime_ns() + 2 * RACY_NS));
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        // SAFETY: NUL-terminated strings and a buffer of `value.len()` bytes.
        let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        assert_eq!(r, 0, "setting {name} on {}: {}", path.display(), std::io::Error::last_os_error());
    }

    fn xattrs_of(path: &Path) -> herd_image::UpperAttrs {
        herd_image::UpperAttrs::read(path).unwrap()
    }

    #[test]
    fn an_upper_directory_moves_with_its_whiteouts_opaque_directories_and_attributes() {
        assert!(herd_image::can_read_trusted_xattrs(), "this test needs root (trusted.* attributes, devices)");
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir_all(s.join("etc/opaque")).unwrap();
        set_xattr(&s.join("etc/opaque"), OPAQUE_XATTR, b"y");
        std::fs::write(s.join("etc/opaque/kept"), b"new").unwrap();
        set_xattr(&s.join("etc/opaque/kept"), "user.herd", b"v1");
        // Overlayfs' bookkeeping stays behind.
        set_xattr(&s.join("etc"), "trusted.overlay.impure", b"y");
        nix::sys::stat::mknod(&s.join("etc/removed"), SFlag::S_IFCHR, Mode::from_bits_truncate(0o600), 0).unwrap();
        nix::sys::stat::mknod(
            &s.join("etc/disk"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            libc::makedev(7, 0),
        )
        .unwrap();

        let mut received = Received::new(dst.path(), Layout::Upper).unwrap();
        let mut known = BTreeMap::new();
        sync(s, &mut known, &mut received);
        let d = dst.path();
        assert_eq!(xattrs_of(&d.join("etc/opaque")), herd_image::UpperAttrs { kept: vec![], opaque: true });
        assert_eq!(
            xattrs_of(&d.join("etc/opaque/kept")).kept,
            [("user.herd".to_string(), b"v1".to_vec())],
            "the file's own attribute"
        );
        assert_eq!(xattrs_of(&d.join("etc")), herd_image::UpperAttrs::default());
        let whiteout = std::fs::symlink_metadata(d.join("etc/removed")).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
        assert!(!d.join("etc/disk").exists(), "a block device was carried");
        received.settle_directories().unwrap();
        received.verify_on_disk().unwrap();
        assert_eq!(received.digest(), source_digest(&known));

        // Attributes that change or go between passes follow.
        let p = std::ffi::CString::new(s.join("etc/opaque").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: NUL-terminated strings.
        assert_eq!(unsafe { libc::lremovexattr(p.as_ptr(), c"trusted.overlay.opaque".as_ptr()) }, 0);
        set_xattr(&s.join("etc/opaque/kept"), "user.herd", b"v2");
        sync(s, &mut known, &mut received);
        assert_eq!(xattrs_of(&d.join("etc/opaque")), herd_image::UpperAttrs::default());
        assert_eq!(xattrs_of(&d.join("etc/opaque/kept")).kept, [("user.herd".to_string(), b"v2".to_vec())]);
        received.settle_directories().unwrap();
        received.verify_on_disk().unwrap();
        assert_eq!(received.digest(), source_digest(&known));

        // What a copy cannot carry is an error naming the entry.
        set_xattr(&s.join("etc/opaque"), "trusted.overlay.redirect", b"/x");
        let err = format!("{:#}", scan(open_root(s).unwrap().as_fd(), Layout::Upper).unwrap_err());
        assert!(err.contains("\"etc/opaque\" of the writable layer") && err.contains("redirect_dir"), "{err}");
    }

    #[test]
    fn shared_writable_mappings_are_found() {
        let maps = "7f00-7f01 rw-s 00000000 fd:01 1234 /data/shm\n\
                    7f01-7f02 r--s 00000000 fd:01 99 /data/ro\n\
                    7f02-7f03 rw-p 00000000 fd:01 98 /data/private\n\
                    7f03-7f04 rw-s 00000000 00:05 0 /dev/zero (deleted)\n";
        let found: Vec<_> = parse_shared_writable(maps).collect();
        assert_eq!(found, [SharedMapping { dev: libc::makedev(0xfd, 1), ino: 1234, path: "/data/shm" }]);
        let spaced = "7f00-7f01 rw-s 00000000 00:2b 77                         /var/lib/my db (deleted)\n";
        assert_eq!(parse_shared_writable(spaced).next().unwrap().path, "/var/lib/my db (deleted)");
    }
}
