//! Live migration on a Compute node, both ends.
//!
//! The destination prepares while the container still runs on the source: layers, root
//! filesystem directories, a network namespace with the container's address (locked: TCP
//! dropped, not reset) and a listener for the migration's authenticated connections. The
//! source copies the writable layer and the named volumes in passes while the container runs
//! ([`crate::volume_move`]), then freezes the container and checkpoints it with CRIU; memory
//! pages go through a CRIU page server whose connection the two agents proxy (cold: the
//! destination stores them; post-copy: the source serves them on demand), and the other
//! images, the last changes of the files and the log tail go over the control connection. The
//! destination restores, unlocks the network and says "running": that is the commit point.
//! Until then the source can resume the container; after it, the source lets go. If the
//! connection breaks after the source asked for the restore, the source stays frozen and the
//! Control node decides, asking the destination.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_net::attach_container;
use herd_proto::migration::{DestinationState, MigrationMode, PhaseTime, Progress, SourceOutcome, TransferReport};
use herd_proto::node::{ContainerSpec, MigrationTicket, NodeReply};
use herd_proto::now_millis;
use herd_proto::state::ContainerState;
use herd_sched::migration::{PRECOPY_MAX_ROUNDS, PRECOPY_MIN_ROUND, precopy_again, precopy_small_enough};
use serde::{Deserialize, Serialize};

use crate::page_server::{LazySource, connect_local, free_local_port};
use crate::paths::host_ifname;
use crate::runc::{CheckpointOpts, last_runc_error};
use crate::runtime::{Container, OpResult, Runtime};
use crate::shim::ShimMode;
use crate::transfer::{self, Accepted, Budget, Channel, Listener, Ticket};
use crate::volume_move::TreeName;
use crate::{logs, netlock};

/// The incoming-migration marker in a container's directory on the destination.
const INCOMING: &str = "incoming.json";
/// How long the destination waits for the source to connect and send.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the source waits for the destination's answer to "restore".
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the destination's `criu lazy-pages` may take to connect to its relay (with TLS).
const RELAY_WAIT: Duration = Duration::from_secs(60);
/// How long `criu lazy-pages` may take to fill a restored container's memory from local
/// images (after pre-copy) before it counts as stuck: 1 GiB took under a second here.
const LOCAL_FILL_LIMIT: Duration = Duration::from_secs(300);

/// Messages on a migration's control connection.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub(crate) enum Msg {
    /// A blob follows: log entries to append.
    Log,
    /// A directory follows: the CRIU images other than what the page server carried.
    Images,
    /// Everything has been sent: restore now (post-copy: with pages from the source).
    Restore { lazy: bool },
    /// From the destination: the container runs here.
    Running { running_at: u64, restore_ms: u64 },
    /// From the destination: the restore failed; nothing runs here. Also its answer to a
    /// volume check that failed.
    Failed { reason: String },
    /// Entries of `tree` (a volume or the writable layer) to remove, then to create or
    /// update; a blob of the files' content follows, then [`Msg::VolumeDigests`] (see
    /// [`crate::volume_move`]).
    /// `patched`: the indexes in `changed` of files whose content comes as a patch of the
    /// destination's copy ([`crate::tree_delta`]).
    VolumeBatch {
        tree: TreeName,
        deleted: Vec<String>,
        changed: Vec<crate::volume_tree::Entry>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        patched: Vec<u32>,
    },
    /// The SHA-256 of each file of the batch just sent, in order, as the source read them.
    VolumeDigests { tree: TreeName, digests: Vec<String> },
    /// The end of a pass: the checksum of the whole tree as sent; `last` when the container
    /// is frozen. Answered with [`Msg::VolumeVerified`] or [`Msg::Failed`].
    VolumeCheck { tree: TreeName, digest: String, entries: u64, last: bool },
    /// From the destination: the tree's copy matches the checksum.
    VolumeVerified { tree: TreeName },
}

/// What the destination records about an incoming migration (the commit point is `Running`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Incoming {
    migration: String,
    source: String,
    mode: MigrationMode,
    state: DestinationState,
    /// Volumes moved into place for the restore: they go if the migration does not commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    placed_volumes: Vec<String>,
}

fn write_incoming(c: &Container, incoming: &Incoming) -> anyhow::Result<()> {
    let path = c.paths.dir.join(INCOMING);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(incoming)?)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

fn read_incoming(dir: &Path) -> Option<Incoming> {
    serde_json::from_slice(&std::fs::read(dir.join(INCOMING)).ok()?).ok()
}

/// Fault injection for tests: when `HERD_FAULT_INJECT` (a comma-separated list) names `point`,
/// the agent dies right here, as in a crash, once per point per node (a marker file in the run
/// directory remembers). The points are `dest-during-precopy` (a pre-copy round's pages
/// arrive), `source-after-precopy-round` (the source finished a round: without soft-dirty, the
/// agent holds CRIU's trackers then), `dest-before-restore`, `dest-after-restore`,
/// `source-after-checkpoint` and `source-before-let-go`.
fn fault_point(run_dir: &Path, point: &str) {
    if !fault_armed(run_dir, point) {
        return;
    }
    tracing::error!("fault injection: dying at {point}");
    // SAFETY: _exit ends the process at once, like a crash: nothing runs after it.
    unsafe { libc::_exit(86) };
}

/// Whether `HERD_FAULT_INJECT` names `point` and it has not fired on this node yet (it fires
/// once: a marker file in the run directory remembers). Besides the crash points of
/// [`fault_point`], `volume-corrupt` damages one byte of a volume's content in the pass the
/// source sends while the container is frozen.
fn fault_armed(run_dir: &Path, point: &str) -> bool {
    let Ok(list) = std::env::var("HERD_FAULT_INJECT") else { return false };
    if !list.split(',').any(|p| p.trim() == point) {
        return false;
    }
    let marker = run_dir.join(format!("fault-{point}"));
    if marker.exists() {
        return false;
    }
    let _ = std::fs::write(&marker, b"");
    true
}

/// What CRIU calls the link from a dump's images to its parent's.
const CRIU_PARENT_LINK: &str = "parent";

/// The directory of pre-copy round `round`'s images, in a migration's scratch directory.
fn pre_dump_dir(round: u32) -> String {
    format!("pre-{round}")
}

/// The link from a dump's images to those of pre-copy round `round`, as CRIU takes it
/// (`--prev-images-dir`, runc's `--parent-path`): relative to the dump's own directory.
fn parent_link(round: u32) -> String {
    format!("../{}", pre_dump_dir(round))
}

/// The log of the page server storing pages into `images` (in the scratch directory).
fn page_server_log(images: &Path) -> String {
    format!("page-server-{}.log", images.file_name().and_then(|n| n.to_str()).unwrap_or("images"))
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

fn phase(name: &str, ms: u64) -> PhaseTime {
    PhaseTime { phase: name.to_string(), ms, bytes: None }
}

/// A process spawned with `std::process::Command` in its own process group, watched by tokio.
fn spawn_group(mut cmd: std::process::Command, cgroup: Option<String>) -> anyhow::Result<tokio::process::Child> {
    cmd.process_group(0);
    if let Some(path) = cgroup {
        crate::cgroups::join_on_exec(&mut cmd, &path);
    }
    let child = tokio::process::Command::from(cmd).kill_on_drop(false).spawn()?;
    Ok(child)
}

fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

impl Runtime {
    fn scratch(&self, migration: &str) -> PathBuf {
        self.cfg.paths.scratch().join("migrations").join(migration)
    }

    // ------------------------------------------------------------------ destination

    /// `MigratePrepare`: everything the destination can do while the container still runs
    /// on the source.
    pub async fn migrate_prepare(
        self: &Arc<Self>,
        spec: ContainerSpec,
        ticket: MigrationTicket,
    ) -> OpResult<NodeReply> {
        if !self.cfg.criu {
            return Err(format!("node {} has no usable CRIU (>= 4.2)", self.cfg.node));
        }
        let id = spec.id.clone();
        let paths = self.cfg.paths.container(&id);
        if let Some(old) = self.containers.lock().unwrap().get(&id).cloned() {
            let incoming = read_incoming(&old.paths.dir);
            if !matches!(incoming, Some(Incoming { state: DestinationState::Aborted, .. })) {
                return Err(format!("container {} ({id}) already exists on node {}", spec.name, self.cfg.node));
            }
        }
        // Leftovers of an earlier aborted migration of this container.
        self.drop_incoming(&id).await;
        // Its volumes come with it: they must be new here.
        self.ensure_volumes_free(&spec)?;
        let c = Arc::new(Container::new(spec.clone(), paths));
        self.containers.lock().unwrap().insert(id.clone(), c.clone());
        let _op = c.op.lock().await;
        let started = Instant::now();
        // One budget for every connection of the migration.
        let budget = Budget::new(ticket.bandwidth);
        let result = async {
            for d in [c.paths.dir.clone(), c.paths.state(), c.paths.bundle(), self.scratch(&ticket.migration)] {
                std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            }
            std::fs::write(c.paths.spec(), serde_json::to_vec_pretty(&spec)?)?;
            write_incoming(
                &c,
                &Incoming {
                    migration: ticket.migration.clone(),
                    source: ticket.source.clone(),
                    mode: ticket.mode,
                    state: DestinationState::Prepared,
                    placed_volumes: Vec::new(),
                },
            )?;
            self.layers.ensure(&spec.layers).await?;
            // The namespace is locked before its link comes up: TCP that reaches it early is
            // dropped (and retransmitted later), never reset.
            let netns_path = self.cfg.paths.netns(&id);
            let ns = crate::runtime::new_container_netns(&netns_path)?;
            netlock::lock(&netns_path)?;
            attach_container(&self.netlink, &ns, &host_ifname(&id), spec.ip).await?;
            // Published here now; while the namespace is locked, connections wait for the restore.
            crate::ports::publish(&id, spec.ip, &spec.host.ports).await?;
            let mut config = self.runtime_spec(&spec, &netns_path)?;
            // The volumes arrive, and are put in place, before the restore.
            crate::volumes::add_mounts(&mut config, &self.cfg.paths.data_dir, &spec.host.volumes);
            std::fs::write(c.paths.bundle().join("config.json"), serde_json::to_vec_pretty(&config)?)?;
            let t = Ticket { migration: ticket.migration.clone(), token: ticket.token.clone() };
            let listener =
                Listener::bind_with(IpAddr::V4(self.cfg.address), t, budget.clone(), self.cfg.tls.clone()).await?;
            anyhow::Ok(listener)
        }
        .await;
        let listener = match result {
            Ok(l) => l,
            Err(e) => {
                drop(_op);
                self.drop_incoming(&id).await;
                return Err(format!("preparing to receive {}: {e:#}", spec.name));
            }
        };
        let address = listener.local_addr();
        tracing::info!(
            "migration {}: ready to receive {} from {} at {address} ({} ms)",
            ticket.migration,
            spec.name,
            ticket.source,
            started.elapsed().as_millis()
        );
        let this = self.clone();
        let c2 = c.clone();
        tokio::spawn(async move {
            let migration = ticket.migration.clone();
            match tokio::time::timeout(RECEIVE_TIMEOUT, this.clone().receive(c2.clone(), ticket, listener, budget))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("migration {migration}: receiving failed: {e:#}"),
                Err(_) => {
                    tracing::warn!("migration {migration}: the source did not finish sending in time");
                    this.abort_unfinished_incoming(&c2, &migration).await;
                }
            }
        });
        Ok(NodeReply::MigrationPrepared { address })
    }

    /// The destination's side of the transfer, until the container runs here or not.
    async fn receive(
        self: Arc<Self>,
        c: Arc<Container>,
        ticket: MigrationTicket,
        listener: Listener,
        budget: Budget,
    ) -> anyhow::Result<()> {
        let scratch = self.scratch(&ticket.migration);
        let images = scratch.join("images");
        std::fs::create_dir_all(&images)?;
        // Page connections are taken as they come: cold ones are stored by a CRIU page server
        // at once (the source's dump waits for it), post-copy ones wait for the restore.
        // Pre-copy rounds are stored in `pre-N`, each the parent of the next, and the final
        // checkpoint's pages in `images` with the last round as their parent.
        let pages: Arc<tokio::sync::Mutex<Option<Pages>>> = Arc::default();
        let pages_arrived = Arc::new(tokio::sync::Notify::new());
        let (channel_tx, mut channel_rx) = tokio::sync::mpsc::channel::<Channel>(1);
        let acceptor = {
            let (this, scratch, images, budget) = (self.clone(), scratch.clone(), images.clone(), budget.clone());
            let (pages, pages_arrived, mode) = (pages.clone(), pages_arrived.clone(), ticket.mode);
            let migration = ticket.migration.clone();
            tokio::spawn(async move {
                let mut last_round = 0;
                loop {
                    match listener.accept().await {
                        Ok(Accepted::Control(ch)) => {
                            if channel_tx.send(ch).await.is_err() {
                                break;
                            }
                        }
                        Ok(Accepted::PreDump(stream, round)) => {
                            fault_point(&this.cfg.paths.run_dir, "dest-during-precopy");
                            if mode != MigrationMode::Precopy || round != last_round + 1 {
                                tracing::warn!(
                                    "migration {migration}: refused the pages of pre-copy round {round} \
                                     (mode {}, last round {last_round})",
                                    mode.as_str()
                                );
                                continue;
                            }
                            match this.store_pre_dump(&migration, &scratch, round, stream, &budget).await {
                                Ok(()) => last_round = round,
                                Err(e) => tracing::warn!("migration {migration}: pre-copy round {round}: {e:#}"),
                            }
                        }
                        Ok(Accepted::Pages(stream)) => {
                            let entry = if mode == MigrationMode::Postcopy {
                                Pages::Waiting(stream)
                            } else {
                                let parent = (last_round > 0).then(|| parent_link(last_round));
                                match this
                                    .start_page_server(&scratch, &images, parent.as_deref(), stream, &budget)
                                    .await
                                {
                                    Ok((child, relayed)) => Pages::Storing(child, relayed),
                                    Err(e) => Pages::Failed(format!("{e:#}")),
                                }
                            };
                            *pages.lock().await = Some(entry);
                            pages_arrived.notify_one();
                        }
                        Ok(Accepted::Exec(_)) => {
                            tracing::warn!("migration {migration}: refused an exec connection on its listener");
                        }
                        Err(e) => {
                            tracing::warn!("migration listener: {e}");
                            break;
                        }
                    }
                }
            })
        };
        let mut channel = channel_rx.recv().await.context("the source never connected")?;
        let mut volumes = crate::volume_move::Incoming::new(self.layers.bounds());
        let outcome: anyhow::Result<()> = async {
            loop {
                let msg: Msg = channel.recv().await?;
                match msg {
                    Msg::VolumeBatch { tree, deleted, changed, patched } => {
                        volumes.batch(&c, &mut channel, &tree, deleted, changed, patched).await?;
                    }
                    Msg::VolumeCheck { tree, digest, entries, last } => {
                        volumes.check(&c, &mut channel, &tree, &digest, entries, last).await?;
                    }
                    Msg::Log => {
                        // A carried log (see `logs`), kept within the container's limits.
                        let (state, limits) = (c.paths.state(), self.log_limits(&c.spec));
                        let (sink, source) = tokio::io::duplex(1 << 20);
                        let source = tokio_util::io::SyncIoBridge::new(source);
                        let importer = tokio::task::spawn_blocking(move || logs::import(&state, limits, source));
                        let received = channel.recv_blob(sink).await;
                        importer.await?.context("storing the log")?;
                        received?;
                    }
                    Msg::Images => {
                        channel.recv_dir(&images).await?;
                    }
                    Msg::Restore { lazy } => {
                        if let Err(e) = volumes.ensure_complete(&c.spec) {
                            let reason = format!("{e:#}");
                            let _ = channel.send(&Msg::Failed { reason: reason.clone() }).await;
                            bail!(reason);
                        }
                        let arrived = async {
                            loop {
                                if let Some(p) = pages.lock().await.take() {
                                    return p;
                                }
                                pages_arrived.notified().await;
                            }
                        };
                        let entry = tokio::time::timeout(Duration::from_secs(30), arrived)
                            .await
                            .context("the source's page connection never arrived")?;
                        let lazy_stream = match entry {
                            Pages::Failed(e) => bail!("the CRIU page server could not start: {e}"),
                            Pages::Storing(mut child, relayed) => {
                                // Every page must be stored before the restore reads them.
                                let _ = relayed.await;
                                let status = child.wait().await?;
                                if !status.success() {
                                    bail!(
                                        "the CRIU page server failed ({status}); see {}",
                                        scratch.join(page_server_log(&images)).display()
                                    );
                                }
                                None
                            }
                            Pages::Waiting(stream) => Some(stream),
                        };
                        if lazy != lazy_stream.is_some() {
                            bail!("the source and this node disagree on the migration mode");
                        }
                        fault_point(&self.cfg.paths.run_dir, "dest-before-restore");
                        let started = Instant::now();
                        match self.restore_incoming(&c, &ticket, &images, lazy_stream).await {
                            Ok(()) => {
                                fault_point(&self.cfg.paths.run_dir, "dest-after-restore");
                                let running_at = now_millis();
                                let restore_ms = started.elapsed().as_millis() as u64;
                                channel.send(&Msg::Running { running_at, restore_ms }).await?;
                                return Ok(());
                            }
                            Err(e) => {
                                let reason = format!("{e:#}");
                                let _ = channel.send(&Msg::Failed { reason: reason.clone() }).await;
                                bail!("restore failed: {reason}");
                            }
                        }
                    }
                    Msg::Running { .. }
                    | Msg::Failed { .. }
                    | Msg::VolumeDigests { .. }
                    | Msg::VolumeVerified { .. } => bail!("unexpected message from the source"),
                }
            }
        }
        .await;
        acceptor.abort();
        if let Err(e) = outcome {
            if let Some(Pages::Storing(child, _)) = pages.lock().await.take() {
                kill_group(&child);
            }
            self.abort_unfinished_incoming(&c, &ticket.migration).await;
            return Err(e);
        }
        Ok(())
    }

    /// Pre-copy round `round`: a page server stores its pages in `pre-N` (the previous
    /// round's images their parent), and is reaped once the source's round is over.
    async fn store_pre_dump(
        &self,
        migration: &str,
        scratch: &Path,
        round: u32,
        stream: tokio::net::TcpStream,
        budget: &Budget,
    ) -> anyhow::Result<()> {
        let dir = scratch.join(pre_dump_dir(round));
        let parent = (round > 1).then(|| parent_link(round - 1));
        let (mut child, relayed) = self.start_page_server(scratch, &dir, parent.as_deref(), stream, budget).await?;
        let migration = migration.to_string();
        tokio::spawn(async move {
            let _ = relayed.await;
            if let Ok(status) = child.wait().await
                && !status.success()
            {
                tracing::warn!("migration {migration}: pre-copy round {round}: {status}");
            }
        });
        Ok(())
    }

    /// Cold and pre-copy: a `criu page-server` storing the pages the source's dump sends into
    /// `images`, whose parent (a pre-copy round's images, relative to `images`) holds the
    /// pages this dump left out.
    async fn start_page_server(
        &self,
        scratch: &Path,
        images: &Path,
        parent: Option<&str>,
        stream: tokio::net::TcpStream,
        budget: &Budget,
    ) -> anyhow::Result<(tokio::process::Child, tokio::task::JoinHandle<std::io::Result<(u64, u64)>>)> {
        std::fs::create_dir_all(images).with_context(|| format!("creating {}", images.display()))?;
        let port = free_local_port()?;
        let criu = self.cfg.runc.criu.clone().unwrap_or_else(|| "criu".into());
        let log = page_server_log(images);
        let tls = self.cfg.tls_files.as_ref();
        let cmd = crate::page_server::page_server_command(&criu, port, images, scratch, &log, parent, tls);
        let child = spawn_group(cmd, self.migration_cgroup())?;
        let local = connect_local(port, Duration::from_secs(10)).await?;
        let budget = budget.clone();
        let seal = self.cfg.tls.clone().filter(|_| self.cfg.seal_pages.is_some());
        let relayed = tokio::spawn(async move {
            match seal {
                // (peer to CRIU, CRIU to peer), as `relay` counts them.
                Some(tls) => {
                    let sealed = crate::transfer::seal(
                        stream,
                        &tls,
                        crate::transfer::SealRole::Listener,
                        crate::transfer::CONNECT_TIMEOUT,
                    )
                    .await
                    .map_err(std::io::Error::other)?;
                    let (to_peer, to_local) = crate::relay::relay_sealed(local, sealed, &budget, false).await?;
                    Ok((to_local, to_peer))
                }
                None => crate::relay::relay(stream, local, &budget).await,
            }
        });
        Ok((child, relayed))
    }

    /// Restores the container from what arrived, then unlocks its network: the commit point.
    async fn restore_incoming(
        self: &Arc<Self>,
        c: &Arc<Container>,
        ticket: &MigrationTicket,
        images: &Path,
        lazy_pages: Option<tokio::net::TcpStream>,
    ) -> anyhow::Result<()> {
        let scratch = self.scratch(&ticket.migration);
        let mut incoming = read_incoming(&c.paths.dir).context("the migration marker is gone")?;
        incoming.state = DestinationState::Restoring;
        // Recorded before they move, so that whoever undoes this migration removes them.
        incoming.placed_volumes = crate::volume_move::names(&c.spec);
        write_incoming(c, &incoming)?;
        self.place_volumes(c)?;
        let layers = self.layers.ensure(&c.spec.layers).await?;
        crate::overlay::mount_overlay(&layers, &c.paths.upper(), &c.paths.overlay_work(), &c.paths.rootfs())?;
        // Its user's names are resolved in its files, which are only here now.
        crate::user::update_config(&c.paths.bundle(), &c.paths.rootfs(), &c.spec.user)?;
        Self::check_images(images, &c.paths.bundle()).await?;
        if c.spec.host.network.is_none() {
            crate::netfilter::restore(&self.cfg.paths.netns(&c.spec.id), images, &c.spec.host)?;
        }
        let work = scratch.join("restore-work");
        std::fs::create_dir_all(&work)?;
        let mut lazy_daemon = None;
        // With TLS: the task relaying CRIU's local connection (aborted if the restore fails).
        let mut lazy_relay: Option<tokio::task::JoinHandle<()>> = None;
        // Held until every page is in place: a checkpoint, a migration or a stop of the
        // container waits for that (a dump would miss the pages still in the images).
        let mut filling = None;
        let criu = self.cfg.runc.criu.clone().unwrap_or_else(|| "criu".into());
        if lazy_pages.is_none() && ticket.mode == MigrationMode::Precopy && self.cfg.local_lazy_restore {
            filling = Some(c.op.clone().lock_owned().await);
            // After pre-copy every page is here already, in the rounds' images: the restore
            // leaves the memory to a `criu lazy-pages` reading them, which fills it in as the
            // processes touch it and in the background, so the container is stopped only
            // while the last pages are dumped and the processes are made, not while 1 GiB is
            // copied into fresh memory. Losing the source no longer matters by then.
            let cmd = crate::page_server::lazy_pages_command(
                &criu,
                images,
                &work,
                "lazy-pages.log",
                LazySource::Local,
                None,
            )?;
            lazy_daemon = Some(spawn_group(cmd, self.migration_cgroup())?);
        }
        if let Some(stream) = lazy_pages {
            // CRIU's own TLS (`--encrypt-pages`), or Herd's seal made by a page proxy, or
            // neither.
            let relayed = match (&self.cfg.tls_files, &self.cfg.seal_pages) {
                (Some(files), _) => Some((Some(files), None)),
                (None, Some(files)) => Some((
                    None,
                    Some(crate::pageproxy::ProxySeal {
                        files: files.clone(),
                        role: crate::transfer::SealRole::Listener,
                    }),
                )),
                (None, None) => None,
            };
            let child = match relayed {
                None => {
                    // `criu lazy-pages` asks the source for pages on the migration's
                    // (authenticated) pages connection itself: it inherits the socket, so an
                    // agent restart leaves the pages flowing. CRIU reads it blocking.
                    let stream = stream.into_std()?;
                    stream.set_nonblocking(false)?;
                    let peer: OwnedFd = stream.into();
                    let source = LazySource::Socket(peer.as_raw_fd());
                    let mut cmd =
                        crate::page_server::lazy_pages_command(&criu, images, &work, "lazy-pages.log", source, None)?;
                    keep_fd_on_exec(&mut cmd, &peer);
                    let child = spawn_group(cmd, self.migration_cgroup())?;
                    // CRIU's copy alone: its close is what ends the connection for the source.
                    drop(peer);
                    child
                }
                Some((criu_tls, seal)) => {
                    // CRIU makes its TLS session only on a connection it opens itself, and a
                    // sealed session lives in the process that made it: CRIU connects to a
                    // local port, and a page proxy (a process of its own, which an agent
                    // restart leaves running) relays that to the pages connection.
                    let local = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
                    let source = LazySource::Port(local.local_addr()?.port());
                    let cmd = crate::page_server::lazy_pages_command(
                        &criu,
                        images,
                        &work,
                        "lazy-pages.log",
                        source,
                        criu_tls,
                    )?;
                    let criu_tls = criu_tls.is_some();
                    let child = spawn_group(cmd, self.migration_cgroup())?;
                    let (exe, cgroup, budget) = (self.cfg.exe.clone(), self.migration_cgroup(), ticket.bandwidth);
                    let report = scratch.join("page-proxy.report");
                    let migration = ticket.migration.clone();
                    // CRIU connects once the restore has handed it the processes' memory.
                    lazy_relay = Some(tokio::spawn(async move {
                        let relayed = async {
                            let (criu_end, _) = tokio::time::timeout(RELAY_WAIT, local.accept())
                                .await
                                .context("criu lazy-pages did not connect")??;
                            let mut proxy = crate::pageproxy::spawn(
                                &exe,
                                stream.into_std()?.into(),
                                criu_end.into_std()?.into(),
                                budget,
                                criu_tls,
                                seal,
                                &report,
                                cgroup.as_deref(),
                            )?;
                            let status = proxy.wait().await?;
                            anyhow::ensure!(status.success(), "the page proxy failed ({status})");
                            anyhow::Ok(())
                        };
                        if let Err(e) = relayed.await {
                            tracing::warn!("migration {migration}: relaying the lazy pages: {e:#}");
                        }
                    }));
                    child
                }
            };
            lazy_daemon = Some(child);
        }
        if let Some(child) = &lazy_daemon {
            let socket = work.join("lazy-pages.socket");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !socket.exists() {
                if Instant::now() >= deadline {
                    kill_group(child);
                    bail!("criu lazy-pages did not start; see {}", work.join("lazy-pages.log").display());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        // A restored container keeps the time it first started.
        c.live.lock().unwrap().started_at = ticket.started_at;
        let mode = ShimMode::Restore {
            image_path: images.to_path_buf(),
            work_path: work.clone(),
            tcp_established: true,
            lazy_pages: lazy_daemon.is_some(),
        };
        if let Err(e) = self.start_shim(c, mode).await {
            if let Some(child) = &lazy_daemon {
                kill_group(child);
            }
            if let Some(relay) = &lazy_relay {
                relay.abort();
            }
            let log = work.join("restore.log");
            let mut detail = crate::runtime::criu_log_tail(&log).map(|t| format!(" (CRIU: {t})")).unwrap_or_default();
            // The scratch directory goes with the failed migration: its CRIU log stays.
            if let Some(kept) = self.keep_failed_log(&ticket.migration, &log) {
                detail.push_str(&format!("; CRIU's whole log is kept on node {} in {}", self.cfg.node, kept.display()));
            }
            bail!("{e:#}{detail}");
        }
        netlock::unlock(&self.cfg.paths.netns(&c.spec.id))?;
        incoming.state = DestinationState::Running;
        write_incoming(c, &incoming)?;
        if let Some(mut child) = lazy_daemon {
            // Pages keep arriving after the container runs; reap the daemon when it is done.
            let migration = ticket.migration.clone();
            let scratch = scratch.clone();
            let (this, c) = (self.clone(), c.clone());
            let lazy_log = work.join("lazy-pages.log");
            tokio::spawn(async move {
                let started = Instant::now();
                let status = if filling.is_some() {
                    // From local images: a fill that takes this long is stuck, and it holds
                    // the container's operations until it ends.
                    match tokio::time::timeout(LOCAL_FILL_LIMIT, child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            kill_group(&child);
                            let _ = child.wait().await;
                            Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("not done after {} s", LOCAL_FILL_LIMIT.as_secs()),
                            ))
                        }
                    }
                } else {
                    child.wait().await
                };
                // With TLS, the relay ends once the source has closed its side too; its
                // report goes into the scratch directory, removed below.
                if let Some(relay) = lazy_relay
                    && tokio::time::timeout(RELAY_WAIT, relay).await.is_err()
                {
                    tracing::warn!("migration {migration}: the lazy pages' relay did not end with criu lazy-pages");
                }
                if status.as_ref().is_ok_and(|s| s.success()) {
                    tracing::info!(
                        "migration {migration}: lazy pages done, {} ms after the restore began",
                        started.elapsed().as_millis()
                    );
                } else {
                    // Pages it never got would read as zeros: it must not run on corrupted.
                    let kept = this.keep_failed_log(&format!("{migration}-lazy-pages"), &lazy_log);
                    tracing::error!(
                        "migration {migration}: criu lazy-pages failed ({status:?}) before every page of {} was in \
                         place; it is stopped (CRIU's log: {kept:?})",
                        c.spec.name
                    );
                    let _ = this.cfg.runc.kill(&c.spec.id, libc::SIGKILL, true).await;
                }
                drop(filling);
                let _ = std::fs::remove_dir_all(&scratch);
            });
        } else {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        Ok(())
    }

    /// Undoes incoming migration `migration` unless it runs here: the source may resume.
    /// Only while the container's marker still names this migration: once the Control node
    /// has resolved it, a later migration of the same container may own the directory (and a
    /// running container) that this one's slow failure must not touch.
    async fn abort_unfinished_incoming(self: &Arc<Self>, c: &Arc<Container>, migration: &str) {
        let _op = c.op.lock().await;
        match read_incoming(&c.paths.dir) {
            Some(i) if i.migration == migration && i.state != DestinationState::Running => {
                self.abort_incoming(c).await;
            }
            _ => {}
        }
    }

    /// Makes sure an incoming container does not run here and removes what was received.
    /// Keeps the CRIU log of a failed restore of migration `migration` in the node's run
    /// directory (`failed-restores/<migration>.log`, the newest 20), as its scratch directory
    /// is removed; returns where.
    fn keep_failed_log(&self, migration: &str, log: &Path) -> Option<PathBuf> {
        const KEPT: usize = 20;
        let dir = self.cfg.paths.run_dir.join("failed-restores");
        std::fs::create_dir_all(&dir).ok()?;
        let kept = dir.join(format!("{migration}.log"));
        std::fs::copy(log, &kept).ok()?;
        let mut logs: Vec<_> = std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        logs.sort();
        for (_, old) in logs.iter().take(logs.len().saturating_sub(KEPT)) {
            let _ = std::fs::remove_file(old);
        }
        Some(kept)
    }

    async fn abort_incoming(self: &Arc<Self>, c: &Arc<Container>) {
        if let Some(mut incoming) = read_incoming(&c.paths.dir) {
            if incoming.state != DestinationState::Running {
                self.remove_placed_volumes(c, &incoming.placed_volumes).await;
            }
            incoming.state = DestinationState::Aborted;
            let _ = write_incoming(c, &incoming);
            let _ = std::fs::remove_dir_all(self.scratch(&incoming.migration));
        }
        let running = c.live.lock().unwrap().state == Some(ContainerState::Running);
        if running {
            let _ = self.cfg.runc.kill(&c.spec.id, libc::SIGKILL, true).await;
            c.live.lock().unwrap().expecting_exit = true;
        }
        c.live.lock().unwrap().generation += 1; // this node never reports on it
        self.release(c).await;
    }

    /// Removes every trace of an incoming migration of container `id` that did not commit.
    async fn drop_incoming(self: &Arc<Self>, id: &str) {
        let existing = self.containers.lock().unwrap().get(id).cloned();
        if let Some(c) = existing {
            self.abort_incoming(&c).await;
            let _ = std::fs::remove_dir_all(&c.paths.dir);
            self.containers.lock().unwrap().remove(id);
        }
    }

    /// After an agent restart: what to make of a container that was migrating in.
    pub(crate) async fn adopt_incoming(self: &Arc<Self>, c: &Arc<Container>) -> Adopted {
        let Some(mut incoming) = read_incoming(&c.paths.dir) else { return Adopted::NotIncoming };
        let alive = crate::shim::live_shim(&c.paths.state()).is_some();
        match incoming.state {
            DestinationState::Running => Adopted::Running,
            // The restore finished but the agent died before recording it: finish the commit.
            DestinationState::Restoring if alive => {
                if let Err(e) = netlock::unlock(&self.cfg.paths.netns(&c.spec.id)) {
                    tracing::warn!("unlocking the network of {}: {e:#}", c.spec.name);
                }
                incoming.state = DestinationState::Running;
                let _ = write_incoming(c, &incoming);
                Adopted::Running
            }
            _ => {
                tracing::info!(
                    "dropping the incoming migration {} of {}: it did not finish before the agent restarted",
                    incoming.migration,
                    c.spec.name
                );
                self.abort_incoming(c).await;
                let _ = std::fs::remove_dir_all(&c.paths.dir);
                self.containers.lock().unwrap().remove(&c.spec.id);
                Adopted::Dropped
            }
        }
    }

    /// `MigrationStatus`.
    pub fn migration_status(&self, id: &str, migration: &str) -> OpResult<NodeReply> {
        let dir = self.cfg.paths.container(id).dir;
        let state = match read_incoming(&dir) {
            Some(i) if i.migration == migration => i.state,
            // The source's scratch directory lives from its first step to the end it settles.
            _ if self.scratch(migration).exists() => DestinationState::Sending,
            _ => DestinationState::Unknown,
        };
        Ok(NodeReply::MigrationState(state))
    }

    // ------------------------------------------------------------------ source

    /// `MigrateSend`: checkpoint the container and send it; answers once the destination
    /// runs it, or the migration failed.
    pub async fn migrate_send(
        self: &Arc<Self>,
        id: &str,
        ticket: MigrationTicket,
        destination: SocketAddr,
        progress: impl Fn(Progress) + Send + Sync + 'static,
    ) -> OpResult<NodeReply> {
        let c = self.get(id)?;
        let _op = c.op.lock().await;
        if c.live.lock().unwrap().state != Some(ContainerState::Running) {
            return Err(format!("container {} is not running on node {}", c.spec.name, self.cfg.node));
        }
        if let Some(why) = self.execs.refusal(id, &c.spec.name, "migrate it") {
            return Err(why);
        }
        // It runs here, so the migration that brought it here committed, even if this node
        // was down when the Control node said so: its marker must not confuse this one.
        if read_incoming(&c.paths.dir).is_some_and(|i| i.state == DestinationState::Running) {
            let _ = std::fs::remove_file(c.paths.dir.join(INCOMING));
        }
        // Refusals before anything froze: the container simply runs on, which the Control
        // node learns as a resumed migration (an error would leave it in doubt).
        let refused = |reason: String| Ok(NodeReply::MigrationSent(SourceOutcome::Resumed { reason }));
        if ticket.mode == MigrationMode::Precopy && !self.cfg.dirty_tracking {
            return refused(format!(
                "pre-copy is not available on node {}: its kernel does not track dirty memory (soft-dirty, or userfaultfd write-protection with Herd's CRIU)",
                self.cfg.node
            ));
        }
        if let Err(why) = self.ensure_dumpable(&c).await {
            return refused(format!("{} cannot be migrated: {why}", c.spec.name));
        }
        let root = c.live.lock().unwrap().pid;
        // Its rounds reset the tracking of written memory that ticker versions build on.
        self.trail(&c.spec.id).clear();
        let outcome = self.send(&c, &ticket, destination, ticket.mode, &progress).await;
        // Pre-copy's trackers, if a round kept some: the next migration starts afresh.
        if let (Some(keeper), Some(root)) = (&self.cfg.dirty_keeper, root) {
            keeper.forget(root as i32);
        }
        if !matches!(outcome, SourceOutcome::InDoubt { .. }) {
            // Settled here (resumed, or let go after the destination ran it): a later
            // resolution of this migration has nothing left to do. In doubt, the scratch
            // directory is what tells `migrate_resolve` that this node sent it.
            let scratch = self.scratch(&ticket.migration);
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(scratch)).await;
        }
        Ok(NodeReply::MigrationSent(outcome))
    }

    /// Sends the log of `c` from offset `from` (all of it that is kept when `None`) as a
    /// carried log, no more than its limits keep; returns the offset after what was sent, and
    /// the bytes sent.
    async fn send_log(&self, c: &Container, ch: &mut Channel, from: Option<u64>) -> anyhow::Result<(u64, u64)> {
        let (log, limit) = (logs::Log::new(&c.paths.state()), self.log_limits(&c.spec).total());
        let carried = tokio::task::spawn_blocking(move || logs::Carried::choose(&log, from, limit)).await??;
        let end = carried.end;
        if from.is_some() && carried.is_empty() {
            return Ok((end, 0));
        }
        ch.send(&Msg::Log).await?;
        Ok((end, ch.send_blob(carried.reader()?).await?))
    }

    async fn send(
        self: &Arc<Self>,
        c: &Arc<Container>,
        ticket: &MigrationTicket,
        destination: SocketAddr,
        mode: MigrationMode,
        progress: &(impl Fn(Progress) + Send + Sync),
    ) -> SourceOutcome {
        let id = c.spec.id.clone();
        let netns = self.cfg.paths.netns(&id);
        let scratch = self.scratch(&ticket.migration);
        let images = scratch.join("images");
        let budget = Budget::new(ticket.bandwidth);
        let t = Ticket { migration: ticket.migration.clone(), token: ticket.token.clone() };
        let mut phases = Vec::new();
        let started = Instant::now();

        // Before the freeze: connect, send the log so far.
        let mut channel = match async {
            std::fs::create_dir_all(&images)?;
            let mut ch = transfer::connect_control_with(destination, &t, budget.clone(), self.cfg.tls.as_ref()).await?;
            let (offset, _) = self.send_log(c, &mut ch, None).await?;
            anyhow::Ok((ch, offset))
        }
        .await
        {
            Ok(ch) => ch,
            Err(e) => return SourceOutcome::Resumed { reason: format!("cannot reach the destination: {e:#}") },
        };
        phases.push(phase("connect", ms_since(started)));

        // The writable layer and the volumes: copied while the container runs, pass after
        // pass over all of them; the frozen pass carries what changed since.
        let mut outgoing = match crate::volume_move::Outgoing::writable_layer(c) {
            Ok(upper) => vec![upper],
            Err(e) => return SourceOutcome::Resumed { reason: format!("the writable layer: {e:#}") },
        };
        for name in crate::volume_move::names(&c.spec) {
            match crate::volume_move::Outgoing::volume(&self.cfg.paths.data_dir, &name) {
                Ok(v) => outgoing.push(v),
                Err(e) => return SourceOutcome::Resumed { reason: format!("volume {name}: {e:#}") },
            }
        }
        // Bytes of the volumes' passes (the writable layer's count with the rest of the files).
        let mut volume_bytes = 0;
        let mut tree_bytes = 0;
        let mut pass = 0;
        while outgoing.iter().any(|v| crate::volume_move::another_pass(&v.passes)) {
            pass += 1;
            for v in outgoing.iter_mut().filter(|v| crate::volume_move::another_pass(&v.passes)) {
                progress(Progress { phase: format!("{} pass {pass}", v.tree.label()), bytes: tree_bytes, total: None });
                match v.send_pass(&mut channel.0, false, self.mapped_files(c, &v.tree), false).await {
                    Ok(r) => {
                        tree_bytes += r.wire;
                        if matches!(v.tree, TreeName::Volume(_)) {
                            volume_bytes += r.wire;
                        }
                        phases.push(PhaseTime {
                            phase: format!("{} {pass}", v.tree.label()),
                            ms: r.ms,
                            bytes: Some(r.wire),
                        });
                    }
                    Err(e) => {
                        return SourceOutcome::Resumed { reason: format!("copying {} failed: {e:#}", v.tree) };
                    }
                }
            }
        }

        // Pre-copy: memory moves while the container runs, round after round, until what the
        // container dirties between two rounds stops shrinking.
        let mut precopied = 0;
        let mut parent = None;
        if mode == MigrationMode::Precopy {
            match self.pre_copy(c, &t, destination, &scratch, &budget, progress).await {
                Ok(rounds) => {
                    precopied = rounds.iter().filter_map(|r| r.bytes).sum();
                    parent = Some(parent_link(rounds.len() as u32));
                    phases.extend(rounds);
                }
                Err(e) => {
                    // It ran all along, but for a round that failed while CRIU had it frozen.
                    let reason = format!("pre-copy failed: {e:#}");
                    tracing::warn!("migration of {} failed, it goes on here: {reason}", c.spec.name);
                    self.thaw(c).await;
                    return SourceOutcome::Resumed { reason };
                }
            }
        }

        // Freeze and checkpoint: from here the container does not run.
        let (frozen_at, freeze_started) = match self.freeze_and_lock(c, &netns).await {
            Ok(frozen) => frozen,
            Err(e) => return SourceOutcome::Resumed { reason: format!("{e:#}") },
        };
        c.live.lock().unwrap().expecting_exit = true;
        progress(Progress { phase: "checkpoint".into(), bytes: 0, total: None });
        let dumped = self.dump(c, &t, destination, &images, &scratch, mode, parent, &budget).await;
        let mut dump = match dumped {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("checkpoint failed: {e:#}");
                return self.resume_here(c, &netns, reason).await;
            }
        };
        phases.push(phase("checkpoint", ms_since(freeze_started)));
        fault_point(&self.cfg.paths.run_dir, "source-after-checkpoint");

        // The rest of the state, while frozen.
        let transfer_started = Instant::now();
        let sent: anyhow::Result<u64> = async {
            let (ch, log_offset) = &mut channel;
            ch.send(&Msg::Images).await?;
            // Pre-copy: the link to the last round's images is the source's own; the
            // destination's page server made one to its copy of them.
            if mode == MigrationMode::Precopy {
                std::fs::remove_file(images.join(CRIU_PARENT_LINK))?;
            }
            let mut bytes = ch.send_dir(&images).await?;
            // The last changes of the writable layer and the volumes, checked on arrival
            // before the restore. (A test's fault damages a volume's.)
            let mut corrupt = outgoing.iter().any(|v| matches!(v.tree, TreeName::Volume(_)))
                && fault_armed(&self.cfg.paths.run_dir, "volume-corrupt");
            for v in outgoing.iter_mut() {
                let tree_started = Instant::now();
                let damage = matches!(v.tree, TreeName::Volume(_)) && std::mem::take(&mut corrupt);
                let r = v
                    .send_pass(ch, true, self.mapped_files(c, &v.tree), damage)
                    .await
                    .with_context(|| v.tree.to_string())?;
                match v.tree {
                    TreeName::Volume(_) => volume_bytes += r.wire,
                    TreeName::WritableLayer => bytes += r.wire,
                }
                phases.push(PhaseTime {
                    phase: format!("{} frozen", v.tree.label()),
                    ms: ms_since(tree_started),
                    bytes: Some(r.wire),
                });
            }
            bytes += self.send_log(c, ch, Some(*log_offset)).await?.1;
            ch.send(&Msg::Restore { lazy: mode == MigrationMode::Postcopy }).await?;
            Ok(bytes)
        }
        .await;
        let fs_bytes = match sent {
            Ok(b) => b,
            Err(e) => {
                dump.abort().await;
                return self.resume_here(c, &netns, format!("sending the container failed: {e:#}")).await;
            }
        };
        phases.push(phase("transfer", ms_since(transfer_started)));
        progress(Progress { phase: "restore".into(), bytes: fs_bytes + dump.memory_bytes(), total: None });

        // The destination restores. Past this point only its answer decides.
        let answer = tokio::time::timeout(RESTORE_TIMEOUT, channel.0.recv::<Msg>()).await;
        let (running_at, restore_ms) = match answer {
            Ok(Ok(Msg::Running { running_at, restore_ms })) => (running_at, restore_ms),
            Ok(Ok(Msg::Failed { reason })) => {
                dump.abort().await;
                return self.resume_here(c, &netns, format!("the destination could not restore: {reason}")).await;
            }
            Ok(Ok(other)) => {
                return SourceOutcome::InDoubt { reason: format!("unexpected answer from the destination: {other:?}") };
            }
            Ok(Err(e)) => {
                return SourceOutcome::InDoubt { reason: format!("lost the destination during the restore: {e:#}") };
            }
            Err(_) => return SourceOutcome::InDoubt { reason: "the destination did not answer the restore".into() },
        };
        phases.push(phase("restore", restore_ms));
        fault_point(&self.cfg.paths.run_dir, "source-before-let-go");
        // Post-copy: pages keep flowing from here until the destination has them all.
        let pages_started = Instant::now();
        let memory_bytes = dump.finish().await + precopied;
        if mode == MigrationMode::Postcopy {
            phases.push(phase("pages", ms_since(pages_started)));
        }
        let finished_at = now_millis();
        self.let_go(c).await;
        phases.push(phase("total", ms_since(started)));
        SourceOutcome::Committed(TransferReport {
            frozen_at,
            running_at,
            finished_at,
            memory_bytes,
            fs_bytes: channel.0.bytes_sent().saturating_sub(volume_bytes).max(fs_bytes),
            volume_bytes,
            volume_size: outgoing.iter().filter(|v| matches!(v.tree, TreeName::Volume(_))).map(|v| v.size()).sum(),
            phases,
            encrypted: channel.0.is_tls(),
            pages_encrypted: self.cfg.tls_files.is_some() || self.cfg.seal_pages.is_some(),
            unmeasured: None,
        })
    }

    /// Pre-copy's rounds, while the container runs: each `runc checkpoint --pre-dump` sends
    /// the pages written since the round before (all of them in the first) to a page server
    /// on the destination, until [`precopy_again`] says the dirty set stopped shrinking or is
    /// small enough for the final stop-and-copy. Returns each round's time and bytes.
    async fn pre_copy(
        &self,
        c: &Container,
        ticket: &Ticket,
        destination: SocketAddr,
        scratch: &Path,
        budget: &Budget,
        progress: &(impl Fn(Progress) + Send + Sync),
    ) -> anyhow::Result<Vec<PhaseTime>> {
        let mut sent: Vec<u64> = Vec::new();
        let mut rounds = Vec::new();
        let mut small_enough = PRECOPY_MIN_ROUND;
        while precopy_again(&sent, small_enough, PRECOPY_MAX_ROUNDS) {
            let round = sent.len() as u32 + 1;
            progress(Progress { phase: format!("pre-copy round {round}"), bytes: sent.iter().sum(), total: None });
            let started = Instant::now();
            let dir = pre_dump_dir(round);
            let work = scratch.join(format!("{dir}-work"));
            std::fs::create_dir_all(&work)?;
            let mut opts = CheckpointOpts::new(scratch.join(&dir), work);
            opts.pre_dump = true;
            opts.parent_path = (round > 1).then(|| parent_link(round - 1).into());
            let remote = transfer::connect_pre_dump(destination, ticket, round).await?;
            let log = scratch.join(format!("runc-{dir}.log"));
            let bytes = self
                .dump_relayed(&c.spec.id, opts, &log, remote, budget)
                .await
                .with_context(|| format!("round {round}"))?;
            if round == 1 {
                small_enough = precopy_small_enough(bytes, started.elapsed());
            }
            tracing::debug!("pre-copy round {round} of {}: {bytes} bytes", c.spec.name);
            fault_point(&self.cfg.paths.run_dir, "source-after-precopy-round");
            sent.push(bytes);
            rounds.push(PhaseTime { phase: format!("precopy {round}"), ms: ms_since(started), bytes: Some(bytes) });
        }
        Ok(rounds)
    }

    /// Runs `runc checkpoint` with `opts`, its CRIU sending pages to a local port that is
    /// relayed to the destination's page server over `remote`; returns the bytes relayed.
    async fn dump_relayed(
        &self,
        id: &str,
        mut opts: CheckpointOpts,
        log: &Path,
        remote: tokio::net::TcpStream,
        budget: &Budget,
    ) -> anyhow::Result<u64> {
        let proxy = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        opts.page_server = Some(proxy.local_addr()?);
        let budget = budget.clone();
        let seal = self.cfg.tls.clone().filter(|_| self.cfg.seal_pages.is_some());
        let relayed = tokio::spawn(async move {
            let (local, _) = proxy.accept().await?;
            match seal {
                Some(tls) => {
                    let ip = remote.peer_addr()?.ip();
                    let sealed = crate::transfer::seal(
                        remote,
                        &tls,
                        crate::transfer::SealRole::Opener(ip),
                        crate::transfer::CONNECT_TIMEOUT,
                    )
                    .await
                    .map_err(std::io::Error::other)?;
                    crate::relay::relay_sealed(local, sealed, &budget, false).await
                }
                None => crate::relay::relay(local, remote, &budget).await,
            }
        });
        let cmd = self.cfg.runc.checkpoint_command(id, &opts, log);
        let mut child = spawn_group(cmd, self.migration_cgroup())?;
        let status = child.wait().await?;
        if !status.success() {
            relayed.abort();
            let why = last_runc_error(log, 0).unwrap_or_else(|| status.to_string());
            let detail = crate::runtime::criu_log_tail(&opts.work_path.join("dump.log"))
                .map(|t| format!(" (CRIU: {t})"))
                .unwrap_or_default();
            bail!("{why}{detail}");
        }
        let (sent, _) = relayed.await.context("page transfer")??;
        Ok(sent)
    }

    /// Runs the CRIU dump for `mode`: cold and pre-copy send the pages through the
    /// destination's page server as they dump (pre-copy only those written since its last
    /// round, whose images are `parent`); post-copy dumps everything else and then serves
    /// pages.
    #[allow(clippy::too_many_arguments)]
    async fn dump(
        &self,
        c: &Container,
        ticket: &Ticket,
        destination: SocketAddr,
        images: &Path,
        scratch: &Path,
        mode: MigrationMode,
        parent: Option<String>,
        budget: &Budget,
    ) -> anyhow::Result<Dump> {
        let id = &c.spec.id;
        let work = scratch.join("dump-work");
        std::fs::create_dir_all(&work)?;
        let log = scratch.join("runc-checkpoint.log");
        if c.spec.host.network.is_none() && crate::netfilter::may_have_rules(&c.spec.host) {
            crate::netfilter::save(&self.cfg.paths.netns(id), images)?;
        }
        let mut opts = CheckpointOpts::new(images.to_path_buf(), work.clone());
        opts.parent_path = parent.map(PathBuf::from);
        // Frozen by runc before CRIU starts (see `Runtime::freeze_and_lock`). Left to itself,
        // CRIU freezes the cgroup and finds it still FREEZING at its first look (cgroup v1),
        // then sleeps 100 ms before it looks again: a tenth of a second of every downtime.
        match mode {
            MigrationMode::Cold | MigrationMode::Precopy => {
                // Left frozen after the dump: resumable until the commit.
                opts.leave_running = true;
                let remote = transfer::connect_pages(destination, ticket).await?;
                let sent = self.dump_relayed(id, opts, &log, remote, budget).await?;
                Ok(Dump::Cold { memory_bytes: sent })
            }
            MigrationMode::Postcopy => {
                let port = free_local_port()?;
                opts.page_server = Some(SocketAddr::from(([127, 0, 0, 1], port)));
                opts.lazy_pages = true;
                let (status_r, status_w) = nix::unistd::pipe()?;
                opts.status_fd = Some(status_w.as_raw_fd());
                let mut cmd = self.cfg.runc.checkpoint_command(id, &opts, &log);
                keep_fd_on_exec(&mut cmd, &status_w);
                let child = spawn_group(cmd, self.migration_cgroup())?;
                drop(status_w);
                // A '\0' on the status fd: everything but the pages is dumped and the page server listens.
                let ready = tokio::task::spawn_blocking(move || {
                    let mut f = std::fs::File::from(status_r);
                    let mut b = [0u8; 1];
                    std::io::Read::read(&mut f, &mut b).map(|n| n == 1)
                })
                .await??;
                if !ready {
                    let mut child = child;
                    let status = child.wait().await?;
                    let why = last_runc_error(&log, 0).unwrap_or_else(|| status.to_string());
                    let detail = crate::runtime::criu_log_tail(&work.join("dump.log"))
                        .map(|t| format!(" (CRIU: {t})"))
                        .unwrap_or_default();
                    bail!("{why}{detail}");
                }
                // The page server's traffic goes through a page proxy process, so it keeps
                // flowing if this agent restarts.
                let local = connect_local(port, Duration::from_secs(10)).await?;
                let remote = transfer::connect_pages(destination, ticket).await?;
                let report = scratch.join("page-proxy.report");
                let seal = self.cfg.seal_pages.clone().map(|files| crate::pageproxy::ProxySeal {
                    files,
                    role: crate::transfer::SealRole::Opener(destination.ip()),
                });
                let proxy = crate::pageproxy::spawn(
                    &self.cfg.exe,
                    remote.into_std()?.into(),
                    local.into_std()?.into(),
                    budget.bytes_per_sec(),
                    self.cfg.tls_files.is_some(),
                    seal,
                    &report,
                    self.migration_cgroup().as_deref(),
                )?;
                Ok(Dump::Lazy(Box::new(LazyDump { child, proxy, report, runc: self.cfg.runc.clone(), id: id.clone() })))
            }
        }
    }

    /// Gives the container back to itself here: unlock, thaw.
    async fn resume_here(self: &Arc<Self>, c: &Arc<Container>, netns: &Path, reason: String) -> SourceOutcome {
        tracing::warn!("migration of {} failed, resuming it here: {reason}", c.spec.name);
        self.thaw(c).await;
        if let Err(e) = netlock::unlock(netns) {
            tracing::warn!("unlocking the network of {}: {e:#}", c.spec.name);
        }
        c.live.lock().unwrap().expecting_exit = false;
        SourceOutcome::Resumed { reason }
    }

    /// Lets a paused container run again.
    async fn thaw(&self, c: &Container) {
        match self.cfg.runc.state(&c.spec.id).await {
            Ok(Some(s)) if s.status == "paused" => {
                if let Err(e) = self.cfg.runc.resume(&c.spec.id).await {
                    tracing::error!("cannot resume {}: {e}", c.spec.name);
                }
            }
            Ok(Some(s)) if s.status == "running" => {}
            other => {
                // The processes are gone: the dump got further than it should have.
                tracing::error!("{} cannot be resumed (runc: {other:?})", c.spec.name);
            }
        }
    }

    /// The destination runs the container: stop it here for good and forget it, without
    /// reporting its status (the destination owns it now).
    async fn let_go(self: &Arc<Self>, c: &Arc<Container>) {
        let id = c.spec.id.clone();
        let generation = {
            let mut l = c.live.lock().unwrap();
            l.expecting_exit = true;
            l.generation
        };
        let _ = self.cfg.runc.kill(&id, libc::SIGKILL, true).await;
        let _ = self.cfg.runc.resume(&id).await;
        Runtime::wait_exit(c, generation, Duration::from_secs(15)).await;
        c.live.lock().unwrap().generation += 1;
        self.release(c).await;
        let dir = c.paths.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        self.containers.lock().unwrap().remove(&id);
        // Its volumes moved with it.
        self.remove_moved_volumes(&c.spec).await;
    }

    /// `MigrateResolve`: the Control node's decision for a migration it had to resolve.
    pub async fn migrate_resolve(self: &Arc<Self>, id: &str, migration: &str, commit: bool) -> OpResult<NodeReply> {
        let Ok(c) = self.get(id) else { return Ok(NodeReply::Done) };
        if let Some(incoming) = read_incoming(&c.paths.dir).filter(|i| i.migration == migration) {
            // Destination side.
            if commit {
                if incoming.state != DestinationState::Running {
                    return Err(format!("migration {migration} did not run the container here"));
                }
                let _ = std::fs::remove_file(c.paths.dir.join(INCOMING));
                // The source may have written a status after ours while it was in doubt.
                self.publish_status(&c).await;
            } else {
                let _op = c.op.lock().await;
                self.abort_incoming(&c).await;
                let _ = std::fs::remove_dir_all(&c.paths.dir);
                self.containers.lock().unwrap().remove(id);
            }
            return Ok(NodeReply::Done);
        }
        // Source side: the container is still here, frozen, and the migration's scratch
        // directory says this node sent it. A migration this node knows nothing of (resolved
        // already, or another node's) changes nothing here.
        if !self.scratch(migration).exists() {
            return Ok(NodeReply::Done);
        }
        tracing::debug!("migration {migration}: resolving ({})", if commit { "commit" } else { "abort" });
        let _op = c.op.lock().await;
        tracing::debug!("migration {migration}: resolving, container locked");
        if commit {
            self.let_go(&c).await;
        } else {
            let netns = self.cfg.paths.netns(id);
            self.resume_here(&c, &netns, format!("migration {migration} was aborted")).await;
        }
        let _ = std::fs::remove_dir_all(self.scratch(migration));
        Ok(NodeReply::Done)
    }

    /// The cgroup migration helpers run in, with the node's migration CPU budget.
    fn migration_cgroup(&self) -> Option<String> {
        self.cfg.migration_cgroup.clone()
    }
}

/// What [`Runtime::adopt_incoming`] found.
pub(crate) enum Adopted {
    NotIncoming,
    /// The migration committed here: the container is ours.
    Running,
    /// An unfinished incoming migration, removed.
    Dropped,
}

/// The destination's end of a migration's page connection.
enum Pages {
    /// A CRIU page server stores the pages (cold).
    Storing(tokio::process::Child, tokio::task::JoinHandle<std::io::Result<(u64, u64)>>),
    /// Kept for the lazy-pages daemon (post-copy).
    Waiting(tokio::net::TcpStream),
    Failed(String),
}

/// A checkpoint whose pages may still be moving.
enum Dump {
    Cold { memory_bytes: u64 },
    Lazy(Box<LazyDump>),
}

/// A post-copy checkpoint still serving pages to the destination.
struct LazyDump {
    /// `runc checkpoint --lazy-pages`, serving pages until the destination has them all.
    child: tokio::process::Child,
    proxy: tokio::process::Child,
    report: PathBuf,
    runc: crate::runc::Runc,
    id: String,
}

impl Dump {
    fn memory_bytes(&self) -> u64 {
        match self {
            Dump::Cold { memory_bytes, .. } => *memory_bytes,
            Dump::Lazy(_) => 0,
        }
    }

    /// Waits until every page has moved; returns the bytes of memory sent.
    async fn finish(self) -> u64 {
        match self {
            Dump::Cold { memory_bytes, .. } => memory_bytes,
            Dump::Lazy(mut lazy) => {
                let _ = lazy.child.wait().await;
                let _ = lazy.proxy.wait().await;
                crate::pageproxy::read_report(&lazy.report)
                    .map(|(from_peer, to_peer)| to_peer.max(from_peer))
                    .unwrap_or(0)
            }
        }
    }

    /// Stops serving pages (post-copy): CRIU thaws the container when its page server dies.
    async fn abort(&mut self) {
        if let Dump::Lazy(lazy) = self {
            kill_group(&lazy.child);
            kill_group(&lazy.proxy);
            let _ = lazy.child.wait().await;
            let _ = lazy.proxy.wait().await;
            if let Ok(Some(s)) = lazy.runc.state(&lazy.id).await
                && s.status == "paused"
            {
                let _ = lazy.runc.resume(&lazy.id).await;
            }
        }
    }
}

/// Lets `fd` survive into the command's process (it is close-on-exec otherwise).
fn keep_fd_on_exec(cmd: &mut std::process::Command, fd: &OwnedFd) {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl is async-signal-safe and only touches the child's copy of the fd.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(raw, libc::F_GETFD);
            if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
