//! A container that fills memory and checks it (`crates/herd/tests/fixtures/memhog.c`), and
//! one migration of it: shared by the benchmarks that move memory (`migration`, `tls`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_proto::migration::MigrationReport;

use crate::BenchCluster;

/// One migration n1 -> n2 of a fresh container holding `size` MiB; `Err` when Herd refuses the
/// mode here (pre-copy without dirty-memory tracking).
pub fn herd_migration(
    cluster: &BenchCluster,
    size: u64,
    mode: &str,
    run: usize,
) -> anyhow::Result<Result<MigrationReport, String>> {
    herd_migration_dirtying(cluster, size, 0, mode, run)
}

/// [`herd_migration`] of a container that rewrites `dirty` MiB of its memory every second.
pub fn herd_migration_dirtying(
    cluster: &BenchCluster,
    size: u64,
    dirty: u64,
    mode: &str,
    run: usize,
) -> anyhow::Result<Result<MigrationReport, String>> {
    let name = format!("m{size}-{mode}-{run}");
    let memory = format!("{}m", size + 128);
    cluster.ok(&[
        "run",
        "--name",
        &name,
        "--node",
        "n1",
        "--memory",
        &memory,
        "busybox",
        "--",
        "memhog",
        &size.to_string(),
        &dirty.to_string(),
    ])?;
    wait_until(&format!("{name} to fill its memory"), Duration::from_secs(120), || {
        Ok(cluster.ok(&["logs", &name])?.contains("filled"))
    })?;
    let out = cluster.run(&["migrate", &name, "--to", "n2", "--mode", mode, "--json"])?;
    let result = if out.status.success() {
        let r: MigrationReport = serde_json::from_slice(&out.stdout).context("reading the migration report")?;
        // The memory must have arrived intact: memhog checks it every second.
        wait_until(&format!("{name} to check its memory"), Duration::from_secs(120), || {
            let log = cluster.ok(&["logs", &name])?;
            if log.contains("CORRUPT") {
                bail!("{name}'s memory was corrupted by the migration:\n{log}");
            }
            Ok(log.lines().filter(|l| l.ends_with(" ok")).count() >= 2)
        })?;
        Ok(r)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().trim_start_matches("error: ").to_string())
    };
    cluster.ok(&["rm", "-f", &name])?;
    Ok(result)
}

/// A busybox root filesystem with `/bin/memhog` (built statically from the test fixture).
pub fn memhog_rootfs(rootfs: &Path) -> anyhow::Result<()> {
    herd_up::busybox_rootfs(rootfs)?;
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/herd/tests/fixtures/memhog.c");
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(rootfs.join("bin/memhog"))
        .arg(source)
        .output()
        .context("gcc (build-essential) builds the memhog program")?;
    if !out.status.success() {
        bail!("building memhog: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
