//! Node-to-node transfers of a live migration: every byte a migration moves goes over TCP
//! connections between the two agents (never a shared directory), authenticated with a
//! one-time [`Ticket`] the Control node hands to both nodes over the broker, and limited by
//! the migration's bandwidth [`Budget`].
//!
//! One end [`Listener::bind`]s (the destination; for post-copy pages the source too), the
//! other opens connections with [`connect_control`] or [`connect_pages`]. A control
//! connection is a [`Channel`]: typed messages ([`Channel::send`], [`Channel::recv`]) and bulk
//! data (a flat directory of CRIU images with [`Channel::send_dir`], a stream of unknown length
//! such as the writable layer's tar or the log tail with [`Channel::send_blob`]), both ways,
//! one thing at a time: the two ends take turns like a conversation. A pages connection is a
//! plain authenticated TCP stream that the agents relay ([`crate::relay`]) to CRIU's page-server sockets.
//!
//! # Wire format
//!
//! Integers are big-endian. A connection starts with the opener's hello:
//!
//! ```text
//! "HERDXFER" (8 bytes) | version: u16 = 1 | length: u32 (<= 4096) | JSON {"migration", "token", "purpose"}
//! ```
//!
//! `purpose` is `"control"`, `"pages"`, `{"pre_dump": {"round": N}}` or `"exec"`. The listener
//! answers with one byte: 0 accepted, 1 ticket refused, 2 unsupported version, 3 TLS required
//! (a plain-text control or exec hello to a node with TLS), 4 plain text required (a pages
//! hello inside TLS), then closes unless it accepted. Connections without
//! a complete hello within [`HELLO_TIMEOUT`], with a wrong magic or malformed JSON are closed
//! without an answer. At most [`crate::hello_slots::PER_PEER`] connections per peer address and
//! [`crate::hello_slots::TOTAL`] in all wait for their hello; the listener never stops
//! accepting (see [`crate::hello_slots`]). The token is compared in constant time. After the answer a pages
//! connection carries raw bytes (CRIU's page-server protocol) and a control connection carries
//! frames, both ways:
//!
//! ```text
//! type: u8 | length: u32 | payload (length bytes)
//! ```
//!
//! | type | payload | meaning |
//! |---|---|---|
//! | 1 MSG | JSON, <= 16 MiB | one message of [`Channel::send`] |
//! | 2 DIR | JSON `{"files", "bytes"}` | a directory follows: that many files and file bytes |
//! | 3 FILE | JSON `{"name", "size", "mode"}` | a file of the directory follows: `size` bytes of DATA |
//! | 4 DATA | raw bytes, <= 1 MiB | file or blob content |
//! | 5 END | JSON `{"files", "bytes"}` | end of a directory or blob, with the totals sent |
//! | 6 BLOB | empty | a blob of unknown length follows as DATA frames |
//! | 7 DONE | JSON `{"files", "bytes"}` | the receiver stored the whole directory or blob |
//! | 8 ABORT | JSON `{"message"}` | the sender of this frame gave up the transfer, and why |
//!
//! A directory is `DIR (FILE DATA*)* END` answered by `DONE`; a blob is `BLOB DATA* END`
//! answered by `DONE`, so a send returns only once the other end has everything. A side that
//! fails in the middle of a transfer sends ABORT if it still can and closes the connection; the
//! other side then fails with [`TransferError::Remote`] (or the I/O error of the broken
//! connection). After any error other than an undecodable message the [`Channel`] is closed,
//! and so it is when a call is cancelled half way (its future dropped, e.g. by a timeout):
//! the next call gives [`TransferError::Broken`].
//!
//! # TLS
//!
//! A node with TLS files ([`TransferTls`], from `herd node --tls-*`) runs its control and exec
//! connections over TLS 1.2/1.3 (rustls, ring): the opener checks the listener's certificate
//! against the cluster CA and the address it connects to (a node's certificate holds its
//! address), the listener requires a client certificate of the same CA, and the hello, its
//! ticket and every frame travel inside the session. The listener tells the two apart by the
//! first byte (a TLS handshake record starts with 22, a hello with `H`), so one port takes
//! both kinds of connection:
//!
//! ```text
//! control, exec:   TCP | TLS handshake (both certificates checked) | hello | answer | frames...
//! pages, pre-dump: TCP | hello | answer | CRIU's TLS handshake (both certificates checked) | pages...
//! ```
//!
//! Pages connections stay outside Herd's TLS: the two CRIUs encrypt them end to end with their
//! own TLS (gnutls; `--tls` with the node's files, see [`crate::page_server`] and
//! [`crate::criu_config`]), and the agents and `herd page-proxy` relay the ciphertext with
//! `splice(2)`, as they relay plain pages. Their hello, ticket included, crosses the network
//! in the clear before CRIU's handshake. That is acceptable: the ticket is one migration's,
//! valid only while its listener lives; it opens no control or exec connection (those need a
//! certificate of the cluster CA as well); and a pages connection opened with a stolen ticket
//! reaches a CRIU that refuses any peer without such a certificate. What an eavesdropper can
//! do with it is what it can do without it: break the migration's connections (which then
//! fails and leaves the container running on the source).
//!
//! A refused TLS connection (no client certificate, one of another CA or expired, a plain-text
//! control or exec hello to a TLS listener, a TLS handshake to a listener without TLS) is
//! logged by the listener with the peer's address and why, fails the opener with
//! [`TransferError::Tls`], and changes nothing: the ticket stays valid for the right peer.
//! Without TLS files a node speaks plain text, as before.
//!
//! # Budget and speed
//!
//! A node charges its [`Budget`] for every byte it writes to the migration's connections
//! (frames on a channel; both directions of a [`crate::relay::relay`], as the agent writes both). Bulk data
//! moves in 1 MiB frames (smaller ones under a low budget, for smoothness), directory files are
//! read and written on blocking threads overlapping the network, and an unlimited budget costs
//! nothing per chunk. Sockets have TCP_NODELAY (control messages and page faults are latency
//! bound), keepalive and a TCP user timeout, so a dead peer fails a transfer instead of hanging
//! it; a bulk transfer that makes no progress for [`STALL_TIMEOUT`] fails too. Waiting for a
//! message ([`Channel::recv`]) or for the first frame of a transfer has no time limit: callers
//! wrap it in their own timeouts.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Buf;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::hello_slots::{self, Admission, HelloSlots};

/// First bytes of every hello.
pub const MAGIC: &[u8; 8] = b"HERDXFER";
/// The protocol version spoken here.
pub const VERSION: u16 = 1;
/// How long a new connection has to send its complete hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting and waiting for the listener's answer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A bulk transfer that moves no byte for this long fails with [`TransferError::Timeout`].
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The stall timeout in force: [`STALL_TIMEOUT`], or `HERD_MIGRATION_STALL_SECS` seconds when
/// that is set (tests cut the network and do not want to wait a minute).
pub fn stall_timeout() -> Duration {
    static VALUE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *VALUE.get_or_init(|| {
        std::env::var("HERD_MIGRATION_STALL_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
            .map(Duration::from_secs)
            .unwrap_or(STALL_TIMEOUT)
    })
}
/// Largest JSON frame (a message, a file header).
pub const MAX_MESSAGE: usize = 16 << 20;
/// Largest DATA frame, and the size of bulk buffers.
pub const CHUNK: usize = 1 << 20;

const MAX_HELLO: usize = 4096;
const HELLO_HEADER: usize = 8 + 2 + 4;
const FRAME_HEADER: usize = 5;
const MAX_NAME: usize = 255;
/// Authenticated connections waiting for [`Listener::accept`].
const ACCEPT_QUEUE: usize = 16;
/// Connections the kernel queues for the listener before it accepts them. The accept loop
/// takes them at once, but it may lag behind a flood (a busy node): with the usual 128,
/// a flood of connects fills the queue, the kernel drops the SYN of a real migration's
/// connection (it connects a second later, on its retransmission) and drops the handshake
/// ACK of others, which then look connected to their client while the listener never
/// sees them (the kernel is capped by `net.core.somaxconn`, 4096 by default).
const LISTEN_BACKLOG: u32 = 1024;
/// How long a failing side tries to tell the other why.
const ABORT_TIMEOUT: Duration = Duration::from_secs(1);
/// Chunks in flight between a file thread and the network.
const PIPELINE: usize = 4;

const REPLY_OK: u8 = 0;
const REPLY_REFUSED: u8 = 1;
const REPLY_VERSION: u8 = 2;
/// A plain-text control or exec hello reached a listener that requires TLS.
const REPLY_TLS_REQUIRED: u8 = 3;
/// A pages hello came inside TLS: pages connections carry CRIU's own TLS.
const REPLY_PLAIN_REQUIRED: u8 = 4;
/// The first byte of a TLS handshake record (content type 22).
const TLS_HANDSHAKE: u8 = 0x16;

const T_MSG: u8 = 1;
const T_DIR: u8 = 2;
const T_FILE: u8 = 3;
const T_DATA: u8 = 4;
const T_END: u8 = 5;
const T_BLOB: u8 = 6;
const T_DONE: u8 = 7;
const T_ABORT: u8 = 8;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A system call failed: on a socket or on a local file.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The peer closed the connection (cleanly, in the middle of a frame, or with a reset).
    #[error("the peer closed the connection")]
    Closed,
    /// The peer sent something this protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A message could not be encoded or decoded.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The listener refused this side's ticket.
    #[error("the peer refused the migration ticket")]
    Auth,
    /// The TLS session could not be made: a certificate was refused (by either side), or
    /// one side has TLS and the other not.
    #[error("TLS: {0}")]
    Tls(String),
    /// Something did not happen in time.
    #[error("timed out {0}")]
    Timeout(String),
    /// The peer gave up the transfer and said why.
    #[error("the peer failed: {0}")]
    Remote(String),
    /// A received file name that could escape the target directory.
    #[error("unsafe file name {0:?}")]
    UnsafeName(String),
    /// An earlier error, or an earlier call cancelled half way, closed this channel.
    #[error("the channel was closed by an earlier error or cancelled call")]
    Broken,
}

fn io_err(what: impl Into<String>, source: io::Error) -> TransferError {
    TransferError::Io { what: what.into(), source }
}

fn join_err(what: &str, e: tokio::task::JoinError) -> TransferError {
    io_err(what, io::Error::other(e))
}

// ---------------------------------------------------------------------------------------
// Tickets

/// One-time credentials of a migration's connections, handed to both nodes by the Control
/// node over the (authenticated) broker. Its `Debug` output hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub migration: String,
    /// 64 hex characters from a CSPRNG.
    pub token: String,
}

impl Ticket {
    /// A ticket with a fresh random token (256 bits from the thread-local CSPRNG, which is
    /// seeded from the operating system).
    pub fn generate(migration: &str) -> Ticket {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Ticket { migration: migration.to_string(), token: hex::encode(bytes) }
    }

    /// Whether a hello carries this ticket; the token is compared in constant time.
    fn admits(&self, migration: &str, token: &str) -> bool {
        let same_migration = self.migration == migration;
        let same_token = constant_time_eq(self.token.as_bytes(), token.as_bytes());
        same_migration & same_token
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").field("migration", &self.migration).field("token", &"<hidden>").finish()
    }
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

// ---------------------------------------------------------------------------------------
// Budget

/// Bytes per second all streams of one migration may use together (a shared token bucket);
/// unlimited when None. Clone shares the bucket.
///
/// The bucket holds at most 1/8 s of traffic and may go into debt: a writer takes what it is
/// about to write and sleeps until the debt is paid, so concurrent writers are served in turn
/// and the long-run rate is exact whatever the chunk sizes.
#[derive(Clone, Debug)]
pub struct Budget {
    bucket: Option<Arc<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    bytes_per_sec: u64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
}

impl Budget {
    /// A budget of `bytes_per_sec`; `None` (and `Some(0)`, which could only mean "stuck") is
    /// unlimited.
    pub fn new(bytes_per_sec: Option<u64>) -> Budget {
        match bytes_per_sec {
            None | Some(0) => Budget::unlimited(),
            Some(rate) => {
                let burst = (rate as f64 / 8.0).max(1.0);
                let state = Mutex::new(BucketState { tokens: burst, last: Instant::now() });
                Budget { bucket: Some(Arc::new(Bucket { bytes_per_sec: rate, burst, state })) }
            }
        }
    }

    pub fn unlimited() -> Budget {
        Budget { bucket: None }
    }

    /// The rate, `None` when unlimited.
    pub fn bytes_per_sec(&self) -> Option<u64> {
        self.bucket.as_ref().map(|b| b.bytes_per_sec)
    }

    /// Waits until `bytes` more may be written (returns at once when unlimited).
    pub async fn consume(&self, bytes: u64) {
        let Some(bucket) = &self.bucket else { return };
        if bytes == 0 {
            return;
        }
        let rate = bucket.bytes_per_sec as f64;
        let wait = {
            let mut s = bucket.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill = now.saturating_duration_since(s.last).as_secs_f64() * rate;
            s.last = now;
            s.tokens = (s.tokens + refill).min(bucket.burst) - bytes as f64;
            (s.tokens < 0.0).then(|| Duration::from_secs_f64(-s.tokens / rate))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }

    /// Size of the chunks bulk data moves in: [`CHUNK`], or about 1/16 s of traffic under a
    /// low budget.
    pub(crate) fn chunk_size(&self) -> usize {
        match self.bytes_per_sec() {
            None => CHUNK,
            Some(rate) => usize::try_from(rate / 16).unwrap_or(CHUNK).clamp(4096, CHUNK),
        }
    }
}

// ---------------------------------------------------------------------------------------
// TLS

/// A node's TLS settings for its migration and exec connections, made once from its
/// [`herd_tls::TlsFiles`]: as a listener it requires a client certificate of the cluster CA,
/// as an opener it presents its own and checks the listener's (reloaded when renewed).
#[derive(Clone)]
pub struct TransferTls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl fmt::Debug for TransferTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferTls").finish_non_exhaustive()
    }
}

impl TransferTls {
    pub fn new(files: &herd_tls::TlsFiles) -> Result<TransferTls, herd_tls::TlsError> {
        let mut server = herd_tls::config::server_config(files, herd_tls::config::ClientCerts::Required)?;
        // Not HTTP: no application protocol is negotiated.
        server.alpn_protocols.clear();
        let client = herd_tls::config::client_config(&files.ca, Some(files))?;
        Ok(TransferTls::from_configs(server, client))
    }

    /// Settings made elsewhere (tests: a client without a certificate, or of another CA).
    pub fn from_configs(server: rustls::ServerConfig, client: rustls::ClientConfig) -> TransferTls {
        TransferTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        }
    }
}

/// A migration or exec connection after its hello: plain TCP, or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Stream::Tls(s) => f.debug_tuple("Tls").field(s.get_ref().0).finish(),
        }
    }
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Who the peer's certificate names ("n2 (node)"), for the log; `None` in plain text.
    pub fn peer_identity(&self) -> Option<String> {
        let Stream::Tls(s) = self else { return None };
        let certs = match s.as_ref() {
            tokio_rustls::TlsStream::Server(s) => s.get_ref().1.peer_certificates(),
            tokio_rustls::TlsStream::Client(s) => s.get_ref().1.peer_certificates(),
        }?;
        let info = herd_tls::CertInfo::parse(certs.first()?).ok()?;
        Some(format!("{} ({})", info.name, info.role.as_deref().unwrap_or("no role")))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Writes all of `bytes` and flushes them: a TLS stream may otherwise keep the last record
/// in its buffer until the next write.
pub async fn write_flushed(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Why a TLS session could not be made, in words: rustls' error when there is one (an alert
/// the peer sent, a certificate this side refused), else the I/O error.
fn tls_failure(e: &io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => format!("it sent the TLS alert {alert:?}"),
        Some(rustls::Error::InvalidCertificate(why)) => {
            format!("the peer's certificate is not acceptable: {}", certificate_problem(why))
        }
        Some(rustls::Error::NoCertificatesPresented) => "the peer presented no certificate".to_string(),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// A refused certificate's problem, in words (with rustls' name for it).
fn certificate_problem(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match e {
        E::UnknownIssuer => "it is not signed by the cluster CA (UnknownIssuer)".into(),
        E::ExpiredContext { time, not_after } => {
            format!("it expired {} s ago (Expired)", time.as_secs().saturating_sub(not_after.as_secs()))
        }
        E::Expired => "it has expired (Expired)".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => "it is not valid yet (NotValidYet)".into(),
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "it does not hold the address it was reached at (NotValidForName)".into()
        }
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Connections

/// What a connection is for, announced in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Control,
    /// The memory pages of the checkpoint the destination restores.
    Pages,
    /// Pre-copy: the pages of pre-dump round `round` (1, 2, ...), taken while the container
    /// runs. Each round's images have the previous round's as their parent, and the final
    /// checkpoint's have the last round's.
    PreDump {
        round: u32,
    },
    /// An exec session's stream (`herd_proto::exec`), on a node's one-time exec listener.
    Exec,
}

#[derive(Serialize, Deserialize)]
struct Hello {
    migration: String,
    token: String,
    purpose: Purpose,
}

/// An accepted, authenticated connection. Pages connections are plain TCP (CRIU's TLS, if
/// any, comes next); control and exec connections are TLS when the listener has it.
#[derive(Debug)]
pub enum Accepted {
    Control(Channel),
    Pages(TcpStream),
    PreDump(TcpStream, u32),
    Exec(Stream),
}

/// The listening end (on the destination; for post-copy pages the source listens too).
///
/// A background task (stopped when the listener is dropped) accepts TCP connections and
/// reads their hellos concurrently, a bounded number at once (per peer and in all), so that
/// slow, silent or flooding clients never hold up a good one.
pub struct Listener {
    addr: SocketAddr,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Accepted>>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Listens on `ip`, on a port chosen by the system, in plain text. Refuses tickets whose
    /// token is shorter than 32 characters (it would be guessable).
    pub async fn bind(ip: IpAddr, ticket: Ticket, budget: Budget) -> Result<Listener, TransferError> {
        Listener::bind_with(ip, ticket, budget, None).await
    }

    /// [`Listener::bind`], with control and exec connections required to come over TLS when
    /// `tls` is given (see the module's documentation).
    pub async fn bind_with(
        ip: IpAddr,
        ticket: Ticket,
        budget: Budget,
        tls: Option<TransferTls>,
    ) -> Result<Listener, TransferError> {
        if ticket.token.len() < 32 {
            return Err(TransferError::Protocol(format!(
                "the ticket of migration {} has a token of {} characters, too short to listen with",
                ticket.migration,
                ticket.token.len()
            )));
        }
        let listener = listen(SocketAddr::new(ip, 0)).map_err(|e| io_err(format!("listening on {ip}"), e))?;
        let addr = listener.local_addr().map_err(|e| io_err(format!("listening on {ip}"), e))?;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let task = tokio::spawn(accept_loop(listener, Arc::new(ticket), budget, tls, tx));
        Ok(Listener { addr, incoming: tokio::sync::Mutex::new(rx), task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next connection whose hello carries this ticket. Connections with a wrong or
    /// missing ticket, or that send nothing within 5 s, are dropped (logged with
    /// tracing::warn) and accepting continues.
    pub async fn accept(&self) -> Result<Accepted, TransferError> {
        let mut incoming = self.incoming.lock().await;
        incoming.recv().await.ok_or_else(|| {
            TransferError::Protocol(format!("the listener on {} stopped accepting connections", self.addr))
        })
    }
}

/// A listening socket whose accept queue holds [`LISTEN_BACKLOG`] connections.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn accept_loop(
    listener: TcpListener,
    ticket: Arc<Ticket>,
    budget: Budget,
    tls: Option<TransferTls>,
    tx: mpsc::Sender<Accepted>,
) {
    let migration = &ticket.migration;
    let mut hellos: JoinSet<Option<Accepted>> = JoinSet::new();
    // Never full: a connection beyond its peer's share is closed at once, and a new one evicts
    // an old one when every slot is taken (see `hello_slots`).
    let mut slots: HelloSlots<tokio::task::Id> = HelloSlots::default();
    let mut handles: HashMap<tokio::task::Id, tokio::task::AbortHandle> = HashMap::new();
    let mut refused_peers: HashSet<IpAddr> = HashSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let task = hellos.spawn(handshake(stream, peer, ticket.clone(), budget.clone(), tls.clone()));
                    match slots.admit(peer.ip(), task.id()) {
                        Admission::Admitted { evict } => {
                            if let Some(old) = evict.and_then(|id| handles.remove(&id)) {
                                tracing::debug!(%peer, %migration, "closed the transfer connection that waited longest for its hello, to make room");
                                old.abort();
                            }
                            handles.insert(task.id(), task);
                        }
                        Admission::Refused => {
                            task.abort();
                            // Once per peer: a flood would fill the log otherwise.
                            if refused_peers.insert(peer.ip()) {
                                tracing::warn!(
                                    %peer, %migration,
                                    "{} holds {} transfer connections without a hello: closing its further ones at once",
                                    peer.ip(), hello_slots::PER_PEER
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    // Out of descriptors and the like: let it pass rather than spin.
                    tracing::warn!(%migration, "accepting a transfer connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = hellos.join_next_with_id() => {
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                slots.finished(id);
                handles.remove(&id);
                match done {
                    Ok((_, Some(accepted))) => {
                        if tx.send(accepted).await.is_err() {
                            return;
                        }
                    }
                    Ok((_, None)) => {}
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => tracing::warn!(%migration, "a transfer hello task failed: {e}"),
                }
            }
        }
    }
}

/// Why a hello was not accepted (for the log), and whether the client gets an answer.
enum BadHello {
    Silent(String),
    /// Answered with `code` on `stream`.
    Answer {
        code: u8,
        why: String,
        stream: Stream,
    },
}

async fn read_hello(stream: &mut Stream) -> Result<Hello, String> {
    let mut head = [0u8; HELLO_HEADER];
    stream.read_exact(&mut head).await.map_err(|e| format!("reading the hello: {e}"))?;
    if &head[..8] != MAGIC {
        return Err("the hello does not start with the protocol's magic".into());
    }
    let version = u16::from_be_bytes([head[8], head[9]]);
    if version != VERSION {
        return Err(format!("protocol version {version}, not {VERSION}"));
    }
    let len = u32::from_be_bytes([head[10], head[11], head[12], head[13]]) as usize;
    if len > MAX_HELLO {
        return Err(format!("a hello of {len} bytes"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(|e| format!("reading the hello: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("a malformed hello: {e}"))
}

/// The listener's side of a connection's opening, up to its hello: a TLS handshake first
/// when it starts with one (and this listener has TLS), then the hello, checked against the
/// transport (control and exec need TLS when the listener has it; pages never come inside it).
async fn opening(stream: TcpStream, tls: Option<&TransferTls>) -> Result<(Stream, Hello), BadHello> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await.map_err(|e| BadHello::Silent(format!("reading the hello: {e}")))?;
    if n == 0 {
        return Err(BadHello::Silent("it closed without a hello".into()));
    }
    let mut stream = match (first[0], tls) {
        (TLS_HANDSHAKE, Some(tls)) => match tls.acceptor.accept(stream).await {
            Ok(s) => Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(s))),
            Err(e) => return Err(BadHello::Silent(format!("TLS handshake failed: {}", tls_failure(&e)))),
        },
        (TLS_HANDSHAKE, None) => {
            return Err(BadHello::Silent(
                "it opened a TLS handshake, but this node has no TLS certificate (herd node --tls-*)".into(),
            ));
        }
        _ => Stream::Plain(stream),
    };
    let hello = match read_hello(&mut stream).await {
        Ok(hello) => hello,
        Err(why) if why.starts_with("protocol version") => {
            return Err(BadHello::Answer { code: REPLY_VERSION, why, stream });
        }
        Err(why) => return Err(BadHello::Silent(why)),
    };
    let needs_tls = matches!(hello.purpose, Purpose::Control | Purpose::Exec);
    if needs_tls && tls.is_some() && !stream.is_tls() {
        let why = format!("a plain-text {:?} hello: this node requires TLS for it", hello.purpose);
        return Err(BadHello::Answer { code: REPLY_TLS_REQUIRED, why, stream });
    }
    if !needs_tls && stream.is_tls() {
        let why = format!("a {:?} hello inside TLS: pages connections carry CRIU's own TLS", hello.purpose);
        return Err(BadHello::Answer { code: REPLY_PLAIN_REQUIRED, why, stream });
    }
    Ok((stream, hello))
}

/// The listener's side of a hello; `None` when the connection is dropped.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    ticket: Arc<Ticket>,
    budget: Budget,
    tls: Option<TransferTls>,
) -> Option<Accepted> {
    let migration = &ticket.migration;
    let (mut stream, hello) = match timeout(HELLO_TIMEOUT, opening(stream, tls.as_ref())).await {
        Ok(Ok(opened)) => opened,
        Err(_) => {
            tracing::warn!(%peer, %migration, "dropped a transfer connection: no hello within {HELLO_TIMEOUT:?}");
            return None;
        }
        Ok(Err(BadHello::Silent(why))) => {
            tracing::warn!(%peer, %migration, "dropped a transfer connection: {why}");
            return None;
        }
        Ok(Err(BadHello::Answer { code, why, mut stream })) => {
            tracing::warn!(%peer, %migration, "dropped a transfer connection: {why}");
            let _ = timeout(ABORT_TIMEOUT, write_flushed(&mut stream, &[code])).await;
            return None;
        }
    };
    let identity = stream.peer_identity();
    if !ticket.admits(&hello.migration, &hello.token) {
        tracing::warn!(
            %peer, %migration, claimed = %hello.migration, certificate = ?identity,
            "dropped a transfer connection: wrong migration ticket"
        );
        let _ = timeout(ABORT_TIMEOUT, write_flushed(&mut stream, &[REPLY_REFUSED])).await;
        return None;
    }
    if let Err(e) = configure(stream.tcp()) {
        tracing::warn!(%peer, %migration, "dropped a transfer connection: setting socket options: {e}");
        return None;
    }
    match timeout(ABORT_TIMEOUT, write_flushed(&mut stream, &[REPLY_OK])).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(%peer, %migration, "dropped a transfer connection: answering its hello: {e}");
            return None;
        }
        Err(_) => {
            tracing::warn!(%peer, %migration, "dropped a transfer connection: it does not read its answer");
            return None;
        }
    }
    tracing::debug!(%peer, %migration, purpose = ?hello.purpose, certificate = ?identity, "accepted a transfer connection");
    Some(match (hello.purpose, stream) {
        (Purpose::Control, stream) => Accepted::Control(Channel::new(stream, peer, budget)),
        (Purpose::Exec, stream) => Accepted::Exec(stream),
        (Purpose::Pages, Stream::Plain(tcp)) => Accepted::Pages(tcp),
        (Purpose::PreDump { round }, Stream::Plain(tcp)) => Accepted::PreDump(tcp, round),
        // `opening` refused pages inside TLS.
        (Purpose::Pages | Purpose::PreDump { .. }, Stream::Tls(_)) => return None,
    })
}

/// Socket options of every migration connection: no Nagle delay, and a dead peer noticed
/// within about a minute whether the connection is idle (keepalive) or not (user timeout).
fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = SockRef::from(stream);
    let keepalive =
        TcpKeepalive::new().with_time(Duration::from_secs(15)).with_interval(Duration::from_secs(5)).with_retries(6);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(stall_timeout()))?;
    Ok(())
}

/// Opens an authenticated connection: connect, TLS when `tls` is given, hello, answer.
async fn open(
    addr: SocketAddr,
    ticket: &Ticket,
    purpose: Purpose,
    tls: Option<&TransferTls>,
) -> Result<Stream, TransferError> {
    let body = serde_json::to_vec(&Hello { migration: ticket.migration.clone(), token: ticket.token.clone(), purpose })
        .map_err(|source| TransferError::Json { what: "encoding the hello".into(), source })?;
    if body.len() > MAX_HELLO {
        return Err(TransferError::Protocol(format!("the hello of migration {} is too long", ticket.migration)));
    }
    let mut hello = Vec::with_capacity(HELLO_HEADER + body.len());
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&VERSION.to_be_bytes());
    hello.extend_from_slice(&(body.len() as u32).to_be_bytes());
    hello.extend_from_slice(&body);

    let what = || format!("connecting to {addr} for migration {}", ticket.migration);
    let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| TransferError::Timeout(what()))?
        .map_err(|e| io_err(what(), e))?;
    configure(&tcp).map_err(|e| io_err(what(), e))?;
    let mut stream = match tls {
        None => Stream::Plain(tcp),
        Some(tls) => {
            // A node's certificate holds the address it is reached at.
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let session = timeout(CONNECT_TIMEOUT, tls.connector.connect(name, tcp))
                .await
                .map_err(|_| TransferError::Timeout(format!("the TLS handshake with {addr}")))?
                .map_err(|e| {
                    TransferError::Tls(format!(
                        "the handshake with {addr} failed: {} (does that node have TLS?)",
                        tls_failure(&e)
                    ))
                })?;
            Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(session)))
        }
    };
    // With TLS 1.3 the listener checks this side's certificate after the handshake is over
    // here: a refusal shows as an alert where the answer is due.
    let refused = |e: io::Error, doing: &str| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(_) => TransferError::Tls(format!("{addr} refused this node's certificate: {}", tls_failure(&e))),
        None => io_err(format!("{doing} {addr}"), e),
    };
    timeout(CONNECT_TIMEOUT, write_flushed(&mut stream, &hello))
        .await
        .map_err(|_| TransferError::Timeout(format!("sending the hello to {addr}")))?
        .map_err(|e| refused(e, "sending the hello to"))?;
    let mut answer = [0u8; 1];
    let n = timeout(CONNECT_TIMEOUT, stream.read(&mut answer))
        .await
        .map_err(|_| TransferError::Timeout(format!("waiting for {addr} to answer the hello")))?
        .map_err(|e| refused(e, "waiting for the answer to the hello from"))?;
    match (n, answer[0]) {
        (0, _) if stream.is_tls() => Err(TransferError::Tls(format!(
            "{addr} closed the session before answering the hello (it may have refused this node's certificate)"
        ))),
        (0, _) => Err(TransferError::Closed),
        (_, REPLY_OK) => Ok(stream),
        (_, REPLY_REFUSED) => Err(TransferError::Auth),
        (_, REPLY_VERSION) => {
            Err(TransferError::Protocol(format!("{addr} does not speak version {VERSION} of the transfer protocol")))
        }
        (_, REPLY_TLS_REQUIRED) => Err(TransferError::Tls(format!(
            "{addr} requires TLS for {purpose:?} connections, and this node has no TLS certificate"
        ))),
        (_, REPLY_PLAIN_REQUIRED) => {
            Err(TransferError::Protocol(format!("{addr} takes {purpose:?} connections in plain text only")))
        }
        (_, other) => Err(TransferError::Protocol(format!("{addr} answered the hello with {other}"))),
    }
}

/// The TCP connection of a plain-text stream (pages connections are never Herd's TLS).
fn plain(stream: Stream) -> TcpStream {
    match stream {
        Stream::Plain(tcp) => tcp,
        Stream::Tls(_) => unreachable!("pages connections are opened without TLS"),
    }
}

/// Opens a control connection to a [`Listener`], in plain text.
pub async fn connect_control(addr: SocketAddr, ticket: &Ticket, budget: Budget) -> Result<Channel, TransferError> {
    connect_control_with(addr, ticket, budget, None).await
}

/// Opens a control connection to a [`Listener`], over TLS when `tls` is given.
pub async fn connect_control_with(
    addr: SocketAddr,
    ticket: &Ticket,
    budget: Budget,
    tls: Option<&TransferTls>,
) -> Result<Channel, TransferError> {
    let stream = open(addr, ticket, Purpose::Control, tls).await?;
    Ok(Channel::new(stream, addr, budget))
}

/// Opens an exec connection to a node's exec [`Listener`], over TLS when `tls` is given (the
/// Control node has its own opener; this one is for tests and tools).
pub async fn connect_exec(
    addr: SocketAddr,
    ticket: &Ticket,
    tls: Option<&TransferTls>,
) -> Result<Stream, TransferError> {
    open(addr, ticket, Purpose::Exec, tls).await
}

/// Opens a pages connection to a [`Listener`]: after the hello, a plain byte stream (CRIU's
/// TLS, if the nodes have it, runs inside it).
pub async fn connect_pages(addr: SocketAddr, ticket: &Ticket) -> Result<TcpStream, TransferError> {
    open(addr, ticket, Purpose::Pages, None).await.map(plain)
}

/// Which end of a sealed pages connection this is (see [`seal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealRole {
    /// The end that opened the connection, to the node at this address (whose certificate
    /// must name it).
    Opener(std::net::IpAddr),
    /// The listener's end.
    Listener,
}

/// Seals a pages connection whose hello is done: a TLS session over it, with both nodes'
/// certificates checked against the cluster CA. The migration's ticket, sent before, opened
/// it; the session makes what CRIU sends through it unreadable and unchangeable on the way.
/// The other end may take its part later (`wait`): a post-copy source's page proxy opens
/// the session as soon as the dump is done, and the destination's proxy answers only when the
/// restore starts, after the images crossed.
pub async fn seal(
    tcp: TcpStream,
    tls: &TransferTls,
    role: SealRole,
    wait: Duration,
) -> Result<tokio_rustls::TlsStream<TcpStream>, TransferError> {
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let sealed = match role {
        SealRole::Opener(ip) => {
            let name = rustls::pki_types::ServerName::IpAddress(ip.into());
            timeout(CONNECT_TIMEOUT, tls.connector.connect(name, tcp))
                .await
                .map(|r| r.map(tokio_rustls::TlsStream::Client))
        }
        SealRole::Listener => {
            timeout(wait, tls.acceptor.accept(tcp)).await.map(|r| r.map(tokio_rustls::TlsStream::Server))
        }
    };
    sealed
        .map_err(|_| TransferError::Timeout(format!("sealing the pages connection with {peer}")))?
        .map_err(|e| TransferError::Tls(format!("sealing the pages connection with {peer}: {}", tls_failure(&e))))
}

/// Opens the pages connection of pre-copy round `round` to a [`Listener`].
pub async fn connect_pre_dump(addr: SocketAddr, ticket: &Ticket, round: u32) -> Result<TcpStream, TransferError> {
    open(addr, ticket, Purpose::PreDump { round }, None).await.map(plain)
}

// ---------------------------------------------------------------------------------------
// Channel

/// Counts of a directory or blob (blobs have no files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Totals {
    files: u64,
    bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileHeader {
    name: String,
    size: u64,
    mode: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Abort {
    message: String,
}

fn frame_header(ty: u8, len: usize) -> [u8; FRAME_HEADER] {
    let len = (len as u32).to_be_bytes();
    [ty, len[0], len[1], len[2], len[3]]
}

/// A JSON frame, header included, ready to write.
fn json_frame<T: Serialize + ?Sized>(ty: u8, value: &T) -> Result<Vec<u8>, TransferError> {
    let mut frame = vec![0u8; FRAME_HEADER];
    serde_json::to_writer(&mut frame, value)
        .map_err(|source| TransferError::Json { what: "encoding a message".into(), source })?;
    let len = frame.len() - FRAME_HEADER;
    if len > MAX_MESSAGE {
        return Err(TransferError::Protocol(format!("a message of {len} bytes (at most {MAX_MESSAGE})")));
    }
    frame[..FRAME_HEADER].copy_from_slice(&frame_header(ty, len));
    Ok(frame)
}

fn frame_name(ty: u8) -> String {
    match ty {
        T_MSG => "MSG".into(),
        T_DIR => "DIR".into(),
        T_FILE => "FILE".into(),
        T_DATA => "DATA".into(),
        T_END => "END".into(),
        T_BLOB => "BLOB".into(),
        T_DONE => "DONE".into(),
        T_ABORT => "ABORT".into(),
        other => format!("unknown frame type {other}"),
    }
}

/// A control connection: typed messages and bulk data, both directions.
pub struct Channel {
    /// `None` once an error closed the channel.
    stream: Option<Stream>,
    peer: SocketAddr,
    budget: Budget,
    sent: u64,
    received: u64,
    /// The connection itself failed (as opposed to a local file or the peer's data).
    link_failed: bool,
    /// A call is under way; still set at the start of the next one if it was cancelled.
    busy: bool,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.peer)
            .field("open", &self.stream.is_some())
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish()
    }
}

/// Items from the thread reading a directory's files.
enum ReadItem {
    File(usize),
    Data(Vec<u8>, usize),
}

/// Work for the thread writing a received directory's files.
enum WriteOp {
    Open { name: String, mode: u32 },
    Data(Vec<u8>, usize),
    Finish,
}

impl Channel {
    fn new(stream: Stream, peer: SocketAddr, budget: Budget) -> Channel {
        Channel { stream: Some(stream), peer, budget, sent: 0, received: 0, link_failed: false, busy: false }
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the channel runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.as_ref().is_some_and(Stream::is_tls)
    }

    /// Who the peer's certificate names (`None` in plain text or once closed).
    pub fn peer_identity(&self) -> Option<String> {
        self.stream.as_ref().and_then(Stream::peer_identity)
    }

    /// Bytes written to the connection: frames with their headers, after the hello.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Bytes read from the connection: frames with their headers, after the hello.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// Sends one message (a JSON frame).
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), TransferError> {
        let frame = json_frame(T_MSG, msg)?;
        self.begin()?;
        let r = self.write_raw(&frame).await;
        self.settle(r).await
    }

    /// Receives one message; a peer that closes gives [`TransferError::Closed`]. A message
    /// that does not decode as `T` gives [`TransferError::Json`] and leaves the channel usable.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, TransferError> {
        self.begin()?;
        let r = self.recv_frame(T_MSG, false).await;
        let payload = self.settle(r).await?;
        serde_json::from_slice(&payload).map_err(|source| TransferError::Json {
            what: format!("decoding a message from {} as {}", self.peer, std::any::type_name::<T>()),
            source,
        })
    }

    /// Sends the regular files directly in `dir` (CRIU image dirs are flat; error on
    /// subdirectories or special files) with their names, sizes and modes, in name order;
    /// returns the bytes of file data sent, once the receiver has stored them all.
    pub async fn send_dir(&mut self, dir: &Path) -> Result<u64, TransferError> {
        self.begin()?;
        let r = self.send_dir_inner(dir).await;
        self.settle_send(r).await
    }

    /// Receives what [`Channel::send_dir`] sent into `dir` (created if missing, and which must
    /// not already hold files of the same names). File names are checked (no '/', no '..', not
    /// empty); modes keep their permission bits only. Returns the bytes of file data. When the
    /// transfer fails, the files this call created are removed (unless only the final
    /// confirmation to the sender failed).
    pub async fn recv_dir(&mut self, dir: &Path) -> Result<u64, TransferError> {
        self.begin()?;
        let r = self.recv_dir_inner(dir).await;
        self.settle(r).await
    }

    /// Sends everything `r` yields (until EOF) as one blob of unknown length (chunked);
    /// returns bytes, once the receiver has written them all.
    pub async fn send_blob(&mut self, r: impl AsyncRead + Unpin) -> Result<u64, TransferError> {
        self.begin()?;
        let res = self.send_blob_inner(r).await;
        self.settle_send(res).await
    }

    /// Receives what [`Channel::send_blob`] sent into `w` (flushed at the end, not shut
    /// down); returns bytes. On error `w` may have received part of the blob.
    pub async fn recv_blob(&mut self, w: impl AsyncWrite + Unpin) -> Result<u64, TransferError> {
        self.begin()?;
        let res = self.recv_blob_inner(w).await;
        self.settle(res).await
    }

    // --- error handling

    /// Starts a call; a channel whose previous call was cancelled half way is out of step
    /// with its peer, so it is closed.
    fn begin(&mut self) -> Result<(), TransferError> {
        if self.busy {
            self.stream = None;
            return Err(TransferError::Broken);
        }
        if self.stream.is_none() {
            return Err(TransferError::Broken);
        }
        self.busy = true;
        Ok(())
    }

    /// Closes the channel after an error, first telling the peer why when the error is ours
    /// and the connection still works.
    async fn settle<T>(&mut self, r: Result<T, TransferError>) -> Result<T, TransferError> {
        self.busy = false;
        let Err(e) = r else { return r };
        let peer_knows = matches!(e, TransferError::Closed | TransferError::Remote(_) | TransferError::Broken);
        if peer_knows {
            self.stream = None;
        } else {
            self.abort(&e.to_string()).await;
        }
        // Dropping the stream closes it; with unread data the peer gets a reset, which
        // wakes it even if it is blocked writing to us.
        Err(e)
    }

    /// Gives up the channel, telling the peer why: its call in progress or next one fails
    /// with [`TransferError::Remote`] and `message` (a receiver that refuses what a blob or
    /// directory would bring says so before it arrives).
    pub async fn abort(&mut self, message: &str) {
        self.busy = false;
        if let Some(mut stream) = self.stream.take()
            && !self.link_failed
            && let Ok(frame) = json_frame(T_ABORT, &Abort { message: message.to_string() })
        {
            let _ = timeout(ABORT_TIMEOUT, write_flushed(&mut stream, &frame)).await;
        }
    }

    /// [`Channel::settle`] for senders: when the connection broke while we were writing, the
    /// receiver may have said why before closing it.
    async fn settle_send<T>(&mut self, r: Result<T, TransferError>) -> Result<T, TransferError> {
        match r {
            Err(e) if self.link_failed => {
                let e = match self.peer_abort().await {
                    Some(message) => TransferError::Remote(message),
                    None => e,
                };
                self.settle(Err(e)).await
            }
            r => self.settle(r).await,
        }
    }

    /// An ABORT frame the peer sent before the connection broke, if any.
    async fn peer_abort(&mut self) -> Option<String> {
        let stream = self.stream.as_mut()?;
        let read = async {
            let mut header = [0u8; FRAME_HEADER];
            stream.read_exact(&mut header).await.ok()?;
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if header[0] != T_ABORT || len > MAX_MESSAGE {
                return None;
            }
            let mut body = vec![0u8; len];
            stream.read_exact(&mut body).await.ok()?;
            serde_json::from_slice::<Abort>(&body).ok().map(|a| a.message)
        };
        timeout(ABORT_TIMEOUT, read).await.ok().flatten()
    }

    // --- frames

    fn stream(&mut self) -> Result<&mut Stream, TransferError> {
        self.stream.as_mut().ok_or(TransferError::Broken)
    }

    /// Writes bytes that form whole frames, within the budget.
    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), TransferError> {
        self.write_buf(&mut &bytes[..]).await
    }

    async fn write_frame(&mut self, ty: u8, payload: &[u8]) -> Result<(), TransferError> {
        let header = frame_header(ty, payload.len());
        self.write_buf(&mut Buf::chain(&header[..], payload)).await
    }

    async fn write_json<T: Serialize + ?Sized>(&mut self, ty: u8, value: &T) -> Result<(), TransferError> {
        let frame = json_frame(ty, value)?;
        self.write_raw(&frame).await
    }

    async fn write_buf(&mut self, buf: &mut impl Buf) -> Result<(), TransferError> {
        let len = buf.remaining() as u64;
        self.budget.consume(len).await;
        let peer = self.peer;
        let stream = self.stream()?;
        let write = async {
            stream.write_all_buf(buf).await?;
            // TLS keeps what it could not send yet in its buffer until flushed.
            stream.flush().await
        };
        match timeout(stall_timeout(), write).await {
            Ok(Ok(())) => {
                self.sent += len;
                Ok(())
            }
            Ok(Err(e)) => {
                self.link_failed = true;
                Err(io_err(format!("sending to {peer}"), e))
            }
            Err(_) => {
                self.link_failed = true;
                Err(TransferError::Timeout(format!("sending to {peer}: it read nothing for {:?}", stall_timeout())))
            }
        }
    }

    /// Fills `buf` from the connection; `stall` limits the wait to [`STALL_TIMEOUT`].
    async fn read_exact(&mut self, buf: &mut [u8], stall: bool) -> Result<(), TransferError> {
        let peer = self.peer;
        let stream = self.stream()?;
        let r = if stall {
            match timeout(stall_timeout(), stream.read_exact(buf)).await {
                Ok(r) => r,
                Err(_) => {
                    self.link_failed = true;
                    return Err(TransferError::Timeout(format!(
                        "receiving from {peer}: it sent nothing for {:?}",
                        stall_timeout()
                    )));
                }
            }
        } else {
            stream.read_exact(buf).await
        };
        match r {
            Ok(_) => {
                self.received += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.link_failed = true;
                // A reset is a peer that closed with data of ours still unread.
                if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) {
                    Err(TransferError::Closed)
                } else {
                    Err(io_err(format!("receiving from {peer}"), e))
                }
            }
        }
    }

    /// The next frame's type and length.
    async fn read_header(&mut self, stall: bool) -> Result<(u8, usize), TransferError> {
        let mut header = [0u8; FRAME_HEADER];
        self.read_exact(&mut header, stall).await?;
        Ok((header[0], u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize))
    }

    /// The payload of a JSON frame of `len` bytes.
    async fn read_payload(&mut self, ty: u8, len: usize, stall: bool) -> Result<Vec<u8>, TransferError> {
        if len > MAX_MESSAGE {
            return Err(TransferError::Protocol(format!(
                "a {} frame of {len} bytes (at most {MAX_MESSAGE})",
                frame_name(ty)
            )));
        }
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload, stall).await?;
        Ok(payload)
    }

    async fn read_json<T: DeserializeOwned>(&mut self, ty: u8, len: usize) -> Result<T, TransferError> {
        let payload = self.read_payload(ty, len, true).await?;
        serde_json::from_slice(&payload).map_err(|source| TransferError::Json {
            what: format!("decoding a {} frame from {}", frame_name(ty), self.peer),
            source,
        })
    }

    /// The payload of the next frame, which must be of type `want` (an ABORT gives
    /// [`TransferError::Remote`]).
    async fn recv_frame(&mut self, want: u8, stall: bool) -> Result<Vec<u8>, TransferError> {
        let (ty, len) = self.read_header(stall).await?;
        if ty == want {
            return self.read_payload(ty, len, true).await;
        }
        Err(self.unexpected(ty, len, &frame_name(want)).await)
    }

    /// The error for a frame of type `ty` where `expected` was due.
    async fn unexpected(&mut self, ty: u8, len: usize, expected: &str) -> TransferError {
        if ty == T_ABORT {
            return match self.read_json::<Abort>(ty, len).await {
                Ok(abort) => TransferError::Remote(abort.message),
                Err(e) => e,
            };
        }
        TransferError::Protocol(format!("expected {expected}, got a {} frame from {}", frame_name(ty), self.peer))
    }

    /// Waits for the receiver's DONE and checks its totals.
    async fn expect_done(&mut self, sent: Totals) -> Result<(), TransferError> {
        let (ty, len) = self.read_header(true).await?;
        if ty != T_DONE {
            return Err(self.unexpected(ty, len, "DONE").await);
        }
        let done: Totals = self.read_json(ty, len).await?;
        if done != sent {
            return Err(TransferError::Protocol(format!(
                "{} confirmed {} files and {} bytes, {} and {} were sent",
                self.peer, done.files, done.bytes, sent.files, sent.bytes
            )));
        }
        Ok(())
    }

    // --- directories

    async fn send_dir_inner(&mut self, dir: &Path) -> Result<u64, TransferError> {
        let listed = dir.to_path_buf();
        let files = tokio::task::spawn_blocking(move || list_dir(&listed))
            .await
            .map_err(|e| join_err("listing a directory", e))??;
        let totals = Totals { files: files.len() as u64, bytes: files.iter().map(|f| f.size).sum() };
        self.write_json(T_DIR, &totals).await?;

        let (tx, mut rx) = mpsc::channel(PIPELINE);
        let (pool_tx, pool_rx) = std::sync::mpsc::channel();
        let reader = {
            let (dir, files, chunk) = (dir.to_path_buf(), files.clone(), self.budget.chunk_size());
            tokio::task::spawn_blocking(move || read_files(&dir, &files, chunk, tx, pool_rx))
        };
        let mut sent = 0u64;
        while let Some(item) = rx.recv().await {
            match item {
                ReadItem::File(i) => self.write_json(T_FILE, &files[i]).await?,
                ReadItem::Data(buf, n) => {
                    self.write_frame(T_DATA, &buf[..n]).await?;
                    sent += n as u64;
                    let _ = pool_tx.send(buf);
                }
            }
        }
        reader.await.map_err(|e| join_err("reading a directory", e))??;
        if sent != totals.bytes {
            return Err(TransferError::Protocol(format!(
                "read {sent} bytes of {}, expected {}",
                dir.display(),
                totals.bytes
            )));
        }
        self.write_json(T_END, &totals).await?;
        self.expect_done(totals).await?;
        Ok(sent)
    }

    async fn recv_dir_inner(&mut self, dir: &Path) -> Result<u64, TransferError> {
        let (ty, len) = self.read_header(false).await?;
        if ty != T_DIR {
            return Err(self.unexpected(ty, len, "DIR").await);
        }
        let announced: Totals = self.read_json(ty, len).await?;
        tokio::fs::create_dir_all(dir).await.map_err(|e| io_err(format!("creating {}", dir.display()), e))?;

        let (tx, rx) = mpsc::channel(PIPELINE);
        let (pool_tx, mut pool_rx) = std::sync::mpsc::channel();
        let writer = {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || write_files(&dir, rx, pool_tx))
        };
        let r = self.recv_dir_frames(announced, &tx, &mut pool_rx).await;
        let r = match r {
            Ok(bytes) => match tx.send(WriteOp::Finish).await {
                Ok(()) => Ok(bytes),
                Err(_) => Err(None),
            },
            Err(e) => Err(e),
        };
        drop(tx);
        let written = writer.await.map_err(|e| join_err("writing a directory", e));
        match (r, written) {
            (Ok(bytes), Ok(Ok(()))) => {
                self.write_json(T_DONE, &Totals { files: announced.files, bytes }).await?;
                Ok(bytes)
            }
            // The writer failed first: its error is the one that counts.
            (Err(None), Ok(Err(e))) | (Ok(_), Ok(Err(e))) | (_, Err(e)) => Err(e),
            (Err(Some(e)), _) => Err(e),
            (Err(None), Ok(Ok(()))) => Err(TransferError::Protocol("the file writer stopped early".into())),
        }
    }

    /// Reads a directory's frames after DIR, handing files to the writer thread. `Err(None)`
    /// means the writer thread is gone (it has the error).
    async fn recv_dir_frames(
        &mut self,
        announced: Totals,
        tx: &mpsc::Sender<WriteOp>,
        // `&mut`: a shared reference to a std Receiver would make the future !Send.
        pool: &mut std::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<u64, Option<TransferError>> {
        let mut names = HashSet::new();
        let (mut files, mut bytes) = (0u64, 0u64);
        // The file being received and the bytes of it still due.
        let mut current: Option<(String, u64)> = None;
        loop {
            let (ty, len) = self.read_header(true).await.map_err(Some)?;
            match ty {
                T_FILE => {
                    if let Some((name, left)) = current.take().filter(|(_, left)| *left > 0) {
                        return Err(proto(format!("file {name:?} ended {left} bytes short")));
                    }
                    let header: FileHeader = self.read_json(ty, len).await.map_err(Some)?;
                    check_file_name(&header.name).map_err(Some)?;
                    if !names.insert(header.name.clone()) {
                        return Err(proto(format!("file {:?} sent twice", header.name)));
                    }
                    files += 1;
                    if files > announced.files || bytes.saturating_add(header.size) > announced.bytes {
                        return Err(proto(format!(
                            "more than the announced {} files and {} bytes",
                            announced.files, announced.bytes
                        )));
                    }
                    current = Some((header.name.clone(), header.size));
                    tx.send(WriteOp::Open { name: header.name, mode: header.mode }).await.map_err(|_| None)?;
                }
                T_DATA => {
                    let Some((name, left)) = current.as_mut() else {
                        return Err(proto("file data before any file header".into()));
                    };
                    if len as u64 > *left || len > CHUNK {
                        return Err(proto(format!("a DATA frame of {len} bytes with {left} due for file {name:?}")));
                    }
                    *left -= len as u64;
                    let mut buf = pool.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
                    self.read_exact(&mut buf[..len], true).await.map_err(Some)?;
                    bytes += len as u64;
                    tx.send(WriteOp::Data(buf, len)).await.map_err(|_| None)?;
                }
                T_END => {
                    let end: Totals = self.read_json(ty, len).await.map_err(Some)?;
                    if let Some((name, left)) = current.filter(|(_, left)| *left > 0) {
                        return Err(proto(format!("file {name:?} ended {left} bytes short")));
                    }
                    let got = Totals { files, bytes };
                    if end != announced || got != announced {
                        return Err(proto(format!("announced {announced:?}, ended with {end:?}, received {got:?}")));
                    }
                    return Ok(bytes);
                }
                other => return Err(Some(self.unexpected(other, len, "FILE, DATA or END").await)),
            }
        }
    }

    // --- blobs

    async fn send_blob_inner(&mut self, mut r: impl AsyncRead + Unpin) -> Result<u64, TransferError> {
        self.write_frame(T_BLOB, &[]).await?;
        let mut buf = vec![0u8; self.budget.chunk_size()];
        let mut sent = 0u64;
        loop {
            let n = r.read(&mut buf).await.map_err(|e| io_err("reading the data to send", e))?;
            if n == 0 {
                break;
            }
            self.write_frame(T_DATA, &buf[..n]).await?;
            sent += n as u64;
        }
        let totals = Totals { files: 0, bytes: sent };
        self.write_json(T_END, &totals).await?;
        self.expect_done(totals).await?;
        Ok(sent)
    }

    async fn recv_blob_inner(&mut self, mut w: impl AsyncWrite + Unpin) -> Result<u64, TransferError> {
        let (ty, len) = self.read_header(false).await?;
        if ty != T_BLOB {
            return Err(self.unexpected(ty, len, "BLOB").await);
        }
        if len != 0 {
            return Err(TransferError::Protocol(format!("a BLOB frame of {len} bytes")));
        }
        let mut buf = vec![0u8; CHUNK];
        let mut received = 0u64;
        loop {
            let (ty, len) = self.read_header(true).await?;
            match ty {
                T_DATA => {
                    if len > CHUNK {
                        return Err(TransferError::Protocol(format!("a DATA frame of {len} bytes")));
                    }
                    self.read_exact(&mut buf[..len], true).await?;
                    w.write_all(&buf[..len]).await.map_err(|e| io_err("writing received data", e))?;
                    received += len as u64;
                }
                T_END => {
                    let end: Totals = self.read_json(ty, len).await?;
                    let got = Totals { files: 0, bytes: received };
                    if end != got {
                        return Err(TransferError::Protocol(format!("the blob ended with {end:?}, received {got:?}")));
                    }
                    w.flush().await.map_err(|e| io_err("writing received data", e))?;
                    self.write_json(T_DONE, &got).await?;
                    return Ok(received);
                }
                other => return Err(self.unexpected(other, len, "DATA or END").await),
            }
        }
    }
}

fn proto(message: String) -> Option<TransferError> {
    Some(TransferError::Protocol(message))
}

/// Refuses file names that could leave the directory they are received into (or that no
/// file system takes): empty, `.`, `..`, with '/' or NUL, longer than 255 bytes.
pub fn check_file_name(name: &str) -> Result<(), TransferError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > MAX_NAME;
    if bad { Err(TransferError::UnsafeName(name.to_string())) } else { Ok(()) }
}

/// The regular files directly in `dir`, by name.
fn list_dir(dir: &Path) -> Result<Vec<FileHeader>, TransferError> {
    let what = || format!("listing {}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(what(), e))? {
        let entry = entry.map_err(|e| io_err(what(), e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| io_err(format!("inspecting {}", path.display()), e))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            return Err(TransferError::Protocol(format!(
                "{} is a subdirectory: only flat directories are sent",
                path.display()
            )));
        }
        if !kind.is_file() {
            return Err(TransferError::Protocol(format!("{} is not a regular file", path.display())));
        }
        let name = entry.file_name().into_string().map_err(|name| {
            TransferError::Protocol(format!("the file name {name:?} in {} is not UTF-8", dir.display()))
        })?;
        check_file_name(&name)?;
        files.push(FileHeader { name, size: meta.len(), mode: meta.permissions().mode() & 0o7777 });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Reads `files` of `dir` in chunks for the network (a blocking thread). Stops quietly when
/// the network side is gone.
fn read_files(
    dir: &Path,
    files: &[FileHeader],
    chunk: usize,
    tx: mpsc::Sender<ReadItem>,
    pool: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(), TransferError> {
    for (i, f) in files.iter().enumerate() {
        let path = dir.join(&f.name);
        let what = || format!("reading {}", path.display());
        let mut file =
            OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path).map_err(|e| io_err(what(), e))?;
        let meta = file.metadata().map_err(|e| io_err(what(), e))?;
        if !meta.is_file() || meta.len() != f.size {
            return Err(TransferError::Protocol(format!(
                "{} changed while being sent ({} bytes, {} when listed)",
                path.display(),
                meta.len(),
                f.size
            )));
        }
        if tx.blocking_send(ReadItem::File(i)).is_err() {
            return Ok(());
        }
        let mut left = f.size;
        while left > 0 {
            let mut buf = pool.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
            let n = chunk.min(usize::try_from(left).unwrap_or(usize::MAX));
            file.read_exact(&mut buf[..n]).map_err(|e| io_err(what(), e))?;
            left -= n as u64;
            if tx.blocking_send(ReadItem::Data(buf, n)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Writes received files into `dir` (a blocking thread); removes the files it created unless
/// it gets to [`WriteOp::Finish`].
fn write_files(
    dir: &Path,
    mut rx: mpsc::Receiver<WriteOp>,
    pool: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(), TransferError> {
    let mut created = Vec::new();
    let r = write_files_into(dir, &mut rx, &pool, &mut created);
    if r.is_err() {
        for path in created {
            let _ = std::fs::remove_file(path);
        }
    }
    r
}

fn write_files_into(
    dir: &Path,
    rx: &mut mpsc::Receiver<WriteOp>,
    pool: &std::sync::mpsc::Sender<Vec<u8>>,
    created: &mut Vec<PathBuf>,
) -> Result<(), TransferError> {
    // The open file, its path and mode.
    let mut current: Option<(File, PathBuf, u32)> = None;
    let finish = |current: Option<(File, PathBuf, u32)>| -> Result<(), TransferError> {
        if let Some((file, path, mode)) = current {
            file.set_permissions(Permissions::from_mode(mode & 0o777))
                .map_err(|e| io_err(format!("setting the mode of {}", path.display()), e))?;
        }
        Ok(())
    };
    loop {
        match rx.blocking_recv() {
            None => return Err(TransferError::Protocol("the transfer was interrupted".into())),
            Some(WriteOp::Open { name, mode }) => {
                finish(current.take())?;
                let path = dir.join(&name);
                // create_new (O_EXCL) never follows a symlink or reuses a file.
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| io_err(format!("creating {}", path.display()), e))?;
                created.push(path.clone());
                current = Some((file, path, mode));
            }
            Some(WriteOp::Data(buf, n)) => {
                let Some((file, path, _)) = current.as_mut() else {
                    return Err(TransferError::Protocol("file data before any file".into()));
                };
                file.write_all(&buf[..n]).map_err(|e| io_err(format!("writing {}", path.display()), e))?;
                let _ = pool.send(buf);
            }
            Some(WriteOp::Finish) => return finish(current.take()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const WAIT: Duration = Duration::from_secs(30);

    /// A connected pair of channels (listener's end, opener's end).
    async fn pair() -> (Channel, Channel) {
        let ticket = Ticket::generate("m1");
        let listener = Listener::bind(LOCAL, ticket.clone(), Budget::unlimited()).await.unwrap();
        let opener = connect_control(listener.local_addr(), &ticket, Budget::unlimited()).await.unwrap();
        let Accepted::Control(accepted) = listener.accept().await.unwrap() else { panic!("not a control connection") };
        (accepted, opener)
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        timeout(WAIT, f).await.expect("timed out")
    }

    #[test]
    fn tickets_are_random_hex() {
        let a = Ticket::generate("m");
        let b = Ticket::generate("m");
        assert_eq!(a.token.len(), 64);
        assert!(a.token.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.token, b.token);
        assert!(a.admits("m", &a.token));
        assert!(!a.admits("m", &b.token));
        assert!(!a.admits("n", &a.token));
        assert!(!a.admits("m", &a.token[..63]));
        assert!(!format!("{a:?}").contains(&a.token));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn file_names_are_checked() {
        for bad in ["", ".", "..", "a/b", "/etc", "../x", "a\0b", &"x".repeat(256)] {
            assert!(matches!(check_file_name(bad), Err(TransferError::UnsafeName(_))), "{bad:?}");
        }
        for good in ["pages-1.img", "..a", "a..", ".hidden", &"x".repeat(255)] {
            check_file_name(good).unwrap();
        }
    }

    #[test]
    fn chunks_follow_the_budget() {
        assert_eq!(Budget::unlimited().chunk_size(), CHUNK);
        assert_eq!(Budget::new(Some(0)).bytes_per_sec(), None);
        assert_eq!(Budget::new(Some(4 << 20)).chunk_size(), 256 << 10);
        assert_eq!(Budget::new(Some(1000)).chunk_size(), 4096);
        assert_eq!(Budget::new(Some(1 << 40)).chunk_size(), CHUNK);
    }

    /// Agents run transfers in spawned tasks: every future of the API must be `Send`.
    #[allow(dead_code, clippy::let_underscore_future)]
    fn futures_are_send(ch: &mut Channel, listener: &Listener, a: TcpStream, b: TcpStream) {
        fn send<T: Send>(_: T) {}
        let ticket = Ticket::generate("m");
        let addr: SocketAddr = ([127, 0, 0, 1], 1).into();
        send(Listener::bind(LOCAL, ticket.clone(), Budget::unlimited()));
        send(listener.accept());
        send(connect_control(addr, &ticket, Budget::unlimited()));
        send(connect_pages(addr, &ticket));
        send(crate::relay::relay(a, b, &Budget::unlimited()));
        send(Budget::unlimited().consume(1));
        send(ch.send(&1u32));
        send(ch.recv::<u32>());
        send(ch.send_dir(Path::new("d")));
        send(ch.recv_dir(Path::new("d")));
        send(ch.send_blob(tokio::io::empty()));
        send(ch.recv_blob(tokio::io::sink()));
    }

    #[tokio::test]
    async fn short_tokens_cannot_listen() {
        let ticket = Ticket { migration: "m".into(), token: "abc".into() };
        assert!(Listener::bind(LOCAL, ticket, Budget::unlimited()).await.is_err());
    }

    /// Sends a crafted directory with one file named `name` and returns what recv_dir says.
    async fn recv_crafted(name: &str) -> (Result<u64, TransferError>, tempfile::TempDir) {
        let (mut rx, mut tx) = pair().await;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("in");
        let sender = async {
            tx.write_json(T_DIR, &Totals { files: 1, bytes: 3 }).await.unwrap();
            tx.write_json(T_FILE, &FileHeader { name: name.into(), size: 3, mode: 0o644 }).await.unwrap();
            // The receiver may already have closed the connection.
            let _ = tx.write_frame(T_DATA, b"abc").await;
            let _ = tx.write_json(T_END, &Totals { files: 1, bytes: 3 }).await;
            // What the receiver answers: DONE or ABORT.
            let (ty, len) = tx.read_header(true).await.unwrap();
            (ty, tx.read_payload(ty, len, true).await.unwrap())
        };
        let (r, (ty, payload)) = within(async { tokio::join!(rx.recv_dir(&target), sender) }).await;
        if r.is_ok() {
            assert_eq!(ty, T_DONE);
        } else {
            assert_eq!(ty, T_ABORT, "{}", String::from_utf8_lossy(&payload));
        }
        (r, dir)
    }

    #[tokio::test]
    async fn recv_dir_refuses_unsafe_names() {
        for name in ["../escape", "..", "a/b", "", "/abs"] {
            let (r, dir) = recv_crafted(name).await;
            assert!(matches!(r, Err(TransferError::UnsafeName(_))), "{name:?}: {r:?}");
            assert!(!dir.path().join("escape").exists());
            let left: Vec<_> = std::fs::read_dir(dir.path().join("in")).unwrap().collect();
            assert!(left.is_empty(), "{name:?} left {left:?}");
        }
        let (r, dir) = recv_crafted("fine").await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(std::fs::read(dir.path().join("in/fine")).unwrap(), b"abc");
    }

    #[tokio::test]
    async fn recv_dir_fails_when_the_sender_dies_mid_file() {
        let (mut rx, mut tx) = pair().await;
        let dir = tempfile::tempdir().unwrap();
        tx.write_json(T_DIR, &Totals { files: 2, bytes: 200 }).await.unwrap();
        tx.write_json(T_FILE, &FileHeader { name: "a".into(), size: 100, mode: 0o600 }).await.unwrap();
        tx.write_frame(T_DATA, &[7u8; 100]).await.unwrap();
        tx.write_json(T_FILE, &FileHeader { name: "b".into(), size: 100, mode: 0o600 }).await.unwrap();
        tx.write_frame(T_DATA, &[7u8; 50]).await.unwrap();
        drop(tx);
        let r = within(rx.recv_dir(dir.path())).await;
        assert!(matches!(r, Err(TransferError::Closed)), "{r:?}");
        // No partial result is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // And the channel is closed.
        assert!(matches!(rx.recv::<String>().await, Err(TransferError::Broken)));
    }

    #[tokio::test]
    async fn recv_dir_refuses_more_data_than_announced() {
        let (mut rx, mut tx) = pair().await;
        let dir = tempfile::tempdir().unwrap();
        tx.write_json(T_DIR, &Totals { files: 1, bytes: 10 }).await.unwrap();
        tx.write_json(T_FILE, &FileHeader { name: "a".into(), size: 10, mode: 0o600 }).await.unwrap();
        tx.write_frame(T_DATA, &[1u8; 11]).await.unwrap();
        let r = within(rx.recv_dir(dir.path())).await;
        assert!(matches!(r, Err(TransferError::Protocol(_))), "{r:?}");
        // The receiver said why before closing.
        let (ty, len) = tx.read_header(true).await.unwrap();
        assert_eq!(ty, T_ABORT);
        let abort: Abort = tx.read_json(ty, len).await.unwrap();
        assert!(abort.message.contains("DATA frame of 11 bytes"), "{}", abort.message);
    }

    #[tokio::test]
    async fn send_dir_fails_when_the_receiver_dies_mid_file() {
        let (mut rx, mut tx) = pair().await;
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("pages-1.img")).unwrap();
        f.set_len(64 << 20).unwrap();
        let receiver = async move {
            // DIR, FILE and one DATA frame, then the receiver goes away.
            for want in [T_DIR, T_FILE, T_DATA] {
                let (ty, len) = rx.read_header(true).await.unwrap();
                assert_eq!(ty, want);
                let mut payload = vec![0u8; len];
                rx.read_exact(&mut payload, true).await.unwrap();
            }
            drop(rx);
        };
        let (r, ()) = within(async { tokio::join!(tx.send_dir(dir.path()), receiver) }).await;
        assert!(r.is_err(), "{r:?}");
    }

    #[tokio::test]
    async fn recv_reports_the_peers_abort() {
        let (mut rx, mut tx) = pair().await;
        tx.write_json(T_ABORT, &Abort { message: "disk full".into() }).await.unwrap();
        match within(rx.recv::<String>()).await {
            Err(TransferError::Remote(m)) => assert_eq!(m, "disk full"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_cancelled_call_closes_the_channel() {
        let (mut rx, mut tx) = pair().await;
        // Nothing comes: the wait is cut short, maybe half way through a frame for all the
        // channel knows.
        assert!(timeout(Duration::from_millis(10), rx.recv::<String>()).await.is_err());
        tx.send(&"late").await.unwrap();
        assert!(matches!(rx.recv::<String>().await, Err(TransferError::Broken)));
        assert!(matches!(rx.send(&"x").await, Err(TransferError::Broken)));
        // The peer sees the connection go.
        assert!(matches!(within(tx.recv::<String>()).await, Err(TransferError::Closed)));
    }

    #[tokio::test]
    async fn oversized_frames_are_refused() {
        let (mut rx, mut tx) = pair().await;
        let header = frame_header(T_MSG, MAX_MESSAGE + 1);
        tx.write_raw(&header).await.unwrap();
        let r = within(rx.recv::<String>()).await;
        assert!(matches!(r, Err(TransferError::Protocol(_))), "{r:?}");
    }

    #[tokio::test]
    async fn undecodable_messages_leave_the_channel_usable() {
        let (mut rx, mut tx) = pair().await;
        tx.send(&"text").await.unwrap();
        tx.send(&42u32).await.unwrap();
        assert!(matches!(rx.recv::<u32>().await, Err(TransferError::Json { .. })));
        assert_eq!(rx.recv::<u32>().await.unwrap(), 42);
    }
}
