//! NATS subject, key-value bucket, object store and stream names.
//!
//! Every name is derived from a cluster-wide prefix so several clusters can share one broker.

/// Bucket of [`crate::state::NodeRecord`], keyed by node name; written by each node.
pub const NODES_BUCKET: &str = "herd-nodes";
/// Bucket of [`crate::state::ImageRecord`], keyed by image name; written by the Control node.
pub const IMAGES_BUCKET: &str = "herd-images";
/// Bucket of [`crate::state::ContainerRecord`], keyed by container name; written by the Control node.
pub const CONTAINERS_BUCKET: &str = "herd-containers";
/// Bucket of [`crate::state::ContainerStatus`], keyed by [`status_key`] (node, then container
/// id): each node writes the statuses of the containers it runs under its own name, and its
/// broker user may write no other (see [`node_permissions`]).
pub const STATUS_BUCKET: &str = "herd-status";
/// Bucket of [`crate::migration::MigrationRecord`], keyed by migration id; written by the Control node.
pub const MIGRATIONS_BUCKET: &str = "herd-migrations";
/// Bucket of [`crate::state::NodeSettings`] (operator labels, drain), keyed by node name;
/// written by the Control node.
pub const NODE_SETTINGS_BUCKET: &str = "herd-node-settings";
/// Bucket of [`crate::policy::StoredPolicy`] (the policy `herd policy set` chose), one key
/// [`POLICY_KEY`]; written by the Control node.
pub const POLICY_BUCKET: &str = "herd-policy";
/// The key of the policy setting in [`POLICY_BUCKET`].
pub const POLICY_KEY: &str = "current";
/// Bucket of the Control replicas' lease ([`LEASE_KEY`]); see [`crate::control`].
pub const CONTROL_BUCKET: &str = "herd-control";
/// The key of the [`crate::control::LeaderLease`] in [`CONTROL_BUCKET`].
pub const LEASE_KEY: &str = "leader";

/// Bucket of the Control replicas' [`crate::control::ReplicaReport`]s, keyed by
/// [`replica_key`]; each replica writes its own.
pub const REPLICAS_BUCKET: &str = "herd-control-replicas";
/// Join tokens ([`crate::join::JoinTokenRecord`]), by id.
pub const JOIN_TOKENS_BUCKET: &str = "herd-join-tokens";
/// Nodes that joined with a token and may connect ([`crate::join::MemberRecord`]), by name.
pub const MEMBERS_BUCKET: &str = "herd-members";

/// The key of replica `name`'s [`crate::control::ReplicaReport`] in [`REPLICAS_BUCKET`].
pub fn replica_key(name: &str) -> String {
    format!("replica.{name}")
}

/// Object store holding image layer blobs, named by digest (`sha256:<hex>`).
pub const LAYERS_STORE: &str = "herd-layers";
/// Object store carrying checkpoints (and container logs) between nodes, and between a node
/// and the Control node for `--image-dir`. Objects are transient: whoever asked for one
/// deletes it once it has been read, and the store drops leftovers after
/// [`CHECKPOINTS_STORE_MAX_AGE_SECS`].
pub const CHECKPOINTS_STORE: &str = "herd-checkpoints";
/// Object store of the versions checkpoint tickers keep (see [`crate::ha`]): kept until
/// retention or the container's removal deletes them.
pub const VERSIONS_STORE: &str = "herd-versions";
/// How long a transfer object may stay in [`CHECKPOINTS_STORE`].
pub const CHECKPOINTS_STORE_MAX_AGE_SECS: u64 = 6 * 3600;
/// Chunk size of transfer objects (below the broker's default 1 MB message limit).
pub const CHECKPOINTS_CHUNK: usize = 512 << 10;
/// JetStream stream of [`crate::api::Event`]s.
pub const EVENTS_STREAM: &str = "HERD_EVENTS";
/// Subjects captured by [`EVENTS_STREAM`].
pub const EVENTS_SUBJECTS: &str = "herd.events.>";

/// Subject a node agent serves [`crate::node::NodeRequest`]s on.
pub fn node_rpc(node: &str) -> String {
    format!("herd.node.{node}.rpc")
}

/// Subject a node publishes its [`crate::node::Heartbeat`]s on.
pub fn heartbeat(node: &str) -> String {
    format!("herd.hb.{node}")
}

/// Wildcard matching every node's heartbeat.
pub const HEARTBEAT_ALL: &str = "herd.hb.*";

/// Subject a node publishes its monitoring batches on (`herd_metrics::sample::Batch`).
pub fn metrics(node: &str) -> String {
    format!("herd.metrics.{node}")
}

/// Wildcard matching every node's monitoring batches.
pub const METRICS_ALL: &str = "herd.metrics.*";

/// Subject an event of the given kind is published on.
pub fn event(kind: &str) -> String {
    format!("herd.events.{kind}")
}

/// The key of the status that node `node` publishes for container `id` in [`STATUS_BUCKET`].
pub fn status_key(node: &str, id: &str) -> String {
    format!("{node}.{id}")
}

/// The node and the container id of a [`status_key`]; `None` for any other key.
pub fn parse_status_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('.').filter(|(node, id)| !node.is_empty() && !id.is_empty() && !id.contains('.'))
}

/// Subject the source node publishes a migration's [`crate::migration::Progress`] on.
pub fn migration_progress(migration: &str) -> String {
    format!("herd.migration.{migration}.progress")
}

/// What one Compute node's broker user may do: least privilege (see
/// `docs/design/threat-model.md`). A node publishes its own heartbeats, samples and node
/// record, the statuses of containers and the progress of migrations, checkpoints and
/// versions; it reads through the JetStream API; it answers requests sent to it (the
/// server's `allow_responses`). It may not send a node request, write the Control node's
/// buckets or another node's record, publish events, or delete, change or purge the cluster's
/// streams. Subjects are NATS subjects, wildcards included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePermissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
}

/// The broker permissions of node `name` (see [`NodePermissions`]).
pub fn node_permissions(name: &str) -> NodePermissions {
    let publish_allow = vec![
        heartbeat(name),
        metrics(name),
        "herd.lease.ping".to_string(),
        migration_progress("*"),
        // The JetStream API, its acknowledgements and flow control: reads, watches, writes.
        "$JS.API.>".to_string(),
        "$JS.ACK.>".to_string(),
        "$JS.FC.>".to_string(),
        format!("$KV.{NODES_BUCKET}.{name}"),
        format!("$KV.{STATUS_BUCKET}.{name}.>"),
        format!("$O.{CHECKPOINTS_STORE}.>"),
        format!("$O.{VERSIONS_STORE}.>"),
    ];
    let mut publish_deny = vec![
        "$JS.API.STREAM.DELETE.>".to_string(),
        "$JS.API.STREAM.UPDATE.>".to_string(),
        "$JS.API.STREAM.MSG.DELETE.>".to_string(),
    ];
    // Purging is how an object's chunks go (checkpoints and versions); no other stream is
    // the node's to purge.
    for bucket in [
        NODES_BUCKET,
        IMAGES_BUCKET,
        CONTAINERS_BUCKET,
        STATUS_BUCKET,
        MIGRATIONS_BUCKET,
        NODE_SETTINGS_BUCKET,
        POLICY_BUCKET,
        CONTROL_BUCKET,
        REPLICAS_BUCKET,
        JOIN_TOKENS_BUCKET,
        MEMBERS_BUCKET,
    ] {
        publish_deny.push(format!("$JS.API.STREAM.PURGE.KV_{bucket}"));
    }
    publish_deny.push(format!("$JS.API.STREAM.PURGE.OBJ_{LAYERS_STORE}"));
    publish_deny.push(format!("$JS.API.STREAM.PURGE.{EVENTS_STREAM}"));
    NodePermissions { publish_allow, publish_deny, subscribe_allow: vec![node_rpc(name), "_INBOX.>".to_string()] }
}

#[cfg(test)]
mod permission_tests {
    use super::*;

    #[test]
    fn a_node_may_publish_its_own_subjects_and_none_of_the_control_nodes() {
        let p = node_permissions("n1");
        assert!(p.publish_allow.contains(&"herd.hb.n1".to_string()));
        assert!(p.publish_allow.contains(&"$KV.herd-nodes.n1".to_string()));
        for forbidden in ["herd.hb.n2", "$KV.herd-nodes.n2", "herd.node.n2.rpc", "herd.events.container"] {
            assert!(!p.publish_allow.iter().any(|a| a == forbidden), "{forbidden}");
        }
        assert!(!p.publish_allow.iter().any(|a| a.contains(CONTAINERS_BUCKET) || a.contains(CONTROL_BUCKET)));
        assert!(p.publish_deny.contains(&"$JS.API.STREAM.PURGE.KV_herd-containers".to_string()));
        assert_eq!(p.subscribe_allow, ["herd.node.n1.rpc", "_INBOX.>"]);
        // Statuses: under its own name only.
        assert!(p.publish_allow.contains(&format!("$KV.herd-status.{}", status_key("n1", ">"))));
        assert!(!p.publish_allow.iter().any(|a| a == "$KV.herd-status.>"));
    }

    #[test]
    fn status_keys_name_the_node_and_the_container() {
        let key = status_key("n1", "4f2a");
        assert_eq!(key, "n1.4f2a");
        assert_eq!(parse_status_key(&key), Some(("n1", "4f2a")));
        for bad in ["4f2a", ".4f2a", "n1.", "n1.a.b"] {
            assert_eq!(parse_status_key(bad), None, "{bad}");
        }
    }
}
