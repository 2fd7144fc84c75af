//! Image references, parsed the way Docker parses them: `busybox` is
//! `docker.io/library/busybox:latest`, `host:5000/team/app:v1` names its registry, and
//! `repo@sha256:<hex>` pins a manifest by digest.

use std::fmt;
use std::net::IpAddr;

use crate::error::RegistryError;

/// Docker Hub's name in references, and the host its API is served from.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, ...
    pub registry: String,
    /// `library/busybox`, `team/app`.
    pub repository: String,
    /// `None` only when a digest is given (a reference with neither gets `latest`).
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, RegistryError> {
        let bad = |reason: &str| RegistryError::InvalidReference { reference: text.to_string(), reason: reason.into() };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.len() > 512 {
            return Err(bad("it is longer than 512 characters"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(|r| bad(&r))?;
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(|r| bad(&r))?;
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => (first.to_string(), path),
            _ => (DOCKER_HUB.to_string(), name),
        };
        check_registry(&registry).map_err(|r| bad(&r))?;
        let registry = if registry == "index.docker.io" { DOCKER_HUB.to_string() } else { registry };
        let repository =
            if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_string() };
        check_repository(&repository).map_err(|r| bad(&r))?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// The host (and port) to send API requests to.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { DOCKER_HUB_API } else { &self.registry }
    }

    /// What the manifest is asked for by: the digest when there is one, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).expect("a tag or a digest")
    }

    /// The repository as Docker shows it: `busybox` for `docker.io/library/busybox`,
    /// `127.0.0.1:5000/app` for a repository elsewhere.
    pub fn familiar_repository(&self) -> String {
        if self.registry == DOCKER_HUB {
            self.repository.strip_prefix("library/").unwrap_or(&self.repository).to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// The local image name a pull records by default: the familiar repository and the tag,
    /// or for a reference with only a digest, `sha256-` and the digest's first 12 hex digits.
    pub fn local_name(&self) -> String {
        let tag = match (&self.tag, &self.digest) {
            (Some(tag), _) => tag.clone(),
            (None, Some(d)) => format!("sha256-{}", &d["sha256:".len().."sha256:".len() + 12]),
            (None, None) => "latest".to_string(),
        };
        format!("{}:{tag}", self.familiar_repository())
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`, `::1`), where plain
    /// HTTP is used.
    pub fn is_loopback(&self) -> bool {
        let host = host_of(&self.registry);
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Reference {
    /// The canonical form: `docker.io/library/busybox:latest`, `host/repo:tag@sha256:...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The host part of `host[:port]` or `[v6]:port`.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

fn check_digest(digest: &str) -> Result<(), String> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(format!("digest {digest:?} is not a sha256 digest (sha256:<64 lowercase hex digits>)"));
    };
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(format!("digest {digest:?} must be sha256: followed by 64 lowercase hex digits"))
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok { Ok(()) } else { Err(format!("tag {tag:?} must be 1-128 of A-Z a-z 0-9 _ . - and not start with . or -")) }
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err(format!("registry {registry:?} has an unclosed '['")),
        },
        None => match registry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        },
    };
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("registry {registry:?} is not a host name with an optional port"))
    }
}

fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
    };
    if repository.len() <= 255 && repository.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "repository {repository:?} must be lowercase letters and digits, separated by '.', '_', '-' or '/'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_short_names() {
        let r = parse("busybox");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/busybox", Some("latest"))
        );
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.local_name(), "busybox:latest");
        assert_eq!(parse("bitnami/redis:7.2").to_string(), "docker.io/bitnami/redis:7.2");
        assert_eq!(parse("bitnami/redis:7.2").local_name(), "bitnami/redis:7.2");
        assert_eq!(parse("index.docker.io/library/alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(parse("docker.io/alpine:3").local_name(), "alpine:3");
    }

    #[test]
    fn registries_with_hosts_and_ports() {
        let r = parse("127.0.0.1:5000/team/app:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/app", Some("v1"))
        );
        assert!(r.is_loopback());
        assert_eq!(r.local_name(), "127.0.0.1:5000/team/app:v1");
        let r = parse("localhost/app");
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("localhost", "app"));
        assert!(r.is_loopback());
        let r = parse("ghcr.io/owner/tool");
        assert!(!r.is_loopback());
        assert_eq!(r.api_host(), "ghcr.io");
        assert!(parse("[::1]:5000/app").is_loopback());
        // A first component without '.', ':' or "localhost" is a Docker Hub namespace.
        assert_eq!(parse("team/app").registry, "docker.io");
    }

    #[test]
    fn digests() {
        let r = parse(&format!("busybox@{D}"));
        assert_eq!((r.tag.as_deref(), r.digest.as_deref()), (None, Some(D)));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.local_name(), "busybox:sha256-0123456789ab");
        let r = parse(&format!("127.0.0.1:5000/app:v2@{D}"));
        assert_eq!((r.tag.as_deref(), r.manifest_ref()), (Some("v2"), D));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/app:v2@{D}"));
    }

    #[test]
    fn bad_references_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("busybox@sha256:abc", "64"),
            ("busybox@md5:abc", "sha256"),
            ("a//b", "lowercase"),
            ("host:99999/app", "port"),
            ("app/", "lowercase"),
        ] {
            let err = Reference::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
