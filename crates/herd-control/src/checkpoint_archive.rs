//! Checkpoint archives at the API's edge: what leaves the cluster is signed, what comes in is
//! checked before any node sees it.
//!
//! CRIU restores whatever its images describe (credentials, capabilities, namespaces,
//! mounts), so a checkpoint edited outside the cluster could grant its processes what the
//! container never had. The Control node therefore signs the manifest of every checkpoint it
//! exports (`GET .../checkpoints/ID/archive`: the signature entry goes in right after the
//! manifest) and accepts an upload (`POST .../restore/archive`) only when its manifest carries
//! this cluster's signature and names the container it is restored into. The manifest lists
//! the size and digest of every other file, which the node restoring it checks, and bounds
//! the archive's size: an upload that runs past what its manifest lists is cut off.
//!
//! The key is `checkpoint-signing.key` in the Control node's data directory (mode 0600),
//! made at its first start.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use herd_image::signing::{self, MAX_SIGNATURE, SigningKey};
use herd_proto::checkpoint::{CheckpointManifest, MANIFEST_FILE, SIGNATURE_FILE};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::error::{Error, Result};

/// The key's file name in the Control node's data directory.
pub const KEY_FILE: &str = "checkpoint-signing.key";

/// Reads the signing key from file `path`, making one (mode 0600) when there is none. Control
/// replicas share one key (`herd control --checkpoint-key`), so that an archive one exported
/// another restores.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<SigningKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(KEY_FILE);
    match std::fs::read_to_string(path) {
        Ok(text) => {
            return SigningKey::parse(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a checkpoint signing key: {e}", path.display()));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
    let key = SigningKey::from_bytes(rand::rng().random());
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    }
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", tmp.display()))?;
    file.write_all(format!("{}\n", key.to_hex()).as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    // A concurrent first start may have won: the key on disk is the one.
    if std::fs::hard_link(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        return load_or_create_key(path);
    }
    let _ = std::fs::remove_file(&tmp);
    tracing::info!("made the checkpoint signing key {} ({})", key.id(), path.display());
    Ok(key)
}

/// One tar entry read whole from the head of an archive.
struct Entry {
    name: String,
    data: Vec<u8>,
    /// The entry as it was in the archive: header, data, padding.
    raw: Vec<u8>,
}

/// Reads the next entry of a checkpoint archive, a regular file of at most `max` bytes;
/// `None` at the end of the archive. `what` names the archive in errors.
async fn read_entry(r: &mut (impl AsyncRead + Unpin), max: u64, what: &str) -> io::Result<Option<Entry>> {
    let mut block = [0u8; 512];
    r.read_exact(&mut block).await.map_err(|e| truncated(what, e))?;
    let Some((name, size, is_file)) = signing::parse_tar_header(&block).map_err(|e| invalid(what, e))? else {
        return Ok(None);
    };
    if !is_file {
        return Err(invalid(what, format!("{name} is not a regular file")));
    }
    if size > max {
        return Err(invalid(what, format!("its {name} has {size} bytes, more than the {max} a checkpoint's may")));
    }
    let mut raw = Vec::with_capacity(signing::tar_entry_len(size) as usize);
    raw.extend_from_slice(&block);
    raw.resize(signing::tar_entry_len(size) as usize, 0);
    r.read_exact(&mut raw[512..]).await.map_err(|e| truncated(what, e))?;
    let data = raw[512..512 + size as usize].to_vec();
    Ok(Some(Entry { name, data, raw }))
}

fn invalid(what: &str, reason: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what} is not a usable Herd checkpoint: {reason}"))
}

fn truncated(what: &str, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof { invalid(what, "it ends too early") } else { e }
}

/// The exported archive `archive` (a node's, unsigned) with its manifest signed by `key`:
/// the manifest entry, the signature entry, then the rest as it is.
pub async fn signed_export(
    mut archive: impl AsyncRead + Unpin + Send + 'static,
    key: SigningKey,
) -> io::Result<impl AsyncRead + Send + 'static> {
    let what = "the exported checkpoint";
    let manifest = read_entry(&mut archive, herd_image::MAX_MANIFEST, what)
        .await?
        .filter(|e| e.name == MANIFEST_FILE)
        .ok_or_else(|| invalid(what, format!("it does not start with {MANIFEST_FILE}")))?;
    let sig = signing::signature_file(&key.sign(&manifest.data));
    let mut head = manifest.raw;
    head.extend(signing::tar_entry(SIGNATURE_FILE, &sig));
    Ok(io::Cursor::new(head).chain(archive))
}

/// An upload checked at its head: its manifest, and the archive to store (the head read so
/// far, then the rest of the upload, cut off where the manifest says it ends).
pub struct CheckedUpload<R> {
    pub manifest: CheckpointManifest,
    pub archive: Bounded<tokio::io::Chain<io::Cursor<Vec<u8>>, R>>,
}

/// Reads the head of an uploaded checkpoint archive and checks it: the manifest first, then
/// this cluster's signature of it, for the container `container_id`.
pub async fn check_upload<R: AsyncRead + Unpin>(
    mut upload: R,
    key: &SigningKey,
    container: &str,
    container_id: &str,
) -> Result<CheckedUpload<R>> {
    let what = "the uploaded checkpoint";
    let bad = |e: io::Error| Error::bad_request(format!("{e}"));
    let manifest_entry = read_entry(&mut upload, herd_image::MAX_MANIFEST, what)
        .await
        .map_err(bad)?
        .filter(|e| e.name == MANIFEST_FILE)
        .ok_or_else(|| Error::bad_request(format!("{what} does not start with {MANIFEST_FILE}")))?;
    let manifest =
        herd_image::parse_manifest(&manifest_entry.data, what).map_err(|e| Error::bad_request(e.to_string()))?;
    let refused = |e: signing::SignatureError| Error::forbidden(format!("{what} cannot be restored: {e}"));
    let sig_entry = read_entry(&mut upload, MAX_SIGNATURE, what).await.map_err(bad)?;
    let sig_entry = match sig_entry {
        Some(e) if e.name == SIGNATURE_FILE => e,
        _ => return Err(refused(signing::SignatureError::Missing)),
    };
    key.verify_file(&manifest_entry.data, &sig_entry.data).map_err(refused)?;
    if manifest.container.id != container_id {
        return Err(Error::bad_request(format!(
            "{what} is a checkpoint of container {} ({}), not of {container}: restore it into the container it was taken from",
            manifest.container.name,
            &manifest.container.id[..manifest.container.id.len().min(12)],
        )));
    }
    // What may follow the head: every listed file as a tar entry, and the end of the archive
    // (two zero blocks; writers may pad it to a 10 KiB record).
    let mut head = manifest_entry.raw;
    head.extend(sig_entry.raw);
    let limit = manifest
        .files
        .iter()
        .try_fold(head.len() as u64 + 10 * 1024, |sum, f| {
            f.size.checked_next_multiple_of(512).and_then(|padded| sum.checked_add(512)?.checked_add(padded))
        })
        .ok_or_else(|| {
            Error::bad_request(format!(
                "{what} is not a usable Herd checkpoint: its manifest lists more bytes than a file system holds"
            ))
        })?;
    Ok(CheckedUpload { manifest, archive: Bounded::new(io::Cursor::new(head).chain(upload), limit) })
}

/// A reader that fails once more than `limit` bytes came through it.
pub struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R> Bounded<R> {
    pub fn new(inner: R, limit: u64) -> Bounded<R> {
        Bounded { inner, left: limit, limit }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Bounded<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // One byte more than allowed tells an overrun from an end right at the limit.
        let max = buf.remaining().min(usize::try_from(this.left.saturating_add(1)).unwrap_or(usize::MAX));
        let mut sub = buf.take(max);
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
        let n = sub.filled().len();
        if n as u64 > this.left {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the upload runs past the {} bytes its manifest accounts for: it is not the checkpoint its \
                     manifest describes",
                    this.limit
                ),
            )));
        }
        // SAFETY: the inner reader initialised and filled the first `n` bytes of `sub`, which
        // are the first `n` unfilled bytes of `buf`.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        this.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_proto::checkpoint::FORMAT;

    fn manifest_json(id: &str) -> Vec<u8> {
        let spec = serde_json::json!({
            "id": id, "name": "c", "image": "busybox:latest", "layers": [], "args": [], "env": [],
            "working_dir": "/", "ip": "10.88.0.2", "limits": {}, "labels": {},
        });
        serde_json::to_vec(&serde_json::json!({
            "format": FORMAT,
            "container": spec,
            "checkpoint": {"id": "ck1", "node": "n1", "created_at": 0, "leave_running": false, "size_bytes": 3},
            "files": [
                {"path": "rootfs-diff.tar", "size": 1, "digest": "sha256:00"},
                {"path": "criu/core-1.img", "size": 2, "digest": "sha256:00"},
            ],
        }))
        .unwrap()
    }

    fn archive(manifest: &[u8], sig: Option<&[u8]>, extra: usize) -> Vec<u8> {
        let mut a = signing::tar_entry(MANIFEST_FILE, manifest);
        if let Some(sig) = sig {
            a.extend(signing::tar_entry(SIGNATURE_FILE, sig));
        }
        a.extend(signing::tar_entry("rootfs-diff.tar", b"x"));
        a.extend(signing::tar_entry("criu/core-1.img", &vec![1u8; 2 + extra]));
        a.extend([0u8; 1024]);
        a
    }

    async fn read_all(mut r: impl AsyncRead + Unpin) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn exports_are_signed_and_uploads_checked() {
        let key = SigningKey::from_bytes([3; 32]);
        let id = "ab".repeat(16);
        let manifest = manifest_json(&id);
        let unsigned = archive(&manifest, None, 0);
        let signed =
            read_all(signed_export(io::Cursor::new(unsigned.clone()), key.clone()).await.unwrap()).await.unwrap();
        let sig = signing::signature_file(&key.sign(&manifest));
        assert_eq!(signed, archive(&manifest, Some(&sig), 0));

        // The signed archive goes through whole.
        let up = check_upload(&signed[..], &key, "c", &id).await.unwrap();
        assert_eq!(up.manifest.container.id, id);
        assert_eq!(read_all(up.archive).await.unwrap(), signed);

        // Unsigned, signed by another key, modified, of another container.
        let err = check_upload(&unsigned[..], &key, "c", &id).await.err().unwrap();
        assert!(err.message.contains("not signed by this cluster"), "{}", err.message);
        let other = SigningKey::from_bytes([4; 32]);
        let err = check_upload(&signed[..], &other, "c", &id).await.err().unwrap();
        assert!(err.message.contains("another cluster's key"), "{}", err.message);
        let mut edited = manifest.clone();
        let at = edited.windows(6).position(|w| w == b"\"size\"").unwrap();
        edited[at + 7] = b'9';
        let tampered = archive(&edited, Some(&sig), 0);
        let err = check_upload(&tampered[..], &key, "c", &id).await.err().unwrap();
        assert!(err.message.contains("modified after it was exported"), "{}", err.message);
        let err = check_upload(&signed[..], &key, "d", &"cd".repeat(16)).await.err().unwrap();
        assert!(err.message.contains("not of d"), "{}", err.message);

        // A file longer than the manifest says runs past the bound.
        let long = archive(&manifest, Some(&sig), 20_000);
        let up = check_upload(&long[..], &key, "c", &id).await.unwrap();
        let err = read_all(up.archive).await.unwrap_err();
        assert!(err.to_string().contains("runs past"), "{err}");
    }

    #[tokio::test]
    async fn sizes_past_u64_are_refused() {
        // Found while writing the checkpoint fuzz target: the bound on the upload overflowed
        // (a panic where overflow is checked) for a signed manifest listing huge sizes.
        let key = SigningKey::from_bytes([3; 32]);
        let id = "ab".repeat(16);
        for sizes in [[u64::MAX, 1], [u64::MAX / 2, u64::MAX / 2]] {
            let mut manifest: serde_json::Value = serde_json::from_slice(&manifest_json(&id)).unwrap();
            for (file, size) in manifest["files"].as_array_mut().unwrap().iter_mut().zip(sizes) {
                file["size"] = size.into();
            }
            let manifest = serde_json::to_vec(&manifest).unwrap();
            let sig = signing::signature_file(&key.sign(&manifest));
            let upload = archive(&manifest, Some(&sig), 0);
            let err = check_upload(&upload[..], &key, "c", &id).await.err().unwrap();
            assert!(err.message.contains("more bytes than a file system holds"), "{}", err.message);
        }
    }

    #[test]
    fn the_key_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(KEY_FILE);
        let key = load_or_create_key(&path).unwrap();
        let again = load_or_create_key(&path).unwrap();
        assert_eq!(key.id(), again.id());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "nope").unwrap();
        assert!(load_or_create_key(&path).unwrap_err().to_string().contains("not a checkpoint signing key"));
    }
}
