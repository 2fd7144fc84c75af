//! A file that moves again in a later pass ([`crate::volume_tree`]) sends only the chunks
//! whose content changed: a database rewrites pages all over its table files between two
//! passes, and sending each such file whole again kept a PostgreSQL's last pass, taken while
//! the container is frozen, at the size of its busy tables.
//!
//! Files of [`DELTA_MIN`] bytes or more are digested by chunks of [`DELTA_CHUNK`] bytes: the
//! file's digest is the SHA-256 of its chunks' SHA-256 digests, one after the other. The source
//! keeps the chunk digests of what it sent; when it sends the file again (same inode), it reads
//! and digests every chunk but writes a patch: for each chunk of the file's new size, one tag
//! byte, [`SAME`] (the destination keeps its copy of the chunk) or [`DATA`] followed by the
//! chunk's bytes. The destination keeps the chunk digests of what it wrote, so both sides end
//! with the file's digest without the unchanged bytes crossing.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::volume_tree::FileDigest;

/// Files this large or larger are digested by chunks, and patched when sent again.
pub const DELTA_MIN: u64 = 1 << 20;
/// The chunk of a patch.
pub const DELTA_CHUNK: usize = 64 << 10;
/// Tag of a chunk the destination keeps.
pub const SAME: u8 = 0;
/// Tag of a chunk whose bytes follow.
pub const DATA: u8 = 1;

/// Whether a file of `size` bytes is digested by chunks.
pub fn chunked(size: u64) -> bool {
    size >= DELTA_MIN
}

/// The number of chunks of a file of `size` bytes.
pub fn chunk_count(size: u64) -> usize {
    size.div_ceil(DELTA_CHUNK as u64) as usize
}

/// The length of chunk `i` of a file of `size` bytes.
fn chunk_len(size: u64, i: usize) -> usize {
    (size - (i as u64 * DELTA_CHUNK as u64)).min(DELTA_CHUNK as u64) as usize
}

/// A file's digest as its content streams by: SHA-256 of the bytes under [`DELTA_MIN`], else
/// of the chunks' digests.
pub struct ContentHasher {
    whole: Option<Sha256>,
    chunk: Sha256,
    in_chunk: usize,
    chunks: Vec<FileDigest>,
}

impl ContentHasher {
    pub fn new(size: u64) -> ContentHasher {
        ContentHasher {
            whole: (!chunked(size)).then(Sha256::new),
            chunk: Sha256::new(),
            in_chunk: 0,
            chunks: Vec::with_capacity(if chunked(size) { chunk_count(size) } else { 0 }),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if let Some(whole) = &mut self.whole {
            whole.update(data);
            return;
        }
        while !data.is_empty() {
            let n = (DELTA_CHUNK - self.in_chunk).min(data.len());
            self.chunk.update(&data[..n]);
            self.in_chunk += n;
            data = &data[n..];
            if self.in_chunk == DELTA_CHUNK {
                self.chunks.push(self.chunk.finalize_reset().into());
                self.in_chunk = 0;
            }
        }
    }

    /// A whole chunk whose digest is known (the next one of a chunked file).
    fn push_chunk(&mut self, digest: FileDigest) {
        debug_assert!(self.whole.is_none() && self.in_chunk == 0);
        self.chunks.push(digest);
    }

    /// The file's digest, and its chunks' when it is chunked.
    pub fn finish(mut self) -> (FileDigest, Option<Vec<FileDigest>>) {
        if let Some(whole) = self.whole {
            return (whole.finalize().into(), None);
        }
        if self.in_chunk > 0 {
            self.chunks.push(self.chunk.finalize_reset().into());
        }
        let mut h = Sha256::new();
        for c in &self.chunks {
            h.update(c);
        }
        (h.finalize().into(), Some(self.chunks))
    }
}

/// What the source read of a file it patches.
pub struct PatchRead {
    pub digest: FileDigest,
    pub chunks: Vec<FileDigest>,
    /// The file changed while it was read (it shrank): what was missing went as zeros.
    pub moved: bool,
    /// Bytes of chunk content written to the patch.
    pub sent: u64,
}

/// Chunks read and digested at a time while a patch is made (16 MiB).
const WINDOW_CHUNKS: usize = 256;
/// Threads that digest a window's chunks, at most.
const MAX_DIGEST_THREADS: usize = 4;

/// Source: reads the `size` bytes of `file` and writes its patch against `old` (the chunk
/// digests of what the destination holds) to `out`. The whole file is read and digested,
/// a window at a time, the window's chunks digested on several threads: this runs while the
/// container is frozen, and the node's other cores are idle then. `corrupt` flips a byte of
/// the first chunk sent after its digest was taken (a test's fault point).
pub fn write_patch(
    file: &mut impl Read,
    size: u64,
    old: &[FileDigest],
    out: &mut impl Write,
    corrupt: &mut bool,
) -> anyhow::Result<PatchRead> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_DIGEST_THREADS);
    let total = chunk_count(size);
    let mut window = vec![0u8; WINDOW_CHUNKS.min(total) * DELTA_CHUNK];
    let mut chunks: Vec<FileDigest> = Vec::with_capacity(total);
    let (mut moved, mut sent) = (false, 0u64);
    let mut first = 0;
    while first < total {
        let n = (total - first).min(WINDOW_CHUNKS);
        let len: usize = (first..first + n).map(|i| chunk_len(size, i)).sum();
        let data = &mut window[..len];
        let mut got = 0;
        while got < len && !moved {
            match file.read(&mut data[got..]) {
                Ok(0) => moved = true,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        data[got..].fill(0);
        let digests = digest_chunks(data, threads);
        for (k, digest) in digests.iter().enumerate() {
            let chunk = &mut data[k * DELTA_CHUNK..k * DELTA_CHUNK + chunk_len(size, first + k)];
            if old.get(first + k) == Some(digest) {
                out.write_all(&[SAME])?;
            } else {
                if std::mem::take(corrupt) {
                    chunk[0] ^= 0x5a;
                }
                out.write_all(&[DATA])?;
                out.write_all(chunk)?;
                sent += chunk.len() as u64;
            }
        }
        chunks.extend(digests);
        first += n;
    }
    let mut h = Sha256::new();
    chunks.iter().for_each(|c| h.update(c));
    Ok(PatchRead { digest: h.finalize().into(), chunks, moved, sent })
}

/// The SHA-256 of each [`DELTA_CHUNK`] of `data`, on up to `threads` threads.
fn digest_chunks(data: &[u8], threads: usize) -> Vec<FileDigest> {
    let chunks: Vec<&[u8]> = data.chunks(DELTA_CHUNK).collect();
    let digest_all = |part: &[&[u8]]| part.iter().map(|c| <FileDigest>::from(Sha256::digest(c))).collect::<Vec<_>>();
    if threads <= 1 || chunks.len() < 2 * threads {
        return digest_all(&chunks);
    }
    let per_thread = chunks.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = chunks.chunks(per_thread).map(|part| scope.spawn(move || digest_all(part))).collect();
        parts.into_iter().flat_map(|p| p.join().expect("digesting chunks")).collect()
    })
}

/// Destination: applies a patch read from `content` to `file`, which holds `old_size` bytes
/// whose chunk digests are `old`, making it `size` bytes long. Returns the new digest and
/// chunks, and the bytes written.
pub fn apply_patch(
    file: &std::fs::File,
    old_size: u64,
    size: u64,
    old: &[FileDigest],
    content: &mut impl Read,
) -> anyhow::Result<(FileDigest, Vec<FileDigest>, u64)> {
    if !chunked(size) {
        bail!("a patch for a file of {size} bytes, too small to be patched");
    }
    file.set_len(size).context("setting its size")?;
    let mut hasher = ContentHasher::new(size);
    let mut buf = vec![0u8; DELTA_CHUNK];
    let mut written = 0u64;
    for i in 0..chunk_count(size) {
        let mut tag = [0u8; 1];
        content.read_exact(&mut tag).context("receiving the patch")?;
        match tag[0] {
            SAME => match old.get(i) {
                // Kept only where the copy has the whole chunk as the new size cuts it.
                Some(d) if chunk_len(old_size, i) == chunk_len(size, i) => hasher.push_chunk(*d),
                _ => bail!("the patch keeps chunk {i}, which the copy does not have whole"),
            },
            DATA => {
                let chunk = &mut buf[..chunk_len(size, i)];
                content.read_exact(chunk).context("receiving the patch")?;
                file.write_all_at(chunk, i as u64 * DELTA_CHUNK as u64).context("writing a chunk")?;
                hasher.push_chunk(Sha256::digest(&*chunk).into());
                written += chunk.len() as u64;
            }
            other => bail!("a patch chunk tagged {other}"),
        }
    }
    let (digest, chunks) = hasher.finish();
    Ok((digest, chunks.unwrap_or_default(), written))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(data: &[u8]) -> (FileDigest, Option<Vec<FileDigest>>) {
        let mut h = ContentHasher::new(data.len() as u64);
        // In uneven pieces, as reads come.
        for piece in data.chunks(100_003) {
            h.update(piece);
        }
        h.finish()
    }

    #[test]
    fn small_files_have_their_plain_digest_and_large_ones_their_chunks() {
        let small = vec![3u8; 1000];
        assert_eq!(digest_of(&small), (Sha256::digest(&small).into(), None));
        let large: Vec<u8> = (0..(DELTA_MIN as usize + 5)).map(|i| (i % 251) as u8).collect();
        let (d, chunks) = digest_of(&large);
        let chunks = chunks.unwrap();
        assert_eq!(chunks.len(), chunk_count(large.len() as u64));
        assert_eq!(chunks.last().unwrap(), &<FileDigest>::from(Sha256::digest(&large[large.len() - 5..])));
        let mut h = Sha256::new();
        chunks.iter().for_each(|c| h.update(c));
        assert_eq!(d, <FileDigest>::from(h.finalize()));
    }

    /// A file sent whole, changed, then patched: the copy matches, with only the changed
    /// chunks sent, whatever its new size.
    #[test]
    fn a_patch_carries_only_changed_chunks_and_any_new_size() {
        let dir = tempfile::tempdir().unwrap();
        // More than one window, so that the windows' seams are crossed.
        let original: Vec<u8> =
            (0..WINDOW_CHUNKS * DELTA_CHUNK + (3 << 20)).map(|i: usize| (i * 7 % 253) as u8).collect();
        let (_, old) = digest_of(&original);
        let old = old.unwrap();
        for (what, new_len) in [("same size", original.len()), ("grown", original.len() + 70_000), ("shrunk", 1 << 20)]
        {
            let mut changed = original.clone();
            changed.resize(new_len, 9);
            changed[100] ^= 1;
            let seam = WINDOW_CHUNKS * DELTA_CHUNK;
            if new_len > seam {
                changed[seam - 1] ^= 1;
                changed[seam] ^= 1;
            }
            let copy = dir.path().join(what);
            std::fs::write(&copy, &original).unwrap();

            let mut patch = Vec::new();
            let read = write_patch(&mut &changed[..], new_len as u64, &old, &mut patch, &mut false).unwrap();
            assert!(!read.moved);
            let expect_sent: u64 = (0..chunk_count(new_len as u64))
                .filter(|&i| {
                    old.get(i)
                        != Some(&<FileDigest>::from(Sha256::digest(
                            &changed[i * DELTA_CHUNK..(i * DELTA_CHUNK + chunk_len(new_len as u64, i))],
                        )))
                })
                .map(|i| chunk_len(new_len as u64, i) as u64)
                .sum();
            assert_eq!(read.sent, expect_sent, "{what}");
            assert!(read.sent <= 3 * DELTA_CHUNK as u64 + 70_000, "{what}: sent {}", read.sent);

            let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
            let (digest, chunks, written) =
                apply_patch(&f, original.len() as u64, new_len as u64, &old, &mut &patch[..]).unwrap();
            assert_eq!(std::fs::read(&copy).unwrap(), changed, "{what}");
            assert_eq!((digest, Some(chunks)), digest_of(&changed), "{what}");
            assert_eq!((read.digest, written), (digest, read.sent), "{what}");
        }
    }

    #[test]
    fn a_file_that_shrinks_while_read_is_padded_and_said_to_have_moved() {
        let data = vec![5u8; (2 << 20) + 10];
        let (_, old) = digest_of(&data);
        let mut patch = Vec::new();
        let read =
            write_patch(&mut &data[..1 << 20], data.len() as u64, &old.unwrap(), &mut patch, &mut false).unwrap();
        assert!(read.moved);
        let mut padded = data[..1 << 20].to_vec();
        padded.resize(data.len(), 0);
        assert_eq!(read.digest, digest_of(&padded).0);
    }

    #[test]
    fn a_bad_patch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        let size = 2 * DELTA_CHUNK as u64 + 1;
        // Keeps a chunk the copy does not have.
        let err = apply_patch(&f, size, size + (1 << 20), &[[0; 32]], &mut &[SAME, SAME][..]).unwrap_err();
        assert!(format!("{err:#}").contains("chunk 1, which the copy does not have"), "{err:#}");
        // Its last, partial chunk cannot be kept once the file grew.
        let old = [[0; 32], [0; 32], [0; 32]];
        let err = apply_patch(&f, size, size + (1 << 20), &old, &mut &[SAME, SAME, SAME][..]).unwrap_err();
        assert!(format!("{err:#}").contains("chunk 2, which the copy does not have"), "{err:#}");
        // An unknown tag, and a patch cut short.
        assert!(apply_patch(&f, size, 1 << 20, &[], &mut &[7u8][..]).is_err());
        assert!(apply_patch(&f, size, 1 << 20, &[], &mut &[DATA, 1, 2][..]).is_err());
    }
}
