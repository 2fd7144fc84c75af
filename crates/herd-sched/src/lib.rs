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

pub mod migration;

use std::cmp::Ordering;
use std::fmt;

use herd_proto::state::Resources;
use herd_proto::units;

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub ready: bool,
    pub capacity: Resources,
    /// Sum of the limits of the containers already placed there.
    pub allocated: Resources,
    /// Containers already placed there.
    pub containers: usize,
}

impl Candidate {
    /// A ready, empty node.
    pub fn new(name: &str, capacity: Resources) -> Self {
        Candidate { name: name.to_string(), ready: true, capacity, allocated: Resources::default(), containers: 0 }
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
}

/// How the nodes that pass the filters are ranked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Fewest containers first (then most free memory): spreads load and failure risk.
    #[default]
    Spread,
    /// Most allocated first: fills nodes before opening new ones.
    Binpack,
}

/// Why one node was excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    pub node: String,
    /// The filter that excluded it: `node`, `health`, `resources`.
    pub filter: &'static str,
    pub reason: String,
}

/// No node can run the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementError {
    pub exclusions: Vec<Exclusion>,
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclusions.is_empty() {
            return write!(f, "no node can run this container: the cluster has no nodes");
        }
        write!(f, "no node can run this container: ")?;
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

type Filter = fn(&Candidate, &Request) -> Result<(), (&'static str, String)>;

fn node_filter(c: &Candidate, r: &Request) -> Result<(), (&'static str, String)> {
    match &r.node {
        Some(n) if *n != c.name => Err(("node", format!("not the requested node {n}"))),
        _ => Ok(()),
    }
}

fn health_filter(c: &Candidate, _: &Request) -> Result<(), (&'static str, String)> {
    if c.ready { Ok(()) } else { Err(("health", "node is down".to_string())) }
}

fn resources_filter(c: &Candidate, r: &Request) -> Result<(), (&'static str, String)> {
    let free = c.free();
    if r.memory_bytes > free.memory_bytes {
        return Err((
            "resources",
            format!(
                "not enough memory: requested {}, free {} of {}",
                units::Bytes(r.memory_bytes),
                units::Bytes(free.memory_bytes),
                units::Bytes(c.capacity.memory_bytes)
            ),
        ));
    }
    if r.cpus_milli > free.cpus_milli {
        return Err((
            "resources",
            format!(
                "not enough CPU: requested {}, free {} of {}",
                units::Cpus(r.cpus_milli),
                units::Cpus(free.cpus_milli),
                units::Cpus(c.capacity.cpus_milli)
            ),
        ));
    }
    Ok(())
}

const FILTERS: [Filter; 3] = [node_filter, health_filter, resources_filter];

/// Nodes that may run the request, and why the others may not.
pub fn filter<'a>(nodes: &'a [Candidate], req: &Request) -> (Vec<&'a Candidate>, Vec<Exclusion>) {
    let mut ok = Vec::new();
    let mut excluded = Vec::new();
    for c in nodes {
        match FILTERS.iter().try_for_each(|f| f(c, req)) {
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
    let by_name = a.name.cmp(&b.name);
    match strategy {
        Strategy::Spread => {
            a.containers.cmp(&b.containers).then(b.free().memory_bytes.cmp(&a.free().memory_bytes)).then(by_name)
        }
        Strategy::Binpack => {
            b.allocated.memory_bytes.cmp(&a.allocated.memory_bytes).then(b.containers.cmp(&a.containers)).then(by_name)
        }
    }
}

/// Picks the node for `req`. Ties are broken by node name, so placement is deterministic.
pub fn place(nodes: &[Candidate], req: &Request, strategy: Strategy) -> Result<String, PlacementError> {
    let (ok, exclusions) = filter(nodes, req);
    if let (Some(wanted), true) = (&req.node, ok.is_empty())
        && !nodes.iter().any(|c| &c.name == wanted)
    {
        return Err(PlacementError {
            exclusions: vec![Exclusion { node: wanted.clone(), filter: "node", reason: "no such node".to_string() }],
        });
    }
    ok.into_iter().min_by(|a, b| rank(strategy, a, b)).map(|c| c.name.clone()).ok_or(PlacementError { exclusions })
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

    fn arb_nodes() -> impl proptest::strategy::Strategy<Value = Vec<Candidate>> {
        proptest::collection::vec((any::<bool>(), 0u64..8, 0u64..8, 0usize..20), 0..12).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (ready, cap, alloc, n))| Candidate {
                    name: format!("n{i}"),
                    ready,
                    capacity: Resources { cpus_milli: 4000, memory_bytes: cap << 28 },
                    allocated: Resources { cpus_milli: 0, memory_bytes: alloc << 28 },
                    containers: n,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn placement_never_violates_a_filter(nodes in arb_nodes(), mem in 0u64..4, spread in any::<bool>()) {
            let req = Request { memory_bytes: mem << 28, ..Default::default() };
            let strategy = if spread { Strategy::Spread } else { Strategy::Binpack };
            match place(&nodes, &req, strategy) {
                Ok(name) => {
                    let c = nodes.iter().find(|c| c.name == name).unwrap();
                    prop_assert!(c.ready);
                    prop_assert!(req.memory_bytes <= c.capacity.memory_bytes.saturating_sub(c.allocated.memory_bytes));
                }
                Err(e) => {
                    // Every node is accounted for, and none of them could have taken it.
                    prop_assert_eq!(e.exclusions.len(), nodes.len());
                    for c in &nodes {
                        prop_assert!(!c.ready || req.memory_bytes > c.capacity.memory_bytes.saturating_sub(c.allocated.memory_bytes));
                    }
                }
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
