//! Monitoring on the Control node: the nodes' sample batches (`herd.metrics.<node>`) go into
//! a bounded in-memory [`History`] (one series per container id, so a container's series
//! follows it across migrations, and one per node), and the latest samples answer
//! `herd stats` and `GET /metrics`.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use herd_metrics::history::{History, HistoryConfig, HistoryError, QueryResult, SeriesId};
use herd_metrics::prometheus::{self, ContainerEntry};
use herd_metrics::sample::{Batch, ContainerSample, NodeSample};
use herd_proto::api::{ContainerStats, NodeState, NodeStats};
use herd_proto::state::ContainerState;

use crate::control::Control;
use crate::error::{Error, Result};

/// What the Control node knows of the cluster's samples.
pub struct Monitoring {
    history: History,
    /// Latest sample per container id, with the node that sent it.
    containers: HashMap<String, (String, ContainerSample)>,
    /// Latest sample per node.
    nodes: HashMap<String, NodeSample>,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            history: History::new(HistoryConfig::default()).expect("the default history configuration is valid"),
            containers: HashMap::new(),
            nodes: HashMap::new(),
        }
    }
}

impl Monitoring {
    /// Takes in one node's batch.
    pub fn insert(&mut self, batch: &Batch) {
        let outcome = self.history.insert_batch(batch);
        if outcome.lost_batches > 0 {
            tracing::debug!("{} monitoring batches from {} were lost", outcome.lost_batches, batch.node);
        }
        for s in &batch.containers {
            let newer = self.containers.get(&s.id).is_none_or(|(_, old)| old.ts_ms < s.ts_ms);
            if newer {
                self.containers.insert(s.id.clone(), (batch.node.clone(), s.clone()));
            }
        }
        if let Some(n) = &batch.node_sample {
            self.nodes.insert(batch.node.clone(), n.clone());
        }
    }

    /// Series `id` from `from_ms` to `to_ms`: empty for a container or node not sampled yet.
    pub(crate) fn query(&self, id: SeriesId, from_ms: u64, to_ms: u64, step_ms: Option<u64>) -> Result<QueryResult> {
        match self.history.query(&id, from_ms, to_ms, step_ms) {
            Err(HistoryError::UnknownSeries(_)) => Ok(QueryResult::empty(id, self.history.config().interval_ms)),
            r => r.map_err(|e| Error::bad_request(format!("{e}"))),
        }
    }

    /// Container `id`'s CPU use in cores, one value per sample from `from_ms` to `to_ms`,
    /// oldest first (samples without a CPU figure left out), and its latest memory use: what
    /// the policy engine evaluates.
    pub fn demand(&self, id: &str, from_ms: u64, to_ms: u64) -> (Vec<f64>, Option<u64>) {
        let cpu = match self.history.query(&SeriesId::Container(id.to_string()), from_ms, to_ms, None) {
            Ok(q) => {
                let Some(i) = q.fields.iter().position(|f| f == "cpu_cores") else { return (Vec::new(), None) };
                q.points
                    .iter()
                    .filter_map(|p| p.values.get(i).copied().flatten())
                    .filter(|v| v.is_finite())
                    .map(f64::from)
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        (cpu, self.containers.get(id).and_then(|(_, s)| s.mem_bytes))
    }

    /// Milliseconds between two samples of a series.
    pub fn interval_ms(&self) -> u64 {
        self.history.config().interval_ms
    }

    /// Marks an event (a migration, say) on container `id`'s series.
    pub fn container_event(&mut self, id: &str, ts_ms: u64, kind: &str, text: &str) {
        self.history.add_event(&SeriesId::Container(id.to_string()), ts_ms, kind, text);
    }
}

/// Feeds the nodes' batches into `monitoring` until the subscription ends (a following
/// Control replica gathers them too, so its charts go on when it leads).
pub(crate) async fn gather(monitoring: Arc<std::sync::Mutex<Monitoring>>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        match Batch::decode(&msg.payload) {
            Ok(batch) => monitoring.lock().unwrap().insert(&batch),
            Err(e) => tracing::warn!("ignoring a monitoring batch on {}: {e}", msg.subject),
        }
    }
}

impl Control {
    /// The latest figures of the running containers named in `names` (all when empty).
    pub(crate) fn stats(&self, names: &[String]) -> Result<Vec<ContainerStats>> {
        let view = self.view.read().unwrap();
        for n in names {
            if !view.containers.contains_key(n) {
                return Err(Error::not_found(format!("no such container: {n}")));
            }
        }
        let monitoring = self.monitoring.lock().unwrap();
        let mut out: Vec<ContainerStats> = view
            .containers
            .values()
            .filter(|c| if names.is_empty() { true } else { names.contains(&c.name) })
            .filter(|c| view.status_of(c).is_some_and(|s| s.state == ContainerState::Running))
            .map(|c| {
                let mut s = ContainerStats {
                    name: c.name.clone(),
                    id: c.id.clone(),
                    node: c.node.clone(),
                    image: c.image.clone(),
                    memory_limit_bytes: c.limits.memory_bytes,
                    ..Default::default()
                };
                if let Some((_, x)) = monitoring.containers.get(&c.id) {
                    let t = x.totals.unwrap_or_default();
                    s.time = Some(x.ts_ms);
                    s.cpu_cores = x.cpu_cores;
                    s.cpu_percent_of_limit = x.cpu_limit_pct;
                    s.cpu_throttled_percent = x.throttled_pct;
                    s.memory_bytes = x.mem_bytes;
                    s.memory_working_set_bytes = x.working_set;
                    s.memory_rss_bytes = x.rss;
                    s.memory_cache_bytes = x.cache;
                    s.oom_kills = x.oom_kills;
                    s.net_rx_bytes = t.net_rx_bytes;
                    s.net_tx_bytes = t.net_tx_bytes;
                    s.net_rx_bytes_per_sec = x.net_rx_bps;
                    s.net_tx_bytes_per_sec = x.net_tx_bps;
                    s.block_read_bytes = t.blk_read_bytes;
                    s.block_write_bytes = t.blk_write_bytes;
                    s.pids = x.pids;
                    s.pressure_cpu = x.psi_cpu_some10;
                    s.pressure_memory = x.psi_mem_some10;
                    s.pressure_io = x.psi_io_some10;
                }
                s
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The latest figures of every known node, by name.
    pub(crate) fn node_stats(&self) -> Vec<NodeStats> {
        let view = self.view.read().unwrap();
        let monitoring = self.monitoring.lock().unwrap();
        let mut out: Vec<NodeStats> = view
            .nodes
            .values()
            .map(|n| {
                let x = monitoring.nodes.get(&n.record.name);
                NodeStats {
                    name: n.record.name.clone(),
                    state: n.state,
                    time: x.map(|x| x.ts_ms),
                    cpus: x.and_then(|x| x.cpus),
                    cpu_user_percent: x.and_then(|x| x.cpu_user_pct),
                    cpu_system_percent: x.and_then(|x| x.cpu_system_pct),
                    cpu_iowait_percent: x.and_then(|x| x.cpu_iowait_pct),
                    cpu_steal_percent: x.and_then(|x| x.cpu_steal_pct),
                    load1: x.and_then(|x| x.load1),
                    load5: x.and_then(|x| x.load5),
                    load15: x.and_then(|x| x.load15),
                    memory_total_bytes: x.and_then(|x| x.mem_total),
                    memory_available_bytes: x.and_then(|x| x.mem_available),
                    memory_containers_bytes: x.and_then(|x| x.mem_containers),
                    disk_read_bytes_per_sec: x.and_then(|x| x.disk_read_bps),
                    disk_write_bytes_per_sec: x.and_then(|x| x.disk_write_bps),
                    net_rx_bytes_per_sec: x.and_then(|x| x.net_rx_bps),
                    net_tx_bytes_per_sec: x.and_then(|x| x.net_tx_bps),
                    pressure_cpu: x.and_then(|x| x.psi_cpu_some10),
                    pressure_memory: x.and_then(|x| x.psi_mem_some10),
                    pressure_io: x.and_then(|x| x.psi_io_some10),
                    containers_running: if n.state == NodeState::Ready { x.map_or(0, |x| x.containers) } else { 0 },
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Node `name`'s series between `from_ms` and `to_ms`, like [`Control::series`].
    pub(crate) fn node_series(
        &self,
        name: &str,
        from_ms: u64,
        to_ms: u64,
        step_ms: Option<u64>,
    ) -> Result<QueryResult> {
        if !self.view.read().unwrap().nodes.contains_key(name) {
            return Err(Error::not_found(format!("no such node: {name}")));
        }
        self.monitoring.lock().unwrap().query(SeriesId::Node(name.to_string()), from_ms, to_ms, step_ms)
    }

    /// Container `name`'s series between `from_ms` and `to_ms` (averaged into `step_ms`
    /// buckets if given), with its gaps, events and the nodes it ran on.
    pub(crate) fn series(&self, name: &str, from_ms: u64, to_ms: u64, step_ms: Option<u64>) -> Result<QueryResult> {
        let id = {
            let view = self.view.read().unwrap();
            view.containers.get(name).map(|c| c.id.clone())
        }
        .ok_or_else(|| Error::not_found(format!("no such container: {name}")))?;
        self.monitoring.lock().unwrap().query(SeriesId::Container(id), from_ms, to_ms, step_ms)
    }

    /// The latest samples in Prometheus's text format.
    pub(crate) fn prometheus_text(&self) -> String {
        let view = self.view.read().unwrap();
        let monitoring = self.monitoring.lock().unwrap();
        let running: Vec<(&String, &str)> = view
            .containers
            .values()
            .filter(|c| view.status_of(c).is_some_and(|s| s.state == ContainerState::Running))
            .map(|c| (&c.id, c.image.as_str()))
            .collect();
        let entries: Vec<ContainerEntry<'_>> = running
            .iter()
            .filter_map(|(id, image)| {
                monitoring.containers.get(*id).map(|(node, sample)| ContainerEntry { sample, node, image })
            })
            .collect();
        let nodes: Vec<&NodeSample> =
            monitoring.nodes.iter().filter(|(n, _)| view.nodes.contains_key(*n)).map(|(_, s)| s).collect();
        prometheus::render(&nodes, &entries)
    }
}
