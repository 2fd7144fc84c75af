//! Classes of workload, by stated rules on a container's [`Features`].
//!
//! Rules rather than clustering: the classes are named in advance (the operator asks "which
//! containers are I/O-bound?"), a rule says why a container is in its class, and it gives the
//! same answer for one container as for a thousand; k-means would find unnamed groups whose
//! meaning changes with the mix of containers recorded. In order:
//!
//! 1. **idle**: mean CPU below `idle_cpu_cores`, block I/O and network below `idle_bps`, and
//!    memory below `idle_memory_bytes`;
//! 2. **bursty**: the coefficient of variation of CPU is at least `bursty_cv` (its standard
//!    deviation exceeds its mean: mostly quiet, sometimes busy);
//! 3. otherwise the resource it uses most, each relative to a reference level of "heavy use":
//!    **cpu-bound** (mean cores / `cpu_cores`, or mean use of its CPU limit, or CPU pressure
//!    stall / `stall_pct`), **memory-bound** (mean memory / `memory_bytes`, or memory stall /
//!    `stall_pct`), **io-bound** (block I/O / `blk_bps`, or I/O stall / `stall_pct`),
//!    **network-bound** (network / `net_bps`). The largest ratio wins.

use serde::Serialize;

use crate::features::Features;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    CpuBound,
    MemoryBound,
    IoBound,
    NetworkBound,
    Idle,
    Bursty,
}

impl Class {
    pub const ALL: [Class; 6] =
        [Class::CpuBound, Class::MemoryBound, Class::IoBound, Class::NetworkBound, Class::Idle, Class::Bursty];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::CpuBound => "cpu-bound",
            Class::MemoryBound => "memory-bound",
            Class::IoBound => "io-bound",
            Class::NetworkBound => "network-bound",
            Class::Idle => "idle",
            Class::Bursty => "bursty",
        }
    }
}

/// The thresholds of the rules (module docs), with their defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassRules {
    pub idle_cpu_cores: f64,
    pub idle_bps: f64,
    pub idle_memory_bytes: f64,
    pub bursty_cv: f64,
    pub cpu_cores: f64,
    pub memory_bytes: f64,
    pub blk_bps: f64,
    pub net_bps: f64,
    pub stall_pct: f64,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Default for ClassRules {
    fn default() -> Self {
        ClassRules {
            idle_cpu_cores: 0.02,
            idle_bps: 64.0 * 1024.0,
            idle_memory_bytes: 64.0 * MIB,
            bursty_cv: 1.0,
            cpu_cores: 1.0,
            memory_bytes: 1024.0 * MIB,
            blk_bps: 20.0 * MIB,
            net_bps: 10.0 * MIB,
            stall_pct: 10.0,
        }
    }
}

/// A container's class and the sentence saying why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub class: Class,
    pub why: String,
}

impl ClassRules {
    /// Each resource's use relative to its heavy-use reference, in the order cpu, memory, io,
    /// network.
    pub fn ratios(&self, f: &Features) -> [f64; 4] {
        let stall = |p: Option<f64>| p.unwrap_or(0.0) / self.stall_pct;
        let cpu =
            (f.cpu_mean / self.cpu_cores).max(f.cpu_limit_pct_mean.unwrap_or(0.0) / 100.0).max(stall(f.psi_cpu_mean));
        let mem = (f.memory_mean_bytes.unwrap_or(0.0) / self.memory_bytes).max(stall(f.psi_mem_mean));
        let io = (f.blk_mean_bps.unwrap_or(0.0) / self.blk_bps).max(stall(f.psi_io_mean));
        let net = f.net_mean_bps.unwrap_or(0.0) / self.net_bps;
        [cpu, mem, io, net]
    }

    pub fn classify(&self, f: &Features) -> Verdict {
        let blk = f.blk_mean_bps.unwrap_or(0.0);
        let net = f.net_mean_bps.unwrap_or(0.0);
        let mem = f.memory_mean_bytes.unwrap_or(0.0);
        if f.cpu_mean < self.idle_cpu_cores
            && blk < self.idle_bps
            && net < self.idle_bps
            && mem < self.idle_memory_bytes
        {
            return Verdict {
                class: Class::Idle,
                why: format!(
                    "CPU {:.3} cores, block I/O {:.0} B/s, network {:.0} B/s, memory {:.0} MiB: all below the idle levels",
                    f.cpu_mean,
                    blk,
                    net,
                    mem / MIB
                ),
            };
        }
        if f.cpu_cv >= self.bursty_cv {
            return Verdict {
                class: Class::Bursty,
                why: format!(
                    "CPU varies by {:.2}x its mean (coefficient of variation, bursty at {}); peak {:.2} cores vs mean {:.2}",
                    f.cpu_cv, self.bursty_cv, f.cpu_p95, f.cpu_mean
                ),
            };
        }
        let r = self.ratios(f);
        let names = ["CPU", "memory", "block I/O", "network"];
        let classes = [Class::CpuBound, Class::MemoryBound, Class::IoBound, Class::NetworkBound];
        let top = (0..4).max_by(|&a, &b| r[a].total_cmp(&r[b]).then(b.cmp(&a))).unwrap_or(0);
        let all: Vec<String> = (0..4).map(|i| format!("{} {:.2}", names[i], r[i])).collect();
        Verdict {
            class: classes[top],
            why: format!("{} is its most used resource relative to heavy use ({})", names[top], all.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(cpu: f64, cv: f64) -> Features {
        Features {
            samples: 100,
            span_secs: 99.0,
            cpu_mean: cpu,
            cpu_p95: cpu * (1.0 + cv),
            cpu_cv: cv,
            cpu_peak_to_mean: 1.0 + cv,
            cpu_limit_pct_mean: None,
            throttled_pct_mean: None,
            memory_mean_bytes: Some(10.0 * MIB),
            memory_peak_bytes: Some(10.0 * MIB),
            blk_mean_bps: Some(0.0),
            blk_p95_bps: Some(0.0),
            net_mean_bps: Some(0.0),
            net_p95_bps: Some(0.0),
            pgfaults_mean_per_s: None,
            psi_cpu_mean: None,
            psi_mem_mean: None,
            psi_io_mean: None,
        }
    }

    #[test]
    fn each_rule_gives_its_class() {
        let rules = ClassRules::default();
        let class = |f: &Features| rules.classify(f).class;
        assert_eq!(class(&features(0.001, 0.0)), Class::Idle);
        assert_eq!(class(&features(0.5, 1.7)), Class::Bursty);
        assert_eq!(class(&features(0.9, 0.1)), Class::CpuBound);
        // A container using all of a small CPU limit is CPU-bound although it uses few cores.
        let limited =
            Features { cpu_limit_pct_mean: Some(98.0), memory_mean_bytes: Some(500.0 * MIB), ..features(0.3, 0.05) };
        assert_eq!(class(&limited), Class::CpuBound);
        let memory = Features { memory_mean_bytes: Some(2048.0 * MIB), ..features(0.2, 0.1) };
        assert_eq!(class(&memory), Class::MemoryBound);
        let io = Features { blk_mean_bps: Some(40.0 * MIB), ..features(0.2, 0.1) };
        assert_eq!(class(&io), Class::IoBound);
        let io_stall = Features { psi_io_mean: Some(30.0), ..features(0.2, 0.1) };
        assert_eq!(class(&io_stall), Class::IoBound);
        let net = Features { net_mean_bps: Some(30.0 * MIB), ..features(0.2, 0.1) };
        assert_eq!(class(&net), Class::NetworkBound);
        // Idle needs every resource quiet: no CPU but heavy network is not idle.
        let quiet_cpu_busy_net = Features { net_mean_bps: Some(5.0 * MIB), ..features(0.0, 0.0) };
        assert_eq!(class(&quiet_cpu_busy_net), Class::NetworkBound);
        assert!(rules.classify(&net).why.contains("network 3.00"), "{}", rules.classify(&net).why);
    }
}
