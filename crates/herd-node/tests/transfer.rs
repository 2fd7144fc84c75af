//! Integration tests of `herd_node::transfer` over loopback TCP: authentication, messages,
//! directories, blobs, splicing, failures of either end, and the bandwidth budget.
//!
//! The `throughput_*` tests print (and do not check) the unlimited throughput over loopback;
//! see them with `cargo test -p herd-node --test transfer throughput -- --nocapture`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use herd_node::relay::relay;
use herd_node::transfer::{
    Accepted, Budget, Channel, HELLO_TIMEOUT, Listener, MAGIC, Ticket, TransferError, connect_control, connect_pages,
    connect_pre_dump,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Upper bound of anything a test waits for: a hang fails the test instead of blocking it.
const WAIT: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("{what}: no result within {WAIT:?}"))
}

/// A connected pair of channels: (the listener's end, the opener's end), the opener with
/// `budget`.
async fn pair(budget: Budget) -> (Channel, Channel) {
    let ticket = Ticket::generate("m-pair");
    let listener = Listener::bind(LOCAL, ticket.clone(), Budget::unlimited()).await.unwrap();
    let opener = connect_control(listener.local_addr(), &ticket, budget).await.unwrap();
    match within("accept", listener.accept()).await.unwrap() {
        Accepted::Control(accepted) => (accepted, opener),
        Accepted::Pages(_) | Accepted::PreDump(..) | Accepted::Exec(_) => {
            panic!("a control connection was accepted as another kind")
        }
    }
}

/// `len` bytes of a pattern that depends on `seed` and on the position.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_add(seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect()
}

fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return hex::encode(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// (size, mode, sha256) of every file in `dir`, by name.
fn describe_dir(dir: &Path) -> Vec<(String, u64, u32, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, meta.len(), meta.permissions().mode() & 0o7777, sha256_file(&e.path()))
        })
        .collect();
    files.sort();
    files
}

fn write_file(path: &Path, content: &[u8], mode: u32) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Msg {
    Images { files: u32 },
    RestoreNow { lazy: bool },
    Running { pid: u32 },
    Failed { message: String },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_both_ways() {
    let (mut dest, mut source) = pair(Budget::unlimited()).await;
    source.send(&Msg::Images { files: 3 }).await.unwrap();
    source.send(&Msg::RestoreNow { lazy: true }).await.unwrap();
    assert_eq!(dest.recv::<Msg>().await.unwrap(), Msg::Images { files: 3 });
    assert_eq!(dest.recv::<Msg>().await.unwrap(), Msg::RestoreNow { lazy: true });
    dest.send(&Msg::Running { pid: 42 }).await.unwrap();
    assert_eq!(source.recv::<Msg>().await.unwrap(), Msg::Running { pid: 42 });

    // A large message, while the other side also talks.
    let message = "x".repeat(3 * MIB);
    let big = Msg::Failed { message: message.clone() };
    let (sent, received) =
        within("a large message", async { tokio::join!(dest.send(&big), source.recv::<Msg>()) }).await;
    sent.unwrap();
    assert_eq!(received.unwrap(), Msg::Failed { message });

    assert_eq!(source.bytes_sent(), dest.bytes_received());
    assert_eq!(dest.bytes_sent(), source.bytes_received());
    assert!(dest.bytes_sent() > 3 * MIB as u64);

    // A message of another type does not decode, and the channel goes on.
    source.send(&"not a Msg").await.unwrap();
    assert!(matches!(dest.recv::<Msg>().await, Err(TransferError::Json { .. })));
    source.send(&Msg::Running { pid: 7 }).await.unwrap();
    assert_eq!(dest.recv::<Msg>().await.unwrap(), Msg::Running { pid: 7 });

    drop(source);
    let r = within("recv after close", dest.recv::<Msg>()).await;
    assert!(matches!(r, Err(TransferError::Closed)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_arrive_whole_with_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("images");
    std::fs::create_dir(&src).unwrap();
    write_file(&src.join("core-1.img"), &pattern(10_000, 1), 0o600);
    write_file(&src.join("empty.img"), b"", 0o644);
    write_file(&src.join("exec"), &pattern(100, 2), 0o755);
    write_file(&src.join("inventory.img"), &pattern(3 * MIB + 11, 3), 0o400);
    // 256 MiB, mostly holes, with data at the start, in the middle and at the end.
    let pages = std::fs::File::create(src.join("pages-1.img")).unwrap();
    pages.set_len(256 << 20).unwrap();
    pages.write_all_at(&pattern(5000, 4), 0).unwrap();
    pages.write_all_at(&pattern(MIB + 3, 5), (100 << 20) + 3).unwrap();
    pages.write_all_at(&pattern(7, 6), (256 << 20) - 7).unwrap();
    drop(pages);
    std::fs::set_permissions(src.join("pages-1.img"), std::fs::Permissions::from_mode(0o640)).unwrap();

    let dst = tmp.path().join("received/images");
    let (mut dest, mut source) = pair(Budget::unlimited()).await;
    let (sent, received) =
        within("directory transfer", async { tokio::join!(source.send_dir(&src), dest.recv_dir(&dst)) }).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    let expected = 10_000 + 100 + 3 * MIB as u64 + 11 + (256 << 20);
    assert_eq!((sent, received), (expected, expected));

    let (want, got) = tokio::task::spawn_blocking(move || (describe_dir(&src), describe_dir(&dst))).await.unwrap();
    assert_eq!(want.len(), 5);
    assert_eq!(got, want);

    // The channel is still in step after the transfer.
    dest.send(&Msg::Running { pid: 1 }).await.unwrap();
    assert_eq!(source.recv::<Msg>().await.unwrap(), Msg::Running { pid: 1 });

    // An empty directory is a directory too.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty_received = tmp.path().join("empty-received");
    let (sent, received) =
        within("empty directory", async { tokio::join!(source.send_dir(&empty), dest.recv_dir(&empty_received)) })
            .await;
    assert_eq!((sent.unwrap(), received.unwrap()), (0, 0));
    assert_eq!(std::fs::read_dir(tmp.path().join("empty-received")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_flat_directories_of_regular_files_are_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let with_subdir = tmp.path().join("a");
    std::fs::create_dir_all(with_subdir.join("sub")).unwrap();
    write_file(&with_subdir.join("f"), b"data", 0o600);
    let with_symlink = tmp.path().join("b");
    std::fs::create_dir(&with_symlink).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", with_symlink.join("link")).unwrap();

    for dir in [with_subdir, with_symlink] {
        let (mut dest, mut source) = pair(Budget::unlimited()).await;
        let target = tmp.path().join("out");
        let (sent, received) =
            within("refused directory", async { tokio::join!(source.send_dir(&dir), dest.recv_dir(&target)) }).await;
        assert!(matches!(sent, Err(TransferError::Protocol(_))), "{}: {sent:?}", dir.display());
        // The receiver learns why.
        match received {
            Err(TransferError::Remote(why)) => assert!(why.contains(&dir.display().to_string()), "{why}"),
            other => panic!("{}: {other:?}", dir.display()),
        }
        // Both channels are closed now.
        assert!(matches!(source.send(&1).await, Err(TransferError::Broken)));
        assert!(matches!(dest.recv::<u32>().await, Err(TransferError::Broken)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_tells_the_sender_why() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_file(&src.join("a.img"), &pattern(MIB, 1), 0o600);
    write_file(&src.join("b.img"), &pattern(32 * MIB, 2), 0o600);
    // The receiving directory already holds a file of the same name.
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    write_file(&dst.join("b.img"), b"old", 0o600);

    let (mut dest, mut source) = pair(Budget::unlimited()).await;
    let (sent, received) =
        within("directory transfer", async { tokio::join!(source.send_dir(&src), dest.recv_dir(&dst)) }).await;
    match received {
        Err(TransferError::Io { what, source }) => {
            assert!(what.contains("b.img"), "{what}");
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists);
        }
        other => panic!("{other:?}"),
    }
    match sent {
        Err(TransferError::Remote(why)) => assert!(why.contains("b.img"), "{why}"),
        other => panic!("{other:?}"),
    }
    // What the failed transfer had written is gone; what was there stays.
    let names: Vec<_> = std::fs::read_dir(&dst).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["b.img"]);
    assert_eq!(std::fs::read(dst.join("b.img")).unwrap(), b"old");
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_stream_a_tar_between_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = vec![
        ("etc/hostname".into(), b"herd\n".to_vec()),
        ("var/lib/data.bin".into(), pattern(20 * MIB + 123, 7)),
        ("empty".into(), Vec::new()),
    ];

    // The sender's tar is made on a thread writing into a pipe.
    let (pipe_r, pipe_w) = std::io::pipe().unwrap();
    let packer = {
        let files = files.clone();
        std::thread::spawn(move || {
            let mut tar = tar::Builder::new(Hashing { inner: pipe_w, hasher: Sha256::new(), bytes: 0 });
            for (name, content) in &files {
                let mut header = tar::Header::new_gnu();
                header.set_size(content.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                tar.append_data(&mut header, name, &content[..]).unwrap();
            }
            let out = tar.into_inner().unwrap();
            (hex::encode(out.hasher.finalize()), out.bytes)
        })
    };
    let from_tar = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(pipe_r)).unwrap();

    // The receiver's tar is unpacked on a thread reading from a pipe.
    let (unpack_r, unpack_w) = std::io::pipe().unwrap();
    let unpacker = {
        let root = tmp.path().join("root");
        std::thread::spawn(move || {
            let mut hashing = HashingReader { inner: unpack_r, hasher: Sha256::new() };
            tar::Archive::new(&mut hashing).unpack(&root).unwrap();
            // Whatever follows the archive's end (its padding) counts for the hash too.
            std::io::copy(&mut hashing, &mut std::io::sink()).unwrap();
            hex::encode(hashing.hasher.finalize())
        })
    };
    let to_untar = tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(unpack_w)).unwrap();

    let (mut dest, mut source) = pair(Budget::unlimited()).await;
    let (sent, received) =
        within("blob transfer", async { tokio::join!(source.send_blob(from_tar), dest.recv_blob(to_untar)) }).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    let (tar_hash, tar_bytes) = packer.join().unwrap();
    let unpacked_hash = unpacker.join().unwrap();
    assert_eq!((sent, received), (tar_bytes, tar_bytes));
    assert_eq!(unpacked_hash, tar_hash);
    for (name, content) in &files {
        assert_eq!(&std::fs::read(tmp.path().join("root").join(name)).unwrap(), content, "{name}");
    }

    // An empty blob, into memory.
    let mut out = Vec::new();
    let (sent, received) =
        within("empty blob", async { tokio::join!(source.send_blob(&b""[..]), dest.recv_blob(&mut out)) }).await;
    assert_eq!((sent.unwrap(), received.unwrap()), (0, 0));
    assert!(out.is_empty());
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn raw_hello(version: u16, json: &str) -> Vec<u8> {
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&version.to_be_bytes());
    hello.extend_from_slice(&(json.len() as u32).to_be_bytes());
    hello.extend_from_slice(json.as_bytes());
    hello
}

/// Reads until the listener closes the connection; returns what it sent before.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    // A reset (the listener closed with unread data) counts as closed.
    let _ = within("the listener closing", stream.read_to_end(&mut got)).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hellos_are_dropped_and_good_ones_get_through() {
    let ticket = Ticket::generate("m-auth");
    let listener = Listener::bind(LOCAL, ticket.clone(), Budget::unlimited()).await.unwrap();
    let addr = listener.local_addr();
    let started = Instant::now();

    // Clients that say nothing, or half a hello.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(&raw_hello(1, r#"{"migration":"m-auth","tok"#)[..20]).await.unwrap();

    // Garbage, and other protocol versions.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: herd\r\n\r\n").await.unwrap();
    let mut future = TcpStream::connect(addr).await.unwrap();
    future.write_all(&raw_hello(2, r#"{"whatever":1}"#)).await.unwrap();
    let mut malformed = TcpStream::connect(addr).await.unwrap();
    malformed.write_all(&raw_hello(1, r#"{"migration":"m-auth"}"#)).await.unwrap();

    // Wrong tickets.
    let wrong_token = Ticket { migration: ticket.migration.clone(), token: Ticket::generate("m-auth").token };
    let r = connect_control(addr, &wrong_token, Budget::unlimited()).await;
    assert!(matches!(r, Err(TransferError::Auth)), "{r:?}");
    let wrong_migration = Ticket { migration: "m-other".into(), token: ticket.token.clone() };
    let r = connect_pages(addr, &wrong_migration).await;
    assert!(matches!(r, Err(TransferError::Auth)), "{r:?}");
    let no_token = Ticket { migration: ticket.migration.clone(), token: String::new() };
    let r = connect_control(addr, &no_token, Budget::unlimited()).await;
    assert!(matches!(r, Err(TransferError::Auth)), "{r:?}");
    let short_token = Ticket { migration: ticket.migration.clone(), token: ticket.token[..63].to_string() };
    let r = connect_control(addr, &short_token, Budget::unlimited()).await;
    assert!(matches!(r, Err(TransferError::Auth)), "{r:?}");

    // A good client gets through at once, without waiting for the silent ones.
    let mut good = connect_control(addr, &ticket, Budget::unlimited()).await.unwrap();
    let Accepted::Control(mut accepted) = within("accept", listener.accept()).await.unwrap() else {
        panic!("not a control connection")
    };
    assert!(started.elapsed() < HELLO_TIMEOUT, "held up for {:?}", started.elapsed());
    good.send(&Msg::Running { pid: 9 }).await.unwrap();
    assert_eq!(accepted.recv::<Msg>().await.unwrap(), Msg::Running { pid: 9 });
    accepted.send(&Msg::Images { files: 1 }).await.unwrap();
    assert_eq!(good.recv::<Msg>().await.unwrap(), Msg::Images { files: 1 });

    // The rejected ones are closed: garbage and malformed hellos without an answer, other
    // versions with "unsupported version" (2).
    assert_eq!(read_until_closed(&mut garbage).await, b"");
    assert_eq!(read_until_closed(&mut malformed).await, b"");
    assert_eq!(read_until_closed(&mut future).await, [2]);
    assert!(started.elapsed() < HELLO_TIMEOUT);

    // Pages connections are accepted as such.
    let mut pages = connect_pages(addr, &ticket).await.unwrap();
    let Accepted::Pages(mut accepted_pages) = within("accept", listener.accept()).await.unwrap() else {
        panic!("not a pages connection")
    };
    pages.write_all(b"page request").await.unwrap();
    let mut buf = [0u8; 12];
    accepted_pages.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"page request");
    // And a pre-copy round's, with its round.
    let _round = connect_pre_dump(addr, &ticket, 3).await.unwrap();
    assert!(matches!(within("accept", listener.accept()).await, Ok(Accepted::PreDump(_, 3))));

    // The silent clients are dropped after the hello timeout.
    assert_eq!(read_until_closed(&mut silent).await, b"");
    assert_eq!(read_until_closed(&mut partial).await, b"");
    let waited = started.elapsed();
    assert!(waited >= HELLO_TIMEOUT && waited < HELLO_TIMEOUT + Duration::from_secs(5), "{waited:?}");

    // And the listener still works.
    let _late = connect_control(addr, &ticket, Budget::unlimited()).await.unwrap();
    assert!(matches!(within("accept", listener.accept()).await, Ok(Accepted::Control(_))));
}

/// Opens `n` connections to `addr` from `from` that never say a word; those that cannot
/// connect within 3 s are left out.
async fn idle_connections(from: IpAddr, addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let connects = (0..n).map(|_| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        tokio::time::timeout(Duration::from_secs(3), socket.connect(addr)).await.ok()?.ok()
    });
    futures::future::join_all(connects).await.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_connections_do_not_keep_a_migration_out() {
    let ticket = Ticket::generate("m-flood");
    let listener =
        Listener::bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED), ticket.clone(), Budget::unlimited()).await.unwrap();
    let addr = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, listener.local_addr().port()));
    let started = Instant::now();
    // Three hundred from one address, and a hundred more from each of three others (the
    // migration's own connection comes from 127.0.0.1).
    let mut idle = idle_connections(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), addr, 300).await;
    for last in 3..=5 {
        idle.extend(idle_connections(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), addr, 100).await);
    }
    assert!(idle.len() >= 500, "only {} idle connections could be opened", idle.len());

    // A migration's connection gets through at once and works.
    let opened = Instant::now();
    let mut good = within("the migration's connection", connect_control(addr, &ticket, Budget::unlimited()))
        .await
        .expect("a migration connects despite the idle connections");
    let Accepted::Control(mut accepted) = within("accept", listener.accept()).await.unwrap() else {
        panic!("not a control connection")
    };
    assert!(opened.elapsed() < Duration::from_secs(2), "held up for {:?}", opened.elapsed());
    good.send(&Msg::Running { pid: 1 }).await.unwrap();
    assert_eq!(accepted.recv::<Msg>().await.unwrap(), Msg::Running { pid: 1 });

    // Every idle connection is closed: at once beyond its peer's share, the others when their
    // hello time is up.
    for mut s in idle {
        assert_eq!(read_until_closed(&mut s).await, b"");
    }
    let waited = started.elapsed();
    assert!(waited < HELLO_TIMEOUT + Duration::from_secs(5), "the idle connections were closed after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_dir_fails_when_the_receiver_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let pages = std::fs::File::create(tmp.path().join("pages-1.img")).unwrap();
    pages.set_len(64 << 20).unwrap();
    let (dest, mut source) = pair(Budget::unlimited()).await;
    drop(dest);
    let r = within("send_dir to a closed peer", source.send_dir(tmp.path())).await;
    assert!(r.is_err(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_blob_fails_when_the_sender_dies_mid_blob() {
    let (mut dest, mut source) = pair(Budget::unlimited()).await;
    let (mut feed, feed_r) = tokio::io::duplex(64 << 10);
    let (out_w, mut out) = tokio::io::duplex(64 << 10);
    let sender = tokio::spawn(async move { source.send_blob(feed_r).await });
    let receiver = tokio::spawn(async move { dest.recv_blob(out_w).await });

    let data = pattern(256 << 10, 9);
    feed.write_all(&data).await.unwrap();
    let mut got = vec![0u8; data.len()];
    within("the first bytes", out.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, data);
    // The blob is half way (its source is still open): the sender dies.
    sender.abort();
    assert!(sender.await.unwrap_err().is_cancelled());
    let r = within("recv_blob after the sender died", receiver).await.unwrap();
    assert!(matches!(r, Err(TransferError::Closed)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_blob_fails_when_the_receiver_dies_mid_blob() {
    let (mut dest, mut source) = pair(Budget::unlimited()).await;
    let (mut feed, feed_r) = tokio::io::duplex(64 << 10);
    let (out_w, mut out) = tokio::io::duplex(64 << 10);
    let sender = tokio::spawn(async move { source.send_blob(feed_r).await });
    let receiver = tokio::spawn(async move { dest.recv_blob(out_w).await });
    // An endless source.
    let feeder = tokio::spawn(async move {
        let chunk = pattern(64 << 10, 3);
        while feed.write_all(&chunk).await.is_ok() {}
    });

    let mut got = vec![0u8; 256 << 10];
    within("the first bytes", out.read_exact(&mut got)).await.unwrap();
    receiver.abort();
    assert!(receiver.await.unwrap_err().is_cancelled());
    let r = within("send_blob after the receiver died", sender).await.unwrap();
    assert!(r.is_err(), "{r:?}");
    within("the feeder", feeder).await.unwrap();
}

/// Two ends of a loopback TCP connection.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(listener.local_addr().unwrap()), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_copies_both_ways_and_half_closes() {
    let (mut left, left_inner) = tcp_pair().await;
    let (right_inner, mut right) = tcp_pair().await;
    let relayed = tokio::spawn(async move { relay(left_inner, right_inner, &Budget::unlimited()).await });

    let x = pattern(3 * MIB + 17, 1);
    let y = pattern(MIB + 5, 2);
    let (x2, y2) = (x.clone(), y.clone());
    let left_side = tokio::spawn(async move {
        left.write_all(&x2).await.unwrap();
        left.shutdown().await.unwrap();
        // Its own write side is shut; it still gets the answer.
        let mut back = Vec::new();
        left.read_to_end(&mut back).await.unwrap();
        back
    });
    // The right side sees all of x and then EOF before it answers: the half-close went
    // through while the other direction stays open.
    let mut got = Vec::new();
    within("x", right.read_to_end(&mut got)).await.unwrap();
    assert!(got == x, "x differs");
    right.write_all(&y2).await.unwrap();
    right.shutdown().await.unwrap();
    let back = within("y", left_side).await.unwrap();
    assert!(back == y, "y differs");
    let (a_to_b, b_to_a) = within("the relay", relayed).await.unwrap().unwrap();
    assert_eq!((a_to_b, b_to_a), (x.len() as u64, y.len() as u64));
}

/// The page-server path of a migration: CRIU on the source connects to its agent, which
/// opens an authenticated pages connection to the destination's agent, which connects to the
/// local page server; both agents relay.
async fn page_path(budget: Budget) -> (TcpStream, TcpStream, tokio::task::JoinHandle<[(u64, u64); 2]>) {
    let ticket = Ticket::generate("m-pages");
    let dest_listener = Listener::bind(LOCAL, ticket.clone(), budget.clone()).await.unwrap();
    let page_server = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let source_proxy = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let (server_addr, proxy_addr, dest_addr) =
        (page_server.local_addr().unwrap(), source_proxy.local_addr().unwrap(), dest_listener.local_addr());

    let agents = tokio::spawn(async move {
        let dest_agent = async {
            let Accepted::Pages(remote) = dest_listener.accept().await.unwrap() else { panic!("not pages") };
            let local = TcpStream::connect(server_addr).await.unwrap();
            relay(remote, local, &budget).await.unwrap()
        };
        let source_agent = async {
            let (local, _) = source_proxy.accept().await.unwrap();
            let remote = connect_pages(dest_addr, &ticket).await.unwrap();
            relay(local, remote, &budget).await.unwrap()
        };
        let (d, s) = tokio::join!(dest_agent, source_agent);
        [s, d]
    });
    let criu = TcpStream::connect(proxy_addr).await.unwrap();
    let (server, _) = page_server.accept().await.unwrap();
    (criu, server, agents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_go_through_two_authenticated_relays() {
    let (mut criu, mut server, agents) = page_path(Budget::unlimited()).await;
    let pages = pattern(5 * MIB + 1, 4);
    let pages2 = pages.clone();
    let writer = tokio::spawn(async move {
        criu.write_all(&pages2).await.unwrap();
        criu.shutdown().await.unwrap();
        let mut answer = Vec::new();
        criu.read_to_end(&mut answer).await.unwrap();
        answer
    });
    let mut got = Vec::new();
    within("pages", server.read_to_end(&mut got)).await.unwrap();
    assert!(got == pages);
    server.write_all(b"ok").await.unwrap();
    drop(server);
    assert_eq!(within("answer", writer).await.unwrap(), b"ok");
    let counts = within("agents", agents).await.unwrap();
    assert_eq!(counts, [(pages.len() as u64, 2), (pages.len() as u64, 2)]);
}

/// Sends `streams` blobs of `bytes` each at once, over channels sharing `budget`; returns the
/// time until the last one was received, and each one's.
async fn timed_blobs(budget: Budget, streams: usize, bytes: usize) -> (Duration, Vec<Duration>) {
    let mut pairs = Vec::new();
    for _ in 0..streams {
        pairs.push(pair(budget.clone()).await);
    }
    let data = pattern(bytes, 5);
    let started = Instant::now();
    let tasks: Vec<_> = pairs
        .into_iter()
        .map(|(mut dest, mut source)| {
            let data = data.clone();
            tokio::spawn(async move {
                let (sent, received) = tokio::join!(source.send_blob(&data[..]), dest.recv_blob(tokio::io::sink()));
                assert_eq!((sent.unwrap(), received.unwrap()), (data.len() as u64, data.len() as u64));
                started.elapsed()
            })
        })
        .collect();
    let mut each = Vec::new();
    for t in tasks {
        each.push(within("budgeted blob", t).await.unwrap());
    }
    (started.elapsed(), each)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_one_stream() {
    let (took, _) = timed_blobs(Budget::new(Some(4 * MIB as u64)), 1, 8 * MIB).await;
    println!("8 MiB at 4 MiB/s: {took:?}");
    assert!(took > Duration::from_millis(1500) && took < Duration::from_secs(4), "{took:?}");

    // Unlimited, the same takes well under the limited time: the limiter made the difference.
    let (took, _) = timed_blobs(Budget::unlimited(), 1, 8 * MIB).await;
    println!("8 MiB unlimited: {took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_shared_between_streams() {
    let (took, each) = timed_blobs(Budget::new(Some(4 * MIB as u64)), 2, 4 * MIB).await;
    println!("2 x 4 MiB at 4 MiB/s together: {took:?} (each: {each:?})");
    assert!(took > Duration::from_millis(1500) && took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_relays_too() {
    let (mut criu, mut server, agents) = page_path(Budget::new(Some(4 * MIB as u64))).await;
    let data = pattern(6 * MIB, 6);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        criu.write_all(&data).await.unwrap();
        criu.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    within("pages", server.read_to_end(&mut got)).await.unwrap();
    let took = started.elapsed();
    drop(server);
    writer.await.unwrap();
    within("agents", agents).await.unwrap();
    println!("6 MiB through two relays sharing 4 MiB/s: {took:?}");
    // Each agent charges the bytes it writes: both relays share one bucket here (as if one
    // node did both), so 6 MiB costs 12 MiB of budget.
    assert!(took > Duration::from_millis(2200) && took < Duration::from_secs(6), "{took:?}");
}

fn mb_per_sec(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_send_dir_1gib() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(src.join("pages-1.img")).unwrap());
        let chunk = pattern(MIB, 1);
        for _ in 0..1024 {
            f.write_all(&chunk).unwrap();
        }
        f.flush().unwrap();
    }
    let (mut dest, mut source) = pair(Budget::unlimited()).await;
    let dst = tmp.path().join("dst");
    let started = Instant::now();
    let (sent, received) =
        within("1 GiB directory", async { tokio::join!(source.send_dir(&src), dest.recv_dir(&dst)) }).await;
    let took = started.elapsed();
    assert_eq!((sent.unwrap(), received.unwrap()), (1 << 30, 1 << 30));
    println!("send_dir of 1 GiB over loopback: {took:?}, {:.0} MB/s", mb_per_sec(1 << 30, took));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_send_blob_1gib() {
    let (mut dest, mut source) = pair(Budget::unlimited()).await;
    let started = Instant::now();
    let (sent, received) = within("1 GiB blob", async {
        tokio::join!(source.send_blob(tokio::io::repeat(7).take(1 << 30)), dest.recv_blob(tokio::io::sink()))
    })
    .await;
    let took = started.elapsed();
    assert_eq!((sent.unwrap(), received.unwrap()), (1 << 30, 1 << 30));
    println!("send_blob of 1 GiB over loopback, memory to memory: {took:?}, {:.0} MB/s", mb_per_sec(1 << 30, took));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_relay_1gib() {
    let (mut left, left_inner) = tcp_pair().await;
    let (right_inner, mut right) = tcp_pair().await;
    let relayed = tokio::spawn(async move { relay(left_inner, right_inner, &Budget::unlimited()).await });
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; MIB];
        for _ in 0..1024 {
            left.write_all(&chunk).await.unwrap();
        }
        left.shutdown().await.unwrap();
        left
    });
    let n = within("1 GiB relayed", tokio::io::copy(&mut right, &mut tokio::io::sink())).await.unwrap();
    let took = started.elapsed();
    drop(right);
    drop(writer.await.unwrap());
    assert_eq!(n, 1 << 30);
    assert_eq!(within("the relay", relayed).await.unwrap().unwrap(), (1 << 30, 0));
    println!("relay of 1 GiB over loopback: {took:?}, {:.0} MB/s", mb_per_sec(1 << 30, took));
}

#[test]
fn tickets_serialize_for_the_broker() {
    let t = Ticket::generate("m-1");
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(serde_json::from_str::<Ticket>(&json).unwrap(), t);
    assert!(!format!("{t:?}").contains(&t.token));
}
