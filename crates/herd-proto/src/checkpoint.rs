//! What a checkpoint is made of, on a node's disk and in an exported image directory.
//!
//! A checkpoint directory holds the CRIU images ([`CRIU_DIR`]), the container's writable layer
//! packed as an uncompressed OCI layer ([`ROOTFS_DIFF`]) and a manifest ([`MANIFEST_FILE`], a
//! [`CheckpointManifest`]) naming the container it was taken from and the size and digest of
//! every other file. The same directory is what `herd checkpoint --image-dir DIR` writes and
//! `herd restore --image-dir DIR` reads; between machines it travels as a tar stream with the
//! manifest first (see `herd_image::pack_checkpoint`).
//!
//! A checkpoint that leaves the cluster (`--image-dir`) also carries a signature
//! ([`SIGNATURE_FILE`], a [`CheckpointSignature`]): the Control node's MAC of the manifest's
//! bytes under a key only it holds. The manifest lists the digest of every other file, so the
//! signature covers the whole checkpoint; a restore from outside the cluster needs it, as
//! CRIU restores whatever processes, credentials and mounts its images describe.

use serde::{Deserialize, Serialize};

use crate::node::ContainerSpec;
use crate::state::CheckpointInfo;

/// The format this version writes and reads.
pub const FORMAT: &str = "herd-checkpoint/1";
/// The manifest's file name inside a checkpoint directory.
pub const MANIFEST_FILE: &str = "checkpoint.json";
/// The directory of CRIU images inside a checkpoint directory.
pub const CRIU_DIR: &str = "criu";
/// The writable-layer snapshot inside a checkpoint directory.
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";

/// The signature of an exported checkpoint's manifest, next to it in the directory and
/// right after it in an archive.
pub const SIGNATURE_FILE: &str = "checkpoint.sig";
/// [`CheckpointSignature::algorithm`]: HMAC-SHA256 over [`SIGNATURE_CONTEXT`] then the
/// manifest's bytes.
pub const SIGNATURE_ALGORITHM: &str = "hmac-sha256";
/// What the MAC covers before the manifest, so that it cannot stand for anything else.
pub const SIGNATURE_CONTEXT: &[u8] = b"herd-checkpoint/1 manifest\n";

/// The content of [`SIGNATURE_FILE`] (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSignature {
    /// [`SIGNATURE_ALGORITHM`].
    pub algorithm: String,
    /// Which key signed (a digest of it, not the key): tells a checkpoint of another cluster
    /// from a modified one.
    pub key_id: String,
    /// The MAC, hex.
    pub mac: String,
}

/// The description of a checkpoint directory ([`MANIFEST_FILE`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointManifest {
    /// [`FORMAT`].
    pub format: String,
    /// The container as it was when checkpointed (its id identifies it across nodes).
    pub container: ContainerSpec,
    pub checkpoint: CheckpointInfo,
    /// Every file of the checkpoint but the manifest, in the order they are archived.
    pub files: Vec<ManifestFile>,
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the checkpoint directory, `/`-separated: [`ROOTFS_DIFF`] or under [`CRIU_DIR`].
    pub path: String,
    pub size: u64,
    /// `sha256:<hex>` of its content.
    pub digest: String,
}

impl CheckpointManifest {
    /// Total bytes of the checkpoint's files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Checks that a manifest path stays inside a checkpoint directory and names one of its parts:
/// [`ROOTFS_DIFF`], or a file below [`CRIU_DIR`] (plain components only).
pub fn validate_file_path(path: &str) -> Result<(), String> {
    let parts: Vec<&str> = path.split('/').collect();
    let plain = parts.iter().all(|p| !p.is_empty() && *p != "." && *p != ".." && !p.contains('\0'));
    let known = path == ROOTFS_DIFF || (parts.len() >= 2 && parts[0] == CRIU_DIR);
    if plain && known {
        Ok(())
    } else {
        Err(format!("the manifest lists {path:?}, which is not a file of a checkpoint"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_are_confined() {
        validate_file_path("rootfs-diff.tar").unwrap();
        validate_file_path("criu/pages-1.img").unwrap();
        validate_file_path("criu/sub/x.img").unwrap();
        for bad in ["criu", "criu/../../etc/passwd", "/etc/passwd", "criu//x", "other.txt", "criu/./x", ""] {
            assert!(validate_file_path(bad).is_err(), "{bad}");
        }
    }
}
