//! Turning two snapshots of cumulative counters into rates: CPU cores used and percent of a
//! CPU limit, throttling, bytes/s, operations/s, node CPU percentages.
//!
//! Rules, the same for every counter:
//! - the interval is the difference of the snapshots' monotonic times; a zero or negative
//!   interval gives no rate (`None`), never a division by zero;
//! - a counter that went down was reset (its cgroup was recreated by a restart or a
//!   migration, or a counter wrapped): that interval's rate is `None`, not a negative or
//!   huge figure, and the next interval is normal again. Prometheus, which sees the raw
//!   counters, applies its own reset handling;
//! - a counter missing from either snapshot gives `None`.
//!
//! A sampler that knows a cgroup was recreated (a restart it performed) should drop its
//! previous snapshot rather than rely on the reset rule, which cannot see a recreated counter
//! that has already grown past its old value.

use serde::{Deserialize, Serialize};

use crate::cgroup::ContainerCounters;
use crate::node::{CpuTimes, NodeCounters};

/// Counters at one instant. `at_ms` is a monotonic clock in milliseconds (intervals are
/// computed from it); the sample's wall-clock timestamp is separate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Snapshot<T> {
    /// Monotonic time of the reading, ms.
    pub at_ms: u64,
    /// The counters.
    pub counters: T,
}

/// How a counter moved between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Increase {
    /// It grew (or stayed) by this much.
    Delta(u64),
    /// It went down: reset.
    Reset,
}

/// The increase of a cumulative counter from `prev` to `cur`.
pub fn increase(prev: u64, cur: u64) -> Increase {
    if cur >= prev { Increase::Delta(cur - prev) } else { Increase::Reset }
}

/// The interval between two monotonic times, seconds; `None` unless `cur_ms > prev_ms`.
pub fn interval_secs(prev_ms: u64, cur_ms: u64) -> Option<f64> {
    (cur_ms > prev_ms).then(|| (cur_ms - prev_ms) as f64 / 1000.0)
}

/// Per-second rate of a counter over `secs`; `None` on a reset or a non-positive interval.
pub fn per_second(prev: u64, cur: u64, secs: f64) -> Option<f64> {
    if secs.is_nan() || secs <= 0.0 {
        return None;
    }
    match increase(prev, cur) {
        Increase::Delta(d) => Some(d as f64 / secs),
        Increase::Reset => None,
    }
}

/// [`per_second`] of two optional readings.
pub fn opt_per_second(prev: Option<u64>, cur: Option<u64>, secs: f64) -> Option<f64> {
    per_second(prev?, cur?, secs)
}

/// CPU cores used over the interval, from CPU time in nanoseconds.
pub fn cpu_cores(prev_ns: u64, cur_ns: u64, secs: f64) -> Option<f64> {
    per_second(prev_ns, cur_ns, secs).map(|ns| ns / 1e9)
}

/// Cores used as a percentage of a CPU limit in millicores (1000 = one core);
/// `None` without a (non-zero) limit.
pub fn percent_of_limit(cores: f64, limit_millicores: Option<u64>) -> Option<f64> {
    let l = limit_millicores.filter(|&l| l > 0)?;
    Some(cores * 100_000.0 / l as f64)
}

/// Percentage of CFS periods in which the cgroup was throttled. No elapsed period (no quota,
/// or an idle container) is 0 %.
pub fn throttled_percent(prev: &crate::cgroup::CpuThrottle, cur: &crate::cgroup::CpuThrottle) -> Option<f64> {
    match (increase(prev.periods, cur.periods), increase(prev.throttled_periods, cur.throttled_periods)) {
        (Increase::Delta(0), Increase::Delta(_)) => Some(0.0),
        (Increase::Delta(p), Increase::Delta(t)) => Some((t.min(p) as f64) * 100.0 / p as f64),
        _ => None,
    }
}

/// A container's rates over one interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ContainerRates {
    /// Cores used.
    pub cpu_cores: Option<f64>,
    /// Percent of the CPU limit.
    pub cpu_limit_pct: Option<f64>,
    /// Percent of CFS periods throttled.
    pub throttled_pct: Option<f64>,
    /// Page faults per second.
    pub pgfaults_per_s: Option<f64>,
    /// Block bytes read per second.
    pub blk_read_bps: Option<f64>,
    /// Block bytes written per second.
    pub blk_write_bps: Option<f64>,
    /// Block reads per second.
    pub blk_read_iops: Option<f64>,
    /// Block writes per second.
    pub blk_write_iops: Option<f64>,
    /// Network bytes received per second.
    pub net_rx_bps: Option<f64>,
    /// Network bytes sent per second.
    pub net_tx_bps: Option<f64>,
    /// Network packets received per second.
    pub net_rx_pps: Option<f64>,
    /// Network packets sent per second.
    pub net_tx_pps: Option<f64>,
}

/// Rates of a container between two snapshots; `cpu_limit_millicores` is its CPU limit.
pub fn container_rates(
    prev: &Snapshot<ContainerCounters>,
    cur: &Snapshot<ContainerCounters>,
    cpu_limit_millicores: Option<u64>,
) -> ContainerRates {
    let Some(secs) = interval_secs(prev.at_ms, cur.at_ms) else {
        return ContainerRates::default();
    };
    let (p, c) = (&prev.counters, &cur.counters);
    let r = |a: Option<u64>, b: Option<u64>| opt_per_second(a, b, secs);
    let cores = match (p.cpu_usage_ns, c.cpu_usage_ns) {
        (Some(a), Some(b)) => cpu_cores(a, b, secs),
        _ => None,
    };
    let (pn, cn) = (p.net, c.net);
    ContainerRates {
        cpu_cores: cores,
        cpu_limit_pct: cores.and_then(|x| percent_of_limit(x, cpu_limit_millicores)),
        throttled_pct: match (&p.cpu_throttle, &c.cpu_throttle) {
            (Some(a), Some(b)) => throttled_percent(a, b),
            _ => None,
        },
        pgfaults_per_s: r(p.pgfault, c.pgfault),
        blk_read_bps: r(p.blk_read_bytes, c.blk_read_bytes),
        blk_write_bps: r(p.blk_write_bytes, c.blk_write_bytes),
        blk_read_iops: r(p.blk_read_ios, c.blk_read_ios),
        blk_write_iops: r(p.blk_write_ios, c.blk_write_ios),
        net_rx_bps: r(pn.map(|n| n.rx_bytes), cn.map(|n| n.rx_bytes)),
        net_tx_bps: r(pn.map(|n| n.tx_bytes), cn.map(|n| n.tx_bytes)),
        net_rx_pps: r(pn.map(|n| n.rx_packets), cn.map(|n| n.rx_packets)),
        net_tx_pps: r(pn.map(|n| n.tx_packets), cn.map(|n| n.tx_packets)),
    }
}

/// A node's CPU time split over an interval, percent of all CPUs' time (they sum to 100).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CpuPercent {
    /// User and nice (guest time is inside user).
    pub user: f64,
    /// Kernel: system, irq and softirq.
    pub system: f64,
    /// Idle waiting for I/O.
    pub iowait: f64,
    /// Stolen by the hypervisor.
    pub steal: f64,
    /// Idle.
    pub idle: f64,
}

/// CPU percentages between two `/proc/stat` readings; `None` if no tick elapsed or any
/// counter went down.
pub fn cpu_percent(prev: &CpuTimes, cur: &CpuTimes) -> Option<CpuPercent> {
    let d = |a: u64, b: u64| match increase(a, b) {
        Increase::Delta(x) => Some(x as f64),
        Increase::Reset => None,
    };
    let user = d(prev.user, cur.user)? + d(prev.nice, cur.nice)?;
    let system = d(prev.system, cur.system)? + d(prev.irq, cur.irq)? + d(prev.softirq, cur.softirq)?;
    let iowait = d(prev.iowait, cur.iowait)?;
    let steal = d(prev.steal, cur.steal)?;
    let idle = d(prev.idle, cur.idle)?;
    let total = user + system + iowait + steal + idle;
    if total <= 0.0 {
        return None;
    }
    let pct = |x: f64| x * 100.0 / total;
    Some(CpuPercent { user: pct(user), system: pct(system), iowait: pct(iowait), steal: pct(steal), idle: pct(idle) })
}

/// A node's rates over one interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodeRates {
    /// CPU split.
    pub cpu: Option<CpuPercent>,
    /// Disk bytes read per second.
    pub disk_read_bps: Option<f64>,
    /// Disk bytes written per second.
    pub disk_write_bps: Option<f64>,
    /// Disk reads per second.
    pub disk_read_iops: Option<f64>,
    /// Disk writes per second.
    pub disk_write_iops: Option<f64>,
    /// Network bytes received per second.
    pub net_rx_bps: Option<f64>,
    /// Network bytes sent per second.
    pub net_tx_bps: Option<f64>,
}

/// Rates of a node between two snapshots.
pub fn node_rates(prev: &Snapshot<NodeCounters>, cur: &Snapshot<NodeCounters>) -> NodeRates {
    let Some(secs) = interval_secs(prev.at_ms, cur.at_ms) else {
        return NodeRates::default();
    };
    let (p, c) = (&prev.counters, &cur.counters);
    let r = |a: Option<u64>, b: Option<u64>| opt_per_second(a, b, secs);
    let (pd, cd, pn, cn) = (p.disk, c.disk, p.net, c.net);
    NodeRates {
        cpu: match (&p.cpu, &c.cpu) {
            (Some(a), Some(b)) => cpu_percent(a, b),
            _ => None,
        },
        disk_read_bps: r(pd.map(|d| d.read_bytes), cd.map(|d| d.read_bytes)),
        disk_write_bps: r(pd.map(|d| d.write_bytes), cd.map(|d| d.write_bytes)),
        disk_read_iops: r(pd.map(|d| d.reads), cd.map(|d| d.reads)),
        disk_write_iops: r(pd.map(|d| d.writes), cd.map(|d| d.writes)),
        net_rx_bps: r(pn.map(|n| n.rx_bytes), cn.map(|n| n.rx_bytes)),
        net_tx_bps: r(pn.map(|n| n.tx_bytes), cn.map(|n| n.tx_bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CpuThrottle;
    use crate::node::NetTotals;
    use proptest::prelude::*;

    fn snap(at_ms: u64, cpu_ns: u64, rx: u64) -> Snapshot<ContainerCounters> {
        Snapshot {
            at_ms,
            counters: ContainerCounters {
                cpu_usage_ns: Some(cpu_ns),
                net: Some(NetTotals { rx_bytes: rx, ..Default::default() }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn basic_rates() {
        assert_eq!(per_second(100, 300, 2.0), Some(100.0));
        assert_eq!(per_second(5, 5, 1.0), Some(0.0));
        assert_eq!(cpu_cores(0, 500_000_000, 1.0), Some(0.5));
        assert_eq!(percent_of_limit(0.5, Some(250)), Some(200.0));
        assert_eq!(percent_of_limit(0.5, Some(0)), None);
        assert_eq!(percent_of_limit(0.5, None), None);
        let r = container_rates(&snap(1000, 1_000_000_000, 0), &snap(3000, 2_000_000_000, 2048), Some(500));
        assert_eq!(r.cpu_cores, Some(0.5));
        assert_eq!(r.cpu_limit_pct, Some(100.0));
        assert_eq!(r.net_rx_bps, Some(1024.0));
        assert_eq!(r.net_tx_bps, Some(0.0));
        assert_eq!(r.blk_read_bps, None, "counter absent from both snapshots");
    }

    #[test]
    fn reset_gives_no_rate() {
        assert_eq!(increase(10, 3), Increase::Reset);
        assert_eq!(per_second(u64::MAX, 0, 1.0), None);
        // A container migrated or restarted: its new cgroup's counters start near zero.
        let r = container_rates(&snap(0, 50_000_000_000, 1 << 30), &snap(1000, 10_000_000, 100), Some(1000));
        assert_eq!((r.cpu_cores, r.cpu_limit_pct, r.net_rx_bps), (None, None, None));
        // ... and the interval after it is normal again.
        let r = container_rates(&snap(1000, 10_000_000, 100), &snap(2000, 260_000_000, 1100), Some(1000));
        assert_eq!(r.cpu_cores, Some(0.25));
        assert_eq!(r.net_rx_bps, Some(1000.0));
    }

    #[test]
    fn zero_and_backwards_intervals() {
        assert_eq!(interval_secs(5, 5), None);
        assert_eq!(interval_secs(6, 5), None);
        assert_eq!(per_second(0, 10, 0.0), None);
        assert_eq!(per_second(0, 10, f64::NAN), None);
        assert_eq!(per_second(0, 10, -1.0), None);
        let r = container_rates(&snap(1000, 0, 0), &snap(1000, 1_000_000, 10), Some(1000));
        assert_eq!(r, ContainerRates::default());
        let r = container_rates(&snap(2000, 0, 0), &snap(1000, 1_000_000, 10), None);
        assert_eq!(r, ContainerRates::default());
    }

    #[test]
    fn throttling() {
        let t = |p, tp| CpuThrottle { periods: p, throttled_periods: tp, throttled_ns: 0 };
        assert_eq!(throttled_percent(&t(10, 5), &t(20, 10)), Some(50.0));
        assert_eq!(throttled_percent(&t(10, 5), &t(10, 5)), Some(0.0));
        assert_eq!(throttled_percent(&t(10, 5), &t(5, 5)), None);
        assert_eq!(throttled_percent(&t(10, 5), &t(20, 2)), None);
        // Never above 100 %, even if the kernel's two counters race.
        assert_eq!(throttled_percent(&t(10, 5), &t(11, 9)), Some(100.0));
    }

    #[test]
    fn node_cpu_split() {
        let a = CpuTimes { user: 100, nice: 0, system: 50, idle: 800, iowait: 20, irq: 0, softirq: 10, steal: 20 };
        let b = CpuTimes { user: 150, nice: 10, system: 70, idle: 1000, iowait: 30, irq: 5, softirq: 15, steal: 20 };
        let p = cpu_percent(&a, &b).unwrap();
        // deltas: user 60, system 30, iowait 10, steal 0, idle 200 -> total 300
        assert_eq!((p.user, p.system, p.iowait, p.steal), (20.0, 10.0, 10.0 / 3.0, 0.0));
        assert!((p.user + p.system + p.iowait + p.steal + p.idle - 100.0).abs() < 1e-9);
        assert_eq!(cpu_percent(&a, &a), None, "no tick elapsed");
        assert_eq!(cpu_percent(&b, &a), None, "counters went down");
    }

    #[test]
    fn node_rates_from_recorded_stat() {
        let st = crate::node::parse_proc_stat(include_str!("../tests/fixtures/proc/stat")).unwrap();
        let mut later = st.cpu;
        later.user += 100;
        later.idle += 100;
        let prev = Snapshot { at_ms: 0, counters: NodeCounters { cpu: Some(st.cpu), ..Default::default() } };
        let cur = Snapshot { at_ms: 1000, counters: NodeCounters { cpu: Some(later), ..Default::default() } };
        let r = node_rates(&prev, &cur);
        assert_eq!(r.cpu.unwrap().user, 50.0);
        assert_eq!(r.disk_read_bps, None);
    }

    proptest! {
        #[test]
        fn rates_are_never_negative_or_infinite(prev in any::<u64>(), cur in any::<u64>(), a in any::<u32>(), b in any::<u32>()) {
            if let Some(secs) = interval_secs(a as u64, b as u64)
                && let Some(x) = per_second(prev, cur, secs)
            {
                prop_assert!(x.is_finite() && x >= 0.0);
            }
        }
    }
}
