//! `consolidate`: when the running nodes are lightly loaded (their utilisation by each
//! container's peak over the last `window` samples is below `low`), empty the lightest node
//! whose containers all fit elsewhere at or below `target`, and report it idle with the watts
//! saved by switching it off (its draw now, minus what its containers add on their new
//! nodes). When a running node goes above `high` it is relieved as `hotspot` would, idle nodes
//! included, so packing is undone as load rises. One node is emptied per evaluation.

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
        Consolidate { low: 0.6, target: 0.75, high: 0.85, window: 60 }
    }
}

impl Policy for Consolidate {
    fn spec(&self) -> String {
        format!("consolidate:low={},target={},high={},window={}", self.low, self.target, self.high, self.window)
    }

    fn plan(&self, cluster: &Cluster, cost: &CostModel) -> Plan {
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
        let mut order = active.clone();
        order.sort_by(|&a, &b| layout.node_cpu[a].total_cmp(&layout.node_cpu[b]));
        for node in order {
            if let Some(plan) = self.empty(cluster, cost, &layout, node, load / cap) {
                return plan;
            }
        }
        Plan::default()
    }
}

impl Consolidate {
    /// Moves emptying `node` onto the other running nodes (best fit), if they all fit and
    /// switching it off saves power.
    fn empty(&self, cluster: &Cluster, cost: &CostModel, layout: &Layout, node: usize, load: f64) -> Option<Plan> {
        let mut l = layout.clone();
        let mut mine: Vec<usize> = l.containers_on(node).collect();
        mine.sort_by(|&a, &b| l.demand[b].total_cmp(&l.demand[a]));
        let power = &cluster.nodes[node].power;
        let mut saved = power.watts(l.util(node));
        let mut placed = Vec::new();
        for c in mine {
            let to = (0..cluster.nodes.len())
                .filter(|&t| t != node && !layout.is_empty(t) && l.fits(c, t, self.target))
                .max_by(|&a, &b| l.util_with(c, a).total_cmp(&l.util_with(c, b)))?;
            let p = &cluster.nodes[to].power;
            saved -= p.watts(l.util_with(c, to)) - p.watts(l.util(to));
            placed.push((c, to, l.util(to)));
            l.apply(c, to);
        }
        if saved <= 0.0 {
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
                            "running nodes are at {:.0}% (below {:.0}%): emptying {from} saves about {saved:.0} W",
                            load * 100.0,
                            self.low * 100.0
                        ),
                        figures: vec![
                            fig("cluster_util", load),
                            fig("low", self.low),
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
