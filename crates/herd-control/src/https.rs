//! The API's listener: HTTPS with the replica's certificate of the cluster CA, or plain HTTP
//! for a Control node started without TLS files.
//!
//! Handshakes run on tasks of their own with a time limit, so a client that connects and
//! says nothing holds up no one else. A client that speaks plain HTTP to the HTTPS port gets
//! a plain `400` saying so (as nginx does) instead of a dead connection, and the refusal is
//! logged with the client's address; so is every failed handshake (a certificate of another
//! CA, an expired one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes done and waiting for the HTTP server to take them.
const READY_QUEUE: usize = 64;

/// The first byte of every TLS record that opens a connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serves `app` on `listener` until `shutdown`: over TLS with `tls`'s settings, else in
/// plain text.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Handlers may ask who connected (`ConnectInfo<SocketAddr>`): a join says where from.
    let app = app.into_make_service_with_connect_info::<Peer>();
    match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("API server"),
        Some(config) => {
            let listener = TlsListener::new(listener, config)?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("API server")
        }
    }
}

/// Who sent a request (`ConnectInfo<Peer>`): its address, and over TLS the certificate it
/// presented, which the handshake checked against the cluster CA.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub cert: Option<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Peer {
        let cert = stream.io().get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
        Peer { addr: *stream.remote_addr(), cert }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Peer {
        Peer { addr: *stream.remote_addr(), cert: None }
    }
}

/// The API's server settings from a replica's TLS files: clients may present a certificate
/// of the cluster CA (it is checked when they do); browsers and Prometheus come without one,
/// with the bearer token.
pub fn server_config(files: &herd_tls::TlsFiles) -> anyhow::Result<Arc<tokio_rustls::rustls::ServerConfig>> {
    let config = herd_tls::config::server_config(files, herd_tls::config::ClientCerts::Optional)
        .context("the API's TLS settings")?;
    Ok(Arc::new(config))
}

/// A listener whose connections are TLS streams whose handshake is complete.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    fn new(listener: TcpListener, config: Arc<tokio_rustls::rustls::ServerConfig>) -> anyhow::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!("API: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if ready.is_closed() {
            return;
        }
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            if let Some(tls) = handshake(&acceptor, stream, peer).await {
                let _ = ready.send((tls, peer)).await;
            }
        });
    }
}

async fn handshake(acceptor: &TlsAcceptor, mut stream: TcpStream, peer: SocketAddr) -> Option<TlsStream<TcpStream>> {
    let _ = stream.set_nodelay(true);
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut b = [0u8; 1];
        stream.peek(&mut b).await.map(|n| (n == 1).then_some(b[0]))
    })
    .await;
    match first {
        Ok(Ok(Some(TLS_HANDSHAKE_RECORD))) => {}
        Ok(Ok(Some(_))) => {
            tracing::warn!("API: refused a plain-text connection from {peer}: this port speaks HTTPS only");
            let body =
                "this is an HTTPS port: use https:// (herd up writes the cluster CA into the CLI's configuration)\n";
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            // The request is read first and the connection ended cleanly: closing a socket
            // with unread bytes resets it, and the client would lose the answer.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let mut buf = [0u8; 8192];
                let _ = stream.read(&mut buf).await;
                stream.write_all(reply.as_bytes()).await?;
                stream.shutdown().await?;
                while stream.read(&mut buf).await? > 0 {}
                std::io::Result::Ok(())
            })
            .await;
            return None;
        }
        // Closed, failed or silent: nothing to say to it.
        _ => return None,
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::warn!("API: TLS handshake with {peer} refused: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("API: TLS handshake with {peer} took more than {HANDSHAKE_TIMEOUT:?}: closed");
            None
        }
    }
}
