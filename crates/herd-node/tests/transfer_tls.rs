//! Migration and exec connections over TLS (`herd_node::transfer` with [`TransferTls`]): both
//! ends of the cluster CA get through; a peer without a certificate, with one of another CA or
//! an expired one, a plain-text hello where TLS is required, or a TLS handshake where there is
//! none, is refused with a warning that names it on the listener's side and
//! [`TransferError::Tls`] on its own, and the ticket keeps working for the right peer.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use herd_node::transfer::{
    Accepted, Budget, Listener, SealRole, Ticket, TransferError, TransferTls, connect_control, connect_control_with,
    connect_exec, connect_pages, seal,
};
use herd_tls::TlsFiles;
use herd_tls::ca::{ClusterCa, Role, Subject};
use herd_tls::config::{ClientCerts, client_config, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WEEK: Duration = Duration::from_secs(7 * 86400);
const WAIT: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("{what}: no result within {WAIT:?}"))
}

/// Everything logged in this test binary (the listener logs from its own tasks).
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buf = buf.clone();
            move || Capture(buf.clone())
        };
        tracing_subscriber::fmt().with_writer(writer).with_ansi(false).with_max_level(tracing::Level::DEBUG).init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits for a warning of the listener of `migration` that names a peer on 127.0.0.1 and
/// says `why`; returns the line.
async fn warned(migration: &str, why: &str) -> String {
    within(&format!("a warning about {why:?}"), async {
        loop {
            let text = String::from_utf8_lossy(&log().lock().unwrap()).to_string();
            if let Some(line) = text.lines().find(|l| {
                l.contains("WARN")
                    && l.contains(&format!("migration={migration}"))
                    && l.contains("peer=127.0.0.1:")
                    && l.contains(why)
            }) {
                return line.to_string();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

fn node(name: &str) -> Subject {
    Subject::new(name, Role::Node).with_ip(LOCAL)
}

/// A cluster CA with two nodes, and a CA of another cluster with one.
struct Pki {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    ca: ClusterCa,
    n1: TlsFiles,
    n2: TlsFiles,
    stranger: TlsFiles,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let ca = ClusterCa::init(&root.join("ca"), "t").unwrap();
    let other = ClusterCa::init(&root.join("other-ca"), "other").unwrap();
    let n1 = ca.issue_into(&node("n1"), WEEK, &root.join("n1")).unwrap();
    let n2 = ca.issue_into(&node("n2"), WEEK, &root.join("n2")).unwrap();
    let stranger = other.issue_into(&node("x"), WEEK, &root.join("x")).unwrap();
    Pki { _dir: dir, root, ca, n1, n2, stranger }
}

/// An opener trusting the cluster CA (`p.n2`'s) and presenting `identity` (none: no
/// certificate). Its listener half is unused.
fn opener(p: &Pki, identity: Option<&TlsFiles>) -> TransferTls {
    let server = server_config(&p.n2, ClientCerts::Required).unwrap();
    TransferTls::from_configs(server, client_config(&p.n2.ca, identity).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_ends_carries_control_exec_and_pages() {
    log();
    let p = pki();
    let (n1, n2) = (TransferTls::new(&p.n1).unwrap(), TransferTls::new(&p.n2).unwrap());
    let ticket = Ticket::generate("m-tls-ok");
    let listener = Listener::bind_with(LOCAL, ticket.clone(), Budget::unlimited(), Some(n1)).await.unwrap();
    let addr = listener.local_addr();

    let mut opened =
        within("connect", connect_control_with(addr, &ticket, Budget::unlimited(), Some(&n2))).await.unwrap();
    let Accepted::Control(mut accepted) = within("accept", listener.accept()).await.unwrap() else {
        panic!("not a control connection")
    };
    assert!(opened.is_tls() && accepted.is_tls());
    assert_eq!(opened.peer_identity().as_deref(), Some("n1 (node)"));
    assert_eq!(accepted.peer_identity().as_deref(), Some("n2 (node)"));
    opened.send(&"restore").await.unwrap();
    assert_eq!(within("recv", accepted.recv::<String>()).await.unwrap(), "restore");
    // Bulk data both ways: a directory of a few MiB, a blob.
    let dir = tempfile::tempdir().unwrap();
    let (out, into) = (dir.path().join("out"), dir.path().join("in"));
    std::fs::create_dir_all(&out).unwrap();
    let content: Vec<u8> = (0..5u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(out.join("pages-1.img"), &content).unwrap();
    std::fs::write(out.join("core.img"), b"core").unwrap();
    let (sent, received) =
        within("a directory", async { tokio::join!(opened.send_dir(&out), accepted.recv_dir(&into)) }).await;
    assert_eq!((sent.unwrap(), received.unwrap()), (content.len() as u64 + 4, content.len() as u64 + 4));
    assert_eq!(std::fs::read(into.join("pages-1.img")).unwrap(), content);
    let mut blob = Vec::new();
    let (sent, received) =
        within("a blob", async { tokio::join!(accepted.send_blob(&b"log tail"[..]), opened.recv_blob(&mut blob)) })
            .await;
    assert_eq!((sent.unwrap(), received.unwrap()), (8, 8));
    assert_eq!(blob, b"log tail");

    // Exec sessions come over TLS too.
    let mut exec = within("exec", connect_exec(addr, &ticket, Some(&n2))).await.unwrap();
    let Accepted::Exec(mut node_end) = within("accept", listener.accept()).await.unwrap() else { panic!("not exec") };
    assert!(exec.is_tls() && node_end.is_tls());
    exec.write_all(b"stdin").await.unwrap();
    exec.flush().await.unwrap();
    let mut got = [0u8; 5];
    node_end.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"stdin");

    // Pages connections stay plain TCP (CRIU makes its own TLS inside).
    let mut pages = within("pages", connect_pages(addr, &ticket)).await.unwrap();
    let Accepted::Pages(mut node_pages) = within("accept", listener.accept()).await.unwrap() else {
        panic!("not pages")
    };
    pages.write_all(&[0x16, 3, 1]).await.unwrap();
    let mut got = [0u8; 3];
    node_pages.read_exact(&mut got).await.unwrap();
    assert_eq!(got, [0x16, 3, 1]);
}

/// Connects as `tls` says and expects a TLS refusal whose message holds one of `says`.
async fn refused(addr: std::net::SocketAddr, ticket: &Ticket, tls: Option<&TransferTls>, says: &[&str]) -> String {
    let r = within("a refused connection", connect_control_with(addr, ticket, Budget::unlimited(), tls)).await;
    match r {
        Err(TransferError::Tls(m)) => {
            assert!(says.iter().any(|s| m.contains(s)), "unexpected reason {m:?}, wanted one of {says:?}");
            m
        }
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_the_ticket_still_works() {
    log();
    let p = pki();
    let migration = "m-tls-strangers";
    let ticket = Ticket::generate(migration);
    let listener =
        Listener::bind_with(LOCAL, ticket.clone(), Budget::unlimited(), Some(TransferTls::new(&p.n1).unwrap()))
            .await
            .unwrap();
    let addr = listener.local_addr();

    // No client certificate.
    let m = refused(addr, &ticket, Some(&opener(&p, None)), &["refused", "closed the session"]).await;
    println!("no certificate: {m}");
    println!("listener: {}", warned(migration, "TLS handshake failed: the peer presented no certificate").await);

    // A certificate of another CA (the opener itself trusts the cluster CA).
    let m = refused(addr, &ticket, Some(&opener(&p, Some(&p.stranger))), &["refused", "closed the session"]).await;
    println!("another CA: {m}");
    println!("listener: {}", warned(migration, "UnknownIssuer").await);

    // An expired certificate of the cluster CA.
    let expired = p.ca.issue_into(&node("old"), WEEK, &p.root.join("expired")).unwrap();
    let hour = Duration::from_secs(3600);
    let issued = p.ca.issue_valid(&node("old"), SystemTime::now() - 3 * hour, SystemTime::now() - hour).unwrap();
    std::fs::write(&expired.cert, issued.cert_pem).unwrap();
    std::fs::write(&expired.key, issued.key_pem).unwrap();
    let m = refused(addr, &ticket, Some(&opener(&p, Some(&expired))), &["refused", "closed the session"]).await;
    println!("expired: {m}");
    println!("listener: {}", warned(migration, "Expired").await);

    // A plain-text control hello, and a plain-text exec hello, with the right ticket.
    let m = refused(addr, &ticket, None, &["requires TLS"]).await;
    println!("plain text: {m}");
    println!("listener: {}", warned(migration, "a plain-text Control hello: this node requires TLS").await);
    match within("exec", connect_exec(addr, &ticket, None)).await {
        Err(TransferError::Tls(m)) => assert!(m.contains("requires TLS"), "{m}"),
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
    println!("listener: {}", warned(migration, "a plain-text Exec hello").await);

    // None of that was accepted, and the ticket still opens the listener for the right node.
    let mut good = within(
        "connect",
        connect_control_with(addr, &ticket, Budget::unlimited(), Some(&TransferTls::new(&p.n2).unwrap())),
    )
    .await
    .unwrap();
    let Accepted::Control(mut accepted) = within("accept", listener.accept()).await.unwrap() else {
        panic!("a refused connection was accepted")
    };
    assert_eq!(accepted.peer_identity().as_deref(), Some("n2 (node)"));
    good.send(&1u32).await.unwrap();
    assert_eq!(accepted.recv::<u32>().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opener_checks_the_listener() {
    log();
    let p = pki();
    // A listener with a certificate of another CA: the opener refuses it.
    let migration = "m-tls-wrong-server";
    let ticket = Ticket::generate(migration);
    let stranger = TransferTls::new(&p.stranger).unwrap();
    let listener = Listener::bind_with(LOCAL, ticket.clone(), Budget::unlimited(), Some(stranger)).await.unwrap();
    let n2 = TransferTls::new(&p.n2).unwrap();
    let m = refused(listener.local_addr(), &ticket, Some(&n2), &["UnknownIssuer"]).await;
    assert!(m.contains("the handshake with"), "{m}");
    println!("listener: {}", warned(migration, "TLS handshake failed").await);

    // A listener without TLS: a TLS opener is told, and the listener says why it dropped it.
    let migration = "m-tls-plain-listener";
    let ticket = Ticket::generate(migration);
    let listener = Listener::bind(LOCAL, ticket.clone(), Budget::unlimited()).await.unwrap();
    let m = refused(listener.local_addr(), &ticket, Some(&n2), &["does that node have TLS?"]).await;
    println!("plain listener: {m}");
    println!(
        "listener: {}",
        warned(migration, "it opened a TLS handshake, but this node has no TLS certificate").await
    );
    // Plain text still works there.
    let _plain = within("connect", connect_control(listener.local_addr(), &ticket, Budget::unlimited())).await.unwrap();
    assert!(matches!(within("accept", listener.accept()).await, Ok(Accepted::Control(_))));
}

/// A connected pair of sockets on the loopback.
async fn local_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let l = tokio::net::TcpListener::bind((LOCAL, 0)).await.unwrap();
    let a = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (b, _) = l.accept().await.unwrap();
    (a, b)
}

/// A connection from a "source" to a "destination" through a tap that keeps what the source
/// sends: (the source's end, the destination's end, the tap).
async fn tapped() -> (tokio::net::TcpStream, tokio::net::TcpStream, tokio::task::JoinHandle<Vec<u8>>) {
    let tap = tokio::net::TcpListener::bind((LOCAL, 0)).await.unwrap();
    let destination = tokio::net::TcpListener::bind((LOCAL, 0)).await.unwrap();
    let (tap_addr, dst_addr) = (tap.local_addr().unwrap(), destination.local_addr().unwrap());
    let tapping = tokio::spawn(async move {
        let (mut from_source, _) = tap.accept().await.unwrap();
        let mut to_destination = tokio::net::TcpStream::connect(dst_addr).await.unwrap();
        let (mut a_r, mut a_w) = from_source.split();
        let (mut b_r, mut b_w) = to_destination.split();
        let forward = async {
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let n = a_r.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    let _ = b_w.shutdown().await;
                    return seen;
                }
                seen.extend_from_slice(&buf[..n]);
                b_w.write_all(&buf[..n]).await.unwrap();
            }
        };
        let back = async {
            let _ = tokio::io::copy(&mut b_r, &mut a_w).await;
            let _ = a_w.shutdown().await;
        };
        tokio::join!(forward, back).0
    });
    let source = tokio::net::TcpStream::connect(tap_addr).await.unwrap();
    let (dest, _) = destination.accept().await.unwrap();
    (source, dest, tapping)
}

/// A pages connection sealed at both ends, with a relay to a plain "CRIU" socket on each
/// side: what one CRIU sends reaches the other whole, both ways, ending cleanly, and only
/// ciphertext crosses between the nodes. A peer of another cluster cannot take part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_pages_cross_as_ciphertext_and_reach_criu_plain() {
    log();
    let p = pki();
    let (n1, n2) = (TransferTls::new(&p.n1).unwrap(), TransferTls::new(&p.n2).unwrap());
    let (source_link, dest_link, tap) = tapped().await;
    let (mut criu_src, relay_src) = local_pair().await;
    let (relay_dst, mut criu_dst) = local_pair().await;
    let source = tokio::spawn(async move {
        let sealed = seal(source_link, &n2, SealRole::Opener(LOCAL), WAIT).await.unwrap();
        herd_node::relay::relay_sealed(relay_src, sealed, &Budget::unlimited(), false).await.unwrap()
    });
    let destination = tokio::spawn(async move {
        let sealed = seal(dest_link, &n1, SealRole::Listener, WAIT).await.unwrap();
        herd_node::relay::relay_sealed(relay_dst, sealed, &Budget::unlimited(), false).await.unwrap()
    });
    // A request and its answer, each on its own with nothing after it: a relay must pass
    // each on at once (CRIU's lazy pages ask and wait).
    for round in 0..3u8 {
        criu_dst.write_all(&[round; 32]).await.unwrap();
        let mut request = [0u8; 32];
        within("a request", criu_src.read_exact(&mut request)).await.unwrap();
        assert_eq!(request, [round; 32]);
        criu_src.write_all(&[round; 4096]).await.unwrap();
        let mut answer = [0u8; 4096];
        within("an answer", criu_dst.read_exact(&mut answer)).await.unwrap();
        assert_eq!(answer, [round; 4096]);
    }
    // A burst that fills the sockets' buffers (its reader waits first), with nothing after
    // it: its last bytes must still arrive.
    let burst = vec![7u8; 16 << 20];
    let (_, got) = tokio::join!(criu_src.write_all(&burst), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut got = vec![0u8; burst.len()];
        within("the whole burst", criu_dst.read_exact(&mut got)).await.unwrap();
        got
    });
    assert!(got == burst, "the burst arrived changed");
    // 4 MiB of "pages" one way, an answer the other.
    let pages: Vec<u8> = b"PAGE-CONTENT-".iter().copied().cycle().take(4 << 20).collect();
    criu_src.write_all(&pages).await.unwrap();
    criu_src.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("the pages", criu_dst.read_to_end(&mut got)).await.unwrap();
    assert!(got == pages, "the pages arrived changed ({} bytes of {})", got.len(), pages.len());
    criu_dst.write_all(b"done").await.unwrap();
    criu_dst.shutdown().await.unwrap();
    let mut answer = Vec::new();
    within("the answer", criu_src.read_to_end(&mut answer)).await.unwrap();
    assert_eq!(answer, b"done");
    let sent = (4 << 20) + (16 << 20) + 3 * 4096;
    assert_eq!(within("the source's relay", source).await.unwrap(), (sent, 4 + 3 * 32));
    assert_eq!(within("the destination's relay", destination).await.unwrap(), (4 + 3 * 32, sent));
    let crossed = within("the tap", tap).await.unwrap();
    assert!(crossed.len() > 4 << 20, "TLS records hold the pages and more");
    assert!(!crossed.windows(13).any(|w| w == b"PAGE-CONTENT-"), "plain text crossed between the nodes");

    // Another cluster's node cannot seal with this one, as either end.
    let stranger = opener(&p, Some(&p.stranger));
    let (a, b) = local_pair().await;
    let n1 = TransferTls::new(&p.n1).unwrap();
    let (opened, listened) =
        tokio::join!(seal(a, &stranger, SealRole::Opener(LOCAL), WAIT), seal(b, &n1, SealRole::Listener, WAIT));
    assert!(matches!(listened, Err(TransferError::Tls(_))), "{listened:?}");
    let _ = opened; // (TLS 1.3: the opener may finish before the listener's refusal)
    let (a, b) = local_pair().await;
    let (foreign_listener, n2) = (TransferTls::new(&p.stranger).unwrap(), TransferTls::new(&p.n2).unwrap());
    let (opened, _) =
        tokio::join!(seal(a, &n2, SealRole::Opener(LOCAL), WAIT), seal(b, &foreign_listener, SealRole::Listener, WAIT));
    assert!(matches!(opened, Err(TransferError::Tls(_))), "{opened:?}");
}
