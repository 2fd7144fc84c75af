//! `herd run` to running, and `herd ps`, with 100 containers — beside raw runc doing the
//! same on this machine (`runc run -d` of a prepared bundle, `runc list`).
//!
//! Run as root: `cargo build --release --bin herd --bin run-ps && target/release/run-ps`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use herd_bench::{BenchCluster, Row, Stats, print_table, require, time};

const CONTAINERS: usize = 100;
const LIST_RUNS: usize = 20;

fn main() -> anyhow::Result<()> {
    require("/bin/busybox", "apt-get install busybox-static (scripts/setup.sh)")?;
    let count: usize = std::env::var("CONTAINERS").ok().and_then(|v| v.parse().ok()).unwrap_or(CONTAINERS);
    println!("run-ps: {count} containers, on a 2-node local cluster and with raw runc");

    let cluster = BenchCluster::up(1, 2)?;
    cluster.import_busybox()?;
    let mut run_times = Vec::new();
    for i in 0..count {
        let name = format!("b{i:04}");
        let (d, out) = time(|| cluster.ok(&["run", "--name", &name, "busybox", "--", "sleep", "3600"]));
        out?;
        run_times.push(d);
    }
    let ps = cluster.ok(&["ps"])?;
    let running = ps.lines().filter(|l| l.contains("running")).count();
    if running != count {
        bail!("expected {count} running containers, herd ps shows {running}");
    }
    let mut ps_times = Vec::new();
    for _ in 0..LIST_RUNS {
        let (d, out) = time(|| cluster.ok(&["ps"]));
        out?;
        ps_times.push(d);
    }
    drop(cluster);

    let (runc_run, runc_list) = raw_runc(count)?;
    print_table(
        &format!("herd run (CLI call until the container runs) and herd ps with {count} containers"),
        "runc",
        &[
            Row { what: "run -> running".into(), herd: Stats::of(&run_times), baseline: Stats::of(&runc_run) },
            Row {
                what: format!("ps / runc list ({count})"),
                herd: Stats::of(&ps_times),
                baseline: Stats::of(&runc_list),
            },
        ],
    );
    println!(
        "\nherd's run includes what runc's does not: the API call, placement, the broker round trip, \
         an overlay root, a cgroup, a network namespace with a routed address, and the shim."
    );
    Ok(())
}

/// The same containers with runc alone: a prepared bundle over the shared busybox root
/// (read-only), `runc run -d` with /dev/null stdio, then `runc list`.
fn raw_runc(count: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let work = tempfile::tempdir()?;
    let root = PathBuf::from(format!("/run/herd-bench-runc-{}", std::process::id()));
    let cgroup_parent = format!("herd-bench-runc-{}", std::process::id());
    struct Cleanup(PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Ok(out) = Command::new("runc").arg("--root").arg(&self.0).args(["list", "-q"]).output() {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = Command::new("runc").arg("--root").arg(&self.0).args(["delete", "-f", id]).output();
                }
            }
            let _ = std::fs::remove_dir_all(&self.0);
            for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.1));
            }
        }
    }
    let _cleanup = Cleanup(root.clone(), cgroup_parent.clone());

    let rootfs = work.path().join("busybox");
    herd_up::busybox_rootfs(&rootfs)?;
    let template = work.path().join("template");
    std::fs::create_dir_all(&template)?;
    let status = Command::new("runc").arg("spec").current_dir(&template).status().context("runc spec")?;
    if !status.success() {
        bail!("runc spec failed");
    }
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(template.join("config.json"))?)?;
    let mut times = Vec::new();
    for i in 0..count {
        let id = format!("r{i:04}");
        let bundle = work.path().join(&id);
        std::fs::create_dir_all(&bundle)?;
        let mut s = spec.clone();
        s["process"]["terminal"] = false.into();
        s["process"]["args"] = serde_json::json!(["sleep", "3600"]);
        s["root"]["path"] = rootfs.display().to_string().into();
        s["root"]["readonly"] = true.into();
        s["linux"]["cgroupsPath"] = format!("/{cgroup_parent}/{id}").into();
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&s)?)?;
        // The container inherits runc's stdio: a pipe would never reach EOF, so errors go to a file.
        let errors = work.path().join(format!("{id}.err"));
        let (d, status) = time(|| -> std::io::Result<std::process::ExitStatus> {
            Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["run", "-d", "--bundle"])
                .arg(&bundle)
                .arg(&id)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&errors)?)
                .status()
        });
        if !status?.success() {
            bail!("runc run {id} failed: {}", std::fs::read_to_string(&errors).unwrap_or_default().trim());
        }
        times.push(d);
    }
    let mut list = Vec::new();
    for _ in 0..LIST_RUNS {
        let (d, out) = time(|| Command::new("runc").arg("--root").arg(&root).arg("list").output());
        let out = out?;
        let n = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("running")).count();
        if n != count {
            bail!("runc list shows {n} running containers, expected {count}");
        }
        list.push(d);
    }
    Ok((times, list))
}
