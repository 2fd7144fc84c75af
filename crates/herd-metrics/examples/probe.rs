//! Reads one container's cgroup and the node on this machine twice, a second apart, prints
//! the batch a Compute node would publish and any file problems, then times the readers.
//!
//! ```sh
//! cargo run --release -p herd-metrics --example probe -- herd/herd/n1/<container id> [pid]
//! ```

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd_metrics::rate::Snapshot;
use herd_metrics::read::{CgroupReader, NodeReader, V1Paths};
use herd_metrics::sample::{Batch, ContainerSample, NodeSample};

fn main() {
    let mut args = std::env::args().skip(1);
    let cgroup = args.next().unwrap_or_default();
    let pid: Option<u32> = args.next().and_then(|p| p.parse().ok());
    let root = Path::new("/sys/fs/cgroup");
    let v2 = root.join("cgroup.controllers").exists();
    let make = || {
        let mut r = if v2 {
            CgroupReader::v2(&root.join(cgroup.trim_start_matches('/')))
        } else {
            CgroupReader::v1(&V1Paths::under(root, &cgroup))
        };
        r.set_net_pid(Path::new("/proc"), pid);
        r
    };
    let mut cr = make();
    let mut nr = NodeReader::new(Path::new("/proc"), |i: &str| i != "lo");
    let start = Instant::now();
    let ms = || start.elapsed().as_millis() as u64;
    let wall = || SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);

    let c0 = Snapshot { at_ms: ms(), counters: cr.read().counters };
    let n0 = Snapshot { at_ms: ms(), counters: nr.read().counters };
    std::thread::sleep(Duration::from_secs(1));
    let cread = cr.read();
    let nread = nr.read();
    for p in cread.problems.iter().chain(&nread.problems) {
        eprintln!("problem: {p}");
    }
    let c1 = Snapshot { at_ms: ms(), counters: cread.counters };
    let n1 = Snapshot { at_ms: ms(), counters: nread.counters };
    let mut batch = Batch::new("local", 1, wall());
    batch.node_sample = Some(NodeSample::from_counters("local", wall(), Some(&n0), &n1, c1.counters.mem_usage, 1));
    batch.containers.push(ContainerSample::from_counters(cgroup.clone(), None, wall(), Some(&c0), &c1, None));
    println!("{}", String::from_utf8_lossy(&batch.encode()));

    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(cr.read());
    }
    eprintln!("container, files kept open: {:?} per read", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(make().keep_open(false).read());
    }
    eprintln!("container, open and close:  {:?} per read", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(cr.read_files(herd_metrics::read::Files::Cheap));
    }
    eprintln!("container, cheap files only: {:?} per read", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(nr.read());
    }
    eprintln!("node, files kept open:      {:?} per read", t.elapsed() / n);
}
