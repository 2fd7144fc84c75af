//! Names, addresses and paths of a local cluster, derived from its options, and the state
//! file (`up.json`) that lets `herd down` find and undo everything.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What `herd up` was asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpOptions {
    /// Cluster name: keeps several clusters on one machine apart.
    pub name: String,
    pub nodes: usize,
    /// The underlay: the bridge takes the first address, node i the (10+i)th.
    pub subnet: Ipv4Net,
    /// Where container addresses come from.
    pub container_cidr: Ipv4Net,
    pub api_port: u16,
    /// The first broker's client port; broker i (from 0) listens on `broker_port + i`, and
    /// on `broker_port + 100 + i` for its cluster routes.
    pub broker_port: u16,
    /// nats-servers: one, or a JetStream cluster of three (or five).
    #[serde(default = "one")]
    pub brokers: usize,
    /// Control node replicas: one runs alone; several elect a leader (replica i, from 0,
    /// serves its API on `api_port + i`).
    #[serde(default = "one")]
    pub control_replicas: usize,
    /// Capacity each node reports (defaults: the machine's).
    pub node_cpus_milli: Option<u64>,
    pub node_memory_bytes: Option<u64>,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    /// The CLI config to write.
    pub config_path: PathBuf,
    /// Seconds without a heartbeat before the Control node marks a node down.
    pub node_timeout_secs: f64,
    /// Labels given to nodes: (node, key, value).
    #[serde(default)]
    pub node_labels: Vec<(String, String, String)>,
    /// The Control node's migration policy and seconds between its evaluations (its own
    /// defaults when `None`).
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub policy_interval_secs: Option<f64>,
    /// Simulated nodes (`herd node --runtime sim`), all in one process.
    #[serde(default)]
    pub sim_nodes: usize,
    /// The nodes' `--log-max-size` and `--log-max-files` (their defaults when `None`).
    #[serde(default)]
    pub node_log_max_size: Option<String>,
    #[serde(default)]
    pub node_log_max_files: Option<u32>,
    /// TLS on every channel, with certificates of the cluster's own CA.
    #[serde(default = "yes")]
    pub tls: bool,
    /// How long component certificates are valid, in seconds.
    #[serde(default = "week")]
    pub cert_lifetime_secs: u64,
    /// How many of the nodes (the last ones) join with a token, as the machines of a cluster
    /// on several machines do, instead of getting credentials from `herd up`.
    #[serde(default)]
    pub join_nodes: usize,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

fn week() -> u64 {
    7 * 86400
}

impl UpOptions {
    pub fn defaults(name: &str) -> UpOptions {
        UpOptions {
            name: name.to_string(),
            nodes: 2,
            subnet: "10.77.0.0/24".parse().unwrap(),
            container_cidr: "10.88.0.0/16".parse().unwrap(),
            api_port: 7700,
            broker_port: 7422,
            brokers: 1,
            control_replicas: 1,
            node_cpus_milli: None,
            node_memory_bytes: None,
            data_dir: PathBuf::from("/var/lib/herd").join(name),
            run_dir: PathBuf::from("/run/herd").join(name),
            config_path: herd_cli::config::default_path(),
            node_timeout_secs: 3.0,
            node_labels: Vec::new(),
            policy: None,
            policy_interval_secs: None,
            sim_nodes: 0,
            node_log_max_size: None,
            node_log_max_files: None,
            tls: true,
            cert_lifetime_secs: week(),
            join_nodes: 0,
        }
    }
}

/// One Compute node of the local cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeLayout {
    pub name: String,
    pub address: Ipv4Addr,
    /// `/run/netns/<netns>`: `ip netns exec <netns> ...` works for debugging.
    pub netns: String,
    /// Host end of the node's veth, a port of the bridge.
    pub host_if: String,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup_parent: String,
}

/// One nats-server of the local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerLayout {
    /// Its component name: `broker`, `broker2`, `broker3`...
    pub name: String,
    pub url: String,
    /// `ADDRESS:PORT` of its clients and of its cluster routes.
    pub listen: String,
    pub route_listen: String,
    /// Its JetStream store.
    pub store: PathBuf,
}

/// One Control node replica of the local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlLayout {
    /// Its component and replica name: `control`, `control2`, `control3`...
    pub name: String,
    /// Its API's URL (on 127.0.0.1).
    pub url: String,
    pub listen: String,
    pub data_dir: PathBuf,
}

/// Everything derived from the options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layout {
    pub opts: UpOptions,
    pub bridge: String,
    pub bridge_addr: Ipv4Net,
    pub nodes: Vec<NodeLayout>,
}

/// What a running `herd up` has done, so `herd down` (or the next `herd up` after a crash)
/// can undo it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpState {
    pub layout: Layout,
    pub supervisor_pid: u32,
    /// The first broker's pid.
    pub broker_pid: Option<u32>,
    /// Every broker's, by component name (`broker`, `broker2`, ...).
    #[serde(default)]
    pub broker_pids: Vec<(String, Option<u32>)>,
    /// The first Control replica's pid (`control`).
    pub control_pid: Option<u32>,
    /// Every Control replica's, by component name (`control`, `control2`, ...).
    #[serde(default)]
    pub control_pids: Vec<(String, Option<u32>)>,
    /// Node name -> agent pid.
    pub node_pids: Vec<(String, Option<u32>)>,
    /// iptables rules added (each the argument list after -I/-D CHAIN).
    pub iptables_rules: Vec<Vec<String>>,
    /// The host's `net.ipv4.ip_forward` before `herd up` set it, to put back.
    pub ip_forward_before: Option<String>,
    /// Set once every component is up.
    pub ready: bool,
}

fn short_hash(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..3])
}

impl Layout {
    pub fn new(opts: UpOptions) -> anyhow::Result<Layout> {
        herd_proto::names::validate_node_name(&opts.name).map_err(|_| {
            anyhow::anyhow!("invalid cluster name {:?}: use lowercase letters, digits and '-'", opts.name)
        })?;
        if opts.nodes > 200 || (opts.nodes == 0 && opts.sim_nodes == 0) {
            bail!("--nodes must be between 1 and 200 (0 only with --sim-nodes)");
        }
        if ![1, 3, 5].contains(&opts.brokers) {
            bail!("--brokers must be 1, 3 or 5 (a JetStream cluster needs a majority of its servers)");
        }
        if !(1..=5).contains(&opts.control_replicas) {
            bail!("--control-replicas must be between 1 and 5");
        }
        if opts.join_nodes > opts.nodes {
            bail!("--join-nodes {} is more than the {} nodes", opts.join_nodes, opts.nodes);
        }
        if opts.join_nodes > 0 && (!opts.tls || opts.control_replicas > 1) {
            bail!("--join-nodes needs TLS (no --no-tls) and one Control node: nodes join at its join address");
        }
        if opts.sim_nodes > 100_000 {
            bail!("--sim-nodes must be at most 100000");
        }
        let hosts: Vec<Ipv4Addr> = opts.subnet.hosts().collect();
        if hosts.len() < 11 + opts.nodes {
            bail!("--subnet {} is too small for {} nodes", opts.subnet, opts.nodes);
        }
        if opts.subnet.contains(&opts.container_cidr.network()) || opts.container_cidr.contains(&opts.subnet.network())
        {
            bail!("--subnet {} and --container-cidr {} overlap", opts.subnet, opts.container_cidr);
        }
        if let Some((node, _, _)) =
            opts.node_labels.iter().find(|(n, _, _)| !(1..=opts.nodes).any(|i| *n == format!("n{i}")))
        {
            bail!("--node-label names {node}, but the cluster's nodes are n1 to n{}", opts.nodes);
        }
        let tag = short_hash(&opts.name);
        let bridge_addr = Ipv4Net::new(hosts[0], opts.subnet.prefix_len()).unwrap();
        let nodes = (1..=opts.nodes)
            .map(|i| {
                let name = format!("n{i}");
                NodeLayout {
                    address: hosts[9 + i],
                    netns: format!("herd-{}-{name}", opts.name),
                    host_if: format!("hn{tag}{i}"),
                    data_dir: opts.data_dir.join("nodes").join(&name),
                    run_dir: opts.run_dir.join("nodes").join(&name),
                    cgroup_parent: format!("/herd/{}/{name}", opts.name),
                    name,
                }
            })
            .collect();
        Ok(Layout { bridge: format!("hb{tag}"), bridge_addr, nodes, opts })
    }

    /// The brokers' URLs, separated by commas (what `--broker` takes).
    pub fn broker_url(&self) -> String {
        self.brokers().iter().map(|b| b.url.clone()).collect::<Vec<_>>().join(",")
    }

    /// The cluster's nats-servers.
    pub fn brokers(&self) -> Vec<BrokerLayout> {
        let addr = self.bridge_addr.addr();
        (0..self.opts.brokers)
            .map(|i| {
                let (client_port, route_port) =
                    (self.opts.broker_port + i as u16, self.opts.broker_port + 100 + i as u16);
                let name = if i == 0 { "broker".to_string() } else { format!("broker{}", i + 1) };
                BrokerLayout {
                    url: format!("nats://{addr}:{client_port}"),
                    listen: format!("{addr}:{client_port}"),
                    route_listen: format!("{addr}:{route_port}"),
                    store: self.opts.data_dir.join(&name),
                    name,
                }
            })
            .collect()
    }

    /// The cluster's Control node replicas (one when it runs alone).
    pub fn controls(&self) -> Vec<ControlLayout> {
        (0..self.opts.control_replicas)
            .map(|i| {
                let name = if i == 0 { "control".to_string() } else { format!("control{}", i + 1) };
                let listen = format!("127.0.0.1:{}", self.opts.api_port + i as u16);
                let scheme = if self.opts.tls { "https" } else { "http" };
                ControlLayout {
                    url: format!("{scheme}://{listen}"),
                    listen,
                    data_dir: self.opts.data_dir.join(&name),
                    name,
                }
            })
            .collect()
    }

    /// Whether node `name` joins with a token (see [`UpOptions::join_nodes`]).
    pub fn joins(&self, name: &str) -> bool {
        let first_joining = self.opts.nodes - self.opts.join_nodes;
        self.nodes.iter().position(|n| n.name == name).is_some_and(|i| i >= first_joining)
    }

    /// Where the Control node admits joining nodes: on the bridge, where nodes reach it, at
    /// the API's port plus ten (the API itself listens on the loopback).
    pub fn join_listen(&self) -> String {
        format!("{}:{}", self.bridge_addr.addr(), self.opts.api_port + 10)
    }

    /// The API's URLs, separated by commas (what the client config's `api` takes).
    pub fn api_url(&self) -> String {
        self.controls().iter().map(|c| c.url.clone()).collect::<Vec<_>>().join(",")
    }

    pub fn state_path(opts_run_dir: &Path) -> PathBuf {
        opts_run_dir.join("up.json")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.opts.run_dir.join("secrets")
    }

    /// The components' certificates and keys.
    pub fn tls_dir(&self) -> PathBuf {
        self.secrets_dir().join("tls")
    }

    /// The cluster CA (kept with the data: a restarted cluster keeps its CA).
    pub fn ca_dir(&self) -> PathBuf {
        self.opts.data_dir.join("ca")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.opts.run_dir.join("logs")
    }
}

impl UpState {
    pub fn load(run_dir: &Path) -> anyhow::Result<Option<UpState>> {
        let path = Layout::state_path(run_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let path = Layout::state_path(&self.layout.opts.run_dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_fit_linux_limits() {
        let mut opts = UpOptions::defaults("herd-test-long-name");
        opts.nodes = 12;
        let l = Layout::new(opts).unwrap();
        assert!(l.bridge.len() <= 15);
        for n in &l.nodes {
            assert!(n.host_if.len() <= 15, "{}", n.host_if);
        }
        assert_eq!(l.bridge_addr.to_string(), "10.77.0.1/24");
        assert_eq!(l.nodes[0].address.to_string(), "10.77.0.11");
        assert_eq!(l.nodes[11].address.to_string(), "10.77.0.22");
        assert_eq!(l.broker_url(), "nats://10.77.0.1:7422");
    }

    #[test]
    fn three_brokers_have_ports_and_stores_of_their_own() {
        let mut opts = UpOptions::defaults("x");
        opts.brokers = 3;
        let l = Layout::new(opts).unwrap();
        assert_eq!(l.broker_url(), "nats://10.77.0.1:7422,nats://10.77.0.1:7423,nats://10.77.0.1:7424");
        let b = l.brokers();
        assert_eq!(b.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["broker", "broker2", "broker3"]);
        assert_eq!(b[2].route_listen, "10.77.0.1:7524");
        assert!(b[1].store.ends_with("broker2"));
        let mut even = UpOptions::defaults("x");
        even.brokers = 2;
        assert!(Layout::new(even).unwrap_err().to_string().contains("--brokers must be 1, 3 or 5"));
    }

    #[test]
    fn bad_options_are_refused() {
        let mut o = UpOptions::defaults("x");
        o.container_cidr = "10.77.0.0/16".parse().unwrap();
        assert!(Layout::new(o).unwrap_err().to_string().contains("overlap"));
        let mut o = UpOptions::defaults("x");
        o.subnet = "10.77.0.0/29".parse().unwrap();
        assert!(Layout::new(o).unwrap_err().to_string().contains("too small"));
        assert!(Layout::new(UpOptions::defaults("Bad_Name")).is_err());
        let mut o = UpOptions::defaults("x");
        o.node_labels = vec![("n3".into(), "zone".into(), "a".into())];
        assert_eq!(
            Layout::new(o).unwrap_err().to_string(),
            "--node-label names n3, but the cluster's nodes are n1 to n2"
        );
    }
}
