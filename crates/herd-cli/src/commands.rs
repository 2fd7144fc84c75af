//! The client commands of `herd`: their flags (clap) and what they do.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::StreamExt;
use herd_proto::api::{ContainerInfo, ContainerSummary, Event, LogLine, NodeInfo, RunRequest};
use herd_proto::names::{normalize_image, parse_pair};
use herd_proto::node::{LogEntry, LogStream};
use herd_proto::now_millis;
use herd_proto::state::{ImageRecord, Limits};
use herd_proto::units::{self, Bytes as B, Cpus};
use reqwest::Method;

pub use crate::checkpoint::{CheckpointArgs, RestoreArgs, checkpoint, restore};
use crate::client::{Client, segment};
use crate::format::{self, print_table, table};
pub use crate::start::{RestartArgs, StartArgs, restart, start};

fn parse_memory(s: &str) -> Result<u64, String> {
    units::parse_memory(s).map_err(|e| e.to_string())
}

fn parse_cpus(s: &str) -> Result<u64, String> {
    units::parse_cpus(s).map_err(|e| e.to_string())
}

/// A `--pids-limit`: a number of processes, or none (-1 or 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidsLimit(pub Option<u64>);

fn parse_pids_limit(s: &str) -> Result<PidsLimit, String> {
    units::parse_pids_limit(s).map(PidsLimit).map_err(|e| e.to_string())
}

/// Swarm's `-e constraint:EXPR` and `-e affinity:EXPR` are placement, not environment.
const PLACEMENT_PREFIXES: [&str; 2] = ["constraint:", "affinity:"];

fn parse_env(s: &str) -> Result<String, String> {
    if PLACEMENT_PREFIXES.iter().any(|p| s.starts_with(p)) {
        return Ok(s.to_string());
    }
    parse_pair(s, "--env").map(|_| s.to_string()).map_err(|e| e.0)
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    parse_pair(s, "--label").map_err(|e| e.0)
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// `herd nodes`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<crate::nodes::NodesCommand>,
}

pub async fn nodes(client: &Client, args: NodesArgs) -> anyhow::Result<()> {
    if let Some(command) = args.command {
        return crate::nodes::manage(client, command).await;
    }
    let nodes: Vec<NodeInfo> = client.get("/v1/nodes").await?;
    if args.json {
        return print_json(&nodes);
    }
    let mut t =
        table(&["NAME", "STATE", "AVAIL", "ADDRESS", "CPUS", "MEMORY", "CPU USED", "MEM USED", "CONTAINERS", "LABELS"]);
    for n in &nodes {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.add_row(format::clean_row([
            n.name.clone(),
            n.state.as_str().to_string(),
            n.availability.as_str().to_string(),
            n.address.to_string(),
            format!("{}/{}", Cpus(n.allocated.cpus_milli), Cpus(n.capacity.cpus_milli)),
            format!("{}/{}", B(n.allocated.memory_bytes), B(n.capacity.memory_bytes)),
            n.usage.map_or("-".into(), |u| Cpus(u.cpu_milli).to_string()),
            n.usage.map_or("-".into(), |u| B(u.memory_used_bytes).to_string()),
            n.containers.to_string(),
            if labels.is_empty() { "-".into() } else { labels.join(",") },
        ]));
    }
    print_table(&t);
    Ok(())
}

/// `herd image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an image from a rootfs directory, a rootfs tarball, or an OCI-layout or `docker save` tarball.
    Import {
        /// Name to give the image (NAME or NAME:TAG; the tag defaults to latest).
        name: String,
        /// A directory or a tar file (gzip and zstd compression are recognised).
        path: PathBuf,
    },
    /// Pull an image from an OCI/Docker registry (the Control node fetches it; nodes get its layers from there).
    Pull(crate::pull::PullArgs),
    /// List images.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove an image no container uses.
    Rm { name: String },
    /// List the layer store's blobs and the images that use each ("-": none does).
    Layers {
        #[arg(long)]
        json: bool,
    },
}

pub async fn image(client: &Client, cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Import { name, path } => {
            let name = normalize_image(&name).map_err(|e| anyhow::anyhow!(e.0))?;
            let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let body = if meta.is_dir() {
                reqwest::Body::wrap_stream(pack_dir_stream(path.clone()))
            } else {
                let f =
                    tokio::fs::File::open(&path).await.with_context(|| format!("cannot open {}", path.display()))?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f))
            };
            let directory = if meta.is_dir() { "true" } else { "false" };
            let req = client
                .request(Method::POST, "/v1/images")
                .query(&[("name", name.as_str()), ("directory", directory)])
                .body(body);
            let image: ImageRecord = client.send(req).await?.json().await?;
            println!(
                "imported {} ({}, {} layer{}, {})",
                format::clean(&image.name),
                format::clean(&image.source),
                image.layers.len(),
                if image.layers.len() == 1 { "" } else { "s" },
                B(image.size())
            );
        }
        ImageCommand::Pull(args) => return crate::pull::pull(client, args).await,
        ImageCommand::Ls { json } => {
            let images: Vec<ImageRecord> = client.get("/v1/images").await?;
            if json {
                return print_json(&images);
            }
            let now = now_millis();
            let mut t = table(&["NAME", "ID", "LAYERS", "SIZE", "SOURCE", "CREATED"]);
            for i in &images {
                let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
                t.add_row(format::clean_row([
                    i.name.clone(),
                    id.chars().take(12).collect(),
                    i.layers.len().to_string(),
                    B(i.size()).to_string(),
                    i.source.clone(),
                    format!("{} ago", format::ago(i.created_at, now)),
                ]));
            }
            print_table(&t);
        }
        ImageCommand::Layers { json } => {
            let layers: Vec<herd_proto::api::LayerInfo> = client.get("/v1/layers").await?;
            if json {
                return print_json(&layers);
            }
            let mut t = table(&["DIGEST", "SIZE", "IMAGES"]);
            for l in &layers {
                let images = if l.images.is_empty() { "-".to_string() } else { l.images.join(", ") };
                t.add_row(format::clean_row([l.digest.clone(), B(l.size).to_string(), images]));
            }
            print_table(&t);
        }
        ImageCommand::Rm { name } => {
            let name = normalize_image(&name).map_err(|e| anyhow::anyhow!(e.0))?;
            client.delete(&format!("/v1/images/{}", segment(&name))).await?;
            println!("{name}");
        }
    }
    Ok(())
}

/// Tars a directory on a thread and yields the archive as it is written.
fn pack_dir_stream(dir: PathBuf) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    written_stream(move |w| {
        herd_image::pack_dir(&dir, w)
            .map_err(|e| std::io::Error::new(e.kind(), format!("packing {}: {e}", dir.display())))
    })
}

/// Runs `write` on a thread and yields what it writes as it is written, then its error if it
/// fails (for upload bodies).
pub(crate) fn written_stream(
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);
    impl Write for ChannelWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .blocking_send(Ok(Bytes::copy_from_slice(buf)))
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut w = std::io::BufWriter::with_capacity(256 << 10, ChannelWriter(tx.clone()));
        if let Err(e) = write(&mut w).and_then(|()| w.flush()) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// `herd run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of the container (generated when not given).
    #[arg(long)]
    pub name: Option<String>,
    /// Run on this node instead of letting the scheduler choose.
    #[arg(long)]
    pub node: Option<String>,
    /// CPU limit in CPUs, e.g. 0.5.
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<u64>,
    /// Memory limit, e.g. 256m.
    #[arg(long, short = 'm', value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// Maximum number of processes (1 to 4194304; -1 or 0: no limit, as in Docker).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_pids_limit)]
    pub pids_limit: Option<PidsLimit>,
    /// How much of its output its node keeps, as Docker's json-file driver: max-size=SIZE
    /// (one log file, e.g. 10m) and max-file=N (files kept); the node's limits (10m and 5 by
    /// default) otherwise; repeatable, or comma-separated.
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opts: Vec<String>,
    /// Set an environment variable (KEY=VALUE); repeatable.
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    pub env: Vec<String>,
    /// Set a label (KEY=VALUE); repeatable.
    #[arg(long = "label", short = 'l', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Only place on nodes where EXPR holds: KEY==VALUE or KEY!=VALUE on node.name,
    /// node.labels.X, node.arch, node.kernel, node.criu…; repeatable (also -e constraint:EXPR).
    #[arg(long = "constraint", value_name = "EXPR")]
    pub constraints: Vec<String>,
    /// Place next to (==) or away from (!=) a container or image: container==web, image!=redis;
    /// ~= and ~!= are preferences only; repeatable (also -e affinity:EXPR).
    #[arg(long = "affinity", value_name = "EXPR")]
    pub affinities: Vec<String>,
    /// Placement strategy for this container, instead of the cluster's default.
    #[arg(long, value_parser = ["spread", "binpack", "random"])]
    pub strategy: Option<String>,
    /// Publish a container port on its node: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp];
    /// only nodes where the host port is free are chosen; repeatable.
    #[arg(long = "publish", short = 'p', value_name = "PORTS")]
    pub publish: Vec<String>,
    /// container:NAME shares NAME's network namespace (and so runs on its node).
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Mount a named volume, a directory of the node kept after the container:
    /// NAME:/path[:ro]; containers using one volume run on one node; repeatable.
    #[arg(long = "volume", short = 'v', value_name = "NAME:PATH")]
    pub volumes: Vec<String>,
    /// Add a capability to Docker's default set (NET_ADMIN, SYS_PTRACE..., or ALL); repeatable.
    /// A checkpoint of the container may hold it, and no more, when it is restored.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from it (or ALL); repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Confine otherwise than by default (Herd's seccomp profile and no-new-privileges):
    /// seccomp=unconfined, seccomp=FILE (a profile in JSON, the OCI or Docker format),
    /// no-new-privileges=false; repeatable.
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Mount the container's root file system read-only (its volumes stay as mounted).
    #[arg(long)]
    pub read_only: bool,
    /// Run as USER[:GROUP] (names from the container's /etc/passwd and /etc/group, or
    /// numbers), instead of the image's user (root when it has none).
    #[arg(long, short = 'u', value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Working directory (absolute; created if missing), instead of the image's.
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Run CMD instead of the image's entrypoint ("" for none); the image's command is dropped
    /// too, so only what follows the image is passed to it.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Checkpoint the running container this often (e.g. 30s, 5m) into versions kept off its
    /// node, from which it is restored elsewhere when its node fails.
    #[arg(long, value_name = "DURATION", value_parser = parse_checkpoint_every)]
    pub checkpoint_every: Option<u64>,
    /// How many ticker versions are kept (a full one every this many, the others hold only
    /// what changed).
    #[arg(long, value_name = "N", default_value_t = herd_proto::ha::DEFAULT_VERSIONS,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub checkpoint_versions: u32,
    /// What happens when its node fails: restore (from its newest version; the default with
    /// --checkpoint-every), restart (fresh, from its image) or none (it stays exited; the
    /// default otherwise).
    #[arg(long, value_name = "POLICY", value_parser = ["restore", "restart", "none"])]
    pub on_node_failure: Option<String>,
    /// Run in the background and print the container's name (the default; kept for Docker users).
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Print the container as JSON instead of its name.
    #[arg(long)]
    pub json: bool,
    /// Image to run.
    pub image: String,
    /// Command and arguments, replacing the image's command.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `herd update`
#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub name: String,
    /// Checkpoint this often into versions kept off its node (e.g. 30s), or `off`.
    #[arg(long, value_name = "DURATION|off", value_parser = parse_checkpoint_every_or_off)]
    pub checkpoint_every: Option<u64>,
    /// How many ticker versions are kept.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub checkpoint_versions: Option<u32>,
    /// What happens when its node fails: restore, restart or none.
    #[arg(long, value_name = "POLICY", value_parser = ["restore", "restart", "none"])]
    pub on_node_failure: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn update(client: &Client, args: UpdateArgs) -> anyhow::Result<()> {
    let on_node_failure = args
        .on_node_failure
        .as_deref()
        .map(herd_proto::ha::OnNodeFailure::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let req = herd_proto::api::UpdateRequest {
        checkpoint_every_ms: args.checkpoint_every,
        checkpoint_versions: args.checkpoint_versions,
        on_node_failure,
    };
    if req == herd_proto::api::UpdateRequest::default() {
        anyhow::bail!("nothing to update: give --checkpoint-every, --checkpoint-versions or --on-node-failure");
    }
    let info: ContainerInfo =
        client.post(&format!("/v1/containers/{}/update", crate::client::segment(&args.name)), &req).await?;
    if args.json {
        return print_json(&info);
    }
    println!("{}", info.name);
    Ok(())
}

/// `--checkpoint-every` of `herd update`: a duration, or `off` (0).
fn parse_checkpoint_every_or_off(text: &str) -> Result<u64, String> {
    if text == "off" || text == "0" { Ok(0) } else { parse_checkpoint_every(text) }
}

/// `--checkpoint-every`: a duration of at least a second, in milliseconds.
fn parse_checkpoint_every(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e} (use e.g. 30s, 5m)"))?;
    let ms = d.as_millis() as u64;
    if ms < herd_proto::ha::MIN_CHECKPOINT_EVERY_MS {
        return Err(format!("{text} is too short: at least 1s between checkpoints"));
    }
    Ok(ms)
}

/// The availability settings of `herd run`: a ticker means `restore` unless told otherwise.
fn ha_policy(
    every_ms: Option<u64>,
    versions: u32,
    on_failure: Option<&str>,
) -> anyhow::Result<herd_proto::ha::HaPolicy> {
    use herd_proto::ha::OnNodeFailure;
    let on_node_failure = match on_failure {
        Some(p) => OnNodeFailure::parse(p).map_err(anyhow::Error::msg)?,
        None if every_ms.is_some() => OnNodeFailure::Restore,
        None => OnNodeFailure::None,
    };
    if on_node_failure == OnNodeFailure::Restore && every_ms.is_none() {
        anyhow::bail!("--on-node-failure restore needs versions to restore from: add --checkpoint-every");
    }
    Ok(herd_proto::ha::HaPolicy { checkpoint_every_ms: every_ms, versions, on_node_failure })
}

pub async fn run(client: &Client, args: RunArgs) -> anyhow::Result<()> {
    let (mut constraints, mut affinities, mut env) = (args.constraints, args.affinities, Vec::new());
    for e in args.env {
        if e.starts_with("constraint:") {
            constraints.push(e);
        } else if e.starts_with("affinity:") {
            affinities.push(e);
        } else {
            env.push(e);
        }
    }
    let log = herd_proto::logs::LogOptions::parse(&args.log_opts).map_err(|e| anyhow::anyhow!(e.0))?;
    let req = RunRequest {
        name: args.name,
        image: args.image,
        node: args.node,
        limits: Limits {
            cpus_milli: args.cpus,
            memory_bytes: args.memory,
            pids: args.pids_limit.and_then(|p| p.0),
            log,
        },
        env,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        command: args.command,
        constraints,
        affinities,
        strategy: args.strategy,
        ports: args.publish,
        network: args.network,
        volumes: args.volumes,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        security_opt: args.security_opt.iter().map(|o| read_seccomp_file(o)).collect::<anyhow::Result<_>>()?,
        read_only: args.read_only,
        user: args.user,
        workdir: args.workdir,
        // One program, as Docker takes it; "" clears the image's.
        entrypoint: args.entrypoint.map(|e| if e.is_empty() { Vec::new() } else { vec![e] }),
        ha: ha_policy(args.checkpoint_every, args.checkpoint_versions, args.on_node_failure.as_deref())?,
    };
    let info: ContainerInfo = match client.post("/v1/containers", &req).await {
        Ok(info) => info,
        // The leader that had the request stopped answering and another leads: it writes
        // the container's record before anything else, so the record says whether the
        // request took effect (a replica that lost its lease writes nothing more).
        Err(e) if e.downcast_ref::<crate::client::LeaderMoved>().is_some() && req.name.is_some() => {
            let name = req.name.clone().unwrap_or_default();
            match client.get::<ContainerInfo>(&format!("/v1/containers/{}", segment(&name))).await {
                Ok(info) => {
                    eprintln!("{e:#}; container {name} exists, so it took effect (herd ps shows its state)");
                    info
                }
                Err(_) => {
                    eprintln!("{e:#}; container {name} does not exist, so it is asked again");
                    client.post("/v1/containers", &req).await?
                }
            }
        }
        Err(e) => return Err(e),
    };
    if args.json {
        print_json(&info)
    } else {
        println!("{}", info.name);
        Ok(())
    }
}

/// `herd ps`
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers, not only running ones.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Only print names.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[arg(long)]
    pub json: bool,
}

pub async fn ps(client: &Client, args: PsArgs) -> anyhow::Result<()> {
    if args.json {
        let list: Vec<ContainerInfo> = client.get(&format!("/v1/containers?all={}", args.all)).await?;
        return print_json(&list);
    }
    let body = client.get_bytes(&format!("/v1/containers?all={}&summary=true", args.all)).await?;
    let list: Vec<ContainerSummary> =
        serde_json::from_slice(&body).context("decoding the Control node's list of containers")?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.quiet {
        for c in &list {
            writeln!(out, "{}", format::clean(&c.name))?;
        }
        return Ok(out.flush()?);
    }
    let now = now_millis();
    // Cells borrow what they can from the list: at 100,000 containers the copies showed.
    let rows: Vec<[Cow<str>; 8]> = list
        .iter()
        .map(|c| {
            [
                Cow::Borrowed(&*c.name),
                Cow::Borrowed(&*c.image),
                Cow::Owned(format::command(&c.args, 24)),
                Cow::Borrowed(&*c.node),
                Cow::Owned(c.ip.to_string()),
                Cow::Owned(format::status(c, now)),
                Cow::Owned(format!("{} ago", format::ago(c.created_at, now))),
                Cow::Owned(c.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")),
            ]
        })
        .collect();
    format::write_columns(&mut out, &["NAME", "IMAGE", "COMMAND", "NODE", "IP", "STATUS", "CREATED", "PORTS"], &rows)?;
    Ok(out.flush()?)
}

/// `herd inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

pub async fn inspect(client: &Client, args: InspectArgs) -> anyhow::Result<()> {
    let c: ContainerInfo = client.get(&format!("/v1/containers/{}", segment(&args.name))).await?;
    if args.json {
        return print_json(&c);
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let limits = &c.limits;
    let rows: Vec<(&str, String)> = vec![
        ("Name", c.name.clone()),
        ("ID", c.id.clone()),
        ("Image", format!("{} ({})", c.image, c.image_id)),
        ("Node", format!("{}{}", c.node, if c.node_down { " (down)" } else { "" })),
        ("State", c.state.as_str().to_string()),
        ("Desired", format!("{:?}", c.desired).to_lowercase()),
        ("IP address", c.ip.to_string()),
        ("PID", opt(c.pid.map(|p| p.to_string()))),
        ("Command", c.args.join(" ")),
        ("User", if c.user.is_empty() { "root (default)".into() } else { c.user.clone() }),
        ("Working dir", if c.working_dir.is_empty() { "/".into() } else { c.working_dir.clone() }),
        ("CPU limit", opt(limits.cpus_milli.map(|v| Cpus(v).to_string()))),
        ("Memory limit", opt(limits.memory_bytes.map(|v| B(v).to_string()))),
        ("PIDs limit", opt(limits.pids.map(|v| v.to_string()))),
        ("Created", format::timestamp(c.created_at)),
        ("Started", opt(c.started_at.map(format::timestamp))),
        ("Finished", opt(c.finished_at.map(format::timestamp))),
        ("Exit code", opt(c.exit_code.map(|v| v.to_string()))),
        ("Error", opt(c.error.clone())),
        ("Labels", c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")),
        ("Env", c.env.join(" ")),
        ("Ports", opt(Some(c.host.ports_text()).filter(|p| !p.is_empty()))),
        ("Exposed", opt(Some(c.exposed_ports.join(", ")).filter(|p| !p.is_empty()))),
        ("Network", c.host.network.as_ref().map(|n| format!("container:{}", n.name)).unwrap_or_else(|| "own".into())),
        (
            "Volumes",
            opt(Some(
                c.host
                    .volumes
                    .iter()
                    .map(|v| format!("{}:{}{}", v.name, v.target, if v.read_only { ":ro" } else { "" }))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
            .filter(|v| !v.is_empty())),
        ),
        ("Capabilities", capabilities_text(&c.host)),
        ("Security", c.host.confinement.describe().join(", ")),
    ];
    // Each line is cleaned whole: labels, command, environment and errors are the user's.
    let mut out = std::io::stdout().lock();
    for (k, v) in rows {
        writeln!(out, "{:<14}{}", format!("{k}:"), format::clean(&v))?;
    }
    if !c.migrations.is_empty() {
        writeln!(out, "Migrations:")?;
        for m in &c.migrations {
            let how = match &m.outcome {
                herd_proto::migration::Outcome::Migrated if m.unmeasured.is_some() => {
                    format!("total {} ms, no other figures", m.total_ms)
                }
                herd_proto::migration::Outcome::Migrated => {
                    format!("downtime {} ms, total {} ms, {} memory", m.downtime_ms, m.total_ms, B(m.memory_bytes))
                }
                herd_proto::migration::Outcome::Aborted { reason } => format!("aborted: {reason}"),
            };
            let line = format!(
                "  {}  {} -> {}  {:<9}{}",
                format::timestamp(m.started_at),
                m.source,
                m.destination,
                m.mode.as_str(),
                how
            );
            writeln!(out, "{}", format::clean(&line))?;
        }
    }
    if !c.checkpoints.is_empty() {
        writeln!(out, "Checkpoints:")?;
        for ck in &c.checkpoints {
            let line = format!(
                "  {:<8}{}  on {}  {}{}",
                ck.id,
                format::timestamp(ck.created_at),
                ck.node,
                B(ck.size_bytes),
                if ck.leave_running { "  (left running)" } else { "" }
            );
            writeln!(out, "{}", format::clean(&line))?;
        }
    }
    Ok(())
}

/// `herd logs`: what the container's node keeps of its output (see `herd run --log-opt`);
/// when older output was rotated away, a line on stderr says how much.
#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new lines until the container stops.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Prefix each line with when its node received it, in RFC 3339 (UTC, milliseconds), which
    /// --since takes back.
    #[arg(long, short = 't')]
    pub timestamps: bool,
    /// Only the last N lines ("all": every line kept).
    #[arg(long, short = 'n', value_name = "N", value_parser = parse_tail)]
    pub tail: Option<String>,
    /// Only lines written since TIME: a duration before now (10m, 1h30m), a Unix timestamp
    /// or a date and time (2024-05-01T12:00:00Z; without a zone, local time).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
}

fn parse_tail(s: &str) -> Result<String, String> {
    if s == "all" || s.parse::<u64>().is_ok() {
        Ok(s.to_string())
    } else {
        Err(format!("invalid number of lines {s:?}: give a number or \"all\""))
    }
}

pub async fn logs(client: &Client, args: LogsArgs) -> anyhow::Result<()> {
    let since = match &args.since {
        Some(t) => Some(crate::since::parse_since(t, now_millis()).map_err(|e| anyhow::anyhow!("--since: {e}"))?),
        None => None,
    };
    let mut req = client
        .request(Method::GET, &format!("/v1/containers/{}/logs", segment(&args.name)))
        .query(&[("follow", args.follow)]);
    if let Some(tail) = &args.tail {
        req = req.query(&[("tail", tail)]);
    }
    if let Some(since) = since {
        req = req.query(&[("since", since)]);
    }
    let resp = client.send(req).await?;
    let mut stream = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the log stream broke")?;
        pending.extend_from_slice(&chunk);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let entry: LogEntry = match serde_json::from_slice(&line).context("decoding a log entry")? {
                LogLine::Entry(entry) => entry,
                LogLine::Rotated { rotated } => {
                    writeln!(std::io::stderr().lock(), "({rotated} bytes of older output were rotated away)")?;
                    continue;
                }
            };
            let text = if args.timestamps {
                format!("{} {}\n", format::rfc3339(entry.time), entry.line)
            } else {
                format!("{}\n", entry.line)
            };
            match entry.stream {
                LogStream::Stdout => std::io::stdout().lock().write_all(text.as_bytes())?,
                LogStream::Stderr => std::io::stderr().lock().write_all(text.as_bytes())?,
            }
        }
    }
    Ok(())
}

/// `herd stop`
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long = "time", short = 't', default_value_t = 10)]
    pub timeout: u64,
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub async fn stop(client: &Client, args: StopArgs) -> anyhow::Result<()> {
    for name in &args.names {
        let req = client
            .request(Method::POST, &format!("/v1/containers/{}/stop", segment(name)))
            .query(&[("timeout", args.timeout)]);
        client.send(req).await?;
        println!("{name}");
    }
    Ok(())
}

/// `herd rm`
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove a running container (it is killed).
    #[arg(long, short = 'f')]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub async fn rm(client: &Client, args: RmArgs) -> anyhow::Result<()> {
    for name in &args.names {
        client.delete(&format!("/v1/containers/{}?force={}", segment(name), args.force)).await?;
        println!("{name}");
    }
    Ok(())
}

/// `herd events`
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// How many of the newest events to show.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub limit: usize,
    /// JSON: an array (with --follow, one event object per line).
    #[arg(long)]
    pub json: bool,
    /// Keep printing events as they happen, until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

pub async fn events(client: &Client, args: EventsArgs) -> anyhow::Result<()> {
    // At least one, so following starts after the newest event even with `-n 0`.
    let mut events: Vec<Event> = client.get(&format!("/v1/events?limit={}", args.limit.max(1))).await?;
    let mut last = events.iter().map(|e| e.seq).max().unwrap_or(0);
    events.drain(..events.len() - events.len().min(args.limit));
    if args.json && !args.follow {
        return print_json(&events);
    }
    loop {
        let mut out = std::io::stdout().lock();
        for e in &events {
            if args.json {
                writeln!(out, "{}", serde_json::to_string(e)?)?;
            } else {
                let line = format!("{} {} {} {}: {}", format::timestamp(e.time), e.kind, e.action, e.name, e.message);
                writeln!(out, "{}", format::clean(&line))?;
            }
            last = last.max(e.seq);
        }
        out.flush()?;
        drop(out);
        if !args.follow {
            return Ok(());
        }
        events = client.get(&format!("/v1/events?after={last}&limit=1000&wait=30")).await?;
    }
}

/// Waits until the API answers and `nodes` nodes are ready (used by `herd up`).
pub async fn wait_ready(client: &Client, nodes: usize, timeout: std::time::Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: String;
    loop {
        match client.get::<herd_proto::api::Health>("/v1/health").await {
            Ok(h) if h.nodes_ready >= nodes => return Ok(()),
            Ok(h) => last = format!("{} of {nodes} nodes ready", h.nodes_ready),
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the cluster did not become ready within {}s: {last}", timeout.as_secs());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `herd migrate`
#[derive(Debug, Args)]
#[command(after_help = "Named volumes move with the container (copied while it runs, the last changes while it is \
frozen, checked by checksum before it restores) unless another container uses one of them.")]
pub struct MigrateArgs {
    pub name: String,
    /// The destination node (the scheduler picks the best other node otherwise).
    #[arg(long)]
    pub to: Option<String>,
    /// How memory moves: auto (the best both nodes support), cold, postcopy or precopy.
    #[arg(long, default_value = "auto")]
    pub mode: herd_proto::migration::ModeRequest,
    /// Cap on the transfer's bandwidth, e.g. 100m (bytes per second), its volumes included.
    #[arg(long, value_parser = parse_memory)]
    pub bandwidth: Option<u64>,
    /// Never post-copy, whose container runs on the destination while part of its memory is
    /// still on the source: auto then picks pre-copy, or cold where a node tracks no dirty memory.
    #[arg(long)]
    pub safe: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn migrate(client: &Client, args: MigrateArgs) -> anyhow::Result<()> {
    use herd_proto::api::{MigrateRequest, MigrateUpdate};
    use std::io::IsTerminal;
    let req = MigrateRequest { to: args.to, mode: args.mode, bandwidth: args.bandwidth, safe: args.safe };
    let path = format!("/v1/containers/{}/migrate", segment(&args.name));
    let asked_at = herd_proto::now_millis();
    let resp = match client.send(client.request(Method::POST, &path).json(&req)).await {
        Ok(r) => r,
        Err(e) if e.downcast_ref::<crate::client::LeaderMoved>().is_some() => {
            // The leader that had the request stopped; its successor's journal says whether
            // it began a migration (a replica that lost its lease can begin none after).
            let list = format!("/v1/migrations?container={}", segment(&args.name));
            let started: Vec<herd_proto::migration::MigrationRecord> = client.get(&list).await?;
            if let Some(m) = started.iter().rev().find(|m| m.started_at + 1000 >= asked_at) {
                return migration_outcome(client, &args.name, &m.id, &e.to_string()).await;
            }
            eprintln!("{e:#}; no migration of {} began, so it is asked again", args.name);
            client.send(client.request(Method::POST, &path).json(&req)).await?
        }
        Err(e) => return Err(e),
    };
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg} {bytes}")
                .expect("a valid template"),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(100));
        b
    });
    let mut stream = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut planned: Option<String> = None;
    let serving = client.endpoint_index();
    loop {
        let next = tokio::select! {
            next = stream.next() => next.map(|c| c.map_err(|e| e.to_string())),
            moved = client.leader_moved_from(serving) => Some(Err(moved)),
        };
        let Some(chunk) = next else { break };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                return match planned {
                    Some(id) => migration_outcome(client, &args.name, &id, &e).await,
                    None => bail!("the migration's progress stream broke before it began: {e}"),
                };
            }
        };
        pending.extend_from_slice(&chunk);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            match serde_json::from_slice::<MigrateUpdate>(&line).context("decoding a migration update")? {
                MigrateUpdate::Planned { id, source, destination, mode, reason } => {
                    planned = Some(id.clone());
                    let text = format!(
                        "migrating {} from {source} to {destination} ({}; {reason}) [{id}]",
                        args.name,
                        mode.as_str()
                    );
                    match &bar {
                        Some(b) => b.println(text),
                        None if !args.json => eprintln!("{text}"),
                        None => {}
                    }
                }
                MigrateUpdate::Progress(p) => {
                    if let Some(b) = &bar {
                        b.set_message(p.phase.clone());
                        b.set_position(p.bytes);
                    }
                }
                MigrateUpdate::Report(report) => {
                    if let Some(b) = &bar {
                        b.finish_and_clear();
                    }
                    if args.json {
                        return print_json(&report);
                    }
                    print_migration(&report);
                    return Ok(());
                }
                MigrateUpdate::Error(e) => {
                    if let Some(b) = &bar {
                        b.finish_and_clear();
                    }
                    bail!("{e}");
                }
            }
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match planned {
        Some(id) => migration_outcome(client, &args.name, &id, "the progress stream ended").await,
        None => bail!("the Control node stopped answering before the migration began; herd events shows what happened"),
    }
}

/// `herd migrations`
#[derive(Debug, Args)]
pub struct MigrationsArgs {
    /// The container whose migrations to list.
    pub name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `herd migrations NAME`: the journal's records of a container's migrations, oldest first.
pub async fn migrations(client: &Client, args: MigrationsArgs) -> anyhow::Result<()> {
    use herd_proto::migration::MigrationRecord;
    let list: Vec<MigrationRecord> = client.get(&format!("/v1/migrations?container={}", segment(&args.name))).await?;
    if args.json {
        return print_json(&list);
    }
    println!("{:<14} {:<8} {:<8} {:<9} {:<12} {:<20} ERROR", "ID", "FROM", "TO", "MODE", "PHASE", "STARTED");
    for m in list {
        let started = chrono::DateTime::from_timestamp_millis(m.started_at as i64)
            .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let line = format!(
            "{:<14} {:<8} {:<8} {:<9} {:<12} {:<20} {}",
            m.id,
            m.source,
            m.destination,
            m.mode.as_str(),
            format!("{:?}", m.phase).to_lowercase(),
            started,
            m.error.as_deref().unwrap_or("-")
        );
        println!("{}", crate::format::clean(&line));
    }
    Ok(())
}

/// How migration `id` of `name` ended, once the Control node that ran it stopped answering
/// (`why`): the next leader ends it from its journal, completed or rolled back; this asks
/// whichever Control node leads until it has.
async fn migration_outcome(client: &Client, name: &str, id: &str, why: &str) -> anyhow::Result<()> {
    use herd_proto::migration::{MigrationPhase, MigrationRecord};
    eprintln!("the Control node stopped answering during migration {id} ({why}); waiting for its outcome...");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        match client.get::<MigrationRecord>(&format!("/v1/migrations/{}", segment(id))).await {
            Ok(m) if m.phase == MigrationPhase::Done => {
                println!("migrated {name} from {} to {} ({}) [{id}]", m.source, m.destination, m.mode.as_str());
                println!(
                    "  (the progress report was lost with the Control node that ran it; herd events has the rest)"
                );
                return Ok(());
            }
            Ok(m) if m.phase == MigrationPhase::Aborted => bail!(
                "migration {id} of {name} was rolled back: {name} runs on {} as before ({})",
                m.source,
                m.error.as_deref().unwrap_or("the Control node that ran it stopped")
            ),
            Ok(m) => last = format!("still {:?}", m.phase).to_lowercase(),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    bail!("migration {id} of {name} had not ended after 180 s ({last}); herd events shows how it ends")
}

fn print_migration(r: &herd_proto::migration::MigrationReport) {
    let secs = |ms: u64| if ms < 1000 { format!("{ms} ms") } else { format!("{:.2} s", ms as f64 / 1000.0) };
    println!("migrated {} from {} to {} ({})", r.container, r.source, r.destination, r.mode.as_str());
    println!("  mode        {}", r.mode_reason);
    if let Some(why) = &r.unmeasured {
        println!("  total       {}", secs(r.total_ms));
        println!("  figures     none: {why}");
        return;
    }
    println!("  downtime    {}", secs(r.downtime_ms));
    println!("  total       {}", secs(r.total_ms));
    println!("  memory      {}", B(r.memory_bytes));
    println!("  filesystem  {}", B(r.fs_bytes));
    println!(
        "  link        {}",
        match (r.encrypted, r.pages_encrypted) {
            (true, true) => "TLS (certificates of the cluster CA), memory pages included",
            (true, false) => "TLS (certificates of the cluster CA); memory pages in plain text",
            _ => "plain text",
        }
    );
    if r.volume_bytes > 0 {
        println!("  volumes     {} ({} moved)", B(r.volume_size), B(r.volume_bytes));
    }
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|p| match p.bytes {
            Some(b) => format!("{} {} ({})", p.phase, secs(p.ms), B(b)),
            None => format!("{} {}", p.phase, secs(p.ms)),
        })
        .collect();
    println!("  phases      {}", phases.join(", "));
}

/// `seccomp=FILE` becomes `seccomp=<the profile>`, as `docker` sends it: the Control node
/// cannot read the client's files. The other options go as they are.
fn read_seccomp_file(opt: &str) -> anyhow::Result<String> {
    let Some(path) = opt.strip_prefix("seccomp=").or_else(|| opt.strip_prefix("seccomp:")) else {
        return Ok(opt.to_string());
    };
    if matches!(path, "unconfined" | "default" | "builtin") || path.trim_start().starts_with('{') {
        return Ok(opt.to_string());
    }
    let meta = std::fs::metadata(path).with_context(|| format!("--security-opt {opt}: reading the profile"))?;
    anyhow::ensure!(
        meta.len() <= herd_proto::confinement::MAX_PROFILE as u64,
        "--security-opt {opt}: the profile has {} bytes; at most {} are taken",
        meta.len(),
        herd_proto::confinement::MAX_PROFILE
    );
    let json = std::fs::read_to_string(path).with_context(|| format!("--security-opt {opt}: reading the profile"))?;
    let profile =
        herd_proto::confinement::parse_seccomp_profile(&json).map_err(|e| anyhow::anyhow!("{path}: {}", e.0))?;
    Ok(format!("seccomp={}", serde_json::to_string(&profile)?))
}

/// Docker's default set, or that set with what was added and dropped.
fn capabilities_text(host: &herd_proto::hostconfig::HostConfig) -> String {
    let mut parts = vec!["Docker's default set".to_string()];
    if !host.cap_add.is_empty() {
        parts.push(format!("+{}", host.cap_add.join(" +")));
    }
    if !host.cap_drop.is_empty() {
        parts.push(format!("-{}", host.cap_drop.join(" -")));
    }
    parts.join(" ")
}
