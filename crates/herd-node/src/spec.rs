//! The OCI runtime configuration (`config.json`) of a container, built from its
//! [`ContainerSpec`] and the node's layout.

use std::path::Path;

use herd_proto::hostconfig::{self, HostConfig};
use herd_proto::node::ContainerSpec;
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids,
    PosixRlimitBuilder, PosixRlimitType, Root, Spec,
};

/// The CPU quota period, as Docker uses.
pub const CPU_PERIOD: u64 = 100_000;

/// The capabilities this node's own processes may hold (its bounding set, `CapBnd`): a
/// container gets no capability beyond it, which runc could not give.
pub fn node_bounding_set() -> u64 {
    static SET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
                u64::from_str_radix(line["CapBnd:".len()..].trim(), 16).ok()
            })
            .unwrap_or(u64::MAX)
    })
}

/// The capabilities a container of `host` holds on a node whose bounding set is `bounding`:
/// Docker's set with its `--cap-add` and `--cap-drop` (see [`HostConfig::capabilities`]),
/// within `bounding` (so that `--cap-add ALL` means all the node has).
pub fn capabilities(host: &HostConfig, bounding: u64) -> std::collections::HashSet<Capability> {
    host.capabilities()
        .into_iter()
        .filter(|name| hostconfig::capability_number(name).is_some_and(|n| bounding & (1u64 << n) != 0))
        .filter_map(|name| name.trim_start_matches("CAP_").parse().ok())
        .collect()
}

/// The capabilities a container asks for by name (`--cap-add`) that a node whose bounding set
/// is `bounding` does not hold itself, and so cannot give.
pub fn missing_capabilities(host: &HostConfig, bounding: u64) -> Vec<String> {
    host.cap_add
        .iter()
        .filter(|name| hostconfig::capability_number(name).is_some_and(|n| bounding & (1u64 << n) == 0))
        .cloned()
        .collect()
}

/// Open files a container's processes start with (what `select(2)`-based programs expect).
pub const NOFILE_SOFT: u64 = 1024;
/// Open files a container's processes may raise their limit to, as servers that hold many
/// connections do (a JVM raises it at start): Docker's default since its version 25.
pub const NOFILE_HARD: u64 = 524_288;

/// The container's open-file limits, (soft, hard): [`NOFILE_SOFT`] and [`NOFILE_HARD`], the
/// hard limit no higher than the node's own, which runc cannot pass without
/// `CAP_SYS_RESOURCE` (this platform's root has none; `herd up` here runs under 20,000).
/// A container held at 1,024 open files could not hold 10,000 connections, and CRIU could not
/// dump it once it had used them all: its parasite needs a descriptor in the process.
pub fn nofile_limits() -> (u64, u64) {
    let mut own = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    let node_hard = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) } == 0 { own.rlim_max } else { 0 };
    let hard = NOFILE_HARD.min(node_hard);
    (NOFILE_SOFT.min(hard), hard)
}

/// The runtime spec for `spec`, with its network namespace pinned at `netns` and its cgroup
/// at `cgroup_path`. The root filesystem is the bundle's `rootfs` directory.
/// A user's seccomp profile that the runtime spec cannot hold is an error.
pub fn runtime_spec(spec: &ContainerSpec, netns: &Path, cgroup_path: &str) -> Result<Spec, String> {
    let mut s = Spec::default();
    s.set_hostname(Some(spec.name.chars().take(63).collect()));
    let confinement = &spec.host.confinement;
    // The overlay root is the container's to write (its upper layer) unless `--read-only`.
    let mut root = Root::default();
    root.set_readonly(Some(confinement.read_only));
    s.set_root(Some(root));

    let process = s.process_mut().as_mut().expect("the default spec has a process");
    process.set_args(Some(spec.args.clone()));
    process.set_env(Some(spec.env.clone()));
    process.set_cwd(if spec.working_dir.is_empty() { "/".into() } else { spec.working_dir.clone().into() });
    process.set_terminal(Some(false));
    let caps = capabilities(&spec.host, node_bounding_set());
    let seccomp = crate::seccomp::filter(&confinement.seccomp, &caps)?;
    process.set_no_new_privileges(Some(!confinement.new_privileges));
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(caps.clone()));
    c.set_effective(Some(caps.clone()));
    c.set_permitted(Some(caps));
    c.set_inheritable(None);
    c.set_ambient(None);
    process.set_capabilities(Some(c));
    let (soft, hard) = nofile_limits();
    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(soft)
        .hard(hard)
        .build()
        .expect("an rlimit with every field set");
    process.set_rlimits(Some(vec![nofile]));

    // No cgroup namespace: on hybrid cgroup v1 hosts CRIU dumps containers without one.
    let namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|typ| {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ);
        if typ == LinuxNamespaceType::Network {
            ns.set_path(Some(netns.to_path_buf()));
        }
        ns
    })
    .collect();

    let linux = s.linux_mut().as_mut().expect("the default spec has a linux section");
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(cgroup_path.into()));
    linux.set_seccomp(seccomp);
    let resources = linux.resources_mut().as_mut().expect("the default spec has resources");
    if let Some(bytes) = spec.limits.memory_bytes {
        let mut m = LinuxMemory::default();
        m.set_limit(Some(bytes as i64));
        resources.set_memory(Some(m));
    }
    if let Some(milli) = spec.limits.cpus_milli {
        let mut cpu = LinuxCpu::default();
        cpu.set_period(Some(CPU_PERIOD));
        cpu.set_quota(Some((milli * CPU_PERIOD / 1000).max(1000) as i64));
        resources.set_cpu(Some(cpu));
    }
    if let Some(pids) = spec.limits.pids {
        let mut p = LinuxPids::default();
        p.set_limit(pids as i64);
        resources.set_pids(Some(p));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_proto::state::Limits;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "abc".into(),
            name: "web".into(),
            image: "busybox:latest".into(),
            layers: vec![],
            args: vec!["sleep".into(), "10".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: "/srv".into(),
            user: "postgres".into(),
            ip: "10.88.0.2".parse().unwrap(),
            limits: Limits {
                cpus_milli: Some(500),
                memory_bytes: Some(64 << 20),
                pids: Some(100),
                ..Default::default()
            },
            labels: Default::default(),
            host: Default::default(),
            generation: 0,
            fenced: false,
        }
    }

    #[test]
    fn limits_namespaces_and_process_are_set() {
        let s = runtime_spec(&spec(), Path::new("/run/herd/netns/abc"), "/herd/n1/abc").unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["process"]["args"], serde_json::json!(["sleep", "10"]));
        assert_eq!(json["process"]["cwd"], "/srv");
        assert_eq!(json["hostname"], "web");
        assert_eq!(json["root"]["readonly"], false);
        assert_eq!(json["root"]["path"], "rootfs");
        assert_eq!(json["linux"]["cgroupsPath"], "/herd/n1/abc");
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 100);
        let ns = json["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().any(|n| n["type"] == "network" && n["path"] == "/run/herd/netns/abc"));
        assert!(!ns.iter().any(|n| n["type"] == "cgroup"));
        let caps = json["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(caps.iter().any(|c| c == "CAP_NET_BIND_SERVICE"));
        assert!(!caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert_eq!(caps.len(), 14, "Docker's default set");
        let rlimits = json["process"]["rlimits"].as_array().unwrap();
        assert_eq!(rlimits.len(), 1);
        assert_eq!(rlimits[0]["type"], "RLIMIT_NOFILE");
        assert_eq!(rlimits[0]["soft"], 1024);
        let hard = rlimits[0]["hard"].as_u64().unwrap();
        let mut own = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct it is given.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) }, 0);
        assert_eq!(hard, NOFILE_HARD.min(own.rlim_max), "up to Docker's hard limit, within this process's own");
    }

    #[test]
    fn added_capabilities_are_given_within_the_nodes_own() {
        let host = HostConfig {
            cap_add: vec!["CAP_NET_ADMIN".into()],
            cap_drop: vec!["CAP_MKNOD".into()],
            ..Default::default()
        };
        let caps = capabilities(&host, u64::MAX);
        assert!(caps.contains(&Capability::NetAdmin) && !caps.contains(&Capability::Mknod));
        assert_eq!(caps.len(), 14);
        // A node without CAP_NET_ADMIN (12) gives it to nobody, and names it as missing.
        let without = !(1u64 << 12);
        assert!(!capabilities(&host, without).contains(&Capability::NetAdmin));
        assert_eq!(missing_capabilities(&host, without), ["CAP_NET_ADMIN"]);
        assert!(missing_capabilities(&host, u64::MAX).is_empty());
        // ALL is what the node has.
        let all = HostConfig { cap_add: vec!["ALL".into()], ..Default::default() };
        assert_eq!(capabilities(&all, without).len(), 40);
        assert!(missing_capabilities(&all, without).is_empty());
        let json =
            serde_json::to_value(runtime_spec(&ContainerSpec { host, ..spec() }, Path::new("/x"), "/y").unwrap())
                .unwrap();
        let bounding = json["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(bounding.iter().any(|c| c == "CAP_NET_ADMIN"));
        assert!(!bounding.iter().any(|c| c == "CAP_MKNOD"));
    }

    #[test]
    fn unlimited_containers_have_no_limits() {
        let mut sp = spec();
        sp.limits = Limits::default();
        let json = serde_json::to_value(runtime_spec(&sp, Path::new("/x"), "/y").unwrap()).unwrap();
        assert!(json["linux"]["resources"]["memory"].is_null());
        assert!(json["linux"]["resources"]["cpu"].is_null());
    }
}
