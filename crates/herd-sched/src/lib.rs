//! Placement: which node runs a new container.
//!
//! Pure logic, no I/O, shared by the Control node and the simulator. A placement runs the
//! request through filters (which nodes *may* run it) and ranks the survivors with a strategy
//! (which node *should*). When no node survives, the error says which filter excluded which node,
//! as Docker Swarm's and Nomad's placement failures do.
//!
//! ```
//! use herd_sched::{place, Candidate, Request, Strategy};
//! use herd_proto::state::Resources;
//! let nodes = vec![
//!     Candidate::new("n1", Resources { cpus_milli: 2000, memory_bytes: 1 << 30 }),
//!     Candidate::new("n2", Resources { cpus_milli: 2000, memory_bytes: 1 << 30 }),
//! ];
//! let mut req = Request::default();
//! req.memory_bytes = 256 << 20;
//! assert_eq!(place(&nodes, &req, Strategy::Spread).unwrap(), "n1");
//! ```

pub mod expr;
pub mod migration;
pub mod sharing;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use herd_proto::hostconfig::PortMapping;
use herd_proto::state::{NodeFacts, Resources};
use herd_proto::units;

pub use expr::{Affinity, Constraint, Key, ParseError};

/// A container already on a node, as affinities see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosted {
    pub name: String,
    /// Normalised image name (`redis:latest`).
    pub image: String,
}

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub ready: bool,
    /// The operator drains it (`herd nodes drain`): no new containers.
    pub draining: bool,
    pub capacity: Resources,
    /// Sum of the limits of the containers already placed there.
    pub allocated: Resources,
    /// Containers already placed there.
    pub containers: usize,
    /// Which containers those are (for affinities).
    pub hosted: Vec<Hosted>,
    pub labels: BTreeMap<String, String>,
    pub facts: NodeFacts,
    /// At most this many containers on the node, when set.
    pub max_containers: Option<usize>,
    /// Ports its containers publish (for the `port` filter).
    pub ports: Vec<PortMapping>,
    /// Named volumes its containers use (for the `dependency` filter).
    pub volumes: BTreeSet<String>,
    /// The node's address: a port published on a given host IP needs it to be this one.
    pub address: Option<Ipv4Addr>,
}

impl Candidate {
    /// A ready, empty node.
    pub fn new(name: &str, capacity: Resources) -> Self {
        Candidate {
            name: name.to_string(),
            ready: true,
            draining: false,
            capacity,
            allocated: Resources::default(),
            containers: 0,
            hosted: Vec::new(),
            labels: BTreeMap::new(),
            facts: NodeFacts::default(),
            max_containers: None,
            ports: Vec::new(),
            volumes: BTreeSet::new(),
            address: None,
        }
    }

    fn soft_score(&self, req: &Request) -> usize {
        req.affinities.iter().filter(|a| a.soft && affinity_holds(self, a)).count()
    }

    fn free(&self) -> Resources {
        Resources {
            cpus_milli: self.capacity.cpus_milli.saturating_sub(self.allocated.cpus_milli),
            memory_bytes: self.capacity.memory_bytes.saturating_sub(self.allocated.memory_bytes),
        }
    }
}

/// What a container asks of its node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Thousandths of a CPU reserved (its CPU limit), 0 when unlimited.
    pub cpus_milli: u64,
    /// Bytes of memory reserved (its memory limit), 0 when unlimited.
    pub memory_bytes: u64,
    /// The node the user asked for, if any.
    pub node: Option<String>,
    /// Every one must hold on the chosen node.
    pub constraints: Vec<Constraint>,
    /// Hard ones must hold on the chosen node; soft ones rank the nodes that pass.
    pub affinities: Vec<Affinity>,
    /// Host ports to publish: free on the chosen node.
    pub ports: Vec<PortMapping>,
    /// The container whose network namespace it joins: the chosen node runs it.
    pub network_of: Option<String>,
    /// Named volumes it mounts: the chosen node holds those other containers use.
    pub volumes: Vec<String>,
    /// Named volumes that move with it (a migration): the chosen node has no other volume of
    /// those names in use.
    pub moving_volumes: Vec<String>,
}

impl Request {
    /// Adds the constraint and affinity expressions, failing on the first malformed one.
    pub fn with_expressions(mut self, constraints: &[String], affinities: &[String]) -> Result<Self, ParseError> {
        for c in constraints {
            self.constraints.push(Constraint::parse(c)?);
        }
        for a in affinities {
            self.affinities.push(Affinity::parse(a)?);
        }
        Ok(self)
    }
}

/// How the nodes that pass the filters are ranked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Fewest containers first (then most free memory): spreads load and failure risk.
    #[default]
    Spread,
    /// Most allocated first: fills nodes before opening new ones.
    Binpack,
    /// Any node that passes, drawn from `seed` (the caller picks it: fixed in tests).
    Random { seed: u64 },
}

impl Strategy {
    /// `spread`, `binpack` or `random` (seeded with `seed`).
    pub fn parse(name: &str, seed: u64) -> Result<Strategy, ParseError> {
        match name {
            "spread" => Ok(Strategy::Spread),
            "binpack" => Ok(Strategy::Binpack),
            "random" => Ok(Strategy::Random { seed }),
            _ => Err(ParseError(format!("invalid strategy {name:?}: use spread, binpack or random"))),
        }
    }
}

/// Why one node was excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    pub node: String,
    /// The filter that excluded it: `node`, `health`, `availability`, `constraint`, `affinity`,
    /// `dependency`, `port`, `slots`, `resources`.
    pub filter: &'static str,
    pub reason: String,
}

/// No node can run the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementError {
    pub exclusions: Vec<Exclusion>,
    /// Labels a constraint requires that no node has at all (likely a typo).
    pub unknown_labels: Vec<String>,
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclusions.is_empty() {
            return write!(f, "no node can run this container: the cluster has no nodes");
        }
        write!(f, "no node can run this container: ")?;
        for l in &self.unknown_labels {
            write!(f, "no node has label {l}; ")?;
        }
        for (i, e) in self.exclusions.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{} ({} filter: {})", e.node, e.filter, e.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for PlacementError {}

/// A rejection: the filter's name and, when explaining, why.
type Rejection = (&'static str, String);

type Filter = fn(&Candidate, &Request, &Ctx) -> Result<(), Rejection>;

/// Whether a filter has anything to check for a request.
type Applies = fn(&Request) -> bool;

/// What every filter sees besides the node and the request.
struct Ctx<'a> {
    cluster: sharing::Cluster<'a>,
    /// Whether rejections carry their reason. Placement first filters without (formatting a
    /// reason for each of a thousand nodes costs more than the filters themselves), and
    /// explains only when no node is left.
    explain: bool,
}

impl Ctx<'_> {
    fn reject(&self, filter: &'static str, why: impl FnOnce() -> String) -> Rejection {
        (filter, if self.explain { why() } else { String::new() })
    }
}

fn node_filter(c: &Candidate, r: &Request, ctx: &Ctx) -> Result<(), Rejection> {
    match &r.node {
        Some(n) if *n != c.name => Err(ctx.reject("node", || format!("not the requested node {n}"))),
        _ => Ok(()),
    }
}

fn health_filter(c: &Candidate, _: &Request, ctx: &Ctx) -> Result<(), Rejection> {
    if c.ready { Ok(()) } else { Err(ctx.reject("health", || "node is down".to_string())) }
}

fn availability_filter(c: &Candidate, _: &Request, ctx: &Ctx) -> Result<(), Rejection> {
    if c.draining { Err(ctx.reject("availability", || format!("node {} is draining", c.name))) } else { Ok(()) }
}

fn resources_filter(c: &Candidate, r: &Request, ctx: &Ctx) -> Result<(), Rejection> {
    let free = c.free();
    if r.memory_bytes > free.memory_bytes {
        return Err(ctx.reject("resources", || {
            format!(
                "not enough memory: requested {}, free {} of {}",
                units::Bytes(r.memory_bytes),
                units::Bytes(free.memory_bytes),
                units::Bytes(c.capacity.memory_bytes)
            )
        }));
    }
    if r.cpus_milli > free.cpus_milli {
        return Err(ctx.reject("resources", || {
            format!(
                "not enough CPU: requested {}, free {} of {}",
                units::Cpus(r.cpus_milli),
                units::Cpus(free.cpus_milli),
                units::Cpus(c.capacity.cpus_milli)
            )
        }));
    }
    Ok(())
}

fn constraint_filter(c: &Candidate, r: &Request, ctx: &Ctx) -> Result<(), Rejection> {
    for k in &r.constraints {
        let actual = k.key.value_of(&c.name, &c.labels, &c.facts);
        if !k.matches(actual.as_deref()) {
            return Err(ctx.reject("constraint", || match (&k.key, actual) {
                (Key::Label(l), None) => format!("{k} not met: node has no label {l}"),
                (_, Some(v)) => format!("{k} not met: {} is {v}", k.key),
                (_, None) => format!("{k} not met"),
            }));
        }
    }
    Ok(())
}

fn affinity_holds(c: &Candidate, a: &Affinity) -> bool {
    c.hosted.iter().any(|h| a.hits(&h.name, &h.image)) == a.together
}

fn affinity_filter(c: &Candidate, r: &Request, ctx: &Ctx) -> Result<(), Rejection> {
    for a in r.affinities.iter().filter(|a| !a.soft) {
        if !affinity_holds(c, a) {
            return Err(ctx.reject("affinity", || {
                let what = match a.target {
                    expr::Target::Container => "container",
                    expr::Target::Image => "container of image",
                };
                let why = if a.together {
                    format!("runs no {what} {}", a.value)
                } else {
                    format!("runs a {what} {}", a.value)
                };
                format!("{a} not met: node {why}")
            }));
        }
    }
    Ok(())
}

fn slots_filter(c: &Candidate, _: &Request, ctx: &Ctx) -> Result<(), Rejection> {
    match c.max_containers {
        Some(max) if c.containers >= max => {
            Err(ctx.reject("slots", || format!("full: {} of {max} containers", c.containers)))
        }
        _ => Ok(()),
    }
}

/// Every filter in the order a node meets them (the first to reject it is the one reported),
/// with whether it has anything to check for a request. A filter without (no constraint, no
/// requested port, ...) passes every node and is left out of the pass over the nodes.
const FILTERS: [(Filter, Applies); 9] = [
    (node_filter, |r| r.node.is_some()),
    (health_filter, |_| true),
    (availability_filter, |_| true),
    (constraint_filter, |r| !r.constraints.is_empty()),
    (affinity_filter, |r| r.affinities.iter().any(|a| !a.soft)),
    (sharing::dependency_filter, |r| r.network_of.is_some() || !r.volumes.is_empty() || !r.moving_volumes.is_empty()),
    (sharing::port_filter, |r| !r.ports.is_empty()),
    (slots_filter, |_| true),
    (resources_filter, |_| true),
];

/// Which of [`FILTERS`] can exclude a node for `req`.
fn filters_for(req: &Request) -> [bool; FILTERS.len()] {
    FILTERS.map(|(_, applies)| applies(req))
}

/// The first filter in use that rejects `c`, if any: a filter left out costs a branch, not a call.
fn first_rejection(c: &Candidate, req: &Request, ctx: &Ctx, on: &[bool; FILTERS.len()]) -> Result<(), Rejection> {
    FILTERS.iter().zip(on).filter(|(_, on)| **on).try_for_each(|((f, _), _)| f(c, req, ctx))
}

/// Nodes that may run the request, and why the others may not.
pub fn filter<'a>(nodes: &'a [Candidate], req: &Request) -> (Vec<&'a Candidate>, Vec<Exclusion>) {
    let mut ok = Vec::new();
    let mut excluded = Vec::new();
    let ctx = Ctx { cluster: sharing::Cluster::of(nodes, req), explain: true };
    let on = filters_for(req);
    for c in nodes {
        match first_rejection(c, req, &ctx, &on) {
            Ok(()) => ok.push(c),
            Err((filter, reason)) => {
                // A node the user did not ask for is not worth reporting.
                if filter != "node" {
                    excluded.push(Exclusion { node: c.name.clone(), filter, reason });
                }
            }
        }
    }
    (ok, excluded)
}

fn rank(strategy: Strategy, a: &Candidate, b: &Candidate) -> Ordering {
    // Names only break ties: compared last, and only when needed.
    let by_name = || a.name.cmp(&b.name);
    match strategy {
        // Random draws among the best soft-affinity score in `place`; here only names order.
        Strategy::Random { .. } => by_name(),
        Strategy::Spread => a
            .containers
            .cmp(&b.containers)
            .then_with(|| b.free().memory_bytes.cmp(&a.free().memory_bytes))
            .then_with(by_name),
        Strategy::Binpack => b
            .allocated
            .memory_bytes
            .cmp(&a.allocated.memory_bytes)
            .then(b.allocated.cpus_milli.cmp(&a.allocated.cpus_milli))
            .then(b.containers.cmp(&a.containers))
            .then_with(by_name),
    }
}

/// SplitMix64: a well-mixed index from a seed, without a dependency.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Picks the node for `req`: the nodes that pass every filter, ranked by how many soft
/// affinities they meet, then by the strategy. Ties are broken by node name, so placement is
/// deterministic (for `Random`, given the seed).
pub fn place(nodes: &[Candidate], req: &Request, strategy: Strategy) -> Result<String, PlacementError> {
    // One pass without reasons: a placement looks at every node, so nothing here allocates
    // per node. Reasons are worked out only when no node is left.
    let ctx = Ctx { cluster: sharing::Cluster::of(nodes, req), explain: false };
    let on = filters_for(req);
    let passing = nodes.iter().filter(|c| first_rejection(c, req, &ctx, &on).is_ok());
    let chosen = match strategy {
        Strategy::Random { seed } => {
            let scored: Vec<(usize, &Candidate)> = passing.map(|c| (c.soft_score(req), c)).collect();
            let best = scored.iter().map(|(s, _)| *s).max();
            let mut pool: Vec<&Candidate> =
                scored.into_iter().filter(|(s, _)| Some(*s) == best).map(|(_, c)| c).collect();
            pool.sort_by(|a, b| a.name.cmp(&b.name));
            (!pool.is_empty()).then(|| pool[(mix(seed) % pool.len() as u64) as usize])
        }
        // The most soft affinities met, then the strategy's best.
        _ => passing
            .map(|c| (c.soft_score(req), c))
            .max_by(|(sa, a), (sb, b)| sa.cmp(sb).then_with(|| rank(strategy, b, a)))
            .map(|(_, c)| c),
    };
    if let Some(c) = chosen {
        return Ok(c.name.clone());
    }
    if let Some(wanted) = &req.node
        && !nodes.iter().any(|c| &c.name == wanted)
    {
        return Err(PlacementError {
            exclusions: vec![Exclusion { node: wanted.clone(), filter: "node", reason: "no such node".to_string() }],
            unknown_labels: Vec::new(),
        });
    }
    let mut unknown_labels: Vec<String> = req
        .constraints
        .iter()
        .filter_map(|k| match &k.key {
            Key::Label(l) if k.equal && !nodes.iter().any(|c| c.labels.contains_key(l)) => Some(l.clone()),
            _ => None,
        })
        .collect();
    unknown_labels.dedup();
    Err(PlacementError { exclusions: filter(nodes, req).1, unknown_labels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Strategy as _, any, prop_assert, prop_assert_eq, proptest};

    fn node(name: &str, mem_gib: u64, containers: usize) -> Candidate {
        let mut c = Candidate::new(name, Resources { cpus_milli: 2000, memory_bytes: mem_gib << 30 });
        c.containers = containers;
        c
    }

    #[test]
    fn spread_prefers_fewest_containers_then_name() {
        let nodes = vec![node("b", 4, 1), node("a", 4, 1), node("c", 4, 2)];
        assert_eq!(place(&nodes, &Request::default(), Strategy::Spread).unwrap(), "a");
    }

    #[test]
    fn down_and_full_nodes_are_explained() {
        let mut down = node("n1", 4, 0);
        down.ready = false;
        let mut full = node("n2", 1, 0);
        full.allocated.memory_bytes = 900 << 20;
        let req = Request { memory_bytes: 256 << 20, ..Default::default() };
        let err = place(&[down, full], &req, Strategy::Spread).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("n1 (health filter: node is down)"), "{text}");
        assert!(
            text.contains("n2 (resources filter: not enough memory: requested 256MiB, free 124MiB of 1GiB)"),
            "{text}"
        );
    }

    #[test]
    fn draining_nodes_take_nothing_new() {
        let mut drained = node("n1", 4, 0);
        drained.draining = true;
        let nodes = vec![drained, node("n2", 4, 3)];
        assert_eq!(place(&nodes, &Request::default(), Strategy::Spread).unwrap(), "n2");
        let req = Request { node: Some("n1".into()), ..Default::default() };
        let text = place(&nodes, &req, Strategy::Spread).unwrap_err().to_string();
        assert!(text.contains("n1 (availability filter: node n1 is draining)"), "{text}");
    }

    #[test]
    fn requested_node_is_honoured_or_explained() {
        let nodes = vec![node("n1", 4, 0), node("n2", 4, 5)];
        let req = Request { node: Some("n2".into()), ..Default::default() };
        assert_eq!(place(&nodes, &req, Strategy::Spread).unwrap(), "n2");
        let req = Request { node: Some("n9".into()), ..Default::default() };
        assert_eq!(
            place(&nodes, &req, Strategy::Spread).unwrap_err().to_string(),
            "no node can run this container: n9 (node filter: no such node)"
        );
    }

    #[test]
    fn binpack_fills_the_fullest_node() {
        let mut a = node("a", 4, 1);
        a.allocated.memory_bytes = 1 << 30;
        let b = node("b", 4, 0);
        assert_eq!(place(&[b, a], &Request::default(), Strategy::Binpack).unwrap(), "a");
    }

    fn hosted(name: &str, image: &str) -> Hosted {
        Hosted { name: name.into(), image: image.into() }
    }

    fn req(constraints: &[&str], affinities: &[&str]) -> Request {
        let c: Vec<String> = constraints.iter().map(|s| s.to_string()).collect();
        let a: Vec<String> = affinities.iter().map(|s| s.to_string()).collect();
        Request::default().with_expressions(&c, &a).unwrap()
    }

    #[test]
    fn constraints_filter_and_explain() {
        let mut a = node("n1", 4, 0);
        a.labels.insert("zone".into(), "a".into());
        let mut b = node("n2", 4, 0);
        b.labels.insert("zone".into(), "b".into());
        let nodes = vec![a, b];
        assert_eq!(place(&nodes, &req(&["zone==b"], &[]), Strategy::Spread).unwrap(), "n2");
        assert_eq!(place(&nodes, &req(&["node.name!=n1"], &[]), Strategy::Spread).unwrap(), "n2");
        assert_eq!(place(&nodes, &req(&["node.labels.zone==*"], &[]), Strategy::Spread).unwrap(), "n1");
        let text = place(&nodes, &req(&["zone==c"], &[]), Strategy::Spread).unwrap_err().to_string();
        assert!(text.contains("n1 (constraint filter: node.labels.zone==c not met: node.labels.zone is a)"), "{text}");
        let text = place(&nodes, &req(&["rack==r1"], &[]), Strategy::Spread).unwrap_err().to_string();
        assert!(text.starts_with("no node can run this container: no node has label rack; "), "{text}");
        assert!(
            text.contains("n2 (constraint filter: node.labels.rack==r1 not met: node has no label rack)"),
            "{text}"
        );
        // Facts: every test node has the default (empty) arch.
        assert!(place(&nodes, &req(&["node.arch==x86_64"], &[]), Strategy::Spread).is_err());
    }

    #[test]
    fn hard_affinities_filter_soft_ones_rank() {
        let mut a = node("n1", 4, 0);
        a.hosted.push(hosted("web", "nginx:latest"));
        a.containers = 1;
        let b = node("n2", 4, 0);
        let nodes = vec![a, b];
        assert_eq!(place(&nodes, &req(&[], &["container==web"]), Strategy::Spread).unwrap(), "n1");
        assert_eq!(place(&nodes, &req(&[], &["image==nginx"]), Strategy::Spread).unwrap(), "n1");
        assert_eq!(place(&nodes, &req(&[], &["container!=web"]), Strategy::Binpack).unwrap(), "n2");
        assert_eq!(place(&nodes, &req(&[], &["container~=web"]), Strategy::Spread).unwrap(), "n1");
        assert_eq!(place(&nodes, &req(&[], &["container~=nothing"]), Strategy::Spread).unwrap(), "n2");
        let text = place(&nodes, &req(&[], &["container==db"]), Strategy::Spread).unwrap_err().to_string();
        assert!(text.contains("n2 (affinity filter: container==db not met: node runs no container db)"), "{text}");
    }

    #[test]
    fn full_nodes_are_skipped() {
        let mut a = node("n1", 4, 2);
        a.max_containers = Some(2);
        let b = node("n2", 4, 5);
        assert_eq!(place(&[a.clone(), b], &Request::default(), Strategy::Spread).unwrap(), "n2");
        let text = place(&[a], &Request::default(), Strategy::Spread).unwrap_err().to_string();
        assert!(text.contains("n1 (slots filter: full: 2 of 2 containers)"), "{text}");
    }

    #[test]
    fn random_is_deterministic_per_seed_and_uses_every_node() {
        let nodes: Vec<Candidate> = (0..4).map(|i| node(&format!("n{i}"), 4, 0)).collect();
        let pick = |seed| place(&nodes, &Request::default(), Strategy::Random { seed }).unwrap();
        assert_eq!(pick(7), pick(7));
        let seen: std::collections::BTreeSet<String> = (0..64).map(pick).collect();
        assert_eq!(seen.len(), 4);
        assert!(Strategy::parse("random", 1).is_ok() && Strategy::parse("fill", 1).is_err());
    }

    const NAMES: [&str; 3] = ["web", "db", "cache"];

    fn arb_nodes() -> impl proptest::strategy::Strategy<Value = Vec<Candidate>> {
        let node = (any::<bool>(), 0u64..8, 0u64..8, proptest::collection::vec(0usize..3, 0..4), 0u8..3, 0usize..5);
        proptest::collection::vec(node, 0..10).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (ready, cap, alloc, hosted, zone, max))| {
                    let mut c =
                        Candidate::new(&format!("n{i}"), Resources { cpus_milli: 4000, memory_bytes: cap << 28 });
                    c.ready = ready;
                    c.draining = i % 4 == 3;
                    c.containers = hosted.len();
                    c.hosted = hosted
                        .iter()
                        .map(|&h| Hosted { name: NAMES[h].into(), image: format!("{}:latest", NAMES[h]) })
                        .collect();
                    // An empty node has nothing allocated.
                    c.allocated.memory_bytes = if hosted.is_empty() { 0 } else { alloc << 28 };
                    if zone > 0 {
                        c.labels.insert("zone".into(), ["a", "b"][zone as usize - 1].into());
                    }
                    c.max_containers = (max > 0).then_some(max);
                    c
                })
                .collect()
        })
    }

    fn arb_request() -> impl proptest::strategy::Strategy<Value = Request> {
        let constraints = proptest::sample::subsequence(vec!["zone==a", "zone!=b", "node.name!=n0", "rack==x"], 0..3);
        let affinities = proptest::sample::subsequence(
            vec!["container==web", "container!=db", "image==cache", "container~=db", "image~!=web"],
            0..3,
        );
        (0u64..4, constraints, affinities).prop_map(|(mem, c, a)| {
            let mut r = req(&c, &a);
            r.memory_bytes = mem << 28;
            r
        })
    }

    /// An independent statement of the hard filters.
    fn allowed(c: &Candidate, r: &Request) -> bool {
        let zone = c.labels.get("zone").map(String::as_str);
        let hosts = |n: &str| c.hosted.iter().any(|h| h.name == n);
        c.ready
            && !c.draining
            && r.constraints.iter().all(|k| match k.to_string().as_str() {
                "node.labels.zone==a" => zone == Some("a"),
                "node.labels.zone!=b" => zone != Some("b"),
                "node.name!=n0" => c.name != "n0",
                "node.labels.rack==x" => false,
                other => panic!("{other}"),
            })
            && r.affinities.iter().filter(|a| !a.soft).all(|a| match a.to_string().as_str() {
                "container==web" => hosts("web"),
                "container!=db" => !hosts("db"),
                "image==cache" => hosts("cache"),
                other => panic!("{other}"),
            })
            && c.max_containers.is_none_or(|m| c.containers < m)
            && r.memory_bytes <= c.capacity.memory_bytes - c.allocated.memory_bytes.min(c.capacity.memory_bytes)
    }

    proptest! {
        #[test]
        fn placement_never_violates_a_hard_filter(nodes in arb_nodes(), req in arb_request(), which in 0u8..3, seed in any::<u64>()) {
            let strategy = [Strategy::Spread, Strategy::Binpack, Strategy::Random { seed }][which as usize];
            match place(&nodes, &req, strategy) {
                Ok(name) => {
                    let c = nodes.iter().find(|c| c.name == name).unwrap();
                    prop_assert!(allowed(c, &req), "{name} chosen for {req:?}");
                }
                Err(e) => {
                    // Every node is accounted for, and none of them could have taken it.
                    prop_assert_eq!(e.exclusions.len(), nodes.len());
                    for c in &nodes {
                        prop_assert!(!allowed(c, &req), "{} was free for {req:?}", c.name);
                    }
                }
            }
        }

        #[test]
        fn filters_left_out_pass_every_node(nodes in arb_nodes(), req in arb_request()) {
            let ctx = Ctx { cluster: sharing::Cluster::of(&nodes, &req), explain: false };
            for c in &nodes {
                for (f, _) in FILTERS.iter().filter(|(_, applies)| !applies(&req)) {
                    prop_assert!(f(c, &req, &ctx).is_ok(), "a filter left out for {req:?} rejects {}", c.name);
                }
            }
        }

        #[test]
        fn binpack_never_opens_a_node_while_a_used_one_fits(nodes in arb_nodes(), mem in 0u64..4) {
            let req = Request { memory_bytes: mem << 28, ..Default::default() };
            if let Ok(name) = place(&nodes, &req, Strategy::Binpack) {
                let chosen = nodes.iter().find(|c| c.name == name).unwrap();
                let used_fits = nodes.iter().any(|c| c.containers > 0 && allowed(c, &req));
                prop_assert!(chosen.containers > 0 || !used_fits, "opened {name} while a used node fits");
            }
        }

        #[test]
        fn spread_keeps_counts_within_one(n in 1usize..8, k in 0usize..60) {
            let mut nodes: Vec<Candidate> = (0..n).map(|i| node(&format!("n{i}"), 64, 0)).collect();
            for _ in 0..k {
                let name = place(&nodes, &Request::default(), Strategy::Spread).unwrap();
                nodes.iter_mut().find(|c| c.name == name).unwrap().containers += 1;
            }
            let max = nodes.iter().map(|c| c.containers).max().unwrap();
            let min = nodes.iter().map(|c| c.containers).min().unwrap();
            prop_assert!(max - min <= 1);
        }
    }
}
