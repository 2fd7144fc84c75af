//! `herd page-proxy`: a small process that carries a post-copy migration's page traffic
//! between the source's CRIU page server and the destination's connection (which the
//! destination's `criu lazy-pages` holds itself).
//!
//! With TLS the destination runs one too, between the pages connection and its `criu
//! lazy-pages` (see [`crate::page_server`]); both then relay CRIU's TLS records unread.
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

use crate::relay::{relay_encrypted_pages, relay_page_requests};
use crate::transfer::Budget;

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
        a.extend(["--report".into(), self.report.display().to_string()]);
        a
    }

    pub fn parse(args: &[String]) -> Result<ProxyArgs, String> {
        let (mut peer, mut local, mut bandwidth, mut report, mut tls) = (None, None, None, None, false);
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--tls" {
                tls = true;
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let fd = || value.parse::<RawFd>().map_err(|_| format!("bad fd {value:?}"));
            match flag.as_str() {
                "--peer-fd" => peer = Some(fd()?),
                "--local-fd" => local = Some(fd()?),
                "--bandwidth" => bandwidth = Some(value.parse().map_err(|_| format!("bad bandwidth {value:?}"))?),
                "--report" => report = Some(PathBuf::from(value)),
                _ => return Err(format!("unknown page-proxy argument {flag}")),
            }
        }
        Ok(ProxyArgs {
            peer_fd: peer.ok_or("--peer-fd is required")?,
            local_fd: local.ok_or("--local-fd is required")?,
            bandwidth,
            report: report.ok_or("--report is required")?,
            tls,
        })
    }
}

/// Starts `exe page-proxy` with `peer` and `local` as inherited descriptors, in its own
/// process group (and `cgroup`), so it outlives the agent; `tls`: the CRIUs speak TLS.
pub fn spawn(
    exe: &Path,
    peer: OwnedFd,
    local: OwnedFd,
    bandwidth: Option<u64>,
    tls: bool,
    report: &Path,
    cgroup: Option<&str>,
) -> anyhow::Result<tokio::process::Child> {
    let (peer_raw, local_raw) = (peer.as_raw_fd(), local.as_raw_fd());
    let args = ProxyArgs { peer_fd: peer_raw, local_fd: local_raw, bandwidth, report: report.to_path_buf(), tls };
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
    let budget = Budget::new(args.bandwidth);
    let (to_local, to_peer) = if args.tls {
        relay_encrypted_pages(peer, local, &budget).await?
    } else {
        relay_page_requests(peer, local, &budget).await?
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
        let a = ProxyArgs { peer_fd: 3, local_fd: 4, bandwidth: Some(10), report: "/r".into(), tls: false };
        assert_eq!(ProxyArgs::parse(&a.to_args()[1..]).unwrap(), a);
        let b = ProxyArgs { peer_fd: 5, local_fd: 6, bandwidth: None, report: "/x".into(), tls: true };
        assert_eq!(ProxyArgs::parse(&b.to_args()[1..]).unwrap(), b);
        assert!(ProxyArgs::parse(&["--peer-fd".into()]).is_err());
    }
}
