//! A migration's listener under a flood of idle connections: hundreds of TCP connections
//! that never say their hello do not keep the real migration out, and are closed.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{COUNTER, Cluster, counted, wait_for};

const T: Duration = Duration::from_secs(90);

/// The address at which `node` waits for migration `container` from its log: the line the
/// destination writes once it is prepared ("ready to receive NAME from SOURCE at ADDR").
fn listener_address(cluster: &Cluster, node: &str, container: &str, log_from: u64) -> SocketAddr {
    let path = cluster.run_dir().join("logs").join(format!("node-{node}.log"));
    let needle = format!("ready to receive {container} from ");
    wait_for(&format!("{node} to listen for the migration of {container}"), T, || {
        let text = std::fs::read(&path).ok()?;
        let text = String::from_utf8_lossy(&text[(log_from as usize).min(text.len())..]).to_string();
        let line = text.lines().find(|l| l.contains(&needle))?;
        let after = line.split(&needle).nth(1)?.split_once(" at ")?.1;
        after.split_whitespace().next()?.parse().ok()
    })
}

#[test]
fn hundreds_of_idle_connections_neither_stop_a_migration_nor_stay_open() {
    // A long node timeout: the source's agent is held still for a few seconds below.
    let cluster = Cluster::up_with(42, 2, &["--node-timeout", "60"]);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "counter", "--node", "n1", "busybox", "--", "sh", "-c", COUNTER]);
    let seen = cluster.counts_on("counter", 0, T);

    // The source's agent is held still, so the destination waits with its listener open.
    let log = cluster.run_dir().join("logs/node-n2.log");
    let log_from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let source = cluster.stop_agent("n1");
    let mut migrate = cluster
        .command(&["migrate", "counter", "--to", "n2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listener_address(&cluster, "n2", "counter", log_from);

    // Three hundred connections that never send a byte.
    let flood_started = Instant::now();
    let mut idle: Vec<TcpStream> =
        (0..300).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()).collect();
    assert!(idle.len() >= 250, "only {} idle connections could be opened", idle.len());

    // The migration goes ahead once the source moves again.
    source.resume();
    let resumed = Instant::now();
    let status = wait_for("herd migrate to finish", T, || migrate.try_wait().unwrap());
    let mut out = String::new();
    migrate.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "the migration failed: {out}");
    // It takes about a second here; behind the idle connections it would wait until they had
    // timed out, a batch at a time (10.7 s before the listener bounded them).
    let took = resumed.elapsed();
    assert!(took < Duration::from_secs(5), "the migration was held up: it took {took:?}");
    cluster.wait_runs_only_on("counter", "n2", T);
    let seen = cluster.counts_on("counter", seen, T);
    assert!(counted(&cluster.ok(&["logs", "counter"])) >= seen);

    // Every idle connection is closed by the listener (at once beyond a peer's share, the
    // others when their time for a hello is up).
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("an idle connection was answered with {:?}", &buf[..n]),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "an idle connection stayed open: {e}"),
        }
    }
    let waited = flood_started.elapsed();
    assert!(waited < Duration::from_secs(30), "the idle connections were closed only after {waited:?}");
}
