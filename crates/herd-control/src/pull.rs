//! `herd image pull`: the Control node pulls an image from a registry into the layer store
//! and records it, ending in the same state an import does (layers in the object store by
//! digest, an [`ImageRecord`]), so nodes, containers and migration need nothing new.
//!
//! Every blob is verified (size and sha256) before it is stored; layers the store already
//! has are not transferred. The record is written only once every layer is stored: a failed
//! pull leaves no image, only the verified layers it stored (they are content-addressed and
//! reused by the next pull).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use herd_proto::names::{image_key, normalize_image};
use herd_proto::now_millis;
use herd_proto::pull::{PullLayer, PullReport, PullRequest, PullUpdate};
use herd_proto::state::{Compression, ImageRecord, LayerRef, RegistryOrigin};
use herd_registry::{Credentials, Descriptor, Reference, RegistryClient, RegistryError};
use rand::Rng;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::control::Control;
use crate::error::{Error, Kind, Result};

/// Layers downloaded at the same time.
const PARALLEL_LAYERS: usize = 3;
/// Bytes between two progress updates of one layer.
const PROGRESS_STEP: u64 = 1 << 20;

/// What [`check_pull`] made of a pull request.
#[derive(Debug)]
pub struct CheckedPull {
    pub reference: Reference,
    /// The local image name, normalised.
    pub name: String,
    pub credentials: Option<Credentials>,
}

/// The checks of a pull request made before any registry is asked: the reference, the local
/// name, and credentials given whole or not at all.
pub fn check_pull(req: &PullRequest) -> Result<CheckedPull> {
    let reference = Reference::parse(req.reference.trim()).map_err(registry_error)?;
    let name = req.name.clone().unwrap_or_else(|| reference.local_name());
    let name = normalize_image(&name).map_err(|e| Error::bad_request(e.0))?;
    let credentials = match (&req.username, &req.password) {
        (Some(username), Some(password)) => {
            Some(Credentials { username: username.clone(), password: password.clone() })
        }
        (None, None) => None,
        _ => return Err(Error::bad_request("registry credentials need both a user name and a password")),
    };
    Ok(CheckedPull { reference, name, credentials })
}

impl Control {
    /// Pulls `req.reference`, sending [`PullUpdate`]s (resolved, progress, stored) to
    /// `updates`; returns the report (the caller sends it last).
    pub async fn pull_image(&self, req: PullRequest, updates: mpsc::Sender<PullUpdate>) -> Result<PullReport> {
        let started = Instant::now();
        let CheckedPull { reference, name, credentials } = check_pull(&req)?;
        let client = RegistryClient::new(&reference, credentials, req.insecure).map_err(registry_error)?;
        let resolved = client.resolve("linux", herd_image::host_architecture()).await.map_err(registry_error)?;

        // Each distinct layer once, with whether the layer store has it already.
        let mut distinct: Vec<(Descriptor, bool)> = Vec::new();
        for layer in &resolved.layers {
            if !distinct.iter().any(|(d, _)| d.digest == layer.digest) {
                let present = self.layers.info(&layer.digest).await.is_ok();
                distinct.push((layer.clone(), present));
            }
        }
        let _ = updates
            .send(PullUpdate::Resolved {
                reference: resolved.reference.clone(),
                manifest_digest: resolved.manifest_digest.clone(),
                platform: resolved.platform.clone(),
                layers: distinct
                    .iter()
                    .map(|(d, present)| PullLayer { digest: d.digest.clone(), size: d.size, present: *present })
                    .collect(),
            })
            .await;

        let tag: u64 = rand::rng().random();
        let work = self.cfg.data_dir.join("uploads").join(format!("pull-{tag:016x}"));
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let missing: Vec<Descriptor> =
            distinct.iter().filter(|(_, present)| !present).map(|(d, _)| d.clone()).collect();
        let count = resolved.layers.len();
        let mut jobs = Vec::with_capacity(missing.len());
        for layer in &missing {
            let index = resolved.layers.iter().position(|l| l.digest == layer.digest).unwrap_or(0);
            let what = format!("layer {} of {count} ({}) of {}", index + 1, layer.digest, resolved.reference);
            jobs.push(self.fetch_layer(&client, layer.clone(), what, &work, &updates));
        }
        let fetched = futures::stream::iter(jobs)
            .buffer_unordered(PARALLEL_LAYERS)
            .try_collect::<Vec<(String, Compression)>>()
            .await;
        if let Err(e) = std::fs::remove_dir_all(&work) {
            tracing::warn!("could not remove {}: {e}", work.display());
        }
        let fetched = fetched?;

        let mut layers = Vec::with_capacity(count);
        for layer in &resolved.layers {
            let compression = match fetched.iter().find(|(d, _)| *d == layer.digest) {
                Some((_, c)) => *c,
                None => self.stored_compression(&layer.digest).await?,
            };
            layers.push(LayerRef { digest: layer.digest.clone(), size: layer.size, compression });
        }
        let record = ImageRecord {
            name: name.clone(),
            id: resolved.config_digest.clone(),
            layers,
            config: resolved.config.clone(),
            source: "registry".into(),
            created_at: now_millis(),
            registry: Some(RegistryOrigin {
                reference: resolved.reference.clone(),
                manifest_digest: resolved.manifest_digest.clone(),
            }),
        };
        self.images.put(&image_key(&name), &record).await?;
        self.view.write().unwrap().images.insert(name.clone(), record.clone());
        let bytes_fetched: u64 = missing.iter().map(|d| d.size).sum();
        self.events
            .emit(
                "image",
                "pull",
                &name,
                None,
                format!(
                    "image {name} pulled from {} ({}; {} of {} layers fetched, {})",
                    resolved.reference,
                    resolved.manifest_digest,
                    missing.len(),
                    distinct.len(),
                    herd_proto::units::Bytes(bytes_fetched)
                ),
            )
            .await;
        Ok(PullReport {
            image: record,
            layers_fetched: missing.len(),
            bytes_fetched,
            layers_present: distinct.len() - missing.len(),
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Downloads one layer into `work`, verified, then stores it in the layer store; returns its
    /// digest and compression.
    async fn fetch_layer(
        &self,
        client: &RegistryClient,
        layer: Descriptor,
        what: String,
        work: &Path,
        updates: &mpsc::Sender<PullUpdate>,
    ) -> Result<(String, Compression)> {
        let path = work.join(layer.digest.replace(':', "-"));
        let mut file = tokio::fs::File::create(&path).await.with_context(|| format!("creating {}", path.display()))?;
        let mut reported = 0u64;
        let head = client
            .fetch_blob(&layer, &what, &mut file, |bytes| {
                if bytes - reported >= PROGRESS_STEP || bytes == layer.size {
                    reported = bytes;
                    // Progress is advisory: a slow reader misses some, never blocks the pull.
                    let _ = updates.try_send(PullUpdate::Progress {
                        digest: layer.digest.clone(),
                        bytes,
                        size: layer.size,
                    });
                }
            })
            .await
            .map_err(registry_error)?;
        drop(file);
        let compression = herd_image::layer_compression(&head).map_err(|format| {
            Error::bad_request(format!("{what} is {format}-compressed, which herd does not read (tar, gzip or zstd)"))
        })?;
        // Within what one layer may unpack to, checked before the layer is stored.
        let limits = herd_image::UnpackLimits { layer: self.cfg.unpack_limits.layer, image: u64::MAX };
        let (blob, what_blob) = (path.clone(), what.clone());
        tokio::task::spawn_blocking(move || herd_image::measure_layer(&blob, compression, &what_blob, &limits, 0))
            .await
            .context("layer check task")?
            .map_err(|e| match e {
                herd_image::ImageError::TooLarge { .. } => Error::too_large(format!("cannot pull: {e}")),
                _ => Error::bad_request(format!("cannot pull: {e}")),
            })?;
        let mut file = tokio::fs::File::open(&path).await.with_context(|| format!("opening {}", path.display()))?;
        herd_broker::put_object(&self.layers, &layer.digest, &mut file)
            .await
            .with_context(|| format!("storing {what}"))?;
        let _ = updates.send(PullUpdate::Stored { digest: layer.digest.clone(), size: layer.size }).await;
        Ok((layer.digest.clone(), compression))
    }

    /// The compression of a layer the store already holds: as an image record says, or from
    /// the blob's first bytes.
    async fn stored_compression(&self, digest: &str) -> Result<Compression> {
        let known = self
            .view
            .read()
            .unwrap()
            .images
            .values()
            .flat_map(|i| i.layers.iter())
            .find(|l| l.digest == digest)
            .map(|l| l.compression);
        if let Some(c) = known {
            return Ok(c);
        }
        let mut object =
            self.layers.get(digest).await.with_context(|| format!("reading layer {digest} from the layer store"))?;
        let mut head = Vec::with_capacity(8);
        (&mut object).take(8).read_to_end(&mut head).await.with_context(|| format!("reading layer {digest}"))?;
        herd_image::layer_compression(&head).map_err(|format| {
            Error::bad_request(format!("layer {digest} is {format}-compressed, which herd does not read"))
        })
    }
}

/// The API error a registry error becomes: the request's fault, or the registry's.
fn registry_error(e: RegistryError) -> Error {
    let kind = match &e {
        RegistryError::NotFound { .. } => Kind::NotFound,
        e if e.is_user_error() => Kind::BadRequest,
        RegistryError::Io { .. } => Kind::Internal,
        _ => Kind::Unavailable,
    };
    Error::new(kind, format!("cannot pull: {e}"))
}
