//! The Control node's in-memory view of the cluster, kept in step with the key-value buckets.
//!
//! Reads (`herd ps`, placement) are served from here without touching the broker.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use herd_proto::UnixMillis;
use herd_proto::api::{ContainerInfo, ContainerSummary, NodeInfo, NodeState};
use herd_proto::node::NodeUsage;
use herd_proto::state::{
    Availability, ContainerRecord, ContainerState, ContainerStatus, ImageRecord, NodeRecord, NodeSettings, Resources,
};

/// The view's maps, keyed by names and ids: hashed with foldhash, which costs a fraction of the
/// standard library's SipHash per lookup (`herd ps` looks up every container's status and node;
/// SipHash was an eighth of listing 100,000 containers). Keys come from the cluster's own
/// records, and the seed is random per process.
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A node's registration and liveness.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub record: NodeRecord,
    pub last_heartbeat: Option<(Instant, UnixMillis)>,
    pub usage: Option<NodeUsage>,
    pub state: NodeState,
}

/// Everything the Control node knows.
#[derive(Debug, Default)]
pub struct View {
    pub nodes: Map<String, NodeEntry>,
    /// The operator's labels and drain decisions, by node name (see [`crate::nodes`]).
    pub settings: Map<String, NodeSettings>,
    /// Heartbeats from nodes whose registration has not been seen yet.
    pub early_heartbeats: Map<String, (Instant, UnixMillis, NodeUsage)>,
    pub images: Map<String, ImageRecord>,
    pub containers: Map<String, ContainerRecord>,
    /// Container name by id.
    pub names_by_id: Map<String, String>,
    /// By container id, then by the node that published it: a container's status is the one
    /// its record's node published ([`View::status_of`]); a destination's status is there
    /// before the record moves to it.
    pub statuses: Map<String, Map<String, ContainerStatus>>,
    /// Bucket revision of the newest status write (or delete) seen per status key, so a late
    /// watch event never overwrites a newer status read directly.
    status_revisions: Map<String, u64>,
    /// Per node: the limits of its containers summed, and how many there are. Kept in step
    /// by [`View::insert_container`] and [`View::remove_container`], so a placement costs
    /// the number of nodes, not the number of containers.
    loads: Map<String, (Resources, usize)>,
    /// Containers that publish ports or mount named volumes (few), for the placement filters.
    with_host_config: std::collections::HashSet<String>,
    /// Per node: the containers on it (and on their way to it), as affinities see them. Kept in
    /// step like `loads`, so an affinity placement does not walk every container.
    hosted: Map<String, Vec<herd_sched::Hosted>>,
    /// Containers migrating, by name, as they will be on their destination: from the moment a
    /// migration picks its destination until it ends, that node's load counts them (limits,
    /// slot, ports), so two migrations at once cannot both take its last free memory.
    incoming: Map<String, ContainerRecord>,
    /// Every node as [`View::place`] sees it, built on first use and kept until a node, its
    /// settings or a container's named volumes change; container counts, reservations, hosted
    /// containers and published ports are updated in place. Whatever changes `nodes` or
    /// `settings` must call [`View::nodes_changed`].
    placement_cache: Option<PlacementCache>,
}

#[derive(Debug)]
struct PlacementCache {
    candidates: Vec<herd_sched::Candidate>,
    /// Node name -> index in `candidates`.
    index: Map<String, usize>,
}

impl View {
    /// Applies a write (`Some`) or delete (`None`) of node `node`'s status of container `id`
    /// made at bucket `revision`, unless a newer one was applied already. Returns whether it
    /// was applied, and the status it replaced. A status that names another node than the one
    /// whose key it was written under is not applied.
    pub fn apply_status(
        &mut self,
        node: &str,
        id: &str,
        status: Option<ContainerStatus>,
        revision: u64,
    ) -> (bool, Option<ContainerStatus>) {
        if let Some(s) = status.as_ref().filter(|s| s.node != node || s.id != id) {
            tracing::warn!(
                "ignoring a status of {} on {} written as node {node}'s of {id}: a node writes only its own",
                s.id,
                s.node
            );
            return (false, None);
        }
        let newest = self.status_revisions.entry(herd_proto::subjects::status_key(node, id)).or_insert(0);
        if revision <= *newest {
            return (false, None);
        }
        *newest = revision;
        let old = match status {
            Some(s) => self.statuses.entry(id.to_string()).or_default().insert(node.to_string(), s),
            None => {
                let of_id = self.statuses.get_mut(id);
                let old = of_id.and_then(|m| m.remove(node));
                if self.statuses.get(id).is_some_and(|m| m.is_empty()) {
                    self.statuses.remove(id);
                }
                old
            }
        };
        (true, old)
    }

    /// The status of `c`: the one its node published.
    pub fn status_of(&self, c: &ContainerRecord) -> Option<&ContainerStatus> {
        self.statuses.get(&c.id)?.get(&c.node)
    }

    /// Forgets every status of container `id` (it is removed); returns the nodes that had one.
    pub fn forget_statuses(&mut self, id: &str) -> Vec<String> {
        let nodes: Vec<String> = self.statuses.remove(id).map(|m| m.into_keys().collect()).unwrap_or_default();
        for node in &nodes {
            self.status_revisions.remove(&herd_proto::subjects::status_key(node, id));
        }
        nodes
    }

    pub fn insert_container(&mut self, c: ContainerRecord) {
        self.names_by_id.insert(c.id.clone(), c.name.clone());
        self.count_load(&c, true);
        if let Some(old) = self.containers.insert(c.name.clone(), c) {
            self.count_load(&old, false);
        }
    }

    pub fn remove_container(&mut self, name: &str) -> Option<ContainerRecord> {
        let c = self.containers.remove(name)?;
        self.names_by_id.remove(&c.id);
        self.count_load(&c, false);
        Some(c)
    }

    /// Forgets what placement knew about the nodes: call it after changing `nodes` or `settings`.
    pub fn nodes_changed(&mut self) {
        self.placement_cache = None;
    }

    /// Picks the node for a new container (see [`herd_sched::place`]) on the cached
    /// candidates, so a placement costs one pass over the nodes and nothing else.
    pub fn place(
        &mut self,
        req: &herd_sched::Request,
        strategy: herd_sched::Strategy,
    ) -> Result<String, herd_sched::PlacementError> {
        if self.placement_cache.is_none() {
            let candidates = self.candidates_with(true);
            let index = candidates.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
            self.placement_cache = Some(PlacementCache { candidates, index });
        }
        let cache = self.placement_cache.as_ref().expect("just built");
        herd_sched::place(&cache.candidates, req, strategy)
    }

    /// Counts `c` (whose `node` is its destination) on that node until
    /// [`View::release_incoming`]: see `incoming`.
    pub fn reserve_incoming(&mut self, c: ContainerRecord) {
        self.add_load(&c.node, &c, true);
        if let Some(old) = self.incoming.insert(c.name.clone(), c) {
            self.add_load(&old.node, &old, false);
        }
    }

    /// The container being moved (a reservation of [`View::reserve_incoming`]) that takes
    /// named volume `volume` along, if any.
    pub fn moving_volume(&self, volume: &str) -> Option<&ContainerRecord> {
        self.incoming.values().find(|c| c.host.volumes.iter().any(|v| v.name == volume))
    }

    /// Ends the reservation [`View::reserve_incoming`] made for container `name`, if any.
    pub fn release_incoming(&mut self, name: &str) {
        if let Some(old) = self.incoming.remove(name) {
            self.add_load(&old.node, &old, false);
        }
    }

    /// Adds (or takes away) a container's share of its node's load.
    fn count_load(&mut self, c: &ContainerRecord, add: bool) {
        self.add_load(&c.node, c, add);
        if shares_host(c) {
            if add {
                self.with_host_config.insert(c.name.clone());
            } else if !self.containers.get(&c.name).is_some_and(shares_host) {
                self.with_host_config.remove(&c.name);
            }
        }
    }

    /// Adds (or takes away) `c`'s limits, slot, name and ports on `node`, in `loads`, `hosted`
    /// and the cached candidates.
    fn add_load(&mut self, node: &str, c: &ContainerRecord, add: bool) {
        let here = self.hosted.entry(node.to_string()).or_default();
        let me = herd_sched::Hosted { name: c.name.clone(), image: c.image.clone() };
        if add {
            here.push(me.clone());
        } else {
            remove_one(here, &me);
        }
        if here.is_empty() {
            self.hosted.remove(node);
        }
        let load = self.loads.entry(node.to_string()).or_default();
        let (cpus, memory) = (c.limits.cpus_milli.unwrap_or(0), c.limits.memory_bytes.unwrap_or(0));
        if add {
            load.0.cpus_milli += cpus;
            load.0.memory_bytes += memory;
            load.1 += 1;
        } else {
            load.0.cpus_milli = load.0.cpus_milli.saturating_sub(cpus);
            load.0.memory_bytes = load.0.memory_bytes.saturating_sub(memory);
            load.1 = load.1.saturating_sub(1);
        }
        let (allocated, containers) = *load;
        if containers == 0 {
            self.loads.remove(node);
        }
        if let Some(cache) = &mut self.placement_cache
            && let Some(candidate) = cache.index.get(node).map(|i| &mut cache.candidates[*i])
        {
            (candidate.allocated, candidate.containers) = (allocated, containers);
            if add {
                candidate.hosted.push(me);
                candidate.ports.extend(c.host.ports.iter().copied());
            } else {
                remove_one(&mut candidate.hosted, &me);
                for p in &c.host.ports {
                    remove_one(&mut candidate.ports, p);
                }
            }
        }
        if !c.host.volumes.is_empty() {
            // A volume stays on its node while any container uses it: the cache is rebuilt.
            self.placement_cache = None;
        }
    }

    /// A node's labels as placement and `herd nodes` see them: its own, with the operator's over them.
    pub fn labels_of(&self, n: &NodeEntry) -> std::collections::BTreeMap<String, String> {
        match self.settings.get(&n.record.name) {
            Some(s) => s.merge_labels(&n.record.labels),
            None => n.record.labels.clone(),
        }
    }

    pub fn availability_of(&self, node: &str) -> Availability {
        self.settings.get(node).map(|s| s.availability).unwrap_or_default()
    }

    pub fn node_ready(&self, name: &str) -> bool {
        self.nodes.get(name).is_some_and(|n| n.state == NodeState::Ready)
    }

    /// Resources reserved on each node by the limits of its containers, and their count.
    pub fn allocations(&self) -> HashMap<&str, (Resources, usize)> {
        self.loads.iter().map(|(node, load)| (node.as_str(), *load)).collect()
    }

    /// Every node as placement sees it for `req`, in no particular order (placement breaks
    /// ties by name). A node's `containerslots` label (as in Docker Swarm) caps how many
    /// containers it takes. The containers each node hosts are listed only when `req` has
    /// affinities or joins another container's network: copying them costs a pass over every
    /// container, which other placements need not pay.
    pub fn candidates(&self, req: &herd_sched::Request) -> Vec<herd_sched::Candidate> {
        self.candidates_with(!req.affinities.is_empty() || req.network_of.is_some())
    }

    /// Every node as placement sees it, with the containers each hosts if `with_hosted`.
    fn candidates_with(&self, with_hosted: bool) -> Vec<herd_sched::Candidate> {
        let allocations = &self.loads;
        // Published ports and named volumes in use, per node (port and dependency filters).
        let mut shared: HashMap<&str, (Vec<herd_proto::hostconfig::PortMapping>, std::collections::BTreeSet<String>)> =
            HashMap::new();
        let incoming = self.incoming.values().filter(|c| shares_host(c));
        for c in self.with_host_config.iter().filter_map(|name| self.containers.get(name)).chain(incoming) {
            let e = shared.entry(c.node.as_str()).or_default();
            e.0.extend(c.host.ports.iter().copied());
            e.1.extend(c.host.volumes.iter().map(|v| v.name.clone()));
        }
        let out: Vec<herd_sched::Candidate> = self
            .nodes
            .values()
            .map(|n| {
                let (allocated, containers) = allocations.get(&n.record.name).copied().unwrap_or_default();
                let labels = self.labels_of(n);
                let (ports, volumes) = shared.remove(n.record.name.as_str()).unwrap_or_default();
                herd_sched::Candidate {
                    name: n.record.name.clone(),
                    ready: n.state == NodeState::Ready,
                    draining: self.availability_of(&n.record.name) == Availability::Drain,
                    capacity: n.record.capacity,
                    allocated,
                    containers,
                    hosted: match self.hosted.get(&n.record.name) {
                        Some(h) if with_hosted => h.clone(),
                        _ => Vec::new(),
                    },
                    max_containers: labels.get("containerslots").and_then(|v| v.parse().ok()),
                    labels,
                    facts: placement_facts(&n.record.facts),
                    ports,
                    volumes,
                    address: Some(n.record.address),
                }
            })
            .collect();
        out
    }

    pub fn node_info(&self, allocations: &HashMap<&str, (Resources, usize)>, n: &NodeEntry) -> NodeInfo {
        let (allocated, containers) = allocations.get(n.record.name.as_str()).copied().unwrap_or_default();
        NodeInfo {
            name: n.record.name.clone(),
            state: n.state,
            availability: self.availability_of(&n.record.name),
            address: n.record.address,
            labels: self.labels_of(n),
            capacity: n.record.capacity,
            allocated,
            usage: n.usage,
            containers,
            facts: n.record.facts.clone(),
            last_heartbeat: n.last_heartbeat.map(|(_, t)| t),
        }
    }

    pub fn container_info(&self, c: &ContainerRecord) -> ContainerInfo {
        let status = self.status_of(c);
        ContainerInfo {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            image_id: c.image_id.clone(),
            node: c.node.clone(),
            ip: c.ip,
            state: status.map(|s| s.state).unwrap_or(ContainerState::Created),
            node_down: !self.node_ready(&c.node),
            desired: c.desired,
            limits: c.limits,
            args: c.args.clone(),
            env: c.env.clone(),
            user: c.user.clone(),
            working_dir: c.working_dir.clone(),
            exposed_ports: c.exposed_ports.clone(),
            labels: c.labels.clone(),
            pid: status.and_then(|s| s.pid),
            created_at: c.created_at,
            started_at: status.and_then(|s| s.started_at),
            finished_at: status.and_then(|s| s.finished_at),
            exit_code: status.and_then(|s| s.exit_code),
            error: status.and_then(|s| s.error.clone()),
            checkpoints: c.checkpoints.clone(),
            migrations: c.migrations.clone(),
            host: c.host.clone(),
            ha: c.ha,
            versions: c.versions.clone(),
            generation: c.generation,
        }
    }

    pub fn container_summary<'v>(&'v self, c: &'v ContainerRecord) -> ContainerSummary<'v> {
        let status = self.status_of(c);
        ContainerSummary {
            name: Cow::Borrowed(&c.name),
            image: Cow::Borrowed(&c.image),
            args: Cow::Borrowed(&c.args),
            node: Cow::Borrowed(&c.node),
            ip: c.ip,
            state: status.map(|s| s.state).unwrap_or(ContainerState::Created),
            node_down: !self.node_ready(&c.node),
            created_at: c.created_at,
            started_at: status.and_then(|s| s.started_at),
            finished_at: status.and_then(|s| s.finished_at),
            exit_code: status.and_then(|s| s.exit_code),
            ports: Cow::Borrowed(&c.host.ports),
        }
    }

    pub fn state_of(&self, c: &ContainerRecord) -> ContainerState {
        self.status_of(c).map(|s| s.state).unwrap_or(ContainerState::Created)
    }

    /// Records a heartbeat; returns true when the node just became ready.
    pub fn heartbeat(&mut self, node: &str, at: UnixMillis, usage: NodeUsage) -> bool {
        let now = Instant::now();
        match self.nodes.get_mut(node) {
            Some(n) => {
                n.last_heartbeat = Some((now, at));
                n.usage = Some(usage);
                let was = n.state;
                n.state = NodeState::Ready;
                if was != NodeState::Ready {
                    self.placement_cache = None;
                }
                was != NodeState::Ready
            }
            None => {
                self.early_heartbeats.insert(node.to_string(), (now, at, usage));
                false
            }
        }
    }

    /// Adds or replaces a node registration.
    pub fn register(&mut self, record: NodeRecord) {
        self.placement_cache = None;
        let name = record.name.clone();
        let early = self.early_heartbeats.remove(&name);
        let entry = self.nodes.entry(name).or_insert_with(|| NodeEntry {
            record: record.clone(),
            last_heartbeat: None,
            usage: None,
            state: NodeState::Down,
        });
        entry.record = record;
        if let Some((when, at, usage)) = early {
            entry.last_heartbeat = Some((when, at));
            entry.usage = Some(usage);
            entry.state = NodeState::Ready;
        }
    }

    /// Marks nodes without a recent heartbeat down; returns the names that just went down.
    pub fn expire(&mut self, timeout: Duration) -> Vec<String> {
        let mut down = Vec::new();
        for n in self.nodes.values_mut() {
            let alive = n.last_heartbeat.is_some_and(|(t, _)| t.elapsed() < timeout);
            if !alive && n.state == NodeState::Ready {
                n.state = NodeState::Down;
                down.push(n.record.name.clone());
            }
        }
        if !down.is_empty() {
            self.placement_cache = None;
        }
        down
    }
}

/// Removes one element equal to `x`, if any (order is not kept: placement does not depend on it).
fn remove_one<T: PartialEq>(v: &mut Vec<T>, x: &T) {
    if let Some(i) = v.iter().position(|y| y == x) {
        v.swap_remove(i);
    }
}

/// A move's hold on its destination's resources (see [`View::reserve_incoming`]), released
/// when the move ends, however it ends: by then the container's record names the node it is on.
pub struct Reservation<'a> {
    pub view: &'a std::sync::RwLock<View>,
    pub container: &'a str,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.view.write().unwrap().release_incoming(self.container);
    }
}

/// Whether a container holds something of its node's besides resources: published ports or
/// named volumes (the port and dependency filters look at those).
fn shares_host(c: &ContainerRecord) -> bool {
    !c.host.ports.is_empty() || !c.host.volumes.is_empty()
}

/// A node's facts as placement constraints see them: all but its CPU flags, which no
/// constraint names and which are a hundred strings to copy per node and placement.
fn placement_facts(f: &herd_proto::state::NodeFacts) -> herd_proto::state::NodeFacts {
    herd_proto::state::NodeFacts {
        arch: f.arch.clone(),
        os: f.os.clone(),
        kernel: f.kernel.clone(),
        runc_version: f.runc_version.clone(),
        criu_version: f.criu_version.clone(),
        criu_features: f.criu_features.clone(),
        cgroup_version: f.cgroup_version,
        cpu_flags: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            id: "c".into(),
            node: "n1".into(),
            state,
            pid: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            updated_at: 0,
        }
    }

    fn record(name: &str, node: &str, memory: u64) -> ContainerRecord {
        ContainerRecord {
            id: format!("id-{name}"),
            name: name.into(),
            image: "busybox:latest".into(),
            image_id: "i".into(),
            node: node.into(),
            ip: std::net::Ipv4Addr::new(10, 0, 0, 1),
            limits: herd_proto::state::Limits { memory_bytes: Some(memory), ..Default::default() },
            args: Vec::new(),
            env: Vec::new(),
            working_dir: "/".into(),
            user: String::new(),
            exposed_ports: Vec::new(),
            labels: Default::default(),
            created_at: 0,
            desired: herd_proto::state::Desired::Running,
            checkpoints: Vec::new(),
            migrations: Vec::new(),
            host: Default::default(),
            placement: Default::default(),
            ha: Default::default(),
            versions: Vec::new(),
            generation: 0,
            rescheduled_from: None,
        }
    }

    #[test]
    fn node_loads_follow_inserts_moves_and_removals() {
        let mut v = View::default();
        v.insert_container(record("a", "n1", 100));
        v.insert_container(record("b", "n1", 50));
        v.insert_container(record("c", "n2", 10));
        assert_eq!(v.allocations()["n1"], (Resources { cpus_milli: 0, memory_bytes: 150 }, 2));
        // A migration rewrites the record with another node.
        v.insert_container(record("a", "n2", 100));
        assert_eq!(v.allocations()["n1"], (Resources { cpus_milli: 0, memory_bytes: 50 }, 1));
        assert_eq!(v.allocations()["n2"], (Resources { cpus_milli: 0, memory_bytes: 110 }, 2));
        v.remove_container("b");
        assert!(!v.allocations().contains_key("n1"));
        v.remove_container("missing");
        assert_eq!(v.allocations()["n2"].1, 2);
    }

    fn ready_node(v: &mut View, name: &str) {
        v.register(NodeRecord {
            name: name.into(),
            address: std::net::Ipv4Addr::new(10, 0, 0, 2),
            labels: Default::default(),
            capacity: Resources { cpus_milli: 1000, memory_bytes: 1000 },
            facts: Default::default(),
            agent_version: "test".into(),
            registered_at: 0,
        });
        v.heartbeat(name, 0, NodeUsage::default());
    }

    #[test]
    fn cached_placement_follows_containers_nodes_and_settings() {
        let mut v = View::default();
        ready_node(&mut v, "n1");
        let req = herd_sched::Request { memory_bytes: 400, ..Default::default() };
        let spread = herd_sched::Strategy::Spread;
        assert_eq!(v.place(&req, spread).unwrap(), "n1");
        v.insert_container(record("a", "n1", 400));
        v.insert_container(record("b", "n1", 400));
        // n1 is full, as the cache must know without being rebuilt.
        let err = v.place(&req, spread).unwrap_err().to_string();
        assert!(err.contains("not enough memory"), "{err}");
        // A node that registers is seen; so is one that drains.
        ready_node(&mut v, "n2");
        assert_eq!(v.place(&req, spread).unwrap(), "n2");
        v.settings.insert("n2".into(), NodeSettings { availability: Availability::Drain, ..Default::default() });
        v.nodes_changed();
        assert!(v.place(&req, spread).is_err());
        // Room made on n1 by a removal and by a migration away.
        v.remove_container("a");
        assert_eq!(v.place(&req, spread).unwrap(), "n1");
        v.insert_container(record("c", "n1", 400));
        v.insert_container(record("b", "n2", 400));
        assert_eq!(v.place(&req, spread).unwrap(), "n1");
        // A node that stops sending heartbeats goes down and out of placement.
        v.nodes.get_mut("n1").unwrap().last_heartbeat = None;
        assert_eq!(v.expire(Duration::from_secs(1)), ["n1"]);
        assert!(v.place(&req, spread).is_err());
    }

    #[test]
    fn a_move_holds_its_destination_until_it_ends() {
        let mut v = View::default();
        ready_node(&mut v, "n1");
        ready_node(&mut v, "n2");
        let req = herd_sched::Request { memory_bytes: 600, node: Some("n2".into()), ..Default::default() };
        let spread = herd_sched::Strategy::Spread;
        v.insert_container(record("a", "n1", 600));
        assert_eq!(v.place(&req, spread).unwrap(), "n2");
        // "a" is on its way to n2: n2 has no room for another 600 until the move ends.
        let mut moving = record("a", "n2", 600);
        v.reserve_incoming(moving.clone());
        let err = v.place(&req, spread).unwrap_err().to_string();
        assert!(err.contains("not enough memory"), "{err}");
        assert_eq!(v.allocations()["n2"], (Resources { cpus_milli: 0, memory_bytes: 600 }, 1));
        // Reserving again (a retry) replaces the hold rather than adding to it.
        moving.limits.memory_bytes = Some(500);
        v.reserve_incoming(moving);
        assert_eq!(v.allocations()["n2"].0.memory_bytes, 500);
        // It arrives: its record names n2, and the hold ends without counting it twice.
        v.insert_container(record("a", "n2", 500));
        v.release_incoming("a");
        assert_eq!(v.allocations()["n2"], (Resources { cpus_milli: 0, memory_bytes: 500 }, 1));
        assert!(!v.allocations().contains_key("n1"));
        // A move that fails ends its hold too: the container stays where it was.
        v.reserve_incoming(record("a", "n1", 500));
        v.release_incoming("a");
        v.release_incoming("a");
        assert!(!v.allocations().contains_key("n1"));
        assert_eq!(v.allocations()["n2"].1, 1);
    }

    #[test]
    fn reserved_ports_keep_other_moves_away() {
        let mut v = View::default();
        ready_node(&mut v, "n1");
        let port = herd_proto::hostconfig::PortMapping::parse("8080:80").unwrap();
        let req = herd_sched::Request { ports: vec![port], ..Default::default() };
        let spread = herd_sched::Strategy::Spread;
        assert_eq!(v.place(&req, spread).unwrap(), "n1");
        let mut moving = record("web", "n1", 0);
        moving.host.ports.push(port);
        v.reserve_incoming(moving);
        let err = v.place(&req, spread).unwrap_err().to_string();
        assert!(err.contains("port filter"), "{err}");
        v.release_incoming("web");
        assert_eq!(v.place(&req, spread).unwrap(), "n1");
    }

    #[test]
    fn cached_candidates_follow_hosted_containers_and_ports() {
        let mut v = View::default();
        ready_node(&mut v, "n1");
        ready_node(&mut v, "n2");
        let spread = herd_sched::Strategy::Spread;
        let next_to_web = herd_sched::Request::default().with_expressions(&[], &["container==web".into()]).unwrap();
        let away_from_web = herd_sched::Request::default().with_expressions(&[], &["container!=web".into()]).unwrap();
        assert!(v.place(&next_to_web, spread).is_err());
        v.insert_container(record("web", "n2", 0));
        v.insert_container(record("other", "n1", 0));
        assert_eq!(v.place(&next_to_web, spread).unwrap(), "n2");
        assert_eq!(v.place(&away_from_web, spread).unwrap(), "n1");
        // web moves: the cache follows without being rebuilt.
        v.insert_container(record("web", "n1", 0));
        assert_eq!(v.place(&next_to_web, spread).unwrap(), "n1");
        assert_eq!(v.place(&away_from_web, spread).unwrap(), "n2");
        v.remove_container("web");
        assert!(v.place(&next_to_web, spread).is_err());
        // Published ports come and go in place too, one container's at a time.
        let port = herd_proto::hostconfig::PortMapping::parse("8080:80").unwrap();
        let wants_port = herd_sched::Request { ports: vec![port], node: Some("n1".into()), ..Default::default() };
        let mut a = record("a", "n1", 0);
        a.host.ports.push(port);
        v.insert_container(a.clone());
        assert!(v.place(&wants_port, spread).unwrap_err().to_string().contains("port filter"));
        v.insert_container(a);
        assert!(v.place(&wants_port, spread).is_err(), "rewriting a record keeps its port taken");
        v.remove_container("a");
        assert_eq!(v.place(&wants_port, spread).unwrap(), "n1");
        // What the cache holds is what a fresh build holds.
        let fresh = v.candidates_with(true);
        let cached = &v.placement_cache.as_ref().unwrap().candidates;
        for c in cached {
            let f = fresh.iter().find(|f| f.name == c.name).unwrap();
            assert_eq!(
                (&c.hosted, &c.ports, c.containers, c.allocated),
                (&f.hosted, &f.ports, f.containers, f.allocated)
            );
        }
    }

    #[test]
    fn late_status_events_do_not_win() {
        let mut v = View::default();
        assert!(v.apply_status("n1", "c", Some(status(ContainerState::Exited)), 7).0);
        // The watch delivers the older "running" write after the direct read of "exited".
        assert!(!v.apply_status("n1", "c", Some(status(ContainerState::Running)), 5).0);
        assert_eq!(v.statuses["c"]["n1"].state, ContainerState::Exited);
        assert!(v.apply_status("n1", "c", None, 9).0);
        assert!(!v.apply_status("n1", "c", Some(status(ContainerState::Running)), 8).0);
        assert!(!v.statuses.contains_key("c"));
    }

    #[test]
    fn a_container_s_status_is_the_one_its_node_published() {
        let mut v = View::default();
        let mut record: ContainerRecord = serde_json::from_value(serde_json::json!({
            "id": "c", "name": "web", "image": "busybox", "image_id": "i", "node": "n1",
            "ip": "10.0.0.1", "limits": {}, "args": [], "env": [], "working_dir": "/", "labels": {},
            "created_at": 0, "desired": "running", "checkpoints": []
        }))
        .unwrap();
        v.apply_status("n1", "c", Some(status(ContainerState::Running)), 1);
        // The destination of a migration publishes its own before the record moves to it.
        let on_n2 =
            ContainerStatus { node: "n2".into(), state: ContainerState::Created, ..status(ContainerState::Running) };
        v.apply_status("n2", "c", Some(on_n2), 2);
        assert_eq!(v.state_of(&record), ContainerState::Running);
        record.node = "n2".into();
        assert_eq!(v.state_of(&record), ContainerState::Created);
        // The source forgetting its own leaves the destination's.
        v.apply_status("n1", "c", None, 3);
        assert_eq!(v.status_of(&record).map(|s| s.node.as_str()), Some("n2"));
        // A status written under one node's key that names another is not taken.
        let forged = ContainerStatus { node: "n3".into(), ..status(ContainerState::Exited) };
        assert!(!v.apply_status("n2", "c", Some(forged), 4).0);
        assert_eq!(v.state_of(&record), ContainerState::Created);
        assert_eq!(v.forget_statuses("c"), ["n2"]);
        assert_eq!(v.status_of(&record), None);
    }
}
