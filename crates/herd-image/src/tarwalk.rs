//! Reading tar streams entry by entry with truncation checks, and normalising entry paths.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use crate::error::{ImageError, read_reason};

/// Tar block size.
const BLOCK: u64 = 512;

/// A reader that counts the bytes read through it (the tar crate owns it, so the count is shared).
pub(crate) struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// An entry of a tar stream being walked.
pub(crate) type Entry<'a, R> = tar::Entry<'a, Counting<R>>;

/// Reads the whole tar stream `reader`, calling `visit` on each entry (it may read the entry's
/// data or leave it), and returns the number of entries. `what` names the stream in
/// errors. A bad header, a short read or a decompression error is [`ImageError::Corrupt`].
///
/// With `require_end`, a stream that stops right after an entry's data, without the zero
/// blocks that end a tar archive, is also corrupt: that is how a plain tar cut short at a block
/// boundary looks.
pub(crate) fn walk_tar<R: Read>(
    reader: R,
    what: &str,
    require_end: bool,
    mut visit: impl FnMut(&mut Entry<'_, R>) -> Result<(), ImageError>,
) -> Result<u64, ImageError> {
    let count = Rc::new(Cell::new(0));
    let mut archive = tar::Archive::new(Counting { inner: reader, count: count.clone() });
    let mut entries = 0;
    let mut end_of_last = 0u64;
    for entry in archive.entries().map_err(|e| corrupt(what, &e))? {
        let mut entry = entry.map_err(|e| corrupt(what, &e))?;
        entries += 1;
        end_of_last = entry
            .size()
            .checked_next_multiple_of(BLOCK)
            .and_then(|padded| entry.raw_file_position().checked_add(padded))
            .ok_or_else(|| ImageError::Corrupt {
                what: what.to_string(),
                reason: "an entry size is out of range".into(),
            })?;
        visit(&mut entry)?;
    }
    if require_end && entries > 0 && count.get() <= end_of_last {
        return Err(ImageError::Corrupt {
            what: what.to_string(),
            reason: "it stops without the tar end-of-archive marker, so it was cut short".into(),
        });
    }
    // Read the rest (end blocks, padding) so that a decompressor reaches and checks the
    // compressed stream's own end (gzip keeps its checksum there).
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| corrupt(what, &e))?;
    Ok(entries)
}

/// [`ImageError::Corrupt`] for a read error in the stream `what`.
pub(crate) fn corrupt(what: &str, err: &io::Error) -> ImageError {
    ImageError::Corrupt { what: what.to_string(), reason: read_reason(err) }
}

/// Copies data to `out`, telling read errors (mapped by `read_error`) from write errors (on
/// `out_path`). Returns the number of bytes copied.
pub(crate) fn copy_data(
    from: &mut impl Read,
    out: &mut impl Write,
    read_error: impl FnOnce(io::Error) -> ImageError,
    out_path: &Path,
) -> Result<u64, ImageError> {
    let mut from = NoteReadError { inner: from, failed: None };
    match io::copy(&mut from, out) {
        Ok(n) => Ok(n),
        Err(err) => match from.failed {
            Some(read_err) => Err(read_error(read_err)),
            None => Err(ImageError::Io { action: "write", path: out_path.to_path_buf(), err }),
        },
    }
}

/// A reader that keeps a copy of its read error, so a copy can tell it from a write error.
struct NoteReadError<R> {
    inner: R,
    failed: Option<io::Error>,
}

impl<R: Read> Read for NoteReadError<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

/// Lexically normalises a path found in an archive to a path relative to the archive root:
/// root and `.` components are dropped (so absolute paths become relative) and `..` removes the
/// component before it. `None` when a `..` would climb above the root. The root itself is the
/// empty path.
pub(crate) fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(name) => out.push(name),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        let n = |p: &str| normalize(Path::new(p)).map(|p| p.to_string_lossy().into_owned());
        assert_eq!(n("./etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(n("/etc//passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(n("a/../b").as_deref(), Some("b"));
        assert_eq!(n("./").as_deref(), Some(""));
        assert_eq!(n("../x"), None);
        assert_eq!(n("a/../../x"), None);
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn detects_truncation() {
        let tar = tar_of(&[("a", &[7u8; 600]), ("b", b"bee")]);
        assert_eq!(walk_tar(&tar[..], "t", true, |_| Ok(())).unwrap(), 2);
        // Cut inside the data of the first entry, inside the second header, inside the last data.
        for cut in [1200, 1600, 2050] {
            assert!(matches!(walk_tar(&tar[..cut], "t", true, |_| Ok(())), Err(ImageError::Corrupt { .. })), "{cut}");
        }
        // Cut at a block boundary, right after the last entry's data.
        assert!(matches!(walk_tar(&tar[..2560], "t", true, |_| Ok(())), Err(ImageError::Corrupt { .. })));
        assert_eq!(walk_tar(&tar[..2560], "t", false, |_| Ok(())).unwrap(), 2);
        // A single end block is enough.
        assert_eq!(walk_tar(&tar[..3072], "t", true, |_| Ok(())).unwrap(), 2);
    }
}
