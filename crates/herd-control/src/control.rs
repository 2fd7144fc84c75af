//! The Control node: its state, its connection to the nodes, and the background tasks that
//! keep its view of the cluster current (registrations, heartbeats, container status).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use herd_broker::Objects;
use herd_broker::{Broker, BrokerConfig, Bucket, Change};
use herd_proto::api::NodeState;
use herd_proto::migration::MigrationRecord;
use herd_proto::node::{Heartbeat, NodeReply, NodeRequest, NodeResult};
use herd_proto::state::{ContainerRecord, ContainerState, ContainerStatus, ImageRecord, NodeRecord, NodeSettings};
use herd_proto::subjects;
use ipnet::Ipv4Net;

use crate::error::{Error, Kind, Result};
use crate::events::Events;
use crate::ipam::Ipam;
use crate::view::View;

/// How the Control node is run.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub broker: BrokerConfig,
    /// The replica's TLS files: the API is HTTPS with this certificate, and clients that
    /// present a certificate are checked against the cluster CA (`None`: plain HTTP).
    pub tls: Option<herd_tls::TlsFiles>,
    /// Where the HTTP API listens.
    pub api_listen: SocketAddr,
    /// The bearer token every API request must carry.
    pub api_token: String,
    /// Scratch space for image uploads.
    pub data_dir: PathBuf,
    /// The key that signs exported checkpoints (made when missing); Control replicas share
    /// one. `None`: `DATA_DIR/checkpoint-signing.key`.
    pub checkpoint_key: Option<PathBuf>,
    /// The range container addresses come from.
    pub container_cidr: Ipv4Net,
    /// A node without a heartbeat for this long is down.
    pub node_timeout: Duration,
    /// How containers are placed unless `herd run --strategy` says otherwise: `spread`,
    /// `binpack` or `random`.
    pub strategy: String,
    /// The migration policy (a `herd-policy` spec, `none` to move nothing) and how often it
    /// is evaluated.
    pub policy: String,
    pub policy_interval: Duration,
    /// Where `policy` came from (`flag`, `config` or `default`); a policy stored by `herd
    /// policy set` overrides it (see [`crate::policy`]).
    pub policy_source: String,
    /// What an imported or pulled image may unpack to, per layer and in all (see
    /// [`crate::images`]).
    pub unpack_limits: herd_image::UnpackLimits,
    /// Admitting nodes with join tokens (see [`crate::join`]); `None`: nodes come with
    /// credentials of their own only.
    pub join: Option<crate::join::JoinConfig>,
    /// Every `auto` migration is safe (`herd migrate --safe`): the policies' and drains' too.
    pub safe_migrations: bool,
}

/// The running Control node, shared by the API handlers.
pub struct Control {
    pub(crate) cfg: ControlConfig,
    pub(crate) broker: Broker,
    pub(crate) view: RwLock<View>,
    pub(crate) containers: Bucket<ContainerRecord>,
    pub(crate) images: Bucket<ImageRecord>,
    pub(crate) statuses: Bucket<ContainerStatus>,
    pub(crate) layers: Objects,
    /// Checkpoints in transit (see [`crate::checkpoints`]).
    pub(crate) checkpoint_store: Objects,
    /// Ticker versions (see [`crate::ha`]).
    pub(crate) version_store: Objects,
    /// Signs the checkpoints that leave the cluster (see [`crate::checkpoint_archive`]).
    pub(crate) checkpoint_key: herd_image::signing::SigningKey,
    pub(crate) events: Events,
    pub(crate) ipam: Mutex<Ipam>,
    pub(crate) migrations: Bucket<MigrationRecord>,
    /// The operator's node settings; this node is their only writer (see [`crate::nodes`]).
    pub(crate) node_settings: Bucket<NodeSettings>,
    /// Serialises read-modify-write of node settings.
    pub(crate) settings_writes: tokio::sync::Mutex<()>,
    /// Serialises the layer store changes of imports and image removals (see [`crate::images`]).
    pub(crate) layer_writes: tokio::sync::Mutex<()>,
    /// Migrations in flight, by container name.
    pub(crate) migrating: Mutex<HashMap<String, crate::migrate::Active>>,
    /// `herd exec` sessions being relayed (see [`crate::exec`]).
    pub(crate) execs: crate::exec::Registry,
    /// Serialises read-modify-write of container records by tasks that do not hold the
    /// container's operation lock (the status watch, migration reports).
    pub(crate) record_writes: tokio::sync::Mutex<()>,
    /// One lock per container name, so operations on one container do not interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Names of nodes whose agent restarted or went down: a request in flight to one of them
    /// will never be answered.
    pub(crate) node_lost: tokio::sync::broadcast::Sender<String>,
    /// The nodes' monitoring samples: history and latest.
    pub(crate) monitoring: Arc<Mutex<crate::monitoring::Monitoring>>,
    /// The policy engine and its recent decisions (see [`crate::policy`]).
    pub(crate) policy: Mutex<crate::policy::PolicyState>,
    pub(crate) me: Weak<Control>,
    /// Join tokens, members and the auth callout, when this node admits nodes by token.
    pub(crate) joining: Option<Arc<crate::join::Joining>>,
}

impl Control {
    /// Connects to the broker, loads the cluster state and starts the background tasks.
    pub async fn start(cfg: ControlConfig) -> anyhow::Result<Arc<Control>> {
        let broker = Broker::connect(&cfg.broker).await?;
        Control::start_with(cfg, broker, None).await
    }

    /// Loads the cluster state through `broker` (a leading replica's carries its fence) and
    /// starts the background tasks. `warm`: what a replica gathered while it followed (the
    /// monitoring samples, which it keeps gathering, and the nodes' latest heartbeats, so
    /// that live nodes are ready at once); `None`: this node subscribes to the samples itself.
    pub(crate) async fn start_with(
        cfg: ControlConfig,
        broker: Broker,
        warm: Option<&crate::replica::Warm>,
    ) -> anyhow::Result<Arc<Control>> {
        let monitoring = warm.map(|w| w.monitoring.clone());
        herd_image::private_dir(&cfg.data_dir)
            .with_context(|| format!("creating {} (mode 0700)", cfg.data_dir.display()))?;
        let key_path =
            cfg.checkpoint_key.clone().unwrap_or_else(|| cfg.data_dir.join(crate::checkpoint_archive::KEY_FILE));
        let checkpoint_key = crate::checkpoint_archive::load_or_create_key(&key_path)?;
        let nodes: Bucket<NodeRecord> = broker.bucket(subjects::NODES_BUCKET).await?;
        let images: Bucket<ImageRecord> = broker.bucket(subjects::IMAGES_BUCKET).await?;
        let containers: Bucket<ContainerRecord> = broker.bucket(subjects::CONTAINERS_BUCKET).await?;
        let statuses: Bucket<ContainerStatus> = broker.bucket(subjects::STATUS_BUCKET).await?;
        let layers = broker.layer_store().await?;
        let checkpoint_store = broker.checkpoint_store().await?;
        let version_store = broker.versions_store().await?;
        let events = Events::open(&broker).await?;
        let migrations: Bucket<MigrationRecord> = broker.bucket(subjects::MIGRATIONS_BUCKET).await?;
        let (migration_map, _) = migrations.snapshot().await?;
        let node_settings: Bucket<NodeSettings> = broker.bucket(subjects::NODE_SETTINGS_BUCKET).await?;
        let (settings_map, _) = node_settings.snapshot().await?;
        let policy = crate::policy::PolicyState::load(&broker, &cfg).await?;
        let joining = match &cfg.join {
            Some(j) => Some(Arc::new(crate::join::Joining::open(j, &broker).await?)),
            None => None,
        };

        // Subscribe to heartbeats before loading, so no node looks down for longer than it is.
        let heartbeats = broker.client.subscribe(subjects::HEARTBEAT_ALL).await?;
        let metrics = match monitoring {
            Some(_) => None,
            None => Some(broker.client.subscribe(subjects::METRICS_ALL).await?),
        };

        let mut view = View::default();
        let mut ipam = Ipam::new(cfg.container_cidr);
        let (node_map, node_changes) = nodes.snapshot().await?;
        if let Some(w) = warm {
            view.early_heartbeats = w.heartbeats_of(node_map.keys(), cfg.node_timeout);
        }
        for (_, n) in node_map {
            view.register(n.value);
        }
        view.settings = settings_map.into_iter().map(|(name, s)| (name, s.value)).collect();
        view.nodes_changed();
        let (image_map, _) = images.snapshot().await?;
        for (_, i) in image_map {
            view.images.insert(i.value.name.clone(), i.value);
        }
        let (container_map, _) = containers.snapshot().await?;
        for (name, c) in container_map {
            if !ipam.reserve(c.value.ip) {
                tracing::warn!(
                    "container {name} has address {} outside the container range {}",
                    c.value.ip,
                    cfg.container_cidr
                );
            }
            debug_assert_eq!(name, c.value.name);
            view.insert_container(c.value);
        }
        let (status_map, status_changes) = statuses.snapshot().await?;
        for (key, s) in status_map {
            match subjects::parse_status_key(&key) {
                Some((node, id)) => {
                    view.apply_status(node, id, Some(s.value), s.revision);
                }
                None => tracing::warn!("ignoring status key {key:?}: it is not NODE.CONTAINER_ID"),
            }
        }
        tracing::info!(
            "loaded {} nodes, {} images, {} containers",
            view.nodes.len(),
            view.images.len(),
            view.containers.len()
        );

        let control = Arc::new_cyclic(|me| Control {
            cfg,
            broker,
            view: RwLock::new(view),
            containers,
            images,
            statuses,
            layers,
            checkpoint_store,
            version_store,
            checkpoint_key,
            events,
            ipam: Mutex::new(ipam),
            migrations,
            node_settings,
            settings_writes: tokio::sync::Mutex::new(()),
            layer_writes: tokio::sync::Mutex::new(()),
            migrating: Mutex::new(HashMap::new()),
            execs: Default::default(),
            record_writes: tokio::sync::Mutex::new(()),
            locks: Mutex::new(HashMap::new()),
            node_lost: tokio::sync::broadcast::channel(64).0,
            monitoring: monitoring.unwrap_or_default(),
            policy: Mutex::new(policy),
            me: me.clone(),
            joining,
        });
        // Migrations a crash interrupted are finished (or undone) now.
        for (_, m) in migration_map {
            if !m.value.phase.is_final() {
                tracing::info!("resuming the resolution of migration {} of {}", m.value.id, m.value.container);
                control.spawn_recovery(m.value);
            }
        }
        tokio::spawn(control.clone().follow_heartbeats(heartbeats));
        if let Some(metrics) = metrics {
            tokio::spawn(crate::monitoring::gather(control.monitoring.clone(), metrics));
        }
        tokio::spawn(control.clone().expire_nodes());
        tokio::spawn(control.clone().follow_nodes(node_changes));
        tokio::spawn(control.clone().follow_statuses(status_changes));
        tokio::spawn(control.clone().run_policy());
        tokio::spawn(control.clone().run_tickers());
        tokio::spawn(control.clone().reschedule_down_nodes());
        if control.joining.is_some() {
            tokio::spawn(control.clone().serve_callouts());
        }
        Ok(control)
    }

    /// Serializes operations on one container name.
    pub(crate) async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().unwrap();
            if locks.len() > 10_000 {
                locks.retain(|_, m| Arc::strong_count(m) > 1);
            }
            locks.entry(name.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    /// Sends a request to a node agent and waits for its answer, at most `timeout`, and fails
    /// as soon as the node's agent restarts or the node goes down, since the answer will then
    /// never come (the broker may even have handed the request to the dead agent).
    pub(crate) async fn node_call(&self, node: &str, req: &NodeRequest, timeout: Duration) -> Result<NodeReply> {
        {
            let view = self.view.read().unwrap();
            match view.nodes.get(node) {
                None => return Err(Error::not_found(format!("no such node: {node}"))),
                Some(n) if n.state != NodeState::Ready => {
                    return Err(Error::unavailable(format!("node {node} is down")));
                }
                Some(_) => {}
            }
        }
        let mut lost = self.node_lost.subscribe();
        let lost = async {
            loop {
                match lost.recv().await {
                    Ok(n) if n == node => return,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let who = format!("node {node}");
        let request = self.broker.request(subjects::node_rpc(node), &who, req, timeout);
        let reply: NodeResult = tokio::select! {
            reply = request => reply.map_err(|e| Error::from_broker(Kind::Unavailable, &e))?,
            () = lost => return Err(Error::unavailable(format!("node {node} restarted or went down before it answered"))),
        };
        reply.map_err(|e| Error::new(Kind::NodeFailed, format!("node {node}: {}", e.message)))
    }

    /// Re-reads the status that a container's node published from its bucket (the node writes
    /// it before answering).
    pub(crate) async fn refresh_status(&self, record: &ContainerRecord) -> Result<()> {
        if let Some(s) = self.statuses.get(&subjects::status_key(&record.node, &record.id)).await? {
            self.apply_status(&record.node, &record.id, s.value, s.revision).await;
        }
        Ok(())
    }

    /// Applies a status write unless a newer one is known, and records the event of a change
    /// of state. Status writes reach the Control node twice (read back after an operation, and
    /// through the watch); whichever comes first counts.
    async fn apply_status(&self, node: &str, id: &str, status: ContainerStatus, revision: u64) {
        let (applied, old, name) = {
            let mut view = self.view.write().unwrap();
            let (applied, old) = view.apply_status(node, id, Some(status.clone()), revision);
            (applied, old, view.names_by_id.get(id).cloned())
        };
        let (true, Some(name)) = (applied, name) else { return };
        if old.as_ref().map(|o| (o.state, &o.node)) != Some((status.state, &status.node)) {
            self.follow_migration(id, &status.node, status.state).await;
            self.status_event(&name, &status).await;
        }
    }

    async fn follow_heartbeats(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let Ok(hb) = serde_json::from_slice::<Heartbeat>(&msg.payload) else {
                tracing::warn!("ignoring a malformed heartbeat on {}", msg.subject);
                continue;
            };
            let became_ready = self.view.write().unwrap().heartbeat(&hb.node, hb.time, hb.usage);
            if became_ready {
                self.events.emit("node", "ready", &hb.node, Some(&hb.node), format!("node {} is ready", hb.node)).await;
            }
        }
    }

    async fn expire_nodes(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            // Heartbeats missed while this Control node was cut off from the broker (its
            // server died, and it moved to another) say nothing of the nodes: it judges them
            // only once it has been connected for a whole timeout.
            if self.broker.connected_for().is_none_or(|up| up < self.cfg.node_timeout) {
                continue;
            }
            let down = self.view.write().unwrap().expire(self.cfg.node_timeout);
            for node in down {
                let _ = self.node_lost.send(node.clone());
                let msg = format!(
                    "node {node} failed: no heartbeat for {}s; its containers are rescheduled by their policies",
                    self.cfg.node_timeout.as_secs_f32()
                );
                self.events.emit("node", "down", &node, Some(&node), msg).await;
                let control = self.clone();
                tokio::spawn(async move { control.reschedule_node(&node).await });
            }
        }
    }

    async fn follow_nodes(self: Arc<Self>, changes: impl futures::Stream<Item = Change<NodeRecord>>) {
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            match change {
                Change::Put { value, .. } => {
                    let name = value.name.clone();
                    let previous = self.view.read().unwrap().nodes.get(&name).map(|n| n.record.registered_at);
                    let known = previous.is_some();
                    if previous.is_some_and(|at| at != value.registered_at) {
                        // A new agent: whatever the old one was doing is lost.
                        let _ = self.node_lost.send(name.clone());
                    }
                    self.view.write().unwrap().register(value);
                    if !known {
                        self.events.emit("node", "register", &name, Some(&name), format!("node {name} joined")).await;
                    }
                }
                Change::Delete { key, .. } => {
                    let mut view = self.view.write().unwrap();
                    view.nodes.remove(&key);
                    view.nodes_changed();
                }
            }
        }
    }

    async fn follow_statuses(self: Arc<Self>, changes: impl futures::Stream<Item = Change<ContainerStatus>>) {
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            let (key, value, revision) = match change {
                Change::Put { key, value, revision } => (key, Some(value), revision),
                Change::Delete { key, revision } => (key, None, revision),
            };
            let Some((node, id)) = subjects::parse_status_key(&key) else {
                tracing::warn!("ignoring status key {key:?}: it is not NODE.CONTAINER_ID");
                continue;
            };
            match value {
                Some(value) => self.apply_status(node, id, value, revision).await,
                None => {
                    self.view.write().unwrap().apply_status(node, id, None, revision);
                }
            }
        }
    }

    async fn status_event(&self, name: &str, s: &ContainerStatus) {
        let (action, message) = match s.state {
            ContainerState::Running => ("start", format!("container {name} started on {}", s.node)),
            ContainerState::Exited => (
                "die",
                format!(
                    "container {name} exited with code {}",
                    s.exit_code.map_or("unknown".to_string(), |c| c.to_string())
                ),
            ),
            ContainerState::Checkpointed => ("checkpointed", format!("container {name} was checkpointed and stopped")),
            ContainerState::Failed => {
                ("fail", format!("container {name} failed: {}", s.error.as_deref().unwrap_or("unknown error")))
            }
            ContainerState::Created => return,
        };
        self.events.emit("container", action, name, Some(&s.node), message).await;
    }
}
