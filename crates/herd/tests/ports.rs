//! Published ports, shared network namespaces and named volumes on a real cluster: `-p` answers
//! at the node's address and only one container per node may hold a host port (the port filter,
//! also for migration destinations); a published port follows its container when it migrates;
//! `--network container:NAME` and `-v NAME:/path` place a container with its dependency, and
//! such groups are neither moved nor broken by a removal; bad input creates nothing.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{Cluster, tcp_exchange, wait_for};
use herd_proto::api::ContainerInfo;

const WAIT: Duration = Duration::from_secs(60);

fn names(cluster: &Cluster) -> Vec<String> {
    let list: Vec<ContainerInfo> = cluster.json(&["ps", "-a"]);
    let mut names: Vec<String> = list.into_iter().map(|c| c.name).collect();
    names.sort();
    names
}

/// A busybox web server on port 80 answering with its container's name.
fn serve(cluster: &Cluster, name: &str, extra: &[&str]) {
    let script = "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www";
    let mut args = vec!["run", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "--", "sh", "-c", script]);
    cluster.ok(&args);
}

fn get(ip: Ipv4Addr, port: u16) -> std::io::Result<String> {
    tcp_exchange(ip, port, "GET / HTTP/1.0\r\n\r\n")
}

/// Waits until `ip:port` answers with `name`'s page.
fn wait_answers(ip: Ipv4Addr, port: u16, name: &str) {
    let want = format!("hello-from-{name}");
    wait_for(&format!("{ip}:{port} to answer with {want}"), WAIT, || {
        get(ip, port).ok().filter(|body| body.contains(&want))
    });
}

#[test]
fn ports_dependencies_and_volumes_place_publish_and_follow_migration() {
    let cluster = Cluster::up(29, 2);
    cluster.import_busybox();
    let (a1, a2) = (cluster.node_address("n1"), cluster.node_address("n2"));

    // Published on the node it lands on, reachable from the host at the node's address.
    serve(&cluster, "web1", &["-p", "8080:80"]);
    let web1 = cluster.wait_state("web1", "running", WAIT);
    assert_eq!(web1.node, "n1");
    wait_answers(a1, 8080, "web1");
    assert_eq!(web1.host.ports_text(), "0.0.0.0:8080->80/tcp");
    let ps = cluster.ok(&["ps"]);
    assert!(ps.contains("0.0.0.0:8080->80/tcp"), "{ps}");
    let inspect = cluster.ok(&["inspect", "web1"]);
    assert!(inspect.contains("Ports:        0.0.0.0:8080->80/tcp"), "{inspect}");

    // The same host port goes to the node where it is free (binpack alone would pick n1).
    serve(&cluster, "web2", &["-p", "8080:80", "--strategy", "binpack"]);
    assert_eq!(cluster.wait_state("web2", "running", WAIT).node, "n2");
    wait_answers(a2, 8080, "web2");

    // No node is left: the port filter is named for every node, and nothing is created.
    let before = names(&cluster);
    let err = cluster.fails(&["run", "--name", "web3", "-p", "8080:80", "busybox", "--", "sleep", "60"]);
    for node in ["n1", "n2"] {
        assert!(err.contains(&format!("{node} (port filter: host port 0.0.0.0:8080/tcp is taken")), "{err}");
    }
    // Another protocol on the same port number is free.
    cluster.ok(&["run", "--name", "udp", "-p", "8080:80/udp", "--node", "n1", "busybox", "--", "sleep", "600"]);
    cluster.ok(&["rm", "-f", "udp"]);
    assert_eq!(names(&cluster), before);

    // A migration destination must have the port free: refused before anything moves.
    let err = cluster.fails(&["migrate", "web1", "--to", "n2"]);
    assert!(err.contains("n2 (port filter: host port 0.0.0.0:8080/tcp is taken"), "{err}");
    assert_eq!(cluster.container("web1").node, "n1");
    wait_answers(a1, 8080, "web1");

    // Once n2's port is free, the scheduler moves web1 there; the port goes with it.
    cluster.ok(&["rm", "-f", "web2"]);
    cluster.ok(&["migrate", "web1"]);
    cluster.wait_runs_only_on("web1", "n2", WAIT);
    wait_answers(a2, 8080, "web1");
    wait_for("n1:8080 to stop answering", WAIT, || get(a1, 8080).is_err().then_some(()));

    // Joining web1's network namespace puts a container on web1's node (spread would pick the
    // empty n1), where it has web1's address and reaches web1 on 127.0.0.1.
    let web1 = cluster.container("web1");
    cluster.ok(&[
        "run",
        "--name",
        "side",
        "--network",
        "container:web1",
        "busybox",
        "--",
        "sh",
        "-c",
        "ip -4 addr show eth0; wget -qO- http://127.0.0.1/; sleep 3600",
    ]);
    let side = cluster.container("side");
    assert_eq!((side.node.as_str(), side.ip), ("n2", web1.ip));
    let log = cluster.wait_log("side", "hello-from-web1", WAIT);
    assert!(log.contains(&format!("inet {}/32", web1.ip)), "{log}");
    // The group stays together: neither moves, and web1 is not removed from under side.
    let err = cluster.fails(&["migrate", "web1"]);
    assert!(err.contains("container web1 cannot move: side shares its network namespace"), "{err}");
    let err = cluster.fails(&["migrate", "side", "--to", "n1"]);
    assert!(err.contains("container side cannot move: it shares the network namespace of container web1"), "{err}");
    cluster.ok(&["stop", "-t", "1", "web1"]);
    let err = cluster.fails(&["rm", "web1"]);
    assert!(err.contains("containers side share the network namespace of web1"), "{err}");

    // A named volume: a reader lands with the writer (binpack alone would pick n2) and reads
    // what it wrote.
    cluster.ok(&[
        "run",
        "--name",
        "writer",
        "--node",
        "n1",
        "-v",
        "data:/data",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo written-by-writer > /data/f; sleep 3600",
    ]);
    cluster.wait_state("writer", "running", WAIT);
    cluster.ok(&[
        "run",
        "--name",
        "reader",
        "--strategy",
        "binpack",
        "-v",
        "data:/in:ro",
        "busybox",
        "--",
        "sh",
        "-c",
        "until [ -s /in/f ]; do sleep 0.1; done; cat /in/f; sleep 3600",
    ]);
    assert_eq!(cluster.container("reader").node, "n1");
    cluster.wait_log("reader", "written-by-writer", WAIT);
    let err = cluster.fails(&["migrate", "writer", "--to", "n2"]);
    assert!(err.contains("container writer cannot move: its volume data is also used by reader on node n1"), "{err}");
    let err = cluster.fails(&["run", "--name", "far", "--node", "n2", "-v", "data:/d", "busybox", "--", "true"]);
    assert!(err.contains("n2 (dependency filter: volume data is on n1)"), "{err}");

    // Bad input: a clear error naming the cause, and nothing created.
    let before = names(&cluster);
    let cases: &[(&[&str], &str)] = &[
        (&["-p", "0:80"], "host port 0 is out of range 1-65535"),
        (&["-p", "70000:80"], "host port 70000 is out of range 1-65535"),
        (&["-p", "abc"], "invalid port mapping \"abc\": expected [HOST_IP:]HOST_PORT:CONTAINER_PORT"),
        (&["-p", "9000:80", "-p", "9000:81"], "is given twice"),
        (&["--network", "container:missing"], "no such container: missing (--network container:missing)"),
        (&["-v", "/etc:/etc"], "bind mounts of host paths are not supported"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["run", "--name", "bad"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "--", "sleep", "60"]);
        let err = cluster.fails(&args);
        assert!(err.contains(want), "herd {}: {err}", args.join(" "));
    }
    assert_eq!(names(&cluster), before);
}
