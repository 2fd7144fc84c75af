//! The user's Herd config: where the Control node's API is and the token for it.
//! `herd up` writes it (mode 0600); every client command reads it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliConfig {
    /// Base URL of the Control node's API, e.g. `http://127.0.0.1:7700`.
    pub api: String,
    pub token: String,
    /// Name of the cluster `herd up` started.
    #[serde(default)]
    pub cluster: String,
}

/// `$HERD_CONFIG`, else `$XDG_CONFIG_HOME/herd/config.toml`, else `~/.config/herd/config.toml`.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HERD_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/root/.config"));
    base.join("herd").join("config.toml")
}

impl CliConfig {
    pub fn load(path: &Path) -> anyhow::Result<CliConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no Herd config at {}: start a cluster with herd up, or point HERD_CONFIG at a config",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        toml::from_str(&text).with_context(|| format!("{} is not a valid Herd config", path.display()))
    }

    /// Writes the config readable by its owner only (it holds the API token).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        let text = format!("# Written by herd up: the API of cluster {:?}.\n{}", self.cluster, toml::to_string(self)?);
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_config_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let cfg = CliConfig { api: "http://127.0.0.1:7700".into(), token: "t0ken".into(), cluster: "herd".into() };
        cfg.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(CliConfig::load(&path).unwrap(), cfg);
    }

    #[test]
    fn missing_config_says_what_to_do() {
        let err = CliConfig::load(Path::new("/nonexistent/herd.toml")).unwrap_err();
        assert!(err.to_string().contains("herd up"), "{err}");
    }
}
