//! The cluster state: records kept in JetStream key-value buckets (see [`crate::subjects`]).
//!
//! Each bucket has one writer. The Control node writes images, containers (the desired
//! state) and the operator's [`NodeSettings`]; each node writes its own [`NodeRecord`] and
//! the [`ContainerStatus`] of the containers it runs (the observed state). A restarted
//! component reads them back.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// An amount of CPU and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Thousandths of a CPU.
    pub cpus_milli: u64,
    pub memory_bytes: u64,
}

/// What CRIU can do on a node, probed at agent start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriuFeatures {
    /// userfaultfd works: post-copy (lazy pages) migration is possible.
    pub lazy_pages: bool,
    /// The kernel tells which pages a process wrote: pre-copy migration is possible.
    pub dirty_tracking: bool,
    /// How it tells, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_tracking_by: Option<DirtyTracking>,
}

/// How a node's kernel tells CRIU which pages a process wrote since the last dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirtyTracking {
    /// The soft-dirty bit of each page (`CONFIG_MEM_SOFT_DIRTY`).
    SoftDirty,
    /// userfaultfd write-protection in asynchronous mode (Linux 6.7), through Herd's CRIU
    /// patch: the trackers live in the node agent between dumps.
    Userfaultfd,
}

/// Facts about a node that placement and migration compatibility checks use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub arch: String,
    pub os: String,
    pub kernel: String,
    pub runc_version: String,
    /// `None` when CRIU is missing: the node runs containers but cannot checkpoint them.
    pub criu_version: Option<String>,
    pub criu_features: CriuFeatures,
    /// Whether the node's containers' cgroups are managed through cgroup v1 or v2.
    pub cgroup_version: u8,
    /// CPU feature flags (`/proc/cpuinfo`), which a migrated process may rely on.
    #[serde(default)]
    pub cpu_flags: Vec<String>,
}

/// A Compute node, as it registered itself. Key: node name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// The address other nodes and hosts route container traffic through.
    pub address: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    pub facts: NodeFacts,
    pub agent_version: String,
    pub registered_at: UnixMillis,
}

/// Whether placement may put new containers on a node (`herd nodes drain|activate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Active,
    /// No new placements; its running containers are migrated away.
    Drain,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Drain => "drain",
        }
    }
}

/// What the operator decided about a node. Key: node name. Written only by the Control node,
/// so the node's own [`NodeRecord`] keeps its single writer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettings {
    /// Labels set (`Some`) or hidden (`None`, `herd nodes label NODE KEY-`) over the node's own.
    #[serde(default)]
    pub labels: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub availability: Availability,
}

impl NodeSettings {
    /// The node's own labels with the operator's set over them and the removed ones taken out.
    pub fn merge_labels(&self, own: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = own.clone();
        for (k, v) in &self.labels {
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        out
    }
}

/// How an image layer blob is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

/// One layer of an image: a (possibly compressed) tar blob named by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// `sha256:<hex>` of the blob as stored (compressed bytes when compressed).
    pub digest: String,
    pub size: u64,
    pub compression: Compression,
}

/// The parts of an OCI image configuration that decide how a container starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub architecture: String,
    /// The ports the image says it listens on (`ExposedPorts`: `80/tcp`, `53/udp`), sorted:
    /// informational, as in Docker (shown by `herd inspect`, published only by `-p`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
}

/// An imported image. Key: [`crate::names::image_key`] of its normalised name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Normalised `name:tag`.
    pub name: String,
    /// `sha256:<hex>` identifying the image content (its configuration and layers).
    pub id: String,
    /// Layers from the bottom one up.
    pub layers: Vec<LayerRef>,
    pub config: ImageConfig,
    /// What was imported: `rootfs directory`, `rootfs tarball`, `oci-layout` or `docker save`;
    /// `registry` for a pulled image.
    pub source: String,
    pub created_at: UnixMillis,
    /// Where a pulled image came from (`None` for imported ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryOrigin>,
}

/// The registry reference and manifest a pulled image was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryOrigin {
    /// Canonical reference as pulled: `docker.io/library/busybox:latest`, `host:port/repo@sha256:...`.
    pub reference: String,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
}

impl ImageRecord {
    /// Total bytes of the stored layer blobs.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// Resource limits of a container; `None` means unlimited (for its log: its node's limits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub cpus_milli: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// How much of its output its node keeps (`herd run --log-opt`).
    #[serde(default, skip_serializing_if = "crate::logs::LogOptions::is_empty")]
    pub log: crate::logs::LogOptions,
}

/// What the Control node wants a container to be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
}

/// A saved checkpoint of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub id: String,
    pub node: String,
    pub created_at: UnixMillis,
    /// Whether the container kept running after the checkpoint.
    pub leave_running: bool,
    /// Bytes of CRIU images and writable-layer snapshot.
    pub size_bytes: u64,
}

/// A container as the Control node placed it. Key: container name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 32 hex digits; the runc container id and the key of its [`ContainerStatus`].
    pub id: String,
    pub name: String,
    /// Normalised image name, and the image id it was created from.
    pub image: String,
    pub image_id: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub limits: Limits,
    /// The full argv (image entrypoint and command, or what the user gave).
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    /// Who its processes run as: `USER[:GROUP]` (names or numbers, resolved by its node in the
    /// container's own `/etc/passwd` and `/etc/group`); empty for root. The image's `User`
    /// unless `herd run --user` gave one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The image's exposed ports (see [`ImageConfig::exposed_ports`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: UnixMillis,
    pub desired: Desired,
    #[serde(default)]
    pub checkpoints: Vec<CheckpointInfo>,
    /// Its migrations, newest last (the last [`MIGRATION_HISTORY`]).
    #[serde(default)]
    pub migrations: Vec<crate::migration::MigrationReport>,
    /// Published ports, shared network namespace, named volumes.
    #[serde(default)]
    pub host: crate::hostconfig::HostConfig,
    /// The placement rules it was run with, applied again when it moves.
    #[serde(default)]
    pub placement: PlacementRules,
    /// Its checkpoint ticker and node-failure policy.
    #[serde(default, skip_serializing_if = "crate::ha::HaPolicy::is_default")]
    pub ha: crate::ha::HaPolicy,
    /// The versions its ticker stored, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<crate::ha::VersionInfo>,
    /// Counts the times it was rescheduled after a node failure: a node holding a copy of an
    /// older generation holds a stale copy (see docs/design/ha.md, fencing).
    #[serde(default)]
    pub generation: u64,
    /// The failed node it is being rescheduled from, until it runs again: a Control node
    /// that starts finishes what its predecessor left half done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescheduled_from: Option<String>,
}

/// How a container asked to be placed (`herd run --constraint/--affinity`), kept with it so
/// that a migration or a restore on another node follows the same rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affinities: Vec<String>,
}

/// How many migration reports a container keeps.
pub const MIGRATION_HISTORY: usize = 20;

/// Lifecycle states of a container on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Placed, being set up on its node.
    Created,
    Running,
    /// The process ended on its own or was stopped.
    Exited,
    /// Saved by a checkpoint and no longer running; `herd restore` continues it.
    Checkpointed,
    /// Setting up or starting failed; `error` says why.
    Failed,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Checkpointed => "checkpointed",
            ContainerState::Failed => "failed",
        }
    }
}

/// A container as its node observes it. Key: container id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub node: String,
    pub state: ContainerState,
    /// Host PID of the container's first process while it runs.
    pub pid: Option<u32>,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub updated_at: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_lowercase() {
        assert_eq!(serde_json::to_string(&ContainerState::Checkpointed).unwrap(), "\"checkpointed\"");
        assert_eq!(serde_json::to_string(&Compression::Gzip).unwrap(), "\"gzip\"");
    }

    #[test]
    fn operator_labels_override_and_hide_the_nodes_own() {
        let own = BTreeMap::from([("zone".to_string(), "a".to_string()), ("disk".to_string(), "hdd".to_string())]);
        let settings = NodeSettings {
            labels: BTreeMap::from([
                ("zone".to_string(), Some("b".to_string())),
                ("disk".to_string(), None),
                ("gpu".to_string(), Some("yes".to_string())),
            ]),
            availability: Availability::Drain,
        };
        let merged = settings.merge_labels(&own);
        assert_eq!(
            merged,
            BTreeMap::from([("gpu".to_string(), "yes".to_string()), ("zone".to_string(), "b".to_string())])
        );
        assert_eq!(serde_json::to_string(&settings.availability).unwrap(), "\"drain\"");
    }
}
