//! Restores that fail: a checkpoint with damaged CRIU images is refused at once with a clear
//! error, CRIU's own refusal comes back as soon as CRIU fails, and neither (nor what a killed
//! restore leaves of runc's state) keeps a good checkpoint from restoring on the same node.
//! `herd rm -f` removes such leftovers.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{COUNTER, Cluster, wait_for};

const T: Duration = Duration::from_secs(60);

/// The largest file of `dir` whose name starts with `prefix`.
fn largest(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
        .path()
}

/// `herd restore NAME --checkpoint CK`, which must fail within `limit`; its error.
fn restore_fails(cluster: &Cluster, name: &str, ck: &str, limit: Duration) -> String {
    let started = Instant::now();
    let err = cluster.fails(&["restore", name, "--checkpoint", ck]);
    let took = started.elapsed();
    assert!(took < limit, "the failed restore of {ck} took {took:?}: {err}");
    err
}

/// Mounts `source` at `target` in node `node`'s mount namespace, as a killed `runc restore`
/// leaves its `criu-root`.
fn bind_in_node(cluster: &Cluster, node: &str, source: &Path, target: &Path) {
    std::fs::create_dir_all(cluster.node_view(node, target)).unwrap();
    let pid = cluster.agent_pid(node).unwrap().to_string();
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-m", "--", "mount", "--bind"])
        .arg(source)
        .arg(target)
        .output()
        .expect("running nsenter");
    assert!(out.status.success(), "mount --bind in {node}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_failed_restore_is_quick_and_clear_and_leaves_nothing_in_the_way() {
    let cluster = Cluster::up(41, 1);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "counter", "busybox", "--", "sh", "-c", COUNTER]);
    cluster.counts_on("counter", 0, T);
    assert_eq!(cluster.ok(&["checkpoint", "counter", "--leave-running"]).trim(), "ck1");
    assert_eq!(cluster.ok(&["checkpoint", "counter"]).trim(), "ck2");
    let c = cluster.container("counter");
    let images = cluster.data_dir.join("nodes/n1/checkpoints").join(&c.id).join("ck2/criu");

    // A pages image cut short: CRIU 4.2.1 would spin on it (until killed a minute later, with
    // its log filling the disk at 30 MB/s); it is refused before CRIU starts.
    let pages = largest(&images, "pages-");
    let whole = std::fs::read(&pages).unwrap();
    std::fs::OpenOptions::new().write(true).open(&pages).unwrap().set_len(4096).unwrap();
    let err = restore_fails(&cluster, "counter", "ck2", Duration::from_secs(10));
    let file = pages.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains("CRIU images are damaged") && err.contains(&file), "{err}");
    std::fs::write(&pages, &whole).unwrap();

    // A process image CRIU cannot read: CRIU refuses the restore, and says why.
    let core = largest(&images, "core-");
    std::fs::OpenOptions::new().write(true).open(&core).unwrap().set_len(20).unwrap();
    let err = restore_fails(&cluster, "counter", "ck2", Duration::from_secs(10));
    let file = core.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&file), "CRIU's reason is not in the error: {err}");
    assert!(!err.contains("RLIMIT_NOFILE"), "the error quotes CRIU's harmless complaint: {err}");
    assert_eq!(cluster.state("counter"), "checkpointed");

    // What a killed restore leaves of runc's state (its directory, with the container's root
    // bind-mounted on `criu-root`) is removed before the next restore, without deleting
    // anything through the mount.
    let runc_dir = cluster.node_layout("n1").run_dir.join("runc").join(&c.id);
    let innocent = cluster.data_dir.join("innocent");
    std::fs::create_dir_all(&innocent).unwrap();
    std::fs::write(innocent.join("keep"), "a file a careless delete would remove").unwrap();
    bind_in_node(&cluster, "n1", &innocent, &runc_dir.join("criu-root"));
    let lines = |cluster: &Cluster| cluster.ok(&["logs", "counter"]).lines().filter(|l| l.starts_with("n=")).count();
    let before = lines(&cluster);
    cluster.ok(&["restore", "counter", "--checkpoint", "ck1"]);
    assert_eq!(cluster.state("counter"), "running");
    // ck1 counts on from where it was (so numbers come twice in the log).
    wait_for("the restored counter to count on", T, || (lines(&cluster) > before + 20).then_some(()));
    assert!(innocent.join("keep").exists(), "a file was deleted through the leftover mount");

    // And `herd rm -f` removes such leftovers too.
    cluster.ok(&["stop", "-t", "0", "counter"]);
    assert!(!cluster.node_view("n1", &runc_dir).exists(), "runc still has the stopped container");
    bind_in_node(&cluster, "n1", &innocent, &runc_dir.join("criu-root"));
    cluster.ok(&["rm", "-f", "counter"]);
    assert!(!cluster.node_view("n1", &runc_dir).exists(), "herd rm -f left runc's state of the container");
    assert!(innocent.join("keep").exists(), "a file was deleted through the leftover mount");
}
