//! Running a trace through a policy.
//!
//! The model, step by step (one step = the trace's sample period):
//! - each container demands its trace CPU; a node's demand is the sum over its containers plus
//!   the CPU of migrations in or out during the step (`migration_cores` for the share of the
//!   step the transfer takes);
//! - contention: demand above a node's capacity, in core-seconds; contention container-seconds
//!   count every container on an over-capacity node for the step;
//! - an SLA violation is a container-step in which the container got less than `sla_share` of
//!   its demand (capacity shared in proportion to demand) or was frozen by a migration for more
//!   than `sla_downtime_secs`;
//! - energy: a node with containers draws its power model at its utilisation (capped at 1); a
//!   node with none is taken as switched off, 0 W;
//! - every `interval_steps` the engine evaluates a snapshot with each container's last
//!   `history_steps` samples and its moves take effect from the next step, each costing what the
//!   [`CostModel`] predicts (dirty rate taken as 0: traces have none).
//!
//! Containers start on the node with the lowest utilisation by their first sample that has
//! the memory (as a scheduler placing them by what it sees would).

use serde::Serialize;

use crate::cluster::{Cluster, Container, Node, PowerModel};
use crate::cost::CostModel;
use crate::demand::DemandForecast;
use crate::engine::{Engine, EngineConfig};
use crate::error::PolicyError;
use crate::policies::Policy;
use crate::sim::trace::Trace;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: Vec<Node>,
    pub interval_steps: usize,
    pub history_steps: usize,
    pub engine: EngineConfig,
    pub cost: CostModel,
    pub sla_share: f64,
    pub sla_downtime_secs: f64,
    pub migration_cores: f64,
}

impl SimConfig {
    pub fn new(nodes: Vec<Node>) -> SimConfig {
        SimConfig {
            nodes,
            interval_steps: 5,
            history_steps: 1440 + 60,
            engine: EngineConfig::default(),
            cost: CostModel::default(),
            sla_share: 0.95,
            sla_downtime_secs: 1.0,
            migration_cores: 1.0,
        }
    }
}

/// `m` nodes alternating two types: 16 cores / 64 GiB / 110-330 W and 8 cores / 32 GiB /
/// 70-180 W (the larger one is more efficient per core at full load, less when idle).
pub fn default_nodes(m: usize) -> Vec<Node> {
    (0..m)
        .map(|i| {
            let (cores, gib, idle, peak) =
                if i % 2 == 0 { (16.0, 64u64, 110.0, 330.0) } else { (8.0, 32, 70.0, 180.0) };
            Node {
                name: format!("n{i:02}"),
                cpu_cores: cores,
                memory_bytes: gib << 30,
                power: PowerModel { idle_watts: idle, peak_watts: peak },
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimResult {
    pub policy: String,
    pub steps: usize,
    pub step_secs: f64,
    pub contention_core_secs: f64,
    pub contention_container_secs: f64,
    pub sla_violations: u64,
    pub migrations: u64,
    pub bytes_moved: u64,
    pub downtime_secs: f64,
    pub energy_kwh: f64,
    pub mean_active_nodes: f64,
    pub active_nodes: Vec<usize>,
    /// Contention per step, core-seconds.
    pub contention: Vec<f64>,
}

/// Runs `trace` through `policy` on `config.nodes`.
pub fn simulate(trace: &Trace, policy: Box<dyn Policy>, config: &SimConfig) -> Result<SimResult, PolicyError> {
    let steps = trace.steps();
    let nodes = &config.nodes;
    if nodes.is_empty() {
        return Err(PolicyError::Trace("no nodes to simulate".into()));
    }
    for (i, n) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|m| m.name == n.name) {
            return Err(PolicyError::Trace(format!("two nodes are named {}", n.name)));
        }
    }
    if steps == 0 || trace.names.is_empty() {
        return Err(PolicyError::Trace("the trace has no samples".into()));
    }
    let mut node_of = initial_placement(trace, nodes)?;
    let mut engine = Engine::new(policy, config.cost, config.engine);
    let mut r = SimResult {
        policy: engine.policy.spec(),
        steps,
        step_secs: trace.step_secs,
        contention_core_secs: 0.0,
        contention_container_secs: 0.0,
        sla_violations: 0,
        migrations: 0,
        bytes_moved: 0,
        downtime_secs: 0.0,
        energy_kwh: 0.0,
        mean_active_nodes: 0.0,
        active_nodes: Vec::with_capacity(steps),
        contention: Vec::with_capacity(steps),
    };
    let dt = trace.step_secs;
    // Extra CPU on each node from migrations during the current step, and downtime per container.
    let mut overhead = vec![0.0; nodes.len()];
    let mut frozen = vec![0.0; trace.names.len()];
    for t in 0..steps {
        let mut demand = overhead.clone();
        let mut count = vec![0usize; nodes.len()];
        for (c, &n) in node_of.iter().enumerate() {
            demand[n] += trace.cpu[c][t];
            count[n] += 1;
        }
        let mut contention = 0.0;
        let mut joules = 0.0;
        for (n, node) in nodes.iter().enumerate() {
            let excess = (demand[n] - node.cpu_cores).max(0.0);
            contention += excess * dt;
            if excess > 0.0 {
                r.contention_container_secs += count[n] as f64 * dt;
            }
            if count[n] > 0 {
                joules += node.power.watts(demand[n] / node.cpu_cores) * dt;
            }
        }
        for (c, &n) in node_of.iter().enumerate() {
            let share = if demand[n] > nodes[n].cpu_cores { nodes[n].cpu_cores / demand[n] } else { 1.0 };
            if share < config.sla_share || frozen[c] > config.sla_downtime_secs {
                r.sla_violations += 1;
            }
        }
        r.contention_core_secs += contention;
        r.contention.push(contention);
        r.energy_kwh += joules / 3.6e6;
        let active = count.iter().filter(|&&k| k > 0).count();
        r.active_nodes.push(active);
        overhead.iter_mut().for_each(|o| *o = 0.0);
        frozen.iter_mut().for_each(|f| *f = 0.0);
        if t + 1 < steps && t > 0 && t % config.interval_steps == 0 {
            let cluster = snapshot(trace, nodes, &node_of, t, config.history_steps);
            let plan = engine.evaluate(t as f64 * dt, &cluster, 0);
            for m in plan.moves {
                let c = trace.names.iter().position(|n| *n == m.container).expect("a container of the trace");
                let to = nodes.iter().position(|n| n.name == m.to).expect("a node of the config");
                let cost = m.reason.estimated_cost;
                let share = (cost.transfer_secs / dt).min(1.0) * config.migration_cores;
                overhead[node_of[c]] += share;
                overhead[to] += share;
                frozen[c] += cost.downtime_secs;
                node_of[c] = to;
                r.migrations += 1;
                r.bytes_moved += cost.bytes;
                r.downtime_secs += cost.downtime_secs;
            }
        }
    }
    r.mean_active_nodes = r.active_nodes.iter().sum::<usize>() as f64 / steps as f64;
    Ok(r)
}

/// A floor for any policy's energy on `trace`, kWh: at every step only the most efficient
/// nodes (fewest peak watts per core) needed to hold the total CPU demand at 100 % and the
/// total memory are on, all at the same utilisation; containers are taken as divisible and
/// migrations as free, so no real policy reaches it.
pub fn energy_floor(trace: &Trace, nodes: &[Node]) -> f64 {
    let mut order: Vec<&Node> = nodes.iter().collect();
    order.sort_by(|a, b| (a.power.peak_watts / a.cpu_cores).total_cmp(&(b.power.peak_watts / b.cpu_cores)));
    let mut joules = 0.0;
    for t in 0..trace.steps() {
        let cpu: f64 = trace.cpu.iter().map(|c| c[t]).sum();
        let mem: u64 = trace.memory.iter().map(|m| m[t]).sum();
        let (mut cap, mut cap_mem, mut on) = (0.0, 0u64, Vec::new());
        for n in &order {
            if cap >= cpu && cap_mem >= mem {
                break;
            }
            cap += n.cpu_cores;
            cap_mem += n.memory_bytes;
            on.push(*n);
        }
        let util = if cap > 0.0 { cpu / cap } else { 0.0 };
        joules += on.iter().map(|n| n.power.watts(util)).sum::<f64>() * trace.step_secs;
    }
    joules / 3.6e6
}

fn initial_placement(trace: &Trace, nodes: &[Node]) -> Result<Vec<usize>, PolicyError> {
    let mut cpu = vec![0.0; nodes.len()];
    let mut mem = vec![0u64; nodes.len()];
    let mut node_of = Vec::with_capacity(trace.names.len());
    for c in 0..trace.names.len() {
        let m = trace.memory[c][0];
        let n = (0..nodes.len())
            .filter(|&n| mem[n] + m <= nodes[n].memory_bytes)
            .min_by(|&a, &b| (cpu[a] / nodes[a].cpu_cores).total_cmp(&(cpu[b] / nodes[b].cpu_cores)))
            .ok_or_else(|| PolicyError::Trace(format!("container {} fits on no node (memory)", trace.names[c])))?;
        cpu[n] += trace.cpu[c][0];
        mem[n] += m;
        node_of.push(n);
    }
    Ok(node_of)
}

fn snapshot(trace: &Trace, nodes: &[Node], node_of: &[usize], t: usize, history: usize) -> Cluster {
    let start = (t + 1).saturating_sub(history);
    Cluster {
        nodes: nodes.to_vec(),
        containers: (0..trace.names.len())
            .map(|c| Container {
                name: trace.names[c].clone(),
                node: node_of[c],
                cpu: trace.cpu[c][start..=t].to_vec(),
                memory_bytes: trace.memory[c][t],
                dirty_bytes_per_sec: 0.0,
                // The policy's own seasonal-naive: the validated models are too slow to run
                // at every simulated evaluation of every container.
                forecast: DemandForecast::SeasonalNaive,
            })
            .collect(),
        sample_secs: trace.step_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::generate::{GenSpec, Shape, generate};
    use crate::spec::parse_policy;

    #[test]
    fn none_never_migrates_and_uses_every_node() {
        let nodes = default_nodes(4);
        let trace = generate(&GenSpec {
            shape: Shape::Daily,
            containers: 12,
            hours: 6.0,
            seed: 1,
            step_secs: 60.0,
            capacity_cores: 48.0,
            peak_load: 0.8,
        });
        let r = simulate(&trace, parse_policy("none").unwrap(), &SimConfig::new(nodes)).unwrap();
        assert_eq!((r.migrations, r.bytes_moved, r.steps), (0, 0, 360));
        assert!(r.active_nodes.iter().all(|&a| a == 4));
        assert!(r.energy_kwh > 4.0 * 70.0 * 6.0 / 1000.0);
    }

    #[test]
    fn an_overloaded_node_counts_contention_and_hotspot_fixes_it() {
        // Two 8-core nodes; a and b both start on n00 (placed by a first sample of 0), then
        // each demands 5 cores: 2 cores of contention per step on n00 until one is moved.
        let small = default_nodes(2)[1].clone();
        let nodes = vec![Node { name: "n00".into(), ..small.clone() }, small];
        let mut cpu = vec![0.0];
        cpu.extend([5.0; 59]);
        let trace = Trace {
            step_secs: 60.0,
            names: vec!["a".into(), "b".into()],
            cpu: vec![cpu.clone(), cpu],
            memory: vec![vec![1 << 30; 60]; 2],
        };
        let config = SimConfig::new(nodes);
        let none = simulate(&trace, parse_policy("none").unwrap(), &config).unwrap();
        assert!((none.contention_core_secs - 59.0 * 2.0 * 60.0).abs() < 1e-6, "{}", none.contention_core_secs);
        assert_eq!(none.sla_violations, 59 * 2);
        assert_eq!(none.active_nodes[10], 1);
        // hotspot (3 of 5 samples) sees it at the evaluation of step 5 and moves one away.
        let hot = simulate(&trace, parse_policy("hotspot").unwrap(), &config).unwrap();
        assert_eq!((hot.migrations, hot.bytes_moved), (1, 1 << 30));
        assert!((hot.contention_core_secs - 5.0 * 2.0 * 60.0).abs() < 1e-6, "{}", hot.contention_core_secs);
        assert_eq!(hot.active_nodes[10], 2);
    }
}
