//! Control node to Compute node messages, carried by NATS request/reply on
//! [`crate::subjects::node_rpc`], and the heartbeats nodes publish.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::migration::{DestinationState, MigrationMode, SourceOutcome};
use crate::state::{CheckpointInfo, LayerRef, Limits};

/// What both nodes of a migration are told about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationTicket {
    pub migration: String,
    pub mode: MigrationMode,
    /// One-time secret of the migration's node-to-node connections.
    pub token: String,
    /// Bytes per second the transfer may use (unlimited when `None`).
    pub bandwidth: Option<u64>,
    pub source: String,
    pub destination: String,
    /// When the container first started, kept across the move.
    #[serde(default)]
    pub started_at: Option<UnixMillis>,
}

/// Everything a node needs to create (or restore) a container, self-contained so the
/// node never has to read cluster state to act on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub id: String,
    pub name: String,
    pub image: String,
    /// Image layers from the bottom one up.
    pub layers: Vec<LayerRef>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    /// `USER[:GROUP]` its processes run as, resolved by the node in the container's root
    /// filesystem (see `herd_node::user`); empty for root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    pub ip: Ipv4Addr,
    pub limits: Limits,
    pub labels: BTreeMap<String, String>,
    /// Ports to publish on the node, a network namespace to join, volumes to mount.
    #[serde(default)]
    pub host: crate::hostconfig::HostConfig,
    /// The generation of its record (see [`crate::state::ContainerRecord::generation`]).
    #[serde(default)]
    pub generation: u64,
    /// Whether its node stops it by itself when cut off from the cluster for longer than
    /// its lease, since the Control node may then start it elsewhere.
    #[serde(default)]
    pub fenced: bool,
}

/// A request to a node agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum NodeRequest {
    /// Fetch missing layers, set up the root filesystem, cgroup and network, and start.
    Create { spec: ContainerSpec },
    /// SIGTERM, then SIGKILL after `timeout_secs`.
    Stop { id: String, timeout_secs: u64 },
    /// Delete the container and everything the node holds for it (but its checkpoints, with
    /// `keep_checkpoints`); `force` kills it first.
    Remove {
        id: String,
        force: bool,
        #[serde(default)]
        keep_checkpoints: bool,
    },
    /// Log entries from byte `offset` of the container's log, at most `max_bytes` of them;
    /// with `tail`, from where the last `tail` complete entries start instead.
    Logs {
        id: String,
        offset: u64,
        max_bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<u64>,
    },
    /// Start a stopped container again with its spec and its writable layer, as `docker start`.
    Start { id: String },
    /// Checkpoint with CRIU into the node's checkpoint store.
    Checkpoint { id: String, checkpoint_id: String, leave_running: bool },
    /// Restore a container from one of the node's checkpoints. With `log_object` (a container
    /// moving from another node), a container with no log on this node yet starts with that
    /// log from the checkpoint store.
    Restore {
        spec: ContainerSpec,
        checkpoint_id: String,
        #[serde(default)]
        log_object: Option<String>,
    },
    /// Put one of the node's checkpoints, as a checkpoint archive, into the checkpoint store
    /// under the name `object`.
    ExportCheckpoint { id: String, checkpoint_id: String, object: String },
    /// Put the container's log into the checkpoint store under the name `object`.
    ExportLog { id: String, object: String },
    /// Fetch the checkpoint archive `object` from the checkpoint store, check that it is a
    /// whole checkpoint of this container on its image layers, and keep it as checkpoint
    /// `checkpoint_id`.
    ImportCheckpoint { spec: ContainerSpec, checkpoint_id: String, object: String },
    /// Delete one of the node's checkpoints.
    DropCheckpoint { id: String, checkpoint_id: String },
    /// A ticker checkpoint: checkpoint the running container, let it run on, and store the
    /// checkpoint as `version` in the version store, holding only the blocks that the
    /// versions of `builds_on` do not (a base when empty). See [`crate::ha`].
    SaveVersion { id: String, version: u64, builds_on: Vec<u64> },
    /// Restore the container of `spec` on this node from `version` in the version store.
    RestoreVersion { spec: ContainerSpec, version: u64 },
    /// Whether the node fences the container when cut off (its policy changed, `herd update`).
    SetFenced { id: String, fenced: bool },
    /// Stop every container (when `stop_containers`), for `herd down`.
    Shutdown { stop_containers: bool, timeout_secs: u64 },
    /// To the destination of a migration: check compatibility, fetch layers, set up the
    /// network (locked) and open the receiving side, while the container keeps running.
    MigratePrepare { spec: ContainerSpec, ticket: MigrationTicket },
    /// To the source: checkpoint the container and send it to `destination`; answers once the
    /// destination runs it (or the migration failed).
    MigrateSend { id: String, ticket: MigrationTicket, destination: std::net::SocketAddr },
    /// To the destination: what it knows of a migration.
    MigrationStatus { id: String, migration: String },
    /// The Control node's decision on a migration, to either node. Source: let go of the
    /// container (`commit`) or resume it. Destination: forget the migration (`commit`) or make
    /// sure the container does not run there and drop what was received.
    MigrateResolve { id: String, migration: String, commit: bool },
    /// Get ready to run `request` in the running container: open a one-time listener for the
    /// session's stream (authenticated with `token`); the process starts when it connects.
    /// Until the session ends the container is not checkpointed or migrated.
    ExecPrepare { id: String, session: String, token: String, request: crate::exec::ExecRequest },
}

/// The successful outcome of a [`NodeRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeReply {
    Done,
    Started {
        pid: u32,
        started_at: UnixMillis,
    },
    Stopped {
        exit_code: Option<i32>,
    },
    Logs(LogChunk),
    Checkpointed(CheckpointInfo),
    VersionSaved(crate::ha::VersionInfo),
    /// An object was written to the checkpoint store.
    Exported {
        bytes: u64,
    },
    /// The destination is ready to receive at `address`.
    MigrationPrepared {
        address: std::net::SocketAddr,
    },
    MigrationSent(SourceOutcome),
    MigrationState(DestinationState),
    /// The node waits for an exec session's stream at `address`.
    ExecReady {
        address: std::net::SocketAddr,
    },
}

/// A failed [`NodeRequest`]: a message for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct NodeError {
    pub message: String,
}

/// What a node answers to a [`NodeRequest`].
pub type NodeResult = Result<NodeReply, NodeError>;

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line a container wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When the node received it.
    pub time: UnixMillis,
    pub stream: LogStream,
    /// The line without its trailing newline (lossily decoded as UTF-8).
    pub line: String,
}

/// A piece of a container's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub entries: Vec<LogEntry>,
    /// Offset to ask for next. Offsets count every byte the log ever held, so they stay
    /// meaningful when old files are rotated away.
    pub next_offset: u64,
    /// Bytes between the offset asked for and the oldest the node still keeps: rotated away.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// The container no longer runs on this node: no more lines will come.
    pub finished: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Live figures a node sends with every heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeUsage {
    /// CPU in use across the node, in thousandths of a CPU.
    pub cpu_milli: u64,
    pub memory_used_bytes: u64,
    pub containers_running: u32,
    pub load1: f64,
}

/// Published by each node every second on [`crate::subjects::heartbeat`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    pub seq: u64,
    pub time: UnixMillis,
    pub usage: NodeUsage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let req = NodeRequest::Stop { id: "abc".into(), timeout_secs: 3 };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"op":"stop","id":"abc","timeout_secs":3}"#);
        assert_eq!(serde_json::from_str::<NodeRequest>(&json).unwrap(), req);
        let res: NodeResult = Err(NodeError { message: "no such container".into() });
        let json = serde_json::to_string(&res).unwrap();
        assert_eq!(serde_json::from_str::<NodeResult>(&json).unwrap(), res);
    }
}
