//! `consolidate`: when the running nodes are lightly loaded (their utilisation by each
//! container's peak over the last `window` samples is below `low`), empty the least efficient
//! node: the one whose switching to standby saves the most watts per core of its capacity (its
//! draw now, minus its standby, minus what its containers add on their new nodes; of equals,
//! the cheapest to empty), of those whose containers
//! all fit on the other running nodes at or below `target` (each onto the most efficient node
//! by full-load watts per core, the fullest of equals), and report it idle with the watts
//! saved. When a running node goes above `high` it is relieved as `hotspot` would, idle nodes
//! included, so packing is undone as load rises. One node is emptied per evaluation.
//!
//! The defaults (`low` 1.0, i.e. no cluster-wide gate; `target` 0.9; `high` 0.95) are the
//! least-energy setting within the contention bound on held-out simulated traces
//! (`bench/provisioning tune`, docs/design/policies.md).

use crate::cluster::{Cluster, Layout};
use crate::cost::CostModel;
use crate::plan::{Explanation, IdleNode, Move, Plan, fig};
use crate::policies::Policy;
use crate::policies::relieve::Relief;

#[derive(Debug, Clone, PartialEq)]
pub struct Consolidate {
    pub low: f64,
    pub target: f64,
    pub high: f64,
    /// Samples over which a container's peak demand is taken.
    pub window: usize,
}

impl Default for Consolidate {
    fn default() -> Self {
        Consolidate { low: 1.0, target: 0.9, high: 0.95, window: 60 }
    }
}

impl Policy for Consolidate {
    fn spec(&self) -> String {
        format!("consolidate:low={},target={},high={},window={}", self.low, self.target, self.high, self.window)
    }

    fn plan(&self, cluster: &Cluster, cost: &CostModel) -> Plan {
        self.plan_within(cluster, cost, &|_, _| true)
    }

    fn plan_within(&self, cluster: &Cluster, cost: &CostModel, allowed: &dyn Fn(&str, &str) -> bool) -> Plan {
        // Relieve first: a node above `high` (mean of the last 2 samples) sheds load.
        let mut now = Layout::new(cluster, |c| c.cpu_mean(2));
        let hot: Vec<usize> = (0..cluster.nodes.len()).filter(|&n| now.util(n) > self.high).collect();
        if !hot.is_empty() {
            let relief = Relief {
                policy: "consolidate",
                trigger: self.high,
                limit: self.target,
                max_moves: 4,
                gain_unit: "cores above high",
            };
            let moves = relief.run(cluster, cost, &mut now, hot, &|_| vec![]);
            return Plan { moves, ..Plan::default() };
        }
        let layout = Layout::new(cluster, |c| c.cpu_peak(self.window));
        let active: Vec<usize> = (0..cluster.nodes.len()).filter(|&n| !layout.is_empty(n)).collect();
        if active.len() < 2 {
            return Plan::default();
        }
        let load: f64 = active.iter().map(|&n| layout.node_cpu[n]).sum();
        let cap: f64 = active.iter().map(|&n| layout.capacity[n]).sum();
        if load / cap >= self.low {
            return Plan::default();
        }
        // Of the nodes that can be emptied, the least efficient: the most watts saved per core
        // of capacity switched off (to a tenth of a watt), so the capacity left on is the
        // most efficient; of equals, the cheapest to empty. The saving lasts while the node
        // sleeps, the migrations are paid once.
        let per_core = |(n, p): &(usize, Plan)| (10.0 * p.idle_nodes[0].watts_saved / layout.capacity[*n]).round();
        let weight = |(_, p): &(usize, Plan)| p.idle_nodes[0].watts_saved / p.moves[0].score;
        active
            .iter()
            .filter_map(|&node| Some((node, self.empty(cluster, cost, &layout, node, load / cap, allowed)?)))
            .max_by(|a, b| per_core(a).total_cmp(&per_core(b)).then(weight(b).total_cmp(&weight(a))))
            .map(|(_, p)| p)
            .unwrap_or_default()
    }
}

/// Full-load watts per core: the lower, the more work a node does per watt when busy.
fn watts_per_core(cluster: &Cluster, node: usize) -> f64 {
    cluster.nodes[node].power.peak_watts() / cluster.nodes[node].cpu_cores
}

impl Consolidate {
    /// Moves emptying `node` onto the other running nodes, if they all fit at or below `target`
    /// (each onto the most efficient node it fits on, the fullest of equals), the engine allows
    /// them, and switching the node to standby saves power.
    fn empty(
        &self,
        cluster: &Cluster,
        cost: &CostModel,
        layout: &Layout,
        node: usize,
        load: f64,
        allowed: &dyn Fn(&str, &str) -> bool,
    ) -> Option<Plan> {
        let mut l = layout.clone();
        let mut mine: Vec<usize> = l.containers_on(node).collect();
        if mine.iter().any(|&c| l.pinned[c]) {
            // A container that cannot move keeps the node running.
            return None;
        }
        mine.sort_by(|&a, &b| l.demand[b].total_cmp(&l.demand[a]));
        let power = &cluster.nodes[node].power;
        let draw = power.watts(l.util(node));
        let mut saved = draw - power.standby_watts;
        let mut placed = Vec::new();
        for c in mine {
            let name = &cluster.containers[c].name;
            let to = (0..cluster.nodes.len())
                .filter(|&t| t != node && !layout.is_empty(t) && l.fits(c, t, self.target))
                .filter(|&t| allowed(name, &cluster.nodes[t].name))
                .min_by(|&a, &b| {
                    watts_per_core(cluster, a)
                        .total_cmp(&watts_per_core(cluster, b))
                        .then(l.util_with(c, b).total_cmp(&l.util_with(c, a)))
                })?;
            let p = &cluster.nodes[to].power;
            saved -= p.watts(l.util_with(c, to)) - p.watts(l.util(to));
            placed.push((c, to, l.util(to)));
            l.apply(c, to);
        }
        if saved <= 0.0 || placed.is_empty() {
            return None;
        }
        let from = cluster.nodes[node].name.clone();
        let weights: Vec<f64> = placed
            .iter()
            .map(|&(c, _, _)| {
                let ct = &cluster.containers[c];
                cost.predict(ct.memory_bytes, ct.dirty_bytes_per_sec).weight(cost)
            })
            .collect();
        let total_weight: f64 = weights.iter().sum::<f64>().max(1e-6);
        let moves = placed
            .iter()
            .map(|&(c, to, to_before)| {
                let ct = &cluster.containers[c];
                Move {
                    container: ct.name.clone(),
                    from: from.clone(),
                    to: cluster.nodes[to].name.clone(),
                    score: saved / total_weight,
                    reason: Explanation {
                        policy: "consolidate".into(),
                        summary: format!(
                            "running nodes are at {:.0}% (below {:.0}%): emptying {from} ({draw:.0} W now, {:.0} W in standby) saves about {saved:.0} W, the most per core of any node",
                            load * 100.0,
                            self.low * 100.0,
                            power.standby_watts
                        ),
                        figures: vec![
                            fig("cluster_util", load),
                            fig("low", self.low),
                            fig("node_watts", draw),
                            fig("standby_watts", power.standby_watts),
                            fig("watts_saved", saved),
                            fig("container_peak_cpu", l.demand[c]),
                            fig("to_util_before", to_before),
                            fig("to_util_after", to_before + l.demand[c] / l.capacity[to]),
                        ],
                        predicted_gain: saved / placed.len() as f64,
                        gain_unit: "watts (share of the node's saving)".into(),
                        estimated_cost: cost.predict(ct.memory_bytes, ct.dirty_bytes_per_sec),
                    },
                }
            })
            .collect();
        Some(Plan { moves, idle_nodes: vec![IdleNode { node: from, watts_saved: saved }], deferred: vec![] })
    }
}
