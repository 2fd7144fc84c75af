//! Checkpoint directories and checkpoint archives (see [`herd_proto::checkpoint`]).
//!
//! A node hashes a new checkpoint's files into its manifest ([`checkpoint_files`],
//! [`write_manifest`]). To move a checkpoint, [`pack_checkpoint`] writes the directory as an
//! uncompressed tar stream, the manifest first and then every file it lists, checking each
//! against the manifest as it goes; [`unpack_checkpoint`] turns such a stream back into a
//! directory, refusing anything the manifest does not list and checking every file's size and
//! digest. [`verify_checkpoint_dir`] checks a directory in place (an exported image directory
//! before it is uploaded).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use herd_proto::checkpoint::{
    CRIU_DIR, CheckpointManifest, FORMAT, MANIFEST_FILE, ManifestFile, ROOTFS_DIFF, SIGNATURE_FILE, validate_file_path,
};
use sha2::{Digest, Sha256};

use crate::error::ImageError;
use crate::signing::MAX_SIGNATURE;
use crate::tarwalk::{copy_data, corrupt, normalize, walk_tar};

/// The largest manifest accepted (a checkpoint lists a few hundred files at most).
pub const MAX_MANIFEST: u64 = 16 << 20;

fn not_a_checkpoint(what: impl std::fmt::Display, reason: impl Into<String>) -> ImageError {
    ImageError::NotACheckpoint { what: what.to_string(), reason: reason.into() }
}

/// Lists and hashes the files of checkpoint directory `dir`: its writable-layer snapshot and
/// everything below its CRIU image directory, in the order [`pack_checkpoint`] archives them.
/// Anything there but regular files and directories is an error.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<ManifestFile>, ImageError> {
    let mut files = Vec::new();
    let diff = dir.join(ROOTFS_DIFF);
    files.push(hash_file(&diff, ROOTFS_DIFF.to_string())?);
    let mut pending = vec![(dir.join(CRIU_DIR), CRIU_DIR.to_string())];
    while let Some((path, rel)) = pending.pop() {
        let mut names: Vec<_> = fs::read_dir(&path)
            .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>())
            .map_err(ImageError::io("list", &path))?;
        names.sort();
        for name in names.into_iter().rev() {
            let Some(name_str) = name.to_str() else {
                return Err(not_a_checkpoint(path.display(), format!("{name:?} is not a UTF-8 file name")));
            };
            let (child, child_rel) = (path.join(&name), format!("{rel}/{name_str}"));
            let meta = fs::symlink_metadata(&child).map_err(ImageError::io("inspect", &child))?;
            if meta.is_dir() {
                pending.push((child, child_rel));
            } else if meta.is_file() {
                files.push(hash_file(&child, child_rel)?);
            } else {
                return Err(not_a_checkpoint(child.display(), "only regular files belong in a checkpoint"));
            }
        }
    }
    files[1..].sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn hash_file(path: &Path, rel: String) -> Result<ManifestFile, ImageError> {
    let mut file = File::open(path).map_err(ImageError::io("open", path))?;
    let mut tally = Tally::new(&mut file);
    io::copy(&mut tally, &mut io::sink()).map_err(ImageError::io("read", path))?;
    Ok(ManifestFile { path: rel, size: tally.bytes, digest: tally.digest() })
}

/// Writes `manifest` into checkpoint directory `dir` (replacing the file atomically).
pub fn write_manifest(dir: &Path, manifest: &CheckpointManifest) -> Result<(), ImageError> {
    let json = serde_json::to_vec_pretty(manifest).expect("manifests serialize");
    let tmp = dir.join(format!(".{MANIFEST_FILE}.tmp"));
    fs::write(&tmp, json).map_err(ImageError::io("write", &tmp))?;
    let path = dir.join(MANIFEST_FILE);
    fs::rename(&tmp, &path).map_err(ImageError::io("write", &path))
}

/// Decodes and checks a manifest: its format and that every path stays inside the checkpoint.
/// `what` names the checkpoint in errors.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<CheckpointManifest, ImageError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| not_a_checkpoint(what, format!("its {MANIFEST_FILE} is not JSON: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(not_a_checkpoint(what, format!("it is in format {other}, and this herd reads {FORMAT}")));
        }
        None => return Err(not_a_checkpoint(what, format!("its {MANIFEST_FILE} names no format {FORMAT}"))),
    }
    let manifest: CheckpointManifest = serde_json::from_value(value)
        .map_err(|e| not_a_checkpoint(what, format!("its {MANIFEST_FILE} is malformed: {e}")))?;
    let mut seen = std::collections::HashSet::new();
    for f in &manifest.files {
        validate_file_path(&f.path).map_err(|e| not_a_checkpoint(what, e))?;
        if !seen.insert(f.path.as_str()) {
            return Err(not_a_checkpoint(what, format!("its manifest lists {} twice", f.path)));
        }
    }
    for part in [ROOTFS_DIFF, CRIU_DIR] {
        if !manifest.files.iter().any(|f| f.path == part || f.path.starts_with(&format!("{part}/"))) {
            return Err(not_a_checkpoint(what, format!("its manifest lists no {part}")));
        }
    }
    Ok(manifest)
}

/// Reads and checks the manifest of checkpoint directory `dir`, without looking at the files.
pub fn read_manifest(dir: &Path) -> Result<CheckpointManifest, ImageError> {
    let what = dir.display().to_string();
    let path = dir.join(MANIFEST_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_a_checkpoint(what, format!("it has no {MANIFEST_FILE}")));
        }
        Err(e) => return Err(ImageError::Io { action: "read", path, err: e }),
    };
    parse_manifest(&bytes, &what)
}

/// Checks checkpoint directory `dir` in place: its manifest, and the size and digest of every
/// file the manifest lists. Returns the manifest.
pub fn verify_checkpoint_dir(dir: &Path) -> Result<CheckpointManifest, ImageError> {
    if !dir.is_dir() {
        return Err(not_a_checkpoint(dir.display(), "it is not a directory"));
    }
    let manifest = read_manifest(dir)?;
    for f in &manifest.files {
        let path = dir.join(&f.path);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_a_checkpoint(dir.display(), format!("its file {} is missing", f.path)));
            }
            Err(e) => return Err(ImageError::Io { action: "inspect", path, err: e }),
        };
        if !meta.is_file() {
            return Err(not_a_checkpoint(dir.display(), format!("{} is not a regular file", f.path)));
        }
        let got = hash_file(&path, f.path.clone())?;
        check_file(f, &got, &dir.display().to_string())?;
    }
    Ok(manifest)
}

fn check_file(want: &ManifestFile, got: &ManifestFile, what: &str) -> Result<(), ImageError> {
    if got.size != want.size {
        return Err(not_a_checkpoint(
            what,
            format!(
                "{} has {} bytes but the manifest says {}: it is truncated or was modified",
                want.path, got.size, want.size
            ),
        ));
    }
    if got.digest != want.digest {
        return Err(ImageError::DigestMismatch {
            what: format!("{what}: {}", want.path),
            expected: want.digest.clone(),
            actual: got.digest.clone(),
        });
    }
    Ok(())
}

pub(crate) fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Writes checkpoint directory `dir` to `out` as a checkpoint archive: an uncompressed tar of
/// its manifest, its signature when `with_signature` and it has one, then every file the
/// manifest lists, in its order. A file that does not match the manifest (changed, truncated,
/// missing) is an error. Returns the manifest.
///
/// Nodes pack without the signature (the Control node signs what leaves the cluster); the CLI
/// packs an exported directory with it, for the Control node to check.
pub fn pack_checkpoint(dir: &Path, out: impl Write, with_signature: bool) -> Result<CheckpointManifest, ImageError> {
    let manifest = read_manifest(dir)?;
    let what = dir.display().to_string();
    let mut builder = tar::Builder::new(out);
    let pack_err = |path: &Path| {
        let path = path.to_path_buf();
        move |err| ImageError::Io { action: "pack", path, err }
    };
    let json = fs::read(dir.join(MANIFEST_FILE)).map_err(ImageError::io("read", dir.join(MANIFEST_FILE)))?;
    builder
        .append_data(&mut file_header(json.len() as u64), MANIFEST_FILE, &json[..])
        .map_err(pack_err(&dir.join(MANIFEST_FILE)))?;
    let sig_path = dir.join(SIGNATURE_FILE);
    if with_signature && sig_path.exists() {
        let sig = read_bounded(&sig_path, MAX_SIGNATURE, &what)?;
        builder
            .append_data(&mut file_header(sig.len() as u64), SIGNATURE_FILE, &sig[..])
            .map_err(pack_err(&sig_path))?;
    }
    for f in &manifest.files {
        let path = dir.join(&f.path);
        let mut file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => not_a_checkpoint(&what, format!("its file {} is missing", f.path)),
            _ => ImageError::Io { action: "open", path: path.clone(), err: e },
        })?;
        let size = file.metadata().map_err(ImageError::io("inspect", &path))?.len();
        if size != f.size {
            let got = ManifestFile { path: f.path.clone(), size, digest: String::new() };
            return Err(check_file(f, &got, &what).unwrap_err());
        }
        let mut tally = Tally::new((&mut file).take(f.size));
        builder.append_data(&mut file_header(f.size), &f.path, &mut tally).map_err(pack_err(&path))?;
        let got = ManifestFile { path: f.path.clone(), size: tally.bytes, digest: tally.digest() };
        check_file(f, &got, &what)?;
    }
    builder.into_inner().and_then(|mut w| w.flush()).map_err(pack_err(dir))?;
    Ok(manifest)
}

/// Reads a checkpoint archive from `input` into directory `dest` (missing or empty), checking
/// it as it arrives: the manifest must come first, then its signature may, and every other
/// entry must be a file it lists with the size and digest it gives, and every file it lists
/// must come. `what` names the archive in errors. On error, `dest` may hold part of the
/// checkpoint: the caller removes it. The signature is kept as it came, unchecked (only the
/// Control node can check it).
pub fn unpack_checkpoint(input: impl Read, dest: &Path, what: &str) -> Result<CheckpointManifest, ImageError> {
    prepare_dest(dest)?;
    let mut manifest: Option<CheckpointManifest> = None;
    let mut expected: HashMap<String, ManifestFile> = HashMap::new();
    // Files seen so far, the manifest included: the signature may only come second.
    let mut entries_seen = 0usize;
    let entries = walk_tar(input, what, true, |entry| {
        let raw = entry.path().map_err(|e| corrupt(what, &e))?.into_owned();
        let rel = normalize(&raw).ok_or_else(|| not_a_checkpoint(what, format!("entry {raw:?} leaves the archive")))?;
        let rel =
            rel.to_str().ok_or_else(|| not_a_checkpoint(what, format!("entry {raw:?} is not UTF-8")))?.to_string();
        let kind = entry.header().entry_type();
        let Some(m) = &manifest else {
            if rel != MANIFEST_FILE || !kind.is_file() {
                return Err(not_a_checkpoint(what, format!("it does not start with {MANIFEST_FILE} but with {rel:?}")));
            }
            if entry.size() > MAX_MANIFEST {
                return Err(not_a_checkpoint(what, format!("its {MANIFEST_FILE} is too large")));
            }
            let mut json = Vec::new();
            entry.read_to_end(&mut json).map_err(|e| corrupt(what, &e))?;
            let parsed = parse_manifest(&json, what)?;
            write_new(&dest.join(MANIFEST_FILE), &mut &json[..], what)?;
            expected = parsed.files.iter().map(|f| (f.path.clone(), f.clone())).collect();
            manifest = Some(parsed);
            entries_seen = 1;
            return Ok(());
        };
        if kind.is_dir() {
            return Ok(());
        }
        if rel == SIGNATURE_FILE && entries_seen == 1 && kind.is_file() {
            entries_seen += 1;
            if entry.size() > MAX_SIGNATURE {
                return Err(not_a_checkpoint(what, format!("its {SIGNATURE_FILE} is too large")));
            }
            return write_new(&dest.join(SIGNATURE_FILE), entry, what).map(|_| ());
        }
        entries_seen += 1;
        let Some(want) = expected.remove(&rel) else {
            let reason = if m.files.iter().any(|f| f.path == rel) {
                format!("it holds {rel} twice")
            } else {
                format!("it holds {rel}, which its manifest does not list")
            };
            return Err(not_a_checkpoint(what, reason));
        };
        if !kind.is_file() {
            return Err(not_a_checkpoint(what, format!("{rel} is not a regular file")));
        }
        let path = dest.join(&rel);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(ImageError::io("create", parent))?;
        }
        let mut tally = Tally::new(entry);
        write_new(&path, &mut tally, what)?;
        let got = ManifestFile { path: rel, size: tally.bytes, digest: tally.digest() };
        check_file(&want, &got, what)
    })?;
    let Some(manifest) = manifest else {
        return Err(not_a_checkpoint(
            what,
            if entries == 0 { "it is empty".to_string() } else { "it has no manifest".into() },
        ));
    };
    if let Some(missing) = manifest.files.iter().find(|f| expected.contains_key(&f.path)) {
        return Err(not_a_checkpoint(what, format!("its file {} is missing", missing.path)));
    }
    Ok(manifest)
}

fn prepare_dest(dest: &Path) -> Result<(), ImageError> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ImageError::InvalidDestination {
                    path: dest.to_path_buf(),
                    reason: "it is not empty".into(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dest).map_err(ImageError::io("create", dest))
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(ImageError::InvalidDestination { path: dest.to_path_buf(), reason: "it is not a directory".into() })
        }
        Err(e) => Err(ImageError::Io { action: "open", path: dest.to_path_buf(), err: e }),
    }
}

/// Reads a small file of a checkpoint whole, refusing one over `max` bytes.
fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, ImageError> {
    let file = File::open(path).map_err(ImageError::io("open", path))?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(ImageError::io("read", path))?;
    if bytes.len() as u64 > max {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        return Err(not_a_checkpoint(what, format!("its {name} is too large")));
    }
    Ok(bytes)
}

/// Creates `path` (which must not exist) with mode 0600 and copies `data` into it.
fn write_new(path: &PathBuf, data: &mut impl Read, what: &str) -> Result<u64, ImageError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(ImageError::io("create", path))?;
    let n = copy_data(data, &mut file, |e| corrupt(what, &e), path)?;
    file.flush().map_err(ImageError::io("write", path))?;
    Ok(n)
}

/// A reader that counts and hashes what passes through it.
struct Tally<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R> Tally<R> {
    fn new(inner: R) -> Self {
        Tally { inner, hasher: Sha256::new(), bytes: 0 }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for Tally<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_proto::node::ContainerSpec;
    use herd_proto::state::{CheckpointInfo, Limits};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "ab".repeat(16),
            name: "counter".into(),
            image: "busybox:latest".into(),
            layers: vec![],
            args: vec!["sh".into()],
            env: vec![],
            working_dir: "/".into(),
            user: String::new(),
            ip: "10.88.0.2".parse().unwrap(),
            limits: Limits::default(),
            labels: Default::default(),
            host: Default::default(),
            generation: 0,
            fenced: false,
        }
    }

    /// A checkpoint directory with a manifest, as a node writes it.
    fn checkpoint(dir: &Path) -> CheckpointManifest {
        fs::create_dir_all(dir.join("criu/sub")).unwrap();
        fs::write(dir.join("criu/pages-1.img"), vec![7u8; 3000]).unwrap();
        fs::write(dir.join("criu/core-1.img"), b"core").unwrap();
        fs::write(dir.join("criu/sub/x.img"), b"").unwrap();
        fs::write(dir.join(ROOTFS_DIFF), b"a tar").unwrap();
        fs::create_dir_all(dir.join("dump-work")).unwrap();
        fs::write(dir.join("dump-work/dump.log"), b"not part of it").unwrap();
        let files = checkpoint_files(dir).unwrap();
        let info = CheckpointInfo {
            id: "ck1".into(),
            node: "n1".into(),
            created_at: 1,
            leave_running: false,
            size_bytes: 3009,
        };
        let manifest = CheckpointManifest { format: FORMAT.into(), container: spec(), checkpoint: info, files };
        write_manifest(dir, &manifest).unwrap();
        manifest
    }

    fn packed(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        pack_checkpoint(dir, &mut out, true).unwrap();
        out
    }

    #[test]
    fn lists_files_in_archive_order() {
        let tmp = tempfile::tempdir().unwrap();
        let m = checkpoint(tmp.path());
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["rootfs-diff.tar", "criu/core-1.img", "criu/pages-1.img", "criu/sub/x.img"]);
        assert_eq!(m.size(), 3009);
    }

    #[test]
    fn round_trips_through_an_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let m = checkpoint(&src);
        let dest = tmp.path().join("dest");
        let got = unpack_checkpoint(&packed(&src)[..], &dest, "the archive").unwrap();
        assert_eq!(got, m);
        assert_eq!(verify_checkpoint_dir(&dest).unwrap(), m);
        assert_eq!(fs::read(dest.join("criu/pages-1.img")).unwrap(), vec![7u8; 3000]);
        assert!(!dest.join("dump-work").exists(), "only what the manifest lists travels");
    }

    #[test]
    fn corruption_is_found_in_a_directory_and_in_an_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        checkpoint(&src);
        let archive = packed(&src);
        fs::write(src.join("criu/core-1.img"), b"CORE").unwrap();
        let err = verify_checkpoint_dir(&src).unwrap_err().to_string();
        assert!(err.contains("criu/core-1.img: digest mismatch"), "{err}");
        let err = pack_checkpoint(&src, io::sink(), true).unwrap_err().to_string();
        assert!(err.contains("digest mismatch"), "{err}");
        fs::remove_file(src.join("criu/core-1.img")).unwrap();
        let err = verify_checkpoint_dir(&src).unwrap_err().to_string();
        assert!(err.contains("its file criu/core-1.img is missing"), "{err}");

        // A flipped byte in the pages, a cut-short archive.
        let mut bad = archive.clone();
        let at = bad.windows(8).position(|w| w == [7u8; 8]).unwrap();
        bad[at] = 8;
        let err = unpack_checkpoint(&bad[..], &tmp.path().join("d1"), "the archive").unwrap_err().to_string();
        assert!(err.contains("criu/pages-1.img: digest mismatch"), "{err}");
        let err = unpack_checkpoint(&archive[..2000], &tmp.path().join("d2"), "the archive").unwrap_err().to_string();
        assert!(err.contains("corrupt or truncated"), "{err}");
    }

    #[test]
    fn foreign_content_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let not = tmp.path().join("not");
        fs::create_dir_all(&not).unwrap();
        let err = verify_checkpoint_dir(&not).unwrap_err().to_string();
        assert!(err.contains("is not a usable Herd checkpoint: it has no checkpoint.json"), "{err}");
        fs::write(not.join(MANIFEST_FILE), br#"{"format":"podman/1"}"#).unwrap();
        let err = verify_checkpoint_dir(&not).unwrap_err().to_string();
        assert!(err.contains("format podman/1"), "{err}");
        let err = verify_checkpoint_dir(&not.join(MANIFEST_FILE)).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");

        // A tar that is not a checkpoint, and one with a file its manifest does not list.
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut file_header(2), "etc/hosts", &b"hi"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let err = unpack_checkpoint(&tar[..], &tmp.path().join("d1"), "the upload").unwrap_err().to_string();
        assert!(err.contains("does not start with checkpoint.json"), "{err}");
        let src = tmp.path().join("src");
        checkpoint(&src);
        let mut archive = packed(&src);
        archive.truncate(archive.len() - 1024); // drop the end-of-archive blocks
        let mut b = tar::Builder::new(archive);
        b.append_data(&mut file_header(1), "criu/extra.img", &b"x"[..]).unwrap();
        let err = unpack_checkpoint(&b.into_inner().unwrap()[..], &tmp.path().join("d2"), "the upload")
            .unwrap_err()
            .to_string();
        assert!(err.contains("criu/extra.img, which its manifest does not list"), "{err}");
        let err = unpack_checkpoint(&packed(&src)[..], &src, "x").unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
    }

    #[test]
    fn the_signature_travels_second_and_only_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        checkpoint(&src);
        fs::write(src.join(SIGNATURE_FILE), b"{\"mac\":\"00\"}").unwrap();
        verify_checkpoint_dir(&src).unwrap();
        let dest = tmp.path().join("with");
        unpack_checkpoint(&packed(&src)[..], &dest, "the archive").unwrap();
        assert_eq!(fs::read(dest.join(SIGNATURE_FILE)).unwrap(), b"{\"mac\":\"00\"}");
        let mut unsigned = Vec::new();
        pack_checkpoint(&src, &mut unsigned, false).unwrap();
        let dest = tmp.path().join("without");
        unpack_checkpoint(&unsigned[..], &dest, "the archive").unwrap();
        assert!(!dest.join(SIGNATURE_FILE).exists());

        // Anywhere but second, it is a file the manifest does not list.
        unsigned.truncate(unsigned.len() - 1024);
        let mut b = tar::Builder::new(unsigned);
        b.append_data(&mut file_header(2), SIGNATURE_FILE, &b"{}"[..]).unwrap();
        let err = unpack_checkpoint(&b.into_inner().unwrap()[..], &tmp.path().join("late"), "the upload")
            .unwrap_err()
            .to_string();
        assert!(err.contains("checkpoint.sig, which its manifest does not list"), "{err}");
    }
}
