//! The trail a container's ticker versions leave on its node, so that the next version dumps
//! only the memory written since the last one (an incremental checkpoint).
//!
//! CRIU dumps incrementally against parent images (`--prev-images-dir`): it marks the pages
//! not written since as in the parent, and checks that the parent, or its own parents, hold
//! them. It reads only the parents' page maps for that, never their pages. So the trail
//! keeps, per version since the group's base, the CRIU files of its dump with every
//! `pages-*.img` emptied: some kilobytes per version, not the container's memory, which the
//! version store holds ([`crate::versions`]).
//!
//! ```text
//! scratch/trail/<container id>/newest        "<version> <root pid> <start time>"
//! scratch/trail/<container id>/v<N>/criu/    the CRIU files of version N, pages emptied,
//!                                            and `parent` -> ../../v<N-1>/criu
//! ```
//!
//! A base's CRIU files hold its pre-dump in `parent/` (a directory), kept the same way.
//!
//! `herd checkpoint` dumps incrementally too, on the container's previous checkpoint on this
//! node, which is whole on the node's disk: the trail then only names it
//! (`scratch/trail/<container id>/checkpoint`: "<checkpoint id> <root pid> <start time>").
//! Whichever kind of dump tracked memory last holds the trail: keeping one clears the other.
//!
//! The trail is good only for the process it was taken of (its root pid and start time) and
//! only while nothing else resets the tracking: a migration's pre-copy rounds do (soft-dirty
//! bits are cleared, userfaultfd trackers replaced), so a migration clears the trail. When the
//! trail does not match, the next version is a full dump, which starts a new trail. Being
//! wrong in the other direction is guarded by CRIU too: on this kernel (userfaultfd) a dump
//! gets its trackers back only with the token its parent dump wrote, and counts every page
//! as written without them.

use std::io;
use std::path::{Component, Path, PathBuf};

/// The marker of the newest version kept.
const NEWEST: &str = "newest";
/// The marker of the last checkpoint that tracked memory.
const CHECKPOINT: &str = "checkpoint";

/// A container's trail, in the node's scratch directory.
#[derive(Debug, Clone)]
pub(crate) struct Trail {
    dir: PathBuf,
}

/// A process: its pid and its start time (clock ticks since boot), so a reused pid is another.
pub(crate) type Process = (u32, u64);

impl Trail {
    pub fn of(scratch: &Path, id: &str) -> Trail {
        Trail { dir: scratch.join("trail").join(id) }
    }

    fn images(&self, version: u64) -> PathBuf {
        self.dir.join(format!("v{version}")).join(herd_proto::checkpoint::CRIU_DIR)
    }

    /// What marker `name` names, if it was written for `process`.
    fn marked(&self, name: &str, process: Process) -> Option<String> {
        let marker = std::fs::read_to_string(self.dir.join(name)).ok()?;
        let words: Vec<&str> = marker.split_whitespace().collect();
        let [what, pid, start] = words.as_slice() else { return None };
        let of = (pid.parse::<u32>().ok()?, start.parse::<u64>().ok()?);
        (of == process).then(|| what.to_string())
    }

    fn mark(&self, name: &str, what: &str, process: Process) -> io::Result<()> {
        let marker = self.dir.join(format!("{name}.new"));
        std::fs::write(&marker, format!("{what} {} {}\n", process.0, process.1))?;
        std::fs::rename(&marker, self.dir.join(name))
    }

    /// The CRIU images of `version`, if it is the newest version kept for `process`.
    pub fn parent_for(&self, version: u64, process: Process) -> Option<PathBuf> {
        let kept = self.marked(NEWEST, process)?;
        let images = self.images(version);
        (kept == version.to_string() && images.is_dir()).then_some(images)
    }

    /// The checkpoint that last tracked the memory of `process`, if it did.
    pub fn checkpoint_for(&self, process: Process) -> Option<String> {
        self.marked(CHECKPOINT, process)
    }

    /// Notes that checkpoint `checkpoint_id` of `process` tracked memory, forgetting the rest.
    pub fn keep_checkpoint(&self, checkpoint_id: &str, process: Process) -> io::Result<()> {
        self.clear();
        std::fs::create_dir_all(&self.dir)?;
        self.mark(CHECKPOINT, checkpoint_id, process)
    }

    /// Keeps the CRIU files of `images` (version `version` of `process`, whose memory builds
    /// on `parent`) as the newest version, pages emptied. A version without a parent starts
    /// the trail afresh.
    pub fn keep(&self, images: &Path, version: u64, parent: Option<u64>, process: Process) -> io::Result<()> {
        if parent.is_none() {
            self.clear();
        }
        let kept = self.images(version);
        if let Some(v) = kept.parent() {
            let _ = std::fs::remove_dir_all(v);
        }
        copy_without_pages(images, &kept)?;
        if let Some(p) = parent {
            std::os::unix::fs::symlink(Path::new("../..").join(format!("v{p}")).join("criu"), kept.join("parent"))?;
        }
        let _ = std::fs::remove_file(self.dir.join(CHECKPOINT));
        self.mark(NEWEST, &version.to_string(), process)
    }

    /// Forgets the trail: the next version is a full dump.
    pub fn clear(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("clearing {}: {e}", self.dir.display());
        }
    }
}

impl crate::runtime::Runtime {
    /// The trail of container `id` ([`crate::version_trail`]).
    pub(crate) fn trail(&self, id: &str) -> Trail {
        Trail::of(&self.cfg.paths.scratch(), id)
    }

    /// Before a dump that tracks written memory without a parent: the trail no longer holds,
    /// and a tracker the keeper still holds for `process` would keep the new one from
    /// registering.
    pub(crate) fn track_afresh(&self, trail: &Trail, process: Option<Process>) {
        trail.clear();
        if let (Some(keeper), Some((pid, _))) = (&self.cfg.dirty_keeper, process) {
            keeper.forget(pid as i32);
        }
    }

    /// The running process of container `id` (its first), with its start time.
    pub(crate) fn process_of(&self, id: &str) -> Option<Process> {
        let pid = self.get(id).ok()?.live.lock().unwrap().pid?;
        Some((pid, crate::dirty_keeper::start_time(pid as i32)?))
    }
}

/// Copies the regular files and directories of `from` into `to`, each `pages-*.img` empty.
fn copy_without_pages(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (kind, name) = (entry.file_type()?, entry.file_name());
        let dest = to.join(&name);
        if kind.is_dir() {
            copy_without_pages(&entry.path(), &dest)?;
        } else if !kind.is_file() {
            continue;
        } else if name.to_str().is_some_and(|n| n.starts_with("pages-") && n.ends_with(".img")) {
            std::fs::File::create(&dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Hard-links the files of directory `from` into `to` (created), directories recursively; a
/// file that cannot be linked (another file system) is copied.
pub(crate) fn link_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (kind, dest) = (entry.file_type()?, to.join(entry.file_name()));
        if kind.is_dir() {
            link_tree(&entry.path(), &dest)?;
        } else if kind.is_file() && std::fs::hard_link(entry.path(), &dest).is_err() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// `to` relative to the directory `from` (both absolute, without `..` or symlinks between
/// them): runc takes a dump's parent images relative to its images.
pub(crate) fn relative(from: &Path, to: &Path) -> PathBuf {
    let (a, b): (Vec<Component>, Vec<Component>) = (from.components().collect(), to.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let r = relative(Path::new("/s/versions/ab/ticker-v3/criu"), Path::new("/s/trail/ab/v2/criu"));
        assert_eq!(r, Path::new("../../../../trail/ab/v2/criu"));
        assert_eq!(relative(Path::new("/a/b"), Path::new("/a/b/c")), Path::new("c"));
    }

    #[test]
    fn the_trail_keeps_metadata_for_its_process_and_empties_pages() {
        let tmp = tempfile::tempdir().unwrap();
        let dump = tmp.path().join("dump");
        std::fs::create_dir_all(&dump).unwrap();
        std::fs::write(dump.join("pagemap-1.img"), b"map").unwrap();
        std::fs::write(dump.join("pages-1.img"), vec![7u8; 8192]).unwrap();
        std::fs::create_dir_all(dump.join("parent")).unwrap();
        std::fs::write(dump.join("parent/pagemap-1.img"), b"pre-dump map").unwrap();
        std::fs::write(dump.join("parent/pages-1.img"), vec![7u8; 8192]).unwrap();
        let trail = Trail::of(&tmp.path().join("scratch"), "ab");
        let p = (41, 1234);
        trail.keep(&dump, 1, None, p).unwrap();
        let v1 = trail.parent_for(1, p).unwrap();
        assert_eq!(std::fs::read(v1.join("pagemap-1.img")).unwrap(), b"map");
        assert_eq!(std::fs::metadata(v1.join("pages-1.img")).unwrap().len(), 0);
        // A base's pre-dump, inside it, too.
        assert_eq!(std::fs::read(v1.join("parent/pagemap-1.img")).unwrap(), b"pre-dump map");
        assert_eq!(std::fs::metadata(v1.join("parent/pages-1.img")).unwrap().len(), 0);
        // Another process (a restart, a reused pid), or another version: no parent.
        assert!(trail.parent_for(1, (41, 99)).is_none());
        assert!(trail.parent_for(2, p).is_none());

        // An incremental dump: its parent is in the trail, not in it.
        std::fs::remove_dir_all(dump.join("parent")).unwrap();
        trail.keep(&dump, 2, Some(1), p).unwrap();
        let v2 = trail.parent_for(2, p).unwrap();
        assert!(trail.parent_for(1, p).is_none(), "only the newest is a parent");
        // The chain CRIU walks: v2's parent link reaches v1's files.
        assert_eq!(std::fs::read(v2.join("parent").join("pagemap-1.img")).unwrap(), b"map");

        // A new base starts afresh.
        trail.keep(&dump, 3, None, p).unwrap();
        assert!(!v2.exists());
        assert!(trail.parent_for(3, p).is_some());
        trail.clear();
        assert!(trail.parent_for(3, p).is_none());

        // A checkpoint that tracked memory takes the trail over, and a version takes it back.
        trail.keep(&dump, 4, None, p).unwrap();
        trail.keep_checkpoint("ck1", p).unwrap();
        assert_eq!(trail.checkpoint_for(p).as_deref(), Some("ck1"));
        assert!(trail.checkpoint_for((41, 99)).is_none());
        assert!(trail.parent_for(4, p).is_none());
        trail.keep(&dump, 5, None, p).unwrap();
        assert!(trail.checkpoint_for(p).is_none());
    }

    #[test]
    fn a_tree_is_linked_not_copied() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("a");
        std::fs::create_dir_all(from.join("parent")).unwrap();
        std::fs::write(from.join("pages-1.img"), b"p").unwrap();
        std::fs::write(from.join("parent/pages-1.img"), b"q").unwrap();
        link_tree(&from, &tmp.path().join("b/parent")).unwrap();
        let linked = std::fs::metadata(tmp.path().join("b/parent/parent/pages-1.img")).unwrap();
        assert_eq!(linked.ino(), std::fs::metadata(from.join("parent/pages-1.img")).unwrap().ino());
    }
}
