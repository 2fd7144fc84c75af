//! PostgreSQL with its data directory on a named volume (`-v pgdata:...`), migrated cold and
//! post-copy while pgbench drives it from the host: the volume moves with it, pgbench sees no
//! failed transaction and no dropped connection, and TPC-B's balances agree afterwards.

mod common;

use std::time::Duration;

use common::apps::{
    PG_BIN, assert_balances_agree, assert_pgbench_clean, client, pgbench, psql, require_apps, run_client,
    wait_for_postgres,
};
use common::{Cluster, wait_for};
use herd_proto::migration::{MigrationReport, Outcome};

const T: Duration = Duration::from_secs(120);
const PGDATA: &str = "/var/lib/postgresql/15/main";

#[test]
fn postgresql_with_its_data_on_a_volume_migrates_under_pgbench() {
    require_apps(&["postgres"]);
    let cluster = Cluster::up(73, 2);
    cluster.import_app("postgres");
    // The volume starts empty: the data directory is made in it at the first start.
    let cmd = format!(
        "chown postgres:postgres {PGDATA} && chmod 700 {PGDATA} && \
         {{ [ -s {PGDATA}/PG_VERSION ] || runuser -u postgres -- {PG_BIN}/initdb -D {PGDATA} >/dev/null; }} && \
         runuser -u postgres -- {PG_BIN}/postgres -D {PGDATA} -c config_file=/etc/postgresql/15/main/postgresql.conf"
    );
    let volume = format!("pgdata:{PGDATA}");
    cluster.ok(&[
        "run", "--name", "db", "--node", "n1", "--memory", "1g", "-v", &volume, "postgres", "--", "sh", "-c", &cmd,
    ]);
    let ip = cluster.container("db").ip.to_string();
    cluster.wait_port(&format!("{ip}:5432"), T);
    wait_for_postgres(&ip, T);
    let on_volume = cluster.data_dir.join("nodes/n1/volumes/pgdata/PG_VERSION");
    assert!(on_volume.exists(), "the data directory is not on the volume");
    run_client(client(&format!("{PG_BIN}/pgbench")).args(["-h", &ip, "-U", "postgres", "-i", "-s", "5", "postgres"]));

    for (from, to, mode) in [("n1", "n2", "cold"), ("n2", "n1", "postcopy")] {
        let load = pgbench(&ip, 4, 20);
        std::thread::sleep(Duration::from_secs(5));
        let report: MigrationReport = cluster.json(&["migrate", "db", "--to", to, "--mode", mode]);
        assert_eq!(report.outcome, Outcome::Migrated, "{report:?}");
        assert_eq!(report.unmeasured, None, "{mode}: the source's figures are missing");
        assert!(report.volume_size > 50 << 20, "{mode}: a volume of {} bytes", report.volume_size);
        assert!(report.volume_bytes >= report.volume_size, "{mode}: {report:?}");
        eprintln!(
            "{mode}: downtime {} ms, total {} ms, volume {} bytes ({} moved), phases {:?}",
            report.downtime_ms, report.total_ms, report.volume_size, report.volume_bytes, report.phases
        );
        assert_pgbench_clean(&load.finish_ok(T), &format!("a {mode} migration"));
        assert_balances_agree(&ip, &format!("a {mode} migration"));
        assert!(!cluster.data_dir.join(format!("nodes/{from}/volumes/pgdata")).exists(), "{mode}: left on {from}");
        assert!(cluster.data_dir.join(format!("nodes/{to}/volumes/pgdata/PG_VERSION")).exists());
    }
    // The data outlives the container where it moved: a new one that mounts the volume is
    // placed there and starts from it (no initdb again).
    let before = psql(&ip, "select sum(abalance) from pgbench_accounts");
    cluster.ok(&["stop", "-t", "10", "db"]);
    cluster.ok(&["rm", "db"]);
    cluster.ok(&["run", "--name", "db2", "--memory", "1g", "-v", &volume, "postgres", "--", "sh", "-c", &cmd]);
    let db2 = cluster.wait_state("db2", "running", T);
    assert_eq!(db2.node, "n1");
    let ip = db2.ip.to_string();
    wait_for("PostgreSQL to accept queries again", T, || {
        let out =
            client(&format!("{PG_BIN}/psql")).args(["-h", &ip, "-U", "postgres", "-c", "select 1"]).output().ok()?;
        out.status.success().then_some(())
    });
    assert_eq!(psql(&ip, "select sum(abalance) from pgbench_accounts"), before);
    assert_balances_agree(&ip, "a new container on the moved volume");
}
