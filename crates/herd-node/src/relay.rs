//! Relays a migration's page traffic between two TCP connections: CRIU's local end and the
//! peer node's, in the agent (cold migrations) and in `herd page-proxy` (post-copy). With TLS
//! the traffic is CRIU's TLS records, relayed as they are.
//!
//! The pages go through a pipe with `splice(2)`: the kernel hands the received buffers on to
//! the other socket without copying them through this process. A cold migration's pages cross
//! two relays (one on each node), a post-copy migration's one (the source's page proxy), and
//! copying them in and out of user space took two extra passes over the data per relay, on a
//! machine the migrating container and CRIU share.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::transfer::Budget;

/// How much a relay's pipe holds: about one splice's worth of a large page answer.
const PIPE_SIZE: i32 = 1 << 20;

/// Relays both ways between `a` and `b` until both ends close; returns the bytes moved each
/// way (`a` to `b`, `b` to `a`). `budget` caps the bytes per second, both ways together.
pub async fn relay(a: TcpStream, b: TcpStream, budget: &Budget) -> io::Result<(u64, u64)> {
    // CRIU's page protocol is small requests and answers: Nagle's algorithm would hold each
    // back until the peer's delayed ACK (up to 200 ms), as CRIU knows (it sets TCP_NODELAY).
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    tokio::try_join!(pump(&a, &b, budget, "a to b"), pump(&b, &a, budget, "b to a"))
}

/// Like [`relay`], between the destination's `criu lazy-pages` (`peer`) and the source's
/// CRIU page server (`local`), which takes a clean end of its connection for "every page
/// has arrived" and then kills the container it dumped. So the peer's end is passed on as a
/// clean end only after the peer closed the session properly (its last request is CRIU's
/// `PS_IOV_CLOSE`); a peer that vanishes mid-transfer resets the local connection instead,
/// which makes CRIU fail the dump and thaw the container, still whole, on the source.
pub async fn relay_page_requests(peer: TcpStream, local: TcpStream, budget: &Budget) -> io::Result<(u64, u64)> {
    // Dropping `local` on an error then resets it rather than ending it cleanly.
    SockRef::from(&local).set_linger(Some(Duration::ZERO))?;
    peer.set_nodelay(true)?; // as in `relay`
    local.set_nodelay(true)?;
    tokio::try_join!(pump_requests(&peer, &local, budget), pump(&local, &peer, budget, "CRIU to peer"),)
}

/// [`relay_page_requests`] when the two CRIUs speak TLS through the relay: the requests are
/// ciphertext, and TLS itself tells a finished session from a broken one (CRIU ends its
/// session with a close_notify alert, which no one without its keys can forge, and gnutls
/// fails a read that meets the end of the connection without one). So the bytes are relayed
/// unread, both ways with `splice(2)`; a relay that fails still resets the local connection.
pub async fn relay_encrypted_pages(peer: TcpStream, local: TcpStream, budget: &Budget) -> io::Result<(u64, u64)> {
    SockRef::from(&local).set_linger(Some(Duration::ZERO))?;
    relay(peer, local, budget).await
}

/// Relays between CRIU's plain local connection and a peer's connection that Herd seals
/// with TLS (the node certificates of both ends checked against the cluster CA), until both
/// ends close; returns the bytes moved (`local` to the peer, the peer to `local`) in plain
/// text. TLS tells a finished session from a broken one: the peer's end of the session
/// without a close_notify is an error. With `watch_requests` (the source of a post-copy
/// migration, where the peer is the destination's `criu lazy-pages`), the peer's end counts
/// as clean only after CRIU's close request, as in [`relay_page_requests`]; otherwise the
/// local connection is reset, so that CRIU fails rather than takes it for "every page sent".
pub async fn relay_sealed<S>(local: TcpStream, peer: S, budget: &Budget, watch_requests: bool) -> io::Result<(u64, u64)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    local.set_nodelay(true)?;
    SockRef::from(&local).set_linger(Some(Duration::ZERO))?;
    let (mut peer_r, mut peer_w) = tokio::io::split(peer);
    let (mut local_r, mut local_w) = local.into_split();
    let to_peer = async {
        let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("relay CRIU to peer: {what}: {e}"));
        let mut buf = vec![0u8; SEALED_BUFFER];
        let mut total = 0u64;
        loop {
            let n = local_r.read(&mut buf).await.map_err(|e| context("reading", e))?;
            if n == 0 {
                // close_notify, then the end of the connection.
                peer_w.shutdown().await.map_err(|e| context("ending the session", e))?;
                return Ok::<u64, io::Error>(total);
            }
            budget.consume(n as u64).await;
            // Flushed at once: CRIU's page protocol is requests and answers, and an answer
            // left in the TLS buffer would wait for the next one forever.
            peer_w.write_all(&buf[..n]).await.map_err(|e| context("writing", e))?;
            peer_w.flush().await.map_err(|e| context("writing", e))?;
            total += n as u64;
        }
    };
    let to_local = async {
        let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("relay peer to CRIU: {what}: {e}"));
        let mut requests = RequestTail::default();
        let mut buf = vec![0u8; SEALED_BUFFER];
        let mut total = 0u64;
        loop {
            let n = peer_r.read(&mut buf).await.map_err(|e| context("reading", e))?;
            if n == 0 {
                if watch_requests && !requests.closed() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "relay peer to CRIU: the peer went away before it had every page",
                    ));
                }
                local_w.shutdown().await.map_err(|e| context("shutting down", e))?;
                return Ok(total);
            }
            if watch_requests {
                requests.push(&buf[..n]);
            }
            budget.consume(n as u64).await;
            local_w.write_all(&buf[..n]).await.map_err(|e| context("writing", e))?;
            total += n as u64;
        }
    };
    tokio::try_join!(to_peer, to_local)
}

/// What a sealed relay reads at once (TLS records hold 16 KiB; several per read).
const SEALED_BUFFER: usize = 256 << 10;

/// Moves what arrives on `from` to `to` through a pipe, then ends `to`'s writing side.
async fn pump(from: &TcpStream, to: &TcpStream, budget: &Budget, direction: &str) -> io::Result<u64> {
    let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("relay {direction}: {what}: {e}"));
    let (pipe_r, pipe_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| context("making a pipe", e.into()))?;
    // A bigger pipe takes more per call; the default (64 KiB) still works.
    let _ = fcntl(&pipe_w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    let chunk = budget.chunk_size();
    let mut total = 0u64;
    loop {
        // The pipe is empty here: a socket with nothing to read is what makes splice wait.
        let n = loop {
            from.readable().await.map_err(|e| context("reading", e))?;
            match from.try_io(Interest::READABLE, || splice(from, &pipe_w, chunk)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(context("reading", e)),
            }
        };
        if n == 0 {
            return end(to).map(|()| total).map_err(|e| context("shutting down", e));
        }
        budget.consume(n as u64).await;
        let mut left = n;
        while left > 0 {
            to.writable().await.map_err(|e| context("writing", e))?;
            match to.try_io(Interest::WRITABLE, || splice(&pipe_r, to, left)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(context("writing", e)),
            }
        }
        total += n as u64;
    }
}

/// Moves CRIU page requests from `peer` to `local`, watching for the close request, and ends
/// `local`'s writing side only after one: a connection that ends without it is an error.
async fn pump_requests(peer: &TcpStream, local: &TcpStream, budget: &Budget) -> io::Result<u64> {
    let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("relay peer to CRIU: {what}: {e}"));
    let mut requests = RequestTail::default();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = loop {
            peer.readable().await.map_err(|e| context("reading", e))?;
            match peer.try_read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(context("reading", e)),
            }
        };
        if n == 0 {
            if !requests.closed() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "relay peer to CRIU: the peer went away before it had every page",
                ));
            }
            return end(local).map(|()| total).map_err(|e| context("shutting down", e));
        }
        requests.push(&buf[..n]);
        budget.consume(n as u64).await;
        let mut written = 0;
        while written < n {
            local.writable().await.map_err(|e| context("writing", e))?;
            match local.try_write(&buf[written..n]) {
                Ok(m) => written += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(context("writing", e)),
            }
        }
        total += n as u64;
    }
}

/// One non-blocking `splice(2)` of up to `len` bytes from `from` to `to` (one is a pipe).
fn splice(from: &impl AsFd, to: &impl AsFd, len: usize) -> io::Result<usize> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    nix::fcntl::splice(from, None, to, None, len, flags).map_err(io::Error::from)
}

/// Ends the writing side of `stream` (a peer already gone has nothing left to be told).
fn end(stream: &TcpStream) -> io::Result<()> {
    match nix::sys::socket::shutdown(stream.as_raw_fd(), nix::sys::socket::Shutdown::Write) {
        Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The tail of a stream of CRIU page-server requests (`struct page_server_iov`: a `u32`
/// command padded to 8 bytes, then three `u64`: 32 bytes on 64-bit Linux).
#[derive(Default)]
struct RequestTail {
    last: [u8; RequestTail::SIZE],
    len: u64,
}

impl RequestTail {
    const SIZE: usize = 32;
    const PS_IOV_CLOSE: u32 = 0x1023;
    const PS_IOV_FORCE_CLOSE: u32 = 0x1024;

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.last[(self.len % Self::SIZE as u64) as usize] = b;
            self.len += 1;
        }
    }

    /// Whether the stream ends with a whole close request.
    fn closed(&self) -> bool {
        if self.len == 0 || !self.len.is_multiple_of(Self::SIZE as u64) {
            return false;
        }
        let cmd = u32::from_ne_bytes(self.last[..4].try_into().unwrap());
        cmd == Self::PS_IOV_CLOSE || cmd == Self::PS_IOV_FORCE_CLOSE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of sockets on the loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// A relay of page requests between a peer's socket and a page server's: (the peer's end,
    /// the page server's end, the relay).
    async fn page_request_relay() -> (TcpStream, TcpStream, tokio::task::JoinHandle<io::Result<(u64, u64)>>) {
        let (peer, peer_relay) = pair().await;
        let (local_relay, local) = pair().await;
        let relayed =
            tokio::spawn(async move { relay_page_requests(peer_relay, local_relay, &Budget::unlimited()).await });
        (peer, local, relayed)
    }

    fn request(cmd: u32) -> [u8; 32] {
        let mut r = [0u8; 32];
        r[..4].copy_from_slice(&cmd.to_ne_bytes());
        r
    }

    #[test]
    fn only_a_close_request_ends_the_page_requests_cleanly() {
        let mut t = RequestTail::default();
        assert!(!t.closed(), "nothing asked yet");
        t.push(&request(7)); // PS_IOV_GET
        assert!(!t.closed());
        let close = request(0x1023);
        t.push(&close[..20]);
        assert!(!t.closed(), "half a close request");
        t.push(&close[20..]);
        assert!(t.closed());
        let mut forced = RequestTail::default();
        forced.push(&request(0x1024));
        assert!(forced.closed());
    }

    #[tokio::test]
    async fn page_requests_that_end_without_a_close_reset_the_page_server() {
        let (mut peer, mut local, relayed) = page_request_relay().await;
        peer.write_all(&request(7)).await.unwrap();
        let mut r = [0u8; 32];
        local.read_exact(&mut r).await.unwrap();
        drop(peer); // gone without PS_IOV_CLOSE
        let err = relayed.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("before it had every page"), "{err}");
        let mut rest = Vec::new();
        let reset = local.read_to_end(&mut rest).await.unwrap_err();
        assert_eq!(reset.kind(), io::ErrorKind::ConnectionReset, "the page server must see a reset, not an end");
    }

    #[tokio::test]
    async fn page_requests_that_end_with_a_close_end_the_page_server_cleanly() {
        let (mut peer, mut local, relayed) = page_request_relay().await;
        peer.write_all(&request(0x1023)).await.unwrap();
        peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        local.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, request(0x1023));
        local.shutdown().await.unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(relayed.await.unwrap().unwrap(), (32, 0));
    }
}
