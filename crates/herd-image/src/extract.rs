//! Unpacking one layer blob into a directory that overlayfs stacks as a lower layer, turning OCI
//! whiteout files into overlayfs whiteouts, and never writing outside that directory.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use herd_proto::state::Compression;
use tar::EntryType;

use crate::bounds::{DiskReserve, Meter, Metered, UnpackLimits, charge_entry};
use crate::compress::{Sniffed, decoder, sniff};
use crate::error::ImageError;
use crate::tarwalk::{Entry, copy_data, corrupt, normalize, walk_tar};

/// The extended attribute overlayfs reads to make a directory hide the directories of the same
/// name in lower layers (set to `y`).
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const OPAQUE: &CStr = c"trusted.overlay.opaque";

/// Prefix of an OCI whiteout file name.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Prefix of AUFS metadata names, `.wh..wh.`.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
/// What follows [`WHITEOUT_PREFIX`] in the name of an OCI opaque-directory marker, `.wh..wh..opq`.
const OPAQUE_MARKER: &[u8] = b".wh..opq";

/// Unpacks one layer blob into `dest` (which must exist and be empty) for use as an overlayfs
/// lower layer.
///
/// - The blob is decompressed per `compression` (a blob whose magic bytes say otherwise is an
///   error).
/// - OCI whiteouts become overlayfs ones: `.wh.NAME` becomes a character device 0/0 named
///   `NAME`; `.wh..wh..opq` in a directory sets [`OPAQUE_XATTR`] to `y` on it. A directory that
///   replaces a whiteout of the same layer is made opaque.
/// - Modes (with setuid/setgid/sticky bits), numeric ownership, mtimes, symlinks, hard links
///   (to earlier entries of the layer), FIFOs and the `security.capability` and `user.*`
///   extended attributes are kept. Block and character devices (other than 0/0 whiteouts) are
///   skipped: containers get their devices from the runtime.
/// - Absolute entry paths are taken relative to `dest`; a path or hard-link target that climbs
///   out with `..` is [`ImageError::PathEscape`], as is an entry below a symlink (say `a ->
///   /etc` then `a/passwd`): extraction never follows a symlink. Symlink targets are stored as
///   they are; they only mean something inside the container.
///
/// On error, `dest` holds part of the layer; the caller removes it.
pub fn extract_layer(blob: &Path, compression: Compression, dest: &Path) -> Result<(), ImageError> {
    extract_layer_within(blob, compression, dest, &LayerBounds::default())
}

/// What unpacking one layer may cost: the most it may unpack to (see [`crate::bounds`] for how
/// that is counted) and the free space to keep on the filesystem unpacked onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBounds {
    pub max_size: u64,
    pub reserve: Option<DiskReserve>,
}

impl Default for LayerBounds {
    /// No bound.
    fn default() -> Self {
        LayerBounds { max_size: u64::MAX, reserve: None }
    }
}

/// [`extract_layer`] within `bounds`: unpacking stops with [`ImageError::TooLarge`] once the
/// layer unpacks to more than `bounds.max_size`, or with [`ImageError::DiskReserve`] once the
/// filesystem's free space falls below the reserve (looked at every few MiB).
///
/// On error, `dest` holds part of the layer (never more than the bound); the caller removes it.
pub fn extract_layer_within(
    blob: &Path,
    compression: Compression,
    dest: &Path,
    bounds: &LayerBounds,
) -> Result<(), ImageError> {
    check_destination(dest)?;
    let what = format!("layer blob {}", blob.display());
    let mut file = File::open(blob).map_err(ImageError::io("open layer blob", blob))?;
    let mut head = Vec::with_capacity(8);
    (&mut file).take(8).read_to_end(&mut head).map_err(ImageError::io("read layer blob", blob))?;
    let sniffed = sniff(&head);
    if sniffed != Sniffed::Known(compression) && !head.is_empty() {
        let actual = match sniffed {
            Sniffed::Known(c) => format!("{c:?}").to_lowercase(),
            Sniffed::Unsupported(format) => format.to_string(),
        };
        let said = format!("{compression:?}").to_lowercase();
        return Err(ImageError::Corrupt {
            what,
            reason: format!("its layer record says compression {said} but the blob's content is {actual}"),
        });
    }
    let file = File::open(blob).map_err(ImageError::io("open layer blob", blob))?;
    let meter = Meter::new(&UnpackLimits { layer: bounds.max_size, image: u64::MAX }, 0, bounds.reserve.clone());
    let reader = Metered { inner: decoder(file, compression).map_err(|e| corrupt(&what, &e))?, meter: meter.clone() };
    let mut extractor = Extractor { blob, dest, what: &what, dirs: HashMap::new(), whiteouts: HashSet::new() };
    walk_tar(reader, &what, false, |entry| {
        if !charge_entry(&meter, entry) {
            return Err(corrupt(&what, &io::Error::other("over an unpack bound")));
        }
        extractor.entry(entry)
    })
    .map_err(|e| meter.explain(&what, e))?;
    extractor.finish()
}

fn check_destination(dest: &Path) -> Result<(), ImageError> {
    let invalid =
        |reason: &str| ImageError::InvalidDestination { path: dest.to_path_buf(), reason: reason.to_string() };
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(invalid("not a directory; extract a layer into an empty directory"));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(invalid("no such directory; create an empty directory to extract the layer into"));
        }
        Err(e) => {
            return Err(ImageError::Io { action: "inspect", path: dest.to_path_buf(), err: e });
        }
    }
    let mut entries = fs::read_dir(dest).map_err(ImageError::io("list", dest))?;
    if entries.next().is_some() {
        return Err(invalid("the directory is not empty; extract each layer into a new empty directory"));
    }
    Ok(())
}

/// Ownership, mode, mtime and extended attributes of an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// What [`Extractor::clear`] found at an entry's path.
#[derive(PartialEq, Eq)]
enum Cleared {
    /// Nothing (any previous non-directory, or directory when a non-directory comes, was removed).
    Free,
    /// A directory, kept for a directory entry (the entries merge).
    Directory,
    /// A whiteout of this layer, removed.
    Whiteout,
}

struct Extractor<'a> {
    blob: &'a Path,
    dest: &'a Path,
    what: &'a str,
    /// Directories by path relative to `dest`; their metadata is applied at the end, once
    /// nothing more is created inside them.
    dirs: HashMap<PathBuf, Meta>,
    /// Whiteout devices this layer created, by path relative to `dest`.
    whiteouts: HashSet<PathBuf>,
}

impl Extractor<'_> {
    fn entry<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry.path().map_err(|e| corrupt(self.what, &e))?.into_owned();
        let rel = normalize(&raw).ok_or_else(|| self.escape(&raw, "climbs out of the layer with `..`"))?;
        let kind = entry.header().entry_type();

        // AUFS bookkeeping directories (`.wh..wh.plnk/...`) are no part of the image.
        let in_aufs_meta = rel
            .parent()
            .is_some_and(|parent| parent.components().any(|c| c.as_os_str().as_bytes().starts_with(AUFS_META_PREFIX)));
        if in_aufs_meta {
            return Ok(());
        }
        if let Some(name) = rel.file_name().and_then(|n| n.as_bytes().strip_prefix(WHITEOUT_PREFIX)) {
            return self.whiteout(&rel, &raw, name);
        }
        if rel.as_os_str().is_empty() && kind != EntryType::Directory {
            return Err(self.corrupt(format!("entry {:?} names the layer root but is not a directory", raw)));
        }
        match kind {
            EntryType::Directory => self.directory(rel, entry),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => self.file(&rel, &raw, entry),
            EntryType::Symlink => self.symlink(&rel, &raw, entry),
            EntryType::Link => self.hard_link(&rel, &raw, entry),
            EntryType::Fifo => self.fifo(&rel, &raw, entry),
            EntryType::Char => {
                let header = entry.header();
                let major = header.device_major().map_err(|e| corrupt(self.what, &e))?;
                let minor = header.device_minor().map_err(|e| corrupt(self.what, &e))?;
                if major.unwrap_or(0) == 0 && minor.unwrap_or(0) == 0 {
                    // Already an overlayfs whiteout.
                    self.make_parents(&rel, &raw)?;
                    self.clear(&rel)?;
                    self.create_whiteout(&rel)
                } else {
                    Ok(())
                }
            }
            // Devices, PAX global headers and unknown types: nothing to create.
            _ => Ok(()),
        }
    }

    /// `.wh.NAME` (here `name` is `NAME`) in the directory of `rel`.
    fn whiteout(&mut self, rel: &Path, raw: &Path, name: &[u8]) -> Result<(), ImageError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if name == OPAQUE_MARKER {
            self.make_parents(rel, raw)?;
            return set_xattr(&self.dest.join(parent), OPAQUE, b"y");
        }
        if name.starts_with(WHITEOUT_PREFIX) {
            return Ok(()); // other AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs)
        }
        if name.is_empty() || name == b"." || name == b".." {
            return Err(self.corrupt(format!("whiteout {raw:?} names no file")));
        }
        self.make_parents(rel, raw)?;
        let target = parent.join(OsStr::from_bytes(name));
        match fs::symlink_metadata(self.dest.join(&target)) {
            // This layer has the file itself, which hides the lower layers' one as well.
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.create_whiteout(&target),
            Err(e) => Err(ImageError::Io { action: "inspect", path: self.dest.join(&target), err: e }),
        }
    }

    fn create_whiteout(&mut self, rel: &Path) -> Result<(), ImageError> {
        let path = self.dest.join(rel);
        let c = c_path(&path)?;
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) } != 0 {
            return Err(ImageError::Io { action: "create whiteout device", path, err: io::Error::last_os_error() });
        }
        self.whiteouts.insert(rel.to_path_buf());
        Ok(())
    }

    fn directory<R: Read>(&mut self, rel: PathBuf, entry: &mut Entry<'_, R>) -> Result<(), ImageError> {
        let meta = self.meta(entry)?;
        if !rel.as_os_str().is_empty() {
            let raw = entry.path().map_err(|e| corrupt(self.what, &e))?.into_owned();
            self.make_parents(&rel, &raw)?;
            let cleared = self.clear_for(&rel, true)?;
            if cleared != Cleared::Directory {
                self.create_dir(&rel)?;
            }
            if cleared == Cleared::Whiteout {
                // The layer deletes the lower directory and makes a new one.
                set_xattr(&self.dest.join(&rel), OPAQUE, b"y")?;
            }
        }
        self.dirs.insert(rel, meta);
        Ok(())
    }

    fn file<R: Read>(&mut self, rel: &Path, raw: &Path, entry: &mut Entry<'_, R>) -> Result<(), ImageError> {
        let meta = self.meta(entry)?;
        self.make_parents(rel, raw)?;
        self.clear(rel)?;
        let path = self.dest.join(rel);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(ImageError::io("create", &path))?;
        copy_data(entry, &mut file, |e| corrupt(self.what, &e), &path)?;
        std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid)).map_err(ImageError::io("chown", &path))?;
        // After chown, which clears setuid and setgid bits.
        file.set_permissions(Permissions::from_mode(meta.mode)).map_err(ImageError::io("chmod", &path))?;
        for (name, value) in &meta.xattrs {
            set_xattr(&path, name, value)?;
        }
        let time = mtime(meta.mtime);
        file.set_times(FileTimes::new().set_accessed(time).set_modified(time))
            .map_err(ImageError::io("set times of", &path))
    }

    fn symlink<R: Read>(&mut self, rel: &Path, raw: &Path, entry: &mut Entry<'_, R>) -> Result<(), ImageError> {
        let meta = self.meta(entry)?;
        let target = self.link_name(entry, raw)?;
        self.make_parents(rel, raw)?;
        self.clear(rel)?;
        let path = self.dest.join(rel);
        std::os::unix::fs::symlink(&target, &path).map_err(ImageError::io("create symlink", &path))?;
        std::os::unix::fs::lchown(&path, Some(meta.uid), Some(meta.gid)).map_err(ImageError::io("chown", &path))?;
        set_mtime_nofollow(&path, meta.mtime)
    }

    fn hard_link<R: Read>(&mut self, rel: &Path, raw: &Path, entry: &mut Entry<'_, R>) -> Result<(), ImageError> {
        let target_raw = self.link_name(entry, raw)?;
        let target_rel = normalize(&target_raw).ok_or_else(|| {
            self.escape(raw, &format!("is a hard link to {target_raw:?}, which climbs out of the layer"))
        })?;
        let not_earlier = || {
            self.corrupt(format!(
                "hard link {raw:?} points to {target_raw:?}, which is not an earlier file of the layer"
            ))
        };
        if target_rel.as_os_str().is_empty() {
            return Err(not_earlier());
        }
        self.check_parents(&target_rel, raw)?;
        let target = self.dest.join(&target_rel);
        match fs::symlink_metadata(&target) {
            Ok(m) if !m.is_dir() => {}
            Ok(_) => return Err(not_earlier()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_earlier()),
            Err(e) => {
                return Err(ImageError::Io { action: "inspect", path: target, err: e });
            }
        }
        if target_rel == rel {
            return Ok(());
        }
        self.make_parents(rel, raw)?;
        self.clear(rel)?;
        let path = self.dest.join(rel);
        // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        fs::hard_link(&target, &path).map_err(ImageError::io("create hard link", &path))
    }

    fn fifo<R: Read>(&mut self, rel: &Path, raw: &Path, entry: &mut Entry<'_, R>) -> Result<(), ImageError> {
        let meta = self.meta(entry)?;
        self.make_parents(rel, raw)?;
        self.clear(rel)?;
        let path = self.dest.join(rel);
        let c = c_path(&path)?;
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(ImageError::Io { action: "create fifo", path, err: io::Error::last_os_error() });
        }
        self.apply(&path, &meta)
    }

    /// Applies the metadata of directories, deepest last-modified times included.
    fn finish(self) -> Result<(), ImageError> {
        for (rel, meta) in &self.dirs {
            self.apply(&self.dest.join(rel), meta)?;
        }
        Ok(())
    }

    /// Sets ownership, mode, extended attributes and mtime of a directory or fifo.
    fn apply(&self, path: &Path, meta: &Meta) -> Result<(), ImageError> {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).map_err(ImageError::io("chown", path))?;
        fs::set_permissions(path, Permissions::from_mode(meta.mode)).map_err(ImageError::io("chmod", path))?;
        for (name, value) in &meta.xattrs {
            set_xattr(path, name, value)?;
        }
        set_mtime_nofollow(path, meta.mtime)
    }

    /// Makes every directory above `rel` exist as a real directory. A symlink on the way is an
    /// escape (extraction never follows one); a whiteout of this layer on the way becomes an
    /// opaque directory.
    fn make_parents(&mut self, rel: &Path, raw: &Path) -> Result<(), ImageError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut dir = PathBuf::new();
        for component in parent.components() {
            dir.push(component);
            let path = self.dest.join(&dir);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.escape(raw, &format!("is below {:?}, a symlink", dir)));
                }
                Ok(_) if self.whiteouts.remove(&dir) => {
                    fs::remove_file(&path).map_err(ImageError::io("remove", &path))?;
                    self.create_dir(&dir)?;
                    set_xattr(&path, OPAQUE, b"y")?;
                }
                Ok(_) => {
                    return Err(self.corrupt(format!("entry {raw:?} is below {dir:?}, which is not a directory")));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.create_dir(&dir)?,
                Err(e) => {
                    return Err(ImageError::Io { action: "inspect", path, err: e });
                }
            }
        }
        Ok(())
    }

    /// Checks the directories above `rel` exist and are no symlinks, creating nothing.
    fn check_parents(&self, rel: &Path, raw: &Path) -> Result<(), ImageError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut dir = PathBuf::new();
        for component in parent.components() {
            dir.push(component);
            match fs::symlink_metadata(self.dest.join(&dir)) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.escape(raw, &format!("is a hard link below {:?}, a symlink", dir)));
                }
                _ => {
                    return Err(self.corrupt(format!(
                        "hard link {raw:?} points below {dir:?}, which is not an earlier directory of the layer"
                    )));
                }
            }
        }
        Ok(())
    }

    fn create_dir(&self, rel: &Path) -> Result<(), ImageError> {
        let path = self.dest.join(rel);
        fs::create_dir(&path).map_err(ImageError::io("create directory", &path))?;
        // Directories the layer does not list get the usual mode, whatever the umask.
        fs::set_permissions(&path, Permissions::from_mode(0o755)).map_err(ImageError::io("chmod", &path))
    }

    /// Frees the path of a non-directory entry.
    fn clear(&mut self, rel: &Path) -> Result<Cleared, ImageError> {
        self.clear_for(rel, false)
    }

    /// Frees the path of an entry: removes what is there, except a directory when a directory
    /// comes (they merge).
    fn clear_for(&mut self, rel: &Path, is_dir: bool) -> Result<Cleared, ImageError> {
        let path = self.dest.join(rel);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Cleared::Free),
            Err(e) => Err(ImageError::Io { action: "inspect", path, err: e }),
            Ok(m) if m.is_dir() && is_dir => Ok(Cleared::Directory),
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&path).map_err(ImageError::io("remove", &path))?;
                self.dirs.retain(|d, _| !d.starts_with(rel));
                self.whiteouts.retain(|w| !w.starts_with(rel));
                Ok(Cleared::Free)
            }
            Ok(_) => {
                fs::remove_file(&path).map_err(ImageError::io("remove", &path))?;
                Ok(if self.whiteouts.remove(rel) { Cleared::Whiteout } else { Cleared::Free })
            }
        }
    }

    fn meta<R: Read>(&self, entry: &mut Entry<'_, R>) -> Result<Meta, ImageError> {
        let header = entry.header();
        let err = |e: io::Error| corrupt(self.what, &e);
        let id = |value: u64, field: &str| {
            u32::try_from(value).map_err(|_| self.corrupt(format!("{field} {value} is out of range")))
        };
        let uid = id(header.uid().map_err(err)?, "uid")?;
        let gid = id(header.gid().map_err(err)?, "gid")?;
        let mode = header.mode().map_err(err)? & 0o7777;
        let mtime = header.mtime().map_err(err)?;
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(err)? {
            for extension in extensions {
                let extension = extension.map_err(err)?;
                let Ok(key) = extension.key() else { continue };
                let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
                    continue;
                };
                // Never trusted.* (overlayfs reads trusted.overlay.*) nor security labels.
                if (name == "security.capability" || name.starts_with("user."))
                    && let Ok(name) = CString::new(name)
                {
                    xattrs.push((name, extension.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta { uid, gid, mode, mtime, xattrs })
    }

    fn link_name<R: Read>(&self, entry: &Entry<'_, R>, raw: &Path) -> Result<PathBuf, ImageError> {
        match entry.link_name().map_err(|e| corrupt(self.what, &e))? {
            Some(target) if !target.as_os_str().is_empty() => Ok(target.into_owned()),
            _ => Err(self.corrupt(format!("link {raw:?} has no target"))),
        }
    }

    fn escape(&self, raw: &Path, reason: &str) -> ImageError {
        ImageError::PathEscape {
            blob: self.blob.to_path_buf(),
            dest: self.dest.to_path_buf(),
            entry: raw.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn corrupt(&self, reason: String) -> ImageError {
        ImageError::Corrupt { what: self.what.to_string(), reason }
    }
}

fn c_path(path: &Path) -> Result<CString, ImageError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| ImageError::Io {
        action: "use",
        path: path.to_path_buf(),
        err: io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"),
    })
}

fn set_xattr(path: &Path, name: &CStr, value: &[u8]) -> Result<(), ImageError> {
    let c = c_path(path)?;
    // SAFETY: valid NUL-terminated strings, and a buffer with its length.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        let action = if name == OPAQUE { "set trusted.overlay.opaque on" } else { "set extended attribute on" };
        return Err(ImageError::Io { action, path: path.to_path_buf(), err });
    }
    Ok(())
}

fn mtime(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Sets access and modification times without following a symlink.
fn set_mtime_nofollow(path: &Path, secs: u64) -> Result<(), ImageError> {
    let c = c_path(path)?;
    // SAFETY: timespec is plain data; zeroed is a valid value.
    let mut time: libc::timespec = unsafe { std::mem::zeroed() };
    time.tv_sec = libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX);
    let times = [time, time];
    // SAFETY: valid path and a two-element timespec array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc != 0 {
        return Err(ImageError::Io {
            action: "set times of",
            path: path.to_path_buf(),
            err: io::Error::last_os_error(),
        });
    }
    Ok(())
}
