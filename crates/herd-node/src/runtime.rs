//! The container manager of a Compute node: creates, stops, removes, checkpoints and
//! restores containers with runc, CRIU, overlayfs, cgroups and network namespaces, and
//! keeps each container's observed status in the cluster's status bucket.
//!
//! Every operation on a container holds that container's operation lock; a shim's exit is
//! noticed by a watcher task, which finalises the container unless an operation that
//! expected the exit (stop, checkpoint) does it itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use herd_broker::Bucket;
use herd_net::{Netlink, Netns, attach_container, detach_and_remove};
use herd_proto::node::{ContainerSpec, LogChunk, NodeReply};
use herd_proto::now_millis;
use herd_proto::state::{ContainerState, ContainerStatus};
use tokio::sync::watch;

use crate::layers::LayerCache;
use crate::paths::{ContainerPaths, NodePaths, host_ifname};
use crate::runc::Runc;
use crate::shim::{self, ExitStatus, ShimArgs, ShimMode};
use crate::{logs, netlock, overlay, spec};

/// Name of the upper-layer snapshot inside a checkpoint directory.
pub const ROOTFS_DIFF: &str = herd_proto::checkpoint::ROOTFS_DIFF;
/// CRIU images inside a checkpoint directory.
pub const CRIU_IMAGES: &str = herd_proto::checkpoint::CRIU_DIR;
/// The log of a container that moves to this node: an object in the checkpoint store.
#[derive(Clone, Copy)]
pub struct CarriedLog<'a> {
    pub store: &'a herd_broker::Objects,
    pub object: &'a str,
}

/// How long a killed container gets to be reaped.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(15);

/// How long a dump waits for the connections being opened to be accepted before it locks the
/// network (see [`netlock::lock_drained`]): the handshake takes a round trip, accepting them
/// a moment of the container's time.
pub(crate) const DRAIN_WITHIN: Duration = Duration::from_millis(250);

/// What the runtime needs to know about its node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub node: String,
    pub paths: NodePaths,
    pub runc: Runc,
    /// Whether CRIU is available (checkpoint and restore need it).
    pub criu: bool,
    /// Whether the kernel tracks dirty memory for CRIU: pre-copy needs it.
    pub dirty_tracking: bool,
    /// Where the kernel has no soft-dirty, the keeper of CRIU's userfaultfd trackers between
    /// pre-copy rounds ([`crate::dirty_keeper`]).
    pub dirty_keeper: Option<std::sync::Arc<crate::dirty_keeper::Keeper>>,
    /// Where the kernel tracks dirty memory, the CRIU configuration that starts tracking at
    /// a full dump: ticker versions are then incremental ([`crate::versions`]).
    pub track_mem_config: Option<PathBuf>,
    /// Whether this node's CRIU restores lazily from local images with parents (Herd's
    /// patches, [`crate::facts::herd_criu`]): a pre-copy migration's restore then leaves the
    /// memory to `criu lazy-pages` reading the rounds' images.
    pub local_lazy_restore: bool,
    /// The `herd` executable, run as `herd shim` for each container.
    pub exe: PathBuf,
    /// The node's address: migrations are received there.
    pub address: std::net::Ipv4Addr,
    /// The cgroup migration helpers (runc checkpoint, CRIU page servers) run in, if any.
    pub migration_cgroup: Option<String>,
    /// The CRIU configuration file for this node's containers ([`crate::criu_config`]).
    pub criu_config: Option<PathBuf>,
    /// The TLS files CRIU encrypts memory pages with, end to end between the two CRIUs
    /// (`herd node --encrypt-pages`); `None`: pages in plain text (see `docs/design/tls.md`:
    /// CRIU's TLS breaks on containers with System V shared memory).
    pub tls_files: Option<herd_tls::TlsFiles>,
    /// TLS settings of migration and exec connections, made from the node's TLS files.
    pub tls: Option<crate::transfer::TransferTls>,
    /// The node's TLS files when Herd seals migrations' pages connections with TLS (the
    /// default with TLS; CRIU then speaks plain text to a relay on its own node): the
    /// relays in the agent use `tls`, the page proxies make their sessions from these.
    pub seal_pages: Option<herd_tls::TlsFiles>,
    /// The log limits of containers that ask for none of their own.
    pub log_limits: logs::LogLimits,
}

/// A failed operation, in words for the person who asked.
pub type OpResult<T> = Result<T, String>;

#[derive(Debug, Clone, Default)]
pub(crate) struct Live {
    pub(crate) state: Option<ContainerState>,
    pub(crate) shim_pid: Option<u32>,
    pub(crate) pid: Option<u32>,
    pub(crate) started_at: Option<u64>,
    pub(crate) finished_at: Option<u64>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) error: Option<String>,
    /// Bumped every time a shim is started; a watcher only acts on its own generation.
    pub(crate) generation: u64,
    /// An operation is about to make the container exit and will finalise it itself.
    pub(crate) expecting_exit: bool,
    /// Frozen with its network locked because the node lost the cluster (see [`crate::fence`]).
    pub(crate) fenced: bool,
    /// Whether it is to be fenced when the node loses the cluster: its spec's `fenced`, or
    /// what `SetFenced` said since.
    pub(crate) fence_policy: bool,
    /// A stale copy (the cluster runs the container elsewhere): its status is not this
    /// node's to publish any more.
    pub(crate) stale: bool,
}

pub(crate) struct Container {
    pub(crate) spec: ContainerSpec,
    pub(crate) paths: ContainerPaths,
    /// Held by whatever changes the container (start, stop, checkpoint, migrate...).
    pub(crate) op: Arc<tokio::sync::Mutex<()>>,
    pub(crate) live: Mutex<Live>,
    /// Carries the generation whose shim exited.
    pub(crate) exited: watch::Sender<u64>,
}

impl Container {
    pub(crate) fn new(spec: ContainerSpec, paths: ContainerPaths) -> Container {
        let fence_policy = spec.fenced;
        Container {
            spec,
            paths,
            op: Arc::new(tokio::sync::Mutex::new(())),
            live: Mutex::new(Live { fence_policy, ..Live::default() }),
            exited: watch::channel(0).0,
        }
    }
}

pub struct Runtime {
    pub(crate) cfg: RuntimeConfig,
    pub(crate) statuses: Bucket<ContainerStatus>,
    pub(crate) layers: LayerCache,
    pub(crate) netlink: Netlink,
    pub(crate) containers: Mutex<HashMap<String, Arc<Container>>>,
    /// `herd exec` sessions in progress (see [`crate::exec`]).
    pub(crate) execs: Arc<crate::exec::Sessions>,
}

pub(crate) fn err(context: &str, e: impl std::fmt::Display) -> String {
    format!("{context}: {e}")
}

/// Errors CRIU logs on every run on this machine, which explain nothing (root lacks
/// CAP_SYS_RESOURCE here, see the platform notes).
const HARMLESS_CRIU_ERRORS: &[&str] = &["rlimit: Can't setup RLIMIT_NOFILE for self"];

/// The last error lines of a CRIU log, to explain a failed dump or restore. Only the log's
/// end is read: a stuck CRIU can have written gigabytes.
pub(crate) fn criu_log_tail(log: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 256 << 10;
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let errors: Vec<&str> = text
        .lines()
        .skip(usize::from(len > TAIL)) // the first line is cut
        .filter(|l| l.contains("Error") || l.contains("error"))
        .filter(|l| !HARMLESS_CRIU_ERRORS.iter().any(|h| l.contains(h)))
        .collect();
    let tail: Vec<&str> = errors.iter().rev().take(3).rev().copied().collect();
    (!tail.is_empty()).then(|| tail.join(" | "))
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig, statuses: Bucket<ContainerStatus>, layers: LayerCache) -> anyhow::Result<Runtime> {
        for d in [cfg.paths.containers_dir(), cfg.paths.netns_dir(), cfg.paths.runc_root()] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(Runtime {
            cfg,
            statuses,
            layers,
            netlink: Netlink::new()?,
            containers: Mutex::new(HashMap::new()),
            execs: Default::default(),
        })
    }

    pub(crate) fn get(&self, id: &str) -> OpResult<Arc<Container>> {
        self.containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no container {id} on node {}", self.cfg.node))
    }

    pub fn running_count(&self) -> u32 {
        self.containers
            .lock()
            .unwrap()
            .values()
            .filter(|c| c.live.lock().unwrap().state == Some(ContainerState::Running))
            .count() as u32
    }

    pub(crate) async fn publish_status(&self, c: &Container) {
        let status = {
            let l = c.live.lock().unwrap();
            if l.stale {
                return;
            }
            ContainerStatus {
                id: c.spec.id.clone(),
                node: self.cfg.node.clone(),
                state: l.state.unwrap_or(ContainerState::Created),
                pid: l.pid,
                started_at: l.started_at,
                finished_at: l.finished_at,
                exit_code: l.exit_code,
                error: l.error.clone(),
                updated_at: now_millis(),
            }
        };
        if let Err(e) = self.statuses.put(&self.status_key(&status.id), &status).await {
            tracing::warn!("could not publish the status of {}: {e:#}", c.spec.name);
        }
    }

    fn shim_args(&self, c: &Container, mode: ShimMode) -> ShimArgs {
        ShimArgs {
            id: c.spec.id.clone(),
            state_dir: c.paths.state(),
            bundle: c.paths.bundle(),
            runc: self.cfg.runc.clone(),
            mode,
            start_timeout: shim::START_TIMEOUT,
            log: self.log_limits(&c.spec),
        }
    }

    /// The log limits of container `spec`: its own, over the node's.
    pub(crate) fn log_limits(&self, spec: &ContainerSpec) -> logs::LogLimits {
        spec.limits.log.over(self.cfg.log_limits)
    }

    /// The OCI runtime config of `spec` on this node, in the network namespace at `netns`.
    pub(crate) fn runtime_spec(&self, spec: &ContainerSpec, netns: &Path) -> anyhow::Result<oci_spec::runtime::Spec> {
        let mut config = spec::runtime_spec(spec, netns, &self.cfg.paths.cgroup(&spec.id))
            .map_err(|e| anyhow::anyhow!("the runtime configuration of {}: {e}", spec.name))?;
        if let Some(path) = &self.cfg.criu_config {
            let annotations = config.annotations_mut().get_or_insert_with(Default::default);
            annotations.insert(crate::criu_config::ANNOTATION.into(), path.display().to_string());
        }
        Ok(config)
    }

    /// Everything a running container needs besides its process: root filesystem, runtime
    /// config and network. Undone by [`Runtime::release`]. With `Network::Locked` (a restore),
    /// the container's own namespace is locked (see [`netlock`]) before its link comes up, so
    /// that its peers' retransmissions are dropped until its sockets are back, never reset.
    pub(crate) async fn prepare(&self, c: &Container, network: Network) -> anyhow::Result<()> {
        let spec = &c.spec;
        let missing = spec::missing_capabilities(&spec.host, spec::node_bounding_set());
        if !missing.is_empty() {
            anyhow::bail!(
                "this node cannot give {} (--cap-add): its own processes do not hold {}",
                spec.name,
                missing.join(", ")
            );
        }
        let layers = self.layers.ensure(&spec.layers).await?;
        overlay::mount_overlay(&layers, &c.paths.upper(), &c.paths.overlay_work(), &c.paths.rootfs())?;
        let netns_path = self.netns_of(spec)?;
        let mut config = self.runtime_spec(spec, &netns_path)?;
        // Names are the container's own: resolved in its root filesystem, as it is now.
        crate::user::apply(&mut config, &crate::user::resolve_in(&c.paths.rootfs(), &spec.user)?);
        crate::volumes::mount_into(&mut config, &self.cfg.paths.data_dir, &spec.host.volumes)?;
        let config_path = c.paths.bundle().join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", config_path.display()))?;
        if spec.host.network.is_some() {
            // It lives in another container's namespace, which is that one's to set up.
            return Ok(());
        }
        let ns = match Netns::open(&netns_path) {
            Ok(ns) => ns,
            Err(_) => new_container_netns(&netns_path)?,
        };
        if network == Network::Locked {
            netlock::lock(&netns_path)?;
        }
        let host_if = host_ifname(&spec.id);
        if self.netlink.link_index(&host_if).await?.is_none() {
            attach_container(&self.netlink, &ns, &host_if, spec.ip).await?;
        }
        crate::ports::publish(&spec.id, spec.ip, &spec.host.ports).await?;
        Ok(())
    }

    /// The network namespace a container runs in: its own, or (`--network container:NAME`)
    /// the one of the container it joins, which must be here.
    pub(crate) fn netns_of(&self, spec: &ContainerSpec) -> anyhow::Result<PathBuf> {
        let Some(shared) = &spec.host.network else { return Ok(self.cfg.paths.netns(&spec.id)) };
        let path = self.cfg.paths.netns(&shared.id);
        Netns::open(&path).map_err(|_| {
            anyhow::anyhow!(
                "the network namespace of container {} is not on node {}: it must run here for {} to join it",
                shared.name,
                self.cfg.node,
                spec.name
            )
        })?;
        Ok(path)
    }

    /// Frees what [`Runtime::prepare`] took, once the container's processes are gone.
    pub(crate) async fn release(&self, c: &Container) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.cfg.runc.delete(&c.spec.id, true).await {
            problems.push(format!("runc delete: {e}"));
        }
        if let Err(e) = crate::ports::unpublish(&c.spec.id, c.spec.ip, &c.spec.host.ports).await {
            problems.push(format!("{e:#}"));
        }
        // Unpinning the namespace takes its veth and route with it. A namespace joined from
        // another container is that one's.
        if c.spec.host.network.is_none()
            && let Err(e) =
                detach_and_remove(&self.netlink, &host_ifname(&c.spec.id), &self.cfg.paths.netns(&c.spec.id)).await
        {
            problems.push(format!("network: {e}"));
        }
        // Off the agent's threads: with the machine's cgroups busy (CRIU freezing others,
        // say), an rmdir waits on the kernel's cgroup lock, and the agent must keep beating.
        let (rootfs, cgroup) = (c.paths.rootfs(), self.cfg.paths.cgroup(&c.spec.id));
        let unmounted = tokio::task::spawn_blocking(move || {
            let unmounted = overlay::unmount(&rootfs);
            // runc leaves the (empty) cgroup behind after a checkpoint; it is ours to remove.
            crate::cgroups::remove_tree(&cgroup);
            unmounted
        })
        .await;
        match unmounted {
            Ok(Err(e)) => problems.push(format!("{e:#}")),
            Err(e) => problems.push(format!("unmounting: {e}")),
            Ok(Ok(())) => {}
        }
        for p in &problems {
            tracing::warn!("releasing {}: {p}", c.spec.name);
        }
        problems
    }

    /// Starts a shim (run or restore) and the watcher of its exit.
    pub(crate) async fn start_shim(self: &Arc<Self>, c: &Arc<Container>, mode: ShimMode) -> anyhow::Result<u32> {
        let _ = std::fs::remove_file(c.paths.state().join(shim::EXIT_FILE));
        let mode_is_restore = matches!(mode, ShimMode::Restore { .. });
        let args = self.shim_args(c, mode);
        let exe = self.cfg.exe.clone();
        let started = tokio::task::spawn_blocking(move || {
            // Damage CRIU would spin on rather than fail.
            if let ShimMode::Restore { image_path, .. } = &args.mode {
                crate::criu_images::check_pages(image_path).map_err(anyhow::Error::msg)?;
            }
            anyhow::Ok(shim::spawn_shim(&exe, &["shim"], &args)?)
        })
        .await
        .context("shim start task")??;
        let generation = {
            let mut l = c.live.lock().unwrap();
            l.generation += 1;
            l.state = Some(ContainerState::Running);
            l.shim_pid = Some(started.shim_pid);
            l.pid = Some(started.container_pid);
            // A restored container keeps the time it first started, when known.
            if !mode_is_restore || l.started_at.is_none() {
                l.started_at = Some(now_millis());
            }
            l.finished_at = None;
            l.exit_code = None;
            l.error = None;
            l.expecting_exit = false;
            l.generation
        };
        self.publish_status(c).await;
        self.watch_exit(c.clone(), started.shim_pid, generation);
        Ok(started.container_pid)
    }

    fn watch_exit(self: &Arc<Self>, c: Arc<Container>, shim_pid: u32, generation: u64) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = shim::wait_for_exit(shim_pid).await {
                tracing::warn!("cannot watch the shim of {}: {e}", c.spec.name);
                return;
            }
            let exit = shim::read_exit(&c.paths.state());
            let expected = {
                let mut l = c.live.lock().unwrap();
                if l.generation != generation || l.state != Some(ContainerState::Running) {
                    return;
                }
                l.pid = None;
                l.shim_pid = None;
                l.finished_at = Some(exit.map(|e| e.finished_at).unwrap_or_else(now_millis));
                l.exit_code = exit.map(|e| e.code);
                if exit.is_none() {
                    l.error = Some("the container's shim died without recording an exit status".into());
                }
                l.expecting_exit
            };
            c.exited.send_replace(generation);
            if !expected {
                // Ended on its own: finalise unless an operation got there first.
                let _op = c.op.lock().await;
                let mine = {
                    let mut l = c.live.lock().unwrap();
                    let mine = l.generation == generation && l.state == Some(ContainerState::Running);
                    if mine {
                        l.state = Some(ContainerState::Exited);
                    }
                    mine
                };
                if mine {
                    this.release(&c).await;
                    this.publish_status(&c).await;
                }
            }
        });
    }

    /// Waits until the shim of `generation` has exited, up to `timeout`.
    pub(crate) async fn wait_exit(c: &Container, generation: u64, timeout: Duration) -> bool {
        let mut rx = c.exited.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|g| *g >= generation)).await.is_ok_and(|r| r.is_ok())
    }

    /// `Create`: set up and start a new container.
    pub async fn create(self: &Arc<Self>, spec: ContainerSpec) -> OpResult<NodeReply> {
        let paths = self.cfg.paths.container(&spec.id);
        if self.containers.lock().unwrap().contains_key(&spec.id) || paths.dir.exists() {
            return Err(format!("container {} ({}) already exists on node {}", spec.name, spec.id, self.cfg.node));
        }
        let c = Arc::new(Container::new(spec, paths));
        let _op = c.op.lock().await;
        self.containers.lock().unwrap().insert(c.spec.id.clone(), c.clone());
        let result = async {
            for d in [c.paths.dir.clone(), c.paths.state(), c.paths.bundle()] {
                std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            }
            std::fs::write(c.paths.spec(), serde_json::to_vec_pretty(&c.spec)?)?;
            self.prepare(&c, Network::Open).await?;
            self.start_shim(&c, ShimMode::Run).await
        }
        .await;
        match result {
            Ok(pid) => {
                let started_at = c.live.lock().unwrap().started_at.unwrap_or_else(now_millis);
                Ok(NodeReply::Started { pid, started_at })
            }
            Err(e) => {
                // Leave nothing behind: the Control node forgets the container too.
                self.release(&c).await;
                let _ = std::fs::remove_dir_all(&c.paths.dir);
                self.containers.lock().unwrap().remove(&c.spec.id);
                Err(format!("{e:#}"))
            }
        }
    }

    /// `Start`: starts a container that exited (or was stopped) again, as it was created and
    /// with its writable layer, as `docker start` does. A running container is left as it is; a
    /// checkpointed one is refused, as `herd restore` is what continues it.
    pub async fn start(self: &Arc<Self>, id: &str) -> OpResult<NodeReply> {
        let c = self.get(id)?;
        let _op = c.op.lock().await;
        {
            let l = c.live.lock().unwrap();
            match l.state {
                Some(ContainerState::Running) => {
                    return Ok(NodeReply::Started {
                        pid: l.pid.unwrap_or(0),
                        started_at: l.started_at.unwrap_or_else(now_millis),
                    });
                }
                Some(ContainerState::Checkpointed) => {
                    return Err(format!(
                        "container {} is checkpointed: herd restore {} continues it from its checkpoint",
                        c.spec.name, c.spec.name
                    ));
                }
                _ => {}
            }
        }
        let result = async {
            // Whatever a failed start or an old runc left behind.
            let _ = self.cfg.runc.delete(id, true).await;
            self.prepare(&c, Network::Open).await?;
            self.start_shim(&c, ShimMode::Run).await
        }
        .await;
        match result {
            Ok(pid) => {
                let started_at = c.live.lock().unwrap().started_at.unwrap_or_else(now_millis);
                Ok(NodeReply::Started { pid, started_at })
            }
            Err(e) => {
                // It stays as it was (exited), its writable layer kept, with the reason.
                self.release(&c).await;
                let message = format!("could not start {}: {e:#}", c.spec.name);
                {
                    let mut l = c.live.lock().unwrap();
                    if l.state.is_none() {
                        l.state = Some(ContainerState::Exited);
                    }
                    l.error = Some(message.clone());
                }
                self.publish_status(&c).await;
                Err(message)
            }
        }
    }

    /// `Stop`: SIGTERM, then SIGKILL after `timeout`.
    pub async fn stop(self: &Arc<Self>, id: &str, timeout: Duration) -> OpResult<NodeReply> {
        let c = self.get(id)?;
        let _op = c.op.lock().await;
        self.stop_locked(&c, timeout).await?;
        let code = c.live.lock().unwrap().exit_code;
        Ok(NodeReply::Stopped { exit_code: code })
    }

    async fn stop_locked(self: &Arc<Self>, c: &Arc<Container>, timeout: Duration) -> OpResult<()> {
        let generation = {
            let mut l = c.live.lock().unwrap();
            if l.state != Some(ContainerState::Running) {
                return Ok(());
            }
            l.expecting_exit = true;
            l.generation
        };
        let id = &c.spec.id;
        if let Err(e) = self.cfg.runc.kill(id, libc::SIGTERM, false).await {
            tracing::info!("SIGTERM to {}: {e}", c.spec.name);
        }
        if !Self::wait_exit(c, generation, timeout).await {
            let _ = self.cfg.runc.kill(id, libc::SIGKILL, true).await;
            if !Self::wait_exit(c, generation, KILL_WAIT).await {
                c.live.lock().unwrap().expecting_exit = false;
                return Err(format!("container {} did not die after SIGKILL", c.spec.name));
            }
        }
        c.live.lock().unwrap().state = Some(ContainerState::Exited);
        self.release(c).await;
        self.publish_status(c).await;
        Ok(())
    }

    /// `Remove`: delete the container and everything the node holds for it.
    pub async fn remove(self: &Arc<Self>, id: &str, force: bool) -> OpResult<NodeReply> {
        self.remove_keeping(id, force, false).await
    }

    /// `Remove`, keeping the container's checkpoints on this node when `keep_checkpoints`
    /// (another node's failed restore is undone that way: its checkpoints may be listed).
    pub async fn remove_keeping(
        self: &Arc<Self>,
        id: &str,
        force: bool,
        keep_checkpoints: bool,
    ) -> OpResult<NodeReply> {
        let remove_checkpoints = || {
            if !keep_checkpoints {
                let _ = std::fs::remove_dir_all(self.cfg.paths.checkpoints_dir(id));
            }
            self.trail(id).clear();
        };
        let c = match self.get(id) {
            Ok(c) => c,
            Err(_) => {
                // Unknown here (already removed, or never created): make sure nothing remains.
                self.forget_status(id).await;
                remove_checkpoints();
                return Ok(NodeReply::Done);
            }
        };
        let _op = c.op.lock().await;
        let running = c.live.lock().unwrap().state == Some(ContainerState::Running);
        if running {
            if !force {
                return Err(format!("container {} is running", c.spec.name));
            }
            self.stop_locked(&c, Duration::ZERO).await?;
        }
        let problems = self.release(&c).await;
        if let Err(e) = std::fs::remove_dir_all(&c.paths.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(err(&format!("removing {}", c.paths.dir.display()), e));
        }
        remove_checkpoints();
        c.live.lock().unwrap().generation += 1; // silence any late watcher
        self.containers.lock().unwrap().remove(id);
        self.forget_status(id).await;
        if !problems.is_empty() {
            tracing::warn!("removed {} with problems: {}", c.spec.name, problems.join("; "));
        }
        Ok(NodeReply::Done)
    }

    /// `Logs`: from `offset`, or with `tail`, from where the last `tail` entries start.
    pub fn logs(&self, id: &str, offset: u64, max_bytes: u64, tail: Option<u64>) -> OpResult<NodeReply> {
        let c = self.get(id)?;
        let log = logs::Log::new(&c.paths.state());
        let offset = match tail {
            Some(n) => {
                log.tail_offset(usize::try_from(n).unwrap_or(usize::MAX)).map_err(|e| err("reading the log", e))?
            }
            None => offset,
        };
        let mut chunk = match log.read(offset, max_bytes.min(1 << 20)) {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                LogChunk { entries: Vec::new(), next_offset: offset, dropped: 0, finished: false }
            }
            Err(e) => return Err(err("reading the log", e)),
        };
        chunk.finished = c.live.lock().unwrap().state != Some(ContainerState::Running);
        Ok(NodeReply::Logs(chunk))
    }

    /// Stops every running container (for `herd down`).
    pub async fn stop_all(self: &Arc<Self>, timeout: Duration) -> OpResult<NodeReply> {
        let all: Vec<Arc<Container>> = self.containers.lock().unwrap().values().cloned().collect();
        let stops = all.into_iter().map(|c| {
            let this = self.clone();
            async move {
                let _op = c.op.lock().await;
                if let Err(e) = this.stop_locked(&c, timeout).await {
                    tracing::warn!("{e}");
                }
            }
        });
        futures::future::join_all(stops).await;
        Ok(NodeReply::Done)
    }

    /// Takes back the containers this node had before its agent (re)started: running ones
    /// are watched again, those that ended meanwhile are finalised, and those the cluster
    /// no longer knows (`wanted` is the set of container ids placed here) are removed.
    pub async fn adopt(self: &Arc<Self>, wanted: &std::collections::HashSet<String>) -> anyhow::Result<()> {
        let dir = self.cfg.paths.containers_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().to_string();
            let paths = self.cfg.paths.container(&id);
            let spec: ContainerSpec =
                match std::fs::read(paths.spec()).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                    Some(s) => s,
                    None => {
                        tracing::warn!("removing {}: it has no readable spec", paths.dir.display());
                        let _ = overlay::unmount(&paths.rootfs());
                        let _ = std::fs::remove_dir_all(&paths.dir);
                        continue;
                    }
                };
            let previous = self.statuses.get(&self.status_key(&id)).await.ok().flatten().map(|v| v.value);
            let c = Arc::new(Container::new(spec, paths));
            self.containers.lock().unwrap().insert(id.clone(), c.clone());
            match self.adopt_incoming(&c).await {
                crate::migrate::Adopted::NotIncoming => {}
                crate::migrate::Adopted::Running => {
                    // Committed here, whatever the cluster state says yet: the Control node
                    // resolves the migration and moves the record.
                    self.adopt_running(&c, previous.as_ref()).await;
                    continue;
                }
                crate::migrate::Adopted::Dropped => continue,
            }
            if !wanted.contains(&id) {
                tracing::info!("removing container {} ({id}): the cluster no longer has it", c.spec.name);
                let _ = self.remove(&id, true).await;
                continue;
            }
            if self.adopt_running(&c, previous.as_ref()).await {
                continue;
            }
            // Not running: it ended (or was checkpointed) while nobody watched.
            let state = match previous.as_ref().map(|p| p.state) {
                Some(ContainerState::Checkpointed) => ContainerState::Checkpointed,
                Some(ContainerState::Running) | None => ContainerState::Exited,
                Some(other) => other,
            };
            let exit: Option<ExitStatus> = shim::read_exit(&c.paths.state());
            {
                let mut l = c.live.lock().unwrap();
                l.state = Some(state);
                l.started_at = previous.as_ref().and_then(|p| p.started_at);
                l.finished_at = exit.map(|e| e.finished_at).or(previous.as_ref().and_then(|p| p.finished_at));
                l.exit_code = exit.map(|e| e.code).or(previous.as_ref().and_then(|p| p.exit_code));
            }
            self.release(&c).await;
            if previous.as_ref().map(|p| p.state) != Some(state) || exit.is_some() {
                self.publish_status(&c).await;
            }
        }
        Ok(())
    }

    /// Watches a container whose shim is still alive again; false when there is none.
    pub(crate) async fn adopt_running(
        self: &Arc<Self>,
        c: &Arc<Container>,
        previous: Option<&ContainerStatus>,
    ) -> bool {
        let Some(pid) = shim::live_shim(&c.paths.state()) else { return false };
        let generation = {
            let mut l = c.live.lock().unwrap();
            l.generation = 1;
            l.state = Some(ContainerState::Running);
            l.shim_pid = Some(pid);
            l.pid = std::fs::read_to_string(c.paths.state().join(shim::CONTAINER_PID_FILE))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            l.started_at = previous.and_then(|p| p.started_at);
            l.generation
        };
        tracing::info!("adopted running container {} ({})", c.spec.name, c.spec.id);
        self.publish_status(c).await;
        self.watch_exit(c.clone(), pid, generation);
        true
    }

    /// The key of this node's status of container `id` (see [`herd_proto::subjects::status_key`]).
    pub(crate) fn status_key(&self, id: &str) -> String {
        herd_proto::subjects::status_key(&self.cfg.node, id)
    }

    /// Deletes this node's status of a container (after a migration, the destination
    /// publishes its own).
    pub(crate) async fn forget_status(&self, id: &str) {
        if let Err(e) = self.statuses.delete(&self.status_key(id)).await {
            tracing::warn!("could not delete the status of {id}: {e:#}");
        }
    }

    /// Statuses this node published (keys of the status bucket) for containers it no longer
    /// has are deleted.
    pub async fn forget_stale_statuses(&self, keys: impl Iterator<Item = String>) {
        for key in keys {
            let Some((node, id)) = herd_proto::subjects::parse_status_key(&key) else { continue };
            if node == self.cfg.node && !self.containers.lock().unwrap().contains_key(id) {
                let _ = self.statuses.delete(&key).await;
            }
        }
    }
}

/// Checks that `id` cannot escape the node's directories.
pub fn validate_id(id: &str) -> OpResult<()> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("invalid container id {id:?}"))
    }
}

/// Creates a container's network namespace at `path`, set as Docker sets one: any group may
/// open ICMP echo ("ping") sockets (`net.ipv4.ping_group_range`), so that `ping` works
/// without CAP_NET_RAW and a container holding such a socket can be restored.
pub(crate) fn new_container_netns(path: &Path) -> anyhow::Result<Netns> {
    let ns = Netns::create(path)?;
    if let Err(e) = ns.set_sysctl("ipv4/ping_group_range", "0 2147483647") {
        let _ = Netns::remove(path);
        return Err(e.into());
    }
    Ok(ns)
}

/// Whether [`Runtime::prepare`] brings a container's network up open (a start) or locked (a
/// restore, whose sockets come back only with its processes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Network {
    Open,
    Locked,
}
