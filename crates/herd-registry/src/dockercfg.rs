//! Credentials the user already gave Docker (`docker login`): the inline `auths` entries of
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. Credential helpers
//! (`credsStore`, `credHelpers`) are not run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::client::Credentials;
use crate::reference::DOCKER_HUB;

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Where Docker keeps its config: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker/config.json"))
}

/// The credentials Docker's config at `path` holds for `registry` (as in a reference:
/// `docker.io`, `host:port`); `None` when there is no file or no entry. A file that exists but
/// cannot be read is an error naming it.
pub fn credentials_for(path: &Path, registry: &str) -> Result<Option<Credentials>, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let config: DockerConfig =
        serde_json::from_slice(&text).map_err(|e| format!("{} is not a Docker config: {e}", path.display()))?;
    let wanted = if registry == DOCKER_HUB { "index.docker.io" } else { registry };
    let entry = config.auths.iter().find(|(key, _)| {
        let host = key.trim_start_matches("https://").trim_start_matches("http://");
        let host = host.split('/').next().unwrap_or(host);
        host == wanted || (registry == DOCKER_HUB && host == DOCKER_HUB)
    });
    let Some((key, entry)) = entry else {
        return Ok(None);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials { username: username.clone(), password: password.clone() }));
    }
    let Some(auth) = &entry.auth else {
        return Ok(None);
    };
    let bad = || format!("{}: the auth of {key:?} is not base64 of USER:PASSWORD", path.display());
    let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some(Credentials { username: username.to_string(), password: password.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_inline_auths() {
        let dir = std::env::temp_dir().join(format!("herd-dockercfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        // "alice:s3cret" and "bob:pw:with:colons"
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcmV0"},
                        "127.0.0.1:5000":{"auth":"Ym9iOnB3OndpdGg6Y29sb25z"},
                        "broken.example":{"auth":"!!"}}}"#,
        )
        .unwrap();
        let hub = credentials_for(&path, "docker.io").unwrap().unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("alice", "s3cret"));
        let local = credentials_for(&path, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((local.username.as_str(), local.password.as_str()), ("bob", "pw:with:colons"));
        assert_eq!(credentials_for(&path, "ghcr.io").unwrap(), None);
        assert!(credentials_for(&path, "broken.example").unwrap_err().contains("not base64"));
        assert_eq!(credentials_for(&dir.join("missing.json"), "docker.io").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
