//! Checkpoints that leave or reach this node: the manifest of a new checkpoint, export of a
//! checkpoint (or of a container's log) to the broker's checkpoint store, import from it, and
//! removal.
//!
//! The checkpoint store is only a channel: the Control node names an object, one node (or the
//! Control node, for an uploaded image directory) writes it, the other side reads it, and the
//! Control node deletes it. A checkpoint travels as a checkpoint archive
//! ([`herd_image::pack_checkpoint`]), checked file by file against its manifest on arrival.

use std::path::{Path, PathBuf};

use anyhow::Context;
use herd_broker::Objects;
use herd_image::ImageError;
use herd_proto::checkpoint::{CheckpointManifest, FORMAT};
use herd_proto::node::{ContainerSpec, NodeReply};
use herd_proto::state::CheckpointInfo;
use tokio_util::io::SyncIoBridge;

use crate::logs::{self, Log, LogLimits};
use crate::paths::ContainerPaths;
use crate::runtime::{CRIU_IMAGES, CarriedLog, OpResult, Runtime};

/// Hashes the files of the new checkpoint in `dir` and writes its manifest; the returned
/// manifest's [`CheckpointInfo`] has its size filled in.
pub(crate) fn describe(
    dir: &Path,
    container: ContainerSpec,
    mut info: CheckpointInfo,
) -> Result<CheckpointManifest, ImageError> {
    let files = herd_image::checkpoint_files(dir)?;
    info.size_bytes = files.iter().map(|f| f.size).sum();
    let manifest = CheckpointManifest { format: FORMAT.to_string(), container, checkpoint: info, files };
    herd_image::write_manifest(dir, &manifest)?;
    Ok(manifest)
}

/// Fetches the log of a container that moves to this node (a carried log, see
/// [`crate::logs`]), unless it has a log here already; no more of it than `limits` allow is
/// kept.
pub(crate) async fn receive_log(log: &CarriedLog<'_>, paths: &ContainerPaths, limits: LogLimits) -> anyhow::Result<()> {
    let state = paths.state();
    if Log::new(&state).exists() {
        return Ok(());
    }
    let obj = log.store.get(log.object).await.with_context(|| format!("fetching log {}", log.object))?;
    let reader = SyncIoBridge::new(obj);
    tokio::task::spawn_blocking(move || logs::import(&state, limits, reader))
        .await
        .context("the log import task")?
        .context("receiving the container's log")?;
    Ok(())
}

pub(crate) fn fail(context: &str, e: impl std::fmt::Display) -> String {
    format!("{context}: {e:#}")
}

impl Runtime {
    /// Holds container `id`'s operation lock, when the node knows the container, so that
    /// nothing else changes its checkpoints meanwhile.
    async fn hold_checkpoints(&self, id: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let c = self.get(id).ok()?;
        Some(c.op.clone().lock_owned().await)
    }

    /// `ExportCheckpoint`: writes checkpoint `checkpoint_id` of container `id` to `store` as
    /// object `object`, as a checkpoint archive.
    pub async fn export_checkpoint(
        &self,
        store: &Objects,
        id: &str,
        checkpoint_id: &str,
        object: &str,
    ) -> OpResult<NodeReply> {
        herd_proto::names::validate_container_name(checkpoint_id).map_err(|e| e.0)?;
        let _op = self.hold_checkpoints(id).await;
        let dir = self.cfg.paths.checkpoint(id, checkpoint_id);
        if !dir.join(CRIU_IMAGES).exists() {
            return Err(format!("checkpoint {checkpoint_id} of container {id} is not on node {}", self.cfg.node));
        }
        let (mut reader, writer) = tokio::io::duplex(1 << 20);
        let packer = tokio::task::spawn_blocking(move || {
            let out = std::io::BufWriter::with_capacity(1 << 20, SyncIoBridge::new(writer));
            herd_image::pack_checkpoint(&dir, out, false)
        });
        let (put, packed) = tokio::join!(herd_broker::put_object(store, object, &mut reader), packer);
        let problem = match (put, packed) {
            (Ok(bytes), Ok(Ok(_))) => return Ok(NodeReply::Exported { bytes }),
            (Err(e), _) => fail("sending the checkpoint", e),
            (Ok(_), Ok(Err(e))) => fail(&format!("reading checkpoint {checkpoint_id}"), e),
            (Ok(_), Err(e)) => fail("the packing task", e),
        };
        // Whatever part arrived is not a checkpoint.
        let _ = store.delete(object).await;
        Err(problem)
    }

    /// `ExportLog`: writes the log of container `id` to `store` as object `object`: a carried
    /// log of the newest lines, no more than the container's log limits keep.
    pub async fn export_log(&self, store: &Objects, id: &str, object: &str) -> OpResult<NodeReply> {
        let c = self.get(id)?;
        let (log, limit) = (Log::new(&c.paths.state()), self.log_limits(&c.spec).total());
        let carried = tokio::task::spawn_blocking(move || logs::Carried::choose(&log, None, limit))
            .await
            .map_err(|e| fail("the log export task", e))?
            .map_err(|e| fail("reading the log", e))?;
        let mut reader = carried.reader().map_err(|e| fail("reading the log", e))?;
        let bytes =
            herd_broker::put_object(store, object, &mut reader).await.map_err(|e| fail("sending the log", e))?;
        Ok(NodeReply::Exported { bytes })
    }

    /// `ImportCheckpoint`: fetches checkpoint archive `object` from `store` and keeps it as
    /// checkpoint `checkpoint_id` of the container of `spec`, once it has been checked whole
    /// and found to be a checkpoint of that container on the same image layers.
    pub async fn import_checkpoint(
        &self,
        store: &Objects,
        spec: ContainerSpec,
        checkpoint_id: &str,
        object: &str,
    ) -> OpResult<NodeReply> {
        herd_proto::names::validate_container_name(checkpoint_id).map_err(|e| e.0)?;
        let _op = self.hold_checkpoints(&spec.id).await;
        let parent = self.cfg.paths.checkpoints_dir(&spec.id);
        std::fs::create_dir_all(&parent).map_err(|e| fail(&format!("creating {}", parent.display()), e))?;
        let tag: u32 = rand::random();
        let tmp = parent.join(format!(".import-{checkpoint_id}-{tag:08x}"));
        let result = self.import_into(store, &spec, checkpoint_id, object, &tmp).await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result.map(NodeReply::Checkpointed)
    }

    async fn import_into(
        &self,
        store: &Objects,
        spec: &ContainerSpec,
        checkpoint_id: &str,
        object: &str,
        tmp: &Path,
    ) -> OpResult<CheckpointInfo> {
        let archive = store.get(object).await.map_err(|e| fail(&format!("fetching checkpoint archive {object}"), e))?;
        let mut manifest = tokio::task::spawn_blocking({
            let tmp = tmp.to_path_buf();
            let what = format!("checkpoint archive {object}");
            move || {
                let input = std::io::BufReader::with_capacity(1 << 20, SyncIoBridge::new(archive));
                herd_image::unpack_checkpoint(input, &tmp, &what)
            }
        })
        .await
        .map_err(|e| fail("the unpacking task", e))?
        .map_err(|e| e.to_string())?;
        let theirs = &manifest.container;
        if theirs.id != spec.id {
            return Err(format!(
                "the checkpoint is one of container {} ({}), not of {} ({})",
                theirs.name, theirs.id, spec.name, spec.id
            ));
        }
        let digests = |s: &ContainerSpec| s.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>();
        if digests(theirs) != digests(spec) {
            return Err(format!(
                "the checkpoint was taken on other image layers than those of {} now (image {}): \
                 its processes would find other files",
                spec.name, spec.image
            ));
        }
        manifest.checkpoint.id = checkpoint_id.to_string();
        manifest.checkpoint.node = self.cfg.node.clone();
        herd_image::write_manifest(tmp, &manifest).map_err(|e| e.to_string())?;
        let dest: PathBuf = self.cfg.paths.checkpoint(&spec.id, checkpoint_id);
        if dest.exists() {
            // Left by an earlier stay of the container on this node: the cluster no longer has it.
            std::fs::remove_dir_all(&dest).map_err(|e| fail(&format!("removing {}", dest.display()), e))?;
        }
        std::fs::rename(tmp, &dest).map_err(|e| fail(&format!("moving the checkpoint to {}", dest.display()), e))?;
        tracing::info!(
            "imported checkpoint {checkpoint_id} of {} ({} bytes)",
            spec.name,
            manifest.checkpoint.size_bytes
        );
        Ok(manifest.checkpoint)
    }

    /// `DropCheckpoint`: deletes one checkpoint (gone already is fine).
    pub async fn drop_checkpoint(&self, id: &str, checkpoint_id: &str) -> OpResult<NodeReply> {
        herd_proto::names::validate_container_name(checkpoint_id).map_err(|e| e.0)?;
        let _op = self.hold_checkpoints(id).await;
        let dir = self.cfg.paths.checkpoint(id, checkpoint_id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(&format!("removing {}", dir.display()), e)),
        }
        // The container's checkpoint directory goes too when that was its last checkpoint.
        let _ = std::fs::remove_dir(self.cfg.paths.checkpoints_dir(id));
        Ok(NodeReply::Done)
    }
}
