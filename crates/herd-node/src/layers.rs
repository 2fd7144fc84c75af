//! The node's image layer cache, content-addressed by digest: a layer is fetched from the
//! Control node's layer store over the broker, verified, and unpacked once, then shared
//! read-only by every container that uses it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use herd_broker::Objects;
use herd_proto::state::LayerRef;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

pub struct LayerCache {
    dir: PathBuf,
    store: Objects,
    /// One lock per digest, so concurrent containers fetch a layer once.
    inflight: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// `sha256:<64 hex>` -> the hex part, refusing anything else (it becomes a path).
fn digest_hex(digest: &str) -> anyhow::Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => bail!("unsupported layer digest {digest:?}"),
    }
}

impl LayerCache {
    pub fn new(dir: PathBuf, store: Objects) -> anyhow::Result<LayerCache> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Leftovers of fetches interrupted by a crash.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
                }
            }
        }
        Ok(LayerCache { dir, store, inflight: Mutex::new(HashMap::new()) })
    }

    /// The directory a layer is unpacked in.
    pub fn path(&self, digest: &str) -> anyhow::Result<PathBuf> {
        Ok(self.dir.join(digest_hex(digest)?))
    }

    /// Makes sure every layer is unpacked locally; returns their directories, bottom first.
    pub async fn ensure(&self, layers: &[LayerRef]) -> anyhow::Result<Vec<PathBuf>> {
        let mut out = Vec::with_capacity(layers.len());
        for layer in layers {
            out.push(self.ensure_one(layer).await?);
        }
        Ok(out)
    }

    async fn ensure_one(&self, layer: &LayerRef) -> anyhow::Result<PathBuf> {
        let dest = self.path(&layer.digest)?;
        if dest.exists() {
            return Ok(dest);
        }
        let lock = self.inflight.lock().await.entry(layer.digest.clone()).or_default().clone();
        let _held = lock.lock().await;
        if dest.exists() {
            return Ok(dest);
        }
        let hex = digest_hex(&layer.digest)?;
        let tag: u32 = rand::random();
        let blob = self.dir.join(format!(".tmp-{hex}-{tag:08x}.blob"));
        let unpack = self.dir.join(format!(".tmp-{hex}-{tag:08x}"));
        let result = self.fetch_and_unpack(layer, &blob, &unpack, &dest).await;
        let _ = std::fs::remove_file(&blob);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&unpack);
        }
        self.inflight.lock().await.remove(&layer.digest);
        result.map(|_| dest)
    }

    async fn fetch_and_unpack(&self, layer: &LayerRef, blob: &Path, unpack: &Path, dest: &Path) -> anyhow::Result<()> {
        let mut object = self
            .store
            .get(&layer.digest)
            .await
            .with_context(|| format!("fetching layer {} from the layer store", layer.digest))?;
        let mut file = tokio::fs::File::create(blob).await.with_context(|| format!("creating {}", blob.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut size = 0u64;
        loop {
            let n = object.read(&mut buf).await.with_context(|| format!("receiving layer {}", layer.digest))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).await?;
            size += n as u64;
        }
        file.flush().await?;
        drop(file);
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != layer.digest {
            bail!("layer {} arrived corrupted: its content hashes to {got} ({size} bytes)", layer.digest);
        }
        std::fs::create_dir_all(unpack)?;
        let (blob, unpack2, compression) = (blob.to_path_buf(), unpack.to_path_buf(), layer.compression);
        tokio::task::spawn_blocking(move || herd_image::extract_layer(&blob, compression, &unpack2))
            .await
            .context("layer unpack task")?
            .with_context(|| format!("unpacking layer {}", layer.digest))?;
        std::fs::rename(unpack, dest).with_context(|| format!("moving layer into {}", dest.display()))?;
        tracing::info!("layer {} cached ({size} bytes)", layer.digest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::digest_hex;

    #[test]
    fn digests_are_checked_before_becoming_paths() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest_hex(&ok).unwrap(), "a".repeat(64));
        assert!(digest_hex("sha256:../../etc").is_err());
        assert!(digest_hex("md5:abc").is_err());
    }
}
