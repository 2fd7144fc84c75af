//! Ticker versions on the node side: `SaveVersion` checkpoints a running container and stores
//! the checkpoint in the broker's version store as a version (only the blocks its earlier
//! versions do not hold, see [`herd_image::versions`]); `RestoreVersion` puts a version back
//! together on this node and restores the container from it.
//!
//! The container is frozen only while CRIU dumps it and its writable layer is packed into the
//! node's checkpoint directory; cutting it into blocks and uploading happen after it runs on.
//! The local checkpoint is deleted once stored: the version store holds the cluster's copy.
//!
//! Where the node tracks written memory (soft-dirty, or userfaultfd write-protection with
//! Herd's CRIU), a version after its group's base dumps only the pages written since the
//! previous version, which it names as its memory parent; the node keeps what that dump
//! needs of the previous one in a [`crate::version_trail::Trail`]. A restore puts the parents' CRIU files under
//! `criu/parent/` ([`blocks::with_memory_chain`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use herd_broker::{Objects, StallGuard};
use herd_image::versions::{self as blocks, Assembler};
use herd_proto::ha::{VersionInfo, VersionManifest, manifest_object, pack_object};
use herd_proto::node::{ContainerSpec, NodeReply};
use tokio::io::AsyncReadExt;
use tokio_util::io::SyncIoBridge;

use crate::checkpointing::DumpMemory;
use crate::checkpoints::fail;
use crate::runtime::{CRIU_IMAGES, OpResult, Runtime};
use crate::version_trail::relative;

/// The largest version manifest read (a 16 GiB container lists 4 M blocks, 86 MiB in base64).
const MAX_VERSION_MANIFEST: u64 = 128 << 20;

/// Versions put together at once: each is streamed from the broker as fast as it can send,
/// and more at once than the node reads makes the broker cut the node off as a slow
/// consumer (50 containers of a failed node restored here at once did).
static ASSEMBLING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// How long a read of the version store may go without a byte before it is an error.
const STALL: std::time::Duration = std::time::Duration::from_secs(20);

/// Opens object `name` of the version store for reading, asking up to three times (the
/// broker's answer may time out under load); the reader fails once it stalls for [`STALL`].
async fn open(
    store: &Objects,
    name: &str,
    what: &str,
) -> OpResult<StallGuard<async_nats::jetstream::object_store::Object>> {
    let mut tries = 0;
    loop {
        tries += 1;
        match store.get(name).await {
            Ok(object) => return Ok(StallGuard::new(object, STALL)),
            Err(e) if tries < 3 && e.kind() != async_nats::jetstream::object_store::GetErrorKind::NotFound => {
                tracing::warn!("reading {what} from the version store: {e}; asking again");
            }
            Err(e) => return Err(fail(&format!("{what} is not in the version store"), e)),
        }
    }
}

/// Reads and checks the manifest of version `version` of container `id`.
async fn fetch_manifest(store: &Objects, id: &str, version: u64) -> OpResult<VersionManifest> {
    let name = manifest_object(id, version);
    let object = open(store, &name, &format!("version {version}")).await?;
    let mut bytes = Vec::new();
    object
        .take(MAX_VERSION_MANIFEST)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| fail(&format!("reading the manifest of version {version}"), e))?;
    let m = blocks::parse_version_manifest(&bytes, &format!("version {version}")).map_err(|e| e.to_string())?;
    if m.version != version || m.checkpoint.container.id != id {
        return Err(format!("the manifest stored as version {version} of {id} is one of another version or container"));
    }
    Ok(m)
}

impl Runtime {
    /// `SaveVersion`.
    pub async fn save_version(
        self: &Arc<Self>,
        store: &Objects,
        id: &str,
        version: u64,
        builds_on: &[u64],
    ) -> OpResult<NodeReply> {
        let base = builds_on.first().copied().unwrap_or(version);
        // What the versions it builds on hold, read before the container pauses.
        let mut known = HashMap::new();
        let mut manifests = HashMap::new();
        for v in builds_on {
            let m = fetch_manifest(store, id, *v).await?;
            blocks::known_blocks(&m, &mut known).map_err(|e| e.to_string())?;
            manifests.insert(*v, m);
        }
        let checkpoint_id = format!("ticker-v{version}");
        // Dumped into memory (the node's scratch tmpfs): the container is frozen for as
        // little as copying its memory takes, and no disk sees it.
        let dir = self.cfg.paths.scratch().join("versions").join(id);
        // What a save this agent did not finish left.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| fail(&format!("creating {}", dir.display()), e))?;
        let dir = dir.join(&checkpoint_id);
        let images = dir.join(CRIU_IMAGES);

        // Incremental where the node tracks written memory and its trail matches the version
        // this one builds on; otherwise a full dump that starts a new trail.
        let trail = self.trail(id);
        let process = self.process_of(id);
        let tracking = self.cfg.track_mem_config.is_some();
        let parent = match (tracking, builds_on.last(), process) {
            (true, Some(p), Some(process)) => trail.parent_for(*p, process).map(|d| (*p, d)),
            _ => None,
        };
        if parent.is_none() {
            self.track_afresh(&trail, process);
        }
        // A full dump pre-dumps the memory first, while the container runs.
        let memory = DumpMemory {
            track: tracking,
            parent: parent.as_ref().map(|(_, d)| relative(&images, d)),
            pre_dump: tracking && parent.is_none(),
            link_parent: None,
        };
        let memory_parent = parent.map(|(p, _)| p);

        let saved = self
            .checkpoint_timed(id, &checkpoint_id, true, crate::checkpointing::TcpHold::Stale, dir.clone(), &memory)
            .await;
        let stored = match &saved {
            Ok((_, pause)) => {
                let pause_ms = pause.as_millis() as u64;
                self.store_version(store, id, (version, base, memory_parent), &dir, known, pause_ms).await
            }
            Err(e) => Err(e.clone()),
        };
        let kept = match (&stored, process) {
            (Ok(_), Some(process)) if tracking => trail.keep(&images, version, memory_parent, process),
            _ => {
                trail.clear();
                Ok(())
            }
        };
        if let Err(e) = kept {
            tracing::warn!("the trail of version {version} of {id} is not kept ({e}): the next version is a full dump");
            trail.clear();
        }
        if let Some(parent) = dir.parent()
            && let Err(e) = std::fs::remove_dir_all(parent)
        {
            tracing::warn!("the local copy of version {version} of {id} stays: {e}");
        }
        let (info, pause) = saved?;
        let stored_bytes = stored?;
        // What a restore puts together: this dump and the CRIU files of its memory parents
        // (all among the versions it builds on; stored already, so only a figure now).
        let parents_bytes: u64 = match memory_parent.and_then(|p| manifests.get(&p)) {
            Some(p) => {
                let chain = blocks::memory_chain(p, &manifests).unwrap_or_default();
                std::iter::once(p).chain(chain).map(criu_bytes).sum()
            }
            None => 0,
        };
        Ok(NodeReply::VersionSaved(VersionInfo {
            version,
            base,
            node: self.cfg.node.clone(),
            created_at: info.created_at,
            pause_ms: pause.as_millis() as u64,
            full_bytes: info.size_bytes + parents_bytes,
            stored_bytes,
            memory_parent,
        }))
    }

    /// Cuts the checkpoint in `dir` into blocks and stores what `known` lacks as version
    /// `version` (of group `base`, its memory built on `memory_parent`): its pack, then its
    /// manifest. Returns the bytes stored.
    async fn store_version(
        &self,
        store: &Objects,
        id: &str,
        (version, base, memory_parent): (u64, u64, Option<u64>),
        dir: &Path,
        known: HashMap<[u8; 16], u64>,
        pause_ms: u64,
    ) -> OpResult<u64> {
        let planned = tokio::task::spawn_blocking({
            let dir = dir.to_path_buf();
            move || {
                let checkpoint = herd_image::read_manifest(&dir)?;
                blocks::plan_version(&dir, checkpoint, version, base, &known, pause_ms)
            }
        })
        .await
        .map_err(|e| fail("the block task", e))?
        .map_err(|e| fail(&format!("cutting version {version} into blocks"), e))?;
        let (mut manifest, sources) = planned;
        manifest.memory_parent = memory_parent;
        let pack_name = pack_object(id, version);
        let mut stored = 0;
        if !sources.is_empty() {
            let (mut reader, writer) = tokio::io::duplex(1 << 20);
            let packer = tokio::task::spawn_blocking({
                let (dir, manifest) = (dir.to_path_buf(), manifest.clone());
                move || {
                    let out = std::io::BufWriter::with_capacity(1 << 20, SyncIoBridge::new(writer));
                    blocks::write_pack(&dir, &manifest, &sources, out)
                }
            });
            let (put, packed) = tokio::join!(herd_broker::put_object(store, &pack_name, &mut reader), packer);
            match (put, packed) {
                (Ok(bytes), Ok(Ok(_))) => stored += bytes,
                (put, packed) => {
                    let _ = store.delete(&pack_name).await;
                    return Err(match (put, packed) {
                        (Err(e), _) => fail(&format!("storing the pack of version {version}"), e),
                        (_, Ok(Err(e))) => fail(&format!("reading version {version}"), e),
                        (_, Err(e)) => fail("the pack task", e),
                        _ => unreachable!(),
                    });
                }
            }
        }
        let json = serde_json::to_vec(&manifest).map_err(|e| fail("encoding the version manifest", e))?;
        match herd_broker::put_object(store, &manifest_object(id, version), &mut &json[..]).await {
            Ok(bytes) => stored += bytes,
            Err(e) => {
                let _ = store.delete(&pack_name).await;
                return Err(fail(&format!("storing the manifest of version {version}"), e));
            }
        }
        Ok(stored)
    }

    /// `RestoreVersion`.
    pub async fn restore_version(
        self: &Arc<Self>,
        store: &Objects,
        spec: ContainerSpec,
        version: u64,
    ) -> OpResult<NodeReply> {
        let started = std::time::Instant::now();
        let manifest = fetch_manifest(store, &spec.id, version).await?;
        let digests = |s: &ContainerSpec| s.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>();
        if digests(&manifest.checkpoint.container) != digests(&spec) {
            return Err(format!(
                "version {version} was taken on other image layers than those of {} now (image {})",
                spec.name, spec.image
            ));
        }
        // Put together in memory (the scratch tmpfs), read once by CRIU, then gone.
        let parent = self.cfg.paths.scratch().join("versions").join(format!("{}-restore", spec.id));
        let _ = std::fs::remove_dir_all(&parent);
        let dir = parent.join(format!("v{version}"));
        let (waited, assembling, assembled) = {
            let _turn = ASSEMBLING.acquire().await.map_err(|e| fail("waiting for a turn", e))?;
            let waited = started.elapsed();
            let assembled = self.assemble(store, &spec.id, manifest, &dir).await;
            (waited, started.elapsed() - waited, assembled)
        };
        let result = match assembled {
            Ok(()) => self.restore_from(spec.clone(), &format!("version {version}"), &dir, None).await,
            Err(e) => Err(e),
        };
        // Where a restore's time went, for whoever tunes recovery (`bench/ha`).
        tracing::info!(
            "version {version} of {}: waited {} ms for a turn, put together in {} ms, restored in {} ms{}",
            spec.name,
            waited.as_millis(),
            assembling.as_millis(),
            (started.elapsed() - waited - assembling).as_millis(),
            if result.is_ok() { "" } else { " (failed)" }
        );
        if let Err(e) = std::fs::remove_dir_all(&parent) {
            tracing::warn!("version {version} of {} stays in {}: {e}", spec.name, parent.display());
        }
        result
    }

    /// Puts version `manifest` back together in `dir` from the packs it needs, with the CRIU
    /// files of its memory parents under `criu/parent/`.
    async fn assemble(&self, store: &Objects, id: &str, manifest: VersionManifest, dir: &Path) -> OpResult<()> {
        let version = manifest.version;
        let mut fetched: HashMap<u64, VersionManifest> = HashMap::new();
        // Each memory parent is older than its child (`parse_version_manifest`): this ends.
        let mut next = manifest.memory_parent;
        while let Some(p) = next {
            let m = fetch_manifest(store, id, p).await?;
            next = m.memory_parent;
            fetched.insert(p, m);
        }
        let whole = {
            let chain = blocks::memory_chain(&manifest, &fetched).map_err(|v| format!("version {v} is missing"))?;
            blocks::with_memory_chain(&manifest, &chain).map_err(|e| e.to_string())?
        };
        let mut of_packs = Vec::with_capacity(whole.packs.len());
        for p in &whole.packs {
            let entries = if *p == version {
                blocks::pack_entries(&manifest)
            } else if let Some(m) = fetched.get(p) {
                blocks::pack_entries(m)
            } else {
                blocks::pack_entries(&fetch_manifest(store, id, *p).await?)
            };
            of_packs.push((*p, entries.map_err(|e| e.to_string())?));
        }
        let mut assembler = tokio::task::spawn_blocking({
            let dir = dir.to_path_buf();
            move || Assembler::new(&dir, whole)
        })
        .await
        .map_err(|e| fail("the assembly task", e))?
        .map_err(|e| fail(&format!("version {version}"), e))?;
        for (p, entries) in of_packs {
            let object = open(store, &pack_object(id, p), &format!("the pack of version {p}")).await?;
            assembler = tokio::task::spawn_blocking(move || {
                let input = std::io::BufReader::with_capacity(1 << 20, SyncIoBridge::new(object));
                assembler.feed(p, &entries, input).map(|()| assembler)
            })
            .await
            .map_err(|e| fail("the assembly task", e))?
            .map_err(|e| e.to_string())?;
        }
        tokio::task::spawn_blocking(move || assembler.finish())
            .await
            .map_err(|e| fail("the assembly task", e))?
            .map_err(|e| fail(&format!("version {version}"), e))?;
        Ok(())
    }
}

/// The bytes of a version's own CRIU files.
fn criu_bytes(m: &VersionManifest) -> u64 {
    let criu = format!("{}/", herd_proto::checkpoint::CRIU_DIR);
    m.checkpoint.files.iter().filter(|f| f.path.starts_with(&criu)).map(|f| f.size).sum()
}
