//! `herd image pull`: the request the CLI sends and the progress the Control node streams back
//! (`POST /v1/pulls`, newline-delimited [`PullUpdate`]s).

use serde::{Deserialize, Serialize};

use crate::state::ImageRecord;

/// `POST /v1/pulls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// What to pull, as Docker spells it: `busybox`, `host:port/repo:tag`, `repo@sha256:...`.
    pub reference: String,
    /// The local image name; by default the reference's repository and tag as Docker shows
    /// them (`busybox:latest`, `127.0.0.1:5000/app:v1`).
    #[serde(default)]
    pub name: Option<String>,
    /// Registry credentials for this pull only; the Control node never stores them.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Talk plain HTTP to this registry (loopback registries always use plain HTTP).
    #[serde(default)]
    pub insecure: bool,
}

/// One layer of the image being pulled, as resolved from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullLayer {
    pub digest: String,
    pub size: u64,
    /// The layer store already holds it: it is not transferred.
    pub present: bool,
}

/// What a finished pull did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReport {
    pub image: ImageRecord,
    /// Layers downloaded from the registry by this pull, and their bytes.
    pub layers_fetched: usize,
    pub bytes_fetched: u64,
    /// Layers the layer store already had.
    pub layers_present: usize,
    pub took_ms: u64,
}

/// One line of the answer to `POST /v1/pulls`. The first is [`PullUpdate::Resolved`] (a pull
/// that fails before it, for a bad reference, an unreachable registry, an unknown tag or a
/// missing platform, is an ordinary error answer); the last is a report or an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullUpdate {
    /// The manifest for this node architecture was found and verified.
    Resolved {
        /// The canonical reference (`docker.io/library/busybox:latest`).
        reference: String,
        /// The digest of the image manifest pulled (for an index: of the chosen entry).
        manifest_digest: String,
        /// `os/architecture` of the image.
        platform: String,
        layers: Vec<PullLayer>,
    },
    /// Bytes of one layer received so far.
    Progress {
        digest: String,
        bytes: u64,
        size: u64,
    },
    /// A layer arrived whole, its digest verified, and is in the layer store.
    Stored {
        digest: String,
        size: u64,
    },
    Report(Box<PullReport>),
    Error(String),
}
