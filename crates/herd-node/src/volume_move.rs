//! Named volumes moving with a migrating container, over the migration's control channel (so
//! within its bandwidth budget). The source sends passes over the tree ([`volume_tree`]):
//! all of it while the container runs, then what changed meanwhile, and a last pass while it is
//! frozen. Each pass is batches of entries, each followed by its files' content and their
//! digests, and ends with the checksum of the whole tree, which the destination compares with
//! what it wrote before it answers; a mismatch fails the migration before the restore, so the
//! container resumes on the source.
//!
//! The destination receives into a staging directory in the container's directory (removed
//! with it when the migration does not commit) and puts it in place, `<data>/volumes/NAME`,
//! just before it restores; the source removes its copy once the destination runs the
//! container (see the [design note](../../../docs/design/volumes.md)).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use herd_proto::node::ContainerSpec;

use crate::migrate::Msg;
use crate::runtime::{Container, Runtime};
use crate::transfer::Channel;
use crate::volume_tree::{self, Entry, FileDigest, Known, Received, Scanned};
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

/// A volume leaving with its container.
pub struct Outgoing {
    pub name: String,
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
    pub fn open(data_dir: &Path, name: &str) -> anyhow::Result<Outgoing> {
        let root = volume_tree::open_root(&volume_dir(data_dir, name))?;
        Ok(Outgoing { name: name.to_string(), root: Arc::new(root), known: BTreeMap::new(), passes: Vec::new() })
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
        let root = self.root.clone();
        let (tree, scanned_at) = tokio::task::spawn_blocking(move || {
            let at = volume_tree::now_ns();
            volume_tree::scan(root.as_fd()).map(|t| (t, at))
        })
        .await
        .context("scanning the volume")??;
        let pass = volume_tree::plan(&self.known, &tree, &mapped);
        drop(tree);
        let mut digests: HashMap<String, (FileDigest, bool)> = HashMap::new();
        let batches: Vec<&[Scanned]> = match (pass.deleted.is_empty(), pass.changed.is_empty()) {
            (true, true) => Vec::new(),
            (false, true) => vec![&[]],
            _ => pass.changed.chunks(BATCH).collect(),
        };
        for (i, batch) in batches.into_iter().enumerate() {
            let deleted = if i == 0 { pass.deleted.clone() } else { Vec::new() };
            let changed: Vec<Entry> = batch.iter().map(|s| s.entry.clone()).collect();
            ch.send(&Msg::VolumeBatch { name: self.name.clone(), deleted, changed }).await?;
            let (reader, writer) = tokio::io::duplex(1 << 20);
            let (root, files) = (self.root.clone(), batch.to_vec());
            let damage =
                corrupt && files.iter().any(|s| matches!(s.entry.kind, volume_tree::Kind::File { size } if size > 0));
            corrupt &= !damage;
            let reading = tokio::task::spawn_blocking(move || {
                let bridge = tokio_util::io::SyncIoBridge::new(writer);
                let mut out = std::io::BufWriter::with_capacity(1 << 20, bridge);
                volume_tree::read_contents(root.as_fd(), &files, &mut out, frozen, damage)
            });
            let sent = ch.send_blob(reader).await;
            let read = reading.await.context("reading the volume")?;
            let read = read?;
            sent?;
            let list: Vec<String> =
                batch.iter().filter_map(|s| read.get(&s.entry.path)).map(|(d, _)| hex::encode(d)).collect();
            ch.send(&Msg::VolumeDigests { name: self.name.clone(), digests: list }).await?;
            digests.extend(read);
        }
        volume_tree::remember(&mut self.known, &pass, &digests, scanned_at);
        let content = pass.content_bytes();
        self.passes.push(content);
        let digest = volume_tree::tree_digest(self.known.values().map(|k| (&k.entry, k.digest.as_ref())));
        ch.send(&Msg::VolumeCheck { name: self.name.clone(), digest, entries: self.known.len() as u64, last: frozen })
            .await?;
        match ch.recv::<Msg>().await? {
            Msg::VolumeVerified { name } if name == self.name => {}
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

/// The volumes arriving with a container.
#[derive(Default)]
pub struct Incoming {
    volumes: HashMap<String, Arriving>,
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
    fn arriving(&mut self, c: &Container, name: &str) -> anyhow::Result<&mut Arriving> {
        if !c.spec.host.volumes.iter().any(|v| v.name == name) {
            bail!("the source sent volume {name}, which {} does not mount", c.spec.name);
        }
        if !self.volumes.contains_key(name) {
            let dir = staging_dir(c, name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let received = Received::new(&dir)?;
            self.volumes
                .insert(name.to_string(), Arriving { received: Some(received), damaged: None, complete: false });
        }
        Ok(self.volumes.get_mut(name).expect("inserted"))
    }

    /// One batch: its entries were in `Msg::VolumeBatch`; their content and digests follow.
    pub(crate) async fn batch(
        &mut self,
        c: &Container,
        ch: &mut Channel,
        name: &str,
        deleted: Vec<String>,
        changed: Vec<Entry>,
    ) -> anyhow::Result<()> {
        let arriving = self.arriving(c, name)?;
        let mut received = arriving.received.take().context("an earlier batch of this volume failed")?;
        let (sink, source) = tokio::io::duplex(1 << 20);
        let writing = tokio::task::spawn_blocking(move || {
            let mut content = tokio_util::io::SyncIoBridge::new(source);
            let written = received.apply(&deleted, &changed, &mut content);
            // Whatever is left must be drained (the sender waits for its end), and is wrong.
            let extra = std::io::copy(&mut content, &mut std::io::sink()).unwrap_or(0);
            (received, written, extra)
        });
        let blob = ch.recv_blob(sink).await;
        let (received, written, extra) = writing.await.context("writing the volume")?;
        let arriving = self.volumes.get_mut(name).expect("arriving");
        arriving.received = Some(received);
        let written = written?;
        blob?;
        if extra > 0 {
            bail!("volume {name}: {extra} bytes of content more than its files' sizes");
        }
        let digests = match ch.recv::<Msg>().await? {
            Msg::VolumeDigests { name: n, digests } if n == name => digests,
            other => bail!("expected the digests of volume {name}, got {other:?}"),
        };
        if digests.len() != written.len() {
            bail!("volume {name}: {} digests for {} files", digests.len(), written.len());
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
        name: &str,
        digest: &str,
        entries: u64,
        last: bool,
    ) -> anyhow::Result<()> {
        let arriving = self.arriving(c, name)?;
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
                .context("verifying the volume")?;
                arriving.received = Some(r);
                result
            }
        };
        match verdict {
            Ok(()) => {
                arriving.complete = last;
                ch.send(&Msg::VolumeVerified { name: name.to_string() }).await?;
                Ok(())
            }
            Err(why) => {
                let reason = format!("volume {name} of {} did not arrive intact: {why}", c.spec.name);
                let _ = ch.send(&Msg::Failed { reason: reason.clone() }).await;
                bail!(reason)
            }
        }
    }

    /// Every volume the container mounts arrived whole, its last pass checked.
    pub fn ensure_complete(&self, spec: &ContainerSpec) -> anyhow::Result<()> {
        for name in names(spec) {
            if !self.volumes.get(&name).is_some_and(|a| a.complete) {
                bail!("volume {name} of {} did not arrive", spec.name);
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

    /// Files the container's processes map shared and writable (see [`volume_tree::mapped_files`]).
    pub(crate) fn mapped_files(&self, c: &Container) -> HashSet<(u64, u64)> {
        let pids = crate::cgroups::processes(&self.cfg.paths.cgroup(&c.spec.id)).unwrap_or_default();
        volume_tree::mapped_files(&pids.into_iter().map(|p| p as i32).collect::<Vec<_>>())
    }
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
                Msg::VolumeBatch { name, deleted, changed } => incoming.batch(c, ch, &name, deleted, changed).await?,
                Msg::VolumeCheck { name, digest, entries, last } => {
                    incoming.check(c, ch, &name, &digest, entries, last).await?;
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
        let ticket = Ticket::generate("m1");
        let local = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let listener = Listener::bind(local, ticket.clone(), Budget::unlimited()).await.unwrap();
        let mut tx = connect_control(listener.local_addr(), &ticket, Budget::unlimited()).await.unwrap();
        let Accepted::Control(mut rx) = listener.accept().await.unwrap() else { panic!("not a control connection") };
        let mut outgoing = Outgoing::open(data.path(), "v").unwrap();
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
