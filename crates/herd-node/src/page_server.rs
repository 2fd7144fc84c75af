//! The destination's CRIU processes that take a migration's memory pages: `criu page-server`
//! (cold and pre-copy: it stores the pages the source's dump sends) and `criu lazy-pages`
//! (post-copy: it asks the source's page server for pages as the restored process touches
//! them). Both listen or connect on 127.0.0.1 and the agents relay their connection to the
//! other node over the migration's pages connection ([`crate::transfer`], [`crate::relay`]).
//!
//! With the node's TLS files they speak CRIU's own TLS to the source's CRIU
//! ([`crate::criu_config::tls_args`]), end to end through the relays. `criu lazy-pages` then
//! connects to a local port (`--address`/`--port`) rather than taking the pages connection
//! as an inherited socket (`--ps-socket`): CRIU 4.2.1 makes no TLS session on a
//! `--ps-socket` connection (`connect_to_page_server` in `criu/page-xfer.c` skips
//! `tls_x509_init` for it), so the agent relays that local connection through a `herd
//! page-proxy` process ([`crate::pageproxy`]), which, like the inherited socket, keeps the
//! pages flowing across an agent restart.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_tls::TlsFiles;

/// A free TCP port on 127.0.0.1, for a CRIU process to listen on.
pub fn free_local_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Connects to 127.0.0.1:`port`, retrying while the CRIU process there starts.
pub async fn connect_local(port: u16, timeout: Duration) -> anyhow::Result<tokio::net::TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => bail!("CRIU did not listen on 127.0.0.1:{port}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// `criu page-server` listening on 127.0.0.1:`port`, storing pages into `images` (whose
/// parent images, relative to it, are `parent`), logging into `work/log`.
pub fn page_server_command(
    criu: &Path,
    port: u16,
    images: &Path,
    work: &Path,
    log: &str,
    parent: Option<&str>,
    tls: Option<&TlsFiles>,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(criu);
    cmd.args(["page-server", "--address", "127.0.0.1", "--port", &port.to_string(), "--images-dir"])
        .arg(images)
        .arg("--work-dir")
        .arg(work)
        .args(["-o", log, "-v4"]);
    if let Some(parent) = parent {
        cmd.args(["--prev-images-dir", parent]);
    }
    if let Some(files) = tls {
        cmd.args(crate::criu_config::tls_args(files));
    }
    quiet(&mut cmd);
    cmd
}

/// Where `criu lazy-pages` reaches the source's page server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LazySource {
    /// The pages connection itself, inherited as this descriptor (plain text only).
    Socket(RawFd),
    /// A relay listening on 127.0.0.1 at this port (CRIU connects, and makes its TLS session).
    Port(u16),
    /// The images themselves: every page is already on this node (after pre-copy), and the
    /// restored processes get them from the images as they touch them and in the background.
    Local,
}

/// `criu lazy-pages` for the images in `images`, its work directory `work` (the restore's:
/// it holds `lazy-pages.socket`), fetching pages from `source`.
pub fn lazy_pages_command(
    criu: &Path,
    images: &Path,
    work: &Path,
    log: &str,
    source: LazySource,
    tls: Option<&TlsFiles>,
) -> anyhow::Result<std::process::Command> {
    let mut cmd = std::process::Command::new(criu);
    cmd.arg("lazy-pages");
    if !matches!(source, LazySource::Local) {
        cmd.arg("--page-server");
    }
    match source {
        LazySource::Socket(fd) => {
            if tls.is_some() {
                bail!("criu lazy-pages makes no TLS session on an inherited socket: give it a port to connect to");
            }
            cmd.args(["--ps-socket", &fd.to_string()]);
        }
        LazySource::Port(port) => {
            cmd.args(["--address", "127.0.0.1", "--port", &port.to_string()]);
        }
        LazySource::Local if tls.is_some() => bail!("criu lazy-pages reads local images without TLS"),
        LazySource::Local => {}
    }
    cmd.arg("--images-dir").arg(images).arg("--work-dir").arg(work).args(["-o", log, "-v4"]);
    if let Some(files) = tls {
        cmd.args(crate::criu_config::tls_args(files));
    }
    quiet(&mut cmd);
    Ok(cmd)
}

fn quiet(cmd: &mut std::process::Command) {
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
}

/// The arguments of a command, as text (for tests and logs).
pub fn args_of(cmd: &std::process::Command) -> Vec<OsString> {
    cmd.get_args().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(cmd: &std::process::Command) -> Vec<String> {
        args_of(cmd).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    fn tls() -> TlsFiles {
        TlsFiles::in_dir(Path::new("/tls"), "n2")
    }

    const TLS_ARGS: [&str; 8] = [
        "--tls",
        "--tls-cacert",
        "/tls/ca.crt",
        "--tls-cert",
        "/tls/n2.crt",
        "--tls-key",
        "/tls/n2.key",
        "--tls-no-cn-verify",
    ];

    #[test]
    fn page_servers_speak_tls_with_the_nodes_files() {
        let (criu, images, work) = (Path::new("/criu"), Path::new("/s/images"), Path::new("/s"));
        let plain = page_server_command(criu, 4000, images, work, "ps.log", None, None);
        assert!(!words(&plain).iter().any(|w| w.starts_with("--tls")), "{:?}", words(&plain));
        let tls = page_server_command(criu, 4000, images, work, "ps.log", Some("../pre-1"), Some(&tls()));
        let w = words(&tls);
        assert_eq!(&w[..5], ["page-server", "--address", "127.0.0.1", "--port", "4000"]);
        assert!(w.windows(2).any(|p| p == ["--prev-images-dir", "../pre-1"]), "{w:?}");
        assert_eq!(&w[w.len() - TLS_ARGS.len()..], TLS_ARGS);
    }

    #[test]
    fn lazy_pages_connect_to_a_port_for_tls() {
        let (criu, images, work) = (Path::new("/criu"), Path::new("/s/images"), Path::new("/s/work"));
        let plain = lazy_pages_command(criu, images, work, "lp.log", LazySource::Socket(7), None).unwrap();
        assert_eq!(&words(&plain)[..4], ["lazy-pages", "--page-server", "--ps-socket", "7"]);
        let e = lazy_pages_command(criu, images, work, "lp.log", LazySource::Socket(7), Some(&tls())).unwrap_err();
        assert!(e.to_string().contains("no TLS session on an inherited socket"), "{e}");
        let tls = lazy_pages_command(criu, images, work, "lp.log", LazySource::Port(4001), Some(&tls())).unwrap();
        let w = words(&tls);
        assert_eq!(&w[..6], ["lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", "4001"]);
        assert_eq!(&w[w.len() - TLS_ARGS.len()..], TLS_ARGS);
    }
}
