//! Images: import of an uploaded archive into the layer store, listing and removal.
//!
//! Layers go into the broker's object store, named by digest; nodes fetch them from there
//! over the network when a container is placed on them.
//!
//! An import is bounded ([`ControlConfig::unpack_limits`](crate::ControlConfig)): the upload,
//! each layer and the whole image are refused (HTTP 413) once they pass what an image may
//! unpack to, before any layer is stored. An import that fails for any reason leaves nothing
//! behind: its scratch directory is removed, and the layers it stored (that no image used
//! before) are deleted from the layer store.

use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use herd_proto::names::{image_key, normalize_image};
use herd_proto::now_millis;
use herd_proto::state::ImageRecord;
use rand::Rng;
use tokio::io::AsyncWriteExt;

use crate::control::Control;
use crate::error::{Error, Kind, Result};

/// The largest upload an import accepts: an archive holds its layers compressed or not, so
/// one larger than the image bound (plus what tar headers and incompressible data add) cannot
/// be an image within it.
fn max_upload(limits: &herd_image::UnpackLimits) -> u64 {
    limits.image.saturating_add(limits.image / 32).saturating_add(1 << 20)
}

impl Control {
    pub fn list_images(&self) -> Vec<ImageRecord> {
        let view = self.view.read().unwrap();
        let mut out: Vec<ImageRecord> = view.images.values().cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// `herd image layers`: the blobs of the layer store, with the images that use each.
    pub async fn list_layers(&self) -> Result<Vec<herd_proto::api::LayerInfo>> {
        let mut list =
            self.layers.list().await.map_err(|e| Error::unavailable(format!("listing the layer store: {e}")))?;
        let mut users: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
        for image in self.list_images() {
            for layer in &image.layers {
                let names = users.entry(layer.digest.clone()).or_default();
                if !names.contains(&image.name) {
                    names.push(image.name.clone());
                }
            }
        }
        let mut out = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| Error::unavailable(format!("listing the layer store: {e}")))?;
            if info.deleted {
                continue;
            }
            let images = users.remove(&info.name).unwrap_or_default();
            out.push(herd_proto::api::LayerInfo { digest: info.name, size: info.size as u64, images });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// `herd image import NAME PATH`: `body` is the archive the CLI uploads (`directory`
    /// when it packed a root filesystem directory into it).
    pub async fn import_image(
        &self,
        name: &str,
        directory: bool,
        body: impl Stream<Item = std::result::Result<Bytes, axum::Error>>,
    ) -> Result<ImageRecord> {
        // Everything about the request is checked before the upload is read.
        let name = normalize_image(name).map_err(|e| Error::bad_request(e.0))?;
        let tag: u64 = rand::rng().random();
        let work = self.cfg.data_dir.join("uploads").join(format!("{tag:016x}"));
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let result = self.import_into(&name, directory, body, &work).await;
        if let Err(e) = std::fs::remove_dir_all(&work) {
            tracing::warn!("could not remove {}: {e}", work.display());
        }
        let record = result?;
        self.events
            .emit(
                "image",
                "import",
                &record.name,
                None,
                format!(
                    "image {} imported from a {} ({} layers, {})",
                    record.name,
                    record.source,
                    record.layers.len(),
                    herd_proto::units::Bytes(record.size())
                ),
            )
            .await;
        Ok(record)
    }

    async fn import_into(
        &self,
        name: &str,
        directory: bool,
        body: impl Stream<Item = std::result::Result<Bytes, axum::Error>>,
        work: &Path,
    ) -> Result<ImageRecord> {
        let archive = work.join("upload");
        let mut file =
            tokio::fs::File::create(&archive).await.with_context(|| format!("creating {}", archive.display()))?;
        let mut body = std::pin::pin!(body);
        let mut received = 0u64;
        let limits = self.cfg.unpack_limits;
        let max_upload = max_upload(&limits);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::bad_request(format!("the upload was interrupted: {e}")))?;
            received += chunk.len() as u64;
            if received > max_upload {
                crate::upload::drain_refused(body.as_mut(), max_upload).await;
                return Err(Error::too_large(format!(
                    "cannot import {name}: the upload is larger than {}, more than the archive of any image \
                     within {} (the most one image may unpack to, --max-image-size) takes; it was refused \
                     and nothing of it was kept",
                    herd_proto::units::Bytes(max_upload),
                    herd_proto::units::Bytes(limits.image)
                )));
            }
            file.write_all(&chunk).await.context("storing the upload")?;
        }
        file.flush().await.context("storing the upload")?;
        drop(file);
        if received == 0 {
            return Err(Error::bad_request("the uploaded image archive is empty"));
        }
        let blobs = work.join("blobs");
        std::fs::create_dir_all(&blobs).context("creating the blob directory")?;
        let imported = tokio::task::spawn_blocking({
            let archive = archive.clone();
            move || herd_image::import_archive(&archive, &blobs, &limits)
        })
        .await
        .context("image import task")?
        .map_err(|e| {
            let kind =
                if matches!(e, herd_image::ImageError::TooLarge { .. }) { Kind::TooLarge } else { Kind::BadRequest };
            Error::new(kind, format!("cannot import {name}: {e}"))
        })?;

        // Layer store changes of imports and removals do not interleave, so a failed import
        // never deletes a layer another import or removal just counted on.
        let _store = self.layer_writes.lock().await;
        let mut stored: Vec<String> = Vec::new();
        let result = self.store_image(name, directory, &imported, &mut stored).await;
        if result.is_err() {
            self.delete_unused_layers(&stored).await;
        }
        result.map_err(|e| Error::new(e.kind, format!("cannot import {name}: {}", e.message)))
    }

    /// Stores the layers of an imported image the store lacks (noting each in `stored`), then
    /// its record.
    async fn store_image(
        &self,
        name: &str,
        directory: bool,
        imported: &herd_image::ImportedImage,
        stored: &mut Vec<String>,
    ) -> Result<ImageRecord> {
        for layer in &imported.layers {
            let digest = &layer.layer.digest;
            if stored.contains(digest) || self.layers.info(digest).await.is_ok() {
                continue;
            }
            let mut f = tokio::fs::File::open(&layer.path)
                .await
                .with_context(|| format!("opening layer {}", layer.path.display()))?;
            stored.push(digest.clone());
            herd_broker::put_object(&self.layers, digest, &mut f)
                .await
                .with_context(|| format!("storing layer {digest}"))?;
        }
        let record = ImageRecord {
            name: name.to_string(),
            id: imported.id.clone(),
            layers: imported.layers.iter().map(|l| l.layer.clone()).collect(),
            config: imported.config.clone(),
            source: match imported.source {
                herd_image::ImageSource::RootfsTarball if directory => "rootfs directory".to_string(),
                other => other.to_string(),
            },
            created_at: now_millis(),
            registry: None,
        };
        self.images.put(&image_key(name), &record).await?;
        self.view.write().unwrap().images.insert(name.to_string(), record.clone());
        Ok(record)
    }

    /// Deletes the layers of `digests` that no image uses (those a failed import stored).
    async fn delete_unused_layers(&self, digests: &[String]) {
        let used: std::collections::HashSet<String> = {
            let view = self.view.read().unwrap();
            view.images.values().flat_map(|i| i.layers.iter().map(|l| l.digest.clone())).collect()
        };
        for digest in digests.iter().filter(|d| !used.contains(*d)) {
            // A put that failed half-way may have left part of the object: delete it too.
            match self.layers.delete(digest).await {
                Ok(()) => tracing::info!("deleted layer {digest}, stored by an import that failed"),
                Err(e) => tracing::warn!("could not delete layer {digest} of a failed import: {e}"),
            }
        }
    }

    /// `herd image rm NAME`: refused while a container uses the image; layers no other
    /// image uses are deleted from the layer store.
    pub async fn remove_image(&self, name: &str) -> Result<()> {
        let _store = self.layer_writes.lock().await;
        let name = normalize_image(name).map_err(|e| Error::bad_request(e.0))?;
        let (record, users, shared) = {
            let view = self.view.read().unwrap();
            let record =
                view.images.get(&name).cloned().ok_or_else(|| Error::not_found(format!("no such image: {name}")))?;
            let mut users: Vec<String> =
                view.containers.values().filter(|c| c.image == name).map(|c| c.name.clone()).collect();
            users.sort();
            let shared: std::collections::HashSet<String> = view
                .images
                .values()
                .filter(|i| i.name != name)
                .flat_map(|i| i.layers.iter().map(|l| l.digest.clone()))
                .collect();
            (record, users, shared)
        };
        if !users.is_empty() {
            return Err(Error::conflict(format!(
                "image {name} is used by {}: remove {} first",
                users.join(", "),
                if users.len() == 1 { "that container" } else { "those containers" }
            )));
        }
        self.images.delete(&image_key(&name)).await?;
        self.view.write().unwrap().images.remove(&name);
        for layer in record.layers.iter().filter(|l| !shared.contains(&l.digest)) {
            if let Err(e) = self.layers.delete(&layer.digest).await {
                tracing::warn!("could not delete layer {}: {e}", layer.digest);
            }
        }
        self.events.emit("image", "remove", &name, None, format!("image {name} removed")).await;
        Ok(())
    }
}
