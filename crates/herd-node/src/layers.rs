//! The node's image layer cache, content-addressed by digest: a layer is fetched from the
//! Control node's layer store over the broker, verified, and unpacked once, then shared
//! read-only by every container that uses it.
//!
//! Unpacking is bounded ([`LayerLimits`]): a layer may unpack to at most `max_layer_size`
//! (the Control node checks that at import, but a layer can reach the store by another path),
//! and the node keeps `disk_reserve` bytes free on the filesystem of its layer directory: a
//! layer is not fetched when its blob would eat into the reserve, and unpacking stops once
//! the free space falls below it. A fetch or unpack that fails leaves nothing behind.
//!
//! There is no bound per image here: each layer is unpacked once and shared by the images
//! that list it, and the disk reserve bounds what all of them take together.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use herd_broker::Objects;
use herd_proto::state::LayerRef;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// What unpacking a layer on this node may cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerLimits {
    /// The most one layer may unpack to.
    pub max_layer_size: u64,
    /// Free space to keep on the filesystem of the layer directory.
    pub disk_reserve: DiskReserveSpec,
}

impl Default for LayerLimits {
    fn default() -> Self {
        LayerLimits {
            max_layer_size: herd_image::UnpackLimits::DEFAULT_LAYER,
            disk_reserve: DiskReserveSpec::Share(DEFAULT_RESERVE_PERCENT),
        }
    }
}

/// The default disk reserve: 5% of the filesystem (a few GiB on a typical node disk), so
/// the node, its containers' writable layers and logs always have room left.
pub const DEFAULT_RESERVE_PERCENT: f64 = 5.0;

/// A disk reserve as given: bytes, or a share of the filesystem in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiskReserveSpec {
    Bytes(u64),
    Share(f64),
}

impl DiskReserveSpec {
    /// `2g` (a size, as `--memory` takes it) or `5%` (of the filesystem).
    pub fn parse(text: &str) -> anyhow::Result<DiskReserveSpec> {
        let t = text.trim();
        if let Some(pct) = t.strip_suffix('%') {
            match pct.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => return Ok(DiskReserveSpec::Share(p)),
                _ => bail!("invalid disk reserve {text:?}: a share of the filesystem is 0% to 100%"),
            }
        }
        herd_proto::units::parse_memory(t).map(DiskReserveSpec::Bytes).map_err(|_| {
            anyhow::anyhow!("invalid disk reserve {text:?}: use a size (2g, 512m) or a share of the filesystem (5%)")
        })
    }

    /// The reserve in bytes on a filesystem of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            DiskReserveSpec::Bytes(b) => b,
            DiskReserveSpec::Share(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

pub struct LayerCache {
    dir: PathBuf,
    store: Objects,
    /// The most one layer may unpack to.
    max_layer_size: u64,
    /// Bytes kept free on the filesystem of `dir`.
    reserve: u64,
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
    /// What one layer may unpack to on this node: its size bound, and the disk reserve kept
    /// on the filesystem of the layer cache. A container's writable layer arriving with a
    /// checkpoint or a migration is held to the same.
    pub fn bounds(&self) -> herd_image::LayerBounds {
        herd_image::LayerBounds {
            max_size: self.max_layer_size,
            reserve: Some(herd_image::DiskReserve { path: self.dir.clone(), bytes: self.reserve }),
        }
    }

    pub fn new(dir: PathBuf, store: Objects, limits: LayerLimits) -> anyhow::Result<LayerCache> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (free, total) =
            herd_image::disk_space(&dir).with_context(|| format!("reading the size of {}", dir.display()))?;
        let reserve = limits.disk_reserve.bytes(total);
        tracing::info!(
            "layers unpack to at most {} each; {} of disk kept free under {} ({} free now)",
            herd_proto::units::Bytes(limits.max_layer_size),
            herd_proto::units::Bytes(reserve),
            dir.display(),
            herd_proto::units::Bytes(free)
        );
        // Leftovers of fetches interrupted by a crash.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
                }
            }
        }
        Ok(LayerCache {
            dir,
            store,
            max_layer_size: limits.max_layer_size,
            reserve,
            inflight: Mutex::new(HashMap::new()),
        })
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
        // A read that a failover of a clustered broker cut off is made again, twice at most.
        let mut tries = 0;
        let result = loop {
            let result = self.fetch_and_unpack(layer, &blob, &unpack, &dest).await;
            let _ = std::fs::remove_file(&blob);
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&unpack);
            }
            match result {
                Err(e) if tries < 2 && herd_broker::failover_error(&format!("{e:#}")) => {
                    tracing::info!("fetching layer {} again: {e:#}", layer.digest);
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                r => break r,
            }
        };
        self.inflight.lock().await.remove(&layer.digest);
        result.map(|_| dest)
    }

    async fn fetch_and_unpack(&self, layer: &LayerRef, blob: &Path, unpack: &Path, dest: &Path) -> anyhow::Result<()> {
        // The blob itself goes to disk first: refuse before fetching when it would eat into the reserve.
        let (free, _) = herd_image::disk_space(&self.dir)
            .with_context(|| format!("reading the free space of {}", self.dir.display()))?;
        if free < self.reserve.saturating_add(layer.size) {
            return Err(herd_image::ImageError::DiskReserve {
                what: format!("layer {} ({} compressed)", layer.digest, herd_proto::units::Bytes(layer.size)),
                path: self.dir.clone(),
                reserve: self.reserve,
                free,
            }
            .into());
        }
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
        let bounds = self.bounds();
        let unpacked = tokio::task::spawn_blocking(move || {
            herd_image::extract_layer_within(&blob, compression, &unpack2, &bounds)
        })
        .await
        .context("layer unpack task")?;
        let what = || format!("layer {}", layer.digest);
        match unpacked {
            Ok(()) => {}
            // Name the layer rather than the temporary file it was fetched into.
            Err(herd_image::ImageError::TooLarge { limit, bound, .. }) => {
                return Err(herd_image::ImageError::TooLarge { what: what(), limit, bound }.into());
            }
            Err(herd_image::ImageError::DiskReserve { path, reserve, free, .. }) => {
                return Err(herd_image::ImageError::DiskReserve { what: what(), path, reserve, free }.into());
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("unpacking layer {}", layer.digest))),
        }
        std::fs::rename(unpack, dest).with_context(|| format!("moving layer into {}", dest.display()))?;
        tracing::info!("layer {} cached ({size} bytes)", layer.digest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{DiskReserveSpec, digest_hex};

    #[test]
    fn disk_reserves() {
        assert_eq!(DiskReserveSpec::parse("2g").unwrap(), DiskReserveSpec::Bytes(2 << 30));
        assert_eq!(DiskReserveSpec::parse("5%").unwrap(), DiskReserveSpec::Share(5.0));
        assert_eq!(DiskReserveSpec::parse("0").unwrap(), DiskReserveSpec::Bytes(0));
        assert_eq!(DiskReserveSpec::Share(5.0).bytes(1000), 50);
        assert_eq!(DiskReserveSpec::Bytes(7).bytes(1000), 7);
        for bad in ["", "101%", "-1%", "lots", "5%%"] {
            assert!(DiskReserveSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digests_are_checked_before_becoming_paths() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest_hex(&ok).unwrap(), "a".repeat(64));
        assert!(digest_hex("sha256:../../etc").is_err());
        assert!(digest_hex("md5:abc").is_err());
    }
}
