//! Before CRIU restores a checkpoint into a container, its images are checked against the
//! container's runtime configuration (`herd_image::criu_image`): whatever the checkpoint's
//! origin (this node, another node, an upload), the restored processes get no capability,
//! namespace or mount the container would not have had if started afresh.

use std::path::Path;

use anyhow::Context;
use herd_image::criu_image::{self, Allowed, NamespaceKind};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// What a container with runtime configuration `config` may have.
pub fn allowed(config: &Spec) -> Allowed {
    let mut allowed = Allowed::default();
    if let Some(process) = config.process() {
        if let Some(bounding) = process.capabilities().as_ref().and_then(|c| c.bounding().as_ref()) {
            allowed.capabilities = bounding
                .iter()
                .filter_map(|cap| herd_proto::hostconfig::capability_number(&cap.to_string()))
                .fold(0u64, |mask, n| mask | 1u64 << n);
        }
        allowed.no_new_privs = process.no_new_privileges().unwrap_or(false);
    }
    if let Some(linux) = config.linux() {
        allowed.seccomp = linux.seccomp().is_some();
        for ns in linux.namespaces().iter().flatten() {
            let kind = match ns.typ() {
                LinuxNamespaceType::Pid => NamespaceKind::Pid,
                LinuxNamespaceType::Network => NamespaceKind::Network,
                LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
                LinuxNamespaceType::Uts => NamespaceKind::Uts,
                LinuxNamespaceType::Mount => NamespaceKind::Mount,
                LinuxNamespaceType::User => NamespaceKind::User,
                LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
                LinuxNamespaceType::Time => NamespaceKind::Time,
            };
            allowed.namespaces.insert(kind);
        }
        allowed.mountpoints.extend(linux.masked_paths().iter().flatten().cloned());
        allowed.readonly.extend(linux.readonly_paths().iter().flatten().cloned());
    }
    for m in config.mounts().iter().flatten() {
        allowed.mountpoints.insert(m.destination().display().to_string());
    }
    allowed
}

/// Checks the CRIU images in `images` against the runtime configuration in `bundle`
/// (`config.json`, as the container would start with).
pub fn check(images: &Path, bundle: &Path) -> anyhow::Result<()> {
    let path = bundle.join("config.json");
    let config: Spec =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("decoding {}", path.display()))?;
    criu_image::check_images(images, &allowed(&config))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_proto::node::ContainerSpec;

    #[test]
    fn a_containers_configuration_allows_what_it_starts_with() {
        let spec = ContainerSpec {
            id: "abc".into(),
            name: "web".into(),
            image: "busybox:latest".into(),
            layers: vec![],
            args: vec!["sh".into()],
            env: vec![],
            working_dir: "/".into(),
            user: String::new(),
            ip: "10.88.0.2".parse().unwrap(),
            limits: Default::default(),
            labels: Default::default(),
            host: Default::default(),
            generation: 0,
            fenced: false,
        };
        let config = crate::spec::runtime_spec(&spec, Path::new("/run/netns/x"), "/herd/n1/abc").unwrap();
        let a = allowed(&config);
        // Docker's default set, as CRIU records it in a checkpoint of such a container.
        assert_eq!(a.capabilities, 0xA804_25FB);
        assert!(a.no_new_privs);
        assert!(a.seccomp);
        use NamespaceKind::*;
        assert_eq!(a.namespaces, [Pid, Network, Ipc, Uts, Mount].into_iter().collect());
        for path in ["/proc", "/dev", "/dev/pts", "/sys", "/proc/keys", "/sys/firmware"] {
            assert!(a.mountpoints.contains(path), "{path}");
        }
        assert!(a.readonly.contains("/proc/sys") && a.readonly.contains("/proc/sysrq-trigger"));
        // Unconfined, a checkpoint without a filter or no_new_privs is what it allows.
        let mut spec = spec;
        spec.host.confinement = herd_proto::confinement::parse_security_opts(
            &["seccomp=unconfined".into(), "no-new-privileges=false".into()],
            false,
        )
        .unwrap();
        let a = allowed(&crate::spec::runtime_spec(&spec, Path::new("/run/netns/x"), "/herd/n1/abc").unwrap());
        assert!(!a.seccomp && !a.no_new_privs);
    }
}
