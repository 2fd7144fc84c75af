//! The node's monitoring sampler: every interval it reads each running container's cgroup
//! (and network counters through its init process) and the node's `/proc`, turns the counters
//! into a [`Batch`] of samples and publishes it on `herd.metrics.<node>`.
//!
//! Readers keep their files open between samples (see `herd_metrics::read`), so a sample of
//! a container costs a few `pread`s. A file that cannot be read is reported once per
//! container and file, not every interval.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_broker::Broker;
use herd_metrics::cgroup::ContainerCounters;
use herd_metrics::node::NodeCounters;
use herd_metrics::rate::Snapshot;
use herd_metrics::read::{CgroupReader, NodeReader, V1Paths};
use herd_metrics::sample::{Batch, ContainerSample, NodeSample};
use herd_proto::now_millis;
use herd_proto::state::ContainerState;
use herd_proto::subjects;

use crate::runtime::Runtime;

/// A running container, as the sampler needs it.
pub(crate) struct Sampled {
    pub id: String,
    pub name: String,
    pub cgroup: String,
    pub pid: Option<u32>,
    pub cpus_milli: Option<u64>,
}

impl Runtime {
    /// The containers running on this node now.
    pub(crate) fn sampled(&self) -> Vec<Sampled> {
        self.containers
            .lock()
            .unwrap()
            .values()
            .filter_map(|c| {
                let live = c.live.lock().unwrap();
                (live.state == Some(ContainerState::Running)).then(|| Sampled {
                    id: c.spec.id.clone(),
                    name: c.spec.name.clone(),
                    cgroup: self.cfg.paths.cgroup(&c.spec.id),
                    pid: live.pid,
                    cpus_milli: c.spec.limits.cpus_milli,
                })
            })
            .collect()
    }
}

/// One container's reader and its previous reading.
struct Watched {
    reader: CgroupReader,
    /// The pid whose network counters the reader follows.
    net_pid: Option<u32>,
    prev: Option<Snapshot<ContainerCounters>>,
    reported: HashSet<std::path::PathBuf>,
}

/// Whether the node's network figures count interface `name`: not loopback, not the host
/// ends of container veths (their traffic is the containers'; see [`crate::paths::host_ifname`]).
fn node_interface(name: &str) -> bool {
    let container_veth = name.len() == 15 && name.starts_with('h') && name[1..].bytes().all(|b| b.is_ascii_hexdigit());
    name != "lo" && !container_veth
}

/// Samples every `interval` and publishes, until the task is dropped.
pub(crate) async fn run(broker: Broker, node: String, runtime: Arc<Runtime>, interval: Duration) {
    let cgroup_root = Path::new("/sys/fs/cgroup");
    let unified_only = cgroup_root.join("cgroup.controllers").exists();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut node_reader = NodeReader::new(Path::new("/proc"), node_interface);
    let mut node_prev: Option<Snapshot<NodeCounters>> = None;
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut seq = 0;
    loop {
        tick.tick().await;
        seq += 1;
        let ts_ms = now_millis();
        let at_ms = started.elapsed().as_millis() as u64;
        let mut batch = Batch::new(node.clone(), seq, ts_ms);
        let running = runtime.sampled();
        let ids: HashSet<&str> = running.iter().map(|c| c.id.as_str()).collect();
        watched.retain(|id, _| ids.contains(id.as_str()));
        let mut mem_containers = 0u64;
        for c in &running {
            let w = watched.entry(c.id.clone()).or_insert_with(|| Watched {
                reader: if unified_only {
                    CgroupReader::v2(&cgroup_root.join(c.cgroup.trim_start_matches('/')))
                } else {
                    CgroupReader::v1(&V1Paths::under(cgroup_root, &c.cgroup))
                },
                net_pid: None,
                prev: None,
                reported: HashSet::new(),
            });
            if w.net_pid != c.pid {
                // Reopened only when the process changes: the file stays open between samples.
                w.reader.set_net_pid(Path::new("/proc"), c.pid);
                w.net_pid = c.pid;
            }
            let read = w.reader.read();
            if read.gone() {
                continue; // stopped between the list and the read
            }
            for p in &read.problems {
                if w.reported.insert(p.file.clone()) {
                    tracing::warn!("monitoring {}: {} ({:?}); not reported again", c.name, p.file.display(), p.reason);
                }
            }
            let cur = Snapshot { at_ms, counters: read.counters };
            let sample =
                ContainerSample::from_counters(&c.id, Some(c.name.clone()), ts_ms, w.prev.as_ref(), &cur, c.cpus_milli);
            mem_containers += sample.mem_bytes.unwrap_or(0);
            batch.containers.push(sample);
            w.prev = Some(cur);
        }
        let read = node_reader.read();
        let cur = Snapshot { at_ms, counters: read.counters };
        batch.node_sample = Some(NodeSample::from_counters(
            node.clone(),
            ts_ms,
            node_prev.as_ref(),
            &cur,
            Some(mem_containers),
            batch.containers.len() as u32,
        ));
        node_prev = Some(cur);
        if let Err(e) = broker.client.publish(subjects::metrics(&node), batch.encode().into()).await {
            tracing::debug!("monitoring batch not sent: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::node_interface;

    #[test]
    fn node_traffic_leaves_out_loopback_and_container_veths() {
        let veth = crate::paths::host_ifname("0123456789abcdef0123456789abcdef");
        assert!(!node_interface(&veth), "{veth}");
        assert!(!node_interface("lo"));
        for uplink in ["eth0", "hn1a2b3c1", "hsr0", "enp3s0"] {
            assert!(node_interface(uplink), "{uplink}");
        }
    }
}
