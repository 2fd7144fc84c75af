//! Checkpoint and restore of a container on this node: the freeze, the CRIU dump and the
//! writable layer's snapshot (`Checkpoint`, and the ticker versions of [`crate::versions`]),
//! and a restore from a checkpoint directory, with the checks of its images first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use herd_proto::node::{ContainerSpec, NodeReply};
use herd_proto::now_millis;
use herd_proto::state::{CheckpointInfo, ContainerState};

use crate::runc::CheckpointOpts;
use crate::runtime::{
    CRIU_IMAGES, CarriedLog, Container, DRAIN_WITHIN, KILL_WAIT, Network, OpResult, ROOTFS_DIFF, Runtime,
    criu_log_tail, err,
};
use crate::shim::ShimMode;
use crate::version_trail::relative;
use crate::{netlock, overlay};

/// What a checkpoint does with the container's TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpHold {
    /// Held from before the freeze (new connections drained first) until the container runs
    /// again: here, or where it is restored, its peers wait rather than meet a reset, and the
    /// images hold the connections as the peers last saw them.
    Held,
    /// Left alone: a ticker's version, whose connections are stale whenever it is restored
    /// (a failed node's peers moved on; a version restored by hand is older than the
    /// container's state), and whose container runs on. Holding them would add two rule
    /// loads (tens of milliseconds) to the pause and buy nothing.
    Stale,
}

/// What a dump does about the memory written since an earlier dump (ticker versions,
/// [`crate::versions`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct DumpMemory {
    /// Track the pages written from this dump on, for the next one.
    pub track: bool,
    /// The earlier dump's CRIU images, relative to the new ones: only the pages written since
    /// it are dumped, and the rest are marked as in it (CRIU's parent images).
    pub parent: Option<PathBuf>,
    /// Without a parent: pre-dump the memory first while the container runs (it stops only
    /// while CRIU takes hold of the pages), then freeze it for what it wrote since. The
    /// pre-dump ends up inside the checkpoint, as its CRIU images' parent (`criu/parent/`).
    pub pre_dump: bool,
    /// The parent images, hard-linked into the checkpoint as `criu/parent/` once dumped: a
    /// checkpoint on the node's disk stays whole whatever happens to its parent.
    pub link_parent: Option<PathBuf>,
}

/// Where a checkpoint's pre-dump is written, beside its CRIU images until it moves into them.
const PRE_DUMP: &str = "criu-pre";

impl Runtime {
    /// `Checkpoint`: CRIU images of the processes plus a snapshot of the writable layer.
    ///
    /// Where the node tracks written memory, a checkpoint left running tracks it from then on,
    /// and the container's next checkpoint on this node dumps only the pages written since
    /// (its images' parent is that checkpoint's, hard-linked in: each checkpoint stays whole).
    pub async fn checkpoint(
        self: &Arc<Self>,
        id: &str,
        checkpoint_id: &str,
        leave_running: bool,
    ) -> OpResult<NodeReply> {
        let dir = self.cfg.paths.checkpoint(id, checkpoint_id);
        let images = dir.join(CRIU_IMAGES);
        let trail = self.trail(id);
        let tracking = self.cfg.track_mem_config.is_some();
        let process = self.process_of(id);
        // Only a checkpoint left running: one that stops the container must not depend on
        // linking files after its processes are gone.
        let parent = match (tracking && leave_running, process) {
            (true, Some(process)) => trail
                .checkpoint_for(process)
                .map(|earlier| self.cfg.paths.checkpoint(id, &earlier).join(CRIU_IMAGES))
                .filter(|earlier| earlier.is_dir() && *earlier != images),
            _ => None,
        };
        let track = tracking && leave_running && process.is_some();
        if parent.is_none() && track {
            self.track_afresh(&trail, process);
        }
        let memory = DumpMemory {
            track,
            parent: parent.as_ref().map(|p| relative(&images, p)),
            pre_dump: false,
            link_parent: parent,
        };
        let saved = self.checkpoint_timed(id, checkpoint_id, leave_running, TcpHold::Held, dir, &memory).await;
        match (&saved, process) {
            (Ok(_), Some(process)) if track => {
                if let Err(e) = trail.keep_checkpoint(checkpoint_id, process) {
                    tracing::warn!("{id}: the next checkpoint is a full dump: {e}");
                    trail.clear();
                }
            }
            _ if tracking => trail.clear(),
            _ => {}
        }
        let (info, _) = saved?;
        Ok(NodeReply::Checkpointed(info))
    }

    /// [`Runtime::checkpoint`] into `dir`, which also says how long the container was frozen.
    pub(crate) async fn checkpoint_timed(
        self: &Arc<Self>,
        id: &str,
        checkpoint_id: &str,
        leave_running: bool,
        tcp: TcpHold,
        dir: PathBuf,
        memory: &DumpMemory,
    ) -> OpResult<(CheckpointInfo, std::time::Duration)> {
        if !self.cfg.criu {
            return Err(format!("node {} has no usable CRIU (>= 4.2)", self.cfg.node));
        }
        herd_proto::names::validate_container_name(checkpoint_id).map_err(|e| e.0)?;
        let c = self.get(id)?;
        let _op = c.op.lock().await;
        if let Some(why) = self.execs.refusal(id, &c.spec.name, "checkpoint it") {
            return Err(why);
        }
        let generation = {
            let mut l = c.live.lock().unwrap();
            if l.state != Some(ContainerState::Running) {
                return Err(format!("container {} is not running", c.spec.name));
            }
            l.expecting_exit = !leave_running;
            l.generation
        };
        if dir.exists() {
            return Err(format!("checkpoint {checkpoint_id} of {} already exists", c.spec.name));
        }
        // Failed before the dump: the container runs on, and an exit would be its own.
        let refused = |why: String| {
            c.live.lock().unwrap().expecting_exit = false;
            Err(format!("checkpoint of {} failed: {why}", c.spec.name))
        };
        if let Err(why) = self.ensure_dumpable(&c).await {
            c.live.lock().unwrap().expecting_exit = false;
            return Err(format!("{} cannot be checkpointed: {why}; it keeps running", c.spec.name));
        }
        // Its TCP is held from before the dump: a container that goes away keeps its
        // connections' peers waiting (not reset) until it is restored.
        let netns = match tcp {
            TcpHold::Held => match self.netns_of(&c.spec) {
                Ok(netns) => Some(netns),
                Err(e) => return refused(format!("{e:#}")),
            },
            TcpHold::Stale => None,
        };
        // The memory first, while it runs: the freeze below is then for what it wrote since.
        let mut memory = memory.clone();
        let mut pre_dump_pause = std::time::Duration::ZERO;
        if memory.pre_dump && memory.parent.is_none() {
            match self.pre_dump(&c, &dir).await {
                Ok(pause) => {
                    pre_dump_pause = pause;
                    memory.parent = Some(Path::new("..").join(PRE_DUMP));
                }
                Err(e) => {
                    tracing::warn!("{}: {e}; dumping it whole while it is frozen", c.spec.name);
                    let _ = std::fs::remove_dir_all(dir.join(PRE_DUMP));
                }
            }
        }
        // Frozen from here, before CRIU starts (its own freeze is slower). A container left
        // running stays frozen until its writable layer is packed too, so that the files match
        // the memory: a file it writes on after the dump could otherwise have another size
        // than its open descriptor's image, which CRIU refuses to restore.
        let frozen_at = std::time::Instant::now();
        let cgroup = self.cfg.paths.cgroup(id);
        let frozen = match &netns {
            Some(netns) => self.freeze_and_lock(&c, netns).await.map(|_| ()),
            None => self.freeze(id).await,
        };
        if let Err(e) = frozen {
            return refused(format!("{e:#}"));
        }
        let mut saved = self.dump_and_pack(&c, &dir, leave_running, generation, &memory).await;
        if (leave_running || saved.is_err())
            && let Err(e) = crate::cgroups::thaw(&cgroup)
        {
            tracing::error!("{} stays paused after its checkpoint: {e}", c.spec.name);
        }
        let pause = frozen_at.elapsed().max(pre_dump_pause);
        let parent_in = dir.join(CRIU_IMAGES).join("parent");
        if saved.is_ok() && pre_dump_pause > std::time::Duration::ZERO {
            // The pre-dump becomes the checkpoint's own parent images.
            let from = dir.join(PRE_DUMP);
            if let Err(e) = std::fs::rename(&from, &parent_in) {
                saved = Err(err(&format!("moving {} to {}", from.display(), parent_in.display()), e));
            }
        } else if saved.is_ok()
            && let Some(parent) = &memory.link_parent
            && let Err(e) = crate::version_trail::link_tree(parent, &parent_in)
        {
            saved = Err(err(&format!("linking {} into {}", parent.display(), parent_in.display()), e));
        }
        // Left locked only when the container is gone with its own namespace.
        let gone = !leave_running && saved.is_ok() && c.spec.host.network.is_none();
        if !gone
            && let Some(netns) = &netns
            && let Err(e) = netlock::unlock(netns)
        {
            tracing::error!("{}'s network stays locked after its checkpoint: {e:#}", c.spec.name);
        }
        if let Err(e) = saved {
            c.live.lock().unwrap().expecting_exit = false;
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let info = CheckpointInfo {
            id: checkpoint_id.to_string(),
            node: self.cfg.node.clone(),
            created_at: now_millis(),
            leave_running,
            size_bytes: 0,
        };
        let described = tokio::task::spawn_blocking({
            let (dir, spec) = (dir.clone(), c.spec.clone());
            move || crate::checkpoints::describe(&dir, spec, info)
        })
        .await
        .map_err(|e| err("describing the checkpoint", e))?;
        let info = match described {
            Ok(manifest) => manifest.checkpoint,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(err("describing the checkpoint", e));
            }
        };
        if !leave_running {
            {
                let mut l = c.live.lock().unwrap();
                l.state = Some(ContainerState::Checkpointed);
                l.exit_code = None;
            }
            self.release(&c).await;
            self.publish_status(&c).await;
        }
        Ok((info, pause))
    }

    /// Pre-dumps the memory of running container `c` into `dir`/[`PRE_DUMP`], tracking what it
    /// writes from then on. Returns how long CRIU kept it frozen (at most: from CRIU's start
    /// until it let the processes run again, from its log).
    async fn pre_dump(&self, c: &Container, dir: &Path) -> anyhow::Result<std::time::Duration> {
        let mut opts = CheckpointOpts::new(dir.join(PRE_DUMP), dir.join("pre-dump-work"));
        opts.pre_dump = true;
        let log = opts.work_path.join("dump.log");
        if let Err(e) = self.cfg.runc.checkpoint(&c.spec.id, &opts).await {
            let detail = criu_log_tail(&log).map(|t| format!(" (CRIU: {t})")).unwrap_or_default();
            anyhow::bail!("its pre-dump failed: {e}{detail}");
        }
        let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        unfrozen_at(&text).with_context(|| format!("{} does not say when the processes ran again", log.display()))
    }

    /// The CRIU dump of `c` into `dir`, then its writable layer: the two halves of a checkpoint.
    async fn dump_and_pack(
        &self,
        c: &Container,
        dir: &Path,
        leave_running: bool,
        generation: u64,
        memory: &DumpMemory,
    ) -> OpResult<()> {
        let mut opts = CheckpointOpts::new(dir.join(CRIU_IMAGES), dir.join("dump-work"));
        opts.leave_running = leave_running;
        opts.parent_path = memory.parent.clone();
        if memory.track {
            opts.track_mem_config = Some(
                self.cfg
                    .track_mem_config
                    .clone()
                    .ok_or_else(|| format!("node {} does not track written memory", self.cfg.node))?,
            );
        }
        if c.spec.host.network.is_none() && crate::netfilter::may_have_rules(&c.spec.host) {
            let netns = self.cfg.paths.netns(&c.spec.id);
            crate::netfilter::save(&netns, &opts.image_path)
                .map_err(|e| format!("saving the firewall rules of {}: {e:#}", c.spec.name))?;
        }
        if let Err(e) = self.cfg.runc.checkpoint(&c.spec.id, &opts).await {
            let detail =
                criu_log_tail(&opts.work_path.join("dump.log")).map(|t| format!(" (CRIU: {t})")).unwrap_or_default();
            return Err(format!("checkpoint of {} failed: {e}{detail}", c.spec.name));
        }
        if memory.parent.is_some() {
            // CRIU's link to the parent images: the caller knows where they are, and a
            // checkpoint holds regular files only.
            let link = opts.image_path.join("parent");
            std::fs::remove_file(&link).map_err(|e| err(&format!("removing {}", link.display()), e))?;
        }
        if !leave_running && !Self::wait_exit(c, generation, KILL_WAIT).await {
            tracing::warn!("{} still has a shim after its checkpoint", c.spec.name);
        }
        // The processes are saved (and frozen, or gone): save the writable layer.
        let upper = c.paths.upper();
        let diff = dir.join(ROOTFS_DIFF);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let f = std::io::BufWriter::new(std::fs::File::create(&diff)?);
            herd_image::pack_upper(&upper, f)
        })
        .await
        .map_err(|e| err("packing the writable layer", e))?
        .map_err(|e| err("saving the writable layer", e))
    }

    /// `Restore`: put back the writable layer of a checkpoint and restore its processes.
    pub async fn restore(self: &Arc<Self>, spec: ContainerSpec, checkpoint_id: &str) -> OpResult<NodeReply> {
        self.restore_with_log(spec, checkpoint_id, None).await
    }

    /// `Restore`, for a container that comes from another node with its log: a container
    /// that has no log here yet starts with `log`.
    pub async fn restore_with_log(
        self: &Arc<Self>,
        spec: ContainerSpec,
        checkpoint_id: &str,
        log: Option<CarriedLog<'_>>,
    ) -> OpResult<NodeReply> {
        herd_proto::names::validate_container_name(checkpoint_id).map_err(|e| e.0)?;
        let dir = self.cfg.paths.checkpoint(&spec.id, checkpoint_id);
        self.restore_from(spec, checkpoint_id, &dir, log).await
    }

    /// Restores the container of `spec` from the checkpoint in `dir` (`checkpoint_id` names
    /// it in messages).
    pub(crate) async fn restore_from(
        self: &Arc<Self>,
        spec: ContainerSpec,
        checkpoint_id: &str,
        dir: &Path,
        log: Option<CarriedLog<'_>>,
    ) -> OpResult<NodeReply> {
        if !self.cfg.criu {
            return Err(format!("node {} has no usable CRIU (>= 4.2)", self.cfg.node));
        }
        let id = spec.id.clone();
        if !dir.join(CRIU_IMAGES).exists() {
            return Err(format!("checkpoint {checkpoint_id} of {} is not on node {}", spec.name, self.cfg.node));
        }
        let c = match self.get(&id) {
            Ok(c) => c,
            Err(_) => {
                let c = Arc::new(Container::new(spec.clone(), self.cfg.paths.container(&id)));
                self.containers.lock().unwrap().insert(id.clone(), c.clone());
                c
            }
        };
        let _op = c.op.lock().await;
        if c.live.lock().unwrap().state == Some(ContainerState::Running) {
            return Err(format!("container {} is running", spec.name));
        }
        let result = async {
            for d in [c.paths.dir.clone(), c.paths.state(), c.paths.bundle()] {
                std::fs::create_dir_all(&d)?;
            }
            std::fs::write(c.paths.spec(), serde_json::to_vec_pretty(&spec)?)?;
            if let Some(log) = &log {
                crate::checkpoints::receive_log(log, &c.paths, self.log_limits(&spec)).await?;
            }
            // Processes restored by CRIU expect the files exactly as they were at the dump.
            overlay::unmount(&c.paths.rootfs())?;
            let upper = c.paths.upper();
            if upper.exists() {
                std::fs::remove_dir_all(&upper).with_context(|| format!("clearing {}", upper.display()))?;
            }
            std::fs::create_dir_all(&upper)?;
            let diff = dir.join(ROOTFS_DIFF);
            let (up2, bounds) = (upper.clone(), self.layers.bounds());
            tokio::task::spawn_blocking(move || {
                herd_image::extract_layer_within(&diff, herd_proto::state::Compression::None, &up2, &bounds)
            })
            .await?
            .context("restoring the writable layer")?;
            let _ = self.cfg.runc.delete(&id, true).await;
            // Its TCP is held until the restored processes run (see `netlock`): its own
            // namespace from before its link comes up (a failure from here on removes it,
            // lock and all), one it joins from just before the restore.
            self.prepare(&c, Network::Locked).await?;
            Self::check_images(&dir.join(CRIU_IMAGES), &c.paths.bundle()).await?;
            let netns = self.netns_of(&c.spec)?;
            if c.spec.host.network.is_some() {
                netlock::lock(&netns)?;
            } else {
                crate::netfilter::restore(&netns, &dir.join(CRIU_IMAGES), &c.spec.host)?;
            }
            let work = dir.join(format!("restore-work-{}", now_millis()));
            let mode = ShimMode::Restore {
                image_path: dir.join(CRIU_IMAGES),
                work_path: work.clone(),
                tcp_established: true,
                lazy_pages: false,
            };
            let started = self.start_shim(&c, mode).await.map_err(|e| match criu_log_tail(&work.join("restore.log")) {
                Some(t) => anyhow::anyhow!("{e:#} (CRIU: {t})"),
                None => e,
            });
            let unlocked = netlock::unlock(&netns);
            let pid = started?;
            unlocked?;
            anyhow::Ok(pid)
        }
        .await;
        match result {
            Ok(pid) => {
                let started_at = c.live.lock().unwrap().started_at.unwrap_or_else(now_millis);
                Ok(NodeReply::Started { pid, started_at })
            }
            Err(e) => {
                self.release(&c).await;
                {
                    let mut l = c.live.lock().unwrap();
                    if l.state.is_none() {
                        l.state = Some(ContainerState::Checkpointed);
                    }
                }
                Err(format!("restore of {} from {checkpoint_id} failed: {e:#}", spec.name))
            }
        }
    }

    /// Freezes container `c` for a dump and locks its network (namespace `netns`), once the
    /// connections being opened have been accepted (see [`netlock::drain`]). Returns when it
    /// stopped running (the start of its downtime); on error it runs on, unlocked.
    pub(crate) async fn freeze_and_lock(
        &self,
        c: &Container,
        netns: &Path,
    ) -> anyhow::Result<(herd_proto::UnixMillis, std::time::Instant)> {
        let pid = c.live.lock().unwrap().pid;
        if let Some(pid) = pid {
            let started = std::time::Instant::now();
            let pending = netlock::drain(netns, pid, DRAIN_WITHIN).await?;
            if !pending.is_empty() {
                tracing::warn!(
                    "{}: {} half-open and {} unaccepted connections still pending after {:?}; CRIU leaves them behind (their clients see a reset)",
                    c.spec.name,
                    pending.half_open,
                    pending.unaccepted,
                    started.elapsed()
                );
            }
        }
        let frozen = (now_millis(), std::time::Instant::now());
        // runc's pause, not `Runtime::freeze`: a full CI run with the latter here once saw a
        // pre-copy of Tomcat under wrk reset 381 requests, which no run before had seen.
        if let Err(e) = self.cfg.runc.pause(&c.spec.id).await {
            let _ = netlock::undrain(netns);
            anyhow::bail!("pausing it: {e}");
        }
        let locked = if pid.is_some() { netlock::lock_drained(netns) } else { netlock::lock(netns) };
        if let Err(e) = locked {
            let _ = netlock::undrain(netns);
            let _ = netlock::unlock(netns);
            let _ = self.cfg.runc.resume(&c.spec.id).await;
            return Err(e);
        }
        Ok(frozen)
    }

    /// Freezes every process of container `id` through its cgroup ([`crate::cgroups::freeze`]:
    /// what `runc pause` does, without runc's start in a ticker's pause); `runc resume` or
    /// [`crate::cgroups::thaw`] thaws it.
    pub(crate) async fn freeze(&self, id: &str) -> anyhow::Result<()> {
        let cgroup = self.cfg.paths.cgroup(id);
        tokio::task::spawn_blocking(move || crate::cgroups::freeze(&cgroup))
            .await
            .context("the freeze task")?
            .context("freezing it")
    }

    /// Refuses, before anything is frozen, a container holding what CRIU cannot dump (see
    /// [`crate::dumpable`]).
    pub(crate) async fn ensure_dumpable(&self, c: &Container) -> Result<(), String> {
        let cgroup = self.cfg.paths.cgroup(&c.spec.id);
        let problems = tokio::task::spawn_blocking(move || {
            crate::cgroups::processes(&cgroup).map(|pids| crate::dumpable::check(&pids))
        })
        .await
        .map_err(|e| format!("the check task: {e}"))?
        .map_err(|e| format!("cannot list its processes: {e}"))?;
        match problems.as_slice() {
            [] => Ok(()),
            [one] => Err(one.clone()),
            [first, rest @ ..] => Err(format!("{first} (and {} more: {})", rest.len(), rest.join("; "))),
        }
    }

    /// Checks CRIU images against the container's runtime configuration in `bundle` before
    /// they are restored (see [`crate::restore_check`]).
    pub(crate) async fn check_images(images: &Path, bundle: &Path) -> anyhow::Result<()> {
        let (images, bundle) = (images.to_path_buf(), bundle.to_path_buf());
        tokio::task::spawn_blocking(move || crate::restore_check::check(&images, &bundle))
            .await
            .context("the image check task")?
            .context("the checkpoint is refused")
    }
}

/// When CRIU let the dumped processes run again, from the start of its log (`dump.log` lines
/// begin with CRIU's clock, `(SS.UUUUUU)`).
fn unfrozen_at(log: &str) -> Option<std::time::Duration> {
    let line = log.lines().find(|l| l.contains("Unfreezing tasks"))?;
    let clock = line.strip_prefix('(')?.split(')').next()?;
    let (secs, micros) = clock.trim().split_once('.')?;
    Some(std::time::Duration::from_secs(secs.parse().ok()?) + std::time::Duration::from_micros(micros.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_freeze_of_a_pre_dump_is_read_from_criu_s_log() {
        let log = "(00.019823) dirty-track: 4337: no tracker\n(00.080604) Unfreezing tasks into 1\n(03.236301) Pre-dumping finished successfully\n";
        assert_eq!(super::unfrozen_at(log), Some(std::time::Duration::from_micros(80_604)));
        assert_eq!(super::unfrozen_at("(00.1) nothing\n"), None);
    }
}
