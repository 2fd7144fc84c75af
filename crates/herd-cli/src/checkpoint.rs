//! `herd checkpoint` and `herd restore`, with their image directories: `--image-dir DIR`
//! exports a checkpoint into DIR on this machine (downloaded from the Control node, which
//! fetches it from the container's node), or restores from such a directory (uploaded).
//! Directories are checked against their manifest on both ways.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use herd_proto::api::{CheckpointRequest, ContainerInfo, NodeInfo, NodeState, RestoreRequest};
use herd_proto::state::{CheckpointInfo, ContainerState};
use reqwest::Method;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::client::{Client, segment};
use crate::commands::{print_json, written_stream};

/// `herd checkpoint`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CheckpointArgs {
    #[command(subcommand)]
    pub command: Option<CheckpointCommand>,
    /// The container to checkpoint.
    #[arg(required = true)]
    pub name: Option<String>,
    /// Keep the container running after the checkpoint.
    #[arg(long)]
    pub leave_running: bool,
    /// Also export the checkpoint (CRIU images, writable layer, manifest) into this directory
    /// on this machine; it must be new or empty. `herd restore --image-dir` reads it back.
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// `herd checkpoint ls`
#[derive(Debug, clap::Subcommand)]
pub enum CheckpointCommand {
    /// List a container's checkpoints and the versions its ticker keeps: when each was
    /// taken, how long the container paused for it, its size and what it really stored,
    /// and where it is kept.
    Ls {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// What `herd checkpoint ls --json` prints.
#[derive(Debug, serde::Serialize)]
struct Listing<'a> {
    versions: &'a [herd_proto::ha::VersionInfo],
    checkpoints: &'a [CheckpointInfo],
}

async fn list(client: &Client, name: &str, json: bool) -> anyhow::Result<()> {
    let c: ContainerInfo = client.get(&format!("/v1/containers/{}", segment(name))).await?;
    if json {
        return print_json(&Listing { versions: &c.versions, checkpoints: &c.checkpoints });
    }
    let bytes = |b: u64| herd_proto::units::Bytes(b).to_string();
    let mut t = crate::format::table(&["ID", "TAKEN", "PAUSED", "SIZE", "STORED", "KEPT IN"]);
    for v in &c.versions {
        let kind = match v.memory_parent {
            _ if v.base == v.version => "base".to_string(),
            Some(p) => format!("delta on v{}, memory written since v{p}", v.base),
            None => format!("delta on v{}", v.base),
        };
        t.add_row(crate::format::clean_row([
            format!("v{}", v.version),
            crate::format::timestamp(v.created_at),
            format!("{} ms", v.pause_ms),
            bytes(v.full_bytes),
            bytes(v.stored_bytes),
            format!("version store ({kind}, taken on {})", v.node),
        ]));
    }
    for ck in &c.checkpoints {
        t.add_row(crate::format::clean_row([
            ck.id.clone(),
            crate::format::timestamp(ck.created_at),
            "-".to_string(),
            bytes(ck.size_bytes),
            bytes(ck.size_bytes),
            format!("node {}", ck.node),
        ]));
    }
    crate::format::print_table(&t);
    Ok(())
}

pub async fn checkpoint(client: &Client, args: CheckpointArgs) -> anyhow::Result<()> {
    if let Some(CheckpointCommand::Ls { name, json }) = &args.command {
        return list(client, name, *json).await;
    }
    let name = args.name.clone().context("herd checkpoint needs a container name")?;
    let export = args.image_dir.as_deref().map(ExportDir::prepare).transpose()?;
    let req = CheckpointRequest { leave_running: args.leave_running };
    let ck: CheckpointInfo = match client.post(&format!("/v1/containers/{}/checkpoint", segment(&name)), &req).await {
        Ok(ck) => ck,
        Err(e) => {
            if let Some(dir) = export {
                dir.discard();
            }
            return Err(e);
        }
    };
    if let Some(dir) = export
        && let Err(e) = download(client, &name, &ck.id, &dir.path).await
    {
        let shown = dir.path.display().to_string();
        dir.discard();
        bail!(
            "checkpoint {} of {} was made and is kept on node {}, but exporting it to {shown} failed: {e:#}",
            ck.id,
            name,
            ck.node,
        );
    }
    if args.json {
        return print_json(&ck);
    }
    println!("{}", ck.id);
    Ok(())
}

/// A directory an export goes into: new or empty.
struct ExportDir {
    path: PathBuf,
    /// Whether this command created it (and so removes it on failure).
    created: bool,
}

impl ExportDir {
    fn prepare(path: &Path) -> anyhow::Result<ExportDir> {
        let created = match std::fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    bail!(
                        "{} is not empty: give a new or empty directory to export the checkpoint into",
                        path.display()
                    );
                }
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                bail!("{} is not a directory", path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        Ok(ExportDir { path: path.to_path_buf(), created })
    }

    /// Leaves the directory as it was before.
    fn discard(self) {
        if self.created {
            let _ = std::fs::remove_dir_all(&self.path);
        } else if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            }
        }
    }
}

/// Downloads checkpoint `id` of `name` into `dir`, checking it file by file.
async fn download(client: &Client, name: &str, id: &str, dir: &Path) -> anyhow::Result<()> {
    let path = format!("/v1/containers/{}/checkpoints/{}/archive", segment(name), segment(id));
    let resp = client.send(client.request(Method::GET, &path)).await?;
    let body = resp.bytes_stream().map(|r| r.map_err(std::io::Error::other));
    let reader = SyncIoBridge::new(StreamReader::new(Box::pin(body)));
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let input = std::io::BufReader::with_capacity(1 << 20, reader);
        herd_image::unpack_checkpoint(input, &dir, "the checkpoint archive from the Control node")
    })
    .await
    .context("the unpacking task")??;
    Ok(())
}

/// `herd restore` (its `--version` is a ticker version, not Herd's)
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct RestoreArgs {
    pub name: String,
    /// The checkpoint to restore (the newest by default).
    #[arg(long, conflicts_with = "image_dir")]
    pub checkpoint: Option<String>,
    /// Restore this ticker version instead (herd checkpoint ls lists them); the container's
    /// node need not be up, the versions are not kept there.
    #[arg(long, conflicts_with_all = ["image_dir", "checkpoint"])]
    pub version: Option<u64>,
    /// The node to restore onto (the container's own node by default). The checkpoint and
    /// the container's log move there over the network, and the container keeps its name
    /// and address.
    #[arg(long)]
    pub node: Option<String>,
    /// Restore from a checkpoint exported with `herd checkpoint --image-dir` (it becomes the
    /// container's newest checkpoint).
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub async fn restore(client: &Client, args: RestoreArgs) -> anyhow::Result<()> {
    let info: ContainerInfo = match &args.image_dir {
        Some(dir) => upload(client, &args.name, args.node.as_deref(), dir).await?,
        None => {
            let req = RestoreRequest { checkpoint: args.checkpoint, version: args.version, node: args.node };
            client.post(&format!("/v1/containers/{}/restore", segment(&args.name)), &req).await?
        }
    };
    if args.json {
        return print_json(&info);
    }
    println!("{}", info.name);
    Ok(())
}

/// Checks image directory `dir` and uploads it to restore `name` from it. What can be refused
/// without the upload (the container, its state, the node) is checked first; the Control node
/// and the node check it all again.
async fn upload(client: &Client, name: &str, node: Option<&str>, dir: &Path) -> anyhow::Result<ContainerInfo> {
    let c: ContainerInfo = client.get(&format!("/v1/containers/{}", segment(name))).await?;
    if c.state == ContainerState::Running {
        bail!("container {name} is running: stop it (herd stop {name}) before restoring a checkpoint into it");
    }
    if let Some(node) = node {
        let nodes: Vec<NodeInfo> = client.get("/v1/nodes").await?;
        match nodes.iter().find(|n| n.name == node) {
            None => {
                let known: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
                bail!("no such node: {node} (the nodes are: {})", known.join(", "));
            }
            Some(n) if n.state == NodeState::Down => {
                bail!("node {node} is down: it cannot restore {name} until it is back")
            }
            Some(_) => {}
        }
    }
    let manifest = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || herd_image::verify_checkpoint_dir(&dir))
            .await
            .context("checking task")??
    };
    let theirs = &manifest.container;
    if theirs.id != c.id {
        bail!(
            "{} holds a checkpoint of container {} ({}), not of {name} ({}): restore it into the container it was taken from",
            dir.display(),
            theirs.name,
            short(&theirs.id),
            short(&c.id)
        );
    }
    let packed = dir.to_path_buf();
    let body = written_stream(move |w| {
        herd_image::pack_checkpoint(&packed, w, true).map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()))
    });
    let mut req = client
        .request(Method::POST, &format!("/v1/containers/{}/restore/archive", segment(name)))
        .body(reqwest::Body::wrap_stream(body));
    if let Some(node) = node {
        req = req.query(&[("node", node)]);
    }
    client.send(req).await?.json().await.context("decoding the Control node's answer")
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
