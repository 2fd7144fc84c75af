//! The compact samples a Compute node publishes every interval, and the [`Batch`] that
//! carries one interval's samples of one node through the broker.
//!
//! # Encoding
//!
//! A batch is one JSON object (`serde_json`), built for size: field names are one to three
//! letters, absent values (`None`) are left out rather than written as `null`, and rates are
//! rounded (cores to 0.001, percentages and per-second rates to 0.01). The version field `v`
//! is checked by [`Batch::decode`].
//!
//! ```text
//! {"v":1,"node":"n1","seq":42,"t":1700000000000,
//!  "ns":{"node":"n1","t":1700000000000,"ncpu":2,"cu":12.5,"cs":3.1,"l1":0.42,"mt":25275863040,...},
//!  "cs":[{"id":"9d2e...","n":"web","t":1700000000000,"c":0.25,"cl":50.0,"m":1076064256,...}]}
//! ```
//!
//! Container sample keys: `id`, `n` name, `t` timestamp (ms since the Unix epoch), `c` cores,
//! `cl` percent of CPU limit, `th` percent of CFS periods throttled, `m` memory usage, `ws`
//! working set, `rss`, `ca` page cache, `pf` page faults/s, `oom` OOM kills (cumulative),
//! `br`/`bw` block bytes/s read/written, `bri`/`bwi` block operations/s, `nr`/`nt` network
//! bytes/s received/sent, `nrp`/`ntp` packets/s, `p` pids, `pc`/`pm`/`pi` PSI `some avg10`
//! of CPU/memory/I/O (percent), `k` the raw cumulative counters ([`ContainerTotals`], for
//! Prometheus). Node sample keys are listed on [`NodeSample`]'s fields.
//!
//! A container sample with every figure is about 400 bytes (measured on this project's host:
//! 395 bytes for a v1 container with network counters), so a batch of 1,000 containers is
//! about 400 kB of JSON, within NATS's default 1 MiB message limit.

use serde::{Deserialize, Serialize};

use crate::cgroup::ContainerCounters;
use crate::node::{CpuTimes, NodeCounters};
use crate::rate::{self, Snapshot};

/// Cumulative counters of a container, carried so that Prometheus sees counters (they reset
/// when the container's cgroup is recreated, e.g. after a migration, which Prometheus
/// handles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerTotals {
    /// CPU time, ns.
    #[serde(rename = "cpu", default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<u64>,
    /// CFS periods elapsed.
    #[serde(rename = "per", default, skip_serializing_if = "Option::is_none")]
    pub cpu_periods: Option<u64>,
    /// CFS periods throttled.
    #[serde(rename = "thp", default, skip_serializing_if = "Option::is_none")]
    pub cpu_throttled_periods: Option<u64>,
    /// Time throttled, ns.
    #[serde(rename = "thn", default, skip_serializing_if = "Option::is_none")]
    pub cpu_throttled_ns: Option<u64>,
    /// Page faults.
    #[serde(rename = "pf", default, skip_serializing_if = "Option::is_none")]
    pub pgfault: Option<u64>,
    /// Major page faults.
    #[serde(rename = "pmf", default, skip_serializing_if = "Option::is_none")]
    pub pgmajfault: Option<u64>,
    /// Block bytes read.
    #[serde(rename = "br", default, skip_serializing_if = "Option::is_none")]
    pub blk_read_bytes: Option<u64>,
    /// Block bytes written.
    #[serde(rename = "bw", default, skip_serializing_if = "Option::is_none")]
    pub blk_write_bytes: Option<u64>,
    /// Block reads.
    #[serde(rename = "bri", default, skip_serializing_if = "Option::is_none")]
    pub blk_reads: Option<u64>,
    /// Block writes.
    #[serde(rename = "bwi", default, skip_serializing_if = "Option::is_none")]
    pub blk_writes: Option<u64>,
    /// Network bytes received.
    #[serde(rename = "nr", default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes: Option<u64>,
    /// Network bytes sent.
    #[serde(rename = "nt", default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes: Option<u64>,
    /// Network packets received.
    #[serde(rename = "nrp", default, skip_serializing_if = "Option::is_none")]
    pub net_rx_packets: Option<u64>,
    /// Network packets sent.
    #[serde(rename = "ntp", default, skip_serializing_if = "Option::is_none")]
    pub net_tx_packets: Option<u64>,
}

impl ContainerTotals {
    /// The counters of a reading.
    pub fn from_counters(c: &ContainerCounters) -> Self {
        ContainerTotals {
            cpu_ns: c.cpu_usage_ns,
            cpu_periods: c.cpu_throttle.map(|t| t.periods),
            cpu_throttled_periods: c.cpu_throttle.map(|t| t.throttled_periods),
            cpu_throttled_ns: c.cpu_throttle.map(|t| t.throttled_ns),
            pgfault: c.pgfault,
            pgmajfault: c.pgmajfault,
            blk_read_bytes: c.blk_read_bytes,
            blk_write_bytes: c.blk_write_bytes,
            blk_reads: c.blk_read_ios,
            blk_writes: c.blk_write_ios,
            net_rx_bytes: c.net.map(|n| n.rx_bytes),
            net_tx_bytes: c.net.map(|n| n.tx_bytes),
            net_rx_packets: c.net.map(|n| n.rx_packets),
            net_tx_packets: c.net.map(|n| n.tx_packets),
        }
    }
}

/// One container at one instant. Rates cover the interval since the previous sample; every
/// figure is `None` where the kernel does not offer it, its file could not be read, or (for
/// rates) there is no usable previous reading.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerSample {
    /// Container id (the series key: the same on every node).
    pub id: String,
    /// Container name.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When it was taken, ms since the Unix epoch.
    #[serde(rename = "t")]
    pub ts_ms: u64,
    /// CPU cores used.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
    /// Percent of the container's CPU limit.
    #[serde(rename = "cl", default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_pct: Option<f64>,
    /// Percent of CFS periods throttled.
    #[serde(rename = "th", default, skip_serializing_if = "Option::is_none")]
    pub throttled_pct: Option<f64>,
    /// Memory usage, bytes.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub mem_bytes: Option<u64>,
    /// Working set, bytes.
    #[serde(rename = "ws", default, skip_serializing_if = "Option::is_none")]
    pub working_set: Option<u64>,
    /// RSS, bytes.
    #[serde(rename = "rss", default, skip_serializing_if = "Option::is_none")]
    pub rss: Option<u64>,
    /// Page cache, bytes.
    #[serde(rename = "ca", default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<u64>,
    /// Page faults per second.
    #[serde(rename = "pf", default, skip_serializing_if = "Option::is_none")]
    pub pgfaults_per_s: Option<f64>,
    /// OOM kills since the cgroup was created.
    #[serde(rename = "oom", default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    /// Block bytes read per second.
    #[serde(rename = "br", default, skip_serializing_if = "Option::is_none")]
    pub blk_read_bps: Option<f64>,
    /// Block bytes written per second.
    #[serde(rename = "bw", default, skip_serializing_if = "Option::is_none")]
    pub blk_write_bps: Option<f64>,
    /// Block reads per second.
    #[serde(rename = "bri", default, skip_serializing_if = "Option::is_none")]
    pub blk_read_iops: Option<f64>,
    /// Block writes per second.
    #[serde(rename = "bwi", default, skip_serializing_if = "Option::is_none")]
    pub blk_write_iops: Option<f64>,
    /// Network bytes received per second.
    #[serde(rename = "nr", default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bps: Option<f64>,
    /// Network bytes sent per second.
    #[serde(rename = "nt", default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bps: Option<f64>,
    /// Network packets received per second.
    #[serde(rename = "nrp", default, skip_serializing_if = "Option::is_none")]
    pub net_rx_pps: Option<f64>,
    /// Network packets sent per second.
    #[serde(rename = "ntp", default, skip_serializing_if = "Option::is_none")]
    pub net_tx_pps: Option<f64>,
    /// Tasks in the cgroup.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU pressure, `some avg10`, percent.
    #[serde(rename = "pc", default, skip_serializing_if = "Option::is_none")]
    pub psi_cpu_some10: Option<f64>,
    /// Memory pressure, `some avg10`, percent.
    #[serde(rename = "pm", default, skip_serializing_if = "Option::is_none")]
    pub psi_mem_some10: Option<f64>,
    /// I/O pressure, `some avg10`, percent.
    #[serde(rename = "pi", default, skip_serializing_if = "Option::is_none")]
    pub psi_io_some10: Option<f64>,
    /// Raw cumulative counters.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<ContainerTotals>,
}

fn round(x: Option<f64>, decimals: i32) -> Option<f64> {
    let m = 10f64.powi(decimals);
    x.filter(|v| v.is_finite()).map(|v| (v * m).round() / m)
}

/// The names of [`ContainerSample::values`], in order: the columns of the history.
pub const CONTAINER_FIELDS: [&str; 21] = [
    "cpu_cores",
    "cpu_limit_pct",
    "throttled_pct",
    "mem_bytes",
    "working_set",
    "rss",
    "cache",
    "pgfaults_per_s",
    "oom_kills",
    "blk_read_bps",
    "blk_write_bps",
    "blk_read_iops",
    "blk_write_iops",
    "net_rx_bps",
    "net_tx_bps",
    "net_rx_pps",
    "net_tx_pps",
    "pids",
    "psi_cpu_some10",
    "psi_mem_some10",
    "psi_io_some10",
];

impl ContainerSample {
    /// Builds a sample from the current reading and, for rates, the previous one (`None` for
    /// a container's first reading on this node). `cpu_limit_millicores` is the container's
    /// CPU limit (`None`: unlimited).
    pub fn from_counters(
        id: impl Into<String>,
        name: Option<String>,
        ts_ms: u64,
        prev: Option<&Snapshot<ContainerCounters>>,
        cur: &Snapshot<ContainerCounters>,
        cpu_limit_millicores: Option<u64>,
    ) -> ContainerSample {
        let r = prev.map(|p| rate::container_rates(p, cur, cpu_limit_millicores)).unwrap_or_default();
        let c = &cur.counters;
        let some10 = |p: Option<crate::psi::Pressure>| round(p.map(|p| p.some.avg10), 2);
        ContainerSample {
            id: id.into(),
            name,
            ts_ms,
            cpu_cores: round(r.cpu_cores, 3),
            cpu_limit_pct: round(r.cpu_limit_pct, 2),
            throttled_pct: round(r.throttled_pct, 2),
            mem_bytes: c.mem_usage,
            working_set: c.mem_working_set,
            rss: c.mem_rss,
            cache: c.mem_cache,
            pgfaults_per_s: round(r.pgfaults_per_s, 2),
            oom_kills: c.oom_kills,
            blk_read_bps: round(r.blk_read_bps, 2),
            blk_write_bps: round(r.blk_write_bps, 2),
            blk_read_iops: round(r.blk_read_iops, 2),
            blk_write_iops: round(r.blk_write_iops, 2),
            net_rx_bps: round(r.net_rx_bps, 2),
            net_tx_bps: round(r.net_tx_bps, 2),
            net_rx_pps: round(r.net_rx_pps, 2),
            net_tx_pps: round(r.net_tx_pps, 2),
            pids: c.pids,
            psi_cpu_some10: some10(c.psi_cpu),
            psi_mem_some10: some10(c.psi_memory),
            psi_io_some10: some10(c.psi_io),
            totals: Some(ContainerTotals::from_counters(c)),
        }
    }

    /// The figures in [`CONTAINER_FIELDS`] order.
    pub fn values(&self) -> [Option<f64>; 21] {
        let u = |x: Option<u64>| x.map(|v| v as f64);
        [
            self.cpu_cores,
            self.cpu_limit_pct,
            self.throttled_pct,
            u(self.mem_bytes),
            u(self.working_set),
            u(self.rss),
            u(self.cache),
            self.pgfaults_per_s,
            u(self.oom_kills),
            self.blk_read_bps,
            self.blk_write_bps,
            self.blk_read_iops,
            self.blk_write_iops,
            self.net_rx_bps,
            self.net_tx_bps,
            self.net_rx_pps,
            self.net_tx_pps,
            u(self.pids),
            self.psi_cpu_some10,
            self.psi_mem_some10,
            self.psi_io_some10,
        ]
    }
}

/// Cumulative counters of a node, for Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeTotals {
    /// `/proc/stat` CPU ticks (`USER_HZ`).
    #[serde(rename = "cpu", default, skip_serializing_if = "Option::is_none")]
    pub cpu_ticks: Option<CpuTimes>,
    /// Whole-disk bytes read.
    #[serde(rename = "dr", default, skip_serializing_if = "Option::is_none")]
    pub disk_read_bytes: Option<u64>,
    /// Whole-disk bytes written.
    #[serde(rename = "dw", default, skip_serializing_if = "Option::is_none")]
    pub disk_write_bytes: Option<u64>,
    /// Network bytes received.
    #[serde(rename = "nr", default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes: Option<u64>,
    /// Network bytes sent.
    #[serde(rename = "nt", default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes: Option<u64>,
}

/// One node at one instant. Percentages are of all the node's CPUs (100 = every CPU).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeSample {
    /// Node name.
    pub node: String,
    /// When it was taken, ms since the Unix epoch.
    #[serde(rename = "t")]
    pub ts_ms: u64,
    /// Online CPUs.
    #[serde(rename = "ncpu", default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// CPU user (and nice), percent.
    #[serde(rename = "cu", default, skip_serializing_if = "Option::is_none")]
    pub cpu_user_pct: Option<f64>,
    /// CPU system (and irq, softirq), percent.
    #[serde(rename = "cs", default, skip_serializing_if = "Option::is_none")]
    pub cpu_system_pct: Option<f64>,
    /// CPU iowait, percent.
    #[serde(rename = "cw", default, skip_serializing_if = "Option::is_none")]
    pub cpu_iowait_pct: Option<f64>,
    /// CPU steal, percent.
    #[serde(rename = "cst", default, skip_serializing_if = "Option::is_none")]
    pub cpu_steal_pct: Option<f64>,
    /// 1-minute load average.
    #[serde(rename = "l1", default, skip_serializing_if = "Option::is_none")]
    pub load1: Option<f64>,
    /// 5-minute load average.
    #[serde(rename = "l5", default, skip_serializing_if = "Option::is_none")]
    pub load5: Option<f64>,
    /// 15-minute load average.
    #[serde(rename = "l15", default, skip_serializing_if = "Option::is_none")]
    pub load15: Option<f64>,
    /// Memory, bytes.
    #[serde(rename = "mt", default, skip_serializing_if = "Option::is_none")]
    pub mem_total: Option<u64>,
    /// Available memory, bytes.
    #[serde(rename = "ma", default, skip_serializing_if = "Option::is_none")]
    pub mem_available: Option<u64>,
    /// Memory used by containers (sum of their usage), bytes.
    #[serde(rename = "mc", default, skip_serializing_if = "Option::is_none")]
    pub mem_containers: Option<u64>,
    /// Disk bytes read per second.
    #[serde(rename = "dr", default, skip_serializing_if = "Option::is_none")]
    pub disk_read_bps: Option<f64>,
    /// Disk bytes written per second.
    #[serde(rename = "dw", default, skip_serializing_if = "Option::is_none")]
    pub disk_write_bps: Option<f64>,
    /// Network bytes received per second.
    #[serde(rename = "nr", default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bps: Option<f64>,
    /// Network bytes sent per second.
    #[serde(rename = "nt", default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bps: Option<f64>,
    /// CPU pressure, `some avg10`.
    #[serde(rename = "pc", default, skip_serializing_if = "Option::is_none")]
    pub psi_cpu_some10: Option<f64>,
    /// Memory pressure, `some avg10`.
    #[serde(rename = "pm", default, skip_serializing_if = "Option::is_none")]
    pub psi_mem_some10: Option<f64>,
    /// Memory pressure, `full avg10`.
    #[serde(rename = "pmf", default, skip_serializing_if = "Option::is_none")]
    pub psi_mem_full10: Option<f64>,
    /// I/O pressure, `some avg10`.
    #[serde(rename = "pi", default, skip_serializing_if = "Option::is_none")]
    pub psi_io_some10: Option<f64>,
    /// I/O pressure, `full avg10`.
    #[serde(rename = "pif", default, skip_serializing_if = "Option::is_none")]
    pub psi_io_full10: Option<f64>,
    /// Containers running on the node.
    #[serde(rename = "n", default)]
    pub containers: u32,
    /// Raw cumulative counters.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<NodeTotals>,
}

/// The names of [`NodeSample::values`], in order.
pub const NODE_FIELDS: [&str; 20] = [
    "cpu_user_pct",
    "cpu_system_pct",
    "cpu_iowait_pct",
    "cpu_steal_pct",
    "load1",
    "load5",
    "load15",
    "mem_total",
    "mem_available",
    "mem_containers",
    "disk_read_bps",
    "disk_write_bps",
    "net_rx_bps",
    "net_tx_bps",
    "psi_cpu_some10",
    "psi_mem_some10",
    "psi_mem_full10",
    "psi_io_some10",
    "psi_io_full10",
    "containers",
];

impl NodeSample {
    /// Builds a node sample. `mem_containers` is the sum of the containers' memory usage and
    /// `containers` their number (both known to the sampler, not to `/proc`).
    pub fn from_counters(
        node: impl Into<String>,
        ts_ms: u64,
        prev: Option<&Snapshot<NodeCounters>>,
        cur: &Snapshot<NodeCounters>,
        mem_containers: Option<u64>,
        containers: u32,
    ) -> NodeSample {
        let r = prev.map(|p| rate::node_rates(p, cur)).unwrap_or_default();
        let c = &cur.counters;
        let avg = |p: Option<crate::psi::Pressure>, full: bool| {
            round(p.and_then(|p| if full { p.full.map(|f| f.avg10) } else { Some(p.some.avg10) }), 2)
        };
        NodeSample {
            node: node.into(),
            ts_ms,
            cpus: c.cpus,
            cpu_user_pct: round(r.cpu.map(|x| x.user), 2),
            cpu_system_pct: round(r.cpu.map(|x| x.system), 2),
            cpu_iowait_pct: round(r.cpu.map(|x| x.iowait), 2),
            cpu_steal_pct: round(r.cpu.map(|x| x.steal), 2),
            load1: c.load.map(|l| l.load1),
            load5: c.load.map(|l| l.load5),
            load15: c.load.map(|l| l.load15),
            mem_total: c.mem.map(|m| m.total),
            mem_available: c.mem.and_then(|m| m.available),
            mem_containers,
            disk_read_bps: round(r.disk_read_bps, 2),
            disk_write_bps: round(r.disk_write_bps, 2),
            net_rx_bps: round(r.net_rx_bps, 2),
            net_tx_bps: round(r.net_tx_bps, 2),
            psi_cpu_some10: avg(c.psi_cpu, false),
            psi_mem_some10: avg(c.psi_memory, false),
            psi_mem_full10: avg(c.psi_memory, true),
            psi_io_some10: avg(c.psi_io, false),
            psi_io_full10: avg(c.psi_io, true),
            containers,
            totals: Some(NodeTotals {
                cpu_ticks: c.cpu,
                disk_read_bytes: c.disk.map(|d| d.read_bytes),
                disk_write_bytes: c.disk.map(|d| d.write_bytes),
                net_rx_bytes: c.net.map(|n| n.rx_bytes),
                net_tx_bytes: c.net.map(|n| n.tx_bytes),
            }),
        }
    }

    /// The figures in [`NODE_FIELDS`] order.
    pub fn values(&self) -> [Option<f64>; 20] {
        let u = |x: Option<u64>| x.map(|v| v as f64);
        [
            self.cpu_user_pct,
            self.cpu_system_pct,
            self.cpu_iowait_pct,
            self.cpu_steal_pct,
            self.load1,
            self.load5,
            self.load15,
            u(self.mem_total),
            u(self.mem_available),
            u(self.mem_containers),
            self.disk_read_bps,
            self.disk_write_bps,
            self.net_rx_bps,
            self.net_tx_bps,
            self.psi_cpu_some10,
            self.psi_mem_some10,
            self.psi_mem_full10,
            self.psi_io_some10,
            self.psi_io_full10,
            Some(self.containers as f64),
        ]
    }
}

/// The encoding version [`Batch::encode`] writes and [`Batch::decode`] accepts.
pub const BATCH_VERSION: u32 = 1;

/// One node's samples of one interval, as published through the broker.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Batch {
    /// Encoding version ([`BATCH_VERSION`]).
    pub v: u32,
    /// The publishing node.
    pub node: String,
    /// Per-node sequence number, +1 per batch: the receiver sees lost or repeated batches.
    pub seq: u64,
    /// When the interval's sampling started, ms since the Unix epoch.
    #[serde(rename = "t")]
    pub ts_ms: u64,
    /// The node's own sample.
    #[serde(rename = "ns", default, skip_serializing_if = "Option::is_none")]
    pub node_sample: Option<NodeSample>,
    /// The containers' samples.
    #[serde(rename = "cs", default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerSample>,
}

/// Why a batch could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a batch.
    #[error("invalid batch: {0}")]
    Json(#[from] serde_json::Error),
    /// A version this build does not understand.
    #[error("unsupported batch version {0} (this build reads {BATCH_VERSION})")]
    Version(u32),
}

impl Batch {
    /// A batch of the current version.
    pub fn new(node: impl Into<String>, seq: u64, ts_ms: u64) -> Batch {
        Batch { v: BATCH_VERSION, node: node.into(), seq, ts_ms, node_sample: None, containers: Vec::new() }
    }

    /// The wire form (compact JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a batch always serialises")
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
        let b: Batch = serde_json::from_slice(bytes)?;
        if b.v != BATCH_VERSION {
            return Err(DecodeError::Version(b.v));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NetTotals;
    use crate::psi::{Pressure, PsiLine};

    fn counters(cpu_ns: u64, rx: u64) -> ContainerCounters {
        ContainerCounters {
            cpu_usage_ns: Some(cpu_ns),
            mem_usage: Some(100 << 20),
            mem_working_set: Some(60 << 20),
            pids: Some(3),
            oom_kills: Some(0),
            net: Some(NetTotals { rx_bytes: rx, tx_bytes: 0, rx_packets: 1, tx_packets: 0 }),
            psi_cpu: Some(Pressure { some: PsiLine { avg10: 1.234, ..Default::default() }, full: None }),
            ..Default::default()
        }
    }

    #[test]
    fn container_sample_from_counters() {
        let prev = Snapshot { at_ms: 10_000, counters: counters(1_000_000_000, 0) };
        let cur = Snapshot { at_ms: 11_000, counters: counters(1_333_333_333, 1000) };
        let s =
            ContainerSample::from_counters("abc", Some("web".into()), 1_700_000_000_000, Some(&prev), &cur, Some(500));
        assert_eq!(s.cpu_cores, Some(0.333));
        assert_eq!(s.cpu_limit_pct, Some(66.67));
        assert_eq!(s.net_rx_bps, Some(1000.0));
        assert_eq!(s.mem_bytes, Some(100 << 20));
        assert_eq!(s.psi_cpu_some10, Some(1.23));
        assert_eq!(s.blk_read_bps, None);
        assert_eq!(s.totals.unwrap().cpu_ns, Some(1_333_333_333));
        // First reading: gauges but no rates.
        let first = ContainerSample::from_counters("abc", None, 1, None, &cur, Some(500));
        assert_eq!((first.cpu_cores, first.mem_bytes), (None, Some(100 << 20)));
        let v = s.values();
        assert_eq!(v.len(), CONTAINER_FIELDS.len());
        assert_eq!(v[CONTAINER_FIELDS.iter().position(|f| *f == "pids").unwrap()], Some(3.0));
    }

    #[test]
    fn compact_json() {
        let s =
            ContainerSample { id: "abc".into(), ts_ms: 5, cpu_cores: Some(0.5), pids: Some(2), ..Default::default() };
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"id":"abc","t":5,"c":0.5,"p":2}"#);
        let back: ContainerSample = serde_json::from_str(r#"{"id":"abc","t":5,"c":0.5,"p":2}"#).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn node_sample_from_recorded_files() {
        let st = crate::node::parse_proc_stat(include_str!("../tests/fixtures/proc/stat")).unwrap();
        let mem = crate::node::parse_meminfo(include_str!("../tests/fixtures/proc/meminfo")).unwrap();
        let psi = crate::psi::parse_pressure(include_str!("../tests/fixtures/proc/pressure_memory")).unwrap();
        let mut later = st.cpu;
        later.user += 30;
        later.system += 10;
        later.idle += 160;
        let c0 = NodeCounters {
            cpu: Some(st.cpu),
            cpus: Some(2),
            mem: Some(mem),
            psi_memory: Some(psi),
            ..Default::default()
        };
        let c1 = NodeCounters { cpu: Some(later), ..c0.clone() };
        let s = NodeSample::from_counters(
            "n1",
            7,
            Some(&Snapshot { at_ms: 0, counters: c0 }),
            &Snapshot { at_ms: 1000, counters: c1 },
            Some(1 << 30),
            4,
        );
        assert_eq!((s.cpu_user_pct, s.cpu_system_pct, s.cpu_iowait_pct), (Some(15.0), Some(5.0), Some(0.0)));
        assert_eq!(s.mem_total, Some(24_683_656 * 1024));
        assert_eq!(s.psi_mem_full10, Some(0.0));
        assert_eq!(s.containers, 4);
        assert_eq!(s.values().len(), NODE_FIELDS.len());
    }

    #[test]
    fn batch_round_trip_and_version() {
        let mut b = Batch::new("n1", 42, 1000);
        b.node_sample = Some(NodeSample { node: "n1".into(), ts_ms: 1000, containers: 1, ..Default::default() });
        b.containers.push(ContainerSample { id: "c1".into(), ts_ms: 1000, mem_bytes: Some(1), ..Default::default() });
        let bytes = b.encode();
        assert_eq!(Batch::decode(&bytes).unwrap(), b);
        let s = String::from_utf8(bytes).unwrap();
        assert!(s.starts_with(r#"{"v":1,"node":"n1","seq":42,"t":1000,"ns":"#), "{s}");
        assert!(matches!(Batch::decode(br#"{"v":9,"node":"n1","seq":1,"t":1}"#), Err(DecodeError::Version(9))));
        assert!(matches!(Batch::decode(b"not json"), Err(DecodeError::Json(_))));
        let empty = Batch::new("n2", 0, 0);
        assert_eq!(String::from_utf8(empty.encode()).unwrap(), r#"{"v":1,"node":"n2","seq":0,"t":0}"#);
    }

    #[test]
    fn non_finite_rates_are_dropped() {
        assert_eq!(round(Some(f64::NAN), 2), None);
        assert_eq!(round(Some(f64::INFINITY), 2), None);
        assert_eq!(round(Some(1.23456), 3), Some(1.235));
    }
}
