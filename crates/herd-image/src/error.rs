//! The one error type of image import and layer extraction.

use std::io;
use std::path::PathBuf;

/// Why an import or an extraction failed. Each message names the file or blob concerned.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The archive, or a blob inside it, cannot be read as what it claims to be
    /// (bad tar header, broken compression, cut short, ...).
    #[error("{what} is corrupt or truncated: {reason}")]
    Corrupt { what: String, reason: String },

    /// The uploaded archive is a valid tar with nothing in it.
    #[error("{}: the archive holds no files; import a non-empty tar of a root filesystem, an OCI image layout or a `docker save` archive", .path.display())]
    EmptyArchive { path: PathBuf },

    /// The archive or blob is compressed in a format this crate does not read.
    #[error("{what} is {format}-compressed, which is not supported; use an uncompressed, gzip or zstd tar")]
    UnsupportedCompression { what: String, format: &'static str },

    /// A blob's content does not hash to the digest its manifest gives.
    #[error(
        "{what}: digest mismatch: the manifest says {expected} but the content is {actual}; the archive is corrupt or was modified"
    )]
    DigestMismatch { what: String, expected: String, actual: String },

    /// A manifest refers to a file the archive does not contain.
    #[error("{}: {what} is missing: the archive has no file {member}", .archive.display())]
    MissingBlob { archive: PathBuf, what: String, member: String },

    /// A manifest, config or layer has a media type that is not a container image part.
    #[error(
        "{what} has unsupported media type {media_type}; herd imports OCI and Docker container images (tar layers, uncompressed, gzip or zstd)"
    )]
    UnsupportedMediaType { what: String, media_type: String },

    /// A JSON document of the archive (index, manifest, config) is malformed.
    #[error("{}: invalid {what}: {reason}", .archive.display())]
    InvalidManifest { archive: PathBuf, what: String, reason: String },

    /// An image index offers no image for the host's platform.
    #[error("the image index has no image for {wanted}; it has: {}", found_list(.found))]
    NoManifestForArchitecture { wanted: String, found: Vec<String> },

    /// A layer entry would be written outside the destination directory.
    #[error("layer {}: entry {entry:?} {reason}; refusing to write outside {}", .blob.display(), .dest.display())]
    PathEscape { blob: PathBuf, dest: PathBuf, entry: String, reason: String },

    /// The directory to extract into is missing, not a directory or not empty.
    #[error("{}: {reason}", .path.display())]
    InvalidDestination { path: PathBuf, reason: String },

    /// A checkpoint directory or archive is not a whole Herd checkpoint (no or a foreign
    /// manifest, a file missing, changed or extra).
    #[error("{what} is not a usable Herd checkpoint: {reason}")]
    NotACheckpoint { what: String, reason: String },

    /// A layer or an image unpacks to more than a bound allows (a compressed bomb, or an
    /// image larger than this cluster takes).
    #[error("{}", crate::bounds::too_large_message(.what, *.limit, *.bound))]
    TooLarge { what: String, limit: u64, bound: crate::bounds::Bound },

    /// Unpacking would use the free disk space a node keeps in reserve.
    #[error(
        "unpacking {what} would leave less than {} free on the filesystem of {} ({} free now; --disk-reserve keeps {}): it was refused and nothing of it was kept; free some space or lower the reserve",
        crate::bounds::bytes(*.reserve), .path.display(), crate::bounds::bytes(*.free), crate::bounds::bytes(*.reserve)
    )]
    DiskReserve { what: String, path: PathBuf, reserve: u64, free: u64 },

    /// Reading or writing a file failed.
    #[error("{action} {}: {err}", .path.display())]
    Io { action: &'static str, path: PathBuf, err: io::Error },
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() { "no images for any known platform".to_string() } else { found.join(", ") }
}

impl ImageError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |err| ImageError::Io { action, path, err }
    }
}

/// The reason text of a read error met while decoding an archive.
pub(crate) fn read_reason(err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::UnexpectedEof { format!("it ends too early ({err})") } else { err.to_string() }
}
