//! The crate's only file I/O: reads a container's cgroup files and a node's `/proc` files
//! under root paths the caller gives (so tests use a temporary tree), never panicking.
//! A missing or unparsable file leaves its fields `None` and is reported as a
//! [`FileProblem`]; deciding what to log, and how often, is the caller's business.
//!
//! # Cost
//!
//! Opening a cgroup file costs several times more than reading it: on this project's host
//! (kernel 6.18) open + read + close of one v1 cgroup file takes 6-8 µs, re-reading an open
//! one with `pread` at offset 0 takes 0.5-1.5 µs (`memory.stat`: 16 µs against 6.6 µs), the
//! kernel regenerating the contents on every read from offset 0. So the readers
//! ([`CgroupReader`], [`NodeReader`]) keep their files open between reads: a sampler keeps
//! one `CgroupReader` per container and drops it when the container goes. That is up to 13
//! descriptors per container (raise `RLIMIT_NOFILE` accordingly). A file that fails on an open
//! descriptor is reopened once, so a recreated cgroup is followed. The one-shot functions
//! ([`read_v1`], [`read_v2`], [`read_node`], [`read_container_net`]) open and close every
//! file.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::cgroup::{self, ContainerCounters};
use crate::node::{self, DiskTotals, NetTotals, NodeCounters};
use crate::parse::ParseError;
use crate::psi;

/// Why a file gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemReason {
    /// The file does not exist (kernel without the feature, controller not enabled, or the
    /// container is gone).
    #[error("missing")]
    Missing,
    /// Reading failed.
    #[error("read error: {0}")]
    Io(String),
    /// The contents did not parse.
    #[error("unparsable: {0}")]
    Parse(ParseError),
}

/// A file that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct FileProblem {
    /// The file.
    pub file: PathBuf,
    /// Why.
    pub reason: ProblemReason,
}

/// What a cgroup reader returns: the counters it could read and the files it could not.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CounterRead {
    /// Counters; fields of problem files are `None`.
    pub counters: ContainerCounters,
    /// Files that could not be read or parsed, in reading order.
    pub problems: Vec<FileProblem>,
    /// Files that were read and parsed.
    pub files_ok: usize,
}

impl CounterRead {
    /// No file could be read and every one was missing: the cgroup is gone (the container
    /// stopped or moved between two samples).
    pub fn gone(&self) -> bool {
        self.files_ok == 0 && self.problems.iter().all(|p| p.reason == ProblemReason::Missing)
    }
}

/// One file, perhaps held open.
#[derive(Debug)]
struct Slot<K> {
    kind: K,
    path: PathBuf,
    file: Option<File>,
}

impl<K> Slot<K> {
    fn new(kind: K, path: PathBuf) -> Self {
        Slot { kind, path, file: None }
    }

    /// Reads the whole file into `buf` (from offset 0, so pseudo-files are regenerated) and
    /// returns its length. `keep`: leave the file open for the next read.
    fn read(&mut self, buf: &mut Vec<u8>, keep: bool) -> Result<usize, ProblemReason> {
        let reason = |e: std::io::Error| match e.kind() {
            ErrorKind::NotFound => ProblemReason::Missing,
            _ => ProblemReason::Io(e.to_string()),
        };
        let mut retried = false;
        loop {
            let reopened = self.file.is_none();
            if reopened {
                self.file = Some(File::open(&self.path).map_err(reason)?);
            }
            let f = self.file.as_ref().expect("opened above");
            let res = read_all_at(f, buf);
            if !keep || res.is_err() {
                self.file = None;
            }
            match res {
                Ok(n) => return Ok(n),
                // A descriptor kept from a cgroup that was since removed (ENODEV) or a
                // process that exited: try once more with a fresh open.
                Err(_) if !reopened && !retried => retried = true,
                Err(e) => return Err(reason(e)),
            }
        }
    }
}

/// A first read this short ended the file: the kernel's pseudo-files (`seq_file`) fill a
/// read up to their page-sized buffer and stop early only when the next record does not fit,
/// and no record of the files read here comes near this size. Skipping the read that would
/// return 0 saves a system call per file.
const SHORT_READ_IS_WHOLE: usize = 2048;

fn read_all_at(f: &File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut off = 0;
    loop {
        if off == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match f.read_at(&mut buf[off..], off as u64) {
            Ok(0) => return Ok(off),
            Ok(n) if off == 0 && n <= SHORT_READ_IS_WHOLE => return Ok(n),
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads the slots `which` selects, handing each file's text to `apply`; collects problems.
fn read_slots<K: Copy>(
    slots: &mut [Slot<K>],
    buf: &mut Vec<u8>,
    keep: bool,
    selects: impl Fn(K) -> bool,
    mut apply: impl FnMut(K, &str) -> Result<(), ParseError>,
) -> (Vec<FileProblem>, usize) {
    let mut problems = Vec::new();
    let mut ok = 0;
    for slot in slots.iter_mut().filter(|s| selects(s.kind)) {
        let reason = match slot.read(buf, keep) {
            Ok(n) => match std::str::from_utf8(&buf[..n]) {
                Ok(text) => match apply(slot.kind, text) {
                    Ok(()) => {
                        ok += 1;
                        continue;
                    }
                    Err(e) => ProblemReason::Parse(e),
                },
                Err(_) => ProblemReason::Io("not UTF-8".into()),
            },
            Err(r) => r,
        };
        problems.push(FileProblem { file: slot.path.clone(), reason });
    }
    (problems, ok)
}

/// Where a container's cgroup v1 directories are, one per controller (`None`: not mounted,
/// skipped without a problem). `unified` is its directory on the v2 mount of a hybrid host,
/// where the kernel offers its PSI files even with no v2 controller enabled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct V1Paths {
    /// `cpu` controller directory (`cpu.stat`).
    pub cpu: Option<PathBuf>,
    /// `cpuacct` controller directory (`cpuacct.usage`, `cpuacct.stat`).
    pub cpuacct: Option<PathBuf>,
    /// `memory` controller directory.
    pub memory: Option<PathBuf>,
    /// `blkio` controller directory.
    pub blkio: Option<PathBuf>,
    /// `pids` controller directory.
    pub pids: Option<PathBuf>,
    /// Directory on the v2 mount (PSI files).
    pub unified: Option<PathBuf>,
}

impl V1Paths {
    /// The conventional layout: `<root>/<controller>/<cgroup>` for each controller (a
    /// combined `cpu,cpuacct` mount is reached through the usual `cpu` and `cpuacct`
    /// symlinks), and `<root>/unified/<cgroup>` when `<root>/unified` is a v2 mount.
    /// `cgroup` is the cgroup's path, with or without a leading `/`.
    pub fn under(root: &Path, cgroup: &str) -> V1Paths {
        let rel = cgroup.trim_start_matches('/');
        let c = |ctl: &str| Some(root.join(ctl).join(rel));
        let unified = root.join("unified");
        V1Paths {
            cpu: c("cpu"),
            cpuacct: c("cpuacct"),
            memory: c("memory"),
            blkio: c("blkio"),
            pids: c("pids"),
            unified: unified.join("cgroup.controllers").exists().then(|| unified.join(rel)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgFile {
    CpuacctUsage,
    CpuacctStat,
    CpuStatV1,
    MemUsageV1,
    MemStatV1,
    OomControlV1,
    BlkBytesV1,
    BlkIosV1,
    CpuStatV2,
    MemCurrentV2,
    MemStatV2,
    MemEventsV2,
    IoStatV2,
    Pids,
    PsiCpu,
    PsiMem,
    PsiIo,
    NetDev,
}

impl CgFile {
    /// Cheap files hold one number or a few lines the kernel keeps ready (about 1 µs to
    /// re-read); the rest (`memory.stat`, block I/O, PSI, ...) cost several times more.
    /// `pids.current` is cheap too, but a process starts or exits only by running, which moves
    /// the CPU time: it needs no read of its own every interval.
    fn cheap(self) -> bool {
        use CgFile::*;
        matches!(self, CpuacctUsage | CpuStatV2 | MemUsageV1 | MemCurrentV2)
    }

    /// Clears the fields this file sets, before it is read again.
    fn clear(self, c: &mut ContainerCounters) {
        use CgFile::*;
        match self {
            CpuacctUsage => c.cpu_usage_ns = None,
            CpuacctStat => (c.cpu_user_ns, c.cpu_system_ns) = (None, None),
            CpuStatV1 => c.cpu_throttle = None,
            CpuStatV2 => (c.cpu_usage_ns, c.cpu_user_ns, c.cpu_system_ns, c.cpu_throttle) = (None, None, None, None),
            MemUsageV1 | MemCurrentV2 => c.mem_usage = None,
            MemStatV1 | MemStatV2 => {
                (c.mem_rss, c.mem_cache, c.pgfault, c.pgmajfault, c.mem_inactive_file) = (None, None, None, None, None)
            }
            OomControlV1 => c.oom_kills = None,
            MemEventsV2 => (c.oom_kills, c.oom_events) = (None, None),
            BlkBytesV1 => (c.blk_read_bytes, c.blk_write_bytes) = (None, None),
            BlkIosV1 => (c.blk_read_ios, c.blk_write_ios) = (None, None),
            IoStatV2 => {
                (c.blk_read_bytes, c.blk_write_bytes, c.blk_read_ios, c.blk_write_ios) = (None, None, None, None)
            }
            Pids => c.pids = None,
            PsiCpu => c.psi_cpu = None,
            PsiMem => c.psi_memory = None,
            PsiIo => c.psi_io = None,
            NetDev => c.net = None,
        }
    }
}

/// Which of a container's files a read covers (see [`CgroupReader::read_files`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// Every file.
    All,
    /// CPU time and memory usage: cheap to re-read, and what shows a container is active.
    Cheap,
    /// The others: `memory.stat`, throttling, OOM, block I/O, pids, PSI and network.
    Detail,
}

impl Files {
    fn covers(self, f: CgFile) -> bool {
        match self {
            Files::All => true,
            Files::Cheap => f.cheap(),
            Files::Detail => !f.cheap(),
        }
    }
}

/// When a sampler reads a container's costly files ([`Files::Detail`]): whenever its cheap
/// figures (CPU time, memory usage) moved since they were last read, and otherwise every
/// `every`th interval. A container whose CPU time did not move ran no instruction, so it took
/// no page fault, issued no I/O, started or ended no process and was not throttled; what can
/// still change without it (page reclaim, pressure averages decaying) is at most `every`
/// intervals old.
#[derive(Debug, Clone)]
pub struct DetailSchedule {
    every: u32,
    left: u32,
    seen: Option<(Option<u64>, Option<u64>)>,
}

impl DetailSchedule {
    /// Forced reads every `every` intervals (at least 1), the first after the first read and
    /// `phase % every` skipped intervals (so that many containers' forced reads spread over
    /// the intervals instead of falling on the same one).
    pub fn new(every: u32, phase: u32) -> Self {
        let every = every.max(1);
        DetailSchedule { every, left: phase % every, seen: None }
    }

    /// Whether to read the costly files this interval, given its cheap reading.
    pub fn due(&mut self, cheap: &ContainerCounters) -> bool {
        let key = (cheap.cpu_usage_ns, cheap.mem_usage);
        let first = self.seen.is_none();
        let due = first || self.left == 0 || self.seen != Some(key);
        if due {
            self.seen = Some(key);
            if !first {
                self.left = self.every - 1;
            }
        } else {
            self.left -= 1;
        }
        due
    }
}

/// Reads one container's counters, keeping its files open between reads (see the module
/// docs). Create it once per container; [`CgroupReader::read`] every interval.
#[derive(Debug)]
pub struct CgroupReader {
    slots: Vec<Slot<CgFile>>,
    buf: Vec<u8>,
    keep_open: bool,
    /// The last reading, whose figures a partial read carries over.
    last: ContainerCounters,
}

impl CgroupReader {
    /// A reader of a cgroup v1 container (with PSI from the v2 mount when `paths.unified`).
    pub fn v1(paths: &V1Paths) -> CgroupReader {
        use CgFile::*;
        let mut slots = Vec::new();
        let mut add = |dir: &Option<PathBuf>, files: &[(CgFile, &str)]| {
            if let Some(d) = dir {
                slots.extend(files.iter().map(|(k, name)| Slot::new(*k, d.join(name))));
            }
        };
        add(&paths.cpuacct, &[(CpuacctUsage, "cpuacct.usage"), (CpuacctStat, "cpuacct.stat")]);
        add(&paths.cpu, &[(CpuStatV1, "cpu.stat")]);
        add(
            &paths.memory,
            &[(MemUsageV1, "memory.usage_in_bytes"), (MemStatV1, "memory.stat"), (OomControlV1, "memory.oom_control")],
        );
        add(&paths.blkio, &[(BlkBytesV1, "blkio.throttle.io_service_bytes"), (BlkIosV1, "blkio.throttle.io_serviced")]);
        add(&paths.pids, &[(Pids, "pids.current")]);
        add(&paths.unified, &[(PsiCpu, "cpu.pressure"), (PsiMem, "memory.pressure"), (PsiIo, "io.pressure")]);
        CgroupReader { slots, buf: Vec::new(), keep_open: true, last: ContainerCounters::default() }
    }

    /// A reader of a cgroup v2 container directory.
    pub fn v2(dir: &Path) -> CgroupReader {
        use CgFile::*;
        let files = [
            (CpuStatV2, "cpu.stat"),
            (MemCurrentV2, "memory.current"),
            (MemStatV2, "memory.stat"),
            (MemEventsV2, "memory.events"),
            (IoStatV2, "io.stat"),
            (Pids, "pids.current"),
            (PsiCpu, "cpu.pressure"),
            (PsiMem, "memory.pressure"),
            (PsiIo, "io.pressure"),
        ];
        let slots = files.iter().map(|(k, n)| Slot::new(*k, dir.join(n))).collect();
        CgroupReader { slots, buf: Vec::new(), keep_open: true, last: ContainerCounters::default() }
    }

    /// Also reads the container's network counters from `<proc_root>/<pid>/net/dev` (the
    /// network namespace of its process `pid`; no namespace switch needed), or stops to
    /// with `None`.
    pub fn set_net_pid(&mut self, proc_root: &Path, pid: Option<u32>) {
        self.slots.retain(|s| s.kind != CgFile::NetDev);
        self.last.net = None;
        if let Some(pid) = pid {
            self.slots.push(Slot::new(CgFile::NetDev, proc_root.join(pid.to_string()).join("net/dev")));
        }
    }

    /// Whether files stay open between reads (default true).
    pub fn keep_open(mut self, keep: bool) -> Self {
        self.keep_open = keep;
        self
    }

    /// Reads every file once.
    pub fn read(&mut self) -> CounterRead {
        self.read_files(Files::All)
    }

    /// Reads the files `which` covers; the other figures are those of the previous read (none
    /// before the first), so a cheap read every interval and a detail read now and then give
    /// whole readings.
    pub fn read_files(&mut self, which: Files) -> CounterRead {
        let mut c = std::mem::take(&mut self.last);
        for s in self.slots.iter().filter(|s| which.covers(s.kind)) {
            s.kind.clear(&mut c);
        }
        let (problems, files_ok) = read_slots(
            &mut self.slots,
            &mut self.buf,
            self.keep_open,
            |k| which.covers(k),
            |kind, text| {
                use CgFile::*;
                match kind {
                    CpuacctUsage => c.cpu_usage_ns = Some(cgroup::parse_u64_file(text)?),
                    CpuacctStat => {
                        let st = cgroup::parse_cpuacct_stat(text)?;
                        c.cpu_user_ns = Some(st.user_ns());
                        c.cpu_system_ns = Some(st.system_ns());
                    }
                    CpuStatV1 => c.cpu_throttle = Some(cgroup::parse_cpu_stat_v1(text)?),
                    CpuStatV2 => {
                        let st = cgroup::parse_cpu_stat_v2(text)?;
                        c.cpu_usage_ns = Some(st.usage_usec.saturating_mul(1000));
                        c.cpu_user_ns = Some(st.user_usec.saturating_mul(1000));
                        c.cpu_system_ns = Some(st.system_usec.saturating_mul(1000));
                        c.cpu_throttle = st.throttle;
                    }
                    MemUsageV1 | MemCurrentV2 => c.mem_usage = Some(cgroup::parse_u64_file(text)?),
                    MemStatV1 => {
                        let st = cgroup::parse_memory_stat_v1(text)?;
                        (c.mem_rss, c.mem_cache, c.pgfault, c.pgmajfault) =
                            (Some(st.rss), Some(st.cache), st.pgfault, st.pgmajfault);
                        c.mem_inactive_file = Some(st.inactive_file.unwrap_or(0));
                    }
                    MemStatV2 => {
                        let st = cgroup::parse_memory_stat_v2(text)?;
                        (c.mem_rss, c.mem_cache, c.pgfault, c.pgmajfault) =
                            (Some(st.anon), Some(st.file), st.pgfault, st.pgmajfault);
                        c.mem_inactive_file = Some(st.inactive_file.unwrap_or(0));
                    }
                    OomControlV1 => c.oom_kills = cgroup::parse_oom_control_v1(text)?.oom_kill,
                    MemEventsV2 => {
                        let ev = cgroup::parse_memory_events_v2(text)?;
                        c.oom_kills = Some(ev.oom_kill);
                        c.oom_events = Some(ev.oom);
                    }
                    BlkBytesV1 => {
                        let b = cgroup::parse_blkio_v1(text)?;
                        c.blk_read_bytes = Some(b.read_sum());
                        c.blk_write_bytes = Some(b.write_sum());
                    }
                    BlkIosV1 => {
                        let b = cgroup::parse_blkio_v1(text)?;
                        c.blk_read_ios = Some(b.read_sum());
                        c.blk_write_ios = Some(b.write_sum());
                    }
                    IoStatV2 => {
                        let t = cgroup::io_totals(&cgroup::parse_io_stat(text)?);
                        c.blk_read_bytes = Some(t.read_bytes);
                        c.blk_write_bytes = Some(t.write_bytes);
                        c.blk_read_ios = Some(t.read_ios);
                        c.blk_write_ios = Some(t.write_ios);
                    }
                    Pids => c.pids = Some(cgroup::parse_u64_file(text)?),
                    PsiCpu => c.psi_cpu = Some(psi::parse_pressure(text)?),
                    PsiMem => c.psi_memory = Some(psi::parse_pressure(text)?),
                    PsiIo => c.psi_io = Some(psi::parse_pressure(text)?),
                    NetDev => c.net = Some(NetTotals::non_loopback(&node::parse_net_dev(text)?)),
                }
                Ok(())
            },
        );
        c.mem_working_set = match (c.mem_usage, c.mem_inactive_file) {
            (Some(u), Some(inactive)) => Some(cgroup::working_set(u, Some(inactive))),
            _ => None,
        };
        self.last = c.clone();
        CounterRead { counters: c, problems, files_ok }
    }
}

/// Reads a container's counters from cgroup v1 (plus PSI from the v2 mount of a hybrid
/// host) once, opening and closing each file.
pub fn read_v1(paths: &V1Paths) -> CounterRead {
    CgroupReader::v1(paths).keep_open(false).read()
}

/// Reads a container's counters from its cgroup v2 directory once.
pub fn read_v2(dir: &Path) -> CounterRead {
    CgroupReader::v2(dir).keep_open(false).read()
}

/// A container's network counters: `<proc_root>/<pid>/net/dev` (the network namespace of
/// one of its processes), summed over non-loopback interfaces.
pub fn read_container_net(proc_root: &Path, pid: u32) -> Result<NetTotals, FileProblem> {
    let mut r =
        CgroupReader { slots: Vec::new(), buf: Vec::new(), keep_open: false, last: ContainerCounters::default() };
    r.set_net_pid(proc_root, Some(pid));
    let mut out = r.read();
    match out.counters.net {
        Some(n) => Ok(n),
        None => Err(out.problems.remove(0)),
    }
}

/// What [`read_node`] returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeRead {
    /// Counters; fields of problem files are `None`.
    pub counters: NodeCounters,
    /// Files that could not be read or parsed.
    pub problems: Vec<FileProblem>,
    /// Every interface of `net/dev`, the ones left out of the node's total too (on a
    /// Compute node, the host ends of the containers' veths: their counters are the
    /// containers' traffic, seen from the other end).
    pub interfaces: Vec<node::NetDev>,
}

#[derive(Debug, Clone, Copy)]
enum ProcFile {
    Stat,
    LoadAvg,
    MemInfo,
    DiskStats,
    NetDev,
    PsiCpu,
    PsiMem,
    PsiIo,
}

/// Reads a node's counters under `proc_root` (normally `/proc`), keeping the files open:
/// `stat`, `loadavg`, `meminfo`, `diskstats` (whole disks, see [`node::is_whole_disk`]),
/// `net/dev` (summed over the interfaces `include_iface` accepts: on a Compute node, not `lo`
/// and not the containers' veths, whose traffic would otherwise be counted twice) and
/// `pressure/{cpu,memory,io}`.
pub struct NodeReader<F> {
    slots: Vec<Slot<ProcFile>>,
    buf: Vec<u8>,
    include_iface: F,
    keep_open: bool,
}

impl<F: Fn(&str) -> bool> NodeReader<F> {
    /// A reader of the files under `proc_root`.
    pub fn new(proc_root: &Path, include_iface: F) -> Self {
        use ProcFile::*;
        let files = [
            (Stat, "stat"),
            (LoadAvg, "loadavg"),
            (MemInfo, "meminfo"),
            (DiskStats, "diskstats"),
            (NetDev, "net/dev"),
            (PsiCpu, "pressure/cpu"),
            (PsiMem, "pressure/memory"),
            (PsiIo, "pressure/io"),
        ];
        let slots = files.iter().map(|(k, n)| Slot::new(*k, proc_root.join(n))).collect();
        NodeReader { slots, buf: Vec::new(), include_iface, keep_open: true }
    }

    /// Reads every file once.
    pub fn read(&mut self) -> NodeRead {
        let mut c = NodeCounters::default();
        let include = &self.include_iface;
        let mut interfaces = Vec::new();
        let (problems, _) = read_slots(
            &mut self.slots,
            &mut self.buf,
            self.keep_open,
            |_| true,
            |kind, text| {
                use ProcFile::*;
                match kind {
                    Stat => {
                        let st = node::parse_proc_stat(text)?;
                        c.cpu = Some(st.cpu);
                        c.cpus = Some(st.cpus);
                    }
                    LoadAvg => c.load = Some(node::parse_loadavg(text)?),
                    MemInfo => c.mem = Some(node::parse_meminfo(text)?),
                    DiskStats => c.disk = Some(DiskTotals::whole_disks(&node::parse_diskstats(text)?)),
                    NetDev => {
                        interfaces = node::parse_net_dev(text)?;
                        c.net = Some(NetTotals::sum(&interfaces, include));
                    }
                    PsiCpu => c.psi_cpu = Some(psi::parse_pressure(text)?),
                    PsiMem => c.psi_memory = Some(psi::parse_pressure(text)?),
                    PsiIo => c.psi_io = Some(psi::parse_pressure(text)?),
                }
                Ok(())
            },
        );
        NodeRead { counters: c, problems, interfaces }
    }
}

/// Reads a node's counters once (see [`NodeReader`]).
pub fn read_node(proc_root: &Path, include_iface: impl Fn(&str) -> bool) -> NodeRead {
    let mut r = NodeReader::new(proc_root, include_iface);
    r.keep_open = false;
    r.read()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn copy(from: &Path, to: &Path, names: &[&str]) {
        std::fs::create_dir_all(to).unwrap();
        for n in names {
            std::fs::copy(from.join(n), to.join(n)).unwrap();
        }
    }

    /// A hybrid host's tree from the recorded files: `<root>/<controller>/herd/c1/...`.
    fn v1_tree(root: &Path, src: &str, unified_src: Option<&str>) {
        let s = fixtures().join(src);
        let cg = "herd/c1";
        copy(&s, &root.join("cpuacct").join(cg), &["cpuacct.usage", "cpuacct.stat"]);
        copy(&s, &root.join("cpu").join(cg), &["cpu.stat"]);
        copy(&s, &root.join("memory").join(cg), &["memory.usage_in_bytes", "memory.stat", "memory.oom_control"]);
        copy(&s, &root.join("blkio").join(cg), &["blkio.throttle.io_service_bytes", "blkio.throttle.io_serviced"]);
        copy(&s, &root.join("pids").join(cg), &["pids.current"]);
        if let Some(u) = unified_src {
            std::fs::create_dir_all(root.join("unified")).unwrap();
            std::fs::write(root.join("unified/cgroup.controllers"), "hugetlb\n").unwrap();
            copy(
                &fixtures().join(u),
                &root.join("unified").join(cg),
                &["cpu.pressure", "memory.pressure", "io.pressure"],
            );
        }
    }

    #[test]
    fn v1_hybrid_tree() {
        let t = tempfile::tempdir().unwrap();
        v1_tree(t.path(), "v1", Some("v2-hybrid"));
        let r = read_v1(&V1Paths::under(t.path(), "/herd/c1"));
        assert_eq!(r.problems, vec![]);
        assert_eq!(r.files_ok, 12);
        let c = &r.counters;
        assert_eq!(c.cpu_usage_ns, Some(2_853_421_927));
        assert_eq!(c.cpu_user_ns, Some(1_570_000_000));
        assert_eq!(c.cpu_throttle.unwrap().throttled_periods, 55);
        assert_eq!(c.mem_usage, Some(77_111_296));
        assert_eq!(c.mem_working_set, Some(77_111_296 - 33_558_528));
        assert_eq!((c.mem_rss, c.mem_cache), (Some(43_003_904), Some(33_857_536)));
        assert_eq!((c.pgfault, c.pgmajfault), (Some(16368), Some(19)));
        assert_eq!(c.oom_kills, Some(1));
        assert_eq!(c.oom_events, None);
        assert_eq!((c.blk_read_bytes, c.blk_write_bytes), (Some(16_781_312), Some(67_108_864)));
        assert_eq!((c.blk_read_ios, c.blk_write_ios), (Some(17), Some(64)));
        assert_eq!(c.pids, Some(1));
        assert_eq!(c.psi_io.unwrap().some.avg10, 0.32);
        assert!(c.net.is_none());
    }

    #[test]
    fn v1_running_container_recording() {
        // A busybox container with a 1 GiB allocation, recorded from a running Herd cluster.
        let t = tempfile::tempdir().unwrap();
        v1_tree(t.path(), "v1-container", Some("v1-container-unified"));
        let r = read_v1(&V1Paths::under(t.path(), "herd/c1"));
        assert_eq!(r.problems, vec![]);
        assert_eq!(r.counters.mem_rss, Some(1_073_799_168));
        assert_eq!(r.counters.mem_working_set, Some(1_076_064_256));
        assert_eq!(r.counters.oom_kills, Some(0));
        assert_eq!(r.counters.blk_read_bytes, Some(0));
        assert_eq!(r.counters.psi_cpu.unwrap().some.total_us, 20031);
    }

    #[test]
    fn v1_without_unified_mount() {
        let t = tempfile::tempdir().unwrap();
        v1_tree(t.path(), "v1", None);
        let p = V1Paths::under(t.path(), "herd/c1");
        assert_eq!(p.unified, None);
        let r = read_v1(&p);
        assert_eq!(r.problems, vec![]);
        assert_eq!(r.counters.psi_cpu, None);
    }

    #[test]
    fn v1_missing_and_broken_files() {
        let t = tempfile::tempdir().unwrap();
        v1_tree(t.path(), "v1", Some("v2-hybrid"));
        let p = V1Paths::under(t.path(), "herd/c1");
        std::fs::remove_file(p.memory.as_ref().unwrap().join("memory.stat")).unwrap();
        std::fs::write(p.cpuacct.as_ref().unwrap().join("cpuacct.usage"), "garbage\n").unwrap();
        std::fs::remove_file(p.unified.as_ref().unwrap().join("io.pressure")).unwrap();
        let r = read_v1(&p);
        let files: Vec<(String, &ProblemReason)> = r
            .problems
            .iter()
            .map(|f| (f.file.file_name().unwrap().to_string_lossy().into_owned(), &f.reason))
            .collect();
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].0, "cpuacct.usage");
        assert!(matches!(files[0].1, ProblemReason::Parse(ParseError::BadLine { .. })));
        assert_eq!((files[1].0.as_str(), files[1].1), ("memory.stat", &ProblemReason::Missing));
        assert_eq!((files[2].0.as_str(), files[2].1), ("io.pressure", &ProblemReason::Missing));
        assert!(r.problems[0].to_string().contains("cpuacct.usage: unparsable"));
        let c = &r.counters;
        assert_eq!((c.cpu_usage_ns, c.mem_rss, c.mem_working_set, c.psi_io), (None, None, None, None));
        assert_eq!(c.mem_usage, Some(77_111_296));
        assert_eq!(c.cpu_user_ns, Some(1_570_000_000));
        assert!(!r.gone());
    }

    #[test]
    fn gone_container() {
        let t = tempfile::tempdir().unwrap();
        let r = read_v1(&V1Paths::under(t.path(), "herd/nope"));
        assert_eq!(r.counters, ContainerCounters::default());
        assert_eq!(r.problems.len(), 9);
        assert!(r.gone());
        let r = read_v2(&t.path().join("nope"));
        assert_eq!(r.problems.len(), 9);
        assert!(r.gone());
    }

    #[test]
    fn v2_tree() {
        let r = read_v2(&fixtures().join("v2"));
        assert_eq!(r.problems, vec![]);
        let c = &r.counters;
        assert_eq!(c.cpu_usage_ns, Some(2_853_421_000));
        assert_eq!(c.cpu_throttle.unwrap().throttled_ns, 2_052_919_000);
        assert_eq!(c.mem_usage, Some(77_111_296));
        assert_eq!(c.mem_working_set, Some(77_111_296 - 33_558_528));
        assert_eq!((c.mem_rss, c.mem_cache), (Some(43_003_904), Some(33_857_536)));
        assert_eq!((c.oom_kills, c.oom_events), (Some(1), Some(1)));
        assert_eq!((c.blk_read_bytes, c.blk_read_ios), (Some(16_785_408), Some(18)));
        assert_eq!(c.pids, Some(3));
        assert!(c.psi_memory.is_some());
    }

    #[test]
    fn v2_on_a_mount_without_controllers() {
        // A hybrid host's v2 directory: cpu.stat and PSI only; the rest is reported missing.
        let r = read_v2(&fixtures().join("v2-hybrid"));
        assert_eq!(r.counters.cpu_usage_ns, Some(2_890_381_000));
        assert_eq!(r.counters.cpu_throttle, None);
        let missing: Vec<String> =
            r.problems.iter().map(|p| p.file.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(missing, ["memory.current", "memory.stat", "memory.events", "io.stat", "pids.current"]);
        assert!(!r.gone());
    }

    #[test]
    fn unreadable_path_is_an_io_problem() {
        // A directory where a file is expected: reading fails with something else than NotFound.
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("memory.current")).unwrap();
        let r = read_v2(t.path());
        let p = r.problems.iter().find(|p| p.file.ends_with("memory.current")).unwrap();
        assert!(matches!(p.reason, ProblemReason::Io(_)));
        assert!(!r.gone());
    }

    #[test]
    fn node_tree() {
        let t = tempfile::tempdir().unwrap();
        let proc = t.path();
        let s = fixtures().join("proc");
        copy(&s, proc, &["stat", "loadavg", "meminfo", "diskstats"]);
        std::fs::create_dir_all(proc.join("net")).unwrap();
        std::fs::copy(s.join("net_dev"), proc.join("net/dev")).unwrap();
        std::fs::create_dir_all(proc.join("pressure")).unwrap();
        for p in ["cpu", "memory", "io"] {
            std::fs::copy(s.join(format!("pressure_{p}")), proc.join("pressure").join(p)).unwrap();
        }
        let r = read_node(proc, |n| n == "eth0");
        assert_eq!(r.problems, vec![]);
        let c = &r.counters;
        assert_eq!(c.cpus, Some(2));
        assert_eq!(c.net.unwrap().rx_bytes, 284_206_689);
        assert!(c.disk.unwrap().read_bytes > 0);
        assert!(c.mem.unwrap().available.is_some());
        assert!(c.psi_cpu.is_some() && c.psi_io.is_some());

        // Per-container network from /proc/<pid>/net/dev.
        std::fs::create_dir_all(proc.join("42/net")).unwrap();
        std::fs::write(
            proc.join("42/net/dev"),
            "Inter-|   Receive |  Transmit\n face |bytes|bytes\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n  eth0: 100 2 0 0 0 0 0 0 300 4 0 0 0 0 0 0\n",
        )
        .unwrap();
        let n = read_container_net(proc, 42).unwrap();
        assert_eq!(n, NetTotals { rx_bytes: 100, tx_bytes: 300, rx_packets: 2, tx_packets: 4 });
        assert_eq!(read_container_net(proc, 43).unwrap_err().reason, ProblemReason::Missing);

        // A node without PSI (kernel built without it, or booted with psi=0).
        std::fs::remove_dir_all(proc.join("pressure")).unwrap();
        let r = read_node(proc, |n| n != "lo");
        assert_eq!(r.problems.len(), 3);
        assert!(r.counters.psi_cpu.is_none() && r.counters.cpu.is_some());
    }

    #[test]
    fn kept_open_files_are_reread() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("c");
        copy(&fixtures().join("v2"), &dir, &["cpu.stat", "memory.current", "memory.stat", "pids.current"]);
        let mut r = CgroupReader::v2(&dir);
        let a = r.read();
        assert_eq!(a.counters.pids, Some(3));
        assert_eq!(a.files_ok, 4);
        // Rewritten in place (same inode): the open descriptor sees the new contents.
        std::fs::write(dir.join("pids.current"), "7\n").unwrap();
        std::fs::write(dir.join("memory.current"), "1\n").unwrap();
        let b = r.read();
        assert_eq!(b.counters.pids, Some(7));
        assert_eq!(b.counters.mem_working_set, Some(0), "working set saturates at zero");
        // A file appearing later is picked up; a large one is read whole.
        let mut big = String::new();
        for i in 0..2000 {
            big.push_str(&format!("8:{i} rbytes=1 wbytes=2 rios=3 wios=4\n"));
        }
        assert!(big.len() > 16_384);
        std::fs::write(dir.join("io.stat"), &big).unwrap();
        let c = r.read();
        assert_eq!(c.counters.blk_write_bytes, Some(4000));
        assert_eq!(c.files_ok, 5);
        // Network counters through the same reader.
        let proc = t.path().join("proc");
        std::fs::create_dir_all(proc.join("9/net")).unwrap();
        std::fs::write(proc.join("9/net/dev"), "a|b\nc|d\n eth0: 7 1 0 0 0 0 0 0 9 2 0 0 0 0 0 0\n").unwrap();
        r.set_net_pid(&proc, Some(9));
        assert_eq!(r.read().counters.net.unwrap().tx_bytes, 9);
        r.set_net_pid(&proc, None);
        assert_eq!(r.read().counters.net, None);
        // A cheap read refreshes CPU and memory usage, and carries the rest over.
        std::fs::write(dir.join("pids.current"), "8\n").unwrap();
        std::fs::write(dir.join("memory.current"), "5000\n").unwrap();
        std::fs::write(dir.join("io.stat"), "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n").unwrap();
        let cheap = r.read_files(Files::Cheap);
        assert_eq!((cheap.files_ok, cheap.problems.len()), (2, 0), "cpu.stat and memory.current");
        assert_eq!((cheap.counters.pids, cheap.counters.mem_usage), (Some(7), Some(5000)), "pids carried");
        assert_eq!(cheap.counters.blk_write_bytes, Some(4000), "carried from the last detail read");
        let inactive = cheap.counters.mem_inactive_file.expect("carried from memory.stat");
        assert_eq!(
            cheap.counters.mem_working_set,
            Some(5000u64.saturating_sub(inactive)),
            "new usage less carried inactive_file"
        );
        // A detail read refreshes the rest and keeps the cheap figures.
        let detail = r.read_files(Files::Detail);
        assert_eq!(detail.counters.blk_write_bytes, Some(20));
        assert_eq!(detail.counters.pids, Some(8));
        assert_eq!(detail.files_ok, 3, "memory.stat, io.stat and pids.current");
        // A file that fails on a partial read leaves its fields empty, not stale.
        std::fs::write(dir.join("memory.current"), "much\n").unwrap();
        let broken = r.read_files(Files::Cheap);
        assert_eq!((broken.counters.mem_usage, broken.problems.len()), (None, 1));
        assert_eq!(broken.counters.mem_working_set, None);
    }

    #[test]
    fn detail_is_read_when_cheap_figures_move_or_every_nth_interval() {
        let at = |cpu: u64, mem: u64| ContainerCounters {
            cpu_usage_ns: Some(cpu),
            mem_usage: Some(mem),
            pids: Some(1),
            ..Default::default()
        };
        let mut s = DetailSchedule::new(3, 1);
        assert!(s.due(&at(0, 10)), "the first interval");
        assert!(!s.due(&at(0, 10)), "phase 1: one interval skipped");
        assert!(s.due(&at(0, 10)), "then the first forced read");
        assert!(!s.due(&at(0, 10)));
        assert!(!s.due(&at(0, 10)));
        assert!(s.due(&at(0, 10)), "every third interval");
        assert!(s.due(&at(5, 10)), "CPU time moved");
        assert!(!s.due(&at(5, 10)));
        assert!(s.due(&at(5, 11)), "memory usage moved");
        assert!(!s.due(&at(5, 11)));
        assert!(!s.due(&at(5, 11)));
        assert!(s.due(&at(5, 11)));
        let mut every = DetailSchedule::new(0, 7);
        assert!((0..5).all(|_| every.due(&at(0, 0))), "every 0 means every interval");
    }

    #[test]
    fn node_reader_rereads() {
        let t = tempfile::tempdir().unwrap();
        let proc = t.path();
        std::fs::write(proc.join("loadavg"), "0.10 0.20 0.30 1/100 5\n").unwrap();
        let mut r = NodeReader::new(proc, |_: &str| true);
        assert_eq!(r.read().counters.load.unwrap().load1, 0.10);
        std::fs::write(proc.join("loadavg"), "2.50 0.20 0.30 1/100 5\n").unwrap();
        let again = r.read();
        assert_eq!(again.counters.load.unwrap().load1, 2.5);
        assert_eq!(again.problems.len(), 7);
    }
}
