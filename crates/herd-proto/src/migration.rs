//! Live migration: modes, the durable record of a migration's progress, and its report.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// How a container's memory moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationMode {
    /// Stop, copy everything, restore.
    Cold,
    /// Restore first, then pages follow on demand and in the background (userfaultfd).
    Postcopy,
    /// Copy memory while the container runs, repeat for what changed, then a short stop-and-copy
    /// (needs the kernel's dirty-page tracking, soft-dirty).
    Precopy,
}

impl MigrationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationMode::Cold => "cold",
            MigrationMode::Postcopy => "postcopy",
            MigrationMode::Precopy => "precopy",
        }
    }
}

/// What `herd migrate --mode` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeRequest {
    /// The best mode both nodes support.
    #[default]
    Auto,
    Cold,
    Postcopy,
    Precopy,
}

impl std::str::FromStr for ModeRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ModeRequest::Auto),
            "cold" => Ok(ModeRequest::Cold),
            "postcopy" | "post-copy" => Ok(ModeRequest::Postcopy),
            "precopy" | "pre-copy" => Ok(ModeRequest::Precopy),
            _ => Err(format!("invalid migration mode {s:?}: use auto, cold, postcopy or precopy")),
        }
    }
}

/// Where a migration is. Recorded durably by the Control node before each step, so a
/// migration interrupted by a crash is resolved when the Control node comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPhase {
    /// The destination is checking compatibility, fetching layers and opening its side.
    Preparing,
    /// The source is checkpointing and sending; the destination restores when all has arrived.
    Transferring,
    /// The destination runs the container; the source is cleaning up.
    Switching,
    Done,
    /// Undoing: the destination drops its copy, the source resumes the container.
    Aborting,
    Aborted,
}

impl MigrationPhase {
    pub fn is_final(self) -> bool {
        matches!(self, MigrationPhase::Done | MigrationPhase::Aborted)
    }
}

/// Time spent in one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: String,
    pub ms: u64,
    /// Bytes the step moved, where that tells something (each pre-copy round's dirty pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// How a migration ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    Migrated,
    /// The container kept running on the source.
    Aborted {
        reason: String,
    },
}

/// What `herd migrate` prints and `herd inspect` keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationReport {
    pub id: String,
    pub container: String,
    pub mode: MigrationMode,
    /// Why this mode (for `--mode auto`, what the nodes support).
    pub mode_reason: String,
    pub source: String,
    pub destination: String,
    pub started_at: UnixMillis,
    pub finished_at: UnixMillis,
    /// From the moment the container stopped running on the source to the moment it ran on
    /// the destination.
    pub downtime_ms: u64,
    pub total_ms: u64,
    /// Bytes of memory pages moved.
    pub memory_bytes: u64,
    /// Bytes of the writable layer, other CRIU images and log moved.
    pub fs_bytes: u64,
    /// Bytes the named volumes that moved with it took on the wire (every pass).
    #[serde(default)]
    pub volume_bytes: u64,
    /// Bytes of file content in those volumes when it stopped on the source.
    #[serde(default)]
    pub volume_size: u64,
    pub phases: Vec<PhaseTime>,
    /// Whether the migration's control connection (CRIU's images, the writable layer,
    /// volumes, the log) was TLS between the nodes.
    #[serde(default)]
    pub encrypted: bool,
    /// Whether its memory pages were encrypted too (CRIU's own TLS, `herd node
    /// --encrypt-pages`).
    #[serde(default)]
    pub pages_encrypted: bool,
    /// Why the figures are missing: the source never reported them (it went down, or its
    /// answer was lost, after the destination had run the container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmeasured: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A migration as the Control node records it. Key: migration id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub id: String,
    pub container: String,
    pub container_id: String,
    pub source: String,
    pub destination: String,
    pub mode: MigrationMode,
    pub mode_reason: String,
    pub phase: MigrationPhase,
    pub started_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub error: Option<String>,
}

/// Progress the source reports while it sends, relayed to `herd migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: String,
    pub bytes: u64,
    /// Expected total bytes, when known.
    pub total: Option<u64>,
}

/// What the source node tells the Control node when its side is over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum SourceOutcome {
    /// The destination runs the container and the source has let go of it.
    Committed(TransferReport),
    /// The migration failed before the destination ran the container; it runs on the source again.
    Resumed { reason: String },
    /// The source cannot tell whether the destination runs the container (the connection broke
    /// after the restore began): the container stays frozen here until the Control node asks
    /// the destination and tells the source to commit or resume.
    InDoubt { reason: String },
}

/// Timings and sizes measured by the two nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReport {
    /// When the container stopped running on the source.
    pub frozen_at: UnixMillis,
    /// When it ran on the destination.
    pub running_at: UnixMillis,
    /// When the last byte (for post-copy: the last page) had moved.
    pub finished_at: UnixMillis,
    pub memory_bytes: u64,
    pub fs_bytes: u64,
    /// Bytes the named volumes' passes moved (content and framing).
    #[serde(default)]
    pub volume_bytes: u64,
    /// Bytes of file content in the named volumes that moved, as they were at the freeze.
    #[serde(default)]
    pub volume_size: u64,
    pub phases: Vec<PhaseTime>,
    /// Whether the control connection was TLS.
    #[serde(default)]
    pub encrypted: bool,
    /// Whether the memory pages were encrypted (CRIU's TLS).
    #[serde(default)]
    pub pages_encrypted: bool,
    /// Why the figures are missing: the source never reported them (it went down, or its
    /// answer was lost, after the destination had run the container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmeasured: Option<String>,
}

/// What the destination knows of a migration, for resolving one whose source is in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationState {
    /// Nothing of it here (never prepared, or cleaned up).
    Unknown,
    Prepared,
    Restoring,
    Running,
    Aborted,
    /// Asked of the source: it was told to send and has not settled the migration (it sends,
    /// or waits in doubt).
    Sending,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("postcopy".parse::<ModeRequest>(), Ok(ModeRequest::Postcopy));
        assert_eq!("pre-copy".parse::<ModeRequest>(), Ok(ModeRequest::Precopy));
        assert!("fast".parse::<ModeRequest>().unwrap_err().contains("auto, cold, postcopy or precopy"));
        assert_eq!(serde_json::to_string(&MigrationMode::Postcopy).unwrap(), "\"postcopy\"");
    }

    #[test]
    fn reports_serialize_flat() {
        let r = MigrationReport {
            id: "m1".into(),
            container: "web".into(),
            mode: MigrationMode::Cold,
            mode_reason: "asked".into(),
            source: "n1".into(),
            destination: "n2".into(),
            started_at: 1,
            finished_at: 2,
            downtime_ms: 3,
            total_ms: 4,
            memory_bytes: 5,
            fs_bytes: 6,
            volume_bytes: 7,
            volume_size: 8,
            phases: vec![],
            encrypted: true,
            pages_encrypted: false,
            unmeasured: None,
            outcome: Outcome::Aborted { reason: "x".into() },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["outcome"], "aborted");
        assert_eq!(v["reason"], "x");
        assert_eq!(serde_json::from_value::<MigrationReport>(v).unwrap(), r);
    }
}
