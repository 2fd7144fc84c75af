//! What a CRIU image directory would give the restored processes, checked against what the
//! container may have, before CRIU is asked to restore it.
//!
//! CRIU restores the credentials, namespaces and mounts its images describe. A node checks
//! them first ([`check_images`]): every thread's capability sets within the container's
//! bounding set, `no_new_privs` and seccomp kept where the container has them, every process
//! in the container's own namespaces (and in the host's where the container has none of its
//! own, but for the time namespace CRIU gives restored processes), and no mount the
//! container's configuration does not make (no file system but
//! proc, sysfs, tmpfs, devpts, mqueue and cgroup ones; the read-only paths still read-only).
//! A container that holds `CAP_SYS_ADMIN` (`herd run --cap-add SYS_ADMIN`) may also have
//! mounted such file systems where it liked, as it could again after the restore; never a
//! mount from outside its namespace (an external bind).
//! This is a second line behind the signature of checkpoints that come from outside the
//! cluster (`crate::signing`), and the only one for checkpoints that arrive from another node.
//!
//! The image format (CRIU's `images/*.proto`, `criu/include/magic.h`): a file starts with
//! CRIU's common magic and the file's own (the inventory has only its own), then holds
//! entries, each a little-endian `u32` length and a protobuf message. Only the fields checked
//! here are decoded; the others are skipped.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use prost::Message;

/// The magic every image but the inventory starts with.
const COMMON_MAGIC: u32 = 0x5456_4319;
const INVENTORY_MAGIC: u32 = 0x5831_3116;
const PSTREE_MAGIC: u32 = 0x5027_3030;
const CORE_MAGIC: u32 = 0x5505_3847;
const SECCOMP_MAGIC: u32 = 0x6441_3049;
const IDS_MAGIC: u32 = 0x5443_2030;
const MNTS_MAGIC: u32 = 0x5556_3928;
/// The largest image file read (the images checked here are a few KiB).
const MAX_IMAGE: u64 = 16 << 20;
/// The most entries (processes, threads, mounts) accepted in one image.
const MAX_ENTRIES: usize = 1 << 16;

#[derive(Clone, PartialEq, Message)]
struct CredsEntry {
    #[prost(uint32, repeated, tag = "9")]
    cap_inh: Vec<u32>,
    #[prost(uint32, repeated, tag = "10")]
    cap_prm: Vec<u32>,
    #[prost(uint32, repeated, tag = "11")]
    cap_eff: Vec<u32>,
    #[prost(uint32, repeated, tag = "12")]
    cap_bnd: Vec<u32>,
    #[prost(uint32, optional, tag = "18")]
    no_new_privs: Option<u32>,
    #[prost(uint32, repeated, tag = "19")]
    cap_amb: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct ThreadCoreEntry {
    #[prost(message, optional, tag = "10")]
    creds: Option<CredsEntry>,
    #[prost(uint32, optional, tag = "11")]
    seccomp_mode: Option<u32>,
    /// The newest filter of the thread's chain, an index into `seccomp.img`.
    #[prost(uint32, optional, tag = "12")]
    seccomp_filter: Option<u32>,
}

/// `seccomp.img`: every filter of every chain (the program itself is not decoded).
#[derive(Clone, PartialEq, Message)]
struct SeccompEntry {
    #[prost(message, repeated, tag = "1")]
    seccomp_filters: Vec<SeccompFilter>,
}

#[derive(Clone, PartialEq, Message)]
struct SeccompFilter {
    #[prost(uint32, optional, tag = "3")]
    flags: Option<u32>,
}

/// `SECCOMP_FILTER_FLAG_TSYNC`: installing the filter installs it on every thread of the process.
const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;

#[derive(Clone, PartialEq, Message)]
struct TaskCoreEntry {
    /// `TASK_ALIVE` (1), `TASK_DEAD` (2: a zombie), ...
    #[prost(uint32, optional, tag = "1")]
    task_state: Option<u32>,
    #[prost(uint32, optional, tag = "11")]
    old_seccomp_mode: Option<u32>,
}

/// CRIU's task state of a zombie: it is restored dead, with nothing of its own.
const TASK_DEAD: u32 = 2;

#[derive(Clone, PartialEq, Message)]
struct CoreEntry {
    #[prost(message, optional, tag = "3")]
    tc: Option<TaskCoreEntry>,
    #[prost(message, optional, tag = "4")]
    ids: Option<TaskKobjIds>,
    #[prost(message, optional, tag = "5")]
    thread_core: Option<ThreadCoreEntry>,
}

/// `task_kobj_ids_entry`: the ids of a task's namespaces.
#[derive(Clone, PartialEq, Message)]
struct TaskKobjIds {
    #[prost(uint32, optional, tag = "5")]
    pid_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    net_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    ipc_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    uts_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "9")]
    mnt_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "10")]
    user_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "11")]
    cgroup_ns_id: Option<u32>,
    #[prost(uint32, optional, tag = "12")]
    time_ns_id: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct InventoryEntry {
    #[prost(message, optional, tag = "3")]
    root_ids: Option<TaskKobjIds>,
}

#[derive(Clone, PartialEq, Message)]
struct PstreeEntry {
    #[prost(uint32, tag = "1")]
    pid: u32,
    #[prost(uint32, repeated, tag = "5")]
    threads: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct MntEntry {
    #[prost(uint32, tag = "1")]
    fstype: u32,
    #[prost(uint32, tag = "2")]
    mnt_id: u32,
    #[prost(uint32, tag = "4")]
    parent_mnt_id: u32,
    #[prost(uint32, tag = "5")]
    flags: u32,
    #[prost(string, tag = "7")]
    mountpoint: String,
    #[prost(string, optional, tag = "14")]
    fsname: Option<String>,
    #[prost(bool, optional, tag = "13")]
    ext_mount: Option<bool>,
    #[prost(uint32, optional, tag = "17")]
    sb_flags: Option<u32>,
    #[prost(string, optional, tag = "18")]
    ext_key: Option<String>,
}

/// CRIU's `fstype` numbers of the file systems a container's own mounts may have.
const FS_PROC: u32 = 1;
const FS_SYSFS: u32 = 2;
const FS_TMPFS: u32 = 5;
const FS_DEVPTS: u32 = 6;
const FS_CGROUP: u32 = 12;
const FS_MQUEUE: u32 = 14;
const FS_OVERLAYFS: u32 = 17;
const FS_CGROUP2: u32 = 23;
const MS_RDONLY: u32 = 1;
/// The capability number of `CAP_SYS_ADMIN`, which mount(2) needs.
const CAP_SYS_ADMIN: u32 = 21;
/// `seccomp_mode`: filter.
const SECCOMP_FILTER: u32 = 2;

/// A kind of namespace, as the OCI configuration names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NamespaceKind {
    Pid,
    Network,
    Ipc,
    Uts,
    Mount,
    User,
    Cgroup,
    Time,
}

impl NamespaceKind {
    const ALL: [NamespaceKind; 8] = [
        NamespaceKind::Pid,
        NamespaceKind::Network,
        NamespaceKind::Ipc,
        NamespaceKind::Uts,
        NamespaceKind::Mount,
        NamespaceKind::User,
        NamespaceKind::Cgroup,
        NamespaceKind::Time,
    ];

    fn id(self, ids: &TaskKobjIds) -> Option<u32> {
        match self {
            NamespaceKind::Pid => ids.pid_ns_id,
            NamespaceKind::Network => ids.net_ns_id,
            NamespaceKind::Ipc => ids.ipc_ns_id,
            NamespaceKind::Uts => ids.uts_ns_id,
            NamespaceKind::Mount => ids.mnt_ns_id,
            NamespaceKind::User => ids.user_ns_id,
            NamespaceKind::Cgroup => ids.cgroup_ns_id,
            NamespaceKind::Time => ids.time_ns_id,
        }
    }
}

/// What the container may have, from its runtime configuration.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// The bounding capability set, as a mask of capability numbers.
    pub capabilities: u64,
    /// The container's processes run with `no_new_privs`.
    pub no_new_privs: bool,
    /// The container has a seccomp filter.
    pub seccomp: bool,
    /// The namespaces the container has of its own (in the others it shares the host's).
    pub namespaces: BTreeSet<NamespaceKind>,
    /// Where its configuration mounts something (`mounts[].destination`, masked paths).
    pub mountpoints: BTreeSet<String>,
    /// Paths its configuration makes read-only.
    pub readonly: BTreeSet<String>,
}

/// What was decoded of an image directory.
#[derive(Debug, Default)]
pub struct Images {
    root_ids: TaskKobjIds,
    /// Per process: its pid and its namespace ids.
    tasks: Vec<(u32, TaskKobjIds)>,
    /// Per thread: its tid, credentials and seccomp mode.
    threads: Vec<(u32, CredsEntry, u32)>,
    mounts: Vec<MntEntry>,
}

/// Why images were refused or could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CriuImageError {
    #[error("the CRIU image {file} cannot be read: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("the checkpoint would give its processes what the container may not have: {}", .0.join("; "))]
    Exceeds(Vec<String>),
}

fn unreadable(file: &str, reason: impl Into<String>) -> CriuImageError {
    CriuImageError::Unreadable { file: file.to_string(), reason: reason.into() }
}

/// Decodes the entries of one image file (its magic checked).
fn entries<M: Message + Default>(bytes: &[u8], magic: u32, file: &str) -> Result<Vec<M>, CriuImageError> {
    let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let mut at = if magic == INVENTORY_MAGIC {
        4
    } else {
        if word(0) != Some(COMMON_MAGIC) {
            return Err(unreadable(file, "it does not start with CRIU's image magic"));
        }
        8
    };
    if word(at - 4) != Some(magic) {
        return Err(unreadable(file, "it is not the kind of image its name says"));
    }
    let mut out = Vec::new();
    while at < bytes.len() {
        let len = word(at).ok_or_else(|| unreadable(file, "an entry's length is cut short"))? as usize;
        let body = bytes
            .get(at + 4..(at + 4).saturating_add(len))
            .ok_or_else(|| unreadable(file, "an entry runs past the end of the file"))?;
        out.push(M::decode(body).map_err(|e| unreadable(file, e.to_string()))?);
        if out.len() > MAX_ENTRIES {
            return Err(unreadable(file, "it holds too many entries"));
        }
        at += 4 + len;
    }
    Ok(out)
}

fn one<M: Message + Default>(bytes: &[u8], magic: u32, file: &str) -> Result<M, CriuImageError> {
    let mut all = entries::<M>(bytes, magic, file)?;
    if all.len() != 1 {
        return Err(unreadable(file, format!("it holds {} entries where CRIU writes one", all.len())));
    }
    Ok(all.remove(0))
}

impl Images {
    /// Decodes the images of `dir` that say what the processes will have.
    pub fn read_dir(dir: &Path) -> Result<Images, CriuImageError> {
        let read = |name: &str| -> Result<Vec<u8>, CriuImageError> {
            let path = dir.join(name);
            let meta = fs::symlink_metadata(&path).map_err(|e| unreadable(name, e.to_string()))?;
            if !meta.is_file() || meta.len() > MAX_IMAGE {
                return Err(unreadable(name, "it is not a regular file of a plausible size"));
            }
            fs::read(&path).map_err(|e| unreadable(name, e.to_string()))
        };
        let mut files = BTreeSet::new();
        for e in fs::read_dir(dir).map_err(|e| unreadable(&dir.display().to_string(), e.to_string()))? {
            let e = e.map_err(|e| unreadable(&dir.display().to_string(), e.to_string()))?;
            files.insert(e.file_name().to_string_lossy().into_owned());
        }
        let mounts: Vec<(String, Vec<u8>)> = files
            .iter()
            .filter(|f| f.starts_with("mountpoints-") && f.ends_with(".img"))
            .map(|f| read(f).map(|b| (f.clone(), b)))
            .collect::<Result<_, _>>()?;
        let seccomp = if files.contains("seccomp.img") { Some(read("seccomp.img")?) } else { None };
        Images::decode(
            &read("inventory.img")?,
            &read("pstree.img")?,
            |kind, id| {
                let name = format!("{kind}-{id}.img");
                if files.contains(&name) { read(&name).map(Some) } else { Ok(None) }
            },
            &mounts,
            seccomp.as_deref(),
        )
    }

    /// Decodes images given as bytes: the inventory, the process tree, a lookup of the
    /// per-task files (`core`, `ids`) by kind and id, the mount images and `seccomp.img`.
    pub fn decode(
        inventory: &[u8],
        pstree: &[u8],
        mut task_file: impl FnMut(&str, u32) -> Result<Option<Vec<u8>>, CriuImageError>,
        mounts: &[(String, Vec<u8>)],
        seccomp: Option<&[u8]>,
    ) -> Result<Images, CriuImageError> {
        // The flags of each filter, read once a process needs them.
        let mut filter_flags: Option<Vec<u32>> = None;
        let mut flags_of = |index: u32| -> Result<u32, CriuImageError> {
            if filter_flags.is_none() {
                let bytes = seccomp.ok_or_else(|| unreadable("seccomp.img", "it is missing"))?;
                let entry: SeccompEntry = one(bytes, SECCOMP_MAGIC, "seccomp.img")?;
                filter_flags = Some(entry.seccomp_filters.iter().map(|f| f.flags.unwrap_or(0)).collect());
            }
            let all = filter_flags.as_ref().expect("just read");
            all.get(index as usize)
                .copied()
                .ok_or_else(|| unreadable("seccomp.img", format!("it has no filter {index}")))
        };
        let inv: InventoryEntry = one(inventory, INVENTORY_MAGIC, "inventory.img")?;
        let root_ids = inv.root_ids.ok_or_else(|| unreadable("inventory.img", "it names no root namespaces"))?;
        let mut images = Images { root_ids, ..Images::default() };
        // Each thread's core image is decoded once, however often the tree names it.
        let mut seen_threads = std::collections::HashSet::new();
        for task in entries::<PstreeEntry>(pstree, PSTREE_MAGIC, "pstree.img")? {
            // A zombie (an orphan its container's init never reaped: left by `herd exec`'s
            // `sh -c 'cmd &'`, say) has a core image of its pid with only its exit status, and
            // neither threads, credentials nor namespaces: CRIU puts it back as a zombie.
            if let Some(bytes) = task_file("core", task.pid)?
                && one::<CoreEntry>(&bytes, CORE_MAGIC, &format!("core-{}.img", task.pid))?
                    .tc
                    .and_then(|tc| tc.task_state)
                    == Some(TASK_DEAD)
            {
                continue;
            }
            // Only now are its threads counted: CRIU lists a zombie's thread as whatever id
            // it had at hand, and two zombies may list the same one (PostgreSQL under pgbench,
            // its exiting backends zombies, was refused as "naming a thread twice").
            let threads = if task.threads.is_empty() { vec![task.pid] } else { task.threads.clone() };
            if threads.iter().any(|t| !seen_threads.insert(*t)) {
                return Err(unreadable("pstree.img", "it names a thread twice"));
            }
            if seen_threads.len() > MAX_ENTRIES {
                return Err(unreadable("pstree.img", "it names too many threads"));
            }
            let mut ids = None;
            let first_thread = images.threads.len();
            // Whether the leader's filter is installed with TSYNC on restore: CRIU records a
            // filter that every thread shares only on the leader, and the others without one.
            let mut synced = false;
            for tid in threads {
                let file = format!("core-{tid}.img");
                let bytes = task_file("core", tid)?.ok_or_else(|| unreadable(&file, "it is missing"))?;
                let core: CoreEntry = one(&bytes, CORE_MAGIC, &file)?;
                let tc = core.thread_core.ok_or_else(|| unreadable(&file, "it has no thread state"))?;
                let creds = tc.creds.ok_or_else(|| unreadable(&file, "it has no credentials"))?;
                let old = core.tc.as_ref().and_then(|t| t.old_seccomp_mode);
                let mode = tc.seccomp_mode.or(old).unwrap_or(0);
                if tid == task.pid {
                    ids = core.ids;
                    if mode == SECCOMP_FILTER
                        && let Some(index) = tc.seccomp_filter
                    {
                        synced = flags_of(index)? & SECCOMP_FILTER_FLAG_TSYNC != 0;
                    }
                }
                images.threads.push((tid, creds, mode));
            }
            if synced {
                for (_, _, mode) in &mut images.threads[first_thread..] {
                    if *mode == 0 {
                        *mode = SECCOMP_FILTER;
                    }
                }
            }
            // Newer CRIU keeps a task's namespace ids in ids-PID.img.
            if let Some(bytes) = task_file("ids", task.pid)? {
                ids = Some(one(&bytes, IDS_MAGIC, &format!("ids-{}.img", task.pid))?);
            }
            let ids = ids.ok_or_else(|| unreadable(&format!("ids-{}.img", task.pid), "it is missing"))?;
            images.tasks.push((task.pid, ids));
        }
        if images.tasks.is_empty() {
            return Err(unreadable("pstree.img", "it names no process"));
        }
        for (file, bytes) in mounts {
            images.mounts.extend(entries::<MntEntry>(bytes, MNTS_MAGIC, file)?);
        }
        Ok(images)
    }

    /// Checks what the images give against what the container may have; lists every excess.
    pub fn check(&self, allowed: &Allowed) -> Result<(), CriuImageError> {
        let mut problems = Vec::new();
        for (tid, creds, seccomp) in &self.threads {
            for (set, words) in [
                ("bounding", &creds.cap_bnd),
                ("permitted", &creds.cap_prm),
                ("effective", &creds.cap_eff),
                ("inheritable", &creds.cap_inh),
                ("ambient", &creds.cap_amb),
            ] {
                let mask = words.iter().take(2).enumerate().fold(0u64, |m, (i, w)| m | (*w as u64) << (32 * i));
                let extra = mask & !allowed.capabilities;
                if extra != 0 || words.iter().skip(2).any(|w| *w != 0) {
                    problems.push(format!("thread {tid} has {set} capabilities {extra:#x} beyond the container's"));
                }
            }
            if allowed.no_new_privs && creds.no_new_privs != Some(1) {
                problems.push(format!("thread {tid} runs without no_new_privs"));
            }
            if allowed.seccomp && *seccomp != SECCOMP_FILTER {
                problems.push(format!("thread {tid} runs without the container's seccomp filter"));
            }
        }
        let first = &self.tasks[0].1;
        for kind in NamespaceKind::ALL {
            let root = kind.id(&self.root_ids);
            let own = allowed.namespaces.contains(&kind);
            for (pid, ids) in &self.tasks {
                let id = kind.id(ids);
                if id != kind.id(first) {
                    problems.push(format!("process {pid} is in a {kind:?} namespace of its own"));
                } else if own && (id.is_none() || id == root) {
                    problems.push(format!("process {pid} would share the host's {kind:?} namespace"));
                } else if !own && id != root && kind != NamespaceKind::Time {
                    // CRIU itself gives restored processes a time namespace of their own (to
                    // keep their monotonic clocks), and one holds nothing but clock offsets.
                    problems.push(format!("process {pid} is in a {kind:?} namespace the container does not have"));
                }
            }
        }
        let ids: BTreeSet<u32> = self.mounts.iter().map(|m| m.mnt_id).collect();
        for m in &self.mounts {
            let at = &m.mountpoint;
            let is_root = at == "/" && !ids.contains(&m.parent_mnt_id);
            if is_root {
                if m.fstype != FS_OVERLAYFS {
                    problems.push(format!("the root is a file system of type {} instead of the overlay", m.fstype));
                }
                continue;
            }
            let cgroup_dir = at.starts_with("/sys/fs/cgroup/");
            let external = m.ext_key.is_some() || m.ext_mount == Some(true);
            let pseudo =
                matches!(m.fstype, FS_PROC | FS_SYSFS | FS_TMPFS | FS_DEVPTS | FS_CGROUP | FS_MQUEUE | FS_CGROUP2);
            // One the container could have made (and could make again) itself.
            let own_mount = allowed.capabilities & (1 << CAP_SYS_ADMIN) != 0 && !external && pseudo;
            if !allowed.mountpoints.contains(at) && !allowed.readonly.contains(at) && !cgroup_dir && !own_mount {
                problems.push(format!("a mount at {at} that the container's configuration does not make"));
                continue;
            }
            let kind_ok = external || pseudo;
            if !kind_ok {
                let name = m.fsname.as_deref().unwrap_or("?");
                problems.push(format!(
                    "a mount at {at} of a file system ({name}, type {}) a container never has",
                    m.fstype
                ));
            }
            if allowed.readonly.contains(at) && (m.flags | m.sb_flags.unwrap_or(0)) & MS_RDONLY == 0 {
                problems.push(format!("{at} would be writable where the container has it read-only"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(CriuImageError::Exceeds(problems)) }
    }
}

/// Decodes the images of `dir` and checks them against `allowed`.
pub fn check_images(dir: &Path, allowed: &Allowed) -> Result<(), CriuImageError> {
    Images::read_dir(dir)?.check(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(magic: u32, msgs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        if magic != INVENTORY_MAGIC {
            out.extend(COMMON_MAGIC.to_le_bytes());
        }
        out.extend(magic.to_le_bytes());
        for m in msgs {
            out.extend((m.len() as u32).to_le_bytes());
            out.extend(m);
        }
        out
    }

    fn ids(own: u32) -> TaskKobjIds {
        // Own pid, net, ipc, uts and mount namespaces; the host's user, cgroup and time ones.
        TaskKobjIds {
            pid_ns_id: Some(own),
            net_ns_id: Some(own + 1),
            ipc_ns_id: Some(own + 2),
            uts_ns_id: Some(own + 3),
            mnt_ns_id: Some(own + 4),
            user_ns_id: Some(7),
            cgroup_ns_id: Some(8),
            time_ns_id: Some(5),
        }
    }

    const DOCKER_CAPS: u32 = 0xA804_25FB;

    fn creds(caps: u32) -> CredsEntry {
        CredsEntry {
            cap_inh: vec![0, 0],
            cap_prm: vec![caps, 0],
            cap_eff: vec![caps, 0],
            cap_bnd: vec![caps, 0],
            no_new_privs: Some(1),
            cap_amb: vec![0, 0],
        }
    }

    fn core(caps: u32, ids: Option<TaskKobjIds>) -> Vec<u8> {
        CoreEntry {
            tc: Some(TaskCoreEntry { task_state: Some(1), old_seccomp_mode: None }),
            ids,
            thread_core: Some(ThreadCoreEntry { creds: Some(creds(caps)), seccomp_mode: None, seccomp_filter: None }),
        }
        .encode_to_vec()
    }

    fn mount(id: u32, parent: u32, fstype: u32, at: &str, flags: u32, ext: Option<&str>) -> Vec<u8> {
        MntEntry {
            fstype,
            mnt_id: id,
            parent_mnt_id: parent,
            flags,
            mountpoint: at.into(),
            fsname: None,
            ext_mount: None,
            sb_flags: None,
            ext_key: ext.map(str::to_string),
        }
        .encode_to_vec()
    }

    fn allowed() -> Allowed {
        use NamespaceKind::*;
        Allowed {
            capabilities: DOCKER_CAPS as u64,
            no_new_privs: true,
            seccomp: false,
            namespaces: [Pid, Network, Ipc, Uts, Mount].into_iter().collect(),
            mountpoints: ["/proc", "/dev", "/sys", "/proc/keys"].into_iter().map(String::from).collect(),
            readonly: ["/proc/sys"].into_iter().map(String::from).collect(),
        }
    }

    /// A container's images as CRIU writes them: two processes with `caps` and namespaces
    /// `task_ids`, and the usual mounts plus `extra_mounts`.
    fn images(caps: u32, task_ids: TaskKobjIds, extra_mounts: Vec<Vec<u8>>) -> Result<Images, CriuImageError> {
        let root = TaskKobjIds {
            pid_ns_id: Some(1),
            net_ns_id: Some(2),
            ipc_ns_id: Some(3),
            uts_ns_id: Some(4),
            mnt_ns_id: Some(6),
            user_ns_id: Some(7),
            cgroup_ns_id: Some(8),
            time_ns_id: Some(5),
        };
        let inventory = image(INVENTORY_MAGIC, &[InventoryEntry { root_ids: Some(root) }.encode_to_vec()]);
        let pstree = image(
            PSTREE_MAGIC,
            &[
                PstreeEntry { pid: 1, threads: vec![1] }.encode_to_vec(),
                PstreeEntry { pid: 8, threads: vec![8] }.encode_to_vec(),
            ],
        );
        let mut mounts = vec![
            mount(134, 106, FS_OVERLAYFS, "/", 0, None),
            mount(135, 134, FS_PROC, "/proc", 0, None),
            mount(136, 134, FS_TMPFS, "/dev", 0, None),
            mount(137, 135, FS_PROC, "/proc/sys", MS_RDONLY, None),
            mount(138, 135, FS_TMPFS, "/proc/keys", 0, Some("/dev/null")),
            mount(139, 134, FS_CGROUP, "/sys/fs/cgroup/cpu", 0, Some("/sys/fs/cgroup/cpu")),
        ];
        mounts.extend(extra_mounts);
        let mounts = vec![("mountpoints-13.img".to_string(), image(MNTS_MAGIC, &mounts))];
        Images::decode(
            &inventory,
            &pstree,
            |kind, _| {
                Ok(match kind {
                    "core" => Some(image(CORE_MAGIC, &[core(caps, None)])),
                    "ids" => Some(image(IDS_MAGIC, &[task_ids.encode_to_vec()])),
                    _ => None,
                })
            },
            &mounts,
            None,
        )
    }

    #[test]
    fn a_container_as_dumped_passes() {
        images(DOCKER_CAPS, ids(9), vec![]).unwrap().check(&allowed()).unwrap();
    }

    #[test]
    fn zombies_are_not_looked_into() {
        // As CRIU 4.2.1 dumped two zombies: a thread id that is no process, and a core image of
        // the pid with the task state alone.
        let root = TaskKobjIds { pid_ns_id: Some(1), ..TaskKobjIds::default() };
        let inventory = image(INVENTORY_MAGIC, &[InventoryEntry { root_ids: Some(root) }.encode_to_vec()]);
        let pstree = image(
            PSTREE_MAGIC,
            &[
                PstreeEntry { pid: 1, threads: vec![1] }.encode_to_vec(),
                PstreeEntry { pid: 38, threads: vec![1082058784] }.encode_to_vec(),
                PstreeEntry { pid: 39, threads: vec![1082058784] }.encode_to_vec(),
            ],
        );
        let zombie = CoreEntry {
            tc: Some(TaskCoreEntry { task_state: Some(TASK_DEAD), old_seccomp_mode: None }),
            ids: None,
            thread_core: None,
        };
        let images = Images::decode(
            &inventory,
            &pstree,
            |kind, id| {
                Ok(match (kind, id) {
                    ("core", 1) => Some(image(CORE_MAGIC, &[core(DOCKER_CAPS, None)])),
                    ("core", 38 | 39) => Some(image(CORE_MAGIC, &[zombie.encode_to_vec()])),
                    ("ids", 1) => Some(image(IDS_MAGIC, &[ids(9).encode_to_vec()])),
                    _ => None,
                })
            },
            &[],
            None,
        )
        .unwrap();
        assert_eq!(images.tasks.len(), 1);
    }

    /// The images of one process with threads 1, 2 and 3: the leader with filter mode
    /// `leader_mode` (its chain's newest filter at index 1 of `seccomp.img`, whose flags are
    /// `flags`), the other threads with `thread_mode`.
    fn threaded(leader_mode: Option<u32>, thread_mode: Option<u32>, flags: u32) -> Result<Images, CriuImageError> {
        let root = TaskKobjIds { pid_ns_id: Some(1), ..TaskKobjIds::default() };
        let inventory = image(INVENTORY_MAGIC, &[InventoryEntry { root_ids: Some(root) }.encode_to_vec()]);
        let pstree = image(PSTREE_MAGIC, &[PstreeEntry { pid: 1, threads: vec![1, 2, 3] }.encode_to_vec()]);
        let thread = |mode: Option<u32>, filter: Option<u32>| {
            let tc = ThreadCoreEntry { creds: Some(creds(DOCKER_CAPS)), seccomp_mode: mode, seccomp_filter: filter };
            CoreEntry { tc: None, ids: None, thread_core: Some(tc) }.encode_to_vec()
        };
        let seccomp = image(
            SECCOMP_MAGIC,
            &[SeccompEntry {
                seccomp_filters: vec![SeccompFilter { flags: Some(flags) }, SeccompFilter { flags: Some(flags) }],
            }
            .encode_to_vec()],
        );
        Images::decode(
            &inventory,
            &pstree,
            |kind, id| {
                Ok(match (kind, id) {
                    ("core", 1) => Some(image(CORE_MAGIC, &[thread(leader_mode, leader_mode.map(|_| 1))])),
                    ("core", _) => Some(image(CORE_MAGIC, &[thread(thread_mode, thread_mode.map(|_| 0))])),
                    ("ids", 1) => Some(image(IDS_MAGIC, &[ids(9).encode_to_vec()])),
                    _ => None,
                })
            },
            &[],
            Some(&seccomp),
        )
    }

    #[test]
    fn threads_sharing_the_leaders_filter_through_tsync_have_it() {
        let confined = Allowed { seccomp: true, namespaces: Default::default(), ..allowed() };
        // As CRIU 4.2.1 dumps a confined Redis: the shared filter on the leader alone, TSYNC.
        threaded(Some(SECCOMP_FILTER), None, SECCOMP_FILTER_FLAG_TSYNC).unwrap().threads.iter().for_each(|t| {
            assert_eq!(t.2, SECCOMP_FILTER, "thread {}", t.0);
        });
        // Each thread with a filter of its own.
        assert!(threaded(Some(SECCOMP_FILTER), Some(SECCOMP_FILTER), 0).unwrap().threads.iter().all(|t| t.2 == 2));
        // Without TSYNC, threads without a filter stay without one, and are refused.
        let images = threaded(Some(SECCOMP_FILTER), None, 0).unwrap();
        let err = images.check(&confined).unwrap_err().to_string();
        assert!(err.contains("thread 2 runs without the container's seccomp filter"), "{err}");
        assert!(!err.contains("thread 1 "), "{err}");
        // A leader without a filter gives its threads none, whatever the image says.
        let err = threaded(None, None, SECCOMP_FILTER_FLAG_TSYNC).unwrap().check(&confined).unwrap_err().to_string();
        assert!(err.contains("thread 1 runs without"), "{err}");
    }

    #[test]
    fn capabilities_beyond_the_bounding_set_are_refused() {
        // The edit the hostile checkpoint made: Docker's set replaced by every capability.
        let err = images(0xFEFF_FFFF, ids(9), vec![]).unwrap().check(&allowed()).unwrap_err().to_string();
        assert!(err.contains("thread 1 has bounding capabilities 0x56fbda04 beyond the container's"), "{err}");
        assert!(err.contains("thread 8 has effective capabilities"), "{err}");
    }

    #[test]
    fn namespaces_must_be_the_containers_own() {
        let mut shared_net = ids(9);
        shared_net.net_ns_id = Some(2);
        let err = images(DOCKER_CAPS, shared_net, vec![]).unwrap().check(&allowed()).unwrap_err().to_string();
        assert!(err.contains("would share the host's Network namespace"), "{err}");
        let mut own_user = ids(9);
        own_user.user_ns_id = Some(40);
        let err = images(DOCKER_CAPS, own_user, vec![]).unwrap().check(&allowed()).unwrap_err().to_string();
        assert!(err.contains("User namespace the container does not have"), "{err}");
    }

    #[test]
    fn a_time_namespace_of_a_restored_container_is_its_own() {
        // What CRIU gives the processes it restored: a time namespace of their own.
        let mut restored = ids(9);
        restored.time_ns_id = Some(30);
        images(DOCKER_CAPS, restored, vec![]).unwrap().check(&allowed()).unwrap();
    }

    #[test]
    fn mounts_the_configuration_does_not_make_are_refused() {
        const FS_AUTO: u32 = 16;
        let disk = mount(200, 134, FS_AUTO, "/mnt", 0, None);
        let err = images(DOCKER_CAPS, ids(9), vec![disk]).unwrap().check(&allowed()).unwrap_err().to_string();
        assert!(err.contains("a mount at /mnt that the container's configuration does not make"), "{err}");
        let disk_on_dev = mount(201, 134, FS_AUTO, "/dev", 0, None);
        let err = images(DOCKER_CAPS, ids(9), vec![disk_on_dev]).unwrap().check(&allowed()).unwrap_err().to_string();
        assert!(err.contains("a mount at /dev of a file system"), "{err}");
        let writable = mount(202, 135, FS_PROC, "/proc/sys", 0, None);
        let err = images(DOCKER_CAPS, ids(9), vec![writable]).unwrap().check(&allowed()).unwrap_err().to_string();
        assert!(err.contains("/proc/sys would be writable"), "{err}");
    }

    #[test]
    fn a_container_with_cap_sys_admin_may_have_mounted_file_systems_of_its_own() {
        let with_sys_admin = Allowed { capabilities: allowed().capabilities | 1 << CAP_SYS_ADMIN, ..allowed() };
        let caps = DOCKER_CAPS | 1 << CAP_SYS_ADMIN;
        let cgroup = || mount(210, 134, FS_CGROUP, "/srv/cg", 0, None);
        images(caps, ids(9), vec![cgroup()]).unwrap().check(&with_sys_admin).unwrap();
        // Without the capability, the same mount is refused.
        let err = images(DOCKER_CAPS, ids(9), vec![cgroup()]).unwrap().check(&allowed()).unwrap_err().to_string();
        assert!(err.contains("a mount at /srv/cg that the container's configuration does not make"), "{err}");
        // Neither a disk nor a bind from outside its namespace, even with it.
        const FS_AUTO: u32 = 16;
        let disk = mount(211, 134, FS_AUTO, "/mnt", 0, None);
        let err = images(caps, ids(9), vec![disk]).unwrap().check(&with_sys_admin).unwrap_err().to_string();
        assert!(err.contains("a mount at /mnt that the container's configuration does not make"), "{err}");
        let outside = mount(212, 134, FS_TMPFS, "/host", 0, Some("/etc"));
        let err = images(caps, ids(9), vec![outside]).unwrap().check(&with_sys_admin).unwrap_err().to_string();
        assert!(err.contains("a mount at /host that the container's configuration does not make"), "{err}");
    }

    #[test]
    fn damaged_images_are_errors_not_panics() {
        let inv = image(INVENTORY_MAGIC, &[vec![0x1a, 0xff]]);
        let err = Images::decode(&inv, &[], |_, _| Ok(None), &[], None).unwrap_err();
        assert!(matches!(err, CriuImageError::Unreadable { .. }), "{err}");
        let err = Images::decode(b"xx", &[], |_, _| Ok(None), &[], None).unwrap_err().to_string();
        assert!(err.contains("inventory.img"), "{err}");
        // A tree naming one thread over and over is refused, not decoded again and again.
        let inv = image(INVENTORY_MAGIC, &[InventoryEntry { root_ids: Some(ids(1)) }.encode_to_vec()]);
        let again = PstreeEntry { pid: 1, threads: vec![1, 1] }.encode_to_vec();
        let err = Images::decode(&inv, &image(PSTREE_MAGIC, &[again]), |_, _| Ok(None), &[], None).unwrap_err();
        assert!(err.to_string().contains("names a thread twice"), "{err}");
        let mut long = image(PSTREE_MAGIC, &[]);
        long.extend(1000u32.to_le_bytes());
        assert!(
            entries::<PstreeEntry>(&long, PSTREE_MAGIC, "pstree.img").unwrap_err().to_string().contains("runs past")
        );
    }
}
