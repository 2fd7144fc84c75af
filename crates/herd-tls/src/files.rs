//! Where a component's TLS material lives, and what a certificate file says about itself.
//!
//! Every file is written at mode 0600 (keys are secrets; certificates are kept as private
//! as the directory they live in) through a temporary file renamed over the old one, so a
//! reader sees the old certificate or the new one, never half of one.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// A component's TLS files: the cluster CA it trusts, its certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `name.crt` and `name.key` of `dir`, with the CA in `dir/ca.crt`.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join(crate::ca::CA_CERT),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// The certificate chain and the key, parsed.
    pub fn load_identity(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let certs = load_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| TlsError::invalid(&self.key, format!("not a private key: {e}")))?;
        Ok((certs, key))
    }
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::invalid(path, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::invalid(path, "holds no certificate"));
    }
    Ok(certs)
}

/// Writes `content` to `path` at mode 0600, replacing what was there atomically.
pub fn write_private(path: &Path, content: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TlsError::io(path, e)
    })
}

/// Makes `dir` (and its parents) with mode 0700 for `dir` itself.
pub fn private_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| TlsError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| TlsError::io(dir, e))
}

/// What a certificate says of itself: whom it names, for how long, for which addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name: the component's name.
    pub name: String,
    /// The subject's organizational unit: the component's [`crate::Role`], as written.
    pub role: Option<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// The subject's public key as DER `SubjectPublicKeyInfo` (what a browser pins with
    /// Chromium's `--ignore-certificate-errors-spki-list`, as a SHA-256 in base64).
    pub spki_der: Vec<u8>,
}

impl CertInfo {
    /// Reads the first certificate of a PEM file.
    pub fn read(path: &Path) -> Result<CertInfo, TlsError> {
        let certs = load_certs(path)?;
        CertInfo::parse(&certs[0]).map_err(|m| TlsError::invalid(path, m))
    }

    /// Reads a DER certificate.
    pub fn parse(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let first = |attrs: &mut dyn Iterator<Item = &AttributeTypeAndValue>| {
            attrs.next().and_then(|a| a.as_str().ok()).map(str::to_string)
        };
        let subject = cert.subject();
        let name = first(&mut subject.iter_common_name()).unwrap_or_default();
        let role = first(&mut subject.iter_organizational_unit());
        let time = |t: ASN1Time| SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
        let (mut dns_names, mut ips) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                        16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(CertInfo {
            name,
            role,
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            dns_names,
            ips,
            spki_der: cert.public_key().raw.to_vec(),
        })
    }

    /// How long the certificate is valid for in all.
    pub fn lifetime(&self) -> Duration {
        self.not_after.duration_since(self.not_before).unwrap_or_default()
    }

    /// Whether the certificate should be renewed at `now`: once two thirds of its lifetime
    /// have passed (as Kubernetes' kubelet does, at 70-90 %), so a renewal that fails has a
    /// third of the lifetime to be tried again.
    pub fn due_for_renewal(&self, now: SystemTime) -> bool {
        now >= self.renew_at()
    }

    /// When two thirds of the certificate's useful life have passed. Herd's certificates
    /// begin [`crate::ca::BACKDATE`] before they were issued, for clocks a little apart; that
    /// margin is not counted (a 30 s certificate is renewed 20 s after it was issued, not at
    /// once). A certificate that lives no longer than the margin was made elsewhere, without
    /// it: all its life counts.
    pub fn renew_at(&self) -> SystemTime {
        let margin = if self.lifetime() > crate::ca::BACKDATE { crate::ca::BACKDATE } else { Duration::ZERO };
        let start = self.not_before + margin;
        let useful = self.not_after.duration_since(start).unwrap_or_default();
        start + useful * 2 / 3
    }
}

#[cfg(test)]
mod renewal_tests {
    use super::*;

    fn cert(not_before: SystemTime, not_after: SystemTime) -> CertInfo {
        CertInfo {
            name: "n1".into(),
            role: None,
            not_before,
            not_after,
            dns_names: vec![],
            ips: vec![],
            spki_der: vec![],
        }
    }

    #[test]
    fn a_certificate_is_renewed_two_thirds_into_its_useful_life() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let backdated = issued - crate::ca::BACKDATE;
        // Herd's 30 s certificate (backdated by the margin): 20 s after it was issued, not
        // at once (it was renewed every second before).
        let herd = cert(backdated, issued + Duration::from_secs(30));
        assert_eq!(herd.renew_at(), issued + Duration::from_secs(20));
        assert!(!herd.due_for_renewal(issued + Duration::from_secs(1)));
        assert!(herd.due_for_renewal(issued + Duration::from_secs(21)));
        // Seven days, backdated.
        let week = cert(backdated, issued + Duration::from_secs(7 * 86_400));
        assert_eq!(week.renew_at(), issued + Duration::from_secs(7 * 86_400 * 2 / 3));
        // Made elsewhere, two minutes without a margin: two thirds of all of it.
        let short = cert(issued, issued + Duration::from_secs(120));
        assert_eq!(short.renew_at(), issued + Duration::from_secs(80));
        // Ten minutes without a margin: still renewed before it expires.
        let ten = cert(issued, issued + Duration::from_secs(600));
        assert!(ten.renew_at() < ten.not_after);
    }
}
