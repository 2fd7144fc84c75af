//! Containers are confined by default (issue 19): Herd's seccomp profile refuses a syscall that
//! reaches past the container (here `unshare(CLONE_NEWUSER)`, which the kernel allows any
//! process), `no_new_privs` is set, and both stay so when the container migrates (CRIU restores
//! the filter, on every thread) and in `herd exec`. `--security-opt seccomp=unconfined`, a profile of one's own,
//! `--read-only` and malformed options behave as Docker users expect.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};

const T: Duration = Duration::from_secs(60);

/// Each 0.2 s: the count, the `Seccomp:` and `NoNewPrivs:` of its status, whether a new user
/// namespace could be made, whether the root file system could be written.
const PROBE: &str = "i=0; while :; do i=$((i+1)); \
    s=$(sed -n 's/^Seccomp:\\s*//p' /proc/self/status); n=$(sed -n 's/^NoNewPrivs:\\s*//p' /proc/self/status); \
    if unshare -U true 2>/dev/null; then u=allowed; else u=refused; fi; \
    if touch /probe 2>/dev/null; then w=rw; else w=ro; fi; \
    echo $i $s $n $u $w; sleep 0.2; done";

/// The probe's lines, checked to be one unbroken count from 1 that always says `want`
/// (`SECCOMP NNP USERNS ROOT`); returns the last count.
fn checked(log: &str, want: &str) -> u64 {
    let mut last = 0;
    for line in log.lines() {
        let (i, rest) = line.split_once(' ').unwrap_or_else(|| panic!("a line that is not the probe's: {line:?}"));
        let i: u64 = i.parse().unwrap();
        assert_eq!(i, last + 1, "the count skipped or repeated at {line:?}");
        assert_eq!(rest, want, "what the container could do at {line:?}");
        last = i;
    }
    last
}

fn count_on_through_a_migration(cluster: &Cluster, name: &str, want: &str) {
    let count = || checked(&cluster.ok(&["logs", name]), want);
    let seen = wait_for(&format!("{name} to count"), T, || Some(count()).filter(|n| *n >= 3));
    cluster.ok(&["migrate", name, "--to", "n2"]);
    cluster.wait_runs_only_on(name, "n2", T);
    wait_for(&format!("{name} to count on n2"), T, || Some(count()).filter(|n| *n > seen + 5));
}

#[test]
fn containers_are_confined_by_default_and_stay_so_when_they_move() {
    let cluster = Cluster::up(89, 2);
    cluster.import_busybox_with(&["threads"]);

    // The default: filter on (mode 2), no_new_privs, no user namespace, a writable root.
    cluster.ok(&["run", "--name", "confined", "--node", "n1", "busybox", "--", "sh", "-c", PROBE]);
    // Unconfined, the same program makes its namespace: it is the filter that refused it.
    cluster.ok(&[
        "run",
        "--name",
        "unconfined",
        "--node",
        "n1",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "no-new-privileges=false",
        "busybox",
        "--",
        "sh",
        "-c",
        PROBE,
    ]);
    // Read-only root, still confined.
    cluster.ok(&["run", "--name", "readonly", "--node", "n1", "--read-only", "busybox", "--", "sh", "-c", PROBE]);
    // Threads: CRIU keeps a filter they all share on the leader alone, restored on all of them.
    cluster.ok(&["run", "--name", "threads", "--node", "n1", "busybox", "--", "threads"]);
    let inspect = cluster.ok(&["inspect", "readonly"]);
    assert!(inspect.contains("seccomp=default, no-new-privileges=true, read-only"), "{inspect}");

    count_on_through_a_migration(&cluster, "confined", "2 1 refused rw");
    count_on_through_a_migration(&cluster, "unconfined", "0 0 allowed rw");
    count_on_through_a_migration(&cluster, "readonly", "2 1 refused ro");
    count_on_through_a_migration(&cluster, "threads", "2 2 2 2 2");

    // A process started in a confined container has its filter too.
    let err = cluster.fails(&["exec", "confined", "--", "unshare", "-U", "true"]);
    assert!(err.contains("Operation not permitted"), "{err}");
    let out = cluster.ok(&["exec", "unconfined", "--", "unshare", "-U", "echo", "made"]);
    assert_eq!(out.trim(), "made");
}

#[test]
fn a_profile_of_ones_own_applies_and_bad_options_are_refused() {
    let cluster = Cluster::up(90, 1);
    cluster.import_busybox();
    let dir = tempfile::tempdir().unwrap();

    // Everything allowed but making directories, which says EACCES (13).
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    cluster.ok(&[
        "run",
        "--name",
        "nomkdir",
        "--security-opt",
        &opt,
        "busybox",
        "--",
        "sh",
        "-c",
        "mkdir /made 2>&1; touch /touched && echo touched; unshare -U echo userns",
    ]);
    cluster.wait_state("nomkdir", "exited", T);
    let log = cluster.ok(&["logs", "nomkdir"]);
    assert!(log.contains("Permission denied") && log.contains("touched") && log.contains("userns"), "{log}");

    // Bad input, refused before anything runs.
    let missing = cluster.fails(&["run", "--security-opt", "seccomp=/no/such/profile.json", "busybox", "--", "true"]);
    assert!(missing.contains("reading the profile"), "{missing}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"defaultAction\": ").unwrap();
    let malformed = cluster.fails(&["run", "--security-opt", &format!("seccomp={}", bad.display()), "busybox", "true"]);
    assert!(malformed.contains("is not JSON"), "{malformed}");
    let unknown = cluster.fails(&["run", "--security-opt", "apparmor=unconfined", "busybox", "true"]);
    assert!(unknown.contains("not with apparmor"), "{unknown}");
    let ps = cluster.ok(&["ps", "-a"]);
    assert_eq!(ps.lines().count(), 2, "only nomkdir was made: {ps}");
}
