//! The policy trait, the built-in policies and their weighted combination.
//!
//! - [`NonePolicy`]: never moves anything (the baseline);
//! - [`hotspot::Hotspot`]: relieves nodes whose CPU stayed above a threshold for k of the last
//!   n samples;
//! - [`balance::Balance`]: keeps node utilisations within a tolerance of each other;
//! - [`consolidate::Consolidate`]: packs containers onto fewer nodes when load is low;
//! - [`forecast::Forecast`]: relieves nodes before they get hot, from a demand forecast;
//! - [`Weighted`]: several of them, their proposals ranked by weight x score.

pub mod balance;
pub mod consolidate;
pub mod forecast;
pub mod hotspot;
mod relieve;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use crate::cluster::Cluster;
use crate::cost::CostModel;
use crate::plan::Plan;

/// A migration policy: looks at a snapshot, proposes moves. Pure and deterministic.
pub trait Policy: Send + Sync {
    /// The policy as a spec string (`hotspot:threshold=0.75,k=3,n=5`), parameters included.
    fn spec(&self) -> String;
    /// The moves this policy would make now, best first, each explained.
    fn plan(&self, cluster: &Cluster, cost: &CostModel) -> Plan;
    /// The same, knowing which moves the engine would let through now (`allowed(container,
    /// to)`, by name): a policy planning a group of moves that only makes sense whole (emptying
    /// a node) can choose a group that will run. By default the policy plans as without it and
    /// the engine holds back what is not allowed.
    fn plan_within(&self, cluster: &Cluster, cost: &CostModel, allowed: &dyn Fn(&str, &str) -> bool) -> Plan {
        let _ = allowed;
        self.plan(cluster, cost)
    }
    /// How far ahead it forecasts demand, seconds, if it uses
    /// [`Container::forecast`](crate::cluster::Container::forecast): whoever fills that in needs to know how far.
    fn forecast_horizon_secs(&self) -> Option<f64> {
        None
    }
}

/// `none`: the baseline that never migrates.
#[derive(Debug, Clone, Default)]
pub struct NonePolicy;

impl Policy for NonePolicy {
    fn spec(&self) -> String {
        "none".into()
    }

    fn plan(&self, _cluster: &Cluster, _cost: &CostModel) -> Plan {
        Plan::default()
    }
}

/// Several policies combined: each proposes, proposals are ranked by weight x score, and a
/// container moved by a higher-ranked proposal is not moved again. A node one policy empties
/// stays idle only if all of its moves survive and nothing else moves onto it.
pub struct Weighted {
    pub parts: Vec<(f64, Box<dyn Policy>)>,
}

impl Policy for Weighted {
    fn spec(&self) -> String {
        self.parts.iter().map(|(w, p)| format!("{w}*{}", p.spec())).collect::<Vec<_>>().join("+")
    }

    fn plan(&self, cluster: &Cluster, cost: &CostModel) -> Plan {
        self.plan_within(cluster, cost, &|_, _| true)
    }

    fn plan_within(&self, cluster: &Cluster, cost: &CostModel, allowed: &dyn Fn(&str, &str) -> bool) -> Plan {
        let mut all = Vec::new();
        let mut idle = Vec::new();
        for (w, p) in &self.parts {
            let mut plan = p.plan_within(cluster, cost, allowed);
            for m in &mut plan.moves {
                m.score *= w;
            }
            all.extend(plan.moves);
            idle.extend(plan.idle_nodes);
        }
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut taken = HashSet::new();
        let mut moves = Vec::new();
        for m in all {
            if taken.insert(m.container.clone()) {
                moves.push(m);
            }
        }
        // An idle node must be left by all the moves its policy planned and receive none.
        idle.retain(|n| !moves.iter().any(|m| m.to == n.node));
        let moves_from_idle_ok = |node: &str| {
            cluster
                .containers
                .iter()
                .filter(|c| cluster.nodes[c.node].name == node)
                .all(|c| moves.iter().any(|m| m.container == c.name))
        };
        idle.retain(|n| moves_from_idle_ok(&n.node));
        Plan { moves, idle_nodes: idle, deferred: Vec::new() }
    }

    fn forecast_horizon_secs(&self) -> Option<f64> {
        self.parts.iter().filter_map(|(_, p)| p.forecast_horizon_secs()).reduce(f64::max)
    }
}
