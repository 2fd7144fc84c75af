//! `herd exec`: the Control node checks the request, asks the container's node to prepare the
//! session, connects to the node's one-time listener and relays the session's stream between
//! the CLI's upgraded HTTP connection and the node (see [`herd_proto::exec`] and the
//! [design note](../../../docs/design/exec.md)).
//!
//! With the Control replica's TLS files (`ControlConfig::tls`) the connection to the node is
//! TLS: the node's certificate is checked against the cluster CA and the node's address, and
//! the replica presents its own (a node with TLS refuses an exec connection without one).
//!
//! The Control node keeps the sessions it relays: a container with one in progress is not
//! checkpointed or migrated ([`Control::ensure_no_exec`]), by `herd checkpoint`, `herd migrate`,
//! a drain or the policy engine alike. The node checks the same before it dumps anything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use herd_proto::exec::{self as proto, ExecRequest, Frame, SessionInfo};
use herd_proto::node::{NodeReply, NodeRequest};
use herd_proto::state::ContainerState;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::control::Control;
use crate::error::{Error, Kind, Result};

/// How long a node may take to prepare a session.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to the node's listener and its answer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The sessions this Control node relays, by session id.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, (String, SessionInfo)>>,
}

/// A session's place in the [`Registry`], given up when dropped.
pub struct Registered {
    control: Arc<Control>,
    session: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.control.execs.sessions.lock().unwrap().remove(&self.session);
    }
}

impl Registry {
    fn of(&self, container: &str) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> =
            self.sessions.lock().unwrap().values().filter(|(c, _)| c == container).map(|(_, s)| s.clone()).collect();
        v.sort_by_key(|s| s.started_at);
        v
    }

    fn set_pid(&self, session: &str, pid: u32) {
        if let Some((_, s)) = self.sessions.lock().unwrap().get_mut(session) {
            s.pid = Some(pid);
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill(&mut b[..]);
    hex::encode(b)
}

/// A prepared session: the connection to the node, authenticated, before the process starts.
pub struct Session {
    control: Arc<Control>,
    registered: Registered,
    container: String,
    node: String,
    stream: NodeStream,
}

/// The connection to a node's exec listener.
type NodeStream = Box<dyn AsyncStream>;

trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl AsyncStream for TcpStream {}
impl AsyncStream for TlsStream<TcpStream> {}

impl Control {
    /// Refuses to checkpoint or migrate (`action`, e.g. "migrate it") container `name` while
    /// exec sessions are in progress in it.
    pub(crate) fn ensure_no_exec(&self, name: &str, action: &str) -> Result<()> {
        let sessions = self.execs.of(name);
        if sessions.is_empty() { Ok(()) } else { Err(Error::conflict(proto::sessions_block(name, &sessions, action))) }
    }

    /// Prepares an exec session in container `name`: its node waits for the stream, and the
    /// container is not checkpointed or migrated until the session ends.
    pub async fn exec_open(self: &Arc<Self>, name: &str, req: ExecRequest) -> Result<Session> {
        req.validate().map_err(Error::bad_request)?;
        self.ensure_not_migrating(name)?;
        let _guard = self.lock(name).await;
        self.ensure_not_migrating(name)?;
        let (record, state) = self.record_of(name)?;
        if state != ContainerState::Running {
            return Err(Error::conflict(format!(
                "container {name} is {}: herd exec needs a running container",
                state.as_str()
            )));
        }
        let session = format!("e{}", random_hex(8));
        let token = random_hex(32);
        self.execs.sessions.lock().unwrap().insert(
            session.clone(),
            (
                name.to_string(),
                SessionInfo {
                    session: session.clone(),
                    cmd: req.cmd.join(" "),
                    pid: None,
                    started_at: herd_proto::now_millis(),
                },
            ),
        );
        let registered = Registered { control: self.clone(), session: session.clone() };
        let node = record.node.clone();
        let prepare = NodeRequest::ExecPrepare {
            id: record.id.clone(),
            session: session.clone(),
            token: token.clone(),
            request: req,
        };
        let address = match self.node_call(&node, &prepare, PREPARE_TIMEOUT).await? {
            NodeReply::ExecReady { address } => address,
            other => {
                return Err(Error::new(Kind::Internal, format!("node {node} answered an exec with {other:?}")));
            }
        };
        let tls = match &self.cfg.tls {
            Some(files) => Some(
                herd_tls::config::client_config(&files.ca, Some(files))
                    .map_err(|e| Error::new(Kind::Internal, format!("the TLS settings of exec connections: {e}")))?,
            ),
            None => None,
        };
        let stream = connect(address, &session, &token, tls)
            .await
            .map_err(|e| Error::unavailable(format!("cannot open the exec session on node {node} ({address}): {e}")))?;
        Ok(Session { control: self.clone(), registered, container: name.to_string(), node, stream })
    }
}

/// Connects to a node's exec listener (over TLS with `tls`, the node's certificate checked
/// for its address) and says the session's hello.
async fn connect(
    address: SocketAddr,
    session: &str,
    token: &str,
    tls: Option<tokio_rustls::rustls::ClientConfig>,
) -> std::io::Result<NodeStream> {
    let open = async {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        // A node that vanishes is noticed even while the session is idle.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(15))
            .with_interval(Duration::from_secs(5))
            .with_retries(6);
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
        let mut stream: NodeStream = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(address.ip().into());
                let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
                let session = connector.connect(name, tcp).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("TLS handshake failed: {e} (does the node have TLS?)"))
                })?;
                Box::new(session)
            }
        };
        let refused =
            |e: std::io::Error| match e.get_ref().and_then(|i| i.downcast_ref::<tokio_rustls::rustls::Error>()) {
                Some(why) => std::io::Error::other(format!("the node refused this Control node's certificate: {why}")),
                None => e,
            };
        stream.write_all(&proto::exec_hello(session, token)).await.map_err(refused)?;
        stream.flush().await.map_err(refused)?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.map_err(refused)?;
        match answer[0] {
            0 => Ok(stream),
            1 => Err(std::io::Error::other("the node refused the session's ticket")),
            3 => Err(std::io::Error::other(
                "the node requires TLS for exec sessions, and this Control node has no TLS certificate",
            )),
            n => Err(std::io::Error::other(format!("the node answered {n} to the hello"))),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other(format!("no answer within {CONNECT_TIMEOUT:?}"))))
}

impl Session {
    /// Relays the session between the client and the node until the node closes it (after the
    /// exit code), the client goes away (the node then kills the process), or the node is lost
    /// (the client is told).
    pub async fn relay(self, client: impl AsyncRead + AsyncWrite + Send + 'static) {
        let Session { control, registered, container, node, stream } = self;
        let (mut client_r, mut client_w) = tokio::io::split(client);
        let (mut node_r, mut node_w) = tokio::io::split(stream);
        let mut lost = control.node_lost.subscribe();
        let node_lost = async {
            loop {
                match lost.recv().await {
                    Ok(n) if n == node => return,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let to_node = async {
            let _ = tokio::io::copy(&mut client_r, &mut node_w).await;
        };
        let to_client = async {
            // Frame by frame, so that a frame of this node's own can be put in between.
            let mut header = [0u8; proto::HEADER];
            let mut first = true;
            loop {
                if node_r.read_exact(&mut header).await.is_err() {
                    return Ok(());
                }
                let (ty, len) = proto::parse_header(&header).map_err(|e| e.0)?;
                let mut payload = vec![0u8; len];
                node_r.read_exact(&mut payload).await.map_err(|e| format!("the stream from node {node} broke: {e}"))?;
                if first {
                    first = false;
                    if let Ok(Frame::Started { pid }) = Frame::decode(ty, &payload) {
                        control.execs.set_pid(&registered.session, pid);
                    }
                }
                let mut bytes = header.to_vec();
                bytes.extend_from_slice(&payload);
                if client_w.write_all(&bytes).await.is_err() {
                    return Ok(());
                }
            }
        };
        let failure: Option<String> = tokio::select! {
            () = to_node => None,
            r = to_client => r.err(),
            () = node_lost => Some(format!("node {node} went down or its agent restarted: the exec session in {container} is lost")),
        };
        // The frame reader above is dropped at a frame boundary or with the stream broken:
        // either way a frame of ours cannot land inside one of the node's.
        if let Some(message) = failure {
            tracing::warn!("exec session {}: {message}", registered.session);
            let _ = client_w.write_all(&Frame::Error(message).encode()).await;
        }
        let _ = client_w.shutdown().await;
    }
}

/// `GET /v1/containers/{name}/exec?request=JSON` with `Upgrade: herd-exec`: prepares the
/// session, answers 101 Switching Protocols and relays the stream on the upgraded connection.
/// Anything that fails before (bad request, unknown or stopped container, node down) is an
/// ordinary error answer.
pub async fn handle(control: Arc<Control>, name: String, request: &str, mut req: Request) -> Result<Response> {
    let wants_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(proto::UPGRADE));
    if !wants_upgrade {
        return Err(Error::bad_request(format!(
            "this route carries a session over an HTTP upgrade (Connection: Upgrade, Upgrade: {}): use herd exec",
            proto::UPGRADE
        )));
    }
    let exec: ExecRequest =
        serde_json::from_str(request).map_err(|e| Error::bad_request(format!("malformed exec request: {e}")))?;
    let session = control.exec_open(&name, exec).await?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => session.relay(hyper_util::rt::TokioIo::new(upgraded)).await,
            // Dropping the session closes the node's connection: the process never starts.
            Err(e) => tracing::warn!("exec in {}: the client's connection was not upgraded: {e}", session.container),
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, proto::UPGRADE)
        .body(Body::empty())
        .expect("a valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_node::transfer::{Accepted, Budget, Listener, Ticket, TransferTls};
    use herd_tls::ca::{ClusterCa, Role, Subject};

    const WEEK: Duration = Duration::from_secs(7 * 86400);

    /// A node's exec listener with TLS takes a session from a Control replica with its
    /// certificate, and refuses one without.
    #[tokio::test]
    async fn exec_sessions_go_over_tls_with_the_control_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::init(&dir.path().join("ca"), "t").unwrap();
        let local: std::net::IpAddr = [127, 0, 0, 1].into();
        let node = ca.issue_into(&Subject::new("n1", Role::Node).with_ip(local), WEEK, &dir.path().join("n1")).unwrap();
        let control =
            ca.issue_into(&Subject::new("c1", Role::Control).with_ip(local), WEEK, &dir.path().join("c1")).unwrap();
        let token = "ab".repeat(32);
        let ticket = Ticket { migration: "e1".into(), token: token.clone() };
        let tls = TransferTls::new(&node).unwrap();
        let listener = Listener::bind_with(local, ticket, Budget::unlimited(), Some(tls)).await.unwrap();
        let addr = listener.local_addr();
        let config = || herd_tls::config::client_config(&control.ca, Some(&control)).unwrap();

        // Without TLS, and with TLS but no certificate: refused, clearly.
        let e = connect(addr, "e1", &token, None).await.err().expect("plain text must be refused");
        assert!(e.to_string().contains("requires TLS for exec sessions"), "{e}");
        let anonymous = herd_tls::config::client_config(&control.ca, None).unwrap();
        let e = connect(addr, "e1", &token, Some(anonymous)).await.err().expect("no certificate must be refused");
        assert!(e.to_string().contains("refused this Control node's certificate"), "{e}");
        // A wrong token over TLS is refused as before.
        let e = connect(addr, "e1", &"cd".repeat(32), Some(config())).await.err().expect("a wrong token");
        assert!(e.to_string().contains("refused the session's ticket"), "{e}");

        let mut stream = connect(addr, "e1", &token, Some(config())).await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.unwrap().unwrap();
        let Accepted::Exec(mut node_end) = accepted else { panic!("not an exec connection: {accepted:?}") };
        assert_eq!(node_end.peer_identity().as_deref(), Some("c1 (control)"));
        stream.write_all(b"ping").await.unwrap();
        stream.flush().await.unwrap();
        let mut got = [0u8; 4];
        node_end.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    }
}
