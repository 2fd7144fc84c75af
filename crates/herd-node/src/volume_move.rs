//! Named volumes and the writable layer moving with a migrating container, over the
//! migration's control channel (so within its bandwidth budget). The source sends passes over
//! each tree ([`volume_tree`]): all of it while the container runs, then what changed
//! meanwhile, and a last pass while it is frozen, so the downtime carries only what changed
//! in the last moments (a file sent before goes as a patch, [`crate::tree_delta`]). Each pass
//! is batches of entries, each followed by its files' content and their digests, and ends
//! with the checksum of the whole tree, which the destination compares with what it wrote
//! before it answers; a mismatch fails the migration before the restore, so the container
//! resumes on the source.
//!
//! The destination receives a volume into a staging directory in the container's directory
//! (removed with it when the migration does not commit) and puts it in place,
//! `<data>/volumes/NAME`, just before it restores; the source removes its copy once the
//! destination runs the container (see the [design note](../../../docs/design/volumes.md)).
//! The writable layer is received straight into the container's upper directory there,
//! which nothing mounts before the restore, within the node's layer bounds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use herd_proto::node::ContainerSpec;
use serde::{Deserialize, Serialize};

use crate::migrate::Msg;
use crate::runtime::{Container, Runtime};
use crate::transfer::Channel;
use crate::volume_copy::Received;
use crate::volume_tree::{self, Entry, Known, Layout, Scanned};
use crate::volumes::volume_dir;

/// Entries per batch (a batch's message stays far below the channel's 16 MiB).
const BATCH: usize = 4096;
/// Passes while the container runs, at most.
pub const MAX_PASSES: usize = 4;
/// A pass that moved less content than this is the last one while the container runs.
const SMALL_PASS: u64 = 1 << 20;

/// Whether to take another pass while the container runs, given the content bytes each pass
/// so far moved: always a first (everything) and a second (what changed during the first),
/// then more while they shrink by a tenth each and are not small yet.
pub fn another_pass(sent: &[u64]) -> bool {
    match sent {
        [] | [_] => true,
        _ if sent.len() >= MAX_PASSES => false,
        [.., prev, last] => *last >= SMALL_PASS && (*last as f64) < 0.9 * *prev as f64,
    }
}

/// A tree that moves in passes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeName {
    /// The named volume.
    Volume(String),
    /// The upper directory of the container's overlay root.
    WritableLayer,
}

impl TreeName {
    /// How a migration's phases name it: `volume NAME`, `writable layer`.
    pub fn label(&self) -> String {
        match self {
            TreeName::Volume(name) => format!("volume {name}"),
            TreeName::WritableLayer => "writable layer".into(),
        }
    }
}

impl std::fmt::Display for TreeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeName::Volume(name) => write!(f, "volume {name}"),
            TreeName::WritableLayer => f.write_str("the writable layer"),
        }
    }
}

/// The distinct volume names a container mounts, in order.
pub fn names(spec: &ContainerSpec) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in &spec.host.volumes {
        if !out.contains(&v.name) {
            out.push(v.name.clone());
        }
    }
    out
}

/// What one pass moved.
#[derive(Debug, Clone, Copy)]
pub struct PassReport {
    /// Bytes of file content.
    pub content: u64,
    /// Bytes on the wire (messages, content and framing).
    pub wire: u64,
    /// Entries sent (created or updated) and removed.
    pub entries: usize,
    pub ms: u64,
}

// ------------------------------------------------------------------ source

/// A tree leaving with its container.
pub struct Outgoing {
    pub tree: TreeName,
    layout: Layout,
    root: Arc<OwnedFd>,
    /// What the destination holds, as sent.
    known: BTreeMap<String, Known>,
    /// Content bytes of each pass.
    pub passes: Vec<u64>,
}

impl Outgoing {
    /// Bytes of file content in the tree as last sent.
    pub fn size(&self) -> u64 {
        self.known.values().map(|k| if let volume_tree::Kind::File { size } = k.entry.kind { size } else { 0 }).sum()
    }
}

impl Outgoing {
    /// Volume `name` of the node with data directory `data_dir`.
    pub fn volume(data_dir: &Path, name: &str) -> anyhow::Result<Outgoing> {
        let root = volume_tree::open_root(&volume_dir(data_dir, name))?;
        Ok(Outgoing::new(TreeName::Volume(name.to_string()), Layout::Volume, root))
    }

    /// The writable layer of `c`.
    pub(crate) fn writable_layer(c: &Container) -> anyhow::Result<Outgoing> {
        if !herd_image::can_read_trusted_xattrs() {
            bail!("moving a writable layer reads overlayfs attributes (trusted.overlay.*), which needs CAP_SYS_ADMIN");
        }
        let root = volume_tree::open_root(&c.paths.upper())?;
        Ok(Outgoing::new(TreeName::WritableLayer, Layout::Upper, root))
    }

    fn new(tree: TreeName, layout: Layout, root: OwnedFd) -> Outgoing {
        Outgoing { tree, layout, root: Arc::new(root), known: BTreeMap::new(), passes: Vec::new() }
    }

    /// Sends the changes since the last pass (everything in the first), then the tree's
    /// checksum, and waits for the destination's verdict. `frozen`: the container does not
    /// run, so nothing may change while it is read. `mapped`: files the container maps
    /// shared and writable (always sent). `corrupt`: a test's fault, one damaged byte.
    pub async fn send_pass(
        &mut self,
        ch: &mut Channel,
        frozen: bool,
        mapped: HashSet<(u64, u64)>,
        mut corrupt: bool,
    ) -> anyhow::Result<PassReport> {
        let started = Instant::now();
        let wire_before = ch.bytes_sent();
        let (root, layout) = (self.root.clone(), self.layout);
        let (tree, scanned_at) = tokio::task::spawn_blocking(move || {
            let at = volume_tree::now_ns();
            volume_tree::scan(root.as_fd(), layout).map(|t| (t, at))
        })
        .await
        .with_context(|| format!("scanning {}", self.tree))??;
        let pass = volume_tree::plan(&self.known, &tree, &mapped);
        drop(tree);
        let mut digests: HashMap<String, volume_tree::ReadFile> = HashMap::new();
        let batches: Vec<&[Scanned]> = match (pass.deleted.is_empty(), pass.changed.is_empty()) {
            (true, true) => Vec::new(),
            (false, true) => vec![&[]],
            _ => pass.changed.chunks(BATCH).collect(),
        };
        for (i, batch) in batches.into_iter().enumerate() {
            let deleted = if i == 0 { pass.deleted.clone() } else { Vec::new() };
            let changed: Vec<Entry> = batch.iter().map(|s| s.entry.clone()).collect();
            // Files the destination holds in chunks go as patches of its copy.
            let patch = volume_tree::patchable(&self.known, batch);
            let patched: Vec<u32> =
                (0..batch.len()).filter(|&i| patch.contains_key(&batch[i].entry.path)).map(|i| i as u32).collect();
            ch.send(&Msg::VolumeBatch { tree: self.tree.clone(), deleted, changed, patched }).await?;
            let (reader, writer) = tokio::io::duplex(1 << 20);
            let (root, files) = (self.root.clone(), batch.to_vec());
            let damage =
                corrupt && files.iter().any(|s| matches!(s.entry.kind, volume_tree::Kind::File { size } if size > 0));
            corrupt &= !damage;
            let reading = tokio::task::spawn_blocking(move || {
                let bridge = tokio_util::io::SyncIoBridge::new(writer);
                let mut out = std::io::BufWriter::with_capacity(1 << 20, bridge);
                volume_tree::read_contents(root.as_fd(), &files, &patch, &mut out, frozen, damage)
            });
            let sent = ch.send_blob(reader).await;
            let read = reading.await.with_context(|| format!("reading {}", self.tree))?;
            let read = read?;
            sent?;
            let list: Vec<String> =
                batch.iter().filter_map(|s| read.get(&s.entry.path)).map(|r| hex::encode(r.digest)).collect();
            ch.send(&Msg::VolumeDigests { tree: self.tree.clone(), digests: list }).await?;
            digests.extend(read);
        }
        volume_tree::remember(&mut self.known, &pass, &digests, scanned_at);
        let content = digests.values().map(|r| r.sent).sum();
        self.passes.push(content);
        let digest = volume_tree::tree_digest(self.known.values().map(|k| (&k.entry, k.digest.as_ref())));
        ch.send(&Msg::VolumeCheck { tree: self.tree.clone(), digest, entries: self.known.len() as u64, last: frozen })
            .await?;
        match ch.recv::<Msg>().await? {
            Msg::VolumeVerified { tree } if tree == self.tree => {}
            Msg::Failed { reason } => bail!("{reason}"),
            other => bail!("unexpected answer from the destination: {other:?}"),
        }
        Ok(PassReport {
            content,
            wire: ch.bytes_sent() - wire_before,
            entries: pass.changed.len() + pass.deleted.len(),
            ms: started.elapsed().as_millis() as u64,
        })
    }
}

// ------------------------------------------------------------------ destination

/// The trees arriving with a container.
#[derive(Default)]
pub struct Incoming {
    trees: HashMap<TreeName, Arriving>,
    /// What the writable layer may take on this node (`None`: unbounded).
    upper_bounds: Option<herd_image::LayerBounds>,
}

struct Arriving {
    received: Option<Received>,
    /// The first file whose content did not arrive as sent.
    damaged: Option<String>,
    /// The last pass (taken while the container was frozen) checked out.
    complete: bool,
}

/// Where an arriving volume is kept until the restore.
pub(crate) fn staging_dir(c: &Container, name: &str) -> PathBuf {
    c.paths.dir.join("volumes").join(name)
}

impl Incoming {
    /// The trees arriving with a container; its writable layer within `upper_bounds`.
    pub fn new(upper_bounds: herd_image::LayerBounds) -> Incoming {
        Incoming { trees: HashMap::new(), upper_bounds: Some(upper_bounds) }
    }

    fn arriving(&mut self, c: &Container, tree: &TreeName) -> anyhow::Result<&mut Arriving> {
        if !self.trees.contains_key(tree) {
            let (dir, layout) = match tree {
                TreeName::Volume(name) => {
                    if !c.spec.host.volumes.iter().any(|v| &v.name == name) {
                        bail!("the source sent volume {name}, which {} does not mount", c.spec.name);
                    }
                    (staging_dir(c, name), Layout::Volume)
                }
                TreeName::WritableLayer => {
                    // Nothing mounts it before the restore; whatever an earlier attempt left goes.
                    let upper = c.paths.upper();
                    if upper.exists() {
                        std::fs::remove_dir_all(&upper).with_context(|| format!("emptying {}", upper.display()))?;
                    }
                    (upper, Layout::Upper)
                }
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let received = Received::new(&dir, layout)?;
            self.trees.insert(tree.clone(), Arriving { received: Some(received), damaged: None, complete: false });
        }
        Ok(self.trees.get_mut(tree).expect("inserted"))
    }

    /// Refuses a batch of the writable layer that would take it past the node's bound for one
    /// layer, or eat into the disk reserve.
    fn check_bounds(&self, tree: &TreeName, received: &Received, changed: &[Entry]) -> anyhow::Result<()> {
        let (TreeName::WritableLayer, Some(bounds)) = (tree, &self.upper_bounds) else { return Ok(()) };
        let size = |e: &Entry| if let volume_tree::Kind::File { size } = e.kind { size } else { 0 };
        let adding: u64 = changed.iter().map(size).sum();
        // What the layer holds after the batch (files sent again replace their old content).
        let now: u64 = received.entries.values().map(|(e, _)| size(e)).sum();
        let replaced: u64 = changed.iter().filter_map(|e| received.entries.get(&e.path)).map(|(e, _)| size(e)).sum();
        let what = "the writable layer".to_string();
        if now.saturating_sub(replaced) + adding > bounds.max_size {
            let bound = herd_image::Bound::Layer;
            return Err(herd_image::ImageError::TooLarge { what, limit: bounds.max_size, bound }.into());
        }
        if let Some(reserve) = &bounds.reserve {
            let (free, _) = herd_image::disk_space(&reserve.path)
                .with_context(|| format!("reading the free space of {}", reserve.path.display()))?;
            if free < adding.saturating_add(reserve.bytes) {
                let path = reserve.path.clone();
                return Err(herd_image::ImageError::DiskReserve { what, path, reserve: reserve.bytes, free }.into());
            }
        }
        Ok(())
    }

    /// One batch: its entries were in `Msg::VolumeBatch`; their content and digests follow.
    pub(crate) async fn batch(
        &mut self,
        c: &Container,
        ch: &mut Channel,
        tree: &TreeName,
        deleted: Vec<String>,
        changed: Vec<Entry>,
        patched: Vec<u32>,
    ) -> anyhow::Result<()> {
        let arriving = self.arriving(c, tree)?;
        let mut received = arriving.received.take().with_context(|| format!("an earlier batch of {tree} failed"))?;
        if let Err(e) = self.check_bounds(tree, &received, &changed) {
            let reason = format!("{e:#}");
            ch.abort(&reason).await;
            bail!(reason);
        }
        let (sink, source) = tokio::io::duplex(1 << 20);
        let writing = tokio::task::spawn_blocking(move || {
            let mut content = tokio_util::io::SyncIoBridge::new(source);
            let patched: HashSet<usize> = patched.into_iter().map(|i| i as usize).collect();
            let written = received.apply(&deleted, &changed, &patched, &mut content);
            // Whatever is left must be drained (the sender waits for its end), and is wrong.
            let extra = std::io::copy(&mut content, &mut std::io::sink()).unwrap_or(0);
            (received, written, extra)
        });
        let blob = ch.recv_blob(sink).await;
        let (received, written, extra) = writing.await.with_context(|| format!("writing {tree}"))?;
        let arriving = self.trees.get_mut(tree).expect("arriving");
        arriving.received = Some(received);
        let written = written?;
        blob?;
        if extra > 0 {
            bail!("{tree}: {extra} bytes of content more than its files' sizes");
        }
        let digests = match ch.recv::<Msg>().await? {
            Msg::VolumeDigests { tree: t, digests } if &t == tree => digests,
            other => bail!("expected the digests of {tree}, got {other:?}"),
        };
        if digests.len() != written.len() {
            bail!("{tree}: {} digests for {} files", digests.len(), written.len());
        }
        if arriving.damaged.is_none()
            && let Some((path, _)) =
                written.iter().zip(&digests).find(|((_, got), sent)| hex::encode(got) != **sent).map(|x| x.0)
        {
            arriving.damaged = Some(path.clone());
        }
        Ok(())
    }

    /// The end of a pass: compares the checksum of what arrived with the source's and
    /// answers. An error means the migration cannot go on (the source was told why).
    pub(crate) async fn check(
        &mut self,
        c: &Container,
        ch: &mut Channel,
        tree: &TreeName,
        digest: &str,
        entries: u64,
        last: bool,
    ) -> anyhow::Result<()> {
        let arriving = self.arriving(c, tree)?;
        let digest = digest.to_string();
        let verdict = match (&arriving.damaged, arriving.received.take()) {
            (_, None) => Err("an earlier batch failed".to_string()),
            (Some(path), Some(r)) => {
                arriving.received = Some(r);
                Err(format!("the content of {path:?} arrived damaged (its checksum differs from the source's)"))
            }
            (None, Some(r)) => {
                let (r, result) = tokio::task::spawn_blocking(move || {
                    let result = verify(&r, &digest, entries);
                    (r, result)
                })
                .await
                .with_context(|| format!("verifying {tree}"))?;
                arriving.received = Some(r);
                result
            }
        };
        match verdict {
            Ok(()) => {
                arriving.complete = last;
                ch.send(&Msg::VolumeVerified { tree: tree.clone() }).await?;
                Ok(())
            }
            Err(why) => {
                let reason = format!("{tree} of {} did not arrive intact: {why}", c.spec.name);
                let _ = ch.send(&Msg::Failed { reason: reason.clone() }).await;
                bail!(reason)
            }
        }
    }

    /// The writable layer and every volume the container mounts arrived whole, each one's
    /// last pass checked.
    pub fn ensure_complete(&self, spec: &ContainerSpec) -> anyhow::Result<()> {
        let trees = std::iter::once(TreeName::WritableLayer).chain(names(spec).into_iter().map(TreeName::Volume));
        for tree in trees {
            if !self.trees.get(&tree).is_some_and(|a| a.complete) {
                bail!("{tree} of {} did not arrive", spec.name);
            }
        }
        Ok(())
    }
}

fn verify(r: &Received, digest: &str, entries: u64) -> Result<(), String> {
    if r.entries.len() as u64 != entries {
        return Err(format!("{} entries arrived, the source has {entries}", r.entries.len()));
    }
    r.settle_directories().map_err(|e| format!("{e:#}"))?;
    r.verify_on_disk().map_err(|e| format!("{e:#}"))?;
    let got = r.digest();
    if got != digest {
        return Err(format!("the checksum of the tree is {got}, the source's is {digest}"));
    }
    Ok(())
}

// ------------------------------------------------------------------ the node's volumes

impl Runtime {
    /// The containers here, other than `id`, that mount volume `name`.
    pub(crate) fn volume_users(&self, name: &str, id: &str) -> Vec<String> {
        let containers = self.containers.lock().unwrap();
        let mut users: Vec<String> = containers
            .values()
            .filter(|c| c.spec.id != id && c.spec.host.volumes.iter().any(|v| v.name == name))
            .map(|c| c.spec.name.clone())
            .collect();
        users.sort();
        users
    }

    /// Destination, before anything is prepared: each volume the container brings must be
    /// new here: no container here uses one of that name, and no directory of that name holds
    /// anything (a volume left by removed containers is not overwritten).
    pub(crate) fn ensure_volumes_free(&self, spec: &ContainerSpec) -> Result<(), String> {
        for name in names(spec) {
            let users = self.volume_users(&name, &spec.id);
            if !users.is_empty() {
                return Err(format!(
                    "node {} has another volume named {name}, used by {}",
                    self.cfg.node,
                    users.join(", ")
                ));
            }
            let dir = volume_dir(&self.cfg.paths.data_dir, &name);
            if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
                return Err(format!(
                    "node {} already has a volume named {name} ({}), which no container uses: it is not overwritten; \
                     remove that directory or move {} elsewhere",
                    self.cfg.node,
                    dir.display(),
                    spec.name
                ));
            }
        }
        Ok(())
    }

    /// Destination, just before the restore: puts each arrived volume where the container's
    /// bind mounts expect it.
    pub(crate) fn place_volumes(&self, c: &Container) -> anyhow::Result<()> {
        for name in names(&c.spec) {
            let target = volume_dir(&self.cfg.paths.data_dir, &name);
            if target.exists() {
                // An empty directory (made by an earlier container's start) is no volume.
                std::fs::remove_dir(&target).with_context(|| {
                    format!(
                        "volume {name} appeared on node {} during the migration ({})",
                        self.cfg.node,
                        target.display()
                    )
                })?;
            }
            std::fs::create_dir_all(target.parent().expect("volumes dir"))?;
            let staging = staging_dir(c, &name);
            std::fs::rename(&staging, &target)
                .with_context(|| format!("moving {} to {}", staging.display(), target.display()))?;
        }
        let _ = std::fs::remove_dir(c.paths.dir.join("volumes"));
        Ok(())
    }

    /// Destination, when an incoming migration that placed volumes does not commit: they go
    /// (the source kept its own). One still in staging was never moved, and what is at its
    /// place is not this migration's.
    pub(crate) async fn remove_placed_volumes(&self, c: &Container, names: &[String]) {
        for name in names {
            if staging_dir(c, name).exists() || !self.volume_users(name, &c.spec.id).is_empty() {
                continue;
            }
            remove_tree(volume_dir(&self.cfg.paths.data_dir, name), format!("the copy of volume {name}")).await;
        }
    }

    /// Source, after the commit: the volumes left with the container, unless a container
    /// here still uses one (the Control node refuses such moves; this is a last guard).
    pub(crate) async fn remove_moved_volumes(&self, spec: &ContainerSpec) {
        for name in names(spec) {
            let users = self.volume_users(&name, &spec.id);
            if !users.is_empty() {
                tracing::warn!("volume {name} stays on node {}: {} use it", self.cfg.node, users.join(", "));
                continue;
            }
            remove_tree(volume_dir(&self.cfg.paths.data_dir, &name), format!("volume {name}, which moved")).await;
        }
    }

    /// Files of `tree` the container's processes map shared and writable, by device and
    /// inode (see [`volume_tree::mapped_files`]): a pass sends them whatever their times say.
    pub(crate) fn mapped_files(&self, c: &Container, tree: &TreeName) -> HashSet<(u64, u64)> {
        let pids: Vec<i32> = crate::cgroups::processes(&self.cfg.paths.cgroup(&c.spec.id))
            .unwrap_or_default()
            .into_iter()
            .map(|p| p as i32)
            .collect();
        match tree {
            TreeName::Volume(_) => volume_tree::mapped_files(&pids),
            TreeName::WritableLayer => mapped_upper_files(c, &pids),
        }
    }
}

/// The upper copies of the files of `c`'s root that `pids` map shared and writable. The
/// mappings show the overlay's device and inode numbers, so they are found by path.
fn mapped_upper_files(c: &Container, pids: &[i32]) -> HashSet<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let rootfs = c.paths.rootfs();
    let Ok(root) = std::fs::metadata(&rootfs) else { return HashSet::new() };
    let upper = c.paths.upper();
    let prefix = format!("{}/", rootfs.display());
    volume_tree::mapped_paths(pids, root.dev())
        .iter()
        .filter(|p| !p.ends_with(" (deleted)"))
        // Seen from the node the path is under the root's mount point; from the container's
        // own mount namespace, it is the path in the container.
        .map(|p| p.strip_prefix(&prefix).unwrap_or(p).trim_start_matches('/'))
        .filter_map(|rel| std::fs::symlink_metadata(upper.join(rel)).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// Removes a directory tree on a blocking thread: a large volume takes seconds to delete on a
/// busy disk, which must not hold up the agent's heartbeats.
async fn remove_tree(dir: PathBuf, what: String) {
    let shown = dir.display().to_string();
    let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => tracing::warn!("removing {what} ({shown}): {e}"),
        Err(e) => tracing::warn!("removing {what} ({shown}): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::ContainerPaths;
    use crate::transfer::{Accepted, Budget, Listener, Ticket, connect_control};

    /// The destination's side of one pass: batches until the check, answered.
    async fn serve(incoming: &mut Incoming, c: &Container, ch: &mut Channel) -> anyhow::Result<bool> {
        loop {
            match ch.recv::<Msg>().await? {
                Msg::VolumeBatch { tree, deleted, changed, patched } => {
                    incoming.batch(c, ch, &tree, deleted, changed, patched).await?
                }
                Msg::VolumeCheck { tree, digest, entries, last } => {
                    incoming.check(c, ch, &tree, &digest, entries, last).await?;
                    return Ok(last);
                }
                other => bail!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn passes_over_a_channel_carry_changes_and_a_damaged_byte_fails_the_check() {
        let data = tempfile::tempdir().unwrap();
        let source = volume_dir(data.path(), "v");
        std::fs::create_dir_all(source.join("d")).unwrap();
        std::fs::write(source.join("d/a"), vec![1u8; 300_000]).unwrap();
        std::fs::write(source.join("b"), b"bee").unwrap();
        let spec: ContainerSpec = serde_json::from_value(serde_json::json!({
            "id": "c1", "name": "c", "image": "i", "layers": [], "args": [], "env": [], "working_dir": "/",
            "ip": "10.0.0.1", "limits": {}, "labels": {},
            "host": {"volumes": [{"name": "v", "target": "/v"}, {"name": "v", "target": "/w"}]}
        }))
        .unwrap();
        assert_eq!(names(&spec), ["v"]);
        let c = Container::new(spec.clone(), ContainerPaths { dir: data.path().join("containers/c1") });
        let (mut tx, mut rx) = channel_pair().await;
        let mut outgoing = Outgoing::volume(data.path(), "v").unwrap();
        let mut incoming = Incoming::default();

        let (sent, served) =
            tokio::join!(outgoing.send_pass(&mut tx, false, HashSet::new(), false), serve(&mut incoming, &c, &mut rx));
        assert_eq!((sent.unwrap().content, served.unwrap()), (300_003, false));
        assert!(incoming.ensure_complete(&spec).is_err(), "only a frozen pass completes a volume");
        let staged = staging_dir(&c, "v");
        assert_eq!(std::fs::read(staged.join("b")).unwrap(), b"bee");

        // Changes between passes: one file rewritten, one removed.
        std::fs::write(source.join("b"), b"bumblebee").unwrap();
        std::fs::remove_dir_all(source.join("d")).unwrap();
        let (sent, served) =
            tokio::join!(outgoing.send_pass(&mut tx, true, HashSet::new(), false), serve(&mut incoming, &c, &mut rx));
        assert_eq!((sent.unwrap().content, served.unwrap()), (9, true));
        let err = incoming.ensure_complete(&spec).unwrap_err().to_string();
        assert_eq!(err, "the writable layer of c did not arrive");
        // The writable layer, straight into the container's upper directory.
        let source_c = Container::new(spec.clone(), ContainerPaths { dir: data.path().join("source/c1") });
        std::fs::create_dir_all(source_c.paths.upper().join("etc")).unwrap();
        std::fs::write(source_c.paths.upper().join("etc/motd"), b"moved").unwrap();
        let mut upper = Outgoing::writable_layer(&source_c).unwrap();
        let (sent, served) =
            tokio::join!(upper.send_pass(&mut tx, true, HashSet::new(), false), serve(&mut incoming, &c, &mut rx));
        assert_eq!((sent.unwrap().content, served.unwrap()), (5, true));
        assert_eq!(std::fs::read(c.paths.upper().join("etc/motd")).unwrap(), b"moved");
        incoming.ensure_complete(&spec).unwrap();
        assert_eq!(std::fs::read(staged.join("b")).unwrap(), b"bumblebee");
        assert!(!staged.join("d").exists());

        // A byte damaged on the way: the destination says which file, the source fails.
        std::fs::write(source.join("b"), b"wasp").unwrap();
        let (sent, served) =
            tokio::join!(outgoing.send_pass(&mut tx, true, HashSet::new(), true), serve(&mut incoming, &c, &mut rx));
        let err = format!("{:#}", sent.unwrap_err());
        assert!(err.contains("volume v of c did not arrive intact: the content of \"b\" arrived damaged"), "{err}");
        assert!(served.is_err());

        // A writable layer beyond the destination's bound for a layer is refused, saying so.
        let (mut tx, mut rx) = channel_pair().await;
        let mut small = Incoming::new(herd_image::LayerBounds { max_size: 4, reserve: None });
        let mut upper = Outgoing::writable_layer(&source_c).unwrap();
        let (sent, served) =
            tokio::join!(upper.send_pass(&mut tx, false, HashSet::new(), false), serve(&mut small, &c, &mut rx));
        let err = format!("{:#}", sent.unwrap_err());
        assert!(err.contains("the writable layer unpacks to more than 4B, the most one layer may unpack to"), "{err}");
        assert!(served.is_err());
    }

    /// The two ends of a migration's control channel: (source, destination).
    async fn channel_pair() -> (Channel, Channel) {
        let ticket = Ticket::generate("m1");
        let local = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let listener = Listener::bind(local, ticket.clone(), Budget::unlimited()).await.unwrap();
        let tx = connect_control(listener.local_addr(), &ticket, Budget::unlimited()).await.unwrap();
        let Accepted::Control(rx) = listener.accept().await.unwrap() else { panic!("not a control connection") };
        (tx, rx)
    }

    #[test]
    fn passes_go_on_while_they_shrink() {
        assert!(another_pass(&[]));
        assert!(another_pass(&[0]));
        assert!(!another_pass(&[10 << 20, 100]), "small enough");
        assert!(another_pass(&[100 << 20, 50 << 20]), "shrinking");
        assert!(!another_pass(&[100 << 20, 95 << 20]), "not shrinking");
        assert!(!another_pass(&[100 << 20, 50 << 20, 25 << 20, 12 << 20]), "at most {MAX_PASSES}");
    }
}
