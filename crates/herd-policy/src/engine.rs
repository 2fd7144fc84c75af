//! The engine: a policy plus the safeguards a running cluster needs. Per evaluation at most
//! `max_concurrent` migrations run (counting those still in flight); a container moved less
//! than `cooldown_secs` ago is not moved again; a container that left a node to relieve it
//! (any move but one emptying its node) is not moved back to it less than `hysteresis_secs`
//! later (no ping-pong: the node it left was hot). A container that left a node being emptied
//! may go back to it: that node was not hot, and it is woken only when load rises. Policies
//! see what the engine allows ([`Policy::plan_within`]), so one emptying a node can pick
//! receivers the safeguards let through. A node a policy empties is reported idle only if all
//! of its moves pass now; if one is blocked none is made, and if they are more than the bound
//! allows, the first ones are made and the rest wait for the next evaluations. Everything
//! held back is in [`Plan::deferred`] with the reason.

use std::collections::HashMap;

use crate::cluster::Cluster;
use crate::cost::CostModel;
use crate::plan::{Move, Plan};
use crate::policies::Policy;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    pub max_concurrent: usize,
    pub cooldown_secs: f64,
    pub hysteresis_secs: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { max_concurrent: 4, cooldown_secs: 1800.0, hysteresis_secs: 4.0 * 3600.0 }
    }
}

struct LastMove {
    from: String,
    at: f64,
    /// Whether it left `from` because `from` was being emptied (not because it was hot).
    emptied: bool,
}

pub struct Engine {
    pub policy: Box<dyn Policy>,
    pub cost: CostModel,
    pub config: EngineConfig,
    last: HashMap<String, LastMove>,
}

impl Engine {
    pub fn new(policy: Box<dyn Policy>, cost: CostModel, config: EngineConfig) -> Engine {
        Engine { policy, cost, config, last: HashMap::new() }
    }

    /// Why moving `container` to `to` may not run at `now`, if it may not.
    fn blocked(&self, container: &str, to: &str, now: f64) -> Option<String> {
        let last = self.last.get(container)?;
        let age = now - last.at;
        if age < self.config.cooldown_secs {
            return Some(format!("cool-down: moved {age:.0} s ago (cool-down {:.0} s)", self.config.cooldown_secs));
        }
        if last.from == to && !last.emptied && age < self.config.hysteresis_secs {
            return Some(format!(
                "hysteresis: left {to} {age:.0} s ago to relieve it (no move back within {:.0} s)",
                self.config.hysteresis_secs
            ));
        }
        None
    }

    /// Evaluates the policy on `cluster` at time `now` (seconds, any origin) with `in_flight`
    /// migrations still running, and records the moves it lets through.
    pub fn evaluate(&mut self, now: f64, cluster: &Cluster, in_flight: usize) -> Plan {
        let proposed = self.policy.plan_within(cluster, &self.cost, &|c, to| self.blocked(c, to, now).is_none());
        let mut budget = self.config.max_concurrent.saturating_sub(in_flight);
        let mut plan = Plan::default();
        let emptying: Vec<String> = proposed.idle_nodes.iter().map(|n| n.node.clone()).collect();
        let (mut grouped, mut single): (Vec<Move>, Vec<Move>) =
            proposed.moves.into_iter().partition(|m| proposed.idle_nodes.iter().any(|n| n.node == m.from));
        for idle in proposed.idle_nodes {
            let (group, rest): (Vec<Move>, Vec<Move>) = grouped.into_iter().partition(|m| m.from == idle.node);
            grouped = rest;
            if let Some(why) = group.iter().find_map(|m| self.blocked(&m.container, &m.to, now)) {
                plan.deferred.extend(group.into_iter().map(|m| (m, why.clone())));
            } else if group.len() > budget {
                // Make progress: the first moves now, the node is emptied over the next
                // evaluations (the policy proposes the rest again) and not reported idle yet.
                let why = format!("emptying {} needs {} migrations, {budget} allowed now", idle.node, group.len());
                let mut group = group.into_iter();
                plan.moves.extend(group.by_ref().take(budget));
                plan.deferred.extend(group.map(|m| (m, why.clone())));
                budget = 0;
            } else {
                budget -= group.len();
                plan.moves.extend(group);
                plan.idle_nodes.push(idle);
            }
        }
        single.extend(grouped);
        single.sort_by(|a, b| b.score.total_cmp(&a.score));
        for m in single {
            if let Some(why) = self.blocked(&m.container, &m.to, now) {
                plan.deferred.push((m, why));
            } else if budget == 0 {
                let why = format!("at most {} concurrent migrations", self.config.max_concurrent);
                plan.deferred.push((m, why));
            } else {
                budget -= 1;
                plan.moves.push(m);
            }
        }
        for m in &plan.moves {
            let emptied = emptying.contains(&m.from);
            self.last.insert(m.container.clone(), LastMove { from: m.from.clone(), at: now, emptied });
        }
        plan
    }
}
