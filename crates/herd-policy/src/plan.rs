//! What a policy produces: moves, each with its explanation (the figures it was decided on, the
//! predicted gain, the estimated cost), and the nodes left idle.

use serde::Serialize;

use crate::cluster::Cluster;
use crate::cost::MigrationCost;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
}

pub fn fig(name: &str, value: f64) -> Figure {
    Figure { name: name.into(), value }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The policy that proposed the move.
    pub policy: String,
    /// One sentence.
    pub summary: String,
    /// The figures the decision was made on (utilisations, demands, thresholds).
    pub figures: Vec<Figure>,
    /// The predicted gain, in `gain_unit` (e.g. cores of overload relieved, watts saved).
    pub predicted_gain: f64,
    pub gain_unit: String,
    pub estimated_cost: MigrationCost,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    pub container: String,
    pub from: String,
    pub to: String,
    /// Gain per unit of cost, scaled by the policy's weight: higher is done first.
    pub score: f64,
    pub reason: Explanation,
}

impl Move {
    /// Container `container` from node `from` to node `to` (indices into `cluster`).
    pub fn new(cluster: &Cluster, container: usize, from: usize, to: usize, score: f64, reason: Explanation) -> Move {
        Move {
            container: cluster.containers[container].name.clone(),
            from: cluster.nodes[from].name.clone(),
            to: cluster.nodes[to].name.clone(),
            score,
            reason,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleNode {
    pub node: String,
    /// Estimated power saved by switching it off once emptied, net of the extra power its
    /// containers draw on their new nodes.
    pub watts_saved: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub moves: Vec<Move>,
    pub idle_nodes: Vec<IdleNode>,
    /// Moves a policy proposed that the engine held back, and why.
    pub deferred: Vec<(Move, String)>,
}
