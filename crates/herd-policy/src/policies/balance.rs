//! `balance`: while the most and least loaded nodes differ by more than `tolerance` in CPU
//! utilisation (mean of the last `n` samples), move the container from the most loaded one to
//! the least loaded one that narrows the gap most per unit of migration cost.

use crate::cluster::{Cluster, Layout};
use crate::cost::CostModel;
use crate::plan::{Explanation, Move, Plan, fig};
use crate::policies::Policy;

#[derive(Debug, Clone, PartialEq)]
pub struct Balance {
    pub tolerance: f64,
    pub n: usize,
    pub max_moves: usize,
}

impl Default for Balance {
    fn default() -> Self {
        Balance { tolerance: 0.2, n: 5, max_moves: 2 }
    }
}

impl Policy for Balance {
    fn spec(&self) -> String {
        format!("balance:tolerance={},n={}", self.tolerance, self.n)
    }

    fn plan(&self, cluster: &Cluster, cost: &CostModel) -> Plan {
        let mut layout = Layout::new(cluster, |c| c.cpu_mean(self.n));
        let nodes = cluster.nodes.len();
        let mut moves = Vec::new();
        while moves.len() < self.max_moves && nodes >= 2 {
            let by_util = |a: &usize, b: &usize| layout.util(*a).total_cmp(&layout.util(*b));
            let hi = (0..nodes).max_by(by_util).expect("nodes");
            let lo = (0..nodes).min_by(by_util).expect("nodes");
            let gap = layout.util(hi) - layout.util(lo);
            if gap <= self.tolerance {
                break;
            }
            let mut best: Option<(f64, usize, f64)> = None;
            for c in layout.movable_on(hi) {
                if !layout.fits(c, lo, 1.0) {
                    continue;
                }
                let d = layout.demand[c];
                let new_gap = ((layout.node_cpu[hi] - d) / layout.capacity[hi] - layout.util_with(c, lo)).abs();
                let gain = gap - new_gap;
                let ct = &cluster.containers[c];
                let score = gain / cost.predict(ct.memory_bytes, ct.dirty_bytes_per_sec).weight(cost).max(1e-6);
                if gain > 0.0 && best.is_none_or(|b| score > b.0) {
                    best = Some((score, c, gain));
                }
            }
            let Some((score, c, gain)) = best else { break };
            let ct = &cluster.containers[c];
            moves.push(Move::new(
                cluster,
                c,
                hi,
                lo,
                score,
                Explanation {
                    policy: "balance".into(),
                    summary: format!(
                        "{} at {:.0}% and {} at {:.0}% differ by more than {:.0} points: moving {} narrows the gap by {:.0} points",
                        cluster.nodes[hi].name,
                        layout.util(hi) * 100.0,
                        cluster.nodes[lo].name,
                        layout.util(lo) * 100.0,
                        self.tolerance * 100.0,
                        ct.name,
                        gain * 100.0
                    ),
                    figures: vec![
                        fig("from_util", layout.util(hi)),
                        fig("to_util", layout.util(lo)),
                        fig("container_cpu", layout.demand[c]),
                        fig("tolerance", self.tolerance),
                    ],
                    predicted_gain: gain,
                    gain_unit: "utilisation gap narrowed".into(),
                    estimated_cost: cost.predict(ct.memory_bytes, ct.dirty_bytes_per_sec),
                },
            ));
            layout.apply(c, lo);
        }
        Plan { moves, ..Plan::default() }
    }
}
