//! The node's monitoring sampler: every interval it reads each running container's cgroup
//! (and network counters through its init process) and the node's `/proc`, turns the counters
//! into a [`Batch`] of samples and publishes it on `herd.metrics.<node>`.
//!
//! Readers keep their files open between samples (see `herd_metrics::read`). Every interval
//! a container costs two cheap reads (CPU time, memory usage); its other files
//! (`memory.stat`, block I/O, pids, PSI, ...) are read when those moved and at least every
//! [`DETAIL_EVERY`] otherwise (see [`DetailSchedule`]). Its network counters come from the
//! host end of its veth in the node's own `/proc/net/dev`, which the node sample reads anyway.
//! A file that cannot be read is reported once per container and file, not every interval.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_broker::Broker;
use herd_metrics::cgroup::ContainerCounters;
use herd_metrics::node::NodeCounters;
use herd_metrics::node::{NetDev, NetTotals};
use herd_metrics::rate::Snapshot;
use herd_metrics::read::{CgroupReader, DetailSchedule, Files, NodeReader, V1Paths};
use herd_metrics::sample::{Batch, ContainerSample, NodeSample};
use herd_proto::now_millis;
use herd_proto::state::ContainerState;
use herd_proto::subjects;

use crate::paths::host_ifname;
use crate::runtime::Runtime;

/// A running container, as the sampler needs it.
pub(crate) struct Sampled {
    pub id: String,
    pub name: String,
    pub cgroup: String,
    pub cpus_milli: Option<u64>,
}

impl Runtime {
    /// The containers running on this node now. One that an operation is about to end (a
    /// stop, or a checkpoint or migration that froze it) is left out: after a migration its
    /// frozen copy here would add samples to a series that has moved on to another node.
    pub(crate) fn sampled(&self) -> Vec<Sampled> {
        self.containers
            .lock()
            .unwrap()
            .values()
            .filter_map(|c| {
                let live = c.live.lock().unwrap();
                (live.state == Some(ContainerState::Running) && !live.expecting_exit).then(|| Sampled {
                    id: c.spec.id.clone(),
                    name: c.spec.name.clone(),
                    cgroup: self.cfg.paths.cgroup(&c.spec.id),
                    cpus_milli: c.spec.limits.cpus_milli,
                })
            })
            .collect()
    }
}

/// The longest a container's costly files go unread while its cheap figures stand still.
pub(crate) const DETAIL_EVERY: Duration = Duration::from_secs(10);

/// One container's reader and its previous reading.
struct Watched {
    reader: CgroupReader,
    detail: DetailSchedule,
    /// The host end of its veth.
    veth: String,
    prev: Option<Snapshot<ContainerCounters>>,
    reported: HashSet<std::path::PathBuf>,
    /// The last interval it was seen running.
    seen: u64,
}

/// A container's traffic from the host end of its veth: what the host end receives, the
/// container sent.
fn container_net(host_end: &NetDev) -> NetTotals {
    NetTotals {
        rx_bytes: host_end.tx_bytes,
        tx_bytes: host_end.rx_bytes,
        rx_packets: host_end.tx_packets,
        tx_packets: host_end.rx_packets,
    }
}

/// Spreads containers' forced detail reads over the intervals: a number from the id.
fn phase(id: &str) -> u32 {
    id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
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
    let detail_every = (DETAIL_EVERY.as_millis() / interval.as_millis().max(1)) as u32;
    let watch = |c: &Sampled| Watched {
        reader: if unified_only {
            CgroupReader::v2(&cgroup_root.join(c.cgroup.trim_start_matches('/')))
        } else {
            CgroupReader::v1(&V1Paths::under(cgroup_root, &c.cgroup))
        },
        detail: DetailSchedule::new(detail_every, phase(&c.id)),
        veth: host_ifname(&c.id),
        prev: None,
        reported: HashSet::new(),
        seen: 0,
    };
    let mut seq = 0;
    loop {
        tick.tick().await;
        seq += 1;
        let ts_ms = now_millis();
        let at_ms = started.elapsed().as_millis() as u64;
        let mut batch = Batch::new(node.clone(), seq, ts_ms);
        let running = runtime.sampled();
        let node_read = node_reader.read();
        let interfaces: HashMap<&str, &NetDev> = node_read.interfaces.iter().map(|d| (d.name.as_str(), d)).collect();
        let mut mem_containers = 0u64;
        for c in &running {
            if !watched.contains_key(&c.id) {
                watched.insert(c.id.clone(), watch(c));
            }
            let w = watched.get_mut(&c.id).expect("inserted above");
            w.seen = seq;
            let mut read = w.reader.read_files(Files::Cheap);
            if read.gone() {
                continue; // stopped between the list and the read
            }
            if w.detail.due(&read.counters) {
                let detail = w.reader.read_files(Files::Detail);
                read.problems.extend(detail.problems);
                read.counters = detail.counters;
            }
            for p in &read.problems {
                if w.reported.insert(p.file.clone()) {
                    tracing::warn!("monitoring {}: {} ({:?}); not reported again", c.name, p.file.display(), p.reason);
                }
            }
            let mut counters = read.counters;
            counters.net = interfaces.get(w.veth.as_str()).map(|d| container_net(d));
            let cur = Snapshot { at_ms, counters };
            let sample =
                ContainerSample::from_counters(&c.id, Some(c.name.clone()), ts_ms, w.prev.as_ref(), &cur, c.cpus_milli);
            mem_containers += sample.mem_bytes.unwrap_or(0);
            batch.containers.push(sample);
            w.prev = Some(cur);
        }
        watched.retain(|_, w| w.seen == seq); // gone, or stopped since the last interval
        let cur = Snapshot { at_ms, counters: node_read.counters };
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
