//! What encryption costs (issue 19): two local two-node clusters side by side, one as `herd
//! up` makes it (TLS on the broker, the API and migrations, certificates of the cluster CA)
//! and one with `--no-tls`, measured interleaved run by run:
//!
//! 1. the API: `herd ps` and `herd run` (a whole CLI command each: process start, config,
//!    connection and handshake, request);
//! 2. migration: a container holding 1 GiB of touched memory moved post-copy (downtime and
//!    total) and cold (total), its memory checked intact after each move.
//!
//! Goals: `herd ps` and `herd run` within +10 %; 1 GiB post-copy downtime within +10 % and
//! total within +25 %; cold total within +25 %.
//!
//! Run as root: `cargo build --release --bin herd --bin tls && target/release/tls`.
//! `RUNS=3` (default 5) and `SIZE=256` (MiB, default 1024) shorten it; `MIGRATIONS=0` leaves
//! the migrations out.

use std::time::Duration;

use herd_bench::memhog::{herd_migration, memhog_rootfs};
use herd_bench::{BenchCluster, Row, Stats, print_table, require, time};

const TLS_INDEX: u8 = 41;
const PLAIN_INDEX: u8 = 42;
const API_RUNS: usize = 30;

fn main() -> anyhow::Result<()> {
    require("/bin/busybox", "apt-get install busybox-static (scripts/setup.sh)")?;
    let runs: usize = std::env::var("RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let size: u64 = std::env::var("SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let migrations = std::env::var("MIGRATIONS").map(|v| v != "0").unwrap_or(true);
    println!("tls: TLS on every channel beside --no-tls, two 2-node clusters, interleaved");

    let clusters = [BenchCluster::up(TLS_INDEX, 2)?, BenchCluster::up_with(PLAIN_INDEX, 2, None, &["--no-tls"])?];
    let scratch = tempfile::tempdir()?;
    let rootfs = scratch.path().join("memhog-rootfs");
    memhog_rootfs(&rootfs)?;
    for c in &clusters {
        c.ok(&["image", "import", "busybox", rootfs.to_str().unwrap()])?;
        c.ok(&["run", "--name", "idle", "busybox", "--", "sleep", "3600"])?;
    }

    let mut ps: [Vec<Duration>; 2] = Default::default();
    let mut run: [Vec<Duration>; 2] = Default::default();
    for i in 0..API_RUNS {
        for (k, c) in clusters.iter().enumerate() {
            let (d, out) = time(|| c.ok(&["ps"]));
            out?;
            ps[k].push(d);
            let name = format!("r{i}");
            let (d, out) = time(|| c.ok(&["run", "--name", &name, "busybox", "--", "sleep", "3600"]));
            out?;
            run[k].push(d);
            c.ok(&["rm", "-f", &name])?;
        }
    }
    let row = |what: &str, v: &[Vec<Duration>; 2]| Row {
        what: what.into(),
        herd: Stats::of(&v[0]),
        baseline: Stats::of(&v[1]),
    };
    let mut rows = vec![row("herd ps (whole command)", &ps), row("herd run (whole command)", &run)];

    if migrations {
        let mut post_down: [Vec<Duration>; 2] = Default::default();
        let mut post_total: [Vec<Duration>; 2] = Default::default();
        let mut cold_total: [Vec<Duration>; 2] = Default::default();
        for r in 0..runs {
            for (k, c) in clusters.iter().enumerate() {
                let p = herd_migration(c, size, "postcopy", r)?.map_err(anyhow::Error::msg)?;
                post_down[k].push(Duration::from_millis(p.downtime_ms));
                post_total[k].push(Duration::from_millis(p.total_ms));
                let cold = herd_migration(c, size, "cold", r)?.map_err(anyhow::Error::msg)?;
                cold_total[k].push(Duration::from_millis(cold.total_ms));
            }
        }
        rows.push(row(&format!("post-copy {size} MiB: downtime"), &post_down));
        rows.push(row(&format!("post-copy {size} MiB: total"), &post_total));
        rows.push(row(&format!("cold {size} MiB: total"), &cold_total));
    }
    print_table("TLS (herd up's default) against plain text (--no-tls)", "plain", &rows);
    println!("\ngoals: herd ps, herd run and post-copy downtime within 1.10x; post-copy and cold totals within 1.25x");
    Ok(())
}
