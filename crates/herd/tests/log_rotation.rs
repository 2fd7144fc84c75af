//! Container logs are capped: a container that prints as fast as it can keeps at most its
//! log limits on its node's disk (the node's, from `herd up --log-max-size/--log-max-files`,
//! or its own from `herd run --log-opt`); `herd logs` shows the newest lines and says how much
//! was rotated away, `herd logs -f` follows across rotations, and a migrating container's log
//! moves within its limits.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, wait_for};

const T: Duration = Duration::from_secs(60);

/// The log files of container `name` on its node, with their sizes.
fn log_files(cluster: &Cluster, name: &str) -> Vec<(PathBuf, u64)> {
    let c = cluster.container(name);
    let state = cluster.data_dir.join("nodes").join(&c.node).join("containers").join(&c.id).join("state");
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with("log.") && name.ends_with(".jsonl")
        })
        // A file rotated away between the listing and this look is no longer there.
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect();
    files.sort();
    files
}

fn on_disk(cluster: &Cluster, name: &str) -> u64 {
    log_files(cluster, name).iter().map(|(_, len)| len).sum()
}

/// `herd logs NAME`: (stdout, stderr).
fn logs(cluster: &Cluster, name: &str) -> (String, String) {
    let out = cluster.herd(&["logs", name]);
    assert!(out.status.success(), "herd logs {name}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// The bytes `herd logs` says were rotated away, from its stderr.
fn rotated(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix('(')?.strip_suffix(" bytes of older output were rotated away)")?.parse().ok())
}

/// Stops a `herd logs -f` left running when a test fails.
struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logs_are_capped_followed_across_rotations_and_carried_within_limits() {
    // The nodes keep 1 MiB files, 3 of them, unless a container asks otherwise.
    let cluster = Cluster::up_with(43, 2, &["--log-max-size", "1m", "--log-max-files", "3"]);
    cluster.import_busybox();

    // `yes` prints as fast as it can: the files rotate, and their sum stays within the cap.
    cluster.ok(&["run", "--name", "yes", "--node", "n1", "busybox", "--", "yes"]);
    let seen = wait_for("the log of yes to rotate", T, || {
        let (out, err) = logs(&cluster, "yes");
        rotated(&err).filter(|gone| *gone > 4 << 20).map(|_| out)
    });
    assert!(seen.lines().count() > 10_000 && seen.lines().all(|l| l == "y"), "herd logs shows the newest lines");
    let files = log_files(&cluster, "yes");
    assert!(files.len() <= 3 && files.iter().all(|(_, len)| *len <= 1 << 20), "{files:?}");
    assert!(on_disk(&cluster, "yes") <= 3 << 20);
    cluster.ok(&["rm", "-f", "yes"]);

    // A container's own limits, as Docker spells them; bad ones are refused.
    let err = cluster.fails(&["run", "--name", "bad", "--log-opt", "max-size=1k", "busybox", "--", "true"]);
    assert!(err.contains("log size 1k is too small"), "{err}");
    let err = cluster.fails(&["run", "--name", "bad", "--log-opt", "mode=fast", "busybox", "--", "true"]);
    assert!(err.contains("unknown --log-opt \"mode\""), "{err}");
    // Bursts of numbers, about 100 KiB of log a second, into files of 64 KiB.
    let counter = "i=0; while true; do seq $i $((i+99)); i=$((i+100)); sleep 0.05; done";
    cluster.ok(&[
        "run",
        "--name",
        "counter",
        "--node",
        "n1",
        "--log-opt",
        "max-size=64k,max-file=2",
        "busybox",
        "--",
        "sh",
        "-c",
        counter,
    ]);
    let mut follower = Follower(
        cluster.command(&["logs", "-f", "counter"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
    );
    let followed = Arc::new(Mutex::new(Vec::<u64>::new()));
    let reader = {
        let (out, followed) = (follower.0.stdout.take().unwrap(), followed.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                followed.lock().unwrap().push(line.unwrap().parse().unwrap());
            }
        })
    };
    // Several rotations while it is followed: the follower keeps up and loses nothing.
    wait_for("the counter's log to rotate a few times", T, || {
        rotated(&logs(&cluster, "counter").1).filter(|gone| *gone > 4 * (64 << 10)).map(drop)
    });
    let seen = followed.lock().unwrap().len() as u64;
    wait_for("the follower to follow on", T, || (followed.lock().unwrap().len() as u64 > seen + 1000).then_some(()));
    let numbers = followed.lock().unwrap().clone();
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>(), "the follower lost or repeated lines");
    follower.0.kill().unwrap();
    reader.join().unwrap();
    let mut err = String::new();
    follower.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(rotated(&err), None, "the follower kept up, yet was told: {err}");

    // The log moves with the container, bounded; it rotates on at the same offsets there.
    let before_move = rotated(&logs(&cluster, "counter").1).unwrap();
    cluster.ok(&["migrate", "counter", "--to", "n2"]);
    cluster.wait_runs_only_on("counter", "n2", T);
    assert!(on_disk(&cluster, "counter") <= 2 * (64 << 10), "the carried log is bounded too");
    wait_for("the counter's log to rotate on n2", T, || {
        rotated(&logs(&cluster, "counter").1).filter(|gone| *gone > before_move + 2 * (64 << 10)).map(drop)
    });
    let files = log_files(&cluster, "counter");
    assert!(files.len() <= 2 && files.iter().all(|(_, len)| *len <= 64 << 10), "{files:?}");
    cluster.ok(&["stop", "-t", "0", "counter"]);

    // `herd logs` now: the newest lines only, the last one the follower's, and word of the rest.
    let (out, err) = logs(&cluster, "counter");
    let kept: Vec<u64> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert!(kept[0] > *numbers.last().unwrap(), "older lines are gone");
    assert_eq!(kept, (kept[0]..=kept[kept.len() - 1]).collect::<Vec<_>>());
    assert!(rotated(&err).is_some_and(|gone| gone > 0), "{err}");
}
