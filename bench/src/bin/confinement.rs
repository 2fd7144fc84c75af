//! What confinement costs (issue 19): the same container confined by default (Herd's seccomp
//! profile, `no_new_privs`) beside one run with `--security-opt seccomp=unconfined`, on a
//! local two-node cluster, interleaved run by run:
//!
//! 1. syscalls: `herd exec` of `dd bs=1` copying 1,000,000 bytes from `/dev/zero` to
//!    `/dev/null` (two syscalls a byte) in each container;
//! 2. start: `herd run` until the container runs;
//! 3. migration: the downtime of a small counting container moved between the nodes.
//!
//! Run as root: `cargo build --release --bin herd --bin confinement && target/release/confinement`.
//! `RUNS=3` shortens it.

use std::time::{Duration, Instant};

use herd_bench::{BenchCluster, Row, Stats, print_table, require};
use herd_proto::api::ContainerInfo;

const INDEX: u8 = 40;
const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";

fn main() -> anyhow::Result<()> {
    require("/bin/busybox", "apt-get install busybox-static (scripts/setup.sh)")?;
    let runs: usize = std::env::var("RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(9);
    let cluster = BenchCluster::up(INDEX, 2)?;
    cluster.import_busybox()?;
    println!("confinement: Herd's default (seccomp profile, no_new_privs) beside seccomp=unconfined, {runs} runs each");
    let flavours: [(&str, &[&str]); 2] = [("confined", &[]), ("unconfined", &["--security-opt", "seccomp=unconfined"])];
    for (name, opts) in flavours {
        let mut args = vec!["run", "--name", name, "--node", "n1"];
        args.extend_from_slice(opts);
        args.extend(["busybox", "--", "sh", "-c", COUNTER]);
        cluster.ok(&args)?;
    }
    let mut syscalls: [Vec<Duration>; 2] = Default::default();
    let mut starts: [Vec<Duration>; 2] = Default::default();
    let mut downtimes: [Vec<Duration>; 2] = Default::default();
    for run in 0..runs {
        for (k, (name, opts)) in flavours.iter().enumerate() {
            let t = Instant::now();
            cluster.ok(&["exec", name, "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=1000000"])?;
            syscalls[k].push(t.elapsed());

            let short = format!("{name}-start-{run}");
            let mut args = vec!["run", "--name", &short, "--node", "n2"];
            args.extend_from_slice(opts);
            args.extend(["busybox", "--", "sleep", "600"]);
            let t = Instant::now();
            cluster.ok(&args)?;
            while info(&cluster, &short)?.state.as_str() != "running" {
                std::thread::sleep(Duration::from_millis(5));
            }
            starts[k].push(t.elapsed());
            cluster.ok(&["rm", "-f", &short])?;

            let to = if run % 2 == 0 { "n2" } else { "n1" };
            cluster.ok(&["migrate", name, "--to", to])?;
            let c = info(&cluster, name)?;
            let m = c.migrations.last().ok_or_else(|| anyhow::anyhow!("{name} has no migration on record"))?;
            downtimes[k].push(Duration::from_millis(m.downtime_ms));
        }
    }
    let row = |what: &str, v: &[Vec<Duration>; 2]| Row {
        what: what.into(),
        herd: Stats::of(&v[0]),
        baseline: Stats::of(&v[1]),
    };
    print_table(
        "confined (Herd's default) against unconfined",
        "unconfined",
        &[
            row("exec dd bs=1, 2,000,000 syscalls", &syscalls),
            row("herd run until running", &starts),
            row("migration downtime (counter)", &downtimes),
        ],
    );
    let per_call = |s: &Stats| s.median.as_secs_f64() * 1e9 / 2e6;
    println!(
        "\nper syscall (exec included): {:.0} ns confined, {:.0} ns unconfined",
        per_call(&Stats::of(&syscalls[0])),
        per_call(&Stats::of(&syscalls[1]))
    );
    Ok(())
}

fn info(cluster: &BenchCluster, name: &str) -> anyhow::Result<ContainerInfo> {
    Ok(serde_json::from_str(&cluster.ok(&["inspect", "--json", name])?)?)
}
