//! Named volumes (`herd run -v NAME:/path`): directories under the node's data directory,
//! made on first use, bind-mounted into the containers that name them and kept after those
//! containers are removed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use herd_proto::hostconfig::VolumeMount;
use oci_spec::runtime::{Mount, Spec};

/// Where volume `name` lives on a node whose data directory is `data_dir`.
pub fn volume_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("volumes").join(name)
}

/// Creates the volumes `config` mounts that do not exist yet and adds their bind mounts to it.
pub fn mount_into(config: &mut Spec, data_dir: &Path, volumes: &[VolumeMount]) -> anyhow::Result<()> {
    for v in volumes {
        let dir = volume_dir(data_dir, &v.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating volume {} at {}", v.name, dir.display()))?;
    }
    add_mounts(config, data_dir, volumes);
    Ok(())
}

/// Adds the bind mounts of `volumes` to `config` without creating them (a migration's
/// destination: they arrive before the restore).
pub fn add_mounts(config: &mut Spec, data_dir: &Path, volumes: &[VolumeMount]) {
    if volumes.is_empty() {
        return;
    }
    let mounts = config.mounts_mut().get_or_insert_with(Vec::new);
    for v in volumes {
        let dir = volume_dir(data_dir, &v.name);
        let mut m = Mount::default();
        m.set_destination(PathBuf::from(&v.target));
        m.set_typ(Some("bind".into()));
        m.set_source(Some(dir));
        let mode = if v.read_only { "ro" } else { "rw" };
        m.set_options(Some(vec!["rbind".into(), "rprivate".into(), mode.into()]));
        mounts.push(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_become_bind_mounts_of_node_directories() {
        let data = tempfile::tempdir().unwrap();
        let mut config = Spec::default();
        let before = config.mounts().as_ref().map_or(0, Vec::len);
        let volumes = vec![
            VolumeMount { name: "data".into(), target: "/data".into(), read_only: false },
            VolumeMount { name: "conf".into(), target: "/etc/app".into(), read_only: true },
        ];
        mount_into(&mut config, data.path(), &volumes).unwrap();
        assert!(data.path().join("volumes/data").is_dir() && data.path().join("volumes/conf").is_dir());
        let json = serde_json::to_value(&config).unwrap();
        let mounts = json["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), before + 2);
        let conf = mounts.iter().find(|m| m["destination"] == "/etc/app").unwrap();
        assert_eq!(conf["type"], "bind");
        assert_eq!(conf["source"], data.path().join("volumes/conf").to_str().unwrap());
        assert_eq!(conf["options"], serde_json::json!(["rbind", "rprivate", "ro"]));
    }
}
