//! `herd down` and Ctrl-C on a foreground `herd up` leave nothing behind: no process, mount,
//! network namespace, cgroup, link or route.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Cluster, HERD, require_machine, wait_for};

const T: Duration = Duration::from_secs(60);

/// Everything a cluster named `name` could leave behind, as readable descriptions.
fn leftovers(name: &str, data_dir: &Path, bridge_hint: &str) -> Vec<String> {
    let mut found = Vec::new();
    // The data directory itself or a path in it, not another cluster's whose name starts
    // the same (`t8` and `t81`).
    let data = data_dir.display().to_string();
    let in_data_dir = |text: &str| {
        text.match_indices(&data).any(|(i, _)| matches!(text[i + data.len()..].chars().next(), None | Some('/' | ' ')))
    };
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let run_dir = format!("/run/herd/{name}/");
        if cmd.contains(&run_dir) || in_data_dir(&cmd) {
            found.push(format!("process {}: {cmd}", entry.file_name().to_string_lossy()));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mountinfo.lines() {
        if line.contains(&format!("/run/herd/{name}/"))
            || in_data_dir(line)
            || line.contains(&format!("/run/netns/herd-{name}-"))
        {
            found.push(format!("mount: {line}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&format!("herd-{name}-")) {
                found.push(format!("netns {}", e.path().display()));
            }
        }
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = hierarchy.path().join("herd").join(name);
        if p.exists() {
            found.push(format!("cgroup {}", p.display()));
        }
    }
    let links = std::process::Command::new("ip").args(["-o", "link"]).output().unwrap();
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        if line.contains(bridge_hint) {
            found.push(format!("link: {line}"));
        }
    }
    if Path::new(&format!("/run/herd/{name}")).exists() {
        found.push(format!("/run/herd/{name}"));
    }
    found
}

fn bridge_hint(cluster: &Cluster) -> String {
    cluster.up_state().layout.bridge[2..].to_string()
}

#[test]
fn down_leaves_nothing_behind() {
    let mut cluster = Cluster::up(7, 2);
    let hint = bridge_hint(&cluster);
    cluster.import_busybox();
    for (name, node) in [("a", "n1"), ("b", "n2")] {
        cluster.ok(&["run", "--name", name, "--node", node, "busybox", "--", "sleep", "3600"]);
    }
    cluster.ok(&[
        "run",
        "--name",
        "c",
        "busybox",
        "--",
        "sh",
        "-c",
        "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done",
    ]);
    cluster.wait_log("c", "3", T);
    cluster.ok(&["checkpoint", "c"]);
    assert!(
        !leftovers(&cluster.name, &cluster.data_dir, &hint).is_empty(),
        "the leak check sees nothing of a running cluster"
    );
    let container_ips: Vec<String> = ["a", "b"].iter().map(|n| cluster.container(n).ip.to_string()).collect();
    // Each node has a mount table of its own: a's root is mounted in n1's, not in n2's nor the host's.
    let a = cluster.container("a").id;
    let mounts_of = |pid: &str| {
        let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        table.lines().filter(|l| l.contains(&a) && l.contains(" overlay ")).count()
    };
    let agent = |node: &str| cluster.agent_pid(node).expect("the agent runs").to_string();
    assert_eq!(mounts_of(&agent("n1")), 1, "a's overlay root in n1's mount table");
    assert_eq!(mounts_of(&agent("n2")), 0, "a's root leaked into n2's mount table");
    assert_eq!(mounts_of("self"), 0, "a's root leaked into the host's mount table");

    cluster.down();
    let left = leftovers(&cluster.name, &cluster.data_dir, &hint);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    assert!(!cluster.data_dir.exists(), "--purge keeps data");
    let routes =
        String::from_utf8_lossy(&std::process::Command::new("ip").args(["route"]).output().unwrap().stdout).to_string();
    for ip in container_ips {
        assert!(!routes.contains(&ip), "route to {ip} left: {routes}");
    }
    assert!(!cluster.config.exists(), "the client config of a stopped cluster is removed");
    // A second down is harmless.
    let out = cluster.herd(&["down", "--name", &cluster.name]);
    assert!(out.status.success());
}

#[test]
fn foreground_up_stops_cleanly_on_ctrl_c() {
    require_machine();
    let name = "t8";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let data = Path::new("/var/lib/herd-test/t8");
    let _ = std::process::Command::new(HERD).args(["down", "--name", name, "--purge"]).output();
    let child = std::process::Command::new(HERD)
        .args([
            "up",
            "--name",
            name,
            "--nodes",
            "1",
            "--subnet",
            "10.99.8.0/24",
            "--container-cidr",
            "10.108.0.0/16",
            "--api-port",
            "17708",
            "--broker-port",
            "17408",
            "--data-dir",
        ])
        .arg(data)
        .env("HERD_CONFIG", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("up.log")).unwrap())
        .spawn()
        .unwrap();
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = std::process::Command::new(HERD).args(["down", "--name", "t8", "--purge"]).output();
        }
    }
    let mut guard = Guard(child);
    let pid = nix::unistd::Pid::from_raw(guard.0.id() as i32);
    wait_for("the foreground cluster to be ready", T, || {
        if let Ok(Some(status)) = guard.0.try_wait() {
            panic!("herd up exited early ({status}): {}", std::fs::read_to_string(dir.path().join("up.log")).unwrap());
        }
        let state = herd_up::UpState::load(Path::new("/run/herd/t8")).ok().flatten();
        state.is_some_and(|s| s.ready).then_some(())
    });
    let hint = herd_up::UpState::load(Path::new("/run/herd/t8")).unwrap().unwrap().layout.bridge[2..].to_string();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_for("herd up to exit after Ctrl-C", T, || guard.0.try_wait().unwrap());
    assert!(
        status.success(),
        "herd up exited with {status}: {}",
        std::fs::read_to_string(dir.path().join("up.log")).unwrap()
    );
    let left = leftovers(name, data, &hint);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
}

#[test]
fn the_demo_runs_its_counter_again_after_a_restart() {
    let cluster = Cluster::up_with(36, 1, &["--demo"]);
    cluster.wait_state("counter", "running", T);
    cluster.wait_log("counter", "tick 1", T);
    // `herd down` keeps the data and stops the counter; `herd up --demo` starts it over.
    cluster.ok(&["down", "--name", &cluster.name, "-t", "1"]);
    cluster.start(1, &["--demo"], &[]);
    assert_eq!(cluster.container("counter").state.as_str(), "running", "the demo's counter after a restart");
    cluster.wait_log("counter", "tick 1", T);
}
