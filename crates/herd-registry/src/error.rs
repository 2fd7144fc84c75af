//! The one error type of registry access; every message names the registry, the repository or
//! the blob concerned, and the cause.

/// Why talking to a registry failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("cannot reach registry {registry} ({url}): {reason}")]
    Unreachable { registry: String, url: String, reason: String },

    #[error("registry {registry} refused access to {repository}: {reason}")]
    Unauthorized { registry: String, repository: String, reason: String },

    #[error("{what} not found in {repository} on registry {registry}{}", detail(.message))]
    NotFound { registry: String, repository: String, what: String, message: String },

    #[error("{reference} has no image for {wanted}; it has: {}", list(.available))]
    NoPlatform { reference: String, wanted: String, available: Vec<String> },

    #[error("{what} has unsupported media type {media_type}; {hint}")]
    UnsupportedMediaType { what: String, media_type: String, hint: &'static str },

    #[error("{what}: digest mismatch: expected {expected} but the registry sent content hashing to {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },

    #[error("{what}: the registry sent {actual} bytes where the manifest says {expected}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },

    #[error("registry {registry}: {reason}")]
    Protocol { registry: String, reason: String },

    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

impl RegistryError {
    /// Whether the request itself was at fault (a bad reference, an unknown tag, a missing
    /// platform), as opposed to the registry or the network.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            RegistryError::InvalidReference { .. }
                | RegistryError::NotFound { .. }
                | RegistryError::NoPlatform { .. }
                | RegistryError::UnsupportedMediaType { .. }
                | RegistryError::Unauthorized { .. }
        )
    }
}

fn detail(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(" ({message})") }
}

fn list(available: &[String]) -> String {
    if available.is_empty() { "no platform at all".to_string() } else { available.join(", ") }
}
