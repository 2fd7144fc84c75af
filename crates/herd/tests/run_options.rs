//! What running real images needs, as Docker has it: `herd run --user/--workdir/--entrypoint`,
//! an image's own `User`, `WorkingDir`, `Entrypoint`, `Cmd`, `Env` and `ExposedPorts`;
//! `herd logs --tail/--since`; `herd start` and `herd restart` with the container's files and
//! address; and PostgreSQL started as its own user (no `runuser`), served, checkpointed and
//! migrated.

mod common;
#[path = "../../herd-image/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, tcp_exchange, wait_for};
use herd_proto::state::ContainerState;
use serde_json::json;
use support::{Files, hex_of, json_bytes, sha256};

const T: Duration = Duration::from_secs(60);

/// A busybox root filesystem with users and groups to resolve: `app` (1000:1000, home
/// `/home/app`) is in `staff` and `audio` besides its own group.
fn rootfs_with_users(dir: &Path) -> PathBuf {
    let rootfs = dir.join("users-rootfs");
    if rootfs.exists() {
        return rootfs;
    }
    herd_up::busybox_rootfs(&rootfs).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nstaff:x:50:app\naudio:x:29:nobody,app\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    rootfs
}

/// `Uid:`, `Gid:` and `Groups:` of a process, as the host's kernel has them.
fn credentials(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

/// Runs a container that prints `id`, `$HOME` and its working directory and exits; returns
/// what it printed.
fn identity_of(cluster: &Cluster, name: &str, run_args: &[&str]) -> String {
    let mut args = vec!["run", "--name", name];
    args.extend_from_slice(run_args);
    args.extend_from_slice(&["users", "--", "sh", "-c", "id; echo home=$HOME; echo cwd=$(pwd)"]);
    cluster.ok(&args);
    cluster.wait_state(name, "exited", T);
    cluster.ok(&["logs", name])
}

// (Index 60 is tests/apps.rs's: the two cases share one cluster.)
#[test]
fn run_options_and_image_configs_as_docker_has_them() {
    let cluster = Cluster::up(61, 1);
    user_workdir_and_entrypoint(&cluster);
    an_image_config_is_honoured_and_overridden(&cluster);
}

fn user_workdir_and_entrypoint(cluster: &Cluster) {
    let rootfs = rootfs_with_users(cluster.dir.path());
    cluster.ok(&["image", "import", "users", rootfs.to_str().unwrap()]);

    // By name: the user's own group, and the groups that list it, as supplementary groups;
    // HOME from passwd. The same on the host.
    cluster.ok(&[
        "run",
        "--name",
        "byname",
        "--user",
        "app",
        "users",
        "--",
        "sh",
        "-c",
        "id; echo home=$HOME; echo cwd=$(pwd); exec sleep 600",
    ]);
    let log = cluster.wait_log("byname", "cwd=", T);
    assert!(log.contains("uid=1000(app) gid=1000(app) groups=29(audio),50(staff),1000(app)\n"), "{log}");
    assert!(log.contains("home=/home/app\ncwd=/\n"), "{log}");
    let c = cluster.container("byname");
    assert_eq!((c.user.as_str(), c.working_dir.as_str()), ("app", "/"));
    assert_eq!(
        credentials(c.pid.unwrap()),
        ("1000 1000 1000 1000".into(), "1000 1000 1000 1000".into(), "29 50 1000".into())
    );
    let shown = cluster.ok(&["inspect", "byname"]);
    assert!(shown.contains("User:         app\n") && shown.contains("Working dir:  /\n"), "{shown}");

    // A uid that passwd does not have is taken as a number, with group 0 and HOME=/.
    let log = identity_of(cluster, "byuid", &["--user", "4242", "--workdir", "/srv/new/../made"]);
    assert_eq!(log, "uid=4242 gid=0(root) groups=0(root)\nhome=/\ncwd=/srv/made\n");
    // A uid that passwd has is that user, with its groups.
    let log = identity_of(cluster, "byknownuid", &["--user", "1000"]);
    assert!(log.starts_with("uid=1000(app) gid=1000(app) groups=29(audio),50(staff),1000(app)\n"), "{log}");
    // An explicit group replaces the groups, by name or by number (known or not).
    let log = identity_of(cluster, "withgroup", &["--user", "app:staff"]);
    assert!(log.starts_with("uid=1000(app) gid=50(staff) groups=50(staff)\n"), "{log}");
    let log = identity_of(cluster, "withgid", &["--user", "1000:4343", "-e", "HOME=/elsewhere"]);
    assert_eq!(log, "uid=1000(app) gid=4343 groups=4343\nhome=/elsewhere\ncwd=/\n");
    let log = identity_of(cluster, "asroot", &["--user", "root"]);
    assert!(log.starts_with("uid=0(root) gid=0(root) groups=0(root)\nhome=/root\n"), "{log}");

    // Names the container does not have, and bad input, are refused and leave nothing behind.
    let err = cluster.fails(&["run", "--name", "ghost", "--user", "ghost", "users", "--", "true"]);
    assert!(err.contains("unable to find user ghost: no matching entry in the container's /etc/passwd"), "{err}");
    let err = cluster.fails(&["run", "--name", "ghostgroup", "--user", "app:wheel", "users", "--", "true"]);
    assert!(err.contains("unable to find group wheel"), "{err}");
    let err = cluster.fails(&["run", "--name", "relative", "--workdir", "srv", "users", "--", "true"]);
    assert!(err.contains("needs to be an absolute path"), "{err}");
    let err = cluster.fails(&["run", "--name", "badspec", "--user", "a:b:c", "users", "--", "true"]);
    assert!(err.contains("invalid user \"a:b:c\""), "{err}");
    let listed = cluster.ok(&["ps", "-a", "-q"]);
    for name in ["ghost", "ghostgroup", "relative", "badspec"] {
        assert!(!listed.lines().any(|l| l == name), "{name} was left behind: {listed}");
    }

    // --entrypoint runs another program with the arguments given.
    cluster.ok(&["run", "--name", "echoer", "--entrypoint", "/bin/echo", "users", "--", "hello", "world"]);
    cluster.wait_state("echoer", "exited", T);
    assert_eq!(cluster.ok(&["logs", "echoer"]), "hello world\n");
}

/// A `docker save` archive of `rootfs` with the image configuration `config`.
fn docker_save(rootfs: &Path, config: serde_json::Value) -> Vec<u8> {
    let mut layer = Vec::new();
    herd_image::pack_dir(rootfs, &mut layer).unwrap();
    let mut config = config;
    config["architecture"] = json!(herd_image::host_architecture());
    config["os"] = json!("linux");
    config["rootfs"] = json!({"type": "layers", "diff_ids": [sha256(&layer)]});
    let config = json_bytes(&config);
    let config_name = format!("{}.json", hex_of(&sha256(&config)));
    let layer_name = format!("{}/layer.tar", hex_of(&sha256(&layer)));
    let mut files = Files::default();
    files.add(&config_name, config);
    files.add(&layer_name, layer);
    files.add(
        "manifest.json",
        json_bytes(&json!([{"Config": config_name, "RepoTags": ["app:latest"], "Layers": [layer_name]}])),
    );
    files.tar()
}

fn an_image_config_is_honoured_and_overridden(cluster: &Cluster) {
    let rootfs = rootfs_with_users(cluster.dir.path());
    let says = r#"echo "$(id -un):$(id -gn) in $(pwd) says $GREETING""#;
    let archive = docker_save(
        &rootfs,
        json!({"config": {
            "User": "app",
            "WorkingDir": "/data",
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": [format!("{says}; exec sleep 600")],
            "Env": ["PATH=/bin", "GREETING=hello"],
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}
        }}),
    );
    let path = cluster.dir.path().join("app.tar");
    std::fs::write(&path, archive).unwrap();
    cluster.ok(&["image", "import", "app", path.to_str().unwrap()]);

    // As the image says: its user (in its groups), working directory (made), environment.
    cluster.ok(&["run", "--name", "plain", "app"]);
    let log = cluster.wait_log("plain", "says", T);
    assert_eq!(log, "app:app in /data says hello\n");
    let c = cluster.container("plain");
    assert_eq!((c.user.as_str(), c.working_dir.as_str()), ("app", "/data"));
    assert_eq!(c.exposed_ports, ["53/udp", "8080/tcp"]);
    assert_eq!(credentials(c.pid.unwrap()).0, "1000 1000 1000 1000");
    let shown = cluster.ok(&["inspect", "plain"]);
    assert!(shown.contains("Exposed:      53/udp, 8080/tcp\n"), "{shown}");
    assert!(shown.contains("Ports:        -\n"), "exposed ports are not published: {shown}");

    // Overridden: user and group, working directory, environment; the command replaces Cmd
    // and the entrypoint stays.
    cluster.ok(&[
        "run",
        "--name",
        "over",
        "--user",
        "root:staff",
        "--workdir",
        "/tmp",
        "-e",
        "GREETING=bye",
        "app",
        "--",
        says,
    ]);
    cluster.wait_state("over", "exited", T);
    assert_eq!(cluster.ok(&["logs", "over"]), "root:staff in /tmp says bye\n");

    // --entrypoint drops the image's Cmd: only the arguments given follow it.
    cluster.ok(&["run", "--name", "ep", "--entrypoint", "/bin/echo", "app", "--", "only", "these"]);
    cluster.wait_state("ep", "exited", T);
    assert_eq!(cluster.ok(&["logs", "ep"]), "only these\n");
    cluster.ok(&["run", "--name", "epalone", "--entrypoint", "/bin/echo", "app"]);
    cluster.wait_state("epalone", "exited", T);
    assert_eq!(cluster.ok(&["logs", "epalone"]), "\n", "the image's Cmd is not passed");
    // --entrypoint "" clears it: the command runs alone (as the image's user).
    cluster.ok(&["run", "--name", "noep", "--entrypoint", "", "app", "--", "id", "-u"]);
    cluster.wait_state("noep", "exited", T);
    assert_eq!(cluster.ok(&["logs", "noep"]), "1000\n");
    let err = cluster.fails(&["run", "--name", "nothing", "--entrypoint", "", "app"]);
    assert!(err.contains("no command"), "{err}");
}

/// `(time, line)` of each line `herd logs -t ARGS` prints.
fn timed_lines(cluster: &Cluster, args: &[&str]) -> Vec<(String, String)> {
    let mut all = vec!["logs", "-t"];
    all.extend_from_slice(args);
    cluster
        .ok(&all)
        .lines()
        .map(|l| {
            let (t, line) = l.split_once(' ').unwrap_or_else(|| panic!("no timestamp in {l:?}"));
            (t.to_string(), line.to_string())
        })
        .collect()
}

fn millis_of(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
}

#[test]
fn logs_tail_and_since() {
    let cluster = Cluster::up(62, 1);
    cluster.import_busybox();

    // 3000 lines of about 110 bytes in files of 64 KiB: the tail spans several of them.
    let pad = "x".repeat(60);
    let script = format!("i=1; while [ $i -le 3000 ]; do echo \"line $i {pad}\"; i=$((i+1)); done");
    cluster.ok(&[
        "run",
        "--name",
        "fixed",
        "--log-opt",
        "max-size=64k",
        "--log-opt",
        "max-file=5",
        "busybox",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    cluster.wait_state("fixed", "exited", T);
    let numbers = |out: &str| -> Vec<u32> {
        out.lines().map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap()).collect()
    };
    let whole = cluster.herd(&["logs", "fixed"]);
    assert!(String::from_utf8_lossy(&whole.stderr).contains("rotated away"), "the log rotated");
    let kept = numbers(&String::from_utf8_lossy(&whole.stdout));
    assert_eq!(*kept.last().unwrap(), 3000);
    assert!(kept.len() > 2000 && kept.len() < 3000, "{} lines kept", kept.len());
    assert_eq!(numbers(&cluster.ok(&["logs", "--tail", "5", "fixed"])), (2996..=3000).collect::<Vec<_>>());
    assert_eq!(numbers(&cluster.ok(&["logs", "-n", "2000", "fixed"])), (1001..=3000).collect::<Vec<_>>());
    assert_eq!(cluster.ok(&["logs", "--tail", "0", "fixed"]), "");
    let all = cluster.herd(&["logs", "--tail", "all", "fixed"]);
    assert_eq!(numbers(&String::from_utf8_lossy(&all.stdout)), kept);
    assert_eq!(numbers(&cluster.ok(&["logs", "--tail", "100000", "fixed"])), kept);
    let err = cluster.fails(&["logs", "--tail", "ten", "fixed"]);
    assert!(err.contains("invalid number of lines"), "{err}");

    // A counter that goes on: --since a line's own time starts at that line.
    cluster.ok(&[
        "run",
        "--name",
        "counter",
        "busybox",
        "--",
        "sh",
        "-c",
        "i=0; while true; do echo \"n $i\"; i=$((i+1)); sleep 0.05; done",
    ]);
    let before = wait_for("40 lines", T, || {
        let lines = timed_lines(&cluster, &["counter"]);
        (lines.len() >= 40).then_some(lines)
    });
    let (since, _) = before[20].clone();
    let from = timed_lines(&cluster, &["--since", &since, "counter"]);
    let after = timed_lines(&cluster, &["counter"]);
    let expected: Vec<&(String, String)> = after.iter().filter(|(t, _)| millis_of(t) >= millis_of(&since)).collect();
    assert!(!from.is_empty());
    assert_eq!(from.iter().collect::<Vec<_>>(), expected[..from.len()], "--since {since}");
    assert!(from[0].1 == before[20].1 || millis_of(&from[0].0) == millis_of(&since), "{:?}", from[0]);
    // As a duration, and as a Unix timestamp.
    let everything = cluster.ok(&["logs", "--since", "1h", "counter"]);
    assert!(everything.starts_with("n 0\nn 1\n"), "{everything}");
    let future = (chrono::Utc::now().timestamp() + 3600).to_string();
    assert_eq!(cluster.ok(&["logs", "--since", &future, "counter"]), "");
    let err = cluster.fails(&["logs", "--since", "yesterday", "counter"]);
    assert!(err.contains("invalid time \"yesterday\""), "{err}");

    // Following from the tail: the last lines, then new ones, none missing.
    let mut follow = cluster
        .command(&["logs", "-f", "--tail", "2", "counter"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("herd logs -f");
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let followed: Vec<u64> =
        (0..10).map(|_| lines.next().unwrap().unwrap().strip_prefix("n ").unwrap().parse().unwrap()).collect();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(followed, (followed[0]..followed[0] + 10).collect::<Vec<_>>());
    assert!(followed[0] >= 38, "it started at the tail, not at the beginning: {followed:?}");
}

/// The number of boots the container's web server reports (`/boots` in its writable layer).
fn boots(ip: std::net::Ipv4Addr) -> Option<usize> {
    let reply = tcp_exchange(ip, 8080, "GET /boots HTTP/1.0\r\n\r\n").ok()?;
    let body = reply.split_once("\r\n\r\n")?.1;
    Some(body.lines().filter(|l| *l == "boot").count())
}

fn wait_boots(cluster: &Cluster, name: &str, n: usize) -> herd_proto::api::ContainerInfo {
    wait_for(&format!("{name} to serve {n} boots"), T, || {
        let c = cluster.container(name);
        (c.state == ContainerState::Running && boots(c.ip) == Some(n)).then_some(c)
    })
}

#[test]
fn start_and_restart_keep_the_files_and_the_address() {
    let cluster = Cluster::up(63, 1);
    cluster.import_busybox();
    let serve = "mkdir -p /www; echo boot >> /www/boots; exec httpd -f -p 8080 -h /www";
    cluster.ok(&["run", "--name", "web", "busybox", "--", "sh", "-c", serve]);
    let first = wait_boots(&cluster, "web", 1);

    // Stopped and started: the same container (id, address), its files kept, a new process.
    cluster.ok(&["stop", "-t", "1", "web"]);
    cluster.wait_state("web", "exited", T);
    assert_eq!(cluster.ok(&["start", "web"]), "web\n");
    let second = wait_boots(&cluster, "web", 2);
    assert_eq!((&second.id, second.ip, &second.node), (&first.id, first.ip, &first.node));
    assert_ne!(second.pid, first.pid);
    assert_eq!(second.desired, herd_proto::state::Desired::Running);
    // Starting a running container changes nothing.
    cluster.ok(&["start", "web"]);
    assert_eq!(cluster.container("web").pid, second.pid);
    assert_eq!(boots(second.ip), Some(2));

    // Restarted: stopped, then started.
    cluster.ok(&["restart", "-t", "1", "web"]);
    let third = wait_boots(&cluster, "web", 3);
    assert_eq!((&third.id, third.ip), (&first.id, first.ip));
    assert_ne!(third.pid, second.pid);
    let events = cluster.ok(&["events"]);
    assert!(events.contains("container restart web"), "{events}");

    // A container that ended on its own starts again; its log goes on.
    cluster.ok(&["run", "--name", "once", "busybox", "--", "sh", "-c", "echo boot >> /boots; wc -l < /boots"]);
    cluster.wait_state("once", "exited", T);
    cluster.ok(&["start", "once"]);
    wait_for("the second run's output", T, || {
        let log = cluster.ok(&["logs", "once"]);
        (log.split_whitespace().collect::<Vec<_>>() == ["1", "2"]).then_some(())
    });

    // A checkpointed container is continued by restore, not started afresh.
    cluster.ok(&["checkpoint", "web"]);
    let err = cluster.fails(&["start", "web"]);
    assert!(err.contains("container web is checkpointed (ck1 on n1): herd restore web continues it"), "{err}");
    let err = cluster.fails(&["restart", "web"]);
    assert!(err.contains("herd restore web"), "{err}");
    cluster.ok(&["restore", "web"]);
    let restored = wait_boots(&cluster, "web", 3);
    assert_eq!(restored.ip, first.ip);

    // Its node down: said so, and it starts once the node is back.
    cluster.ok(&["stop", "-t", "1", "web"]);
    let stopped = cluster.stop_agent("n1");
    wait_for("n1 to be marked down", T, || {
        let nodes: Vec<herd_proto::api::NodeInfo> = cluster.json(&["nodes"]);
        nodes.iter().any(|n| n.name == "n1" && n.state == herd_proto::api::NodeState::Down).then_some(())
    });
    let err = cluster.fails(&["start", "web"]);
    assert!(err.contains("node n1 is down") && err.contains("herd start web once the node is back"), "{err}");
    stopped.resume();
    wait_for("n1 to be ready", T, || {
        let nodes: Vec<herd_proto::api::NodeInfo> = cluster.json(&["nodes"]);
        nodes.iter().any(|n| n.name == "n1" && n.state == herd_proto::api::NodeState::Ready).then_some(())
    });
    cluster.ok(&["start", "web"]);
    let fourth = wait_boots(&cluster, "web", 4);
    assert_eq!((&fourth.id, fourth.ip), (&first.id, first.ip));

    let err = cluster.fails(&["start", "nosuch"]);
    assert!(err.contains("no such container: nosuch"), "{err}");
}

const APPS: &str = "/var/cache/herd-setup/apps";

/// `select ...` through the host's psql (from the clients root filesystem) at `ip`.
fn psql(ip: std::net::Ipv4Addr, sql: &str) -> Result<String, String> {
    let out = Command::new("chroot")
        .arg(format!("{APPS}/clients"))
        .args(["/usr/lib/postgresql/15/bin/psql", "-h", &ip.to_string(), "-U", "postgres", "-At", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// The `postgres` user's uid and gid, and the gids of the groups that list it, from the image's
/// own files.
fn postgres_ids(tar: &Path) -> (u32, u32, Vec<u32>) {
    let file = |path: &str| {
        let out = Command::new("tar").arg("-xOf").arg(tar).arg(path).output().unwrap();
        assert!(out.status.success(), "{path} in {}", tar.display());
        String::from_utf8(out.stdout).unwrap()
    };
    let passwd = file("./etc/passwd");
    let fields: Vec<&str> = passwd.lines().find(|l| l.starts_with("postgres:")).unwrap().split(':').collect();
    let (uid, gid) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    let groups = file("./etc/group")
        .lines()
        .filter(|l| l.split(':').nth(3).is_some_and(|m| m.split(',').any(|u| u == "postgres")))
        .map(|l| l.split(':').nth(2).unwrap().parse().unwrap())
        .collect();
    (uid, gid, groups)
}

#[test]
fn postgres_runs_as_its_user_serves_and_moves() {
    let image = PathBuf::from(format!("{APPS}/postgres.tar"));
    assert!(
        image.exists() && Path::new(APPS).join("clients/usr/lib/postgresql/15/bin/psql").exists(),
        "{} and its clients are needed: run scripts/apps-images.sh",
        image.display()
    );
    let cluster = Cluster::up(64, 2);
    cluster.ok(&["image", "import", "postgres", image.to_str().unwrap()]);
    cluster.ok(&[
        "run",
        "--name",
        "pg",
        "--node",
        "n1",
        "--user",
        "postgres",
        "postgres",
        "--",
        "/usr/lib/postgresql/15/bin/postgres",
        "-D",
        "/var/lib/postgresql/15/main",
        "-c",
        "config_file=/etc/postgresql/15/main/postgresql.conf",
    ]);
    let c = cluster.container("pg");
    let answers = |ip| wait_for("PostgreSQL to answer", T, || psql(ip, "select 1").ok().filter(|r| r == "1"));
    answers(c.ip);

    // It runs as postgres, with its groups, on the host.
    let (uid, gid, groups) = postgres_ids(&image);
    assert_ne!(uid, 0);
    let expected_groups = {
        let mut g = vec![gid];
        g.extend(groups);
        g.sort();
        g.dedup();
        g.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
    };
    let check_credentials = |pid: u32| {
        let (u, g, gs) = credentials(pid);
        assert_eq!(u, format!("{uid} {uid} {uid} {uid}"));
        assert_eq!(g, format!("{gid} {gid} {gid} {gid}"));
        assert_eq!(gs, expected_groups);
    };
    check_credentials(c.pid.unwrap());
    assert_eq!(psql(c.ip, "select current_user").unwrap(), "postgres");

    psql(c.ip, "create table t (n int); insert into t select generate_series(1, 1000)").unwrap();
    // Checkpointed and restored, then migrated: the data and the user stay.
    cluster.ok(&["checkpoint", "pg"]);
    cluster.ok(&["restore", "pg"]);
    let c = cluster.wait_state("pg", "running", T);
    assert_eq!(answers(c.ip), "1");
    assert_eq!(psql(c.ip, "select sum(n) from t").unwrap(), "500500");
    cluster.ok(&["migrate", "pg", "--to", "n2"]);
    let c = cluster.wait_runs_only_on("pg", "n2", T);
    assert_eq!(psql(c.ip, "select sum(n) from t").unwrap(), "500500");
    check_credentials(c.pid.unwrap());

    // Stopped and started: the same data, as postgres again.
    cluster.ok(&["restart", "pg"]);
    let c = cluster.wait_state("pg", "running", T);
    answers(c.ip);
    assert_eq!(psql(c.ip, "select count(*) from t").unwrap(), "1000");
    check_credentials(c.pid.unwrap());
}
