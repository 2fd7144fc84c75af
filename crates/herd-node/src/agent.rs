//! The Compute node agent (`herd node`): registers the node, heartbeats, serves the Control
//! node's requests, and keeps routes to the other nodes' containers.
//!
//! Restarting the agent does not touch running containers: each has its own shim, and the
//! agent adopts them again when it comes back.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use herd_broker::Objects;
use herd_broker::{Broker, BrokerConfig};
use herd_proto::node::{Heartbeat, NodeError, NodeRequest, NodeResult, NodeUsage};
use herd_proto::state::{ContainerRecord, ContainerStatus, DirtyTracking, NodeRecord, Resources};
use herd_proto::{now_millis, subjects};
use ipnet::Ipv4Net;

use crate::layers::LayerCache;
use crate::paths::NodePaths;
use crate::runc::Runc;
use crate::runtime::{CarriedLog, Runtime, RuntimeConfig, validate_id};
use crate::{cgroups, facts, tools};

/// How the agent is run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub broker: BrokerConfig,
    /// The node's TLS files: migrations' connections are TLS with both ends' certificates
    /// checked against the cluster CA (`None`: plain text).
    pub tls: Option<herd_tls::TlsFiles>,
    /// Memory pages of migrations through CRIU's own TLS too (with `tls`); off by default
    /// (see [`crate::runtime::RuntimeConfig::tls_files`]).
    pub encrypt_pages: bool,
    /// Memory pages of migrations in plain text even with `tls` (for a measurement of what
    /// sealing them costs); by default Herd seals them ([`crate::transfer::seal`]).
    pub plain_pages: bool,
    /// The address other nodes route this node's containers through.
    pub address: Ipv4Addr,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup_parent: String,
    /// Only routes within this range are managed (all Herd routes when `None`).
    pub container_cidr: Option<Ipv4Net>,
    pub labels: BTreeMap<String, String>,
    /// Capacity to offer instead of the machine's.
    pub cpus_milli: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub runc: Option<PathBuf>,
    pub criu: Option<PathBuf>,
    pub heartbeat: Duration,
    /// How long the node may go without an answer from the broker before it fences its
    /// containers (see [`crate::fence`]); shorter than the Control node's node timeout.
    pub lease: Duration,
    /// How often the monitoring sampler samples.
    pub sample_interval: Duration,
    /// CPU cap of the migration helpers, in thousandths of a CPU.
    pub migration_cpus_milli: u64,
    /// What unpacking an image layer may cost (see [`crate::layers`]).
    pub layer_limits: crate::layers::LayerLimits,
    /// The log limits of containers that ask for none of their own.
    pub log_limits: herd_proto::logs::LogLimits,
}

/// Runs the agent until `shutdown` completes. Containers keep running afterwards.
pub async fn run(cfg: NodeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    herd_proto::names::validate_node_name(&cfg.name).map_err(|e| anyhow::anyhow!(e.0))?;
    if !nix::unistd::geteuid().is_root() {
        bail!("herd node must run as root: it drives runc, CRIU, cgroups and network namespaces");
    }
    let runc_bin = tools::require_runc(cfg.runc.as_deref())?;
    let criu = match tools::require_criu(cfg.criu.as_deref()) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("{e:#}: this node runs containers but cannot checkpoint or migrate them");
            None
        }
    };
    let paths = NodePaths::new(&cfg.data_dir, &cfg.run_dir, &cfg.cgroup_parent);
    // Layers, writable layers, configurations and checkpoints: nobody else's business.
    for dir in [&paths.data_dir, &paths.run_dir] {
        herd_image::private_dir(dir).with_context(|| format!("creating {} (mode 0700)", dir.display()))?;
    }
    let runc = Runc { binary: runc_bin, root: paths.runc_root(), criu: criu.as_ref().map(|(p, _)| p.clone()) };
    let runc_version = runc.version().await.map_err(|e| anyhow::anyhow!("runc does not work: {e}"))?;
    let node_facts = facts::probe(&runc_version, criu.as_ref().map(|(p, v)| (p.as_path(), v.as_str())));
    let exe = std::env::current_exe().context("locating the herd executable")?;

    // Containers route through this node; it must forward.
    if let Err(e) = herd_net::write_sysctl("net/ipv4/ip_forward", "1") {
        tracing::warn!("cannot enable IP forwarding: {e}");
    }

    // Containers keep off the node's own services and the broker.
    match cfg.container_cidr {
        Some(range) => {
            crate::guard::install(range, &cfg.broker.url).await.context("guarding the node from its containers")?
        }
        None => tracing::warn!(
            "no --container-cidr: containers can reach this node's own services (migration listeners) and the broker"
        ),
    }
    let broker = Broker::connect(&cfg.broker).await?;
    // Heartbeats and the lease's round trips go over a connection of their own: the broker
    // reads each connection in order and serves some JetStream requests (an image layer's
    // chunks, say) inline, so on a busy disk they queued for seconds behind the node's own
    // bulk traffic, and a node that worked was fenced or declared failed.
    let liveness = Broker::connect(&BrokerConfig {
        client_name: format!("{} (liveness)", cfg.broker.client_name),
        ..cfg.broker.clone()
    })
    .await
    .context("the liveness connection to the broker")?;
    let statuses = broker.bucket::<ContainerStatus>(subjects::STATUS_BUCKET).await?;
    let nodes = broker.bucket::<NodeRecord>(subjects::NODES_BUCKET).await?;
    let containers = broker.bucket::<ContainerRecord>(subjects::CONTAINERS_BUCKET).await?;
    let layers = LayerCache::new(paths.layers_dir(), broker.layer_store().await?, cfg.layer_limits)?;
    let checkpoint_store = broker.checkpoint_store().await?;
    let versions_store = broker.versions_store().await?;
    // Checkpoint images of migrations live in memory, never on disk.
    mount_scratch(&paths.scratch())?;
    let migration_cgroup = match crate::cgroups::create_budget_cgroup(
        &format!("{}/migration", paths.cgroup_parent),
        cfg.migration_cpus_milli,
    ) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("migrations run without a CPU budget: {e:#}");
            None
        }
    };
    let transfer_tls = cfg
        .tls
        .as_ref()
        .map(crate::transfer::TransferTls::new)
        .transpose()
        .context("the TLS settings of migration and exec connections")?;
    // Memory pages through CRIU's own TLS only when asked: CRIU dumps a container's System V
    // shared memory (PostgreSQL has some) from a forked child that writes through a copy of
    // the TLS session, which breaks the stream (docs/design/tls.md).
    let criu_tls = cfg.tls.clone().filter(|_| cfg.encrypt_pages);
    // Without soft-dirty, CRIU tracks written pages with userfaultfd, and the agent holds its
    // trackers between pre-copy rounds.
    let dirty_keeper = (node_facts.criu_features.dirty_tracking_by == Some(DirtyTracking::Userfaultfd))
        .then(|| crate::dirty_keeper::Keeper::start(&paths.run_dir.join("dirty-track.sock")))
        .transpose()?;
    let criu_config = criu
        .is_some()
        .then(|| crate::criu_config::write(&paths.run_dir, criu_tls.as_ref(), dirty_keeper.as_ref().map(|k| k.path())))
        .transpose()?;
    let track_mem_config = (criu.is_some() && node_facts.criu_features.dirty_tracking)
        .then(|| crate::criu_config::write_track_mem(&paths.run_dir))
        .transpose()?;
    // The clients of an earlier agent's exec sessions went with it.
    crate::exec::kill_leftovers(&paths.run_dir);
    let runtime = Arc::new(Runtime::new(
        RuntimeConfig {
            node: cfg.name.clone(),
            paths: paths.clone(),
            runc,
            criu: criu.is_some(),
            dirty_tracking: node_facts.criu_features.dirty_tracking,
            dirty_keeper,
            track_mem_config,
            local_lazy_restore: criu.as_ref().is_some_and(|(path, _)| crate::facts::herd_criu(path)),
            exe,
            address: cfg.address,
            migration_cgroup,
            criu_config,
            tls_files: criu_tls,
            tls: transfer_tls,
            seal_pages: cfg.tls.clone().filter(|_| !cfg.encrypt_pages && !cfg.plain_pages),
            log_limits: cfg.log_limits,
        },
        statuses.clone(),
        layers,
    )?);

    // Take back what this node ran before the agent (re)started.
    let (placed, _) = containers.snapshot().await?;
    let wanted: HashSet<String> =
        placed.values().filter(|c| c.value.node == cfg.name).map(|c| c.value.id.clone()).collect();
    runtime.adopt(&wanted).await?;
    let (known, _) = statuses.snapshot().await?;
    runtime.forget_stale_statuses(known.into_keys()).await;

    let machine = facts::machine_capacity();
    let record = NodeRecord {
        name: cfg.name.clone(),
        address: cfg.address,
        labels: cfg.labels.clone(),
        capacity: Resources {
            cpus_milli: cfg.cpus_milli.unwrap_or(machine.cpus_milli),
            memory_bytes: cfg.memory_bytes.unwrap_or(machine.memory_bytes),
        },
        facts: node_facts,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        registered_at: now_millis(),
    };
    nodes.put(&cfg.name, &record).await?;
    tracing::info!(
        "node {} registered: {} ({} CPUs, {} memory), CRIU {}",
        cfg.name,
        cfg.address,
        herd_proto::units::Cpus(record.capacity.cpus_milli),
        herd_proto::units::Bytes(record.capacity.memory_bytes),
        record.facts.criu_version.as_deref().unwrap_or("missing")
    );

    let mut requests =
        broker.client.subscribe(subjects::node_rpc(&cfg.name)).await.context("subscribing to node requests")?;
    let heartbeats = tokio::spawn(heartbeat_loop(liveness.clone(), cfg.clone(), runtime.clone()));
    let term = crate::leader_term::LeaderTerm::default();
    let follow_term = tokio::spawn(term.clone().follow(broker.clone()));
    let health = crate::fence::LeaseHealth::new(cfg.lease);
    let lease = tokio::spawn(crate::fence::run(liveness.clone(), runtime.clone(), containers.clone(), health.clone()));
    let sampler =
        tokio::spawn(crate::sampler::run(broker.clone(), cfg.name.clone(), runtime.clone(), cfg.sample_interval));
    let routes = tokio::spawn({
        let (broker, name, range) = (broker.clone(), cfg.name.clone(), cfg.container_cidr);
        async move {
            if let Err(e) = crate::routes::run_route_sync(broker, Some(name), range).await {
                tracing::error!("route sync stopped: {e:#}");
            }
        }
    });

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            msg = requests.next() => {
                let Some(msg) = msg else { bail!("the broker connection closed") };
                let Some(reply) = msg.reply.clone() else { continue };
                let runtime = runtime.clone();
                let client = broker.client.clone();
                let broker = broker.clone();
                let store = checkpoint_store.clone();
                let versions = versions_store.clone();
                let admitted = term.admit(
                    msg.headers.as_ref().and_then(|h| h.get(herd_broker::TERM_HEADER)).map(|v| v.as_str()),
                );
                // Why the lease does not hold, when it does not.
                let refusal = (!health.holds_at(std::time::Instant::now())).then(|| health.refusal());
                tokio::spawn(async move {
                    let result: NodeResult = match (admitted, serde_json::from_slice::<NodeRequest>(&msg.payload)) {
                        (Err(message), _) => {
                            tracing::warn!("{message}");
                            Err(NodeError { message })
                        }
                        (Ok(()), Ok(req)) if refusal.is_some() && takes_work(&req) => {
                            let message = refusal.unwrap_or_default();
                            tracing::warn!("refusing a request: {message}");
                            Err(NodeError { message })
                        }
                        (Ok(()), Ok(req)) => handle(&runtime, &broker, &store, &versions, req).await.map_err(|message| NodeError { message }),
                        (Ok(()), Err(e)) => Err(NodeError { message: format!("malformed request: {e}") }),
                    };
                    let payload = Bytes::from(serde_json::to_vec(&result).unwrap_or_default());
                    if let Err(e) = client.publish(reply, payload).await {
                        tracing::warn!("could not answer a request: {e}");
                    }
                });
            }
        }
    }
    heartbeats.abort();
    follow_term.abort();
    lease.abort();
    sampler.abort();
    routes.abort();
    let _ = broker.client.flush().await;
    tracing::info!("node {} agent stopped; its containers keep running", cfg.name);
    Ok(())
}

/// Whether request `req` starts work on a container (a start, a dump, a restore, a move, an
/// exec), which a node whose lease lapsed does not take (see [`crate::fence::LeaseHealth`]).
/// Stopping, removing, reading logs and answering about migrations are always done.
fn takes_work(req: &NodeRequest) -> bool {
    matches!(
        req,
        NodeRequest::Create { .. }
            | NodeRequest::Start { .. }
            | NodeRequest::Checkpoint { .. }
            | NodeRequest::SaveVersion { .. }
            | NodeRequest::RestoreVersion { .. }
            | NodeRequest::Restore { .. }
            | NodeRequest::ImportCheckpoint { .. }
            | NodeRequest::MigratePrepare { .. }
            | NodeRequest::MigrateSend { .. }
            | NodeRequest::ExecPrepare { .. }
    )
}

async fn handle(
    runtime: &Arc<Runtime>,
    broker: &Broker,
    checkpoint_store: &Objects,
    versions: &Objects,
    req: NodeRequest,
) -> Result<herd_proto::node::NodeReply, String> {
    match req {
        NodeRequest::Create { spec } => {
            validate_id(&spec.id)?;
            runtime.create(spec).await
        }
        NodeRequest::Stop { id, timeout_secs } => {
            validate_id(&id)?;
            runtime.stop(&id, Duration::from_secs(timeout_secs)).await
        }
        NodeRequest::Remove { id, force, keep_checkpoints } => {
            validate_id(&id)?;
            runtime.remove_keeping(&id, force, keep_checkpoints).await
        }
        NodeRequest::Logs { id, offset, max_bytes, tail } => {
            validate_id(&id)?;
            runtime.logs(&id, offset, max_bytes, tail)
        }
        NodeRequest::Start { id } => {
            validate_id(&id)?;
            runtime.start(&id).await
        }
        NodeRequest::Checkpoint { id, checkpoint_id, leave_running } => {
            validate_id(&id)?;
            runtime.checkpoint(&id, &checkpoint_id, leave_running).await
        }
        NodeRequest::SaveVersion { id, version, builds_on } => {
            validate_id(&id)?;
            runtime.save_version(versions, &id, version, &builds_on).await
        }
        NodeRequest::SetFenced { id, fenced } => {
            validate_id(&id)?;
            runtime.set_fenced(&id, fenced)
        }
        NodeRequest::RestoreVersion { spec, version } => {
            validate_id(&spec.id)?;
            runtime.restore_version(versions, spec, version).await
        }
        NodeRequest::Restore { spec, checkpoint_id, log_object } => {
            validate_id(&spec.id)?;
            let log = log_object.as_deref().map(|object| CarriedLog { store: checkpoint_store, object });
            runtime.restore_with_log(spec, &checkpoint_id, log).await
        }
        NodeRequest::ExportCheckpoint { id, checkpoint_id, object } => {
            validate_id(&id)?;
            runtime.export_checkpoint(checkpoint_store, &id, &checkpoint_id, &object).await
        }
        NodeRequest::ExportLog { id, object } => {
            validate_id(&id)?;
            runtime.export_log(checkpoint_store, &id, &object).await
        }
        NodeRequest::ImportCheckpoint { spec, checkpoint_id, object } => {
            validate_id(&spec.id)?;
            runtime.import_checkpoint(checkpoint_store, spec, &checkpoint_id, &object).await
        }
        NodeRequest::DropCheckpoint { id, checkpoint_id } => {
            validate_id(&id)?;
            runtime.drop_checkpoint(&id, &checkpoint_id).await
        }
        NodeRequest::MigratePrepare { spec, ticket } => {
            validate_id(&spec.id)?;
            runtime.migrate_prepare(spec, ticket).await
        }
        NodeRequest::MigrateSend { id, ticket, destination } => {
            validate_id(&id)?;
            let subject = subjects::migration_progress(&ticket.migration);
            let client = broker.client.clone();
            let progress = move |p: herd_proto::migration::Progress| {
                if let Ok(payload) = serde_json::to_vec(&p) {
                    let (client, subject) = (client.clone(), subject.clone());
                    tokio::spawn(async move { client.publish(subject, payload.into()).await });
                }
            };
            runtime.migrate_send(&id, ticket, destination, progress).await
        }
        NodeRequest::MigrationStatus { id, migration } => {
            validate_id(&id)?;
            runtime.migration_status(&id, &migration)
        }
        NodeRequest::MigrateResolve { id, migration, commit } => {
            validate_id(&id)?;
            runtime.migrate_resolve(&id, &migration, commit).await
        }
        NodeRequest::ExecPrepare { id, session, token, request } => {
            validate_id(&id)?;
            runtime.exec_prepare(&id, &session, token, request).await
        }
        NodeRequest::Shutdown { stop_containers, timeout_secs } => {
            if stop_containers {
                runtime.stop_all(Duration::from_secs(timeout_secs)).await
            } else {
                Ok(herd_proto::node::NodeReply::Done)
            }
        }
    }
}

/// Mounts a tmpfs at `dir` unless one is there already.
fn mount_scratch(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if crate::overlay::is_mountpoint(dir)? {
        return Ok(());
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .with_context(|| format!("mounting a tmpfs at {}", dir.display()))
}

/// Publishes a heartbeat with the node's container usage every `cfg.heartbeat`.
async fn heartbeat_loop(broker: Broker, cfg: NodeConfig, runtime: Arc<Runtime>) {
    let mut tick = tokio::time::interval(cfg.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let parent = NodePaths::new(&cfg.data_dir, &cfg.run_dir, &cfg.cgroup_parent).cgroup_parent;
    let mut last: Option<(std::time::Instant, u64)> = None;
    let mut seq = 0;
    loop {
        tick.tick().await;
        seq += 1;
        let (cpu_ns, memory) = cgroups::usage(&parent).unwrap_or((0, 0));
        let now = std::time::Instant::now();
        // A late beat is how a node comes to be declared failed while it runs: say so, with
        // how late, so that the Control node's verdict can be told apart from a real failure.
        if let Some((t, _)) = last
            && now.duration_since(t) > cfg.heartbeat * 2
        {
            tracing::warn!("heartbeat {seq} is late: {} ms since the one before", now.duration_since(t).as_millis());
        }
        let cpu_milli = match last {
            Some((t, prev)) if cpu_ns >= prev => {
                let secs = now.duration_since(t).as_secs_f64().max(1e-3);
                ((cpu_ns - prev) as f64 / 1e6 / secs) as u64
            }
            _ => 0,
        };
        last = Some((now, cpu_ns));
        let load1 = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        let hb = Heartbeat {
            node: cfg.name.clone(),
            seq,
            time: now_millis(),
            usage: NodeUsage {
                cpu_milli,
                memory_used_bytes: memory,
                containers_running: runtime.running_count(),
                load1,
            },
        };
        if let Err(e) = broker.publish(subjects::heartbeat(&cfg.name), &hb).await {
            tracing::warn!("heartbeat not sent: {e:#}");
        }
        if now.elapsed() > cfg.heartbeat {
            tracing::warn!("heartbeat {seq} took {} ms to publish", now.elapsed().as_millis());
        }
    }
}
