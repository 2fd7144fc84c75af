//! Packing a rootfs directory into an uncompressed tar, the form `herd image import NAME DIR`
//! uploads, and the directory walk and tar writing [`crate::upper`] shares.

use std::collections::HashMap;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Writes the rootfs directory `dir` as an uncompressed tar to `out`.
///
/// Entries have paths relative to `dir` (which itself is not an entry), in name order; symlinks
/// are stored as symlinks, never followed; files with several links inside `dir` are stored
/// once and then as hard links; modes, numeric uid/gid and mtimes are kept. Device nodes,
/// sockets and FIFOs are skipped, and so are extended attributes. Errors name the file; a file
/// that is replaced, grows or shrinks while it is packed is an error too.
pub fn pack_dir(dir: &Path, out: impl Write) -> io::Result<()> {
    let mut packer = Packer::new(out);
    walk(dir, |node| {
        let file_type = node.meta.file_type();
        if file_type.is_dir() {
            packer.directory(node, &[])
        } else if file_type.is_symlink() {
            packer.symlink(node)
        } else if file_type.is_file() {
            packer.file(node, &[])
        } else {
            // Devices, sockets and FIFOs: skipped.
            Ok(())
        }
    })?;
    packer.finish()
}

/// One entry met by [`walk`].
pub(crate) struct Node<'a> {
    /// The path relative to the walked directory.
    pub rel: &'a Path,
    /// The path itself (the walked directory joined with `rel`).
    pub path: &'a Path,
    /// Its metadata, symlinks not followed.
    pub meta: &'a Metadata,
}

/// Calls `visit` on everything below `dir` (not `dir` itself), depth first, the entries of each
/// directory in name order and a directory before its contents. Symlinks are never followed.
/// Errors name the path.
pub(crate) fn walk(dir: &Path, mut visit: impl FnMut(&Node<'_>) -> io::Result<()>) -> io::Result<()> {
    walk_below(dir, Path::new(""), &mut visit)
}

fn walk_below(dir: &Path, rel: &Path, visit: &mut impl FnMut(&Node<'_>) -> io::Result<()>) -> io::Result<()> {
    let here = dir.join(rel);
    let mut names = fs::read_dir(&here)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>())
        .map_err(|e| context(e, "list", &here))?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = dir.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(|e| context(e, "inspect", &path))?;
        visit(&Node { rel: &rel, path: &path, meta: &meta })?;
        if meta.is_dir() {
            walk_below(dir, &rel, visit)?;
        }
    }
    Ok(())
}

/// Writes tar entries for walked files, storing files met again under another name as hard
/// links.
pub(crate) struct Packer<W: Write> {
    builder: tar::Builder<W>,
    /// The first entry written for each (device, inode) with several links.
    links: HashMap<(u64, u64), PathBuf>,
}

/// The size of the link-name field of a tar header.
const LINK_NAME_LEN: usize = 100;
/// The name GNU tar gives long link-name records.
const LONG_LINK_NAME: &[u8] = b"././@LongLink";

/// `(name, value)` of extended attributes, stored as PAX `SCHILY.xattr.` records.
pub(crate) type Xattrs = [(String, Vec<u8>)];

impl<W: Write> Packer<W> {
    pub fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        Packer { builder, links: HashMap::new() }
    }

    /// Writes the end of the archive and flushes the output.
    pub fn finish(self) -> io::Result<()> {
        self.builder.into_inner()?.flush()
    }

    pub fn directory(&mut self, node: &Node<'_>, xattrs: &Xattrs) -> io::Result<()> {
        let mut header = header_of(node.meta);
        self.pax(node.path, xattrs)?;
        self.builder.append_data(&mut header, node.rel, io::empty()).map_err(|e| context(e, "pack", node.path))
    }

    /// A symlink, its target stored byte for byte.
    pub fn symlink(&mut self, node: &Node<'_>) -> io::Result<()> {
        let target = fs::read_link(node.path).map_err(|e| context(e, "read symlink", node.path))?;
        let target = target.as_os_str().as_bytes();
        let mut header = header_of(node.meta);
        // Not `append_link`: it stores the target as path components, so `a//b` would come
        // back as `a/b` and `dir/.` as `dir`.
        if target.len() >= LINK_NAME_LEN {
            // A GNU long link-name record, as `append_link` writes for long targets.
            let mut long = tar::Header::new_gnu();
            long.as_gnu_mut().expect("a GNU header").name[..LONG_LINK_NAME.len()].copy_from_slice(LONG_LINK_NAME);
            long.set_mode(0o644);
            long.set_uid(0);
            long.set_gid(0);
            long.set_mtime(0);
            long.set_size(target.len() as u64 + 1);
            long.set_entry_type(tar::EntryType::GNULongLink);
            long.set_cksum();
            self.builder.append(&long, target.chain(&[0u8][..])).map_err(|e| context(e, "pack", node.path))?;
        }
        header
            .set_link_name_literal(&target[..target.len().min(LINK_NAME_LEN - 1)])
            .map_err(|e| context(e, "pack", node.path))?;
        self.builder.append_data(&mut header, node.rel, io::empty()).map_err(|e| context(e, "pack", node.path))
    }

    /// A regular file with its content, or a hard link to an earlier entry.
    pub fn file(&mut self, node: &Node<'_>, xattrs: &Xattrs) -> io::Result<()> {
        if self.hard_link(node)? {
            return Ok(());
        }
        // O_NONBLOCK: should the file have been replaced by a FIFO, opening it must not hang
        // (the check below then reports the change). It does nothing to regular files.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(node.path)
            .map_err(|e| context(e, "open", node.path))?;
        let opened = file.metadata().map_err(|e| context(e, "inspect", node.path))?;
        if !opened.is_file() || (opened.dev(), opened.ino()) != (node.meta.dev(), node.meta.ino()) {
            return Err(context(changed("was replaced"), "pack", node.path));
        }
        let mut header = header_of(&opened);
        header.set_size(opened.len());
        self.pax(node.path, xattrs)?;
        let data = Exact { file, left: opened.len() };
        self.builder.append_data(&mut header, node.rel, data).map_err(|e| context(e, "pack", node.path))
    }

    /// A FIFO (or a hard link to an earlier entry).
    pub fn fifo(&mut self, node: &Node<'_>, xattrs: &Xattrs) -> io::Result<()> {
        if self.hard_link(node)? {
            return Ok(());
        }
        let mut header = header_of(node.meta);
        self.pax(node.path, xattrs)?;
        self.builder.append_data(&mut header, node.rel, io::empty()).map_err(|e| context(e, "pack", node.path))
    }

    /// An empty regular file with the given name, mode and the owner and mtime of `node` (OCI
    /// whiteout markers).
    pub fn empty_file(&mut self, node: &Node<'_>, name: &Path, mode: u32) -> io::Result<()> {
        let mut header = header_of(node.meta);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(mode);
        self.builder.append_data(&mut header, name, io::empty()).map_err(|e| context(e, "pack", node.path))
    }

    /// When `node` has several links and one was written already, writes a hard link to it and
    /// returns true; otherwise remembers `node` as the first and returns false.
    pub fn hard_link(&mut self, node: &Node<'_>) -> io::Result<bool> {
        if node.meta.nlink() <= 1 {
            return Ok(false);
        }
        let key = (node.meta.dev(), node.meta.ino());
        let Some(first) = self.links.get(&key) else {
            self.links.insert(key, node.rel.to_path_buf());
            return Ok(false);
        };
        let mut header = header_of(node.meta);
        header.set_entry_type(tar::EntryType::Link);
        self.builder.append_link(&mut header, node.rel, first).map_err(|e| context(e, "pack", node.path))?;
        Ok(true)
    }

    fn pax(&mut self, path: &Path, xattrs: &Xattrs) -> io::Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let records: Vec<(String, &[u8])> =
            xattrs.iter().map(|(name, value)| (format!("SCHILY.xattr.{name}"), value.as_slice())).collect();
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(|e| context(e, "pack", path))
    }
}

/// A GNU header with the type, mode, numeric owner and mtime of `meta`, and size 0.
fn header_of(meta: &Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header.set_size(0);
    header
}

/// Reads exactly `left` bytes of `file`, the size its header records, and fails if the file
/// turns out shorter or longer: the tar would be corrupt otherwise.
struct Exact {
    file: File,
    left: u64,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // At the recorded size: the file must end here.
            return match self.file.read(&mut [0u8])? {
                0 => Ok(0),
                _ => Err(changed("grew")),
            };
        }
        let len = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..len])?;
        if n == 0 {
            return Err(changed("shrank"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn changed(how: &str) -> io::Error {
    io::Error::other(format!("the file {how} while being packed; pack a directory nothing writes to"))
}

pub(crate) fn context(err: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{action} {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_changes_size_while_packed_is_an_error() {
        let tmp = tempfile::TempDir::new().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, "12345").unwrap();
        let read = |left| {
            let mut data = Vec::new();
            let mut exact = Exact { file: File::open(&path).unwrap(), left };
            exact.read_to_end(&mut data).map(|_| data)
        };
        assert_eq!(read(5).unwrap(), b"12345");
        let grew = read(3).unwrap_err().to_string();
        assert!(grew.contains("grew"), "{grew}");
        let shrank = read(8).unwrap_err().to_string();
        assert!(shrank.contains("shrank"), "{shrank}");
    }

    #[test]
    fn symlink_targets_are_stored_byte_for_byte() {
        let tmp = tempfile::TempDir::new().unwrap();
        let long = format!("./{}//end/.", "x".repeat(150));
        for target in ["a//b", "dir/.", "../up/", long.as_str()] {
            let dir = tmp.path().join("src");
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            std::os::unix::fs::symlink(target, dir.join("link")).unwrap();
            let mut out = Vec::new();
            pack_dir(&dir, &mut out).unwrap();
            let mut archive = tar::Archive::new(&out[..]);
            let mut entries = archive.entries().unwrap();
            let entry = entries.next().unwrap().unwrap();
            assert_eq!(entry.path().unwrap(), Path::new("link"));
            assert_eq!(entry.link_name_bytes().as_deref(), Some(target.as_bytes()), "{target}");
            assert!(entries.next().is_none());
        }
    }
}
