//! `pack_upper` against a real overlayfs mount: a container's changes, saved as a layer and
//! restored with `extract_layer`, give back the same upper directory and the same merged view.
//! Needs root (mounting overlayfs, trusted.* attributes).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use herd_image::{OPAQUE_XATTR, extract_layer, pack_upper};
use herd_proto::state::Compression;
use support::lgetxattr;
use tempfile::TempDir;

/// Fails the test (never skips it) when not root.
fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the pack_upper overlay tests need root (they mount overlayfs): run them as root");
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// An overlayfs mount, unmounted when dropped (even when the test fails).
struct Overlay {
    merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    fn mount(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Overlay {
        for dir in [upper, work, merged] {
            fs::create_dir_all(dir).unwrap();
        }
        let options = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        let (source, target) = (c_path(Path::new("overlay")), c_path(merged));
        let options = CString::new(options).unwrap();
        // SAFETY: valid NUL-terminated strings.
        let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), source.as_ptr(), 0, options.as_ptr().cast()) };
        assert_eq!(rc, 0, "mount overlay at {}: {}", merged.display(), io::Error::last_os_error());
        Overlay { merged: merged.to_path_buf(), mounted: true }
    }

    fn unmount(&mut self) {
        let target = c_path(&self.merged);
        // SAFETY: valid NUL-terminated path.
        let rc = unsafe { libc::umount2(target.as_ptr(), 0) };
        assert_eq!(rc, 0, "unmount {}: {}", self.merged.display(), io::Error::last_os_error());
        self.mounted = false;
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let target = c_path(&self.merged);
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let (c, name) = (c_path(path), CString::new(name).unwrap());
    // SAFETY: valid strings and a buffer with its length.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr {name:?} on {}: {}", path.display(), io::Error::last_os_error());
}

/// The names of the extended attributes of `path`.
fn list_xattrs(path: &Path) -> Vec<String> {
    let c = c_path(path);
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid path and a buffer with its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr {}", path.display());
    buf.truncate(n as usize);
    buf.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8(n.to_vec()).unwrap()).collect()
}

/// How one entry of a tree looks, for comparing trees.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    /// The target's bytes (paths compare by components: `a//b` equals `a/b`).
    Symlink(Vec<u8>),
    Fifo,
    /// An overlayfs whiteout: a character device 0/0.
    Whiteout,
    Other(u32),
}

#[derive(Debug, PartialEq, Eq)]
struct Desc {
    kind: Kind,
    /// Mode bits, owner and mtime; `None` for whiteouts, whose metadata means nothing.
    meta: Option<(u32, u32, u32, i64)>,
    /// The first path (in walk order) of the same inode, for hard links.
    same_as: Option<PathBuf>,
    /// The extended attributes a layer carries, and the opaque marker.
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Everything below `root`, by relative path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Desc> {
    let mut out = BTreeMap::new();
    let mut inodes = HashMap::new();
    snapshot_below(root, Path::new(""), &mut inodes, &mut out);
    out
}

fn snapshot_below(root: &Path, rel: &Path, inodes: &mut HashMap<u64, PathBuf>, out: &mut BTreeMap<PathBuf, Desc>) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel)).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    for name in names {
        let rel = rel.join(name);
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File(fs::read(&path).unwrap())
        } else if ft.is_symlink() {
            Kind::Symlink(fs::read_link(&path).unwrap().into_os_string().into_vec())
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() && meta.rdev() == 0 {
            Kind::Whiteout
        } else {
            Kind::Other(meta.mode())
        };
        let whiteout = kind == Kind::Whiteout;
        let same_as = if meta.nlink() > 1 && !ft.is_dir() && !whiteout {
            Some(inodes.entry(meta.ino()).or_insert(rel.clone()).clone())
        } else {
            None
        };
        let xattrs = list_xattrs(&path)
            .into_iter()
            .filter(|n| n == OPAQUE_XATTR || n == "security.capability" || n.starts_with("user."))
            .map(|n| {
                let value = lgetxattr(&path, &n).unwrap();
                (n, value)
            })
            .collect();
        out.insert(
            rel.clone(),
            Desc {
                kind,
                meta: (!whiteout).then(|| (meta.mode() & 0o7777, meta.uid(), meta.gid(), meta.mtime())),
                same_as,
                xattrs,
            },
        );
        if ft.is_dir() {
            snapshot_below(root, &rel, inodes, out);
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// `security.capability` v2 granting CAP_NET_BIND_SERVICE, effective.
const CAPABILITY: [u8; 20] = [
    0x01, 0, 0, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0, 0x04, 0, 0, // permitted (low word): bit 10
    0, 0, 0, 0, // inheritable (low word)
    0, 0, 0, 0, // permitted (high word)
    0, 0, 0, 0, // inheritable (high word)
];

const LONG_TARGET_LEN: usize = 180;

/// What a container does to its root filesystem, through the merged mount.
fn container_changes(merged: &Path) {
    // A whiteout in the upper directory.
    fs::remove_file(merged.join("a")).unwrap();
    // A whiteout, then an opaque directory in its place.
    fs::remove_dir_all(merged.join("d")).unwrap();
    fs::create_dir(merged.join("d")).unwrap();
    fs::write(merged.join("d/new"), "new").unwrap();
    // A new file with a mode, an owner and extended attributes.
    let c = merged.join("c");
    fs::write(&c, "#!/bin/sh\necho c\n").unwrap();
    std::os::unix::fs::chown(&c, Some(1234), Some(5678)).unwrap();
    fs::set_permissions(&c, fs::Permissions::from_mode(0o755)).unwrap();
    set_xattr(&c, "user.herd", b"checkpointed");
    set_xattr(&c, "security.capability", &CAPABILITY);
    // Symlinks (targets kept byte for byte, long ones too) and hard links, one of them to a
    // copied-up lower file.
    std::os::unix::fs::symlink("b", merged.join("link")).unwrap();
    std::os::unix::fs::symlink("./e//z", merged.join("odd")).unwrap();
    std::os::unix::fs::symlink("l".repeat(LONG_TARGET_LEN), merged.join("long")).unwrap();
    fs::hard_link(&c, merged.join("c-hard")).unwrap();
    fs::hard_link(merged.join("e/z"), merged.join("e/z-hard")).unwrap();
    // A modified lower file, and a FIFO.
    fs::write(merged.join("b"), "b, modified").unwrap();
    let fifo = c_path(&merged.join("p"));
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
}

#[test]
fn a_packed_upper_directory_restores_the_same_overlay() {
    require_root();
    let tmp = TempDir::new().unwrap();
    let p = |name: &str| tmp.path().join(name);
    let lower = p("lower");
    fs::create_dir_all(lower.join("d")).unwrap();
    fs::create_dir_all(lower.join("e")).unwrap();
    for (name, data) in [("a", "a"), ("b", "b"), ("d/x", "x"), ("d/y", "y"), ("e/z", "z")] {
        fs::write(lower.join(name), data).unwrap();
    }

    // The container runs and changes its root.
    let upper = p("upper");
    let mut overlay = Overlay::mount(&lower, &upper, &p("work"), &p("merged"));
    container_changes(&overlay.merged);
    let seen = snapshot(&overlay.merged);
    overlay.unmount();

    // The upper directory holds what the test is about.
    let before = snapshot(&upper);
    assert_eq!(before[Path::new("a")].kind, Kind::Whiteout, "{before:#?}");
    assert_eq!(before[Path::new("d")].xattrs, [(OPAQUE_XATTR.to_string(), b"y".to_vec())], "{before:#?}");
    assert_eq!(names(&upper.join("d")), ["new"]);
    assert_eq!(before[Path::new("c")].meta.map(|(mode, uid, gid, _)| (mode, uid, gid)), Some((0o755, 1234, 5678)));
    assert_eq!(before[Path::new("c-hard")].same_as.as_deref(), Some(Path::new("c")));

    // Checkpoint: pack the upper directory. Restore: extract it into an empty directory.
    let layer = p("upper.tar");
    pack_upper(&upper, fs::File::create(&layer).unwrap()).unwrap();
    let restored = p("restored");
    fs::create_dir(&restored).unwrap();
    extract_layer(&layer, Compression::None, &restored).unwrap();

    let after = snapshot(&restored);
    assert_eq!(after, before);
    // Spelled out, in case both snapshots miss something the same way.
    let c = fs::metadata(restored.join("c")).unwrap();
    assert_eq!((c.permissions().mode() & 0o7777, c.uid(), c.gid()), (0o755, 1234, 5678));
    assert_eq!(fs::metadata(restored.join("c-hard")).unwrap().ino(), c.ino());
    assert_eq!(
        fs::metadata(restored.join("e/z-hard")).unwrap().ino(),
        fs::metadata(restored.join("e/z")).unwrap().ino()
    );
    assert_eq!(lgetxattr(&restored.join("c"), "user.herd").as_deref(), Some(&b"checkpointed"[..]));
    assert_eq!(lgetxattr(&restored.join("c"), "security.capability").as_deref(), Some(&CAPABILITY[..]));
    let whiteout = fs::symlink_metadata(restored.join("a")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert_eq!(lgetxattr(&restored.join("d"), OPAQUE_XATTR).as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read_link(restored.join("odd")).unwrap().as_os_str().as_bytes(), b"./e//z");
    assert!(fs::symlink_metadata(restored.join("p")).unwrap().file_type().is_fifo());

    // The restored container sees what it saw before.
    let mut overlay = Overlay::mount(&lower, &restored, &p("work2"), &p("merged2"));
    let merged = overlay.merged.clone();
    assert_eq!(names(&merged), ["b", "c", "c-hard", "d", "e", "link", "long", "odd", "p"]);
    assert_eq!(fs::read_to_string(merged.join("b")).unwrap(), "b, modified");
    assert_eq!(names(&merged.join("d")), ["new"]);
    assert_eq!(fs::read_to_string(merged.join("e/z")).unwrap(), "z");
    assert_eq!(fs::read_to_string(merged.join("c")).unwrap(), "#!/bin/sh\necho c\n");
    assert_eq!(fs::read_to_string(merged.join("link")).unwrap(), "b, modified");
    assert_eq!(snapshot(&merged), seen);
    overlay.unmount();
}

#[test]
fn pack_upper_errors_name_the_directory() {
    let err = pack_upper(Path::new("/nonexistent/herd-upper"), io::sink()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/herd-upper"), "{err}");
}
