//! `herd checkpoint` and `herd restore`: checkpoints on the container's node, their export as
//! a checkpoint archive (`--image-dir`), and restores onto the container's node or another
//! one (`--node`), from a node's checkpoint or from an uploaded archive.
//!
//! Checkpoints travel through the broker's checkpoint store (an object store used as a
//! channel, see `herd_node::checkpoints`): the node holding one writes it there as an object
//! this module names, the node restoring it reads it and checks it against its manifest, and
//! this module deletes the object afterwards. A restore onto another node moves the container:
//! its log comes along the same way, the record points to the new node, which restores the
//! container with its address, and only then does the old node let go of it. Until then the
//! checkpoint stays where it was, and a failed restore puts the record back, so the container
//! is restorable there as before.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use herd_broker::Objects;
use herd_proto::api::{ContainerInfo, NodeState, RestoreRequest};
use herd_proto::node::{NodeReply, NodeRequest};
use herd_proto::state::{CheckpointInfo, ContainerRecord, ContainerState, Desired, ImageRecord};
use herd_proto::units;
use herd_sched::{Request, Strategy};
use rand::Rng;

use crate::containers::unexpected;
use crate::control::Control;
use crate::error::{Error, Result};
use crate::view::Reservation;

const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time a node gets to write or read a checkpoint archive in the checkpoint store.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
const REMOVE_TIMEOUT: Duration = Duration::from_secs(60);
/// What of a refused checkpoint upload is read on so that the client gets the reason (see
/// [`crate::upload`]).
const REFUSED_UPLOAD_DRAIN: u64 = 256 << 20;

/// The objects of one operation in the checkpoint store, deleted when it ends, whatever way.
struct Transfers {
    store: Objects,
    names: Vec<String>,
}

impl Transfers {
    fn new(store: &Objects) -> Transfers {
        Transfers { store: store.clone(), names: Vec::new() }
    }

    /// A new object name, `<what>-<random>`.
    fn name(&mut self, what: &str) -> String {
        let tag: u64 = rand::rng().random();
        let name = format!("{what}-{tag:016x}");
        self.names.push(name.clone());
        name
    }
}

impl Drop for Transfers {
    fn drop(&mut self) {
        let (store, names) = (self.store.clone(), std::mem::take(&mut self.names));
        if names.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for n in names {
                if let Err(e) = store.delete(&n).await {
                    tracing::debug!("transfer object {n} not deleted: {e}");
                }
            }
        });
    }
}

/// A checked restore: what is restored, and where.
struct Plan {
    record: ContainerRecord,
    image: ImageRecord,
    /// The node that restores the container.
    target: String,
}

impl Plan {
    /// Whether the container moves to another node.
    fn moves(&self) -> bool {
        self.target != self.record.node
    }
}

/// The next free checkpoint id of a container: `ck1`, `ck2`, ...
fn next_checkpoint_id(record: &ContainerRecord) -> String {
    let n = record
        .checkpoints
        .iter()
        .filter_map(|c| c.id.strip_prefix("ck").and_then(|n| n.parse::<u64>().ok()))
        .max()
        .unwrap_or(0);
    format!("ck{}", n + 1)
}

/// Checkpoint `id` of a container, or its newest one.
fn find_checkpoint(record: &ContainerRecord, id: Option<&str>) -> Result<CheckpointInfo> {
    let name = &record.name;
    match id {
        Some(id) => record.checkpoints.iter().find(|c| c.id == id).cloned().ok_or_else(|| {
            let known: Vec<&str> = record.checkpoints.iter().map(|c| c.id.as_str()).collect();
            Error::not_found(format!(
                "container {name} has no checkpoint {id} (it has: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        }),
        None => record.checkpoints.last().cloned().ok_or_else(|| {
            Error::not_found(format!("container {name} has no checkpoints: create one with herd checkpoint {name}"))
        }),
    }
}

impl Control {
    /// `herd checkpoint`.
    pub async fn checkpoint(&self, name: &str, leave_running: bool) -> Result<CheckpointInfo> {
        self.ensure_not_migrating(name)?;
        let _guard = self.lock(name).await;
        self.ensure_no_exec(name, "checkpoint it")?;
        let (mut record, state) = self.record_of(name)?;
        if state != ContainerState::Running {
            return Err(Error::conflict(format!(
                "container {name} is {}: only a running container can be checkpointed",
                state.as_str()
            )));
        }
        if !self.has_criu(&record.node) {
            return Err(Error::conflict(format!(
                "node {} cannot checkpoint: CRIU (>= 4.2) is not installed there",
                record.node
            )));
        }
        let checkpoint_id = next_checkpoint_id(&record);
        let req = NodeRequest::Checkpoint { id: record.id.clone(), checkpoint_id, leave_running };
        let info = match self.node_call(&record.node, &req, CHECKPOINT_TIMEOUT).await? {
            NodeReply::Checkpointed(info) => info,
            other => return Err(unexpected(&record.node, &other)),
        };
        record.checkpoints.push(info.clone());
        if !leave_running {
            record.desired = Desired::Stopped;
        }
        self.containers.put(name, &record).await?;
        self.view.write().unwrap().insert_container(record.clone());
        self.refresh_status(&record).await?;
        self.events
            .emit(
                "container",
                "checkpoint",
                name,
                Some(&record.node),
                format!(
                    "container {name} checkpointed as {} ({}){}",
                    info.id,
                    units::Bytes(info.size_bytes),
                    if leave_running { ", left running" } else { "" }
                ),
            )
            .await;
        Ok(info)
    }

    fn has_criu(&self, node: &str) -> bool {
        self.view.read().unwrap().nodes.get(node).is_some_and(|n| n.record.facts.criu_version.is_some())
    }

    /// `herd checkpoint --image-dir`: checkpoint `checkpoint_id` of `name` as a checkpoint
    /// archive, streamed from its node through the checkpoint store.
    pub async fn export_checkpoint(
        &self,
        name: &str,
        checkpoint_id: &str,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + use<>> {
        self.ensure_not_migrating(name)?;
        let mut transfers = Transfers::new(&self.checkpoint_store);
        let object = transfers.name("export");
        {
            let _guard = self.lock(name).await;
            let (record, _) = self.record_of(name)?;
            let ck = find_checkpoint(&record, Some(checkpoint_id))?;
            let req = NodeRequest::ExportCheckpoint {
                id: record.id.clone(),
                checkpoint_id: ck.id.clone(),
                object: object.clone(),
            };
            self.node_call(&ck.node, &req, TRANSFER_TIMEOUT).await.map_err(|e| {
                Error::new(
                    e.kind,
                    format!("cannot export checkpoint {} of {name} from node {}: {}", ck.id, ck.node, e.message),
                )
            })?;
        }
        let archive = self
            .checkpoint_store
            .get(&object)
            .await
            .map_err(|e| Error::unavailable(format!("cannot read the exported checkpoint from the broker: {e}")))?;
        // It leaves the cluster: its manifest is signed, so that it can come back.
        let archive = crate::checkpoint_archive::signed_export(archive, self.checkpoint_key.clone())
            .await
            .map_err(|e| Error::unavailable(format!("cannot sign the exported checkpoint: {e}")))?;
        // The stream owns the transfer: the object goes when the download ends or stops.
        Ok(tokio_util::io::ReaderStream::with_capacity(archive, 256 << 10).map(move |chunk| {
            let _owner = &transfers;
            chunk
        }))
    }

    /// `herd restore [--checkpoint ID] [--node NODE]`.
    pub async fn restore(&self, name: &str, req: &RestoreRequest) -> Result<ContainerInfo> {
        self.ensure_not_migrating(name)?;
        if let Some(version) = req.version {
            if req.checkpoint.is_some() {
                return Err(Error::bad_request("give a checkpoint or a version to restore, not both"));
            }
            return self.restore_version(name, version, req.node.as_deref()).await;
        }
        let _guard = self.lock(name).await;
        let plan = self.plan_restore(name, req.node.as_deref())?;
        let _reserved = Reservation { view: &self.view, container: name };
        let ck = find_checkpoint(&plan.record, req.checkpoint.as_deref())?;
        let mut transfers = Transfers::new(&self.checkpoint_store);
        if ck.node == plan.target {
            return self.finish_restore(plan, ck, false, &mut transfers).await;
        }
        // The checkpoint goes to the target node (one taken before the container migrated
        // away is on the node it left).
        let object = transfers.name("checkpoint");
        let export = NodeRequest::ExportCheckpoint {
            id: plan.record.id.clone(),
            checkpoint_id: ck.id.clone(),
            object: object.clone(),
        };
        self.node_call(&ck.node, &export, TRANSFER_TIMEOUT).await.map_err(|e| {
            Error::new(
                e.kind,
                format!("cannot fetch checkpoint {} of {name} from node {}: {}", ck.id, ck.node, e.message),
            )
        })?;
        let info = self.import(&plan, &ck.id, &object).await?;
        self.finish_restore(plan, info, true, &mut transfers).await
    }

    /// `herd restore --image-dir DIR [--node NODE]`: `body` is the checkpoint archive the CLI
    /// made of DIR; it becomes the container's newest checkpoint on the target node.
    pub async fn restore_archive(
        &self,
        name: &str,
        node: Option<&str>,
        body: impl Stream<Item = std::result::Result<Bytes, axum::Error>>,
    ) -> Result<ContainerInfo> {
        let mut body = Box::pin(body.map(|r| r.map_err(std::io::Error::other)));
        let result = self.restore_archive_from(name, node, &mut body).await;
        if result.is_err() {
            crate::upload::drain_refused(body.as_mut(), REFUSED_UPLOAD_DRAIN).await;
        }
        result
    }

    async fn restore_archive_from(
        &self,
        name: &str,
        node: Option<&str>,
        body: &mut (impl Stream<Item = std::io::Result<Bytes>> + Unpin),
    ) -> Result<ContainerInfo> {
        self.ensure_not_migrating(name)?;
        let _guard = self.lock(name).await;
        let plan = self.plan_restore(name, node)?;
        let _reserved = Reservation { view: &self.view, container: name };
        let checkpoint_id = next_checkpoint_id(&plan.record);
        let mut transfers = Transfers::new(&self.checkpoint_store);
        let object = transfers.name("upload");
        let reader = tokio_util::io::StreamReader::new(body);
        // Only a checkpoint this cluster exported, of this container, and no more bytes than
        // its manifest lists, reach the store; a node checks every file against the manifest.
        let mut upload =
            crate::checkpoint_archive::check_upload(reader, &self.checkpoint_key, name, &plan.record.id).await?;
        tracing::info!("receiving a signed checkpoint of {name} ({} of files)", units::Bytes(upload.manifest.size()));
        herd_broker::put_object(&self.checkpoint_store, &object, &mut upload.archive)
            .await
            .map_err(|e| Error::bad_request(format!("could not receive the checkpoint archive: {e:#}")))?;
        let info = self.import(&plan, &checkpoint_id, &object).await?;
        self.finish_restore(plan, info, true, &mut transfers).await
    }

    /// Checks a restore of `name` onto `node` (its own node when `None`) before anything moves.
    /// Another node counts the container from here on (see [`crate::view::View::reserve_incoming`]): the
    /// caller holds a [`Reservation`] that ends it.
    fn plan_restore(&self, name: &str, node: Option<&str>) -> Result<Plan> {
        let (record, state) = self.record_of(name)?;
        if state == ContainerState::Running {
            return Err(Error::conflict(format!(
                "container {name} is running: stop it (herd stop {name}) before restoring a checkpoint into it"
            )));
        }
        let target = node.unwrap_or(&record.node).to_string();
        let mut view = self.view.write().unwrap();
        let Some(t) = view.nodes.get(&target) else {
            let mut known: Vec<&str> = view.nodes.keys().map(String::as_str).collect();
            known.sort();
            return Err(Error::not_found(format!("no such node: {target} (the nodes are: {})", known.join(", "))));
        };
        if t.state != NodeState::Ready {
            return Err(Error::unavailable(format!(
                "node {target} is down: it cannot restore {name} until it is back"
            )));
        }
        if t.record.facts.criu_version.is_none() {
            return Err(Error::conflict(format!("node {target} cannot restore: CRIU (>= 4.2) is not installed there")));
        }
        if target != record.node {
            if view.nodes.get(&record.node).is_none_or(|n| n.state != NodeState::Ready) {
                return Err(Error::unavailable(format!(
                    "node {} holding {name} is down: it must be up to hand the container over to {target}",
                    record.node
                )));
            }
            crate::hostconfig::ensure_movable(&view, &record)?;
            crate::hostconfig::ensure_no_volumes(&record, &target)?;
            let request = crate::containers::with_placement_rules(
                Request {
                    cpus_milli: record.limits.cpus_milli.unwrap_or(0),
                    memory_bytes: record.limits.memory_bytes.unwrap_or(0),
                    node: Some(target.clone()),
                    ports: record.host.ports.clone(),
                    ..Default::default()
                },
                &record,
            )?;
            herd_sched::place(&view.candidates(&request), &request, Strategy::Spread).map_err(|e| {
                Error::conflict(format!(
                    "node {target} cannot take {name}: {}",
                    e.to_string().trim_start_matches("no node can run this container: ")
                ))
            })?;
        }
        let image =
            view.images.get(&record.image).cloned().ok_or_else(|| {
                Error::not_found(format!("image {} of container {name} no longer exists", record.image))
            })?;
        if target != record.node {
            view.reserve_incoming(ContainerRecord { node: target.clone(), ..record.clone() });
        }
        Ok(Plan { record, image, target })
    }

    /// Has the target node take the checkpoint archive `object` as checkpoint `checkpoint_id`.
    async fn import(&self, plan: &Plan, checkpoint_id: &str, object: &str) -> Result<CheckpointInfo> {
        let (name, target) = (&plan.record.name, &plan.target);
        let req = NodeRequest::ImportCheckpoint {
            spec: self.spec_of(&plan.record, &plan.image),
            checkpoint_id: checkpoint_id.to_string(),
            object: object.to_string(),
        };
        match self.node_call(target, &req, TRANSFER_TIMEOUT).await {
            Ok(NodeReply::Checkpointed(info)) => Ok(info),
            Ok(other) => Err(unexpected(target, &other)),
            Err(e) => {
                // It cleans up after itself; this makes sure, should it have been cut short.
                self.undo_on_target(plan, checkpoint_id, true).await;
                Err(Error::new(e.kind, format!("node {target} cannot take the checkpoint of {name}: {}", e.message)))
            }
        }
    }

    /// Drops what a failed restore left on the target: the container's files when it was
    /// moving there (but the checkpoints the target already had), and the checkpoint when it
    /// was `brought` for the restore.
    async fn undo_on_target(&self, plan: &Plan, checkpoint_id: &str, brought: bool) {
        let id = plan.record.id.clone();
        let mut undo = Vec::new();
        if plan.moves() {
            undo.push(NodeRequest::Remove { id: id.clone(), force: true, keep_checkpoints: true });
        }
        if brought {
            undo.push(NodeRequest::DropCheckpoint { id, checkpoint_id: checkpoint_id.to_string() });
        }
        for req in undo {
            if let Err(e) = self.node_call(&plan.target, &req, REMOVE_TIMEOUT).await {
                tracing::warn!(
                    "could not clean up after the failed restore of {} on {}: {}",
                    plan.record.name,
                    plan.target,
                    e.message
                );
            }
        }
    }

    /// Restores checkpoint `ck`, which is on the target node, there; `brought` when it came
    /// from elsewhere for this restore. A moving container's log goes to the target first.
    /// The record names the target and lists the checkpoint before the restore starts, so
    /// that whatever happens next (a crash of this Control node included) it points at a node
    /// that holds the checkpoint. A failed restore puts the record back, then drops what the
    /// target received. Once the container runs on the target, its old node lets go of it.
    async fn finish_restore(
        &self,
        plan: Plan,
        ck: CheckpointInfo,
        brought: bool,
        transfers: &mut Transfers,
    ) -> Result<ContainerInfo> {
        let name = plan.record.name.clone();
        let (source, target) = (plan.record.node.clone(), plan.target.clone());
        let log_object = if plan.moves() {
            let log = transfers.name("log");
            let req = NodeRequest::ExportLog { id: plan.record.id.clone(), object: log.clone() };
            if let Err(e) = self.node_call(&source, &req, TRANSFER_TIMEOUT).await {
                self.undo_on_target(&plan, &ck.id, brought).await;
                return Err(Error::new(
                    e.kind,
                    format!("cannot fetch the log of {name} from node {source}: {}", e.message),
                ));
            }
            Some(log)
        } else {
            None
        };
        let mut record = plan.record.clone();
        if plan.moves() {
            // The old node deletes its checkpoints when it lets go of the container.
            record.node = target.clone();
            record.checkpoints.retain(|c| c.node != source);
        }
        if brought {
            record.checkpoints.retain(|c| c.id != ck.id);
            record.checkpoints.push(ck.clone());
        }
        if record != plan.record
            && let Err(e) = self.put_record(&record).await
        {
            self.undo_on_target(&plan, &ck.id, brought).await;
            return Err(e);
        }
        let req =
            NodeRequest::Restore { spec: self.spec_of(&record, &plan.image), checkpoint_id: ck.id.clone(), log_object };
        if let Err(e) = self.node_call(&target, &req, CHECKPOINT_TIMEOUT).await {
            match self.put_record(&plan.record).await {
                Ok(()) => self.undo_on_target(&plan, &ck.id, brought).await,
                // The record names the target, which keeps the checkpoint: still restorable.
                Err(put) => tracing::warn!("could not put the record of {name} back after a failed restore: {put}"),
            }
            if plan.moves() {
                return Err(Error::new(
                    e.kind,
                    format!("could not restore {name} on {target}: {}; it stays restorable on {source}", e.message),
                ));
            }
            return Err(e);
        }
        record.desired = Desired::Running;
        self.put_record(&record).await?;
        self.refresh_status(&record).await?;
        if plan.moves() {
            let req = NodeRequest::Remove { id: record.id.clone(), force: false, keep_checkpoints: false };
            if let Err(e) = self.node_call(&source, &req, REMOVE_TIMEOUT).await {
                tracing::warn!("node {source} could not let go of {name} after it moved to {target}: {}", e.message);
            }
        }
        let from = if plan.moves() { format!(", moved from {source}") } else { String::new() };
        self.events
            .emit(
                "container",
                "restore",
                &name,
                Some(&target),
                format!("container {name} restored from {} on {target}{from}", ck.id),
            )
            .await;
        self.container(&name)
    }

    /// Writes a container's record and puts it in the view, serialised with the other writers
    /// that do not hold the container's lock (see [`Control::record_writes`]).
    pub(crate) async fn put_record(&self, record: &ContainerRecord) -> Result<()> {
        let _writing = self.record_writes.lock().await;
        self.containers.put(&record.name, record).await?;
        self.view.write().unwrap().insert_container(record.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ids: &[&str]) -> ContainerRecord {
        ContainerRecord {
            id: "00".repeat(16),
            name: "c".into(),
            image: "busybox:latest".into(),
            image_id: "sha256:00".into(),
            node: "n1".into(),
            ip: "10.88.0.2".parse().unwrap(),
            limits: Default::default(),
            args: vec![],
            env: vec![],
            working_dir: "/".into(),
            user: String::new(),
            exposed_ports: Vec::new(),
            labels: Default::default(),
            created_at: 0,
            desired: Desired::Stopped,
            checkpoints: ids
                .iter()
                .map(|id| CheckpointInfo {
                    id: id.to_string(),
                    node: "n1".into(),
                    created_at: 0,
                    leave_running: false,
                    size_bytes: 1,
                })
                .collect(),
            migrations: vec![],
            host: Default::default(),
            placement: Default::default(),
            ha: Default::default(),
            versions: Vec::new(),
            generation: 0,
            rescheduled_from: None,
        }
    }

    #[test]
    fn checkpoint_ids_count_up_and_are_found() {
        assert_eq!(next_checkpoint_id(&record(&[])), "ck1");
        assert_eq!(next_checkpoint_id(&record(&["ck1", "ck7", "ck3"])), "ck8");
        let r = record(&["ck1", "ck2"]);
        assert_eq!(find_checkpoint(&r, None).unwrap().id, "ck2");
        assert_eq!(find_checkpoint(&r, Some("ck1")).unwrap().id, "ck1");
        let err = find_checkpoint(&r, Some("ck9")).unwrap_err();
        assert_eq!(err.message, "container c has no checkpoint ck9 (it has: ck1, ck2)");
        let err = find_checkpoint(&record(&[]), None).unwrap_err();
        assert!(err.message.contains("has no checkpoints"), "{}", err.message);
    }
}
