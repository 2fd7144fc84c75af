//! The Control node's HTTP+JSON API (`/v1/...`), used by the CLI and the dashboard.
//!
//! Every request carries `Authorization: Bearer <token>`. Errors come back with a non-2xx
//! status and an [`ApiError`] body.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/health` | | [`Health`] |
//! | `GET /v1/nodes` | | `[NodeInfo]` |
//! | `POST /v1/nodes/{name}/labels` | [`LabelRequest`] | [`NodeInfo`] |
//! | `POST /v1/nodes/{name}/drain` | | [`DrainReport`] |
//! | `POST /v1/nodes/{name}/activate` | | [`NodeInfo`] |
//! | `GET /v1/images` | | `[ImageRecord]` |
//! | `POST /v1/images?name=NAME` | a tar stream (rootfs, OCI layout or `docker save`; gzip allowed) | [`ImageRecord`] |
//! | `DELETE /v1/images/{name}` | | |
//! | `GET /v1/layers` | | `[LayerInfo]`: the layer store's blobs and the images that use each |
//! | `POST /v1/pulls` | [`crate::pull::PullRequest`] | newline-delimited [`crate::pull::PullUpdate`]s, the last a report or an error |
//! | `GET /v1/containers?all=BOOL` | | `[ContainerInfo]` |
//! | `POST /v1/containers` | [`RunRequest`] | [`ContainerInfo`] |
//! | `GET /v1/containers/{name}` | | [`ContainerInfo`] |
//! | `POST /v1/containers/{name}/stop?timeout=SECS` | | [`ContainerInfo`] |
//! | `POST /v1/containers/{name}/start` | | [`ContainerInfo`] |
//! | `POST /v1/containers/{name}/restart?timeout=SECS` | | [`ContainerInfo`] |
//! | `DELETE /v1/containers/{name}?force=BOOL` | | |
//! | `GET /v1/containers/{name}/logs?follow=BOOL&tail=N&since=MS` | | newline-delimited [`LogLine`]s (the last `N` entries; those written at or after `MS`) |
//! | `POST /v1/containers/{name}/checkpoint` | [`CheckpointRequest`] | [`CheckpointInfo`] |
//! | `GET /v1/containers/{name}/checkpoints/{id}/archive` | | the checkpoint as a tar stream (see [`crate::checkpoint`]) |
//! | `POST /v1/containers/{name}/restore` | [`RestoreRequest`] | [`ContainerInfo`] |
//! | `POST /v1/containers/{name}/restore/archive?node=NODE` | a checkpoint archive (tar) | [`ContainerInfo`] |
//! | `POST /v1/containers/{name}/migrate` | [`MigrateRequest`] | newline-delimited [`MigrateUpdate`]s, the last a report or an error |
//! | `GET /v1/events?after=SEQ&wait=SECS&limit=N` | | `[Event]` (with `after`: those after `SEQ`, waiting up to `wait` s for one) |
//! | `GET /v1/stats?names=A,B` | | `[ContainerStats]` |
//! | `GET /v1/stats/nodes` | | `[NodeStats]` |
//! | `GET /v1/containers/{name}/series?from=MS&to=MS&step=MS` | | a container's history (`herd_metrics::history::QueryResult`) |
//! | `GET /v1/nodes/{name}/series?from=MS&to=MS&step=MS` | | a node's history, likewise |
//! | `GET /metrics` | | Prometheus text format |

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::node::NodeUsage;
use crate::state::{Availability, CheckpointInfo, ContainerState, Desired, Limits, NodeFacts, Resources};

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    pub nodes_ready: usize,
}

/// Whether a node is taking work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeating.
    Ready,
    /// No heartbeat for longer than the Control node's timeout.
    Down,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Down => "down",
        }
    }
}

/// A node as `herd nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub state: NodeState,
    /// Whether placement may use it (`herd nodes drain|activate`).
    #[serde(default)]
    pub availability: Availability,
    pub address: Ipv4Addr,
    /// Its own labels with the operator's (`herd nodes label`) over them.
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    /// Sum of the limits of the containers placed on it (unlimited ones count as zero).
    pub allocated: Resources,
    /// Live usage from its last heartbeat.
    pub usage: Option<NodeUsage>,
    /// Containers placed on it, running or not.
    pub containers: usize,
    pub facts: NodeFacts,
    pub last_heartbeat: Option<UnixMillis>,
}

/// `POST /v1/nodes/{name}/labels`: `KEY=VALUE` sets a label, `KEY-` removes one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelRequest {
    pub changes: Vec<String>,
}

/// A container `herd nodes drain` moved to another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainMove {
    pub container: String,
    pub to: String,
    pub migration: String,
}

/// A container `herd nodes drain` left where it was, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStay {
    pub container: String,
    pub reason: String,
}

/// A blob of the layer store (`GET /v1/layers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub digest: String,
    /// Bytes stored (compressed, as imported or pulled).
    pub size: u64,
    /// Images that list it, by name; empty for a layer no image uses.
    pub images: Vec<String>,
}

/// The answer to `POST /v1/nodes/{name}/drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    pub node: String,
    pub moved: Vec<DrainMove>,
    pub stayed: Vec<DrainStay>,
}

/// `POST /v1/containers`: what `herd run` asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub name: Option<String>,
    pub image: String,
    /// Run on this node instead of letting the scheduler choose.
    pub node: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    /// `KEY=VALUE` entries added to the image's environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Replaces the image's command (the entrypoint stays) when not empty.
    #[serde(default)]
    pub command: Vec<String>,
    /// Placement constraints on the node, e.g. `node.labels.zone==a` (see docs/design/placement.md).
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Placement affinities to other containers and images, e.g. `container==web`, `image~=redis`.
    #[serde(default)]
    pub affinities: Vec<String>,
    /// `spread`, `binpack` or `random`: overrides the cluster's default strategy.
    #[serde(default)]
    pub strategy: Option<String>,
    /// Ports to publish on the node: `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// `container:NAME` shares NAME's network namespace (and so its node).
    #[serde(default)]
    pub network: Option<String>,
    /// Named volumes: `NAME:/path[:ro]`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Capabilities to add to Docker's default set (`NET_ADMIN`, `CAP_SYS_PTRACE`, `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities to drop from it (or `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `seccomp=unconfined|default|<profile JSON>`, `no-new-privileges[=true|false]` (see
    /// [`crate::confinement`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Mount the root file system read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `USER[:GROUP]` (names or numbers) its processes run as, instead of the image's `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An absolute working directory instead of the image's `WorkingDir` (created if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Replaces the image's `Entrypoint` (empty: none), and then its `Cmd` too: only
    /// `command` follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Its checkpoint ticker and node-failure policy (`--checkpoint-every`,
    /// `--checkpoint-versions`, `--on-node-failure`).
    #[serde(default, skip_serializing_if = "crate::ha::HaPolicy::is_default")]
    pub ha: crate::ha::HaPolicy,
}

/// One line of a container's log stream: an entry, or word that older output is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogLine {
    Entry(crate::node::LogEntry),
    /// `{"rotated": N}`: N bytes of the log before the next entry were rotated away (see
    /// [`crate::logs`]).
    Rotated {
        rotated: u64,
    },
}

/// A container as `herd ps` lists it (`GET /v1/containers?summary=true`): what the table
/// shows and no more, so that listing a hundred thousand containers stays fast. Like Docker,
/// the list is a summary; `herd inspect` has everything. The Control node serialises it
/// borrowing from its records, and `herd ps` decodes it borrowing from the response where it
/// can: no copy per container on either side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSummary<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub image: Cow<'a, str>,
    pub args: Cow<'a, [String]>,
    #[serde(borrow)]
    pub node: Cow<'a, str>,
    pub ip: Ipv4Addr,
    pub state: ContainerState,
    /// Set when the node hosting the container is down: the state is its last known one.
    #[serde(default)]
    pub node_down: bool,
    pub created_at: UnixMillis,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    pub ports: Cow<'a, [crate::hostconfig::PortMapping]>,
}

/// A container as `herd ps` and `herd inspect` show it: its placement and its observed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub state: ContainerState,
    /// Set when the node hosting the container is down: the state is its last known one.
    #[serde(default)]
    pub node_down: bool,
    pub desired: Desired,
    pub limits: Limits,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// `USER[:GROUP]` its processes run as; empty for root.
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub working_dir: String,
    /// The image's exposed ports (`80/tcp`): informational, as in Docker.
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub pid: Option<u32>,
    pub created_at: UnixMillis,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub checkpoints: Vec<CheckpointInfo>,
    #[serde(default)]
    pub migrations: Vec<crate::migration::MigrationReport>,
    /// Published ports, shared network namespace, named volumes.
    #[serde(default)]
    pub host: crate::hostconfig::HostConfig,
    /// Its checkpoint ticker and node-failure policy.
    #[serde(default)]
    pub ha: crate::ha::HaPolicy,
    /// The versions its ticker keeps, oldest first.
    #[serde(default)]
    pub versions: Vec<crate::ha::VersionInfo>,
    /// How many times it was rescheduled after a node failure.
    #[serde(default)]
    pub generation: u64,
}

/// `POST /v1/containers/{name}/migrate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateRequest {
    /// The destination; the scheduler picks the best other node when `None`.
    pub to: Option<String>,
    #[serde(default)]
    pub mode: crate::migration::ModeRequest,
    /// Bytes per second the transfer may use; unlimited when `None`.
    #[serde(default)]
    pub bandwidth: Option<u64>,
    /// Never post-copy: `auto` picks pre-copy, or cold where a node tracks no dirty memory;
    /// `postcopy` is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub safe: bool,
}

/// One line of the answer to `POST /v1/containers/{name}/migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrateUpdate {
    /// The migration was planned: where, and how.
    Planned {
        id: String,
        source: String,
        destination: String,
        mode: crate::migration::MigrationMode,
        reason: String,
    },
    Progress(crate::migration::Progress),
    Report(crate::migration::MigrationReport),
    Error(String),
}

/// `POST /v1/containers/{name}/update` (`herd update`): availability settings of a
/// container, changed while it runs; what is `None` stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// Milliseconds between ticker checkpoints; 0 stops the ticker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_versions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_node_failure: Option<crate::ha::OnNodeFailure>,
}

/// `POST /v1/containers/{name}/checkpoint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRequest {
    #[serde(default)]
    pub leave_running: bool,
}

/// `POST /v1/containers/{name}/restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// The checkpoint to restore; the newest when `None`.
    pub checkpoint: Option<String>,
    /// A ticker version to restore instead of a checkpoint (see [`crate::ha`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The node to restore onto; the container's own node when `None`. Another node gets
    /// the checkpoint (and the container's log) over the broker, and the container moves
    /// there with its name and address.
    #[serde(default)]
    pub node: Option<String>,
}

/// Something that happened in the cluster, as `herd events` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the cluster's event log (`herd events --follow` asks for what comes after).
    #[serde(default)]
    pub seq: u64,
    pub time: UnixMillis,
    /// `container`, `node`, `image` or `migration`.
    pub kind: String,
    /// What happened: `create`, `start`, `die`, `stop`, `remove`, `checkpoint`, `restore`, `ready`, `down`, ...
    pub action: String,
    /// The container, node or image it happened to.
    pub name: String,
    pub node: Option<String>,
    pub message: String,
}

/// `GET /v1/stats`: one running container's latest monitoring figures (what `herd stats`
/// shows). Rates cover the sampling interval before `time`; `None` where the node's kernel
/// does not offer a figure or no sample has arrived yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub name: String,
    pub id: String,
    pub node: String,
    pub image: String,
    /// When the sample was taken (ms since the Unix epoch).
    pub time: Option<UnixMillis>,
    /// CPU used, in cores (1.0 = one CPU busy).
    pub cpu_cores: Option<f64>,
    /// CPU used as a percent of the container's CPU limit.
    pub cpu_percent_of_limit: Option<f64>,
    /// Percent of CPU periods in which the container was throttled.
    pub cpu_throttled_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub memory_working_set_bytes: Option<u64>,
    pub memory_rss_bytes: Option<u64>,
    pub memory_cache_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
    pub net_rx_bytes_per_sec: Option<f64>,
    pub net_tx_bytes_per_sec: Option<f64>,
    pub block_read_bytes: Option<u64>,
    pub block_write_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// Share of the last 10 s some task waited for CPU, memory, I/O (PSI), percent.
    pub pressure_cpu: Option<f64>,
    pub pressure_memory: Option<f64>,
    pub pressure_io: Option<f64>,
}

/// `GET /v1/stats/nodes`: one node's latest monitoring figures (what `herd top` and the
/// dashboard show). Percentages are of the whole node (all CPUs); `None` where the node's
/// kernel does not offer a figure or no sample has arrived yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    pub name: String,
    pub state: NodeState,
    /// When the sample was taken (ms since the Unix epoch).
    pub time: Option<UnixMillis>,
    pub cpus: Option<u32>,
    pub cpu_user_percent: Option<f64>,
    pub cpu_system_percent: Option<f64>,
    pub cpu_iowait_percent: Option<f64>,
    pub cpu_steal_percent: Option<f64>,
    pub load1: Option<f64>,
    pub load5: Option<f64>,
    pub load15: Option<f64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// Memory used by the node's containers (sum of their usage).
    pub memory_containers_bytes: Option<u64>,
    pub disk_read_bytes_per_sec: Option<f64>,
    pub disk_write_bytes_per_sec: Option<f64>,
    pub net_rx_bytes_per_sec: Option<f64>,
    pub net_tx_bytes_per_sec: Option<f64>,
    /// Share of the last 10 s some task waited for CPU, memory, I/O (PSI), percent.
    pub pressure_cpu: Option<f64>,
    pub pressure_memory: Option<f64>,
    pub pressure_io: Option<f64>,
    /// Containers running on it, as its sampler last counted.
    pub containers_running: u32,
}
