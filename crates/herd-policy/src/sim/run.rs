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
//! - power states: a node left without containers (and with no move on its way to it) goes into
//!   standby at the end of the step and draws its `standby_watts`; a move onto a node in standby
//!   wakes it, and waits until it is ready (`wake_secs`, rounded up to whole steps), the container
//!   running on its old node meanwhile; a waking node draws its peak watts and runs nothing;
//! - energy: a node that is on draws its power curve at its utilisation (capped at 1);
//! - every `interval_steps` the engine evaluates a snapshot with each container's last
//!   `history_steps` samples (moves still waiting for a node to wake count as in flight) and its
//!   moves take effect from the next step (or the step after the node is awake), each costing
//!   what the [`CostModel`] predicts (dirty rate taken as 0: traces have none).
//!
//! Containers start on the node with the lowest utilisation by their first sample that has
//! the memory (as a scheduler placing them by what it sees would).

use serde::Serialize;

use crate::cluster::{Cluster, Container, Node};
use crate::cost::{CostModel, MigrationCost};
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
    /// Nodes on or waking (not in standby) at each step.
    pub active_nodes: Vec<usize>,
    /// Nodes woken from standby.
    pub wake_ups: u64,
    /// Contention per step, core-seconds.
    pub contention: Vec<f64>,
}

/// A node's power state in the simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PowerState {
    On,
    Standby,
    /// Ready at the end of step `ready`: moves waiting for it run then.
    Waking {
        ready: usize,
    },
}

/// A move the engine let through, waiting for its destination to wake up.
struct Waiting {
    container: usize,
    to: usize,
    cost: MigrationCost,
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
        n.power.check().map_err(|e| PolicyError::Trace(format!("node {}: {e}", n.name)))?;
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
        wake_ups: 0,
        contention: Vec::with_capacity(steps),
    };
    let dt = trace.step_secs;
    let wake_steps: Vec<usize> = nodes.iter().map(|n| (n.power.wake_secs / dt).ceil() as usize).collect();
    // Nodes the initial placement leaves empty start in standby.
    let mut state: Vec<PowerState> =
        (0..nodes.len()).map(|n| if node_of.contains(&n) { PowerState::On } else { PowerState::Standby }).collect();
    let mut waiting: Vec<Waiting> = Vec::new();
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
            joules += dt
                * match state[n] {
                    PowerState::On => node.power.watts(demand[n] / node.cpu_cores),
                    PowerState::Standby => node.power.standby_watts,
                    PowerState::Waking { .. } => node.power.peak_watts(),
                };
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
        r.active_nodes.push(state.iter().filter(|s| **s != PowerState::Standby).count());
        overhead.iter_mut().for_each(|o| *o = 0.0);
        frozen.iter_mut().for_each(|f| *f = 0.0);
        let mut migrate = |c: usize, to: usize, cost: &MigrationCost, node_of: &mut Vec<usize>| {
            let share = (cost.transfer_secs / dt).min(1.0) * config.migration_cores;
            overhead[node_of[c]] += share;
            overhead[to] += share;
            frozen[c] += cost.downtime_secs;
            node_of[c] = to;
            r.migrations += 1;
            r.bytes_moved += cost.bytes;
            r.downtime_secs += cost.downtime_secs;
        };
        // Nodes ready now take the moves that waited for them.
        for s in state.iter_mut() {
            if matches!(*s, PowerState::Waking { ready } if ready <= t) {
                *s = PowerState::On;
            }
        }
        waiting.retain(|w| {
            let ready = state[w.to] == PowerState::On;
            if ready {
                migrate(w.container, w.to, &w.cost, &mut node_of);
            }
            !ready
        });
        if t + 1 < steps && t > 0 && t % config.interval_steps == 0 {
            let cluster = snapshot(trace, nodes, &node_of, t, config.history_steps);
            let plan = engine.evaluate(t as f64 * dt, &cluster, waiting.len());
            for m in plan.moves {
                let c = trace.names.iter().position(|n| *n == m.container).expect("a container of the trace");
                let to = nodes.iter().position(|n| n.name == m.to).expect("a node of the config");
                if waiting.iter().any(|w| w.container == c) {
                    continue; // already on its way (the engine's cool-down normally prevents this)
                }
                let cost = m.reason.estimated_cost;
                if state[to] == PowerState::Standby {
                    r.wake_ups += 1;
                    state[to] = if wake_steps[to] == 0 {
                        PowerState::On
                    } else {
                        PowerState::Waking { ready: t + wake_steps[to] }
                    };
                }
                if state[to] == PowerState::On {
                    migrate(c, to, &cost, &mut node_of);
                } else {
                    waiting.push(Waiting { container: c, to, cost });
                }
            }
        }
        // A node left empty, with nothing on its way to it, goes into standby.
        for (n, s) in state.iter_mut().enumerate() {
            if *s == PowerState::On && !node_of.contains(&n) && !waiting.iter().any(|w| w.to == n) {
                *s = PowerState::Standby;
            }
        }
    }
    r.mean_active_nodes = r.active_nodes.iter().sum::<usize>() as f64 / steps as f64;
    Ok(r)
}

/// A lower bound on any policy's energy on `trace`, kWh. At every step each node is one of
/// its power states at no cost to switch, and the CPU demand is divisible: each node's draw
/// as a function of the load it holds is bounded below by the lower convex hull of its
/// standby point (0 cores) and its power curve, so the least energy for the step's demand is
/// every node's standby plus the hulls' segments filled cheapest watts per core first.
/// Memory, migrations and wake-ups are free, so no real policy reaches it.
pub fn energy_floor(trace: &Trace, nodes: &[Node]) -> f64 {
    // (watts per core, cores) of every hull segment above standby, cheapest first.
    let mut segments: Vec<(f64, f64)> = nodes.iter().flat_map(hull_segments).collect();
    segments.sort_by(|a, b| a.0.total_cmp(&b.0));
    let standby: f64 = nodes.iter().map(|n| n.power.standby_watts).sum();
    let mut joules = 0.0;
    for t in 0..trace.steps() {
        let mut left: f64 = trace.cpu.iter().map(|c| c[t]).sum();
        let mut watts = standby;
        for &(per_core, cores) in &segments {
            if left <= 0.0 {
                break;
            }
            let take = left.min(cores);
            watts += per_core * take;
            left -= take;
        }
        joules += watts * trace.step_secs;
    }
    joules / 3.6e6
}

/// The lower convex hull of a node's (cores held, watts) points: (0, standby) and the curve's
/// tenths of load; as (watts per core, cores) segments with rising slopes.
fn hull_segments(node: &Node) -> Vec<(f64, f64)> {
    let p = &node.power;
    let mut points = vec![(0.0, p.standby_watts.min(p.curve[0]))];
    points.extend((1..=10).map(|i| (node.cpu_cores * i as f64 / 10.0, p.curve[i])));
    let mut hull: Vec<(f64, f64)> = Vec::new();
    for q in points {
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            // Drop b if it lies on or above the line from a to q.
            if (b.1 - a.1) * (q.0 - a.0) >= (q.1 - a.1) * (b.0 - a.0) {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(q);
    }
    hull.windows(2).map(|w| ((w[1].1 - w[0].1) / (w[1].0 - w[0].0), w[1].0 - w[0].0)).collect()
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
                pinned: false,
            })
            .collect(),
        sample_secs: trace.step_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PowerModel;
    use crate::sim::generate::{GenSpec, Shape, generate};
    use crate::sim::nodes::{default_nodes, free_standby, legacy_nodes};
    use crate::spec::parse_policy;

    #[test]
    fn none_never_migrates_and_uses_every_node() {
        let nodes = legacy_nodes(4);
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

    /// Containers `a` and `b` over an hour of 60 s steps: 0 cores at first (so both are placed
    /// on the first node), then 5 cores each, with 1 GiB of memory.
    fn two_demanding_five_cores() -> Trace {
        let mut cpu = vec![0.0];
        cpu.extend([5.0; 59]);
        Trace {
            step_secs: 60.0,
            names: vec!["a".into(), "b".into()],
            cpu: vec![cpu.clone(), cpu],
            memory: vec![vec![1 << 30; 60]; 2],
        }
    }

    #[test]
    fn an_overloaded_node_counts_contention_and_hotspot_fixes_it() {
        // Two 8-core nodes; a and b both start on n00 (placed by a first sample of 0), then
        // each demands 5 cores: 2 cores of contention per step on n00 until one is moved.
        let small = free_standby(&legacy_nodes(2))[1].clone();
        let nodes = vec![Node { name: "n00".into(), ..small.clone() }, small];
        let trace = two_demanding_five_cores();
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

    /// Two 8-core nodes, 100-300 W, standby 10 W, waking in `wake_secs`; `a` and `b` start on
    /// n00 (placed by a first sample of 0), then demand 5 cores each: n01 stays in standby until
    /// hotspot moves one of them there at the evaluation of step 5.
    fn two_on_one(wake_secs: f64) -> (Trace, SimConfig) {
        let power = PowerModel::linear(100.0, 300.0).with_standby(10.0, wake_secs);
        let node = |name: &str| Node { name: name.into(), cpu_cores: 8.0, memory_bytes: 32 << 30, power };
        let trace = two_demanding_five_cores();
        let mut config = SimConfig::new(vec![node("n00"), node("n01")]);
        config.migration_cores = 0.0; // no migration CPU: the energy below is exact
        (trace, config)
    }

    #[test]
    fn a_node_in_standby_draws_its_standby_watts() {
        let (trace, config) = two_on_one(0.0);
        let r = simulate(&trace, parse_policy("none").unwrap(), &config).unwrap();
        // n00: 100 W at step 0, then 10 of 8 cores (capped: 300 W); n01: 10 W throughout.
        let joules = (100.0 + 59.0 * 300.0 + 60.0 * 10.0) * 60.0;
        assert!((r.energy_kwh - joules / 3.6e6).abs() < 1e-9, "{} kWh", r.energy_kwh);
        assert!(r.active_nodes.iter().all(|&a| a == 1));
        assert_eq!(r.wake_ups, 0);
    }

    #[test]
    fn a_move_onto_a_sleeping_node_waits_for_it_to_wake() {
        let hotspot = || parse_policy("hotspot").unwrap();
        // Instant wake-up: the move runs at once, n01 is on from step 6.
        let (trace, config) = two_on_one(0.0);
        let instant = simulate(&trace, hotspot(), &config).unwrap();
        assert_eq!((instant.migrations, instant.wake_ups), (1, 1));
        assert!((instant.contention_core_secs - 5.0 * 2.0 * 60.0).abs() < 1e-6);
        let joules = (100.0 + 5.0 * 300.0 + 54.0 * 225.0) * 60.0 + (6.0 * 10.0 + 54.0 * 225.0) * 60.0;
        assert!((instant.energy_kwh - joules / 3.6e6).abs() < 1e-9, "{} kWh", instant.energy_kwh);
        // 150 s to wake (3 steps): n01 draws its peak for steps 6-8 and runs nothing; the
        // container stays on the overloaded n00 until the end of step 8.
        let (trace, config) = two_on_one(150.0);
        let slow = simulate(&trace, hotspot(), &config).unwrap();
        assert_eq!((slow.migrations, slow.wake_ups), (1, 1));
        assert!((slow.contention_core_secs - 8.0 * 2.0 * 60.0).abs() < 1e-6, "{}", slow.contention_core_secs);
        assert_eq!(&slow.active_nodes[4..10], &[1, 1, 2, 2, 2, 2]);
        let joules = (100.0 + 8.0 * 300.0 + 51.0 * 225.0) * 60.0 + (6.0 * 10.0 + 3.0 * 300.0 + 51.0 * 225.0) * 60.0;
        assert!((slow.energy_kwh - joules / 3.6e6).abs() < 1e-9, "{} kWh", slow.energy_kwh);
    }

    #[test]
    fn the_energy_floor_is_below_every_policy_and_counts_standby() {
        let nodes = default_nodes(4);
        let capacity: f64 = nodes.iter().map(|n| n.cpu_cores).sum();
        let trace = generate(&GenSpec {
            shape: Shape::Daily,
            containers: 16,
            hours: 24.0,
            seed: 2,
            step_secs: 60.0,
            capacity_cores: capacity,
            peak_load: 0.8,
        });
        let floor = energy_floor(&trace, &nodes);
        for spec in ["none", "consolidate"] {
            let r = simulate(&trace, parse_policy(spec).unwrap(), &SimConfig::new(nodes.clone())).unwrap();
            assert!(floor < r.energy_kwh, "{spec}: {} kWh, floor {floor}", r.energy_kwh);
        }
        let standby_only: f64 = nodes.iter().map(|n| n.power.standby_watts).sum::<f64>() * 24.0 / 1000.0;
        assert!(floor > standby_only);
        assert!(energy_floor(&trace, &free_standby(&nodes)) < floor);
    }

    #[test]
    fn consolidate_packs_again_the_night_after_a_daytime_spread() {
        // Three 8-core nodes; six containers at 0.5 cores for 3 h (night), 3.5 cores for 2 h
        // (day: 21 of 24 cores), then 0.5 again for 7 h.
        let power = PowerModel::linear(100.0, 300.0).with_standby(10.0, 120.0);
        let node = |i: usize| Node { name: format!("n{i}"), cpu_cores: 8.0, memory_bytes: 32 << 30, power };
        let level = |t: usize| if (180..300).contains(&t) { 3.5 } else { 0.5 };
        let cpu: Vec<f64> = (0..720).map(level).collect();
        let trace = Trace {
            step_secs: 60.0,
            names: (0..6).map(|i| format!("c{i}")).collect(),
            cpu: vec![cpu; 6],
            memory: vec![vec![1 << 30; 720]; 6],
        };
        let config = SimConfig::new((0..3).map(node).collect());
        let r = simulate(&trace, parse_policy("consolidate").unwrap(), &config).unwrap();
        let active = |t: usize| r.active_nodes[t];
        assert_eq!(active(0), 3, "placed on every node");
        assert_eq!(active(170), 1, "packed in the first night: {:?}", &r.active_nodes[..180]);
        assert_eq!(active(299), 3, "spread in the day: {:?}", &r.active_nodes[180..300]);
        // The containers that left the packed node to relieve it may not go back to it for
        // 4 h (until about step 420); the night packing does not wait for that.
        assert!(active(400) <= 2, "{:?}", &r.active_nodes[300..420]);
        assert_eq!(active(719), 1, "{:?}", &r.active_nodes[300..]);
        assert!(r.wake_ups >= 2, "the day woke the sleeping nodes: {}", r.wake_ups);
    }
}
