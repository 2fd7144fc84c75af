//! The cluster CA: made once, then it signs each component's certificate.
//!
//! Keys are ECDSA P-256 (rcgen's default with ring: small, fast to make and to verify). A
//! component certificate names the component in its common name and its [`Role`] in its
//! organizational unit, lists the addresses it is reached at as subject alternative names,
//! and is valid for what the caller asks (`herd up`: 7 days, renewed after two thirds),
//! starting five minutes in the past so that clocks a little apart agree on it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::TlsError;
use crate::files::{CertInfo, TlsFiles, private_dir, write_private};

/// The CA's certificate in a CA directory.
pub const CA_CERT: &str = "ca.crt";
/// The CA's key in a CA directory.
pub const CA_KEY: &str = "ca.key";
/// How long the CA itself is valid: ten years (Swarm's root CA: twenty).
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86400);
/// Clock skew a certificate tolerates at its start.
pub(crate) const BACKDATE: Duration = Duration::from_secs(300);

/// What a component is; written into its certificate, and what its certificate may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A NATS server: clients and the other servers' routes connect to it, and it connects
    /// to them.
    Broker,
    /// A Control replica: serves the API, connects to the broker.
    Control,
    /// A Compute node: connects to the broker, serves and opens migration connections.
    Node,
    /// A person's CLI: connects only.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Broker => "broker",
            Role::Control => "control",
            Role::Node => "node",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Broker, Role::Control, Role::Node, Role::User].into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whom a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    pub role: Role,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl Subject {
    pub fn new(name: &str, role: Role) -> Subject {
        Subject { name: name.to_string(), role, dns_names: Vec::new(), ips: Vec::new() }
    }

    pub fn with_ip(mut self, ip: IpAddr) -> Subject {
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
        self
    }

    pub fn with_dns(mut self, name: &str) -> Subject {
        if !self.dns_names.iter().any(|d| d == name) {
            self.dns_names.push(name.to_string());
        }
        self
    }

    /// The subject a certificate was issued for, to renew it.
    pub fn of(info: &CertInfo) -> Option<Subject> {
        let role = Role::parse(info.role.as_deref()?)?;
        Some(Subject { name: info.name.clone(), role, dns_names: info.dns_names.clone(), ips: info.ips.clone() })
    }
}

/// A certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster's certificate authority, with its key: only what issues certificates holds it
/// (`herd up`'s supervisor, the Control node that admits joining nodes).
pub struct ClusterCa {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Makes a new CA in `dir` (`ca.crt`, `ca.key`, mode 0600 in a 0700 directory); refuses
    /// to replace one that is there, since every certificate it signed would stop working.
    pub fn init(dir: &Path, cluster: &str) -> Result<ClusterCa, TlsError> {
        let key_path = dir.join(CA_KEY);
        if key_path.exists() {
            return Err(TlsError::invalid(
                &key_path,
                "a CA is already there: remove the directory first to make a new one (every certificate it signed stops working)",
            ));
        }
        private_dir(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "herd");
        dn.push(DnType::CommonName, format!("herd cluster {cluster} CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_LIFETIME).into();
        let cert = params.self_signed(&key)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_private(&dir.join(CA_CERT), cert.pem().as_bytes())?;
        Ok(ClusterCa { dir: dir.to_path_buf(), cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA of `dir`.
    pub fn load(dir: &Path) -> Result<ClusterCa, TlsError> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| TlsError::io(&cert_path, e))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| TlsError::io(&key_path, e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::invalid(&key_path, format!("not a key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| TlsError::invalid(&cert_path, format!("not a CA certificate: {e}")))?;
        Ok(ClusterCa { dir: dir.to_path_buf(), cert_pem, issuer })
    }

    /// The CA of `dir`, made first if there is none.
    pub fn load_or_init(dir: &Path, cluster: &str) -> Result<ClusterCa, TlsError> {
        if dir.join(CA_KEY).exists() { ClusterCa::load(dir) } else { ClusterCa::init(dir, cluster) }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new key and a certificate for `subject`, valid for `lifetime` from now.
    pub fn issue(&self, subject: &Subject, lifetime: Duration) -> Result<Issued, TlsError> {
        let now = SystemTime::now();
        self.issue_valid(subject, now - BACKDATE, now + lifetime)
    }

    /// A new key and a certificate for `subject`, valid from `not_before` to `not_after`.
    pub fn issue_valid(
        &self,
        subject: &Subject,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let cert = component_params(subject, not_before, not_after)?.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A certificate for `subject`, valid for `lifetime` from now, for the key of a
    /// certificate signing request (PEM) made by a machine that keeps its key to itself (a
    /// node joining the cluster). Only the request's key is taken: its names and extensions
    /// are the CA's to choose, from `subject`. A request whose signature does not match its
    /// key is refused.
    pub fn sign_request(&self, csr_pem: &str, subject: &Subject, lifetime: Duration) -> Result<String, TlsError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| TlsError::invalid(Path::new("certificate request"), format!("unreadable: {e}")))?;
        let now = SystemTime::now();
        csr.params = component_params(subject, now - BACKDATE, now + lifetime)?;
        Ok(csr.signed_by(&self.issuer)?.pem())
    }

    /// Issues for `subject` into `dir/NAME.crt` and `dir/NAME.key`, beside a copy of the CA's
    /// certificate in `dir/ca.crt` (when `dir` is not the CA's own directory).
    pub fn issue_into(&self, subject: &Subject, lifetime: Duration, dir: &Path) -> Result<TlsFiles, TlsError> {
        private_dir(dir)?;
        let files = TlsFiles::in_dir(dir, &subject.name);
        self.write(subject, lifetime, &files)?;
        Ok(files)
    }

    /// Issues for `subject` into `files` (its CA file gets this CA's certificate).
    pub fn write(&self, subject: &Subject, lifetime: Duration, files: &TlsFiles) -> Result<(), TlsError> {
        let issued = self.issue(subject, lifetime)?;
        if files.ca != self.cert_path() {
            write_private(&files.ca, self.cert_pem.as_bytes())?;
        }
        // The key first: a server that reloads on the certificate's change then finds both new.
        write_private(&files.key, issued.key_pem.as_bytes())?;
        write_private(&files.cert, issued.cert_pem.as_bytes())
    }

    /// Renews `files`' certificate if it is due at `now` (or unreadable), for the same subject
    /// and lifetime; says whether it did.
    pub fn renew_if_due(&self, files: &TlsFiles, now: SystemTime) -> Result<bool, TlsError> {
        let info = CertInfo::read(&files.cert)?;
        if !info.due_for_renewal(now) {
            return Ok(false);
        }
        let subject = Subject::of(&info)
            .ok_or_else(|| TlsError::invalid(&files.cert, "names no Herd role: not issued by Herd"))?;
        self.write(&subject, info.lifetime().saturating_sub(BACKDATE), files)?;
        Ok(true)
    }
}

/// The settings of a component's certificate: its name (CN) and role (OU), its addresses,
/// what it may be used for, and when it is valid.
fn component_params(
    subject: &Subject,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "herd");
    dn.push(DnType::OrganizationalUnitName, subject.role.as_str());
    dn.push(DnType::CommonName, subject.name.clone());
    params.distinguished_name = dn;
    for d in &subject.dns_names {
        params.subject_alt_names.push(SanType::DnsName(d.clone().try_into()?));
    }
    for ip in &subject.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match subject.role {
        Role::User => vec![ExtendedKeyUsagePurpose::ClientAuth],
        _ => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(params)
}
