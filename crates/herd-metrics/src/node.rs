//! Parsers for the `/proc` files node metrics come from (`stat`, `loadavg`, `meminfo`,
//! `net/dev`, `diskstats`; `pressure/*` is [`crate::psi`]) and [`NodeCounters`], a node's raw
//! counters and gauges at one instant.
//!
//! `/proc/net/dev` is also how a container's traffic is measured: `/proc/<pid>/net/dev` shows
//! the network namespace of process `<pid>`, summed over its non-loopback interfaces with
//! [`NetTotals::non_loopback`].

use serde::{Deserialize, Serialize};

use crate::parse::{ParseError, bad_line};
use crate::psi::Pressure;

/// The aggregate `cpu` line of `/proc/stat`, in `USER_HZ` ticks (cumulative). `guest` time
/// is already included in `user` by the kernel, so it is not added again anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuTimes {
    /// Normal processes in user mode.
    pub user: u64,
    /// Niced processes in user mode.
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Idle while I/O was outstanding.
    pub iowait: u64,
    /// Servicing interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
}

impl CpuTimes {
    /// All ticks (every mode above; guest is inside user).
    pub fn total(&self) -> u64 {
        [self.user, self.nice, self.system, self.idle, self.iowait, self.irq, self.softirq, self.steal]
            .into_iter()
            .fold(0, u64::saturating_add)
    }
}

/// `/proc/stat`: the aggregate CPU line and the number of `cpuN` lines (online CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcStat {
    /// The `cpu` line.
    pub cpu: CpuTimes,
    /// Number of `cpuN` lines.
    pub cpus: u32,
}

/// Parses `/proc/stat`. The `cpu` line needs at least user, nice, system and idle; later
/// fields (added over kernel versions) default to 0.
pub fn parse_proc_stat(s: &str) -> Result<ProcStat, ParseError> {
    let mut cpu = None;
    let mut cpus = 0u32;
    for (i, line) in s.lines().enumerate() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<u64> = f
                    .map(|x| x.parse::<u64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad_line(i, "expected `cpu` and numbers", line))?;
                if v.len() < 4 {
                    return Err(bad_line(i, "expected at least 4 CPU time fields", line));
                }
                let g = |k: usize| v.get(k).copied().unwrap_or(0);
                cpu = Some(CpuTimes {
                    user: g(0),
                    nice: g(1),
                    system: g(2),
                    idle: g(3),
                    iowait: g(4),
                    irq: g(5),
                    softirq: g(6),
                    steal: g(7),
                });
            }
            Some(name)
                if name.len() > 3 && name.starts_with("cpu") && name[3..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                cpus += 1
            }
            _ => {}
        }
    }
    if s.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(ProcStat { cpu: cpu.ok_or(ParseError::Missing("`cpu` line"))?, cpus })
}

/// `/proc/loadavg`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LoadAvg {
    /// 1-minute load average.
    pub load1: f64,
    /// 5-minute load average.
    pub load5: f64,
    /// 15-minute load average.
    pub load15: f64,
    /// Runnable scheduling entities now.
    pub running: u32,
    /// Scheduling entities in total.
    pub total: u32,
}

/// Parses `/proc/loadavg` (`1.14 1.31 1.54 3/110 1151`).
pub fn parse_loadavg(s: &str) -> Result<LoadAvg, ParseError> {
    let line = s.lines().next().ok_or(ParseError::Empty)?;
    let bad = || bad_line(0, "expected `L1 L5 L15 R/T PID`", line);
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 4 {
        return Err(if line.trim().is_empty() { ParseError::Empty } else { bad() });
    }
    let num = |x: &str| x.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(bad);
    let (r, t) = f[3].split_once('/').ok_or_else(bad)?;
    Ok(LoadAvg {
        load1: num(f[0])?,
        load5: num(f[1])?,
        load15: num(f[2])?,
        running: r.parse().map_err(|_| bad())?,
        total: t.parse().map_err(|_| bad())?,
    })
}

/// The figures Herd takes from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemFree`.
    pub free: u64,
    /// `MemAvailable` (kernel 3.14 and later).
    pub available: Option<u64>,
    /// `Buffers`.
    pub buffers: u64,
    /// `Cached`.
    pub cached: u64,
    /// `SwapTotal`.
    pub swap_total: u64,
    /// `SwapFree`.
    pub swap_free: u64,
}

/// Parses `/proc/meminfo` (`Key:   N kB` lines; values are converted to bytes).
pub fn parse_meminfo(s: &str) -> Result<MemInfo, ParseError> {
    if s.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let get = |key: &str| -> Result<Option<u64>, ParseError> {
        for (i, line) in s.lines().enumerate() {
            let Some((k, rest)) = line.split_once(':') else { continue };
            if k.trim() != key {
                continue;
            }
            let mut f = rest.split_whitespace();
            let bad = || bad_line(i, "expected `Key: N kB`", line);
            let n: u64 = f.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let mult = match f.next() {
                None => 1,
                Some("kB") => 1024,
                Some(_) => return Err(bad()),
            };
            return Ok(Some(n.saturating_mul(mult)));
        }
        Ok(None)
    };
    let req = |key: &'static str| get(key)?.ok_or(ParseError::Missing(key));
    Ok(MemInfo {
        total: req("MemTotal")?,
        free: req("MemFree")?,
        available: get("MemAvailable")?,
        buffers: get("Buffers")?.unwrap_or(0),
        cached: get("Cached")?.unwrap_or(0),
        swap_total: get("SwapTotal")?.unwrap_or(0),
        swap_free: get("SwapFree")?.unwrap_or(0),
    })
}

/// One interface of `/proc/net/dev` (cumulative counters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetDev {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errs: u64,
    /// Received packets dropped.
    pub rx_drop: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errs: u64,
    /// Sent packets dropped.
    pub tx_drop: u64,
}

/// Parses `/proc/net/dev`: two header lines, then `name: 16 numbers` per interface. The
/// name ends at the line's last `:` (a long name can touch the first number).
pub fn parse_net_dev(s: &str) -> Result<Vec<NetDev>, ParseError> {
    let mut out = Vec::new();
    let mut header = false;
    for (i, line) in s.lines().enumerate() {
        if line.contains('|') {
            header = true;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let bad = || bad_line(i, "expected `name: 16 counters`", line);
        let (name, rest) = line.rsplit_once(':').ok_or_else(bad)?;
        // No allocation per line: a Compute node's file has a line per container veth.
        let mut v = [0u64; 16];
        let mut n = 0;
        for x in rest.split_whitespace() {
            let x: u64 = x.parse().map_err(|_| bad())?;
            if let Some(slot) = v.get_mut(n) {
                *slot = x;
            }
            n += 1;
        }
        if n < 16 || name.trim().is_empty() {
            return Err(bad());
        }
        out.push(NetDev {
            name: name.trim().to_string(),
            rx_bytes: v[0],
            rx_packets: v[1],
            rx_errs: v[2],
            rx_drop: v[3],
            tx_bytes: v[8],
            tx_packets: v[9],
            tx_errs: v[10],
            tx_drop: v[11],
        });
    }
    if !header && out.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(out)
}

/// Network counters summed over a set of interfaces (cumulative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetTotals {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

impl NetTotals {
    /// Sums the interfaces `include` accepts.
    pub fn sum(devs: &[NetDev], include: impl Fn(&str) -> bool) -> NetTotals {
        devs.iter().filter(|d| include(&d.name)).fold(NetTotals::default(), |t, d| NetTotals {
            rx_bytes: t.rx_bytes.saturating_add(d.rx_bytes),
            tx_bytes: t.tx_bytes.saturating_add(d.tx_bytes),
            rx_packets: t.rx_packets.saturating_add(d.rx_packets),
            tx_packets: t.tx_packets.saturating_add(d.tx_packets),
        })
    }

    /// Sums every interface but `lo`: a container's traffic, from its namespace's file.
    pub fn non_loopback(devs: &[NetDev]) -> NetTotals {
        Self::sum(devs, |n| n != "lo")
    }
}

/// One line of `/proc/diskstats` (the fields Herd uses; cumulative). Sectors are always
/// 512 bytes in this file, whatever the device's sector size.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskStat {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Device name.
    pub name: String,
    /// Reads completed.
    pub reads: u64,
    /// Sectors read.
    pub sectors_read: u64,
    /// Writes completed.
    pub writes: u64,
    /// Sectors written.
    pub sectors_written: u64,
}

/// Parses `/proc/diskstats` (at least the 14 fields of kernels before 4.18; discard and
/// flush fields of later kernels are ignored).
pub fn parse_diskstats(s: &str) -> Result<Vec<DiskStat>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in s.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let bad = || bad_line(i, "expected `MAJ MIN name` and at least 11 counters", line);
        if f.len() < 14 {
            return Err(bad());
        }
        let n = |k: usize| f[k].parse::<u64>().map_err(|_| bad());
        out.push(DiskStat {
            major: f[0].parse().map_err(|_| bad())?,
            minor: f[1].parse().map_err(|_| bad())?,
            name: f[2].to_string(),
            reads: n(3)?,
            sectors_read: n(5)?,
            writes: n(7)?,
            sectors_written: n(9)?,
        });
    }
    Ok(out)
}

/// Whether a `/proc/diskstats` device counts towards the node's disk throughput, so that
/// each I/O is counted once. The rule, from the names in the file alone:
///
/// - virtual devices are skipped: `loop*`, `ram*`, `zram*` (memory, not disk), `dm-*` and
///   `md*` (device-mapper and software RAID sit on top of disks that are counted), `sr*` and
///   `fd*` (optical, floppy);
/// - partitions are skipped: a name that is another listed device's name followed by digits
///   (`sda1` of `sda`, `vdb12` of `vdb`) or by `p` and digits (`nvme0n1p2` of `nvme0n1`,
///   `mmcblk0p1` of `mmcblk0`).
pub fn is_whole_disk(name: &str, all: &[DiskStat]) -> bool {
    const VIRTUAL: [&str; 8] = ["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];
    if VIRTUAL.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() == name.len() || stem.is_empty() {
        return true;
    }
    let parent_exists = |p: &str| all.iter().any(|d| d.name == p);
    if parent_exists(stem) {
        return false;
    }
    match stem.strip_suffix('p') {
        Some(p) if p.ends_with(|c: char| c.is_ascii_digit()) => !parent_exists(p),
        _ => true,
    }
}

/// Disk counters summed over whole disks (cumulative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskTotals {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
}

impl DiskTotals {
    /// Sums the devices [`is_whole_disk`] accepts.
    pub fn whole_disks(all: &[DiskStat]) -> DiskTotals {
        all.iter().filter(|d| is_whole_disk(&d.name, all)).fold(DiskTotals::default(), |t, d| DiskTotals {
            read_bytes: t.read_bytes.saturating_add(d.sectors_read.saturating_mul(512)),
            write_bytes: t.write_bytes.saturating_add(d.sectors_written.saturating_mul(512)),
            reads: t.reads.saturating_add(d.reads),
            writes: t.writes.saturating_add(d.writes),
        })
    }
}

/// A node's raw counters and gauges at one instant; `None` where a file was missing or
/// unparsable.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeCounters {
    /// `/proc/stat` aggregate CPU ticks (counters).
    pub cpu: Option<CpuTimes>,
    /// Online CPUs.
    pub cpus: Option<u32>,
    /// Load averages (gauges).
    pub load: Option<LoadAvg>,
    /// Memory (gauges).
    pub mem: Option<MemInfo>,
    /// Whole-disk I/O (counters).
    pub disk: Option<DiskTotals>,
    /// Network I/O over the interfaces the caller chose (counters).
    pub net: Option<NetTotals>,
    /// `/proc/pressure/cpu`.
    pub psi_cpu: Option<Pressure>,
    /// `/proc/pressure/memory`.
    pub psi_memory: Option<Pressure>,
    /// `/proc/pressure/io`.
    pub psi_io: Option<Pressure>,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded on this project's host (2 vCPUs, virtio disk, kernel 6.18) while a local
    // Herd cluster was running (its bridge `hb*` and node veths `hn*` show in net/dev).
    const STAT: &str = include_str!("../tests/fixtures/proc/stat");
    const LOADAVG: &str = include_str!("../tests/fixtures/proc/loadavg");
    const MEMINFO: &str = include_str!("../tests/fixtures/proc/meminfo");
    const NET_DEV: &str = include_str!("../tests/fixtures/proc/net_dev");
    const DISKSTATS: &str = include_str!("../tests/fixtures/proc/diskstats");

    #[test]
    fn proc_stat() {
        let s = parse_proc_stat(STAT).unwrap();
        assert_eq!(s.cpus, 2);
        assert_eq!(
            s.cpu,
            CpuTimes {
                user: 776_619,
                nice: 0,
                system: 169_338,
                idle: 2_274_593,
                iowait: 17_251,
                irq: 0,
                softirq: 4266,
                steal: 3228
            }
        );
        // Old kernels: only four fields.
        let old = parse_proc_stat("cpu  1 2 3 4\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!((old.cpu.idle, old.cpu.steal, old.cpus), (4, 0, 1));
        assert_eq!(parse_proc_stat("intr 1 2\n"), Err(ParseError::Missing("`cpu` line")));
        assert!(parse_proc_stat("cpu 1 2 3\n").is_err());
        assert!(parse_proc_stat("cpu 1 2 x 4\n").is_err());
        assert_eq!(parse_proc_stat(""), Err(ParseError::Empty));
    }

    #[test]
    fn loadavg() {
        let l = parse_loadavg(LOADAVG).unwrap();
        assert!(l.load1 >= 0.0 && l.total > 0 && l.running >= 1);
        let l = parse_loadavg("1.14 1.31 1.54 3/110 1151\n").unwrap();
        assert_eq!(l, LoadAvg { load1: 1.14, load5: 1.31, load15: 1.54, running: 3, total: 110 });
        assert_eq!(parse_loadavg(""), Err(ParseError::Empty));
        assert!(parse_loadavg("1 2 3\n").is_err());
        assert!(parse_loadavg("1 2 3 4 5\n").is_err());
        assert!(parse_loadavg("1 -2 3 1/4 5\n").is_err());
    }

    #[test]
    fn meminfo() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(m.total, 24_683_656 * 1024);
        assert_eq!(m.available, Some(23_365_476 * 1024));
        assert_eq!(m.cached, 1_402_264 * 1024);
        assert_eq!(m.swap_total, 0);
        let old = parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\n").unwrap();
        assert_eq!((old.total, old.available), (102_400, None));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), Err(ParseError::Missing("MemTotal")));
        assert!(parse_meminfo("MemTotal: x kB\nMemFree: 1 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: 1 MB\nMemFree: 1 kB\n").is_err());
    }

    #[test]
    fn net_dev() {
        let devs = parse_net_dev(NET_DEV).unwrap();
        let names: Vec<&str> = devs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names[0], "lo");
        assert!(names.contains(&"eth0") && names.contains(&"hn5527e51"));
        let eth0 = devs.iter().find(|d| d.name == "eth0").unwrap();
        assert!(eth0.rx_bytes > 0 && eth0.tx_packets > 0);
        let all = NetTotals::sum(&devs, |_| true);
        let lo = devs.iter().find(|d| d.name == "lo").unwrap();
        let nl = NetTotals::non_loopback(&devs);
        assert_eq!(nl.rx_bytes + lo.rx_bytes, all.rx_bytes);
        assert_eq!(nl.tx_packets + lo.tx_packets, all.tx_packets);
        // A 15-character name touching its first number.
        let long = "Inter-|   Receive |  Transmit\n face |bytes|bytes\nhc1234567890abcd:1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n";
        let d = parse_net_dev(long).unwrap();
        assert_eq!((d[0].name.as_str(), d[0].rx_bytes, d[0].tx_bytes, d[0].tx_packets), ("hc1234567890abcd", 1, 9, 10));
        assert!(parse_net_dev("x|y\neth0: 1 2 3\n").is_err());
        assert!(parse_net_dev("eth0 1 2 3\n").is_err());
        assert_eq!(parse_net_dev(""), Err(ParseError::Empty));
        // A namespace with only the headers (no interfaces) is valid.
        assert_eq!(parse_net_dev("a|b\nc|d\n"), Ok(vec![]));
    }

    #[test]
    fn diskstats() {
        let all = parse_diskstats(DISKSTATS).unwrap();
        assert!(all.iter().any(|d| d.name == "loop0"));
        let vda = all.iter().find(|d| d.name == "vda").unwrap();
        assert_eq!((vda.major, vda.minor), (254, 0));
        let t = DiskTotals::whole_disks(&all);
        assert_eq!(t.read_bytes, vda.sectors_read * 512);
        assert_eq!(t.writes, vda.writes);
        assert!(parse_diskstats("8 0 sda 1 2 3\n").is_err());
        assert_eq!(parse_diskstats(""), Ok(vec![]));
    }

    #[test]
    fn whole_disk_rule() {
        let names = [
            "sda",
            "sda1",
            "sda2",
            "vdb",
            "vdb12",
            "nvme0n1",
            "nvme0n1p1",
            "mmcblk0",
            "mmcblk0p2",
            "loop0",
            "ram3",
            "zram0",
            "dm-0",
            "md127",
            "sr0",
            "xvda",
            "xvda1",
            "nbd0",
        ];
        let all: Vec<DiskStat> = names.iter().map(|n| DiskStat { name: n.to_string(), ..Default::default() }).collect();
        let whole: Vec<&str> = names.iter().copied().filter(|n| is_whole_disk(n, &all)).collect();
        assert_eq!(whole, ["sda", "vdb", "nvme0n1", "mmcblk0", "xvda"]);
    }
}
