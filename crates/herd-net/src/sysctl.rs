//! Reading and writing kernel parameters under `/proc/sys`.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens the
//! file, so these functions act on the calling thread's namespace; to change
//! another namespace, call them from [`crate::Netns::run`] or use
//! [`crate::Netlink::write_sysctl`].

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::NetError;
use crate::netns::NsId;

/// Writes a sysctl under `/proc/sys` in the calling thread's network
/// namespace. `key` is slash-separated, e.g. `"net/ipv4/conf/hc123/proxy_arp"`
/// (slashes, not dots, because interface names may contain dots).
pub fn write_sysctl(key: &str, value: &str) -> Result<(), NetError> {
    let path = sysctl_path(key)?;
    let fail = |e| NetError::io(format!("writing sysctl {key} = {value:?} in {}", thread_netns()), e);
    let mut file = OpenOptions::new().write(true).open(&path).map_err(fail)?;
    file.write_all(value.as_bytes()).map_err(fail)
}

/// Reads a sysctl under `/proc/sys` in the calling thread's network namespace,
/// without the trailing newline.
pub fn read_sysctl(key: &str) -> Result<String, NetError> {
    let path = sysctl_path(key)?;
    let mut value = String::new();
    OpenOptions::new()
        .read(true)
        .open(&path)
        .and_then(|mut f| f.read_to_string(&mut value))
        .map_err(|e| NetError::io(format!("reading sysctl {key} in {}", thread_netns()), e))?;
    Ok(value.trim_end_matches('\n').to_string())
}

/// `/proc/sys/<key>`, refusing keys that could escape `/proc/sys`.
fn sysctl_path(key: &str) -> Result<PathBuf, NetError> {
    let what = || format!("sysctl key {key:?}");
    if key.is_empty() {
        return Err(NetError::invalid(what(), "empty"));
    }
    if !key.contains('/') && key.contains('.') {
        return Err(NetError::invalid(what(), "use slashes between components (net/ipv4/ip_forward), not dots"));
    }
    if key.split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0')) {
        return Err(NetError::invalid(
            what(),
            "must be a relative path below /proc/sys without empty, '.' or '..' components",
        ));
    }
    Ok(Path::new("/proc/sys").join(key))
}

/// Names the calling thread's network namespace in error messages.
fn thread_netns() -> String {
    match NsId::current_thread() {
        Ok(id) => format!("the calling thread's netns ({id})"),
        Err(_) => "the calling thread's netns".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_confined_to_proc_sys() {
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/proxy_arp").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/proxy_arp")
        );
        for bad in [
            "",
            "/net/ipv4/ip_forward",
            "net/../../etc/passwd",
            "net/./ipv4",
            "net//ipv4",
            "net/ipv4/",
            "net.ipv4.ip_forward",
        ] {
            assert!(matches!(sysctl_path(bad), Err(NetError::Invalid { .. })), "{bad:?} accepted");
        }
    }

    #[test]
    fn reads_a_sysctl() {
        // Readable without privileges on any Linux.
        let v = read_sysctl("kernel/ostype").unwrap();
        assert_eq!(v, "Linux");
    }
}
