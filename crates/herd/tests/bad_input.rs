//! Bad input gets one clear error and changes nothing.

mod common;

use std::time::Duration;

use common::Cluster;
use herd_proto::api::ContainerInfo;
use herd_proto::state::ImageRecord;

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let cluster = Cluster::up(2, 2);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "keep", "busybox", "--", "sleep", "3600"]);
    cluster.wait_state("keep", "running", Duration::from_secs(30));
    let before: Vec<ContainerInfo> = cluster.json(&["ps", "-a"]);

    let cases: &[(&[&str], &str)] = &[
        (&["run", "--memory", "12x", "busybox"], "invalid memory size"),
        (&["run", "--cpus", "zero", "busybox"], "invalid CPU count"),
        (&["run", "--env", "NOVALUE", "busybox"], "expected KEY=VALUE"),
        (&["run", "nosuchimage"], "no such image: nosuchimage:latest"),
        (&["run", "--node", "n9", "busybox", "--", "true"], "no such node: n9"),
        (&["run", "--name", "keep", "busybox", "--", "true"], "already in use"),
        (&["run", "--name", "bad name", "busybox", "--", "true"], "invalid container name"),
        (&["run", "--memory", "1m", "busybox", "--", "true"], "below the minimum of 6MiB"),
        (&["run", "--memory", "100t", "busybox", "--", "true"], "not enough memory"),
        (&["run", "busybox"], "has no command"),
        (&["run", "--name", "nocmd", "busybox", "--", "/no/such/binary"], "no/such/binary"),
        (&["inspect", "ghost"], "no such container: ghost"),
        (&["stop", "ghost"], "no such container: ghost"),
        (&["restore", "keep"], "is running"),
        (&["image", "rm", "busybox"], "is used by keep"),
        (&["image", "rm", "ghost"], "no such image"),
    ];
    for (args, want) in cases {
        let err = cluster.fails(args);
        assert!(err.contains(want), "herd {}: expected {want:?} in {err:?}", args.join(" "));
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "herd {}: one error line expected: {err}", args.join(" "));
    }

    // Corrupt or missing image archives.
    let garbage = cluster.dir.path().join("garbage.tar");
    std::fs::write(&garbage, b"this is not a tar archive at all, just some bytes that go on and on".repeat(20))
        .unwrap();
    let err = cluster.fails(&["image", "import", "broken", garbage.to_str().unwrap()]);
    assert!(err.contains("cannot import broken:latest"), "{err}");
    let err = cluster.fails(&["image", "import", "broken", "/no/such/path"]);
    assert!(err.contains("cannot read /no/such/path"), "{err}");
    let images: Vec<ImageRecord> = cluster.json(&["image", "ls"]);
    assert_eq!(images.len(), 1, "{images:?}");

    // Nothing changed: same containers, same states, nothing half-created on the nodes.
    let after: Vec<ContainerInfo> = cluster.json(&["ps", "-a"]);
    assert_eq!(before.len(), after.len(), "{after:?}");
    assert_eq!(after[0].name, "keep");
    assert_eq!(after[0].state, before[0].state);
    for node in ["n1", "n2"] {
        let dirs = std::fs::read_dir(cluster.data_dir.join(format!("nodes/{node}/containers"))).unwrap().count();
        let expected = usize::from(after[0].node == node);
        assert_eq!(dirs, expected, "{node} holds leftovers");
    }

    // The broker serves no plain-text client, with or without credentials: it asks for TLS
    // and never answers the PING (tests/broker_permissions.rs shows the refusals over TLS).
    let broker = std::net::Ipv4Addr::new(10, 99, 2, 1);
    let reply = common::tcp_exchange(broker, 17402, "CONNECT {\"verbose\":false}\r\nPING\r\n").unwrap_or_default();
    assert!(
        reply.contains("\"tls_required\":true") && !reply.contains("PONG"),
        "the broker served an anonymous plain-text client: {reply:?}"
    );

    // A wrong token is refused.
    let mut cfg = std::fs::read_to_string(&cluster.config).unwrap();
    let token_line = cfg.lines().find(|l| l.starts_with("token")).unwrap().to_string();
    cfg = cfg.replace(&token_line, "token = \"wrong-token-wrong-token\"");
    let wrong = cluster.dir.path().join("wrong.toml");
    std::fs::write(&wrong, cfg).unwrap();
    let out = cluster.command(&["--config", wrong.to_str().unwrap(), "ps"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong API token"));
}
