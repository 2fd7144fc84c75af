//! `hotspot`: a node whose CPU utilisation was above `threshold` in at least `k` of the last `n`
//! samples is relieved (see `relieve`), down to `threshold - margin` on the receiving side.

use crate::cluster::{Cluster, Layout};
use crate::cost::CostModel;
use crate::plan::{Plan, fig};
use crate::policies::Policy;
use crate::policies::relieve::Relief;

#[derive(Debug, Clone, PartialEq)]
pub struct Hotspot {
    pub threshold: f64,
    pub k: usize,
    pub n: usize,
    /// Receivers stay at or below `threshold - margin`.
    pub margin: f64,
    /// At most this many moves per evaluation.
    pub max_moves: usize,
}

impl Default for Hotspot {
    fn default() -> Self {
        Hotspot { threshold: 0.75, k: 3, n: 5, margin: 0.1, max_moves: 4 }
    }
}

/// How many of the last `n` samples of `node` were above `threshold` (summing the samples of
/// the containers on it now).
pub(crate) fn hot_samples(cluster: &Cluster, node: usize, threshold: f64, n: usize) -> usize {
    let cap = cluster.nodes[node].cpu_cores;
    (0..n)
        .filter(|&i| {
            let load: f64 = cluster.containers.iter().filter(|c| c.node == node).filter_map(|c| c.cpu_back(i)).sum();
            load / cap > threshold
        })
        .count()
}

impl Policy for Hotspot {
    fn spec(&self) -> String {
        format!("hotspot:threshold={},k={},n={},margin={}", self.threshold, self.k, self.n, self.margin)
    }

    fn plan(&self, cluster: &Cluster, cost: &CostModel) -> Plan {
        let mut layout = Layout::new(cluster, |c| c.cpu_mean(self.k));
        let counts: Vec<usize> =
            (0..cluster.nodes.len()).map(|n| hot_samples(cluster, n, self.threshold, self.n)).collect();
        let hot: Vec<usize> = (0..cluster.nodes.len()).filter(|&n| counts[n] >= self.k).collect();
        let relief = Relief {
            policy: "hotspot",
            trigger: self.threshold,
            limit: self.threshold - self.margin,
            max_moves: self.max_moves,
            gain_unit: "cores above threshold",
        };
        let figures = |node: usize| vec![fig("hot_samples", counts[node] as f64), fig("of_last", self.n as f64)];
        let moves = relief.run(cluster, cost, &mut layout, hot, &figures);
        Plan { moves, ..Plan::default() }
    }
}
