//! The simulated runtime (`herd node --runtime sim`): Compute nodes that accept containers
//! without running them, so that one machine can hold a control plane with a thousand nodes
//! and a hundred thousand containers (`bench/scale`).
//!
//! It speaks the node protocol like the real agent: it registers each node, heartbeats, and
//! answers the Control node's requests, writing the container statuses a real node would
//! (`running` on create, `exited` on stop). Nothing is started: no process, no root
//! filesystem, no network. Requests that need a real process (checkpoint, restore, migration)
//! are refused with a message that names the simulated runtime. One process hosts any number
//! of simulated nodes over one broker connection; every node carries the label
//! `runtime=sim` so it is never mistaken for a real one.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use herd_broker::{Broker, BrokerConfig, Bucket};
use herd_proto::node::{Heartbeat, LogChunk, NodeError, NodeReply, NodeRequest, NodeResult, NodeUsage};
use herd_proto::state::{ContainerState, ContainerStatus, NodeFacts, NodeRecord, Resources};
use herd_proto::{now_millis, subjects};

/// The label every simulated node carries.
pub const RUNTIME_LABEL: (&str, &str) = ("runtime", "sim");

/// How the simulated nodes are run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The node's name, or with `nodes` > 1 the prefix of `PREFIX-0001`, `PREFIX-0002`, ...
    pub name: String,
    /// How many nodes this process simulates.
    pub nodes: usize,
    pub broker: BrokerConfig,
    pub address: Ipv4Addr,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Capacity each node offers.
    pub capacity: Resources,
    pub heartbeat: Duration,
}

impl SimConfig {
    /// The names of the simulated nodes.
    pub fn node_names(&self) -> Vec<String> {
        if self.nodes == 1 {
            return vec![self.name.clone()];
        }
        let width = self.nodes.to_string().len().max(4);
        (1..=self.nodes).map(|i| format!("{}-{i:0width$}", self.name)).collect()
    }
}

/// Containers each simulated node "runs".
#[derive(Default)]
struct SimNodes {
    running: HashMap<String, HashSet<String>>,
}

/// Runs the simulated nodes until `shutdown` completes.
pub async fn run(cfg: SimConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    anyhow::ensure!(cfg.nodes >= 1, "--sim-nodes must be at least 1");
    let names = cfg.node_names();
    for n in &names {
        herd_proto::names::validate_node_name(n).map_err(|e| anyhow::anyhow!("{}", e.0))?;
    }
    let broker = Broker::connect(&cfg.broker).await?;
    let statuses = broker.bucket::<ContainerStatus>(subjects::STATUS_BUCKET).await?;
    let nodes = broker.bucket::<NodeRecord>(subjects::NODES_BUCKET).await?;

    let mut labels = cfg.labels.clone();
    labels.insert(RUNTIME_LABEL.0.to_string(), RUNTIME_LABEL.1.to_string());
    let facts = NodeFacts {
        arch: std::env::consts::ARCH.to_string(),
        os: std::env::consts::OS.to_string(),
        kernel: "simulated".to_string(),
        runc_version: "simulated".to_string(),
        criu_version: None,
        ..Default::default()
    };
    let state = Arc::new(Mutex::new(SimNodes::default()));
    // Register every node; a few hundred puts at a time keep the broker busy without a flood.
    let records: Vec<NodeRecord> = names
        .iter()
        .map(|name| NodeRecord {
            name: name.clone(),
            address: cfg.address,
            labels: labels.clone(),
            capacity: cfg.capacity,
            facts: facts.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            registered_at: now_millis(),
        })
        .collect();
    futures::stream::iter(records.iter().map(|r| nodes.put(&r.name, r)))
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()
        .context("registering the simulated nodes")?;
    {
        let mut s = state.lock().unwrap();
        for n in &names {
            s.running.insert(n.clone(), HashSet::new());
        }
    }
    tracing::info!(
        "{} simulated node(s) registered ({} to {}), {} CPUs and {} memory each: they accept containers but run nothing",
        names.len(),
        names[0],
        names[names.len() - 1],
        herd_proto::units::Cpus(cfg.capacity.cpus_milli),
        herd_proto::units::Bytes(cfg.capacity.memory_bytes)
    );

    // One subscription for all of them: `herd.node.*.rpc`, filtered by name.
    let mut requests =
        broker.client.subscribe(subjects::node_rpc("*")).await.context("subscribing to node requests")?;
    let heartbeats = tokio::spawn(heartbeat_loop(broker.clone(), names.clone(), cfg.heartbeat, state.clone()));
    let ours: HashSet<String> = names.into_iter().collect();

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            msg = requests.next() => {
                let Some(msg) = msg else { anyhow::bail!("the broker connection closed") };
                let Some(reply) = msg.reply.clone() else { continue };
                let Some(node) = node_of_subject(&msg.subject) else { continue };
                if !ours.contains(node) {
                    continue;
                }
                let node = node.to_string();
                let (client, statuses, state) = (broker.client.clone(), statuses.clone(), state.clone());
                tokio::spawn(async move {
                    let result: NodeResult = match serde_json::from_slice::<NodeRequest>(&msg.payload) {
                        Ok(req) => handle(&node, &statuses, &state, req).await.map_err(|message| NodeError { message }),
                        Err(e) => Err(NodeError { message: format!("malformed request: {e}") }),
                    };
                    let payload = Bytes::from(serde_json::to_vec(&result).unwrap_or_default());
                    if let Err(e) = client.publish(reply, payload).await {
                        tracing::warn!("could not answer a request: {e}");
                    }
                });
            }
        }
    }
    heartbeats.abort();
    let _ = broker.client.flush().await;
    Ok(())
}

/// `herd.node.NAME.rpc` -> `NAME`.
fn node_of_subject(subject: &str) -> Option<&str> {
    subject.strip_prefix("herd.node.")?.strip_suffix(".rpc")
}

fn status(id: &str, node: &str, state: ContainerState, started_at: Option<u64>) -> ContainerStatus {
    let now = now_millis();
    ContainerStatus {
        id: id.to_string(),
        node: node.to_string(),
        state,
        pid: None,
        started_at,
        finished_at: (state == ContainerState::Exited).then_some(now),
        exit_code: (state == ContainerState::Exited).then_some(0),
        error: None,
        updated_at: now,
    }
}

async fn handle(
    node: &str,
    statuses: &Bucket<ContainerStatus>,
    state: &Mutex<SimNodes>,
    req: NodeRequest,
) -> Result<NodeReply, String> {
    let refuse = |what: &str| {
        Err(format!(
            "node {node} runs the simulated runtime (herd node --runtime sim), which runs no process: it cannot {what}"
        ))
    };
    match req {
        NodeRequest::Create { spec } => {
            crate::runtime::validate_id(&spec.id)?;
            let started_at = now_millis();
            statuses
                .put(
                    &subjects::status_key(node, &spec.id),
                    &status(&spec.id, node, ContainerState::Running, Some(started_at)),
                )
                .await
                .map_err(|e| format!("recording the status of {}: {e:#}", spec.name))?;
            state.lock().unwrap().running.entry(node.to_string()).or_default().insert(spec.id);
            Ok(NodeReply::Started { pid: 0, started_at })
        }
        NodeRequest::Stop { id, .. } => {
            crate::runtime::validate_id(&id)?;
            let was = state.lock().unwrap().running.get_mut(node).is_some_and(|s| s.remove(&id));
            if was {
                let key = subjects::status_key(node, &id);
                let started = statuses.get(&key).await.ok().flatten().and_then(|s| s.value.started_at);
                statuses
                    .put(&key, &status(&id, node, ContainerState::Exited, started))
                    .await
                    .map_err(|e| format!("recording the status of {id}: {e:#}"))?;
            }
            Ok(NodeReply::Stopped { exit_code: Some(0) })
        }
        NodeRequest::Remove { id, .. } => {
            crate::runtime::validate_id(&id)?;
            state.lock().unwrap().running.get_mut(node).map(|s| s.remove(&id));
            statuses
                .delete(&subjects::status_key(node, &id))
                .await
                .map_err(|e| format!("deleting the status of {id}: {e:#}"))?;
            Ok(NodeReply::Done)
        }
        NodeRequest::Logs { offset, .. } => {
            Ok(NodeReply::Logs(LogChunk { entries: Vec::new(), next_offset: offset, dropped: 0, finished: false }))
        }
        NodeRequest::Start { id } => {
            crate::runtime::validate_id(&id)?;
            let started_at = now_millis();
            statuses
                .put(&subjects::status_key(node, &id), &status(&id, node, ContainerState::Running, Some(started_at)))
                .await
                .map_err(|e| format!("recording the status of {id}: {e:#}"))?;
            state.lock().unwrap().running.entry(node.to_string()).or_default().insert(id);
            Ok(NodeReply::Started { pid: 0, started_at })
        }
        NodeRequest::Shutdown { .. } => Ok(NodeReply::Done),
        NodeRequest::Checkpoint { .. }
        | NodeRequest::Restore { .. }
        | NodeRequest::ExportCheckpoint { .. }
        | NodeRequest::ExportLog { .. }
        | NodeRequest::ImportCheckpoint { .. }
        | NodeRequest::DropCheckpoint { .. }
        | NodeRequest::SaveVersion { .. }
        | NodeRequest::RestoreVersion { .. } => refuse("checkpoint or restore"),
        NodeRequest::SetFenced { .. } => Ok(NodeReply::Done),
        NodeRequest::MigratePrepare { .. }
        | NodeRequest::MigrateSend { .. }
        | NodeRequest::MigrationStatus { .. }
        | NodeRequest::MigrateResolve { .. } => refuse("migrate"),
        NodeRequest::ExecPrepare { .. } => refuse("exec"),
    }
}

/// Publishes one heartbeat per simulated node every `interval`.
async fn heartbeat_loop(broker: Broker, names: Vec<String>, interval: Duration, state: Arc<Mutex<SimNodes>>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    loop {
        tick.tick().await;
        seq += 1;
        let counts: Vec<u32> = {
            let s = state.lock().unwrap();
            names.iter().map(|n| s.running.get(n).map_or(0, |c| c.len() as u32)).collect()
        };
        for (name, running) in names.iter().zip(counts) {
            let hb = Heartbeat {
                node: name.clone(),
                seq,
                time: now_millis(),
                usage: NodeUsage { containers_running: running, ..Default::default() },
            };
            if let Err(e) = broker.publish(subjects::heartbeat(name), &hb).await {
                tracing::warn!("heartbeat of {name} not sent: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_nodes_get_numbered_names_and_one_keeps_its_name() {
        let mut cfg = SimConfig {
            name: "sim".into(),
            nodes: 3,
            broker: BrokerConfig::new("nats://127.0.0.1:4222", "test"),
            address: Ipv4Addr::LOCALHOST,
            labels: Default::default(),
            capacity: Resources::default(),
            heartbeat: Duration::from_secs(1),
        };
        assert_eq!(cfg.node_names(), ["sim-0001", "sim-0002", "sim-0003"]);
        cfg.nodes = 1;
        assert_eq!(cfg.node_names(), ["sim"]);
        cfg.nodes = 12_000;
        assert_eq!(cfg.node_names()[0], "sim-00001");
    }

    #[test]
    fn request_subjects_name_their_node() {
        assert_eq!(node_of_subject(&subjects::node_rpc("sim-0042")), Some("sim-0042"));
        assert_eq!(node_of_subject("herd.hb.sim-1"), None);
    }
}
