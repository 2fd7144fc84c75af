//! What a node can do: architecture, kernel, runtime versions and CRIU features, probed
//! once at start and registered with the cluster.

use std::path::Path;
use std::process::Command;

use herd_proto::state::{CriuFeatures, DirtyTracking, NodeFacts, Resources};

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

/// Whether `criu` is built with Herd's patches (`scripts/criu-patches`), which the stock CRIU
/// would refuse as an unknown option: dirty tracking through userfaultfd, and lazy restores
/// from local images with parents.
pub fn herd_criu(criu: &Path) -> bool {
    Command::new(criu).args(["--dirty-track-keeper", "/nonexistent", "-h"]).output().is_ok_and(|o| o.status.success())
}

/// Whether the kernel keeps soft-dirty bits (`CONFIG_MEM_SOFT_DIRTY`), asked as CRIU asks:
/// clear this process's bits, write a page, and read bit 55 of its pagemap entry. Without
/// them, a CRIU that tracks dirty memory does it with userfaultfd (Herd's patch 0010).
fn kernel_has_soft_dirty() -> bool {
    use std::io::{Read, Seek, SeekFrom};
    const PAGE: usize = 4096;
    if std::fs::write("/proc/self/clear_refs", "4").is_err() {
        return false;
    }
    let mut buf = vec![0u8; 2 * PAGE];
    let addr = (buf.as_ptr() as usize).next_multiple_of(PAGE);
    let page = addr - buf.as_ptr() as usize;
    // A write through a volatile pointer: the compiler may not drop it.
    // SAFETY: `page` is within `buf`, which lives to the end of the function.
    unsafe { std::ptr::write_volatile(buf.as_mut_ptr().add(page), 1) };
    let mut entry = [0u8; 8];
    let read = std::fs::File::open("/proc/self/pagemap").and_then(|mut f| {
        f.seek(SeekFrom::Start((addr / PAGE * 8) as u64))?;
        f.read_exact(&mut entry)
    });
    drop(buf);
    read.is_ok() && u64::from_le_bytes(entry) & (1 << 55) != 0
}

/// Probes the node; `criu` is `(path, version)` when CRIU is usable.
pub fn probe(runc_version: &str, criu: Option<(&Path, &str)>) -> NodeFacts {
    let criu_features = criu
        .map(|(path, _)| {
            let dirty_tracking = criu_feature(path, "mem_dirty_track");
            CriuFeatures {
                lazy_pages: criu_feature(path, "uffd-noncoop"),
                dirty_tracking,
                dirty_tracking_by: dirty_tracking.then(|| {
                    if kernel_has_soft_dirty() { DirtyTracking::SoftDirty } else { DirtyTracking::Userfaultfd }
                }),
            }
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
