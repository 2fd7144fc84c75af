//! Validation of the names people give to containers, nodes and images, and of `K=V` pairs.
//!
//! Names end up in NATS subjects, key-value keys, network namespace names and cgroup paths,
//! so each kind is restricted to what all of those accept.

/// A rejected name or pair, with a message that says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

/// Container names: like Docker's, `[a-zA-Z0-9][a-zA-Z0-9_-]*`, at most 64 characters.
pub fn validate_container_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(NameError(format!(
            "invalid container name {name:?}: use letters, digits, '_' and '-', starting with a letter or digit, at most 64 characters"
        )))
    }
}

/// Node names: `[a-z0-9][a-z0-9-]*`, at most 24 characters.
pub fn validate_node_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(NameError(format!(
            "invalid node name {name:?}: use lowercase letters, digits and '-', starting with a letter or digit, at most 24 characters"
        )))
    }
}

/// Normalises an image reference to `name:tag` (the tag defaults to `latest`, as in Docker)
/// and checks its characters: `[a-z0-9][a-z0-9._/-]*` for the name, `[A-Za-z0-9_.-]+` for the tag,
/// with no `..` and no tag ending in `.` (the image's key-value key, `name=tag`, is a NATS
/// subject, whose tokens `.` separates: an empty token is refused by the broker).
/// The name may start with a registry host and port, as pulled images' names do
/// (`127.0.0.1:5000/app`).
///
/// ```
/// assert_eq!(herd_proto::names::normalize_image("busybox").unwrap(), "busybox:latest");
/// assert_eq!(herd_proto::names::normalize_image("lib/app:1.2").unwrap(), "lib/app:1.2");
/// assert_eq!(herd_proto::names::normalize_image("127.0.0.1:5000/app").unwrap(), "127.0.0.1:5000/app:latest");
/// ```
pub fn normalize_image(reference: &str) -> Result<String, NameError> {
    let err = || {
        NameError(format!(
            "invalid image name {reference:?}: use NAME or NAME:TAG with lowercase letters, digits, '.', '_', '-' and '/' (no '..', and no '.' at the end)"
        ))
    };
    let (name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (reference, "latest"),
    };
    // A registry host with a port (`host:5000/`) is the only place a name may hold a ':'.
    let path = match name.split_once('/') {
        Some((host, rest)) if host.contains(':') => {
            let (h, port) = host.rsplit_once(':').unwrap_or((host, ""));
            let host_ok = !h.is_empty()
                && h.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c))
                && !port.is_empty()
                && port.len() <= 5
                && port.chars().all(|c| c.is_ascii_digit());
            if !host_ok {
                return Err(err());
            }
            rest
        }
        _ => name,
    };
    let name_ok = !path.is_empty()
        && name.len() <= 128
        && path.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && path.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._/-".contains(c))
        && !path.contains("//")
        && !path.ends_with('/');
    let tag_ok =
        !tag.is_empty() && tag.len() <= 128 && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    let dots_ok = !reference.contains("..") && !tag.ends_with('.');
    if name_ok && tag_ok && dots_ok { Ok(format!("{name}:{tag}")) } else { Err(err()) }
}

/// The key-value key of a normalised image name (`:` is not allowed in keys).
pub fn image_key(normalized: &str) -> String {
    normalized.replace(':', "=")
}

/// Splits a `KEY=VALUE` pair; `what` names the flag in the error (`--env`, `--label`).
pub fn parse_pair(text: &str, what: &str) -> Result<(String, String), NameError> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok((k.to_string(), v.to_string())),
        _ => Err(NameError(format!("invalid {what} {text:?}: expected KEY=VALUE"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names() {
        for ok in ["web", "web-1", "a_b", "X9"] {
            validate_container_name(ok).unwrap();
        }
        for bad in ["", "-web", "we b", "a.b", "a/b", &"x".repeat(65)] {
            assert!(validate_container_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_names() {
        validate_node_name("n1").unwrap();
        validate_node_name("node-a").unwrap();
        for bad in ["", "N1", "n.1", "-n", "n_1", &"n".repeat(25)] {
            assert!(validate_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn images() {
        assert_eq!(normalize_image("busybox").unwrap(), "busybox:latest");
        assert_eq!(normalize_image("busybox:1.36").unwrap(), "busybox:1.36");
        assert_eq!(normalize_image("localhost/app").unwrap(), "localhost/app:latest");
        assert_eq!(normalize_image("127.0.0.1:5000/app").unwrap(), "127.0.0.1:5000/app:latest");
        assert_eq!(normalize_image("reg.example:443/a/b:v1").unwrap(), "reg.example:443/a/b:v1");
        for bad in [
            "",
            "Busybox",
            "a b",
            "x:",
            ":t",
            "a//b",
            "a/",
            "h:x/app",
            ":5000/app",
            "h:5000/",
            "a:1:2/b",
            "q..q",
            "a:v..1",
            "a:v.",
            "reg..x:5000/app",
        ] {
            assert!(normalize_image(bad).is_err(), "{bad:?}");
        }
        assert_eq!(image_key("busybox:latest"), "busybox=latest");
    }

    #[test]
    fn pairs() {
        assert_eq!(parse_pair("A=1", "--env").unwrap(), ("A".into(), "1".into()));
        assert_eq!(parse_pair("A=", "--env").unwrap(), ("A".into(), "".into()));
        assert_eq!(parse_pair("A=b=c", "--env").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_pair("A", "--env").is_err());
        assert!(parse_pair("=1", "--env").is_err());
    }
}
