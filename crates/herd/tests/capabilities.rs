//! `herd run --cap-add/--cap-drop`, as Docker has them: the container's processes hold
//! Docker's default set changed as asked, use what was added, keep exactly that set when they
//! move to another node (the restore check allows what the container was started with), with
//! the firewall rules NET_ADMIN let it make; and a capability that does not exist is refused
//! before anything runs.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use herd_proto::hostconfig::{HostConfig, capability_number};

const T: Duration = Duration::from_secs(60);

/// The capability mask a container run with `add` and `drop` must hold, as `CapEff` prints it.
fn expected_mask(add: &[&str], drop: &[&str]) -> String {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    let host = HostConfig { cap_add: strings(add), cap_drop: strings(drop), ..Default::default() };
    let mask = host.capabilities().iter().map(|c| 1u64 << capability_number(c).unwrap()).fold(0, |m, b| m | b);
    format!("{mask:016x}")
}

/// The lines of the `netadmin` container's log, `I CAPEFF MTU`, checked to be one unbroken
/// count from 1, each with capability mask `want` and the MTU it set (1000 + I); returns the
/// last count.
fn checked_count(log: &str, want: &str) -> u64 {
    let mut last = 0;
    for line in log.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [i, mask, mtu] = fields[..] else { panic!("a line that is not `I CAPEFF MTU`: {line:?}") };
        let i: u64 = i.parse().unwrap();
        assert_eq!(i, last + 1, "the count skipped or repeated at {line:?}");
        assert_eq!(mask, want, "the capabilities at {line:?}");
        assert_eq!(mtu, (1000 + i).to_string(), "the MTU it set at {line:?}");
        last = i;
    }
    last
}

#[test]
fn added_capabilities_are_held_used_and_kept_across_a_migration() {
    let cluster = Cluster::up(79, 2);
    cluster.import_busybox();

    let err = cluster.fails(&["run", "--cap-add", "SYS_NICEE", "busybox", "--", "true"]);
    assert!(err.contains("--cap-add SYS_NICEE: no such capability"), "{err}");

    // NET_ADMIN changes the loopback's MTU (refused without it); NET_RAW is gone.
    cluster.ok(&[
        "run",
        "--name",
        "netadmin",
        "--node",
        "n1",
        "--cap-add",
        "net_admin",
        "--cap-drop",
        "CAP_NET_RAW",
        "busybox",
        "--",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); ip link set lo mtu $((1000+i)) && \
         echo $i $(sed -n 's/^CapEff:\\s*//p' /proc/self/status) $(cat /sys/class/net/lo/mtu); sleep 0.1; done",
    ]);
    let want = expected_mask(&["CAP_NET_ADMIN"], &["CAP_NET_RAW"]);
    let count = |cluster: &Cluster| checked_count(&cluster.ok(&["logs", "netadmin"]), &want);
    let seen = wait_for("netadmin to count", T, || Some(count(&cluster)).filter(|n| *n >= 3));

    // A rule of its own, made in its namespace (busybox has no iptables; the host's is used).
    let rule = "-A INPUT -p tcp -m tcp --dport 7777 -j REJECT --reject-with tcp-reset";
    let pid = cluster.container("netadmin").pid.expect("netadmin's pid").to_string();
    let iptables = |pid: &str, args: &[&str]| {
        let out =
            std::process::Command::new("nsenter").args(["-t", pid, "-n", "iptables"]).args(args).output().unwrap();
        assert!(out.status.success(), "iptables {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let args: Vec<&str> = rule.split(' ').collect();
    iptables(&pid, &args);

    cluster.ok(&["migrate", "netadmin", "--to", "n2"]);
    cluster.wait_runs_only_on("netadmin", "n2", T);
    wait_for("netadmin to count on n2", T, || Some(count(&cluster)).filter(|n| *n > seen + 5));
    let pid = cluster.container("netadmin").pid.expect("netadmin's pid").to_string();
    let rules = iptables(&pid, &["-S", "INPUT"]);
    assert!(rules.lines().any(|l| l == rule), "its rule moved with it: {rules}");
    assert!(!rules.contains("0xc114"), "Herd's lock is gone: {rules}");

    // Dropping everything leaves nothing, even to root: chown is refused.
    cluster.ok(&[
        "run",
        "--name",
        "nocaps",
        "--cap-drop",
        "ALL",
        "busybox",
        "--",
        "sh",
        "-c",
        "sed -n 's/^CapEff:\\s*//p' /proc/self/status; touch /f; chown 1:1 /f || echo chown-refused",
    ]);
    cluster.wait_state("nocaps", "exited", T);
    let log = cluster.ok(&["logs", "nocaps"]);
    assert!(log.starts_with("0000000000000000\n") && log.contains("chown-refused"), "{log}");
}
