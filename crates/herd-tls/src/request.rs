//! A machine's side of getting its certificate from the cluster CA without its key ever
//! leaving it (a node joining with a token): a new key and a certificate signing request,
//! and the digest by which the machine recognises the cluster's CA before it trusts it.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use crate::TlsError;
use crate::files::CertInfo;

/// A new private key and a request for a certificate of it, both PEM.
#[derive(Debug, Clone)]
pub struct KeyAndRequest {
    pub key_pem: String,
    pub csr_pem: String,
}

/// A new key and a certificate signing request naming `name` (the CA decides the rest).
pub fn key_and_request(name: &str) -> Result<KeyAndRequest, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndRequest { key_pem: key.serialize_pem(), csr_pem: csr.pem()? })
}

/// The first certificate of a PEM text, as DER.
fn first_der(pem: &str) -> Result<CertificateDer<'static>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or("holds no PEM certificate")?
        .map_err(|e| format!("not a PEM certificate: {e}"))
}

/// The digest a join token carries of the cluster CA: `sha256:` and the hex SHA-256 of the
/// CA certificate's DER (what `kubeadm join --discovery-token-ca-cert-hash` checks, there of
/// the public key).
pub fn ca_digest(ca_pem: &str) -> Result<String, String> {
    Ok(format!("sha256:{}", hex(&Sha256::digest(first_der(ca_pem)?))))
}

/// What the first certificate of a PEM text says of itself.
pub fn cert_info_pem(pem: &str) -> Result<CertInfo, String> {
    CertInfo::parse(&first_der(pem)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{ClusterCa, Role, Subject};

    #[test]
    fn a_request_gets_a_certificate_of_the_cas_choosing_for_the_requesters_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::init(dir.path(), "t").unwrap();
        let mine = key_and_request("n3").unwrap();
        // The request names n3 a broker; the CA decides: a node, with the address it saw.
        let subject = Subject::new("n3", Role::Node).with_ip("10.0.0.13".parse().unwrap());
        let cert = ca.sign_request(&mine.csr_pem, &subject, Duration::from_secs(3600)).unwrap();
        let info = cert_info_pem(&cert).unwrap();
        assert_eq!((info.name.as_str(), info.role.as_deref()), ("n3", Some("node")));
        assert_eq!(info.ips, vec!["10.0.0.13".parse::<std::net::IpAddr>().unwrap()]);
        // The certificate is for the requester's own key.
        let key = KeyPair::from_pem(&mine.key_pem).unwrap();
        assert_eq!(info.spki_der, rcgen::PublicKeyData::subject_public_key_info(&key));

        // A request whose signature does not match is refused; so is garbage.
        let mut damaged = mine.csr_pem.clone().into_bytes();
        let at = damaged.len() - 40;
        damaged[at] = if damaged[at] == b'A' { b'B' } else { b'A' };
        assert!(ca.sign_request(std::str::from_utf8(&damaged).unwrap(), &subject, Duration::from_secs(60)).is_err());
        assert!(ca.sign_request("not a request", &subject, Duration::from_secs(60)).is_err());
    }

    #[test]
    fn the_ca_digest_names_one_ca() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ca_a, ca_b) = (ClusterCa::init(a.path(), "a").unwrap(), ClusterCa::init(b.path(), "b").unwrap());
        let digest = ca_digest(ca_a.cert_pem()).unwrap();
        assert!(digest.starts_with("sha256:") && digest.len() == 7 + 64, "{digest}");
        assert_eq!(digest, ca_digest(ca_a.cert_pem()).unwrap());
        assert_ne!(digest, ca_digest(ca_b.cert_pem()).unwrap());
        assert!(ca_digest("nothing").is_err());
    }
}
