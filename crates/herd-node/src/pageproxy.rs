//! `herd page-proxy`: a small process that carries a post-copy migration's page traffic
//! between the source's CRIU page server and the destination's connection (which the
//! destination's `criu lazy-pages` holds itself).
//!
//! When the pages are sealed (Herd's TLS on the pages connection, the default with TLS), the
//! destination runs one too, between the pages connection and its `criu lazy-pages`; each
//! makes its end of the session itself ([`crate::transfer::seal`]) from the node's TLS files,
//! since a session cannot be handed from one process to another. With CRIU's own TLS
//! (`--encrypt-pages`) both relay CRIU's TLS records unread.
//!
//! It is a process of its own, not a task of the agent, so the pages keep flowing while an
//! agent restarts: a post-copy container on the destination runs with pages still on the
//! source, and would die if the flow stopped. The agent hands it both ends as inherited file
//! descriptors, so nothing has to be re-established. It also keeps a destination that
//! vanishes from looking, to the page server, like one that has every page
//! ([`relay_page_requests`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::relay::{relay_encrypted_pages, relay_page_requests, relay_sealed};
use crate::transfer::{Budget, SealRole};

/// How long a page proxy waits for the other end of its sealed session: the source's
/// proxy starts when the dump is done, the destination's when the restore starts.
const SEAL_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// The proxy's command line: `herd page-proxy --peer-fd N --local-fd M
/// [--bandwidth BYTES_PER_SEC] [--tls] --report FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyArgs {
    pub peer_fd: RawFd,
    /// The connection to the local page server.
    pub local_fd: RawFd,
    pub bandwidth: Option<u64>,
    /// Where the proxy writes the bytes it moved each way when it is done.
    pub report: PathBuf,
    /// The CRIUs speak TLS through the proxy: it relays their records without reading
    /// CRIU's requests ([`crate::relay::relay_encrypted_pages`]).
    pub tls: bool,
    /// Herd seals the peer connection: this proxy's end of the TLS session, from these files.
    pub seal: Option<ProxySeal>,
}

/// The sealed end a page proxy makes (see [`crate::transfer::seal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySeal {
    pub files: herd_tls::TlsFiles,
    pub role: SealRole,
}

impl ProxyArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["page-proxy".to_string(), "--peer-fd".into(), self.peer_fd.to_string()];
        a.extend(["--local-fd".into(), self.local_fd.to_string()]);
        if let Some(b) = self.bandwidth {
            a.extend(["--bandwidth".into(), b.to_string()]);
        }
        if self.tls {
            a.push("--tls".into());
        }
        if let Some(seal) = &self.seal {
            match seal.role {
                SealRole::Opener(ip) => a.extend(["--seal-opener".into(), ip.to_string()]),
                SealRole::Listener => a.push("--seal-listener".into()),
            }
            for (flag, path) in
                [("--tls-ca", &seal.files.ca), ("--tls-cert", &seal.files.cert), ("--tls-key", &seal.files.key)]
            {
                a.extend([flag.into(), path.display().to_string()]);
            }
        }
        a.extend(["--report".into(), self.report.display().to_string()]);
        a
    }

    pub fn parse(args: &[String]) -> Result<ProxyArgs, String> {
        let (mut peer, mut local, mut bandwidth, mut report, mut tls) = (None, None, None, None, false);
        let (mut role, mut ca, mut cert, mut key) = (None, None, None, None);
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--tls" => {
                    tls = true;
                    continue;
                }
                "--seal-listener" => {
                    role = Some(SealRole::Listener);
                    continue;
                }
                _ => {}
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let fd = || value.parse::<RawFd>().map_err(|_| format!("bad fd {value:?}"));
            match flag.as_str() {
                "--peer-fd" => peer = Some(fd()?),
                "--local-fd" => local = Some(fd()?),
                "--bandwidth" => bandwidth = Some(value.parse().map_err(|_| format!("bad bandwidth {value:?}"))?),
                "--report" => report = Some(PathBuf::from(value)),
                "--seal-opener" => {
                    role = Some(SealRole::Opener(value.parse().map_err(|_| format!("bad address {value:?}"))?))
                }
                "--tls-ca" => ca = Some(PathBuf::from(value)),
                "--tls-cert" => cert = Some(PathBuf::from(value)),
                "--tls-key" => key = Some(PathBuf::from(value)),
                _ => return Err(format!("unknown page-proxy argument {flag}")),
            }
        }
        Ok(ProxyArgs {
            peer_fd: peer.ok_or("--peer-fd is required")?,
            local_fd: local.ok_or("--local-fd is required")?,
            bandwidth,
            report: report.ok_or("--report is required")?,
            tls,
            seal: match (role, ca, cert, key) {
                (None, None, None, None) => None,
                (Some(role), Some(ca), Some(cert), Some(key)) => {
                    Some(ProxySeal { files: herd_tls::TlsFiles { ca, cert, key }, role })
                }
                _ => return Err("sealing needs a role and --tls-ca, --tls-cert, --tls-key".into()),
            },
        })
    }
}

/// Starts `exe page-proxy` with `peer` and `local` as inherited descriptors, in its own
/// process group (and `cgroup`), so it outlives the agent; `tls`: the CRIUs speak TLS;
/// `seal`: the proxy seals the peer connection.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    exe: &Path,
    peer: OwnedFd,
    local: OwnedFd,
    bandwidth: Option<u64>,
    tls: bool,
    seal: Option<ProxySeal>,
    report: &Path,
    cgroup: Option<&str>,
) -> anyhow::Result<tokio::process::Child> {
    let (peer_raw, local_raw) = (peer.as_raw_fd(), local.as_raw_fd());
    let args = ProxyArgs { peer_fd: peer_raw, local_fd: local_raw, bandwidth, report: report.to_path_buf(), tls, seal };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args.to_args())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if let Some(path) = cgroup {
        crate::cgroups::join_on_exec(&mut cmd, path);
    }
    // SAFETY: only fcntl between fork and exec; it clears close-on-exec on the child's copies.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [peer_raw, local_raw] {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = tokio::process::Command::from(cmd).kill_on_drop(false).spawn().context("starting the page proxy")?;
    drop((peer, local));
    Ok(child)
}

/// Reads what a finished proxy moved: (peer to local, local to peer) bytes.
pub fn read_report(report: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(report).ok()?;
    let (a, b) = text.trim().split_once(' ')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The proxy's body (`herd page-proxy`).
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    // SAFETY: the fds were inherited from the agent for this process alone.
    let peer = unsafe { std::net::TcpStream::from_raw_fd(args.peer_fd) };
    peer.set_nonblocking(true)?;
    let peer = tokio::net::TcpStream::from_std(peer)?;
    // SAFETY: as above.
    let local = unsafe { std::net::TcpStream::from_raw_fd(args.local_fd) };
    local.set_nonblocking(true)?;
    let local = tokio::net::TcpStream::from_std(local)?;
    // Whatever fails from here, the page server must see a reset, not an end: an end is
    // "every page has arrived" to it, and it would kill the container it dumped.
    socket2::SockRef::from(&local).set_linger(Some(std::time::Duration::ZERO))?;
    let budget = Budget::new(args.bandwidth);
    let (to_local, to_peer) = match &args.seal {
        Some(seal) => {
            let tls = crate::transfer::TransferTls::new(&seal.files)?;
            // The destination's proxy answers once the restore starts, after the images.
            let sealed = crate::transfer::seal(peer, &tls, seal.role, SEAL_WAIT).await?;
            // The opener is the source (it sends the pages the destination's lazy-pages
            // asks for), whose page server must see the requests end properly.
            let watch = matches!(seal.role, SealRole::Opener(_));
            let (to_peer, to_local) = relay_sealed(local, sealed, &budget, watch).await?;
            (to_local, to_peer)
        }
        None if args.tls => relay_encrypted_pages(peer, local, &budget).await?,
        None => relay_page_requests(peer, local, &budget).await?,
    };
    std::fs::write(&args.report, format!("{to_local} {to_peer}\n")).context("writing the page proxy's report")?;
    if to_local == 0 && to_peer == 0 {
        bail!("no page moved");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let a = ProxyArgs { peer_fd: 3, local_fd: 4, bandwidth: Some(10), report: "/r".into(), tls: false, seal: None };
        assert_eq!(ProxyArgs::parse(&a.to_args()[1..]).unwrap(), a);
        let b = ProxyArgs { peer_fd: 5, local_fd: 6, bandwidth: None, report: "/x".into(), tls: true, seal: None };
        assert_eq!(ProxyArgs::parse(&b.to_args()[1..]).unwrap(), b);
        let files = herd_tls::TlsFiles::in_dir(Path::new("/t"), "n1");
        for role in [SealRole::Opener("10.0.0.2".parse().unwrap()), SealRole::Listener] {
            let seal = Some(ProxySeal { files: files.clone(), role });
            let c = ProxyArgs { peer_fd: 5, local_fd: 6, bandwidth: None, report: "/x".into(), tls: false, seal };
            assert_eq!(ProxyArgs::parse(&c.to_args()[1..]).unwrap(), c);
        }
        assert!(ProxyArgs::parse(&["--seal-listener".into(), "--report".into(), "/r".into()]).is_err());
        assert!(ProxyArgs::parse(&["--peer-fd".into()]).is_err());
    }
}
