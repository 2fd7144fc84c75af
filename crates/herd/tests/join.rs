//! Joining machines with one-time tokens, and removing them.
//!
//! `herd up --join-nodes 1` starts its last node as a machine of its own would join: `herd
//! node --join URL --token TOKEN`, with a key made on the node, no broker user, and the
//! broker admitting it through the Control node's auth callout. The test checks that the
//! joined node works like any other (a container runs and migrates to and from it), that a
//! token admits one machine once and nothing else (used, wrong, expired, of another
//! cluster), that a node certificate is not enough without membership, and that `herd nodes
//! rm` closes a node's connections and keeps it out.

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{COUNTER, Cluster, wait_for};
use herd_proto::join::JoinToken;
use herd_proto::migration::{MigrationReport, Outcome};

const T: Duration = Duration::from_secs(60);

/// `herd node --join`'s part before the agent starts: the CA checked against the token, the
/// key and the request, the certificate.
fn join(cluster: &Cluster, token: &str, name: &str, dir: &Path) -> Result<herd_node::join::Joined, String> {
    // n4 at .94, n5 at .95, ...
    let last = 90 + name.trim_start_matches('n').parse::<u8>().unwrap_or(9);
    join_at(cluster, token, name, Ipv4Addr::new(10, 99, 92, last), dir)
}

fn join_at(
    cluster: &Cluster,
    token: &str,
    name: &str,
    address: Ipv4Addr,
    dir: &Path,
) -> Result<herd_node::join::Joined, String> {
    let url = format!("https://10.99.{}.1:{}", cluster.index, 17700 + cluster.index as u32 + 10);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(herd_node::join::join_or_load(&url, Some(token), name, address, dir))
        .map(|(_, joined)| joined)
        .map_err(|e| format!("{e:#}"))
}

fn token(cluster: &Cluster, ttl: &str) -> JoinToken {
    cluster.json(&["join-token", "create", "--ttl", ttl])
}

fn log_of(cluster: &Cluster, file: &str) -> String {
    std::fs::read_to_string(cluster.run_dir().join("logs").join(file)).unwrap_or_default()
}

#[test]
fn a_node_joins_with_a_token_works_like_any_other_and_is_removed_for_good() {
    herd_tls::config::install_default_provider();
    let cluster = Cluster::up_with(92, 3, &["--join-nodes", "1"]);

    // n3 joined: its key was made on it, its certificate names it a node, and the broker has
    // no user of its own for it.
    let tls = cluster.data_dir.join("nodes/n3/tls");
    let info = herd_tls::CertInfo::read(&tls.join("n3.crt")).unwrap();
    assert_eq!((info.name.as_str(), info.role.as_deref()), ("n3", Some("node")));
    assert_eq!(std::fs::metadata(tls.join("n3.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let conf = std::fs::read_to_string(cluster.run_dir().join("nats.conf")).unwrap();
    assert!(conf.contains("auth_callout") && conf.contains("user: \"n1\""), "{conf}");
    assert!(!conf.contains("user: \"n3\""), "n3 has a broker user: {conf}");
    assert!(log_of(&cluster, "control.log").contains("admitted as node n3"));

    // It works like any other node: a container runs on it and migrates off and back, over
    // TLS checked with the certificate it got by joining.
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "c", "--node", "n3", "busybox", "--", "sh", "-c", COUNTER]);
    cluster.wait_state("c", "running", T);
    let mut seen = cluster.counts_on("c", 0, T);
    for (to, mode) in [("n1", "postcopy"), ("n3", "cold")] {
        let report: MigrationReport = cluster.json(&["migrate", "c", "--to", to, "--mode", mode]);
        assert_eq!(report.outcome, Outcome::Migrated, "{report:?}");
        assert!(report.encrypted, "{report:?}");
        seen = cluster.counts_on("c", seen, T);
    }

    // A token admits one machine, once.
    let spent = token(&cluster, "10m");
    let dir = cluster.dir.path().join("n4");
    let joined = join(&cluster, &spent.token, "n4", &dir).unwrap();
    assert_eq!(joined.name, "n4");
    let n4 = herd_tls::CertInfo::read(&dir.join("tls/n4.crt")).unwrap();
    assert_eq!(n4.ips, vec![std::net::IpAddr::from([10, 99, 92, 94])]);
    let again = join(&cluster, &spent.token, "n5", &cluster.dir.path().join("n5")).unwrap_err();
    assert!(again.contains("was used already (by node n4)"), "{again}");
    // A wrong secret, a token of another cluster (nothing is sent then), a lapsed one.
    let fresh = token(&cluster, "10m").token;
    let flip = |s: &str, at: usize| {
        let mut b = s.as_bytes().to_vec();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    };
    let wrong = join(&cluster, &flip(&fresh, fresh.len() - 1), "n5", &cluster.dir.path().join("n5")).unwrap_err();
    assert!(wrong.contains("wrong secret"), "{wrong}");
    let foreign = join(&cluster, &flip(&fresh, 6), "n5", &cluster.dir.path().join("n5")).unwrap_err();
    assert!(foreign.contains("is not the one the token names") && foreign.contains("nothing was sent"), "{foreign}");
    let short = token(&cluster, "1s");
    let expires = SystemTime::UNIX_EPOCH + Duration::from_millis(short.expires_at);
    wait_for("the short token to expire", T, || (SystemTime::now() > expires).then_some(()));
    let lapsed = join(&cluster, &short.token, "n5", &cluster.dir.path().join("n5")).unwrap_err();
    assert!(lapsed.contains("has expired"), "{lapsed}");
    // Another node's address is not given to a joining one.
    let n1_address = cluster.node_address("n1");
    let stolen = join_at(&cluster, &fresh, "n5", n1_address, &cluster.dir.path().join("n5")).unwrap_err();
    assert!(stolen.contains(&format!("address {n1_address} is node n1's")), "{stolen}");
    // The fresh token still works after the failed tries with damaged copies of it.
    join(&cluster, &fresh, "n5", &cluster.dir.path().join("n5")).unwrap();
    let control = log_of(&cluster, "control.log");
    for refusal in ["wrong secret for join token", "has expired", "was used already"] {
        assert!(control.contains(refusal), "no log line for {refusal:?}");
    }

    // A certificate of the cluster CA is not enough: the node must be a member.
    let ca = herd_tls::ClusterCa::load(&cluster.data_dir.join("ca")).unwrap();
    let outsider = ca
        .issue_into(
            &herd_tls::Subject::new("n9", herd_tls::Role::Node),
            Duration::from_secs(600),
            &cluster.dir.path().join("n9"),
        )
        .unwrap();
    let refused = broker_connects(&cluster, &outsider);
    assert!(refused.is_err(), "a node certificate without membership connected");
    wait_for("the refusal in the Control node's log", T, || {
        log_of(&cluster, "control.log").contains("node n9 is not a member of the cluster").then_some(())
    });

    // herd nodes rm: not while it has containers, not a node herd up gave a password; then
    // its connections are closed and it stays out.
    let busy = cluster.fails(&["nodes", "rm", "n3"]);
    assert!(busy.contains("still has containers (c)"), "{busy}");
    let configured = cluster.fails(&["nodes", "rm", "n1"]);
    assert!(configured.contains("did not join with a token"), "{configured}");
    cluster.ok(&["rm", "-f", "c"]);
    cluster.ok(&["nodes", "rm", "n3"]);
    let events = cluster.ok(&["events"]);
    assert!(events.contains("node n3 removed: its 2 broker connection(s) closed"), "{events}");
    wait_for("n3 to be refused when it comes back", T, || {
        log_of(&cluster, "control.log").contains("node n3 is not a member of the cluster").then_some(())
    });
    let nodes = cluster.ok(&["nodes"]);
    assert!(!nodes.contains("n3 "), "{nodes}");
    // Members that never connected go as well.
    cluster.ok(&["nodes", "rm", "n4"]);
    assert!(cluster.fails(&["nodes", "rm", "n4"]).contains("no such node: n4"));
}

/// Whether a broker connection with `files` and no user gets in.
fn broker_connects(cluster: &Cluster, files: &herd_tls::TlsFiles) -> anyhow::Result<()> {
    let mut cfg = herd_broker::BrokerConfig::new(cluster.broker_config().url, "outsider").with_tls(Some(files.clone()));
    cfg.connect_timeout = Duration::from_secs(3);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { herd_broker::Broker::connect(&cfg).await.map(|_| ()) })
}
