//! The cluster's own certificate authority and the TLS settings of every Herd channel.
//!
//! A Herd cluster trusts one CA of its own ([`ClusterCa`]): `herd up` (or `herd ca init`, for
//! a cluster on several machines) makes it, and it signs one short-lived certificate per
//! component: each broker, Control replica and Compute node, and the CLI user. Every channel
//! checks the other end against that CA, and nothing else: not the system's roots, which a
//! cluster never uses (and which cost tens of milliseconds to load).
//!
//! - [`ca`]: making the CA, issuing and renewing certificates (rcgen, ECDSA P-256).
//! - [`files`]: where a component's CA, certificate and key live ([`TlsFiles`]), written at
//!   mode 0600 and replaced atomically; reading a certificate's validity ([`CertInfo`]).
//! - [`config`]: rustls server and client settings from those files, with the ring crypto
//!   provider; servers pick up a renewed certificate at their next handshake.
//! - [`request`]: a joining machine's key and certificate request, and the CA digest it
//!   checks before it trusts the cluster.
//!
//! ```no_run
//! use herd_tls::{ca::{ClusterCa, Role, Subject}, config};
//! let dir = std::path::Path::new("/var/lib/herd/tls");
//! let ca = ClusterCa::init(dir, "demo").unwrap();
//! let files = ca.issue_into(&Subject::new("n1", Role::Node).with_ip("10.0.0.2".parse().unwrap()),
//!                           std::time::Duration::from_secs(7 * 86400), dir).unwrap();
//! let server = config::server_config(&files, config::ClientCerts::Required).unwrap();
//! let client = config::client_config(&files.ca, Some(&files)).unwrap();
//! ```

pub mod ca;
pub mod config;
pub mod files;
pub mod request;

pub use ca::{ClusterCa, Role, Subject};
pub use files::{CertInfo, TlsFiles};

/// Why a TLS file or setting could not be made or used. Each carries the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> TlsError {
        TlsError::Io { path: path.display().to_string(), source }
    }

    pub(crate) fn invalid(path: &std::path::Path, message: impl Into<String>) -> TlsError {
        TlsError::Invalid { path: path.display().to_string(), message: message.into() }
    }
}
