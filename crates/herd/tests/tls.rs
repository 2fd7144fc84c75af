//! TLS on the API, end to end: what a client of another CA, a plain-text client and a client
//! that trusts another CA meet, and certificates renewed while the cluster runs, with every
//! component going on through the renewal and past the old certificates' expiry.
//! (The broker's refusals are in `broker_permissions.rs`.)

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{Cluster, wait_for};

const T: Duration = Duration::from_secs(60);

/// The API's `host:port`.
fn api_addr(cfg: &herd_cli::CliConfig) -> String {
    cfg.api.trim_start_matches("https://").trim_end_matches('/').to_string()
}

#[test]
fn the_api_refuses_plain_text_and_strangers_and_certificates_renew() {
    // n2 joins with a token: its certificate comes from the Control node, and so do renewals.
    let cluster = Cluster::up_with(91, 2, &["--cert-lifetime", "30s", "--join-nodes", "1"]);
    let cfg = herd_cli::CliConfig::load(&cluster.config).unwrap();
    assert!(cfg.api.starts_with("https://127.0.0.1:"), "{}", cfg.api);
    let addr = api_addr(&cfg);
    let control_log = || std::fs::read_to_string(cluster.run_dir().join("logs/control.log")).unwrap();

    // Plain HTTP to the HTTPS port: a plain answer that says so, and a log line.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(s, "GET /v1/containers HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("HTTPS port"), "{answer}");
    wait_for("the refusal in the Control node's log", T, || {
        control_log().contains("refused a plain-text connection from 127.0.0.1").then_some(())
    });

    // A client certificate of another CA: refused in the handshake, logged.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = herd_tls::ClusterCa::init(&elsewhere.path().join("ca"), "other").unwrap();
    let stranger = other
        .issue_into(&herd_tls::Subject::new("user", herd_tls::Role::User), Duration::from_secs(3600), elsewhere.path())
        .unwrap();
    let client = herd_tls::config::client_config(&cluster.tls_files("up").ca, Some(&stranger)).unwrap();
    // (In TLS 1.3 the client may see the refusal as an alert, a reset or a broken pipe.)
    let err = handshake(&addr, client).expect_err("a certificate of another CA is refused");
    eprintln!("a client of another CA: {err}");
    wait_for("the refused handshake in the Control node's log", T, || {
        control_log().contains("TLS handshake with 127.0.0.1").then_some(())
    });

    // A CLI that trusts another CA: it refuses the API, and says why.
    let mut foreign = cfg.clone();
    foreign.ca = Some(std::fs::read_to_string(&stranger.ca).unwrap());
    let foreign_config = elsewhere.path().join("config.toml");
    foreign.save(&foreign_config).unwrap();
    let out = cluster.command(&["ps"]).env("HERD_CONFIG", &foreign_config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("certificate"), "{err}");

    // Renewal: after two thirds of their 30 s every certificate is replaced; the API serves
    // the new one at once.
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "c", "--node", "n1", "busybox", "--", "sh", "-c", common::COUNTER]);
    cluster.wait_state("c", "running", T);
    let seen = cluster.counts_on("c", 0, T);
    let first = std::fs::read(cluster.tls_files("control").cert).unwrap();
    let joined_cert = cluster.data_dir.join("nodes/n2/tls/n2.crt");
    let joined_first = std::fs::read(&joined_cert).unwrap();
    let issued = SystemTime::now();
    wait_for("the Control node's certificate renewed", T, || {
        (std::fs::read(cluster.tls_files("control").cert).unwrap() != first).then_some(())
    });
    wait_for("the joined node's certificate renewed", T, || {
        (std::fs::read(&joined_cert).unwrap() != joined_first).then_some(())
    });
    assert!(control_log().contains("node n2: certificate renewed"), "the Control node signed n2's renewal");
    let served = served_certificate(&addr, &cfg);
    assert_eq!(served, herd_tls::files::load_certs(&cluster.tls_files("control").cert).unwrap()[0].as_ref());
    // Past the first certificates' expiry, everything goes on: the nodes' broker connections
    // (reconnections present the new certificates), the API, a migration.
    wait_for("the first certificates expired", T, || {
        (SystemTime::now() > issued + Duration::from_secs(32)).then_some(())
    });
    let nodes = cluster.ok(&["nodes"]);
    assert_eq!(nodes.matches("ready").count(), 2, "{nodes}");
    let report: herd_proto::migration::MigrationReport =
        cluster.json(&["migrate", "c", "--to", "n2", "--mode", "postcopy"]);
    assert!(report.encrypted, "the migration's control connection was TLS: {report:?}");
    assert!(report.pages_encrypted, "Herd seals the pages connection by default: {report:?}");
    let seen = cluster.counts_on("c", seen, T);
    let report: herd_proto::migration::MigrationReport =
        cluster.json(&["migrate", "c", "--to", "n1", "--mode", "cold"]);
    assert!(report.encrypted, "{report:?}");
    cluster.counts_on("c", seen, T);
    // herd exec goes through the node's exec listener, over TLS too.
    assert_eq!(cluster.ok(&["exec", "c", "--", "echo", "hello"]).trim(), "hello");
    let broker_log = std::fs::read_to_string(cluster.run_dir().join("logs/broker.log")).unwrap();
    assert!(broker_log.contains("Reloaded"), "the broker reloaded its renewed certificate:\n{broker_log}");
}

/// Runs a TLS handshake with the API at `addr` and an HTTP request; the first error.
fn handshake(addr: &str, config: rustls::ClientConfig) -> Result<(), String> {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    write!(s, "GET /v1/containers HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(())
}

/// The certificate the API at `addr` presents now (DER).
fn served_certificate(addr: &str, cfg: &herd_cli::CliConfig) -> Vec<u8> {
    let config = herd_tls::config::client_config_from_pem(cfg.ca.as_deref().unwrap(), None).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}
