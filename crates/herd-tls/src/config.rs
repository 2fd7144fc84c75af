//! rustls settings for Herd's channels, made from a component's [`TlsFiles`].
//!
//! Both ends trust the cluster CA alone. A component's own certificate is read through a
//! [`ReloadingIdentity`]: each handshake looks at the certificate file's modification time,
//! and a renewed certificate is in use from the next handshake on, without a restart.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

use crate::TlsError;
use crate::files::{TlsFiles, load_certs};

/// The crypto Herd uses: ring's (AES-GCM and ChaCha20-Poly1305, ECDSA, X25519).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Makes ring's provider the process' default, for the libraries that build their own TLS
/// settings (the NATS client); call it first thing in `main`.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The roots a cluster trusts: the certificates of its CA file.
pub fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::invalid(ca, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Whether a server asks its clients for a certificate of the cluster CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Every client must present one (node-to-node transfers).
    Required,
    /// A client may present one, which is then checked (the API: browsers and Prometheus
    /// come with a bearer token instead).
    Optional,
}

/// A server's settings: `files`' certificate (reloaded when it is renewed), clients checked
/// against `files`' CA as `client_certs` says.
pub fn server_config(files: &TlsFiles, client_certs: ClientCerts) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&files.ca)?), provider.clone());
    let verifier = match client_certs {
        ClientCerts::Required => verifier.build(),
        ClientCerts::Optional => verifier.allow_unauthenticated().build(),
    }
    .map_err(|e| TlsError::invalid(&files.ca, format!("cannot check clients against it: {e}")))?;
    let identity = Arc::new(ReloadingIdentity::new(files)?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client's settings: servers checked against the CA file `ca`; with `identity`, the
/// client presents that certificate (reloaded when it is renewed).
pub fn client_config(ca: &Path, identity: Option<&TlsFiles>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?);
    Ok(match identity {
        Some(files) => builder.with_client_cert_resolver(Arc::new(ReloadingIdentity::new(files)?)),
        None => builder.with_no_client_auth(),
    })
}

/// A client's settings from PEM text rather than files (the CLI keeps its CA and its own
/// certificate in its configuration file).
pub fn client_config_from_pem(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<ClientConfig, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let here = Path::new("the CLI configuration");
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::invalid(here, format!("its CA is not a PEM certificate: {e}")))?;
        roots.add(cert).map_err(|e| TlsError::invalid(here, format!("its CA is not usable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::invalid(here, "its CA holds no certificate"));
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match identity {
        Some((cert_pem, key_pem)) => {
            let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::invalid(here, format!("its certificate is not PEM: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| TlsError::invalid(here, format!("its key is not PEM: {e}")))?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// A component's certificate and key, read again when the certificate file changes.
#[derive(Debug)]
pub struct ReloadingIdentity {
    files: TlsFiles,
    current: Mutex<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

impl ReloadingIdentity {
    pub fn new(files: &TlsFiles) -> Result<ReloadingIdentity, TlsError> {
        let loaded = load_certified(files)?;
        let mtime = modified(&files.cert);
        Ok(ReloadingIdentity { files: files.clone(), current: Mutex::new((mtime, Arc::new(loaded))) })
    }

    /// The identity in force: the files' if they changed and read well, else the last one.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mtime = modified(&self.files.cert);
        if mtime != current.0 {
            // Half-way through a renewal the key may be new and the certificate old: the pair
            // does not match for as long as writing the certificate takes, so it is read again
            // a few times before this handshake keeps the previous one (which may have expired).
            let mut tries = 0;
            loop {
                match load_certified(&self.files) {
                    Ok(k) => {
                        *current = (mtime, Arc::new(k));
                        break;
                    }
                    Err(_) if tries < RELOAD_TRIES => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(e) => {
                        tracing::warn!("keeping the previous TLS certificate: {e}");
                        break;
                    }
                }
            }
        }
        current.1.clone()
    }
}

/// How many times a renewed pair that does not match yet is read again, 20 ms apart.
const RELOAD_TRIES: u32 = 5;

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_certified(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let (certs, key) = files.load_identity()?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::invalid(&files.key, format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(certs, key);
    certified
        .keys_match()
        .map_err(|e| TlsError::invalid(&files.key, format!("does not belong to {}: {e}", files.cert.display())))?;
    Ok(certified)
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
