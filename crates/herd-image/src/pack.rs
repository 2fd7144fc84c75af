//! Packing a rootfs directory into an uncompressed tar, the form `herd image import NAME DIR`
//! uploads.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Writes the rootfs directory `dir` as an uncompressed tar to `out`.
///
/// Entries have paths relative to `dir` (which itself is not an entry), in name order; symlinks
/// are stored as symlinks, never followed; files with several links inside `dir` are stored
/// once and then as hard links; modes, numeric uid/gid and mtimes are kept. Device nodes,
/// sockets and FIFOs are skipped, and so are extended attributes. Errors name the file.
pub fn pack_dir(dir: &Path, out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut links = HashMap::new();
    pack_children(&mut builder, dir, Path::new(""), &mut links)?;
    builder.into_inner()?.flush()
}

/// Adds the entries below `dir/rel`.
fn pack_children<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let here = dir.join(rel);
    let mut names = fs::read_dir(&here)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(|e| context(e, "list", &here))?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = dir.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(|e| context(e, "inspect", &path))?;
        let file_type = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        if file_type.is_dir() {
            header.set_size(0);
            builder
                .append_data(&mut header, &rel, io::empty())
                .map_err(|e| context(e, "pack", &path))?;
            pack_children(builder, dir, &rel, links)?;
        } else if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| context(e, "read symlink", &path))?;
            header.set_size(0);
            builder
                .append_link(&mut header, &rel, &target)
                .map_err(|e| context(e, "pack", &path))?;
        } else if file_type.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = links.get(&key) {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, &rel, first)
                        .map_err(|e| context(e, "pack", &path))?;
                    continue;
                }
                links.insert(key, rel.clone());
            }
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| context(e, "open", &path))?;
            builder
                .append_data(&mut header, &rel, file)
                .map_err(|e| context(e, "pack", &path))?;
        }
        // Devices, sockets and FIFOs: skipped.
    }
    Ok(())
}

fn context(err: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{action} {}: {err}", path.display()))
}
