//! The user's Herd config: where the Control node's API is and the token for it, and the
//! Control node's settings in a `[control]` section. `herd up` writes the first part (mode
//! 0600) and keeps any `[control]` section; every client command reads it; `herd up` and
//! `herd control` read `[control]`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliConfig {
    /// Base URL of the Control node's API, e.g. `http://127.0.0.1:7700`.
    pub api: String,
    pub token: String,
    /// Name of the cluster `herd up` started.
    #[serde(default)]
    pub cluster: String,
    /// The cluster CA's certificate (PEM): an `https://` API is checked against it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The user's certificate and key (PEM) of the cluster CA, presented to the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The `[control]` section: defaults for the Control node that its flags override, and that
/// a policy stored by `herd policy set` overrides in turn (see docs/design/policies.md).
///
/// ```toml
/// [control]
/// policy = "hotspot:threshold=80%"
/// policy_interval = 5.0
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// The migration policy spec (`herd policy ls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Seconds between two evaluations of the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_interval: Option<f64>,
}

/// The file as far as `[control]` is concerned: the other keys are the client's.
#[derive(Deserialize)]
struct ControlOnly {
    #[serde(default)]
    control: Option<ControlSection>,
}

impl ControlSection {
    /// The `[control]` section of the config at `path`: empty when the file does not exist or
    /// has no such section; an error naming the file and the key when it does not parse (an
    /// unknown key included, so a typo is not silently ignored).
    pub fn load(path: &Path) -> anyhow::Result<ControlSection> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ControlSection::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let file: ControlOnly =
            toml::from_str(&text).with_context(|| format!("the [control] section of {}", path.display()))?;
        Ok(file.control.unwrap_or_default())
    }
}

/// The policy a Control node starts with, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfiguredPolicy {
    pub spec: String,
    pub interval_secs: f64,
    /// `flag`, `config` or `default`.
    pub source: &'static str,
}

/// The default policy: nothing moves unless an operator asks for it.
pub const DEFAULT_POLICY: &str = "none";
/// Seconds between two evaluations unless told otherwise.
pub const DEFAULT_POLICY_INTERVAL_SECS: f64 = 5.0;

impl ControlSection {
    /// Flags first, then this section, then the defaults (each value on its own). A policy
    /// stored by `herd policy set` overrides the result once the Control node runs.
    pub fn resolve(&self, flag_policy: Option<String>, flag_interval: Option<f64>) -> ConfiguredPolicy {
        let (spec, source) = match (flag_policy, &self.policy) {
            (Some(p), _) => (p, "flag"),
            (None, Some(p)) => (p.clone(), "config"),
            (None, None) => (DEFAULT_POLICY.to_string(), "default"),
        };
        let interval_secs = flag_interval.or(self.policy_interval).unwrap_or(DEFAULT_POLICY_INTERVAL_SECS);
        ConfiguredPolicy { spec, interval_secs, source }
    }
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
        // `herd up` rewrites the client's part; the operator's `[control]` section stays.
        let mut table = toml::Table::try_from(self)?;
        let kept = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|mut t| t.remove("control"));
        if let Some(control) = kept {
            table.insert("control".into(), control);
        }
        let text =
            format!("# Written by herd up: the API of cluster {:?}.\n{}", self.cluster, toml::to_string(&table)?);
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
        let cfg = CliConfig {
            api: "http://127.0.0.1:7700".into(),
            token: "t0ken".into(),
            cluster: "herd".into(),
            ..Default::default()
        };
        cfg.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(CliConfig::load(&path).unwrap(), cfg);
    }

    #[test]
    fn the_control_section_is_read_and_kept_when_herd_up_rewrites_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(ControlSection::load(&path).unwrap(), ControlSection::default());
        std::fs::write(
            &path,
            "api = \"http://old\"\ntoken = \"x\"\n[control]\npolicy = \"hotspot:k=2\"\npolicy_interval = 2.5\n",
        )
        .unwrap();
        let want = ControlSection { policy: Some("hotspot:k=2".into()), policy_interval: Some(2.5) };
        assert_eq!(ControlSection::load(&path).unwrap(), want);
        let cfg =
            CliConfig { api: "http://new".into(), token: "t0ken".into(), cluster: "c".into(), ..Default::default() };
        cfg.save(&path).unwrap();
        assert_eq!(CliConfig::load(&path).unwrap(), cfg);
        assert_eq!(ControlSection::load(&path).unwrap(), want);
    }

    #[test]
    fn flags_win_over_the_control_section_which_wins_over_the_defaults() {
        let section = ControlSection { policy: Some("balance".into()), policy_interval: Some(2.0) };
        let r = section.resolve(Some("hotspot".into()), None);
        assert_eq!((r.spec.as_str(), r.interval_secs, r.source), ("hotspot", 2.0, "flag"));
        let r = section.resolve(None, Some(1.0));
        assert_eq!((r.spec.as_str(), r.interval_secs, r.source), ("balance", 1.0, "config"));
        let r = ControlSection::default().resolve(None, None);
        assert_eq!((r.spec.as_str(), r.interval_secs, r.source), ("none", 5.0, "default"));
    }

    #[test]
    fn a_bad_control_section_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[control]\npolicyy = \"hotspot\"\n").unwrap();
        let err = format!("{:#}", ControlSection::load(&path).unwrap_err());
        assert!(err.contains("policyy") && err.contains("[control]"), "{err}");
        std::fs::write(&path, "[control]\npolicy_interval = \"soon\"\n").unwrap();
        let err = format!("{:#}", ControlSection::load(&path).unwrap_err());
        assert!(err.contains("policy_interval"), "{err}");
    }

    #[test]
    fn missing_config_says_what_to_do() {
        let err = CliConfig::load(Path::new("/nonexistent/herd.toml")).unwrap_err();
        assert!(err.to_string().contains("herd up"), "{err}");
    }
}
