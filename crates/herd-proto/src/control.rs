//! The Control replicas' lease (bucket [`crate::subjects::CONTROL_BUCKET`]) and reports
//! ([`crate::subjects::REPLICAS_BUCKET`]), and `herd control status`.
//!
//! One replica leads at a time: the one whose name is in the lease at
//! [`crate::subjects::LEASE_KEY`]. It renews the lease by writing it again, guarded by the
//! revision it wrote last; another replica that sees the revision stand still for the lease's
//! time to live takes it over by the same guarded write, with the next term. Each replica
//! also writes a report of itself under [`crate::subjects::replica_key`] every second.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// The header of a 503 from a Control replica that does not lead: the leader's API address
/// (empty while none leads). A client moves to that address.
pub const LEADER_HEADER: &str = "Herd-Leader";

/// The value at [`crate::subjects::LEASE_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderLease {
    /// The replica that leads.
    pub replica: String,
    /// Where its API is reached.
    pub api: String,
    /// Counts the leaders: each take-over writes the term after the one it replaces. Node
    /// requests carry it, and a node refuses a term older than the newest it has seen.
    pub term: u64,
    /// When this term began.
    pub since: UnixMillis,
    /// Let go by a leader that stopped cleanly: any replica may take it at once.
    #[serde(default)]
    pub released: bool,
}

/// What a replica does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
}

/// A replica's report of itself, at [`crate::subjects::replica_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub name: String,
    pub api: String,
    pub role: Role,
    /// The term it leads in, or the newest it has seen.
    pub term: u64,
    /// When it started.
    pub started: UnixMillis,
    /// When it wrote this report.
    pub at: UnixMillis,
    /// How long ago it last saw the lease renewed (a follower's lag behind the leader; 0 for
    /// the leader).
    pub lease_seen_ms_ago: u64,
    /// The process's resident memory.
    pub rss_bytes: u64,
}

/// One server holding a replica of the cluster state's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPeer {
    pub name: String,
    pub leader: bool,
    /// Whether it has every message the leader has.
    pub current: bool,
    /// Messages it is behind.
    pub lag: u64,
    pub offline: bool,
}

/// `GET /v1/control/status`: answered by whichever replica the request reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// The replica that answered.
    pub answered_by: String,
    /// The lease: who leads, since when, in which term (`None`: nobody has led yet, or the
    /// Control node runs alone without an election).
    pub lease: Option<LeaderLease>,
    /// Every replica's newest report, sorted by name.
    pub replicas: Vec<ReplicaReport>,
    /// The broker server the answering replica is connected to.
    pub broker_server: String,
    /// The servers holding the container records' stream, its leader first.
    pub state_peers: Vec<StreamPeer>,
}
