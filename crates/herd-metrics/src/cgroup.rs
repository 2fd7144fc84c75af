//! Parsers for the cgroup v1 and v2 files that per-container metrics come from, and
//! [`ContainerCounters`], one container's raw cumulative counters and gauges.
//!
//! Every parser takes a file's contents and returns a typed value or a [`ParseError`]; none
//! does I/O ([`crate::read`] reads the files). Units are normalised: CPU time in nanoseconds,
//! memory in bytes.
//!
//! | figure | cgroup v1 | cgroup v2 |
//! |---|---|---|
//! | CPU time | `cpuacct.usage` (ns), `cpuacct.stat` (`USER_HZ` ticks) | `cpu.stat` `usage_usec`, `user_usec`, `system_usec` |
//! | throttling | `cpu.stat` `nr_periods`, `nr_throttled`, `throttled_time` (ns) | `cpu.stat` `nr_periods`, `nr_throttled`, `throttled_usec` |
//! | memory | `memory.usage_in_bytes`, `memory.stat` | `memory.current`, `memory.stat` |
//! | OOM kills | `memory.oom_control` `oom_kill` | `memory.events` `oom`, `oom_kill` |
//! | block I/O | `blkio.throttle.io_service_bytes`, `blkio.throttle.io_serviced` | `io.stat` |
//! | pids | `pids.current` | `pids.current` |
//! | pressure | (the v2 mount of a hybrid host) | `cpu.pressure`, `memory.pressure`, `io.pressure` |
//!
//! Working set is usage minus inactive file pages (the figure kubelet and cAdvisor use):
//! the memory the kernel could not simply drop under pressure.

use serde::{Deserialize, Serialize};

use crate::node::NetTotals;
use crate::parse::{Keyed, ParseError, bad_line, single_u64};
use crate::psi::Pressure;

pub use crate::read::{
    CgroupReader, CounterRead, DetailSchedule, FileProblem, Files, ProblemReason, V1Paths, read_v1, read_v2,
};

/// `USER_HZ`, the unit of `cpuacct.stat`: 100 on every Linux architecture Herd runs on
/// (the kernel exports clock ticks to user space at this fixed rate whatever `CONFIG_HZ` is).
pub const USER_HZ: u64 = 100;

/// A single unsigned integer file: v1 `cpuacct.usage`, `memory.usage_in_bytes`; v2
/// `memory.current`; both `pids.current`.
pub fn parse_u64_file(s: &str) -> Result<u64, ParseError> {
    single_u64(s)
}

/// v1 `cpuacct.stat`: user and system time in `USER_HZ` ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuacctStat {
    /// User time, ticks.
    pub user_ticks: u64,
    /// System time, ticks.
    pub system_ticks: u64,
}

impl CpuacctStat {
    /// User time in nanoseconds.
    pub fn user_ns(&self) -> u64 {
        self.user_ticks.saturating_mul(1_000_000_000 / USER_HZ)
    }
    /// System time in nanoseconds.
    pub fn system_ns(&self) -> u64 {
        self.system_ticks.saturating_mul(1_000_000_000 / USER_HZ)
    }
}

/// Parses v1 `cpuacct.stat` (`user N` / `system N`).
pub fn parse_cpuacct_stat(s: &str) -> Result<CpuacctStat, ParseError> {
    let k = Keyed::new(s)?;
    Ok(CpuacctStat { user_ticks: k.req("user")?, system_ticks: k.req("system")? })
}

/// CFS bandwidth counters (both versions' `cpu.stat`), normalised to nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuThrottle {
    /// Enforcement periods that elapsed while the cgroup had runnable tasks.
    pub periods: u64,
    /// Of those, periods in which the cgroup hit its quota.
    pub throttled_periods: u64,
    /// Total time throttled, nanoseconds.
    pub throttled_ns: u64,
}

/// Parses v1 `cpu.stat` (`nr_periods`, `nr_throttled`, `throttled_time` in ns).
pub fn parse_cpu_stat_v1(s: &str) -> Result<CpuThrottle, ParseError> {
    let k = Keyed::new(s)?;
    Ok(CpuThrottle {
        periods: k.req("nr_periods")?,
        throttled_periods: k.req("nr_throttled")?,
        throttled_ns: k.req("throttled_time")?,
    })
}

/// v2 `cpu.stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStatV2 {
    /// Total CPU time, microseconds.
    pub usage_usec: u64,
    /// User CPU time, microseconds.
    pub user_usec: u64,
    /// System CPU time, microseconds.
    pub system_usec: u64,
    /// Present only when the `cpu` controller is enabled for the cgroup (the three usage
    /// lines are always there, even on a v2 mount without controllers).
    pub throttle: Option<CpuThrottle>,
}

/// Parses v2 `cpu.stat`.
pub fn parse_cpu_stat_v2(s: &str) -> Result<CpuStatV2, ParseError> {
    let k = Keyed::new(s)?;
    let throttle = match (k.get("nr_periods")?, k.get("nr_throttled")?, k.get("throttled_usec")?) {
        (Some(periods), Some(throttled_periods), Some(us)) => {
            Some(CpuThrottle { periods, throttled_periods, throttled_ns: us.saturating_mul(1000) })
        }
        _ => None,
    };
    Ok(CpuStatV2 {
        usage_usec: k.req("usage_usec")?,
        user_usec: k.req("user_usec")?,
        system_usec: k.req("system_usec")?,
        throttle,
    })
}

/// The figures Herd takes from v1 `memory.stat`. The hierarchical `total_*` values (which
/// include child cgroups) are preferred when present, the local ones otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStatV1 {
    /// Anonymous and swap-cache memory (`total_rss`/`rss`), bytes.
    pub rss: u64,
    /// Page cache (`total_cache`/`cache`), bytes.
    pub cache: u64,
    /// Inactive file pages (`total_inactive_file`/`inactive_file`), bytes.
    pub inactive_file: Option<u64>,
    /// Page faults, cumulative.
    pub pgfault: Option<u64>,
    /// Major page faults, cumulative.
    pub pgmajfault: Option<u64>,
}

/// Parses v1 `memory.stat`.
pub fn parse_memory_stat_v1(s: &str) -> Result<MemoryStatV1, ParseError> {
    let k = Keyed::new(s)?;
    Ok(MemoryStatV1 {
        rss: k.first(&["total_rss", "rss"])?.ok_or(ParseError::Missing("rss"))?,
        cache: k.first(&["total_cache", "cache"])?.ok_or(ParseError::Missing("cache"))?,
        inactive_file: k.first(&["total_inactive_file", "inactive_file"])?,
        pgfault: k.first(&["total_pgfault", "pgfault"])?,
        pgmajfault: k.first(&["total_pgmajfault", "pgmajfault"])?,
    })
}

/// The figures Herd takes from v2 `memory.stat` (always hierarchical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStatV2 {
    /// Anonymous memory, bytes (Herd's "RSS" on v2).
    pub anon: u64,
    /// File-backed memory incl. page cache, bytes (Herd's "cache" on v2).
    pub file: u64,
    /// Inactive file pages, bytes.
    pub inactive_file: Option<u64>,
    /// Page faults, cumulative.
    pub pgfault: Option<u64>,
    /// Major page faults, cumulative.
    pub pgmajfault: Option<u64>,
}

/// Parses v2 `memory.stat`.
pub fn parse_memory_stat_v2(s: &str) -> Result<MemoryStatV2, ParseError> {
    let k = Keyed::new(s)?;
    Ok(MemoryStatV2 {
        anon: k.req("anon")?,
        file: k.req("file")?,
        inactive_file: k.get("inactive_file")?,
        pgfault: k.get("pgfault")?,
        pgmajfault: k.get("pgmajfault")?,
    })
}

/// v1 `memory.oom_control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OomControlV1 {
    /// The OOM killer is disabled for the cgroup.
    pub oom_kill_disable: bool,
    /// The cgroup is currently under OOM (tasks paused, only with the killer disabled).
    pub under_oom: bool,
    /// Processes killed by the OOM killer, cumulative (kernel 4.13 and later).
    pub oom_kill: Option<u64>,
}

/// Parses v1 `memory.oom_control`.
pub fn parse_oom_control_v1(s: &str) -> Result<OomControlV1, ParseError> {
    let k = Keyed::new(s)?;
    Ok(OomControlV1 {
        oom_kill_disable: k.req("oom_kill_disable")? != 0,
        under_oom: k.get("under_oom")?.unwrap_or(0) != 0,
        oom_kill: k.get("oom_kill")?,
    })
}

/// v2 `memory.events` (cumulative event counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEventsV2 {
    /// Reclaim below `memory.low`.
    pub low: Option<u64>,
    /// Throttled for exceeding `memory.high`.
    pub high: Option<u64>,
    /// Allocation attempts over `memory.max`.
    pub max: Option<u64>,
    /// The cgroup hit its limit and the OOM killer was invoked.
    pub oom: u64,
    /// Processes killed by the OOM killer.
    pub oom_kill: u64,
}

/// Parses v2 `memory.events`.
pub fn parse_memory_events_v2(s: &str) -> Result<MemoryEventsV2, ParseError> {
    let k = Keyed::new(s)?;
    Ok(MemoryEventsV2 {
        low: k.get("low")?,
        high: k.get("high")?,
        max: k.get("max")?,
        oom: k.req("oom")?,
        oom_kill: k.req("oom_kill")?,
    })
}

/// A block device number, `MAJ:MIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct DevId {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl std::str::FromStr for DevId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, b) = s.split_once(':').ok_or(())?;
        Ok(DevId { major: a.parse().map_err(|_| ())?, minor: b.parse().map_err(|_| ())? })
    }
}

/// One device's lines of a v1 blkio "rwstat" file (bytes or operations, by the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlkioDevice {
    /// The device.
    pub dev: DevId,
    /// `Read`.
    pub read: u64,
    /// `Write`.
    pub write: u64,
    /// `Sync`.
    pub sync: u64,
    /// `Async`.
    pub async_: u64,
    /// `Discard` (kernel 4.19 and later).
    pub discard: Option<u64>,
    /// `Total` (read + write + discard).
    pub total: u64,
}

/// A v1 `blkio.throttle.io_service_bytes` or `blkio.throttle.io_serviced` file.
///
/// Note: on current kernels these throttle-layer statistics only count I/O to devices the
/// cgroup (or an ancestor) has a `blkio.throttle.*_device` rule for; elsewhere the file
/// reads just `Total 0` (recorded on this project's 6.18 host). Read and write are summed
/// over devices; `Discard` is kept separate (it is part of `Total`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlkioV1 {
    /// Per-device counters, in file order.
    pub devices: Vec<BlkioDevice>,
    /// The final `Total N` line.
    pub total: Option<u64>,
}

impl BlkioV1 {
    /// `Read` summed over devices.
    pub fn read_sum(&self) -> u64 {
        self.devices.iter().map(|d| d.read).fold(0, u64::saturating_add)
    }
    /// `Write` summed over devices.
    pub fn write_sum(&self) -> u64 {
        self.devices.iter().map(|d| d.write).fold(0, u64::saturating_add)
    }
}

/// Parses a v1 blkio rwstat file (`MAJ:MIN Op N` lines and a final `Total N`). Unknown
/// operations are ignored.
pub fn parse_blkio_v1(s: &str) -> Result<BlkioV1, ParseError> {
    if s.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut out = BlkioV1::default();
    for (i, line) in s.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || bad_line(i, "expected `MAJ:MIN Op N` or `Total N`", line);
        match f.as_slice() {
            [] => {}
            ["Total", n] => out.total = Some(n.parse().map_err(|_| bad())?),
            [dev, op, n] => {
                let dev: DevId = dev.parse().map_err(|_| bad())?;
                let n: u64 = n.parse().map_err(|_| bad())?;
                let d = match out.devices.iter_mut().find(|d| d.dev == dev) {
                    Some(d) => d,
                    None => {
                        out.devices.push(BlkioDevice { dev, ..Default::default() });
                        out.devices.last_mut().expect("just pushed")
                    }
                };
                match *op {
                    "Read" => d.read = n,
                    "Write" => d.write = n,
                    "Sync" => d.sync = n,
                    "Async" => d.async_ = n,
                    "Discard" => d.discard = Some(n),
                    "Total" => d.total = n,
                    _ => {}
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// One line of v2 `io.stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoStatDevice {
    /// The device.
    pub dev: DevId,
    /// Bytes read.
    pub rbytes: u64,
    /// Bytes written.
    pub wbytes: u64,
    /// Read operations.
    pub rios: u64,
    /// Write operations.
    pub wios: u64,
    /// Bytes discarded (kernel 5.1 and later).
    pub dbytes: Option<u64>,
    /// Discard operations (kernel 5.1 and later).
    pub dios: Option<u64>,
}

/// Totals of v2 `io.stat` over all devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoTotals {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read operations.
    pub read_ios: u64,
    /// Write operations.
    pub write_ios: u64,
}

/// Sums `io.stat` lines over devices.
pub fn io_totals(devs: &[IoStatDevice]) -> IoTotals {
    devs.iter().fold(IoTotals::default(), |t, d| IoTotals {
        read_bytes: t.read_bytes.saturating_add(d.rbytes),
        write_bytes: t.write_bytes.saturating_add(d.wbytes),
        read_ios: t.read_ios.saturating_add(d.rios),
        write_ios: t.write_ios.saturating_add(d.wios),
    })
}

/// Parses v2 `io.stat` (`MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..`;
/// unknown keys such as iocost's `cost.*` are ignored). An empty file is valid: no I/O yet.
pub fn parse_io_stat(s: &str) -> Result<Vec<IoStatDevice>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in s.lines().enumerate() {
        let mut f = line.split_whitespace();
        let Some(dev) = f.next() else { continue };
        let bad = || bad_line(i, "expected `MAJ:MIN key=value ...`", line);
        let dev: DevId = dev.parse().map_err(|_| bad())?;
        let mut d = IoStatDevice { dev, ..Default::default() };
        let mut seen = 0u8;
        for kv in f {
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            let slot = match k {
                "rbytes" => &mut d.rbytes,
                "wbytes" => &mut d.wbytes,
                "rios" => &mut d.rios,
                "wios" => &mut d.wios,
                "dbytes" => d.dbytes.insert(0),
                "dios" => d.dios.insert(0),
                _ => continue,
            };
            *slot = v.parse().map_err(|_| bad())?;
            seen += 1;
        }
        if seen == 0 {
            return Err(bad());
        }
        out.push(d);
    }
    Ok(out)
}

/// One container's raw counters and gauges at one instant, from either cgroup version.
/// Cumulative counters only ever grow while the cgroup lives; a smaller value later means the
/// cgroup was recreated (restart, migration), see [`crate::rate`]. Every field is `None` when
/// its file was missing or unreadable.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerCounters {
    /// CPU time, ns (counter).
    pub cpu_usage_ns: Option<u64>,
    /// User CPU time, ns (counter; 10 ms granularity on v1).
    pub cpu_user_ns: Option<u64>,
    /// System CPU time, ns (counter; 10 ms granularity on v1).
    pub cpu_system_ns: Option<u64>,
    /// CFS bandwidth counters (counters).
    pub cpu_throttle: Option<CpuThrottle>,
    /// Memory charged to the cgroup, bytes (gauge).
    pub mem_usage: Option<u64>,
    /// Usage minus inactive file pages, bytes (gauge).
    pub mem_working_set: Option<u64>,
    /// Inactive file pages (`memory.stat`'s `inactive_file`, 0 where it lacks the line), bytes
    /// (gauge).
    pub mem_inactive_file: Option<u64>,
    /// RSS (v1 `rss`, v2 `anon`), bytes (gauge).
    pub mem_rss: Option<u64>,
    /// Page cache (v1 `cache`, v2 `file`), bytes (gauge).
    pub mem_cache: Option<u64>,
    /// Page faults (counter).
    pub pgfault: Option<u64>,
    /// Major page faults (counter).
    pub pgmajfault: Option<u64>,
    /// Processes killed by the OOM killer (counter).
    pub oom_kills: Option<u64>,
    /// Times the cgroup hit its limit and invoked the OOM killer (counter, v2 only).
    pub oom_events: Option<u64>,
    /// Bytes read from block devices (counter).
    pub blk_read_bytes: Option<u64>,
    /// Bytes written to block devices (counter).
    pub blk_write_bytes: Option<u64>,
    /// Block read operations (counter).
    pub blk_read_ios: Option<u64>,
    /// Block write operations (counter).
    pub blk_write_ios: Option<u64>,
    /// Network traffic of the container's namespace, non-loopback interfaces (counters);
    /// filled by [`crate::read::read_container_net`], not by the cgroup readers.
    pub net: Option<NetTotals>,
    /// Tasks in the cgroup (gauge).
    pub pids: Option<u64>,
    /// CPU pressure.
    pub psi_cpu: Option<Pressure>,
    /// Memory pressure.
    pub psi_memory: Option<Pressure>,
    /// I/O pressure.
    pub psi_io: Option<Pressure>,
}

/// Working set: `usage - inactive_file`, saturating at zero (as kubelet computes it).
pub fn working_set(usage: u64, inactive_file: Option<u64>) -> u64 {
    usage.saturating_sub(inactive_file.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded on this project's host (kernel 6.18, cgroup v1 with a v2 mount at
    // /sys/fs/cgroup/unified, no controllers enabled on v2): a test cgroup with a 50 % CPU
    // quota, a CPU burn, direct and buffered dd, an OOM kill at a 16 MiB limit, then a 40 MiB
    // allocation beside 32 MiB of page cache.
    const V1_CPUACCT_USAGE: &str = include_str!("../tests/fixtures/v1/cpuacct.usage");
    const V1_CPUACCT_STAT: &str = include_str!("../tests/fixtures/v1/cpuacct.stat");
    const V1_CPU_STAT: &str = include_str!("../tests/fixtures/v1/cpu.stat");
    const V1_MEM_USAGE: &str = include_str!("../tests/fixtures/v1/memory.usage_in_bytes");
    const V1_MEM_STAT: &str = include_str!("../tests/fixtures/v1/memory.stat");
    const V1_OOM: &str = include_str!("../tests/fixtures/v1/memory.oom_control");
    const V1_BLK_BYTES: &str = include_str!("../tests/fixtures/v1/blkio.throttle.io_service_bytes");
    const V1_BLK_IOS: &str = include_str!("../tests/fixtures/v1/blkio.throttle.io_serviced");
    const V1_PIDS: &str = include_str!("../tests/fixtures/v1/pids.current");
    // The same test cgroup's directory on the v2 mount.
    const HYBRID_CPU_STAT: &str = include_str!("../tests/fixtures/v2-hybrid/cpu.stat");
    // Hand-written: this host's v2 mount has no memory/io/pids/cpu controllers, so these
    // files follow the kernel's cgroup-v2 documentation and a 6.x kernel's output.
    const V2_CPU_STAT: &str = include_str!("../tests/fixtures/v2/cpu.stat");
    const V2_MEM_STAT: &str = include_str!("../tests/fixtures/v2/memory.stat");
    const V2_MEM_EVENTS: &str = include_str!("../tests/fixtures/v2/memory.events");
    const V2_IO_STAT: &str = include_str!("../tests/fixtures/v2/io.stat");

    #[test]
    fn v1_cpu() {
        assert_eq!(parse_u64_file(V1_CPUACCT_USAGE), Ok(2_853_421_927));
        let st = parse_cpuacct_stat(V1_CPUACCT_STAT).unwrap();
        assert_eq!(st, CpuacctStat { user_ticks: 157, system_ticks: 127 });
        assert_eq!(st.user_ns(), 1_570_000_000);
        let th = parse_cpu_stat_v1(V1_CPU_STAT).unwrap();
        assert_eq!(th, CpuThrottle { periods: 62, throttled_periods: 55, throttled_ns: 2_052_919_228 });
    }

    #[test]
    fn v1_memory() {
        assert_eq!(parse_u64_file(V1_MEM_USAGE), Ok(77_111_296));
        let m = parse_memory_stat_v1(V1_MEM_STAT).unwrap();
        assert_eq!(m.rss, 43_003_904);
        assert_eq!(m.cache, 33_857_536);
        assert_eq!(m.inactive_file, Some(33_558_528));
        assert_eq!(m.pgmajfault, Some(19));
        assert_eq!(working_set(77_111_296, m.inactive_file), 43_552_768);
        let oom = parse_oom_control_v1(V1_OOM).unwrap();
        assert_eq!(oom, OomControlV1 { oom_kill_disable: false, under_oom: false, oom_kill: Some(1) });
    }

    #[test]
    fn v1_memory_stat_prefers_hierarchical_totals() {
        let m = parse_memory_stat_v1("rss 10\ncache 20\ninactive_file 5\ntotal_rss 100\ntotal_cache 200\n").unwrap();
        assert_eq!((m.rss, m.cache, m.inactive_file, m.pgfault), (100, 200, Some(5), None));
        assert_eq!(parse_memory_stat_v1("cache 1\n"), Err(ParseError::Missing("rss")));
    }

    #[test]
    fn v1_oom_control_before_4_13() {
        let oom = parse_oom_control_v1("oom_kill_disable 1\nunder_oom 1\n").unwrap();
        assert_eq!(oom, OomControlV1 { oom_kill_disable: true, under_oom: true, oom_kill: None });
    }

    #[test]
    fn v1_blkio() {
        let b = parse_blkio_v1(V1_BLK_BYTES).unwrap();
        assert_eq!(b.devices.len(), 1);
        let d = b.devices[0];
        assert_eq!(d.dev, DevId { major: 254, minor: 0 });
        assert_eq!((d.read, d.write, d.discard, d.total), (16_781_312, 67_108_864, Some(67_108_864), 150_999_040));
        assert_eq!(b.total, Some(150_999_040));
        let ios = parse_blkio_v1(V1_BLK_IOS).unwrap();
        assert_eq!((ios.read_sum(), ios.write_sum()), (17, 64));
        // A cgroup without throttle rules (recorded from a running container).
        let empty = parse_blkio_v1(include_str!("../tests/fixtures/v1-container/blkio.throttle.io_serviced")).unwrap();
        assert_eq!((empty.devices.len(), empty.total, empty.read_sum()), (0, Some(0), 0));
        // Two devices are summed.
        let two =
            parse_blkio_v1("8:0 Read 10\n8:0 Write 1\n8:16 Read 5\n8:16 Write 2\n8:16 Frob 9\nTotal 18\n").unwrap();
        assert_eq!((two.read_sum(), two.write_sum()), (15, 3));
        assert!(parse_blkio_v1("").is_err());
        assert!(matches!(parse_blkio_v1("Total 0\n8:0 Read\n"), Err(ParseError::BadLine { line: 2, .. })));
        assert!(parse_blkio_v1("8-0 Read 1\n").is_err());
    }

    #[test]
    fn v1_pids() {
        assert_eq!(parse_u64_file(V1_PIDS), Ok(1));
    }

    #[test]
    fn v2_cpu_without_controller() {
        let c = parse_cpu_stat_v2(HYBRID_CPU_STAT).unwrap();
        assert_eq!(c.usage_usec, 2_890_381);
        assert_eq!(c.user_usec + c.system_usec, 2_890_381);
        assert_eq!(c.throttle, None);
    }

    #[test]
    fn v2_cpu_with_controller() {
        let c = parse_cpu_stat_v2(V2_CPU_STAT).unwrap();
        assert_eq!(c.usage_usec, 2_853_421);
        assert_eq!(c.throttle, Some(CpuThrottle { periods: 62, throttled_periods: 55, throttled_ns: 2_052_919_000 }));
        assert_eq!(parse_cpu_stat_v2("user_usec 1\nsystem_usec 1\n"), Err(ParseError::Missing("usage_usec")));
    }

    #[test]
    fn v2_memory() {
        let m = parse_memory_stat_v2(V2_MEM_STAT).unwrap();
        assert_eq!((m.anon, m.file), (43_003_904, 33_857_536));
        assert_eq!(m.inactive_file, Some(33_558_528));
        assert_eq!((m.pgfault, m.pgmajfault), (Some(16368), Some(19)));
        let e = parse_memory_events_v2(V2_MEM_EVENTS).unwrap();
        assert_eq!((e.oom, e.oom_kill, e.max), (1, 1, Some(23)));
        assert_eq!(parse_memory_events_v2("low 0\n"), Err(ParseError::Missing("oom")));
    }

    #[test]
    fn v2_io() {
        let devs = parse_io_stat(V2_IO_STAT).unwrap();
        assert_eq!(devs.len(), 2);
        assert_eq!(devs[0].dev, DevId { major: 254, minor: 0 });
        assert_eq!(devs[0].dbytes, Some(67_108_864));
        let t = io_totals(&devs);
        assert_eq!(t, IoTotals { read_bytes: 16_785_408, write_bytes: 67_108_864, read_ios: 18, write_ios: 64 });
        assert_eq!(parse_io_stat(""), Ok(vec![]));
        assert!(parse_io_stat("8:0 rbytes=x wbytes=0\n").is_err());
        assert!(parse_io_stat("8:0\n").is_err());
        assert!(parse_io_stat("sda rbytes=1\n").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let junk = ["", "\0\0\0", "a b c d e", "Total", "1:2:3 Read 4", "some avg10=1", "🦀 1"];
        for j in junk {
            let _ = parse_cpuacct_stat(j);
            let _ = parse_cpu_stat_v1(j);
            let _ = parse_cpu_stat_v2(j);
            let _ = parse_memory_stat_v1(j);
            let _ = parse_memory_stat_v2(j);
            let _ = parse_oom_control_v1(j);
            let _ = parse_memory_events_v2(j);
            let _ = parse_blkio_v1(j);
            let _ = parse_io_stat(j);
            let _ = parse_u64_file(j);
        }
    }
}
