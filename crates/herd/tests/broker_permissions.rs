//! Least privilege on the broker: a Compute node's credentials (`herd up` makes one user per
//! node) are refused for every action that is not the node's own. The node cannot send node
//! requests, write the Control node's buckets, another node's record or another node's
//! statuses, publish events, or delete or purge the cluster's streams. The rest of the suite shows what a node may do,
//! since every node runs with these permissions.

mod common;

use std::time::Duration;

use common::Cluster;
use herd_broker::async_nats;

const T: Duration = Duration::from_secs(60);

#[test]
fn a_nodes_credentials_are_refused_for_what_is_not_its_own() {
    let cluster = Cluster::up(88, 2);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "web", "--node", "n1", "busybox", "--", "sleep", "600"]);
    let id = cluster.wait_state("web", "running", T).id;
    let password = std::fs::read_to_string(cluster.run_dir().join("secrets/broker-n1")).unwrap();
    let url = cluster.up_state().layout.broker_url();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (tx, mut errors) = tokio::sync::mpsc::unbounded_channel::<String>();
        let tls = cluster.tls_files("n1");
        let client = async_nats::ConnectOptions::with_user_and_password("n1".into(), password.trim().into())
            .require_tls(true)
            .add_root_certificates(tls.ca.clone())
            .add_client_certificate(tls.cert.clone(), tls.key.clone())
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(url.as_str())
            .await
            .expect("n1's credentials connect");

        // Each refused with a permissions violation that names the subject.
        let forbidden = [
            "herd.node.n2.rpc".to_string(),
            "herd.hb.n2".to_string(),
            "herd.events.container".to_string(),
            "$KV.herd-containers.web".to_string(),
            "$KV.herd-nodes.n2".to_string(),
            // Another node's status, or a status outside any node's keys: the running
            // container's here, which n1 could otherwise mark exited as n2.
            format!("$KV.herd-status.n2.{id}"),
            format!("$KV.herd-status.{id}"),
            "$KV.herd-migrations.m1".to_string(),
            "$KV.herd-control.leader".to_string(),
            "$O.herd-layers.C.x".to_string(),
            "$JS.API.STREAM.DELETE.KV_herd-containers".to_string(),
            "$JS.API.STREAM.PURGE.KV_herd-status".to_string(),
            "$JS.API.STREAM.MSG.DELETE.KV_herd-status".to_string(),
        ];
        for subject in &forbidden {
            client.publish(subject.clone(), "x".into()).await.unwrap();
            client.flush().await.unwrap();
            let said = tokio::time::timeout(Duration::from_secs(5), errors.recv())
                .await
                .unwrap_or_else(|_| panic!("publishing to {subject} as n1 was not refused"))
                .unwrap();
            assert!(
                said.to_lowercase().contains("permissions violation") && said.contains(subject.as_str()),
                "{subject}: {said}"
            );
        }
        for subject in ["herd.node.n2.rpc", "herd.hb.*"] {
            let _sub = client.subscribe(subject).await.unwrap();
            client.flush().await.unwrap();
            let said = tokio::time::timeout(Duration::from_secs(5), errors.recv())
                .await
                .unwrap_or_else(|_| panic!("subscribing to {subject} as n1 was not refused"))
                .unwrap();
            assert!(said.to_lowercase().contains("permissions violation"), "{subject}: {said}");
        }

        // What is the node's own still works: reading the cluster state.
        let js = async_nats::jetstream::new(client.clone());
        let containers = js.get_key_value("herd-containers").await.unwrap();
        assert!(containers.get("web").await.unwrap().is_some(), "n1 reads the container records");
        // And writing its own status of its container.
        let statuses = js.get_key_value("herd-status").await.unwrap();
        let key = format!("n1.{id}");
        let own = statuses.entry(key.as_str()).await.unwrap().expect("n1 published web's status");
        statuses.put(key.as_str(), own.value.clone()).await.expect("n1 writes its own status");
    });

    // The broker takes no connection without a certificate of the cluster CA, whatever the
    // password: not in plain text, not over TLS without a certificate, not with a
    // certificate of another CA. Each fails, clearly.
    let elsewhere = tempfile::tempdir().unwrap();
    let other_ca = herd_tls::ClusterCa::init(&elsewhere.path().join("ca"), "other").unwrap();
    let stranger = other_ca
        .issue_into(&herd_tls::Subject::new("n1", herd_tls::Role::Node), Duration::from_secs(3600), elsewhere.path())
        .unwrap();
    rt.block_on(async {
        let tls = cluster.tls_files("n1");
        let with_password = || {
            async_nats::ConnectOptions::with_user_and_password("n1".into(), password.trim().into())
                .connection_timeout(Duration::from_secs(5))
        };
        let attempts = [
            ("plain text", with_password()),
            ("TLS without a certificate", with_password().require_tls(true).add_root_certificates(tls.ca.clone())),
            (
                "a certificate of another CA",
                with_password()
                    .require_tls(true)
                    .add_root_certificates(tls.ca.clone())
                    .add_client_certificate(stranger.cert.clone(), stranger.key.clone()),
            ),
        ];
        for (what, options) in attempts {
            let r = tokio::time::timeout(Duration::from_secs(20), options.connect(url.as_str())).await;
            match r {
                Ok(Ok(_)) => panic!("the broker took a connection with {what}"),
                Ok(Err(e)) => eprintln!("{what}: refused: {e}"),
                Err(_) => panic!("connecting with {what} neither succeeded nor failed in 20 s"),
            }
        }
    });
    let log = std::fs::read_to_string(cluster.run_dir().join("logs/broker.log")).unwrap();
    assert!(
        log.contains("TLS handshake error") || log.contains("TLS Handshake"),
        "the broker logs refused handshakes:\n{log}"
    );

    // Nothing the refused messages asked for happened.
    let c = cluster.wait_state("web", "running", T);
    assert_eq!((c.id, c.node.as_str()), (id, "n1"));
    cluster.ok(&["nodes"]);
}
