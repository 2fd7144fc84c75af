//! `herd`: one binary for the whole system — the Control node (`herd control`), the Compute
//! node agent (`herd node`), a local cluster (`herd up` / `herd down`), and the client
//! commands people use (`herd run`, `herd ps`, ...).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use herd_broker::BrokerConfig;
use herd_cli::commands as cmd;
use herd_cli::{CliConfig, Client};
use ipnet::Ipv4Net;

#[derive(Parser)]
#[command(name = "herd", version, about = "Run containers on a cluster and live-migrate them between nodes")]
#[command(propagate_version = true, disable_help_subcommand = true)]
struct Cli {
    /// The client config to use (default: $HERD_CONFIG or ~/.config/herd/config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a whole cluster on this machine: a broker, a Control node and Compute nodes.
    Up(UpArgs),
    /// Stop the local cluster started by herd up and remove what it made.
    Down(DownArgs),
    /// List the nodes of the cluster.
    Nodes(cmd::NodesArgs),
    /// Print the link to the web dashboard (token included).
    Dashboard(herd_cli::dashboard::DashboardArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(cmd::ImageCommand),
    /// Run a container.
    Run(cmd::RunArgs),
    /// List containers.
    Ps(cmd::PsArgs),
    /// Show a container in detail.
    Inspect(cmd::InspectArgs),
    /// Print a container's output: what its node keeps of it (10 MiB files, the newest 5, unless
    /// `herd run --log-opt` or `herd node --log-max-size/--log-max-files` say otherwise); a
    /// line on stderr says how much older output was rotated away.
    Logs(cmd::LogsArgs),
    /// Run a command in a running container (its namespaces, cgroup, user and environment) and
    /// exit with its exit code (126: it cannot be run, 127: not found); -it for a shell.
    Exec(herd_cli::exec::ExecArgs),
    /// Stop containers (SIGTERM, then SIGKILL after a grace period).
    Stop(cmd::StopArgs),
    /// Start stopped containers again, with their files and addresses.
    Start(cmd::StartArgs),
    /// Stop containers (SIGTERM, then SIGKILL after a grace period), then start them again.
    Restart(cmd::RestartArgs),
    /// Remove containers.
    Rm(cmd::RmArgs),
    /// Change a container's checkpoint ticker and node-failure policy.
    Update(cmd::UpdateArgs),
    /// Save a running container with CRIU.
    Checkpoint(cmd::CheckpointArgs),
    /// Continue a container from a checkpoint.
    Restore(cmd::RestoreArgs),
    /// Move a running container to another node while it runs.
    Migrate(cmd::MigrateArgs),
    /// List a container's migrations: where from and to, how, and how each ended.
    Migrations(cmd::MigrationsArgs),
    /// Show what happened in the cluster.
    Events(cmd::EventsArgs),
    /// Live CPU, memory, network and block I/O figures of running containers.
    Stats(herd_cli::stats::StatsArgs),
    /// A full-screen live view of the cluster: nodes, containers and recent events.
    Top(herd_cli::top::TopArgs),
    /// Offline analysis, no cluster needed (forecast a CSV column).
    #[command(subcommand)]
    Analyze(herd_cli::analyze::AnalyzeCommand),
    /// Replay a workload trace through the migration policies and compare them (no cluster needed).
    Sim(herd_cli::sim::SimArgs),
    /// The migration policy the Control node runs: list, show, set, explain its decisions.
    #[command(subcommand)]
    Policy(herd_cli::policy::PolicyCommand),
    /// Run the Control node (or a replica of it); `herd control status`: which replica leads.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Control(ControlCommand),
    /// Run the Compute node agent.
    Node(NodeArgs),
    /// The cluster CA of a cluster on several machines: init, issue, show (herd up makes
    /// its own).
    #[command(subcommand)]
    Ca(herd_cli::ca::CaCommand),
    /// One-time tokens with which machines join the cluster as nodes (herd node --join).
    #[command(subcommand)]
    JoinToken(herd_cli::join_token::JoinTokenCommand),
    /// Carry a post-copy migration's pages (started by the agent).
    #[command(hide = true)]
    PageProxy {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Args)]
struct UpArgs {
    /// Name of the cluster (several can run side by side).
    #[arg(long, default_value = "herd")]
    name: String,
    /// Number of Compute nodes.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Simulated nodes to add (the `sim` runtime: they accept containers and run nothing),
    /// for scale tests; all run in one process, named sim-0001, sim-0002, ...
    #[arg(long, default_value_t = 0)]
    sim_nodes: usize,
    /// Return once the cluster is ready and leave it running in the background.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Import a busybox image and run a container once the cluster is up.
    #[arg(long)]
    demo: bool,
    /// The nodes' network (the bridge takes the first address).
    #[arg(long, default_value = "10.77.0.0/24")]
    subnet: Ipv4Net,
    /// The range container addresses come from.
    #[arg(long, default_value = "10.88.0.0/16")]
    container_cidr: Ipv4Net,
    /// Port of the Control node's API (on 127.0.0.1).
    #[arg(long, default_value_t = 7700)]
    api_port: u16,
    /// Port of the broker (on the bridge address); with several, the first one's (the others
    /// take the next ports, and PORT+100 on for their cluster routes).
    #[arg(long, default_value_t = 7422)]
    broker_port: u16,
    /// nats-servers to run: 1, or 3 (or 5) as one JetStream cluster whose state has three
    /// replicas, so that the loss of one loses nothing.
    #[arg(long, default_value_t = 1)]
    brokers: usize,
    /// Control node replicas: 1 runs alone; 3 (or more) elect a leader through a lease in the
    /// broker, and another takes over within seconds when it fails. Replica i serves its API
    /// on API_PORT+i; the client config lists them all.
    #[arg(long, default_value_t = 1)]
    control_replicas: usize,
    /// No single point of failure: --brokers 3 --control-replicas 3.
    #[arg(long, conflicts_with_all = ["brokers", "control_replicas"])]
    ha: bool,
    /// CPUs each node offers (default: the machine's; simulated nodes: 16).
    #[arg(long)]
    node_cpus: Option<String>,
    /// Memory each node offers (default: the machine's; simulated nodes: 64g), e.g. 8g.
    #[arg(long)]
    node_memory: Option<String>,
    /// Seconds without a heartbeat before a node is marked down.
    #[arg(long, default_value_t = 3.0)]
    node_timeout: f64,
    /// Size at which the nodes rotate a container's log file (default 10m), as `herd node
    /// --log-max-size`.
    #[arg(long)]
    log_max_size: Option<String>,
    /// Log files the nodes keep per container (default 5), as `herd node --log-max-files`.
    #[arg(long)]
    log_max_files: Option<u32>,
    /// Where the cluster keeps its data (default: /var/lib/herd/NAME).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A label for one node, NODE:KEY=VALUE (e.g. n2:zone=b); repeatable.
    #[arg(long = "node-label", value_parser = parse_node_label)]
    node_labels: Vec<(String, String, String)>,
    /// The Control node's migration policy, e.g. hotspot:threshold=80% (herd policy ls).
    #[arg(long)]
    policy: Option<String>,
    /// Seconds between two evaluations of the policy (default 5).
    #[arg(long)]
    policy_interval: Option<f64>,
    /// Plain text on every channel (the broker, the API, migrations), for a measurement of
    /// what encryption costs: by default every channel is TLS with certificates of the
    /// cluster's own CA.
    #[arg(long)]
    no_tls: bool,
    /// How long the components' certificates are valid; they are renewed after two thirds
    /// of it (e.g. 7d, 12h, 90s).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    cert_lifetime: Duration,
    /// How many of the nodes (the last ones) join with a one-time token, as the machines of a
    /// cluster on several machines do (herd node --join), instead of getting their
    /// credentials from herd up.
    #[arg(long, default_value_t = 0)]
    join_nodes: usize,
    /// Runs the supervisor of a detached cluster (internal).
    #[arg(long, hide = true)]
    supervise: bool,
}

fn parse_node_label(s: &str) -> Result<(String, String, String), String> {
    let (node, pair) = s
        .split_once(':')
        .ok_or_else(|| format!("invalid node label {s:?}: expected NODE:KEY=VALUE, e.g. n2:zone=b"))?;
    let (k, v) = herd_proto::names::parse_pair(pair, "--node-label").map_err(|e| e.0)?;
    Ok((node.to_string(), k, v))
}

#[derive(Args)]
struct DownArgs {
    /// Name of the cluster.
    #[arg(long, default_value = "herd")]
    name: String,
    /// Also delete the cluster's data (images, state, caches).
    #[arg(long)]
    purge: bool,
    /// Seconds containers get to stop after SIGTERM before they are killed.
    #[arg(long = "time", short = 't', default_value_t = herd_up::DEFAULT_STOP_TIMEOUT)]
    timeout: u64,
}

#[derive(Args)]
struct BrokerArgs {
    /// URL of the NATS broker.
    #[arg(long, env = "HERD_BROKER", default_value = "nats://127.0.0.1:4222")]
    broker: String,
    /// User name at the broker.
    #[arg(long)]
    broker_user: Option<String>,
    /// File holding the broker password.
    #[arg(long)]
    broker_password_file: Option<PathBuf>,
}

/// A component's TLS files: all three, or none (plain text, for a cluster on one trusted
/// machine or a measurement without encryption; `herd up` always gives them unless
/// `--no-tls`).
#[derive(Args)]
struct TlsArgs {
    /// The cluster CA's certificate (`herd ca init`): every peer is checked against it.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This component's certificate (`herd ca issue`), presented to every peer.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This component's key.
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self, component: &str) -> Option<herd_tls::TlsFiles> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => {
                Some(herd_tls::TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
            }
            _ => {
                tracing::warn!(
                    "{component}: no --tls-ca/--tls-cert/--tls-key: the broker, the API and migrations travel in plain text"
                );
                None
            }
        }
    }
}

impl BrokerArgs {
    fn config(&self, client_name: &str, tls: Option<herd_tls::TlsFiles>) -> anyhow::Result<BrokerConfig> {
        let mut cfg = BrokerConfig::new(&self.broker, client_name).with_tls(tls);
        if let Some(user) = &self.broker_user {
            let password = match &self.broker_password_file {
                Some(p) => read_secret(p)?,
                None => std::env::var("HERD_BROKER_PASSWORD").unwrap_or_default(),
            };
            cfg = cfg.with_credentials(user, password);
        }
        Ok(cfg)
    }
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_string())
}

#[derive(Args)]
struct ControlCommand {
    #[command(subcommand)]
    what: Option<ControlWhat>,
    #[command(flatten)]
    run: ControlArgs,
}

#[derive(Subcommand)]
enum ControlWhat {
    /// Which Control replica leads and since when, the others' lag, and the brokers holding
    /// the cluster state.
    Status(herd_cli::control::StatusArgs),
}

#[derive(Args)]
struct ControlArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:7700")]
    api_listen: SocketAddr,
    /// File holding the API token clients must present.
    #[arg(long, required = true)]
    api_token_file: Option<PathBuf>,
    /// Scratch space for uploads.
    #[arg(long, default_value = "/var/lib/herd/control")]
    data_dir: PathBuf,
    /// The range container addresses come from.
    #[arg(long, default_value = "10.88.0.0/16")]
    container_cidr: Ipv4Net,
    /// Seconds without a heartbeat before a node is marked down.
    #[arg(long, default_value_t = 3.0)]
    node_timeout: f64,
    /// Every auto migration is safe, as with herd migrate --safe (the policies' and drains'
    /// too): pre-copy, or cold where a node tracks no dirty memory; never post-copy.
    #[arg(long, env = "HERD_SAFE_MIGRATIONS")]
    safe_migrations: bool,
    /// How containers are placed unless herd run --strategy says otherwise.
    #[arg(long, default_value = "spread", value_parser = ["spread", "binpack", "random"])]
    strategy: String,
    /// The migration policy, e.g. hotspot:threshold=80% or 0.7*forecast+0.3*balance (herd policy ls).
    /// Default: the config file's [control] policy, else none; a policy set with herd policy
    /// set overrides both until herd policy reset.
    #[arg(long)]
    policy: Option<String>,
    /// Seconds between two evaluations of the policy (default: [control] policy_interval, else 5).
    #[arg(long)]
    policy_interval: Option<f64>,
    /// Run as one of several Control replicas under this name (e.g. control2): the replicas
    /// elect a leader through a lease in the broker, the others stand by and answer with the
    /// leader's address. Without it, this Control node runs alone.
    #[arg(long)]
    replica: Option<String>,
    /// The URL of this replica's API that clients and the other replicas are given (default:
    /// https://API_LISTEN, http:// without TLS files).
    #[arg(long, requires = "replica")]
    advertise: Option<String>,
    /// Seconds a leader's lease lasts without renewal before another replica takes over.
    #[arg(long, default_value_t = 1.5, requires = "replica")]
    lease_ttl: f64,
    /// The key that signs exported checkpoints, made when missing; every replica needs the
    /// same (default: DATA_DIR/checkpoint-signing.key).
    #[arg(long)]
    checkpoint_key: Option<PathBuf>,
    /// The most one image layer may unpack to: imports and pulls of a larger one are refused.
    #[arg(long, env = "HERD_CONTROL_MAX_LAYER_SIZE", default_value = "8g", value_parser = parse_size)]
    max_layer_size: u64,
    /// The most one image may unpack to, its distinct layers together.
    #[arg(long, env = "HERD_CONTROL_MAX_IMAGE_SIZE", default_value = "16g", value_parser = parse_size)]
    max_image_size: u64,
    /// The cluster CA's directory (ca.crt, ca.key): with it, machines join the cluster with a
    /// token (herd join-token create; herd node --join) and this Control node signs their
    /// certificates. Needs --callout-key and a broker whose auth callout names that key.
    #[arg(long, requires = "callout_key")]
    join_ca: Option<PathBuf>,
    /// File holding the seed (SA...) of the account key the broker's auth_callout names as
    /// its issuer: the broker asks this Control node about every joined node's connection.
    #[arg(long, requires = "join_ca")]
    callout_key: Option<PathBuf>,
    /// Another address at which only the join routes listen (the cluster's network, when the
    /// API listens on the loopback).
    #[arg(long, requires = "join_ca")]
    join_listen: Option<SocketAddr>,
    /// A user of the broker's system account: herd nodes rm closes the removed node's
    /// connections through it.
    #[arg(long, requires = "join_ca")]
    broker_system_user: Option<String>,
    /// File holding that user's password.
    #[arg(long, requires = "broker_system_user")]
    broker_system_password_file: Option<PathBuf>,
    /// How long a joined node's certificate is valid.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    join_cert_lifetime: Duration,
}

fn parse_size(s: &str) -> Result<u64, String> {
    herd_proto::units::parse_memory(s).map_err(|e| e.to_string().replace("memory size", "size"))
}

#[derive(Args)]
struct NodeArgs {
    /// Name of this node.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Encrypt migrations' memory pages too, with CRIU's own TLS (needs the TLS files). Off by
    /// default: CRIU's TLS breaks on containers with System V shared memory, such as
    /// PostgreSQL (their migrations fail cleanly and they keep running).
    #[arg(long, requires = "tls_ca")]
    encrypt_pages: bool,
    /// Migrations' memory pages in plain text even with TLS (for a measurement of what
    /// sealing them costs). By default Herd seals the pages connection with TLS between the
    /// nodes, and CRIU speaks plain text only to a relay on its own node.
    #[arg(long, env = "HERD_NODE_PLAIN_PAGES", conflicts_with = "encrypt_pages")]
    plain_pages: bool,
    /// Join the cluster whose Control node answers at this URL (https://CONTROL:7700) with
    /// --token: the node gets its certificate (kept in DATA_DIR/tls, its key made here) and
    /// the broker's address. It starts again with the same command; the token is spent.
    #[arg(long, requires = "token", conflicts_with_all = ["tls_ca", "broker_user"])]
    join: Option<String>,
    /// The join token (herd join-token create prints it).
    #[arg(long, env = "HERD_JOIN_TOKEN", requires = "join")]
    token: Option<String>,
    /// This node's address, through which other nodes reach its containers.
    #[arg(long)]
    address: Ipv4Addr,
    #[arg(long, default_value = "/var/lib/herd/node")]
    data_dir: PathBuf,
    #[arg(long, default_value = "/run/herd/node")]
    run_dir: PathBuf,
    /// Cgroup under which containers get their own (default /herd/NAME).
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// The cluster's container range: routes are managed within it, and nothing from it
    /// reaches this node's own services or the broker. Without it, all Herd routes are
    /// managed and containers are not kept from the node's services.
    #[arg(long)]
    container_cidr: Option<Ipv4Net>,
    /// A node label (KEY=VALUE); repeatable.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// CPUs to offer (default: the machine's).
    #[arg(long)]
    cpus: Option<String>,
    /// Memory to offer (default: the machine's).
    #[arg(long)]
    memory: Option<String>,
    /// The runc binary (default: found on PATH).
    #[arg(long)]
    runc: Option<PathBuf>,
    /// The CRIU binary (default: found on PATH).
    #[arg(long)]
    criu: Option<PathBuf>,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Milliseconds without an answer from the broker after which the node freezes the
    /// containers that may be restarted elsewhere (keep it below the Control node's
    /// --node-timeout, 3 s by default).
    #[arg(long, default_value_t = 2000)]
    lease_ms: u64,
    /// Milliseconds between monitoring samples (at least 100).
    #[arg(long, default_value_t = 1000)]
    sample_ms: u64,
    /// CPUs the work of migrations (checkpoint, page servers) may use on this node.
    #[arg(long, default_value = "1")]
    migration_cpus: String,
    /// Size at which a container's log file is rotated (the kubelet's default); a container
    /// may ask for another with `herd run --log-opt max-size=...`.
    #[arg(long, default_value = "10m")]
    log_max_size: String,
    /// Log files kept per container, the one being written included (`--log-opt max-file=...`).
    #[arg(long, default_value_t = herd_proto::logs::DEFAULT_MAX_FILES)]
    log_max_files: u32,
    /// `runc` runs real containers; `sim` is the simulated runtime for scale tests: it
    /// accepts containers without running anything.
    #[arg(long, default_value = "runc", value_parser = ["runc", "sim"])]
    runtime: String,
    /// With `--runtime sim`: how many nodes this process simulates (named NAME-0001, ...).
    #[arg(long, default_value_t = 1)]
    sim_nodes: usize,
    /// The most one image layer may unpack to on this node.
    #[arg(long, env = "HERD_NODE_MAX_LAYER_SIZE", default_value = "8g", value_parser = parse_size)]
    max_layer_size: u64,
    /// Free disk space kept on the filesystem of --data-dir: a layer is not fetched or
    /// unpacked past it. A size (2g) or a share of the filesystem (5%).
    #[arg(long, env = "HERD_NODE_DISK_RESERVE", default_value = "5%")]
    disk_reserve: String,
}

/// What the long-running components log unless RUST_LOG says otherwise: the NATS client's
/// reconnect chatter is left out.
const LOG_DEFAULT: &str = "info,async_nats=warn";

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn client(config: Option<&Path>) -> anyhow::Result<Client> {
    let path = config.map(Path::to_path_buf).unwrap_or_else(herd_cli::config::default_path);
    Client::new(&CliConfig::load(&path)?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Up(a) => {
            if a.supervise {
                // The detached supervisor logs to its log file.
                init_logging(LOG_DEFAULT);
                return herd_up::supervisor_from_env().await;
            }
            // In the foreground, progress lines tell the story; only problems are logged.
            init_logging("warn");
            let mut opts = herd_up::UpOptions::defaults(&a.name);
            opts.nodes = a.nodes;
            opts.sim_nodes = a.sim_nodes;
            opts.subnet = a.subnet;
            opts.container_cidr = a.container_cidr;
            opts.api_port = a.api_port;
            opts.broker_port = a.broker_port;
            (opts.brokers, opts.control_replicas) = if a.ha { (3, 3) } else { (a.brokers, a.control_replicas) };
            opts.node_timeout_secs = a.node_timeout;
            opts.node_labels = a.node_labels;
            // Checked here, before anything starts.
            let defaults = herd_proto::logs::LogLimits::default();
            let size = a.log_max_size.clone().unwrap_or_else(|| defaults.max_size.to_string());
            herd_proto::logs::LogLimits::new(&size, a.log_max_files.unwrap_or(defaults.max_files))
                .map_err(|e| anyhow::anyhow!(e.0))?;
            opts.node_log_max_size = a.log_max_size;
            opts.node_log_max_files = a.log_max_files;
            opts.tls = !a.no_tls;
            anyhow::ensure!(a.cert_lifetime >= Duration::from_secs(30), "--cert-lifetime: 30s at least");
            opts.cert_lifetime_secs = a.cert_lifetime.as_secs();
            opts.join_nodes = a.join_nodes;
            // The config file's [control] section fills in what the flags leave out; the
            // Control node gets the result as flags.
            let path = config.map(Path::to_path_buf).unwrap_or_else(herd_cli::config::default_path);
            let section = herd_cli::config::ControlSection::load(&path)?;
            opts.policy = a.policy.or(section.policy);
            opts.policy_interval_secs = a.policy_interval.or(section.policy_interval);
            opts.node_cpus_milli = a.node_cpus.as_deref().map(herd_proto::units::parse_cpus).transpose()?;
            opts.node_memory_bytes = a.node_memory.as_deref().map(herd_proto::units::parse_memory).transpose()?;
            if let Some(d) = a.data_dir {
                opts.data_dir = d;
            }
            if let Some(c) = config {
                opts.config_path = c.to_path_buf();
            }
            herd_up::up(opts, a.detach, a.demo).await
        }
        Command::Down(a) => {
            let run_dir = herd_up::UpOptions::defaults(&a.name).run_dir;
            herd_up::down(&run_dir, &a.name, a.purge, a.timeout).await
        }
        Command::Control(ControlCommand { what: Some(ControlWhat::Status(s)), .. }) => {
            herd_cli::control::status(&client(config)?, s).await
        }
        Command::Control(ControlCommand { run: a, .. }) => {
            init_logging(LOG_DEFAULT);
            let token_file = a.api_token_file.context("--api-token-file is required")?;
            let token = read_secret(&token_file)?;
            anyhow::ensure!(
                token.len() >= 16,
                "the API token in {} is too short (16 characters at least)",
                token_file.display()
            );
            let path = config.map(Path::to_path_buf).unwrap_or_else(herd_cli::config::default_path);
            let policy = herd_cli::config::ControlSection::load(&path)?.resolve(a.policy, a.policy_interval);
            let tls = a.tls.files("control");
            let cfg = herd_control::ControlConfig {
                broker: a.broker.config("control", tls.clone())?,
                tls: tls.clone(),
                api_listen: a.api_listen,
                api_token: token,
                data_dir: a.data_dir,
                checkpoint_key: a.checkpoint_key,
                container_cidr: a.container_cidr,
                node_timeout: Duration::from_secs_f64(a.node_timeout),
                strategy: a.strategy,
                policy_interval: Duration::try_from_secs_f64(policy.interval_secs)
                    .map_err(|_| anyhow::anyhow!("policy interval {}: not a duration", policy.interval_secs))?,
                policy: policy.spec,
                policy_source: policy.source.to_string(),
                unpack_limits: herd_control::UnpackLimits { layer: a.max_layer_size, image: a.max_image_size },
                join: match (a.join_ca, a.callout_key) {
                    (Some(ca_dir), Some(callout_seed)) => Some(herd_control::join::JoinConfig {
                        ca_dir,
                        callout_seed,
                        system: match a.broker_system_user {
                            Some(user) => {
                                let file = a
                                    .broker_system_password_file
                                    .context("--broker-system-user needs --broker-system-password-file")?;
                                Some(
                                    BrokerConfig::new(&a.broker.broker, "control (system account)")
                                        .with_tls(tls.clone())
                                        .with_credentials(user, read_secret(&file)?),
                                )
                            }
                            None => None,
                        },
                        listen: a.join_listen,
                        cert_lifetime: a.join_cert_lifetime,
                    }),
                    _ => None,
                },
                safe_migrations: a.safe_migrations,
            };
            match a.replica {
                Some(name) => {
                    let ttl = Duration::try_from_secs_f64(a.lease_ttl)
                        .ok()
                        .filter(|t| *t >= Duration::from_millis(300))
                        .ok_or_else(|| anyhow::anyhow!("--lease-ttl {}: 0.3 seconds at least", a.lease_ttl))?;
                    let replica = herd_control::ReplicaConfig {
                        name,
                        advertise: a.advertise.unwrap_or_else(|| {
                            let scheme = if cfg.tls.is_some() { "https" } else { "http" };
                            format!("{scheme}://{}", a.api_listen)
                        }),
                        timing: herd_control::lease::LeaseTiming::new(ttl),
                    };
                    herd_control::run_replica(cfg, replica, shutdown_signal()).await
                }
                None => herd_control::run(cfg, shutdown_signal()).await,
            }
        }
        Command::Node(a) => {
            init_logging(LOG_DEFAULT);
            let labels: BTreeMap<String, String> = a
                .labels
                .iter()
                .map(|l| herd_proto::names::parse_pair(l, "--label").map_err(|e| anyhow::anyhow!(e.0)))
                .collect::<anyhow::Result<_>>()?;
            if a.runtime == "sim" {
                let cfg = herd_node::sim::SimConfig {
                    broker: a.broker.config(&format!("simulated nodes {}", a.name), a.tls.files("simulated nodes"))?,
                    address: a.address,
                    nodes: a.sim_nodes,
                    name: a.name,
                    labels,
                    capacity: herd_proto::state::Resources {
                        cpus_milli: a.cpus.as_deref().map(herd_proto::units::parse_cpus).transpose()?.unwrap_or(16_000),
                        memory_bytes: a
                            .memory
                            .as_deref()
                            .map(herd_proto::units::parse_memory)
                            .transpose()?
                            .unwrap_or(64 << 30),
                    },
                    heartbeat: Duration::from_millis(a.heartbeat_ms.max(50)),
                };
                return herd_node::sim::run(cfg, shutdown_signal()).await;
            }
            anyhow::ensure!(a.sim_nodes == 1, "--sim-nodes needs --runtime sim");
            let (tls, broker) = match &a.join {
                // A joined node's certificate is its only credential at the broker.
                Some(url) => {
                    let (files, joined) =
                        herd_node::join::join_or_load(url, a.token.as_deref(), &a.name, a.address, &a.data_dir).await?;
                    let broker =
                        BrokerConfig::new(&joined.broker, format!("node {}", a.name)).with_tls(Some(files.clone()));
                    let url = if joined.url.is_empty() { url.trim_end_matches('/').to_string() } else { joined.url };
                    tokio::spawn(herd_node::join::keep_renewed(url, files.clone()));
                    (Some(files), broker)
                }
                None => {
                    let tls = a.tls.files(&format!("node {}", a.name));
                    (tls.clone(), a.broker.config(&format!("node {}", a.name), tls)?)
                }
            };
            let cfg = herd_node::agent::NodeConfig {
                broker,
                tls,
                encrypt_pages: a.encrypt_pages,
                plain_pages: a.plain_pages,
                address: a.address,
                cgroup_parent: a.cgroup_parent.unwrap_or_else(|| format!("/herd/{}", a.name)),
                name: a.name,
                data_dir: a.data_dir,
                run_dir: a.run_dir,
                container_cidr: a.container_cidr,
                labels,
                cpus_milli: a.cpus.as_deref().map(herd_proto::units::parse_cpus).transpose()?,
                memory_bytes: a.memory.as_deref().map(herd_proto::units::parse_memory).transpose()?,
                runc: a.runc,
                criu: a.criu,
                heartbeat: Duration::from_millis(a.heartbeat_ms.max(50)),
                lease: Duration::from_millis(a.lease_ms.max(100)),
                sample_interval: Duration::from_millis(a.sample_ms.max(100)),
                migration_cpus_milli: herd_proto::units::parse_cpus(&a.migration_cpus)?,
                layer_limits: herd_node::layers::LayerLimits {
                    max_layer_size: a.max_layer_size,
                    disk_reserve: herd_node::layers::DiskReserveSpec::parse(&a.disk_reserve)?,
                },
                log_limits: herd_proto::logs::LogLimits::new(&a.log_max_size, a.log_max_files)
                    .map_err(|e| anyhow::anyhow!(e.0))?,
            };
            herd_node::agent::run(cfg, shutdown_signal()).await
        }
        Command::Ca(c) => herd_cli::ca::run(c),
        Command::JoinToken(c) => herd_cli::join_token::run(&client(config)?, c).await,
        Command::PageProxy { args } => {
            let args = herd_node::pageproxy::ProxyArgs::parse(&args).map_err(anyhow::Error::msg)?;
            herd_node::pageproxy::run(args).await
        }
        Command::Nodes(a) => cmd::nodes(&client(config)?, a).await,
        Command::Dashboard(a) => herd_cli::dashboard::dashboard(config, a),
        Command::Image(a) => cmd::image(&client(config)?, a).await,
        Command::Run(a) => cmd::run(&client(config)?, a).await,
        Command::Ps(a) => cmd::ps(&client(config)?, a).await,
        Command::Inspect(a) => cmd::inspect(&client(config)?, a).await,
        Command::Logs(a) => cmd::logs(&client(config)?, a).await,
        Command::Exec(a) => {
            let code = herd_cli::exec::exec(&client(config)?, a).await?;
            std::process::exit(code)
        }
        Command::Stop(a) => cmd::stop(&client(config)?, a).await,
        Command::Start(a) => cmd::start(&client(config)?, a).await,
        Command::Restart(a) => cmd::restart(&client(config)?, a).await,
        Command::Rm(a) => cmd::rm(&client(config)?, a).await,
        Command::Update(a) => cmd::update(&client(config)?, a).await,
        Command::Checkpoint(a) => cmd::checkpoint(&client(config)?, a).await,
        Command::Restore(a) => cmd::restore(&client(config)?, a).await,
        Command::Migrate(a) => cmd::migrate(&client(config)?, a).await,
        Command::Stats(a) => herd_cli::stats::stats(&client(config)?, a).await,
        Command::Top(a) => herd_cli::top::top(&client(config)?, a).await,
        Command::Analyze(a) => herd_cli::analyze::analyze(|| client(config), a).await,
        Command::Sim(a) => herd_cli::sim::sim(a),
        Command::Policy(a) => herd_cli::policy::policy(|| client(config), a).await,
        Command::Events(a) => cmd::events(&client(config)?, a).await,
        Command::Migrations(a) => cmd::migrations(&client(config)?, a).await,
    }
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The shim forks and must start before any other thread exists.
    if args.get(1).is_some_and(|a| a == "shim") {
        match herd_node::shim::ShimArgs::parse(&args[2..]) {
            Ok(shim_args) => herd_node::shim::shim_main(shim_args),
            Err(e) => {
                eprintln!("herd shim: {e}");
                std::process::exit(2);
            }
        }
    }
    let cli = Cli::parse();
    herd_tls::config::install_default_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        // `herd ps | head`: the reader left; that is not an error worth a message.
        if e.chain()
            .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
        {
            std::process::exit(141);
        }
        // Error texts quote what users and registries gave: never let them drive the terminal.
        eprintln!("error: {}", herd_cli::format::clean_keeping(&format!("{e:#}"), &['\n', '\t']));
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Clap checks the whole command tree (unique argument names, valid defaults, ...) only
    /// when a command is parsed; this checks every subcommand at once.
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
