//! Handshakes between Herd's server and client settings, in memory: what each side accepts
//! and refuses, and a renewed certificate taken up without a restart.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herd_tls::ca::{ClusterCa, Role, Subject};
use herd_tls::config::{ClientCerts, client_config, server_config};
use herd_tls::files::CertInfo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

const WEEK: Duration = Duration::from_secs(7 * 86400);

/// Moves what each side has to send to the other, once each way.
fn exchange(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut buf).unwrap();
    }
    if !buf.is_empty() {
        s.read_tls(&mut buf.as_slice()).unwrap();
        s.process_new_packets()?;
    }
    let mut buf = Vec::new();
    while s.wants_write() {
        s.write_tls(&mut buf).unwrap();
    }
    if !buf.is_empty() {
        c.read_tls(&mut buf.as_slice()).unwrap();
        c.process_new_packets()?;
    }
    Ok(())
}

/// Runs a handshake between the two settings and sends a few bytes; the first error either
/// side met.
fn handshake(client: ClientConfig, server: ServerConfig, name: &str) -> Result<(), rustls::Error> {
    let mut c = ClientConnection::new(Arc::new(client), ServerName::try_from(name.to_string()).unwrap())?;
    let mut s = ServerConnection::new(Arc::new(server))?;
    c.writer().write_all(b"ping").unwrap();
    for _ in 0..20 {
        exchange(&mut c, &mut s)?;
        let mut got = [0u8; 4];
        if !s.is_handshaking() && s.reader().read_exact(&mut got).is_ok() {
            assert_eq!(&got, b"ping");
            return Ok(());
        }
    }
    panic!("the handshake did not end");
}

fn node(name: &str) -> Subject {
    Subject::new(name, Role::Node).with_ip("127.0.0.1".parse().unwrap()).with_dns("localhost")
}

#[test]
fn both_ends_of_the_cluster_ca_agree() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::init(&dir.path().join("ca"), "t").unwrap();
    let a = ca.issue_into(&node("n1"), WEEK, &dir.path().join("n1")).unwrap();
    let b = ca.issue_into(&node("n2"), WEEK, &dir.path().join("n2")).unwrap();
    handshake(client_config(&b.ca, Some(&b)).unwrap(), server_config(&a, ClientCerts::Required).unwrap(), "127.0.0.1")
        .unwrap();
    handshake(client_config(&b.ca, Some(&b)).unwrap(), server_config(&a, ClientCerts::Required).unwrap(), "localhost")
        .unwrap();
    // Optional client certificates: a client without one is let in.
    handshake(client_config(&b.ca, None).unwrap(), server_config(&a, ClientCerts::Optional).unwrap(), "localhost")
        .unwrap();

    let info = CertInfo::read(&a.cert).unwrap();
    assert_eq!((info.name.as_str(), info.role.as_deref()), ("n1", Some("node")));
    assert_eq!(info.ips, vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
    use std::os::unix::fs::PermissionsExt;
    for f in [&a.ca, &a.cert, &a.key, &dir.path().join("ca/ca.key")] {
        assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600, "{}", f.display());
    }
}

#[test]
fn strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::init(&dir.path().join("ca"), "t").unwrap();
    let other = ClusterCa::init(&dir.path().join("other"), "other").unwrap();
    let server = ca.issue_into(&node("n1"), WEEK, &dir.path().join("n1")).unwrap();
    let foreign = other.issue_into(&node("x"), WEEK, &dir.path().join("x")).unwrap();
    let mine = ca.issue_into(&node("n2"), WEEK, &dir.path().join("n2")).unwrap();

    // A client certificate of another CA.
    let e = handshake(
        client_config(&mine.ca, Some(&foreign)).unwrap(),
        server_config(&server, ClientCerts::Required).unwrap(),
        "localhost",
    )
    .unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer") || e.to_string().contains("unknown"), "{e}");
    // No client certificate where one is required.
    assert!(
        handshake(
            client_config(&mine.ca, None).unwrap(),
            server_config(&server, ClientCerts::Required).unwrap(),
            "localhost"
        )
        .is_err()
    );
    // A server of another CA.
    let e = handshake(
        client_config(&mine.ca, Some(&mine)).unwrap(),
        server_config(&foreign, ClientCerts::Required).unwrap(),
        "localhost",
    )
    .unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // A server reached by a name its certificate does not hold.
    let e = handshake(
        client_config(&mine.ca, Some(&mine)).unwrap(),
        server_config(&server, ClientCerts::Required).unwrap(),
        "10.9.9.9",
    )
    .unwrap_err();
    assert!(e.to_string().contains("not valid for name"), "{e}");
    // An expired client certificate.
    let expired = dir.path().join("expired");
    let files = ca.issue_into(&node("old"), WEEK, &expired).unwrap();
    let hour = Duration::from_secs(3600);
    let issued = ca.issue_valid(&node("old"), SystemTime::now() - 3 * hour, SystemTime::now() - hour).unwrap();
    std::fs::write(&files.cert, issued.cert_pem).unwrap();
    std::fs::write(&files.key, issued.key_pem).unwrap();
    let e = handshake(
        client_config(&mine.ca, Some(&files)).unwrap(),
        server_config(&server, ClientCerts::Required).unwrap(),
        "localhost",
    )
    .unwrap_err();
    assert!(e.to_string().contains("certificate expired"), "{e}");
}

#[test]
fn a_renewed_certificate_is_used_from_the_next_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = ClusterCa::init(&ca_dir, "t").unwrap();
    // A CA of the same directory loads and issues as the one that made it.
    let ca = {
        drop(ca);
        ClusterCa::load(&ca_dir).unwrap()
    };
    let server = ca.issue_into(&node("n1"), WEEK, &dir.path().join("n1")).unwrap();
    let client = ca.issue_into(&node("n2"), WEEK, &dir.path().join("n2")).unwrap();
    let server_cfg = server_config(&server, ClientCerts::Required).unwrap();
    let before = CertInfo::read(&server.cert).unwrap();
    let before_pem = std::fs::read(&server.cert).unwrap();

    assert!(!ca.renew_if_due(&server, SystemTime::now()).unwrap(), "a fresh certificate is not due");
    assert!(ca.renew_if_due(&server, SystemTime::now() + WEEK * 2 / 3 + Duration::from_secs(600)).unwrap());
    let after = CertInfo::read(&server.cert).unwrap();
    let after_pem = std::fs::read(&server.cert).unwrap();
    assert_ne!(before_pem, after_pem, "a new certificate");
    assert_eq!(after.lifetime(), before.lifetime());
    assert_eq!((&after.name, &after.ips), (&before.name, &before.ips));
    // The same server settings (made before the renewal) now present the new certificate.
    let mut c = ClientConnection::new(
        Arc::new(client_config(&client.ca, Some(&client)).unwrap()),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut s = ServerConnection::new(Arc::new(server_cfg)).unwrap();
    while c.is_handshaking() || s.is_handshaking() {
        exchange(&mut c, &mut s).unwrap();
    }
    assert_eq!(
        c.peer_certificates().unwrap()[0].as_ref(),
        herd_tls::files::load_certs(&server.cert).unwrap()[0].as_ref()
    );
}

#[test]
fn a_ca_is_never_replaced_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::init(dir.path(), "t").unwrap();
    let e = ClusterCa::init(dir.path(), "t").unwrap_err();
    assert!(e.to_string().contains("already there"), "{e}");
    ClusterCa::load_or_init(dir.path(), "t").unwrap();
}
