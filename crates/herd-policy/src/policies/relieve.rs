//! Relieving hot nodes, shared by `hotspot`, `forecast` and `consolidate`: while a node is
//! above its trigger, move the container whose move gives the most relief per unit of
//! migration cost to the node where it leaves the most headroom (a node already running
//! containers if one fits, else an idle one), staying at or below a limit under the trigger
//! (or, when no node can, at or below the trigger).

use crate::cluster::{Cluster, Layout};
use crate::cost::CostModel;
use crate::plan::{Explanation, Figure, Move, fig};

pub(crate) struct Relief<'a> {
    pub policy: &'a str,
    /// A node above this CPU utilisation (by the layout's demand estimates) needs relief.
    pub trigger: f64,
    /// A receiving node must stay at or below this utilisation (below `trigger`: hysteresis).
    pub limit: f64,
    pub max_moves: usize,
    pub gain_unit: &'a str,
}

impl Relief<'_> {
    /// Moves relieving `hot` nodes (most loaded first); updates `layout` as it goes.
    /// `figures` adds the policy's own figures for a node.
    pub fn run(
        &self,
        cluster: &Cluster,
        cost: &CostModel,
        layout: &mut Layout,
        mut hot: Vec<usize>,
        figures: &dyn Fn(usize) -> Vec<Figure>,
    ) -> Vec<Move> {
        hot.sort_by(|&a, &b| layout.util(b).total_cmp(&layout.util(a)));
        let mut moves = Vec::new();
        for node in hot {
            while layout.util(node) > self.trigger && moves.len() < self.max_moves {
                let excess = layout.node_cpu[node] - self.trigger * layout.capacity[node];
                let mut best: Option<(f64, usize, usize, f64)> = None;
                for c in layout.movable_on(node) {
                    let Some(to) = self.target(layout, c) else { continue };
                    let relief = layout.demand[c].min(excess);
                    let ct = &cluster.containers[c];
                    let weight = cost.predict(ct.memory_bytes, ct.dirty_bytes_per_sec).weight(cost);
                    let score = relief / weight.max(1e-6);
                    if relief > 0.0 && best.is_none_or(|b| score > b.0) {
                        best = Some((score, c, to, relief));
                    }
                }
                let Some((score, c, to, relief)) = best else { break };
                let ct = &cluster.containers[c];
                let mut figs = figures(node);
                figs.extend([
                    fig("from_util", layout.util(node)),
                    fig("to_util_before", layout.util(to)),
                    fig("to_util_after", layout.util_with(c, to)),
                    fig("container_cpu", layout.demand[c]),
                    fig("trigger", self.trigger),
                ]);
                moves.push(Move::new(
                    cluster,
                    c,
                    node,
                    to,
                    score,
                    Explanation {
                        policy: self.policy.into(),
                        summary: format!(
                            "{} is at {:.0}% CPU (trigger {:.0}%): moving {} ({:.2} cores) to {} relieves {:.2} cores",
                            cluster.nodes[node].name,
                            layout.util(node) * 100.0,
                            self.trigger * 100.0,
                            ct.name,
                            layout.demand[c],
                            cluster.nodes[to].name,
                            relief
                        ),
                        figures: figs,
                        predicted_gain: relief,
                        gain_unit: self.gain_unit.into(),
                        estimated_cost: cost.predict(ct.memory_bytes, ct.dirty_bytes_per_sec),
                    },
                ));
                layout.apply(c, to);
            }
        }
        moves
    }

    /// The receiving node for `c`: the most headroom among running nodes, else among idle ones,
    /// within `limit`; if none is within `limit`, the one that stays lowest if it stays at or
    /// below `trigger` (a smaller step of relief, still without making a new hot spot).
    fn target(&self, layout: &Layout, c: usize) -> Option<usize> {
        let pick = |cap: f64| {
            let mut best: Option<(bool, f64, usize)> = None;
            for t in (0..layout.capacity.len()).filter(|&t| layout.fits(c, t, cap)) {
                let key = (layout.is_empty(t), layout.util_with(c, t));
                if best.is_none_or(|b| (!key.0 & b.0) || (key.0 == b.0 && key.1 < b.1)) {
                    best = Some((key.0, key.1, t));
                }
            }
            best.map(|b| b.2)
        };
        pick(self.limit).or_else(|| pick(self.trigger))
    }
}
