//! The node's cgroups: finding the hierarchies (v1, v2 or hybrid), reading a subtree's
//! usage, and removing a subtree once its processes are gone.

use std::path::{Path, PathBuf};

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// `true` for the cgroup v2 (unified) hierarchy.
    pub unified: bool,
    /// v1 controllers bound to it (`cpu`, `memory`, `name=systemd`, ...).
    pub controllers: Vec<String>,
}

/// Every cgroup hierarchy mounted, from `/proc/self/mountinfo`, read once: cgroup
/// hierarchies are mounted at boot, while `mountinfo` grows with every container's overlay
/// (with 1,000 containers, reading it took a third of the agent's CPU when done per heartbeat).
pub fn hierarchies() -> &'static [Hierarchy] {
    static FOUND: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
        parse_hierarchies(&info)
    })
}

fn parse_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let mut post = post.split(' ');
        let (Some(fstype), Some(_source), Some(opts)) = (post.next(), post.next(), post.next()) else { continue };
        let Some(mount) = pre.split(' ').nth(4) else { continue };
        let unified = fstype == "cgroup2";
        if fstype != "cgroup" && !unified {
            continue;
        }
        let controllers = if unified {
            Vec::new()
        } else {
            opts.split(',')
                .filter(|o| !matches!(*o, "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime" | "noatime"))
                .map(str::to_string)
                .collect()
        };
        out.push(Hierarchy { mount: PathBuf::from(mount), unified, controllers });
    }
    out
}

/// 2 when containers' resources are managed through cgroup v2 only, 1 otherwise (v1 or hybrid).
pub fn version() -> u8 {
    let h = hierarchies();
    if !h.is_empty() && h.iter().all(|h| h.unified) { 2 } else { 1 }
}

fn v1_dir(h: &[Hierarchy], controller: &str, path: &str) -> Option<PathBuf> {
    h.iter()
        .find(|h| !h.unified && h.controllers.iter().any(|c| c == controller))
        .map(|h| h.mount.join(path.trim_start_matches('/')))
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// CPU time (nanoseconds) and memory in use (bytes) of everything under cgroup `path`.
pub fn usage(path: &str) -> Option<(u64, u64)> {
    let h = hierarchies();
    if let (Some(cpu), Some(mem)) = (v1_dir(h, "cpuacct", path), v1_dir(h, "memory", path)) {
        return Some((
            read_u64(&cpu.join("cpuacct.usage"))?,
            read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0),
        ));
    }
    let unified = h.iter().find(|h| h.unified)?.mount.join(path.trim_start_matches('/'));
    let stat = std::fs::read_to_string(unified.join("cpu.stat")).ok()?;
    let usec: u64 = stat.lines().find_map(|l| l.strip_prefix("usage_usec "))?.trim().parse().ok()?;
    Some((usec * 1000, read_u64(&unified.join("memory.current")).unwrap_or(0)))
}

/// How long [`freeze`] waits for every task of a cgroup to stop.
const FREEZE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Freezes every process of cgroup `path` and returns once they are all stopped, as
/// `runc pause` does, without starting runc (some 10 ms of a ticker's pause): the cgroup v1
/// freezer's `freezer.state`, or cgroup v2's `cgroup.freeze`. A cgroup still freezing after
/// [`FREEZE_WITHIN`] (a task busy in the kernel) is thawed again, and that is an error.
pub fn freeze(path: &str) -> std::io::Result<()> {
    let h = hierarchies();
    let (control, events, frozen_when): (PathBuf, PathBuf, fn(&str) -> bool) = match v1_dir(h, "freezer", path) {
        Some(dir) => (dir.join("freezer.state"), dir.join("freezer.state"), |s| s.trim() == "FROZEN"),
        None => {
            let dir = unified_dir(h, path)?;
            (dir.join("cgroup.freeze"), dir.join("cgroup.events"), |s| s.lines().any(|l| l == "frozen 1"))
        }
    };
    let v1 = control == events;
    std::fs::write(&control, if v1 { "FROZEN" } else { "1" })?;
    let started = std::time::Instant::now();
    let mut nap = std::time::Duration::from_micros(50);
    loop {
        if frozen_when(&std::fs::read_to_string(&events)?) {
            return Ok(());
        }
        if started.elapsed() > FREEZE_WITHIN {
            let _ = std::fs::write(&control, if v1 { "THAWED" } else { "0" });
            return Err(std::io::Error::other(format!("cgroup {path} was still freezing after {FREEZE_WITHIN:?}")));
        }
        // cgroup v1 moves from FREEZING to FROZEN only when read again.
        if v1 {
            std::fs::write(&control, "FROZEN")?;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(std::time::Duration::from_millis(5));
    }
}

/// Thaws what [`freeze`] (or `runc pause`) froze.
pub fn thaw(path: &str) -> std::io::Result<()> {
    let h = hierarchies();
    match v1_dir(h, "freezer", path) {
        Some(dir) => std::fs::write(dir.join("freezer.state"), "THAWED"),
        None => std::fs::write(unified_dir(h, path)?.join("cgroup.freeze"), "0"),
    }
}

fn unified_dir(h: &[Hierarchy], path: &str) -> std::io::Result<PathBuf> {
    h.iter()
        .find(|h| h.unified)
        .map(|h| h.mount.join(path.trim_start_matches('/')))
        .ok_or_else(|| std::io::Error::other("neither a cgroup v1 freezer nor cgroup v2 is mounted"))
}

/// Removes cgroup `path` and everything below it in every hierarchy, deepest first.
/// Returns what could not be removed (a cgroup with live processes cannot be).
pub fn remove_tree(path: &str) -> Vec<String> {
    let rel = path.trim_matches('/');
    if rel.is_empty() {
        return vec!["refusing to remove the root cgroup".into()];
    }
    let mut problems = Vec::new();
    for h in hierarchies() {
        let top = h.mount.join(rel);
        if !top.exists() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            if let Err(e) = std::fs::remove_dir(&d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                problems.push(format!("removing cgroup {}: {e}", d.display()));
            }
        }
    }
    problems
}

/// Removes cgroup `path` (not its children) in every hierarchy where it has none left.
pub fn remove_if_empty(path: &str) {
    let rel = path.trim_matches('/');
    if rel.is_empty() {
        return;
    }
    for h in hierarchies() {
        let _ = std::fs::remove_dir(h.mount.join(rel));
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Creates cgroup `path` for migration helpers: a CPU cap of `cpus_milli` thousandths of a CPU
/// and a high weight, so a migration gets CPU on a loaded node without starving its neighbours.
/// Returns the path to pass to [`join_on_exec`].
pub fn create_budget_cgroup(path: &str, cpus_milli: u64) -> anyhow::Result<String> {
    let rel = path.trim_matches('/');
    let quota = (cpus_milli * 100).max(1000);
    for h in hierarchies() {
        let dir = h.mount.join(rel);
        if h.unified {
            // Only meaningful where the cpu controller is delegated to this subtree.
            if std::fs::create_dir_all(&dir).is_ok() {
                let _ = std::fs::write(dir.join("cpu.max"), format!("{quota} 100000"));
                let _ = std::fs::write(dir.join("cpu.weight"), "1000");
            }
            continue;
        }
        let cpu = h.controllers.iter().any(|c| c == "cpu");
        let cpuacct = h.controllers.iter().any(|c| c == "cpuacct");
        if !cpu && !cpuacct {
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("creating cgroup {}: {e}", dir.display()))?;
        if cpu {
            std::fs::write(dir.join("cpu.cfs_period_us"), "100000")?;
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
            std::fs::write(dir.join("cpu.shares"), "4096")?;
        }
    }
    Ok(format!("/{rel}"))
}

/// The processes in cgroup `path` (as `cgroup.procs` lists them in the first hierarchy that
/// has it: the pids or memory controller on v1, the unified hierarchy on v2).
pub fn processes(path: &str) -> std::io::Result<Vec<u32>> {
    let rel = path.trim_matches('/');
    let preferred = |h: &&Hierarchy| h.unified || h.controllers.iter().any(|c| c == "pids" || c == "memory");
    let dir = hierarchies()
        .iter()
        .filter(preferred)
        .map(|h| h.mount.join(rel))
        .find(|d| d.join("cgroup.procs").exists())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no cgroup {path}")))?;
    let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Makes the command's process join cgroup `path` (its CPU hierarchies) before it runs.
pub fn join_on_exec(cmd: &mut std::process::Command, path: &str) {
    use std::os::unix::process::CommandExt;
    let rel = path.trim_matches('/').to_string();
    let files: Vec<std::ffi::CString> = hierarchies()
        .iter()
        .filter(|h| h.unified || h.controllers.iter().any(|c| c == "cpu" || c == "cpuacct"))
        .map(|h| h.mount.join(&rel).join("cgroup.procs"))
        .filter(|p| p.exists())
        .filter_map(|p| std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).ok())
        .collect();
    // SAFETY: only open/write/close between fork and exec, all async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for f in &files {
                let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
";

    #[test]
    fn parses_a_hybrid_host() {
        let h = parse_hierarchies(HYBRID);
        assert_eq!(h.len(), 4);
        assert!(h[0].unified);
        assert_eq!(h[1].controllers, vec!["cpuacct"]);
        assert_eq!(h[3].controllers, vec!["name=systemd"]);
        assert_eq!(v1_dir(&h, "memory", "/herd/n1").unwrap(), PathBuf::from("/sys/fs/cgroup/memory/herd/n1"));
        assert_eq!(v1_dir(&h, "cpu", "/x"), None);
    }

    #[test]
    fn the_root_is_never_removed() {
        assert_eq!(remove_tree("/").len(), 1);
    }
}
