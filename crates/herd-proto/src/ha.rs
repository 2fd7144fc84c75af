//! Container high availability: checkpoint tickers, the versions they keep off the node, and
//! what happens to a container when its node fails (`herd run --checkpoint-every
//! --checkpoint-versions --on-node-failure`). See docs/design/ha.md.
//!
//! A *version* is a checkpoint taken by a ticker while the container runs on, stored in the
//! broker's version store (`herd-versions`) as two objects named after the container id:
//! `<id>.v<N>.pack`, the 4 KiB blocks of its files that no version it builds on holds, and
//! `<id>.v<N>.manifest`, a [`VersionManifest`] (written last: a version exists once its
//! manifest does). Every `versions` versions is a *base*, which builds on nothing; the ones in
//! between build on their base and the versions since it. This module holds the formats and
//! the pure decisions (when a ticker is due, what a new version builds on, what retention
//! keeps); the node and the Control node do the I/O.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::checkpoint::CheckpointManifest;

/// What the Control node does with a container whose node failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNodeFailure {
    /// Leave it exited, as Docker does (the default without a ticker).
    #[default]
    None,
    /// Restore it on a healthy node from its newest version that restores, older ones after
    /// it, and start it fresh from its image when none does (the default with a ticker).
    Restore,
    /// Start it fresh from its image on a healthy node.
    Restart,
}

impl OnNodeFailure {
    pub fn parse(text: &str) -> Result<OnNodeFailure, String> {
        match text {
            "none" => Ok(OnNodeFailure::None),
            "restore" => Ok(OnNodeFailure::Restore),
            "restart" => Ok(OnNodeFailure::Restart),
            other => Err(format!("unknown --on-node-failure {other:?}: use restore, restart or none")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnNodeFailure::None => "none",
            OnNodeFailure::Restore => "restore",
            OnNodeFailure::Restart => "restart",
        }
    }

    /// Whether another copy of the container may be started elsewhere when its node is lost,
    /// so that its node must stop it by itself when cut off (see docs/design/ha.md, fencing).
    pub fn fenced(self) -> bool {
        self != OnNodeFailure::None
    }
}

/// How many versions a ticker keeps by default (`--checkpoint-versions`).
pub const DEFAULT_VERSIONS: u32 = 5;

/// A container's availability settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaPolicy {
    /// Milliseconds between ticker checkpoints; `None`: no ticker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every_ms: Option<u64>,
    /// The version group: how many versions are kept, and how often a base is taken.
    #[serde(default = "default_versions")]
    pub versions: u32,
    #[serde(default)]
    pub on_node_failure: OnNodeFailure,
}

fn default_versions() -> u32 {
    DEFAULT_VERSIONS
}

impl Default for HaPolicy {
    fn default() -> Self {
        HaPolicy { checkpoint_every_ms: None, versions: DEFAULT_VERSIONS, on_node_failure: OnNodeFailure::None }
    }
}

impl HaPolicy {
    pub fn is_default(&self) -> bool {
        *self == HaPolicy::default()
    }
}

impl HaPolicy {
    /// This policy with `herd update`'s changes: `every_ms` 0 stops the ticker.
    pub fn updated(
        mut self,
        every_ms: Option<u64>,
        versions: Option<u32>,
        on_failure: Option<OnNodeFailure>,
    ) -> HaPolicy {
        if let Some(every) = every_ms {
            self.checkpoint_every_ms = (every > 0).then_some(every);
        }
        if let Some(v) = versions {
            self.versions = v;
        }
        if let Some(p) = on_failure {
            self.on_node_failure = p;
        }
        self
    }
}

/// The shortest ticker interval accepted.
pub const MIN_CHECKPOINT_EVERY_MS: u64 = 1_000;

/// One stored version of a container, as its record lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    /// The base it builds on (itself for a base).
    pub base: u64,
    /// The node it was taken on.
    pub node: String,
    pub created_at: UnixMillis,
    /// How long the container was frozen for it, as the node measured it.
    pub pause_ms: u64,
    /// Bytes of the checkpoint's files, and of what this version stored that its base and the
    /// versions between did not hold (its pack and its manifest).
    pub full_bytes: u64,
    pub stored_bytes: u64,
    /// The version whose memory images this one builds on, where the node tracked the pages
    /// written since it: the dump held only those pages (an incremental checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_parent: Option<u64>,
}

/// The object names of version `version` of container `id`.
pub fn manifest_object(id: &str, version: u64) -> String {
    format!("{id}.v{version}.manifest")
}

pub fn pack_object(id: &str, version: u64) -> String {
    format!("{id}.v{version}.pack")
}

/// [`VersionManifest::format`].
pub const VERSION_FORMAT: &str = "herd-version/1";
/// The size of a block; the last block of a file may be shorter.
pub const BLOCK: usize = 4096;
/// A block id: the first 16 bytes of the SHA-256 of its content.
pub type BlockId = [u8; 16];
/// Bytes of one entry of [`VersionManifest::pack`]: a block id and its length (u32, little
/// endian).
pub const PACK_ENTRY: usize = 20;

/// The manifest of a version (object `<id>.v<N>.manifest`, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionManifest {
    /// [`VERSION_FORMAT`].
    pub format: String,
    pub version: u64,
    pub base: u64,
    /// The checkpoint it holds: the container, and every file's size and SHA-256, checked
    /// once the files are put back together.
    pub checkpoint: CheckpointManifest,
    /// For each file of `checkpoint.files`, in order: its block ids, 16 bytes each, base64.
    pub blocks: Vec<String>,
    /// The versions whose packs hold its blocks, oldest first (itself last when it stored any).
    pub packs: Vec<u64>,
    /// This version's pack, in order: [`PACK_ENTRY`] bytes per block, base64.
    pub pack: String,
    pub pause_ms: u64,
    /// The version whose CRIU images are this one's parent images (an incremental dump: its
    /// pages are those written since, the others are marked as in the parent). A restore
    /// puts the parent's CRIU files, and theirs in turn, under `criu/parent/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_parent: Option<u64>,
}

/// What a new version builds on: `None` for a base, else the base and the versions since it
/// (all of them, newest last), from the versions the container has, oldest first.
pub fn builds_on(existing: &[VersionInfo], group: u32) -> Option<Vec<u64>> {
    let last = existing.last()?;
    let chain: Vec<u64> = existing.iter().filter(|v| v.base == last.base).map(|v| v.version).collect();
    // A base every `group` versions, and after a gap in the chain (a version lost).
    let contiguous = chain.first() == Some(&last.base) && chain.windows(2).all(|w| w[1] == w[0] + 1);
    (contiguous && (chain.len() as u32) < group.max(1)).then_some(chain)
}

/// Which versions retention keeps: the newest `group`, and the versions their packs come
/// from (a delta needs its base and the versions since it).
pub fn retained(existing: &[VersionInfo], group: u32) -> BTreeSet<u64> {
    let newest: Vec<&VersionInfo> = existing.iter().rev().take(group.max(1) as usize).collect();
    let mut keep = BTreeSet::new();
    for v in newest {
        keep.insert(v.version);
        keep.extend(existing.iter().filter(|o| o.base == v.base && o.version <= v.version).map(|o| o.version));
    }
    keep
}

/// When the next ticker checkpoint of a container is due, in milliseconds since the epoch.
/// Tickers are staggered: a container's first version comes `offset(name)` into its interval
/// after it was created, so that containers started together do not all pause at once.
pub fn next_due(name: &str, created_at: UnixMillis, every_ms: u64, last: Option<UnixMillis>) -> UnixMillis {
    match last {
        Some(at) => at + every_ms,
        None => created_at + stagger(name, every_ms),
    }
}

/// A stable offset within `[0, every_ms)` for a container name (FNV-1a).
pub fn stagger(name: &str, every_ms: u64) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h % every_ms.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: u64, base: u64) -> VersionInfo {
        VersionInfo {
            version,
            base,
            node: "n1".into(),
            created_at: 0,
            pause_ms: 0,
            full_bytes: 0,
            stored_bytes: 0,
            memory_parent: None,
        }
    }

    #[test]
    fn a_base_every_group_and_deltas_between() {
        assert_eq!(builds_on(&[], 3), None);
        assert_eq!(builds_on(&[v(1, 1)], 3), Some(vec![1]));
        assert_eq!(builds_on(&[v(1, 1), v(2, 1)], 3), Some(vec![1, 2]));
        assert_eq!(builds_on(&[v(1, 1), v(2, 1), v(3, 1)], 3), None);
        assert_eq!(builds_on(&[v(1, 1), v(2, 1), v(3, 1), v(4, 4)], 3), Some(vec![4]));
        // A group of one: every version is a base.
        assert_eq!(builds_on(&[v(1, 1)], 1), None);
        // A version of the chain is missing: the next one is a base.
        assert_eq!(builds_on(&[v(1, 1), v(3, 1)], 5), None);
    }

    #[test]
    fn retention_keeps_the_newest_and_what_they_need() {
        let all = [v(1, 1), v(2, 1), v(3, 1), v(4, 4), v(5, 4)];
        assert_eq!(retained(&all, 2), BTreeSet::from([4, 5]));
        // Version 3 needs 1 and 2.
        assert_eq!(retained(&all, 3), BTreeSet::from([1, 2, 3, 4, 5]));
        assert_eq!(retained(&all[..1], 5), BTreeSet::from([1]));
    }

    #[test]
    fn tickers_are_staggered_within_their_interval() {
        let offsets: BTreeSet<u64> = (0..50).map(|i| stagger(&format!("c{i}"), 30_000)).collect();
        assert!(offsets.iter().all(|o| *o < 30_000));
        assert!(offsets.len() > 45, "{offsets:?}");
        assert_eq!(next_due("a", 1000, 30_000, Some(5000)), 35_000);
        assert_eq!(next_due("a", 1000, 30_000, None), 1000 + stagger("a", 30_000));
    }

    #[test]
    fn failure_policies_parse() {
        for p in [OnNodeFailure::None, OnNodeFailure::Restore, OnNodeFailure::Restart] {
            assert_eq!(OnNodeFailure::parse(p.as_str()), Ok(p));
        }
        assert!(OnNodeFailure::parse("reboot").unwrap_err().contains("restore, restart or none"));
        assert!(!OnNodeFailure::None.fenced() && OnNodeFailure::Restore.fenced());
    }
}
