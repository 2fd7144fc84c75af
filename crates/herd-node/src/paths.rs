//! Where a node keeps things. Everything a node owns lives under its data directory
//! (persistent), its run directory (runtime state) and its cgroup parent.

use std::path::{Path, PathBuf};

/// The directories and cgroup of one node.
#[derive(Debug, Clone)]
pub struct NodePaths {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    /// e.g. `/herd/n1`: containers get `<cgroup_parent>/<id>`.
    pub cgroup_parent: String,
}

impl NodePaths {
    pub fn new(data_dir: &Path, run_dir: &Path, cgroup_parent: &str) -> NodePaths {
        NodePaths {
            data_dir: data_dir.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            cgroup_parent: format!("/{}", cgroup_parent.trim_matches('/')),
        }
    }

    /// The node's scratch tmpfs (memory): migrations' rounds, ticker dumps, version trails.
    pub fn scratch(&self) -> PathBuf {
        self.run_dir.join("scratch")
    }
    pub fn runc_root(&self) -> PathBuf {
        self.run_dir.join("runc")
    }
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }
    pub fn netns(&self, id: &str) -> PathBuf {
        self.netns_dir().join(id)
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.data_dir.join("layers")
    }
    pub fn containers_dir(&self) -> PathBuf {
        self.data_dir.join("containers")
    }
    pub fn container(&self, id: &str) -> ContainerPaths {
        ContainerPaths { dir: self.containers_dir().join(id) }
    }
    pub fn checkpoints_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("checkpoints").join(id)
    }
    pub fn checkpoint(&self, id: &str, checkpoint: &str) -> PathBuf {
        self.checkpoints_dir(id).join(checkpoint)
    }
    pub fn cgroup(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }
}

/// The files of one container on its node.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    pub dir: PathBuf,
}

impl ContainerPaths {
    /// The [`herd_proto::node::ContainerSpec`] it was created from.
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    /// The writable layer of its overlay root: all that is its own.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn overlay_work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// The shim's directory: log, exit status, pids.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
}

/// The node-side name of a container's veth (at most 15 characters).
pub fn host_ifname(id: &str) -> String {
    format!("h{}", &id[..id.len().min(14)])
}
