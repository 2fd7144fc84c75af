//! What a container shares with its node and with other containers, as Docker's `HostConfig`
//! says it: published ports (`-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`), the network
//! namespace it joins (`--network container:NAME`), the named volumes it mounts
//! (`-v NAME:/path[:ro]`) and the capabilities added to or dropped from Docker's default set
//! (`--cap-add`, `--cap-drop`). Parsing and validation live here so the CLI, the Control node and
//! the scheduler agree on them.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::names::NameError;

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A container port published on its node: traffic to `host_ip:host_port` (any of the node's
/// addresses when `host_ip` is 0.0.0.0) goes to the container's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

impl PortMapping {
    /// Parses Docker's `-p` syntax: `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]`.
    ///
    /// ```
    /// use herd_proto::hostconfig::PortMapping;
    /// assert_eq!(PortMapping::parse("8080:80").unwrap().to_string(), "0.0.0.0:8080->80/tcp");
    /// assert_eq!(PortMapping::parse("10.0.0.1:53:53/udp").unwrap().to_string(), "10.0.0.1:53->53/udp");
    /// assert!(PortMapping::parse("0:80").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<PortMapping, NameError> {
        let usage = || {
            NameError(format!(
                "invalid port mapping {text:?}: expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp], e.g. 8080:80"
            ))
        };
        let (addr, protocol) = match text.rsplit_once('/') {
            Some((a, "tcp")) => (a, Protocol::Tcp),
            Some((a, "udp")) => (a, Protocol::Udp),
            Some((_, other)) => {
                return Err(NameError(format!(
                    "invalid port mapping {text:?}: unknown protocol {other:?} (use tcp or udp)"
                )));
            }
            None => (text, Protocol::Tcp),
        };
        let parts: Vec<&str> = addr.split(':').collect();
        let (host_ip, host_port, container_port) = match parts[..] {
            [h, c] => (Ipv4Addr::UNSPECIFIED, h, c),
            [ip, h, c] => {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| NameError(format!("invalid port mapping {text:?}: {ip:?} is not an IPv4 address")))?;
                if ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
                    return Err(NameError(format!(
                        "invalid port mapping {text:?}: host IP {ip} cannot be published on; use one of the node's addresses or leave it out"
                    )));
                }
                (ip, h, c)
            }
            _ => return Err(usage()),
        };
        let port = |p: &str, what: &str| -> Result<u16, NameError> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(usage());
            }
            match p.parse::<u32>() {
                Ok(n @ 1..=65535) => Ok(n as u16),
                _ => Err(NameError(format!("invalid port mapping {text:?}: {what} {p} is out of range 1-65535"))),
            }
        };
        Ok(PortMapping {
            host_ip,
            host_port: port(host_port, "host port")?,
            container_port: port(container_port, "container port")?,
            protocol,
        })
    }

    /// Whether two mappings cannot both be published on one node: same protocol and host
    /// port, and the same host IP or either on every address.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip || self.host_ip.is_unspecified() || other.host_ip.is_unspecified())
    }

    /// The host side as Docker writes it: `0.0.0.0:8080/tcp`.
    pub fn host_side(&self) -> String {
        format!("{}:{}/{}", self.host_ip, self.host_port, self.protocol.as_str())
    }
}

impl fmt::Display for PortMapping {
    /// As `docker ps` shows it: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}->{}/{}", self.host_ip, self.host_port, self.container_port, self.protocol.as_str())
    }
}

/// Parses every `-p` of a request, refusing mappings that clash with one another.
pub fn parse_ports(specs: &[String]) -> Result<Vec<PortMapping>, NameError> {
    let mut out: Vec<PortMapping> = Vec::with_capacity(specs.len());
    for s in specs {
        let p = PortMapping::parse(s)?;
        if let Some(earlier) = out.iter().find(|q| q.clashes_with(&p)) {
            return Err(NameError(format!(
                "port mapping {s:?} is given twice: host port {} is already mapped ({earlier})",
                p.host_side()
            )));
        }
        out.push(p);
    }
    Ok(out)
}

/// A named volume mounted into a container: a directory of its node's, kept after the
/// container is removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub name: String,
    /// Absolute path inside the container.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

impl VolumeMount {
    /// Parses `-v NAME:/path[:ro|:rw]`. Host paths (`-v /srv:/data`) are refused: a
    /// container's files must be Herd's to place and keep together.
    ///
    /// ```
    /// use herd_proto::hostconfig::VolumeMount;
    /// let v = VolumeMount::parse("data:/srv/data:ro").unwrap();
    /// assert_eq!((v.name.as_str(), v.target.as_str(), v.read_only), ("data", "/srv/data", true));
    /// assert!(VolumeMount::parse("/srv:/data").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<VolumeMount, NameError> {
        let parts: Vec<&str> = text.split(':').collect();
        let (name, target, read_only) = match parts[..] {
            [n, t] => (n, t, false),
            [n, t, "ro"] => (n, t, true),
            [n, t, "rw"] => (n, t, false),
            [_, _, mode] => {
                return Err(NameError(format!("invalid volume {text:?}: unknown mode {mode:?} (use ro or rw)")));
            }
            _ => return Err(NameError(format!("invalid volume {text:?}: expected NAME:/PATH[:ro], e.g. data:/data"))),
        };
        if name.starts_with('/') || name.starts_with('.') {
            return Err(NameError(format!(
                "invalid volume {text:?}: bind mounts of host paths are not supported; use a named volume (NAME:{target})"
            )));
        }
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !name_ok {
            return Err(NameError(format!(
                "invalid volume name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64 characters"
            )));
        }
        if !target.starts_with('/') || target.split('/').any(|p| p == "..") || target == "/" {
            return Err(NameError(format!(
                "invalid volume {text:?}: the path in the container must be absolute, not / and without '..'"
            )));
        }
        Ok(VolumeMount { name: name.to_string(), target: target.to_string(), read_only })
    }
}

/// Parses every `-v` of a request, refusing two volumes on one path.
pub fn parse_volumes(specs: &[String]) -> Result<Vec<VolumeMount>, NameError> {
    let mut out: Vec<VolumeMount> = Vec::with_capacity(specs.len());
    let mut targets = BTreeSet::new();
    for s in specs {
        let v = VolumeMount::parse(s)?;
        if !targets.insert(v.target.clone()) {
            return Err(NameError(format!("two volumes are mounted on {}", v.target)));
        }
        out.push(v);
    }
    Ok(out)
}

/// Linux's capabilities, by number (`capabilities(7)`; 0 to 40 in Linux 5.9 and later).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Linux's number of capability `name` (`CAP_NET_ADMIN` or `NET_ADMIN`).
pub fn capability_number(name: &str) -> Option<u32> {
    let name = name.strip_prefix("CAP_").unwrap_or(name);
    CAPABILITIES.iter().position(|c| c[4..] == *name).map(|n| n as u32)
}

/// Docker's default set, which users' images expect.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
];

/// What `--cap-add` and `--cap-drop` take for every capability.
pub const ALL_CAPABILITIES: &str = "ALL";

/// Parses `--cap-add` or `--cap-drop` values as Docker takes them: a capability's name in any
/// case, with or without `CAP_` (`net_admin`, `CAP_NET_ADMIN`), or `ALL`. Returns them as
/// `CAP_NET_ADMIN` or `ALL`, each once.
pub fn parse_capabilities(flag: &str, specs: &[String]) -> Result<Vec<String>, NameError> {
    let mut out: Vec<String> = Vec::with_capacity(specs.len());
    for s in specs {
        let upper = s.trim().to_ascii_uppercase();
        let name = if upper == ALL_CAPABILITIES {
            upper
        } else {
            let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
            if !CAPABILITIES.contains(&full.as_str()) {
                return Err(NameError(format!(
                    "{flag} {s}: no such capability (they are named as in capabilities(7): NET_ADMIN, SYS_PTRACE...; or ALL)"
                )));
            }
            full
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// The container whose network namespace another one joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedNetwork {
    pub name: String,
    /// Its id: the namespace is pinned under it on the node.
    pub id: String,
}

/// Parses `--network`: `container:NAME` joins NAME's namespace; `default` (or nothing) gives
/// the container its own. Returns the name to join.
pub fn parse_network(text: &str) -> Result<Option<String>, NameError> {
    match text.split_once(':') {
        _ if text.is_empty() || text == "default" => Ok(None),
        Some(("container", name)) => {
            crate::names::validate_container_name(name).map_err(|e| NameError(format!("--network {text}: {e}")))?;
            Ok(Some(name.to_string()))
        }
        _ => Err(NameError(format!(
            "invalid network {text:?}: use container:NAME to share another container's network, or default"
        ))),
    }
}

/// Ports, network and volumes of a container. Empty for containers created before they existed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfig {
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Set when the container lives in another container's network namespace.
    #[serde(default)]
    pub network: Option<SharedNetwork>,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Capabilities added to [`DEFAULT_CAPABILITIES`] (`CAP_NET_ADMIN`..., or `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped from it (or `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Its seccomp filter, `no_new_privs` and read-only root (`--security-opt`, `--read-only`).
    #[serde(default, skip_serializing_if = "crate::confinement::Confinement::is_default")]
    pub confinement: crate::confinement::Confinement,
}

impl HostConfig {
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
            && self.network.is_none()
            && self.volumes.is_empty()
            && self.cap_add.is_empty()
            && self.cap_drop.is_empty()
            && self.confinement.is_default()
    }

    /// The capabilities its processes hold, as Docker computes them: with `--cap-add ALL`,
    /// every capability but those dropped; with `--cap-drop ALL`, only those added; otherwise
    /// [`DEFAULT_CAPABILITIES`] less those dropped, plus those added. Sorted by number.
    pub fn capabilities(&self) -> Vec<&'static str> {
        let all = |list: &[String]| list.iter().any(|c| c == ALL_CAPABILITIES);
        let listed = |list: &[String], cap: &str| list.iter().any(|c| c == cap);
        CAPABILITIES
            .into_iter()
            .filter(|cap| {
                if all(&self.cap_add) {
                    !listed(&self.cap_drop, cap)
                } else if all(&self.cap_drop) {
                    listed(&self.cap_add, cap)
                } else {
                    (DEFAULT_CAPABILITIES.contains(cap) && !listed(&self.cap_drop, cap)) || listed(&self.cap_add, cap)
                }
            })
            .collect()
    }

    /// The ports as `docker ps` lists them: `0.0.0.0:8080->80/tcp, ...`.
    pub fn ports_text(&self) -> String {
        self.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn capabilities_parse_in_any_case_with_or_without_their_prefix() {
        let caps =
            parse_capabilities("--cap-add", &strings(&["net_admin", "CAP_SYS_PTRACE", "Sys_Nice", "all", "NET_ADMIN"]));
        assert_eq!(caps.unwrap(), strings(&["CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_NICE", "ALL"]));
        let err = parse_capabilities("--cap-drop", &strings(&["NET_ADMINN"])).unwrap_err().0;
        assert!(err.starts_with("--cap-drop NET_ADMINN: no such capability"), "{err}");
    }

    #[test]
    fn capabilities_have_linux_numbers() {
        assert_eq!(capability_number("CAP_CHOWN"), Some(0));
        assert_eq!(capability_number("NET_ADMIN"), Some(12));
        assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(capability_number("ALL"), None);
    }

    #[test]
    fn capabilities_are_computed_as_docker_does() {
        let host = |add: &[&str], drop: &[&str]| HostConfig {
            cap_add: strings(add),
            cap_drop: strings(drop),
            ..Default::default()
        };
        // Nothing asked: Docker's default set, in capability order.
        assert_eq!(host(&[], &[]).capabilities().len(), 14);
        assert_eq!(host(&[], &[]).capabilities()[0], "CAP_CHOWN");
        let some = host(&["CAP_NET_ADMIN"], &["CAP_NET_RAW", "CAP_MKNOD"]).capabilities();
        assert!(some.contains(&"CAP_NET_ADMIN") && !some.contains(&"CAP_NET_RAW") && !some.contains(&"CAP_MKNOD"));
        assert_eq!(some.len(), 13);
        // Drop everything, add one back.
        assert_eq!(host(&["CAP_NET_BIND_SERVICE"], &["ALL"]).capabilities(), ["CAP_NET_BIND_SERVICE"]);
        // Add everything but one.
        let all = host(&["ALL"], &["CAP_SYS_ADMIN"]).capabilities();
        assert_eq!(all.len(), 40);
        assert!(!all.contains(&"CAP_SYS_ADMIN"));
        assert!(host(&[], &["ALL"]).capabilities().is_empty());
    }

    #[test]
    fn ports_parse_like_docker() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port, p.protocol),
            (Ipv4Addr::UNSPECIFIED, 8080, 80, Protocol::Tcp)
        );
        assert_eq!(PortMapping::parse("1:65535/udp").unwrap().to_string(), "0.0.0.0:1->65535/udp");
        assert_eq!(PortMapping::parse("10.77.0.11:80:8000/tcp").unwrap().host_side(), "10.77.0.11:80/tcp");
    }

    #[test]
    fn bad_ports_name_the_cause() {
        let err = |s: &str| PortMapping::parse(s).unwrap_err().0;
        assert_eq!(err("0:80"), "invalid port mapping \"0:80\": host port 0 is out of range 1-65535");
        assert_eq!(err("70000:80"), "invalid port mapping \"70000:80\": host port 70000 is out of range 1-65535");
        assert_eq!(err("80:99999"), "invalid port mapping \"80:99999\": container port 99999 is out of range 1-65535");
        assert!(err("abc").contains("expected [HOST_IP:]HOST_PORT:CONTAINER_PORT"), "{}", err("abc"));
        assert!(err("80").contains("expected"));
        assert!(err("a:80").contains("expected"));
        assert!(err("80:80/sctp").contains("unknown protocol \"sctp\""));
        assert!(err("1.2.3:80:80").contains("is not an IPv4 address"));
        assert!(err("127.0.0.1:80:80").contains("cannot be published on"));
    }

    #[test]
    fn clashes_consider_protocol_and_host_ip() {
        let p = |s: &str| PortMapping::parse(s).unwrap();
        assert!(p("8080:80").clashes_with(&p("8080:81")));
        assert!(!p("8080:80").clashes_with(&p("8080:80/udp")));
        assert!(p("10.0.0.1:8080:80").clashes_with(&p("8080:80")));
        assert!(!p("10.0.0.1:8080:80").clashes_with(&p("10.0.0.2:8080:80")));
        let err = parse_ports(&strings(&["8080:80", "8080:81"])).unwrap_err().0;
        assert_eq!(
            err,
            "port mapping \"8080:81\" is given twice: host port 0.0.0.0:8080/tcp is already mapped (0.0.0.0:8080->80/tcp)"
        );
        assert_eq!(parse_ports(&strings(&["53:53/udp", "53:53"])).unwrap().len(), 2);
    }

    #[test]
    fn volumes_are_named_and_absolute() {
        assert_eq!(
            VolumeMount::parse("data:/data").unwrap(),
            VolumeMount { name: "data".into(), target: "/data".into(), read_only: false }
        );
        assert!(
            VolumeMount::parse("/srv:/data").unwrap_err().0.contains("bind mounts of host paths are not supported")
        );
        assert!(VolumeMount::parse("data:rel").unwrap_err().0.contains("must be absolute"));
        assert!(VolumeMount::parse("data:/a/../b").is_err());
        assert!(VolumeMount::parse("data").unwrap_err().0.contains("expected NAME:/PATH"));
        assert!(VolumeMount::parse("bad name:/x").unwrap_err().0.contains("invalid volume name"));
        assert!(parse_volumes(&strings(&["a:/x", "b:/x"])).unwrap_err().0.contains("two volumes are mounted on /x"));
    }

    #[test]
    fn network_modes() {
        assert_eq!(parse_network("container:web").unwrap(), Some("web".to_string()));
        assert_eq!(parse_network("default").unwrap(), None);
        assert!(parse_network("host").unwrap_err().0.contains("use container:NAME"));
        assert!(parse_network("container:").is_err());
    }

    #[test]
    fn old_records_read_with_an_empty_host_config() {
        let h: HostConfig = serde_json::from_str("{}").unwrap();
        assert!(h.is_empty());
        let p: PortMapping = serde_json::from_str(r#"{"host_ip":"0.0.0.0","host_port":1,"container_port":2}"#).unwrap();
        assert_eq!(p.protocol, Protocol::Tcp);
    }
}
