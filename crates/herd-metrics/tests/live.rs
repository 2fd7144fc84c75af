//! Readers against this machine's real `/proc` and cgroup files. The cgroup test needs root
//! and a cgroup v1 `pids` and `memory` hierarchy (this project's hosts: see
//! ../shared/PLATFORM.md); elsewhere it fails, saying so, rather than pass without testing.

use std::path::Path;

use herd_metrics::read::{CgroupReader, NodeReader, ProblemReason, V1Paths};

#[test]
fn proc_of_this_machine() {
    let mut r = NodeReader::new(Path::new("/proc"), |i: &str| i != "lo");
    let a = r.read();
    // PSI may be absent (kernel option); everything else is in every Linux /proc.
    for p in &a.problems {
        assert!(p.file.starts_with("/proc/pressure"), "{p}");
    }
    let c = &a.counters;
    assert!(c.cpus.unwrap() >= 1);
    assert!(c.mem.unwrap().total > 0);
    assert!(c.load.is_some() && c.disk.is_some() && c.net.is_some());
    std::thread::sleep(std::time::Duration::from_millis(50));
    let b = r.read();
    assert!(b.counters.cpu.unwrap().total() >= c.cpu.unwrap().total(), "re-read through the open descriptor");
}

#[test]
fn cgroup_v1_of_this_machine_created_and_removed() {
    let root = Path::new("/sys/fs/cgroup");
    let name = format!("herd-metrics-live-{}", std::process::id());
    let dirs: Vec<_> = ["pids", "memory"].iter().map(|c| root.join(c).join(&name)).collect();
    let created: Vec<bool> = dirs.iter().map(|d| std::fs::create_dir(d).is_ok()).collect();
    if !root.join("pids/cgroup.procs").exists() || created.contains(&false) {
        for (d, made) in dirs.iter().zip(&created) {
            if *made {
                let _ = std::fs::remove_dir(d);
            }
        }
        panic!(
            "this test needs root and cgroup v1 pids and memory hierarchies (run it as root on a v1 or hybrid host)"
        );
    }
    let paths = V1Paths { pids: Some(dirs[0].clone()), memory: Some(dirs[1].clone()), ..Default::default() };
    let mut r = CgroupReader::v1(&paths);
    let first = r.read();
    assert_eq!(first.problems, vec![], "a fresh cgroup has every file");
    assert_eq!(first.counters.pids, Some(0));
    assert_eq!(first.counters.oom_kills, Some(0));
    assert_eq!(first.counters.mem_rss, Some(0));
    // The cgroup goes away (container stopped or migrated) while its files are held open.
    for d in &dirs {
        std::fs::remove_dir(d).unwrap();
    }
    let gone = r.read();
    assert!(gone.gone(), "{:?}", gone.problems);
    assert!(gone.problems.iter().all(|p| p.reason == ProblemReason::Missing));
    // ... and is recreated (restart on the same node): the reader follows.
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let back = r.read();
    assert_eq!(back.problems, vec![]);
    drop(r);
    for d in &dirs {
        std::fs::remove_dir(d).unwrap();
    }
}
