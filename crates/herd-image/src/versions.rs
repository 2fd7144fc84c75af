//! Ticker versions as content-addressed blocks (the format is in [`herd_proto::ha`]).
//!
//! [`plan_version`] cuts every file of a checkpoint directory into 4 KiB blocks, names each by
//! its SHA-256, and lists the blocks that the versions it builds on do not hold; [`write_pack`]
//! writes those blocks, in that order, as the version's pack. CRIU's page images hold whole
//! pages, so a page that did not change is a block that did not change, wherever it moved in
//! the file: without soft-dirty tracking, content is how a version tells what changed.
//!
//! [`Assembler`] puts a checkpoint directory back together from packs: it checks every block
//! it reads against its name and writes it wherever the version uses it, so a flipped byte
//! anywhere is an error and never a restored process with wrong memory.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use herd_proto::checkpoint::{CheckpointManifest, validate_file_path};
use herd_proto::ha::{BLOCK, BlockId, PACK_ENTRY, VERSION_FORMAT, VersionManifest};
use sha2::{Digest, Sha256};

use crate::error::ImageError;

fn not_a_version(what: &str, reason: impl Into<String>) -> ImageError {
    ImageError::NotACheckpoint { what: what.to_string(), reason: reason.into() }
}

/// The id of a block: the first 16 bytes of its SHA-256.
pub fn block_id(data: &[u8]) -> BlockId {
    let d = Sha256::digest(data);
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

/// A block of the new version's pack: where it is in the checkpoint directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackSource {
    /// Index into the checkpoint manifest's files.
    pub file: usize,
    pub offset: u64,
    pub len: u32,
}

/// Describes the checkpoint in `dir` (its manifest `checkpoint`, already written) as version
/// `version` building on the blocks of `known` (block id to the version whose pack holds it).
/// Returns the manifest and the blocks its pack must hold, in pack order.
pub fn plan_version(
    dir: &Path,
    checkpoint: CheckpointManifest,
    version: u64,
    base: u64,
    known: &HashMap<BlockId, u64>,
    pause_ms: u64,
) -> Result<(VersionManifest, Vec<PackSource>), ImageError> {
    let mut blocks = Vec::with_capacity(checkpoint.files.len());
    let mut new_ids: HashSet<BlockId> = HashSet::new();
    let (mut pack, mut sources) = (Vec::new(), Vec::new());
    let mut packs: std::collections::BTreeSet<u64> = Default::default();
    let mut buf = vec![0u8; BLOCK];
    for (i, f) in checkpoint.files.iter().enumerate() {
        let path = dir.join(&f.path);
        let mut file = File::open(&path).map_err(ImageError::io("open", &path))?;
        let mut ids = Vec::with_capacity((f.size as usize).div_ceil(BLOCK) * 16);
        let mut offset = 0u64;
        loop {
            let n = read_full(&mut file, &mut buf).map_err(ImageError::io("read", &path))?;
            if n == 0 {
                break;
            }
            let id = block_id(&buf[..n]);
            ids.extend_from_slice(&id);
            match known.get(&id) {
                Some(v) => {
                    packs.insert(*v);
                }
                None => {
                    if new_ids.insert(id) {
                        pack.extend_from_slice(&id);
                        pack.extend_from_slice(&(n as u32).to_le_bytes());
                        sources.push(PackSource { file: i, offset, len: n as u32 });
                    }
                }
            }
            offset += n as u64;
        }
        if offset != f.size {
            return Err(not_a_version(
                &dir.display().to_string(),
                format!("{} changed size while it was stored ({} bytes, manifest: {})", f.path, offset, f.size),
            ));
        }
        blocks.push(B64.encode(&ids));
    }
    if !sources.is_empty() {
        packs.insert(version);
    }
    let manifest = VersionManifest {
        format: VERSION_FORMAT.to_string(),
        version,
        base,
        checkpoint,
        blocks,
        packs: packs.into_iter().collect(),
        pack: B64.encode(&pack),
        pause_ms,
        memory_parent: None,
    };
    Ok((manifest, sources))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes the blocks of `sources` from the checkpoint directory `dir` to `out`, in order.
pub fn write_pack(
    dir: &Path,
    manifest: &VersionManifest,
    sources: &[PackSource],
    mut out: impl Write,
) -> Result<u64, ImageError> {
    let mut open: Option<(usize, File)> = None;
    let mut buf = vec![0u8; BLOCK];
    let mut written = 0u64;
    for s in sources {
        let path = dir.join(&manifest.checkpoint.files[s.file].path);
        if open.as_ref().is_none_or(|(i, _)| *i != s.file) {
            open = Some((s.file, File::open(&path).map_err(ImageError::io("open", &path))?));
        }
        let (_, file) = open.as_ref().unwrap();
        let data = &mut buf[..s.len as usize];
        file.read_exact_at(data, s.offset).map_err(ImageError::io("read", &path))?;
        out.write_all(data).map_err(|e| ImageError::Io { action: "write", path: "the pack".into(), err: e })?;
        written += s.len as u64;
    }
    out.flush().map_err(|e| ImageError::Io { action: "write", path: "the pack".into(), err: e })?;
    Ok(written)
}

/// The entries of a version's pack: block ids and lengths, in order.
pub fn pack_entries(manifest: &VersionManifest) -> Result<Vec<(BlockId, u32)>, ImageError> {
    let what = format!("version {}", manifest.version);
    let raw = B64.decode(&manifest.pack).map_err(|e| not_a_version(&what, format!("its pack list: {e}")))?;
    if raw.len() % PACK_ENTRY != 0 {
        return Err(not_a_version(&what, "its pack list is cut short"));
    }
    raw.chunks_exact(PACK_ENTRY)
        .map(|e| {
            let len = u32::from_le_bytes(e[16..20].try_into().unwrap());
            if len == 0 || len as usize > BLOCK {
                return Err(not_a_version(&what, format!("its pack lists a block of {len} bytes")));
            }
            Ok((e[..16].try_into().unwrap(), len))
        })
        .collect()
}

/// The block ids of a version's pack, each with the version (for [`plan_version`]'s `known`).
pub fn known_blocks(manifest: &VersionManifest, into: &mut HashMap<BlockId, u64>) -> Result<(), ImageError> {
    for (id, _) in pack_entries(manifest)? {
        into.insert(id, manifest.version);
    }
    Ok(())
}

/// Decodes and checks a version manifest (`what` names it in errors).
pub fn parse_version_manifest(bytes: &[u8], what: &str) -> Result<VersionManifest, ImageError> {
    let m: VersionManifest =
        serde_json::from_slice(bytes).map_err(|e| not_a_version(what, format!("its manifest is malformed: {e}")))?;
    if m.format != VERSION_FORMAT {
        return Err(not_a_version(what, format!("it is in format {}, and this herd reads {VERSION_FORMAT}", m.format)));
    }
    if m.blocks.len() != m.checkpoint.files.len() {
        return Err(not_a_version(what, "its manifest lists blocks for another number of files"));
    }
    for f in &m.checkpoint.files {
        validate_file_path(&f.path).map_err(|e| not_a_version(what, e))?;
    }
    if m.packs.iter().any(|p| *p > m.version) {
        return Err(not_a_version(what, "it builds on a newer version"));
    }
    if m.memory_parent.is_some_and(|p| p >= m.version || p < m.base) {
        return Err(not_a_version(what, "its memory builds on a version outside its own group"));
    }
    Ok(m)
}

/// The versions whose CRIU images `newest`'s build on, nearest first, from `known` (the
/// manifests at hand, by version); `None` names the first one missing.
pub fn memory_chain<'a>(
    newest: &VersionManifest,
    known: &'a HashMap<u64, VersionManifest>,
) -> Result<Vec<&'a VersionManifest>, u64> {
    let mut chain: Vec<&VersionManifest> = Vec::new();
    let mut next = newest.memory_parent;
    while let Some(v) = next {
        let m = known.get(&v).ok_or(v)?;
        chain.push(m);
        next = m.memory_parent;
    }
    Ok(chain)
}

/// One manifest for `newest` and the versions its CRIU images build on (`chain`, nearest
/// first, as [`memory_chain`] gives them): their CRIU files go under `criu/parent/`,
/// `criu/parent/parent/`..., where CRIU's restore looks for parent images. Putting the result
/// together gives a checkpoint directory CRIU restores whole.
pub fn with_memory_chain(newest: &VersionManifest, chain: &[&VersionManifest]) -> Result<VersionManifest, ImageError> {
    let what = format!("version {}", newest.version);
    let mut out = newest.clone();
    out.memory_parent = None;
    let mut expected = newest.memory_parent;
    let mut packs: std::collections::BTreeSet<u64> = newest.packs.iter().copied().collect();
    let criu = format!("{}/", herd_proto::checkpoint::CRIU_DIR);
    for (depth, m) in chain.iter().enumerate() {
        if expected != Some(m.version) || m.base != newest.base {
            return Err(not_a_version(&what, format!("its memory chain holds version {} out of turn", m.version)));
        }
        let prefix = format!("{criu}{}", "parent/".repeat(depth + 1));
        for (f, blocks) in m.checkpoint.files.iter().zip(&m.blocks) {
            let Some(rest) = f.path.strip_prefix(&criu) else { continue };
            let mut f = f.clone();
            f.path = format!("{prefix}{rest}");
            out.checkpoint.files.push(f);
            out.blocks.push(blocks.clone());
        }
        packs.extend(m.packs.iter().copied());
        expected = m.memory_parent;
    }
    if let Some(missing) = expected {
        return Err(not_a_version(&what, format!("its memory chain lacks version {missing}")));
    }
    out.packs = packs.into_iter().collect();
    Ok(out)
}

/// Where a block goes: a file and an offset in it.
type Target = (usize, u64);

/// Puts the checkpoint of a version back together in a directory, from packs.
pub struct Assembler {
    files: Vec<File>,
    wanted: HashMap<BlockId, (u32, Vec<Target>)>,
    manifest: VersionManifest,
    dest: std::path::PathBuf,
}

impl Assembler {
    /// Creates the files of `manifest`'s checkpoint in `dest` (a new directory).
    pub fn new(dest: &Path, manifest: VersionManifest) -> Result<Assembler, ImageError> {
        let what = format!("version {}", manifest.version);
        fs::create_dir_all(dest).map_err(ImageError::io("create", dest))?;
        let mut wanted: HashMap<BlockId, (u32, Vec<Target>)> = HashMap::new();
        let mut files = Vec::with_capacity(manifest.checkpoint.files.len());
        for (i, (f, blocks)) in manifest.checkpoint.files.iter().zip(&manifest.blocks).enumerate() {
            let ids = B64.decode(blocks).map_err(|e| not_a_version(&what, format!("the blocks of {}: {e}", f.path)))?;
            if ids.len() % 16 != 0 || (ids.len() / 16) as u64 != f.size.div_ceil(BLOCK as u64) {
                return Err(not_a_version(
                    &what,
                    format!("{} has {} bytes and another number of blocks", f.path, f.size),
                ));
            }
            for (k, id) in ids.chunks_exact(16).enumerate() {
                let offset = (k * BLOCK) as u64;
                let len = (f.size - offset).min(BLOCK as u64) as u32;
                let entry = wanted.entry(id.try_into().unwrap()).or_insert((len, Vec::new()));
                if entry.0 != len {
                    return Err(not_a_version(&what, "one block is listed with two lengths"));
                }
                entry.1.push((i, offset));
            }
            let path = dest.join(&f.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(ImageError::io("create", parent))?;
            }
            let file =
                OpenOptions::new().write(true).create_new(true).open(&path).map_err(ImageError::io("create", &path))?;
            file.set_len(f.size).map_err(ImageError::io("size", &path))?;
            files.push(file);
        }
        Ok(Assembler { files, wanted, manifest, dest: dest.to_path_buf() })
    }

    /// Reads pack `pack` (of version `of`, whose entries are `entries`) and writes the blocks
    /// this version uses. A block that does not match its id is an error.
    pub fn feed(&mut self, of: u64, entries: &[(BlockId, u32)], mut pack: impl Read) -> Result<(), ImageError> {
        let what = format!("the pack of version {of}");
        let mut buf = vec![0u8; BLOCK];
        for (id, len) in entries {
            let data = &mut buf[..*len as usize];
            pack.read_exact(data).map_err(|e| not_a_version(&what, format!("it is cut short: {e}")))?;
            if block_id(data) != *id {
                return Err(not_a_version(&what, "a block does not match its content (the stored version is damaged)"));
            }
            let Some((want_len, targets)) = self.wanted.remove(id) else { continue };
            if want_len != *len {
                return Err(not_a_version(&what, "a block has another length than its version lists"));
            }
            for (file, offset) in targets {
                let path = self.dest.join(&self.manifest.checkpoint.files[file].path);
                self.files[file].write_all_at(data, offset).map_err(ImageError::io("write", &path))?;
            }
        }
        let mut rest = [0u8; 1];
        if pack.read(&mut rest).map_err(|e| not_a_version(&what, e.to_string()))? != 0 {
            return Err(not_a_version(&what, "it holds more than its version lists"));
        }
        Ok(())
    }

    /// Checks that every block arrived and writes the checkpoint's manifest. Every byte was
    /// checked already, block by block against its SHA-256: hashing the files once more
    /// would double the CPU a restore costs (50 containers restored at once feel it).
    pub fn finish(self) -> Result<CheckpointManifest, ImageError> {
        let what = format!("version {}", self.manifest.version);
        if !self.wanted.is_empty() {
            return Err(not_a_version(&what, format!("{} of its blocks are in none of its packs", self.wanted.len())));
        }
        crate::checkpoint::write_manifest(&self.dest, &self.manifest.checkpoint)?;
        Ok(self.manifest.checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_proto::checkpoint::{CRIU_DIR, FORMAT, ROOTFS_DIFF};
    use herd_proto::state::CheckpointInfo;

    fn checkpoint(dir: &Path, pages: &[u8]) -> CheckpointManifest {
        fs::create_dir_all(dir.join(CRIU_DIR)).unwrap();
        fs::write(dir.join(ROOTFS_DIFF), b"tar bytes").unwrap();
        fs::write(dir.join(CRIU_DIR).join("pages-1.img"), pages).unwrap();
        fs::write(dir.join(CRIU_DIR).join("core-1.img"), b"core").unwrap();
        let files = crate::checkpoint::checkpoint_files(dir).unwrap();
        let spec: herd_proto::node::ContainerSpec = serde_json::from_value(serde_json::json!({
            "id": "ab", "name": "c", "image": "i", "layers": [], "args": [], "env": [],
            "working_dir": "/", "ip": "10.0.0.2", "limits": {}, "labels": {}
        }))
        .unwrap();
        let info =
            CheckpointInfo { id: "v".into(), node: "n1".into(), created_at: 0, leave_running: true, size_bytes: 0 };
        let m = CheckpointManifest { format: FORMAT.into(), container: spec, checkpoint: info, files };
        crate::checkpoint::write_manifest(dir, &m).unwrap();
        m
    }

    /// Stores the checkpoint in `dir` as `version` over `known`; returns its manifest and pack.
    fn store(dir: &Path, version: u64, known: &HashMap<BlockId, u64>, pages: &[u8]) -> (VersionManifest, Vec<u8>) {
        let m = checkpoint(dir, pages);
        let (vm, sources) = plan_version(dir, m, version, 1, known, 7).unwrap();
        let mut pack = Vec::new();
        write_pack(dir, &vm, &sources, &mut pack).unwrap();
        let json = serde_json::to_vec(&vm).unwrap();
        (parse_version_manifest(&json, "test").unwrap(), pack)
    }

    fn pages(n: usize, seed: u8) -> Vec<u8> {
        (0..n * BLOCK).map(|i| ((i / BLOCK) as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn a_delta_holds_only_changed_blocks_and_restores_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let full = pages(64, 1);
        let (v1, pack1) = store(&tmp.path().join("a"), 1, &HashMap::new(), &full);
        assert_eq!(v1.packs, vec![1]);
        let mut known = HashMap::new();
        known_blocks(&v1, &mut known).unwrap();
        // One page rewritten, and one page inserted before the rest (the file shifts).
        let mut changed = full.clone();
        changed[5 * BLOCK] ^= 0xff;
        changed.splice(0..0, vec![9u8; BLOCK]);
        let (v2, pack2) = store(&tmp.path().join("b"), 2, &known, &changed);
        assert_eq!(v2.packs, vec![1, 2]);
        // The two new pages, and the small files that are the same come from version 1.
        assert_eq!(pack2.len(), 2 * BLOCK, "{}", pack2.len());

        let dest = tmp.path().join("restored");
        let mut a = Assembler::new(&dest, v2.clone()).unwrap();
        a.feed(1, &pack_entries(&v1).unwrap(), &pack1[..]).unwrap();
        a.feed(2, &pack_entries(&v2).unwrap(), &pack2[..]).unwrap();
        a.finish().unwrap();
        assert_eq!(fs::read(dest.join("criu/pages-1.img")).unwrap(), changed);
    }

    #[test]
    fn an_incremental_version_restores_with_its_parents_images_under_criu_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let (v1, pack1) = store(&tmp.path().join("a"), 1, &HashMap::new(), &pages(16, 1));
        let mut known = HashMap::new();
        known_blocks(&v1, &mut known).unwrap();
        // Version 2's dump holds only the two pages written since version 1.
        let (mut v2, pack2) = store(&tmp.path().join("b"), 2, &known, &pages(2, 9));
        v2.memory_parent = Some(1);
        known_blocks(&v2, &mut known).unwrap();
        let (mut v3, pack3) = store(&tmp.path().join("c"), 3, &known, &pages(1, 77));
        v3.memory_parent = Some(2);

        let by_version: HashMap<u64, VersionManifest> = [(1, v1.clone()), (2, v2.clone())].into();
        let chain = memory_chain(&v3, &by_version).unwrap();
        assert_eq!(chain.iter().map(|m| m.version).collect::<Vec<_>>(), [2, 1]);
        let whole = with_memory_chain(&v3, &chain).unwrap();
        assert_eq!(whole.packs, vec![1, 2, 3]);
        let dest = tmp.path().join("restored");
        let mut a = Assembler::new(&dest, whole).unwrap();
        for (v, pack) in [(&v1, &pack1), (&v2, &pack2), (&v3, &pack3)] {
            a.feed(v.version, &pack_entries(v).unwrap(), &pack[..]).unwrap();
        }
        a.finish().unwrap();
        assert_eq!(fs::read(dest.join("criu/pages-1.img")).unwrap(), pages(1, 77));
        assert_eq!(fs::read(dest.join("criu/parent/pages-1.img")).unwrap(), pages(2, 9));
        assert_eq!(fs::read(dest.join("criu/parent/parent/pages-1.img")).unwrap(), pages(16, 1));
        assert_eq!(fs::read(dest.join("criu/parent/core-1.img")).unwrap(), b"core");
        // Only the newest version's writable layer: a parent's is never restored.
        assert!(!dest.join("criu/parent/rootfs-diff.tar").exists());

        // A chain with a version missing, or out of turn, is refused.
        assert_eq!(memory_chain(&v3, &[(2, v2.clone())].into()).unwrap_err(), 1);
        let err = with_memory_chain(&v3, &[&v1]).unwrap_err().to_string();
        assert!(err.contains("out of turn"), "{err}");
        let err = with_memory_chain(&v3, &[&v2]).unwrap_err().to_string();
        assert!(err.contains("lacks version 1"), "{err}");
        // A manifest whose memory builds on itself or a newer version is malformed.
        v2.memory_parent = Some(2);
        let err = parse_version_manifest(&serde_json::to_vec(&v2).unwrap(), "v2").unwrap_err().to_string();
        assert!(err.contains("outside its own group"), "{err}");
    }

    #[test]
    fn a_flipped_byte_or_a_missing_pack_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (v1, mut pack1) = store(&tmp.path().join("a"), 1, &HashMap::new(), &pages(8, 3));
        pack1[100] ^= 1;
        let mut a = Assembler::new(&tmp.path().join("r1"), v1.clone()).unwrap();
        let err = a.feed(1, &pack_entries(&v1).unwrap(), &pack1[..]).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        let a = Assembler::new(&tmp.path().join("r2"), v1.clone()).unwrap();
        let err = a.finish().unwrap_err().to_string();
        assert!(err.contains("in none of its packs"), "{err}");
        let err = parse_version_manifest(b"{\"format\":\"x\"}", "v9").unwrap_err().to_string();
        assert!(err.contains("v9"), "{err}");
    }
}
