//! What a node can do: architecture, kernel, runtime versions and CRIU features, probed
//! once at start and registered with the cluster.

use std::path::Path;
use std::process::Command;

use herd_proto::state::{CriuFeatures, NodeFacts, Resources};

/// Go/OCI name of the machine's architecture.
pub fn architecture() -> &'static str {
    herd_image::host_architecture()
}

fn kernel_release() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().to_string()).unwrap_or_default()
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into())
}

/// Whether `criu check --feature NAME` passes.
fn criu_feature(criu: &Path, name: &str) -> bool {
    Command::new(criu).args(["check", "--feature", name]).output().is_ok_and(|o| o.status.success())
}

/// Probes the node; `criu` is `(path, version)` when CRIU is usable.
pub fn probe(runc_version: &str, criu: Option<(&Path, &str)>) -> NodeFacts {
    let criu_features = criu
        .map(|(path, _)| CriuFeatures {
            lazy_pages: criu_feature(path, "uffd-noncoop"),
            dirty_tracking: criu_feature(path, "mem_dirty_track"),
        })
        .unwrap_or_default();
    NodeFacts {
        arch: architecture().to_string(),
        os: os_name(),
        kernel: kernel_release(),
        runc_version: runc_version.to_string(),
        criu_version: criu.map(|(_, v)| v.to_string()),
        criu_features,
        cgroup_version: crate::cgroups::version(),
        cpu_flags: cpu_flags(),
    }
}

/// The CPU feature flags of the first processor in `/proc/cpuinfo`, sorted.
fn cpu_flags() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut flags: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("flags").and_then(|r| r.split_once(':')).map(|(_, v)| v))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    flags.sort();
    flags
}

/// The machine's CPUs and memory, the default capacity a node offers.
pub fn machine_capacity() -> Resources {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0);
    Resources { cpus_milli: cpus * 1000, memory_bytes: memory }
}
