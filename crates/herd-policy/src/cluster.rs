//! The cluster snapshot a policy evaluates: nodes (capacity, power model) and containers (where
//! they run, their recent CPU demand samples, their memory), plus [`Layout`], the working copy
//! of "which container is where, and how loaded is each node" that policies update as they
//! plan one move after another.

use serde::Serialize;

use crate::demand::DemandForecast;

/// A node's electrical power: the watts it draws at 0 %, 10 %, ..., 100 % CPU utilisation
/// (the eleven load levels SPECpower_ssj2008 reports), linearly interpolated in between, and
/// its low-power state: a node with no containers can be put into standby, where it draws
/// `standby_watts`, and needs `wake_secs` to be ready again (drawing its peak watts meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PowerModel {
    pub curve: [f64; 11],
    pub standby_watts: f64,
    pub wake_secs: f64,
}

impl PowerModel {
    /// A straight line from `idle_watts` to `peak_watts`; standby is free and instant.
    pub const fn linear(idle_watts: f64, peak_watts: f64) -> PowerModel {
        let mut curve = [0.0; 11];
        let mut i = 0;
        while i < 11 {
            curve[i] = idle_watts + (peak_watts - idle_watts) * i as f64 / 10.0;
            i += 1;
        }
        PowerModel { curve, standby_watts: 0.0, wake_secs: 0.0 }
    }

    /// The same model with standby drawing `watts` and a wake-up taking `secs`.
    pub const fn with_standby(self, watts: f64, secs: f64) -> PowerModel {
        PowerModel { standby_watts: watts, wake_secs: secs, ..self }
    }

    /// Watts drawn on and idle (0 % CPU).
    pub fn idle_watts(&self) -> f64 {
        self.curve[0]
    }

    /// Watts drawn at full load.
    pub fn peak_watts(&self) -> f64 {
        self.curve[10]
    }

    /// Watts drawn at CPU utilisation `util` (clamped to 0..=1).
    pub fn watts(&self, util: f64) -> f64 {
        let x = util.clamp(0.0, 1.0) * 10.0;
        let i = (x.floor() as usize).min(9);
        self.curve[i] + (self.curve[i + 1] - self.curve[i]) * (x - i as f64)
    }

    /// Checks that the curve is non-negative and does not fall with load, and that standby and
    /// wake-up are non-negative.
    pub fn check(&self) -> Result<(), String> {
        if self.curve.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(format!("power curve {:?} has a negative or non-finite value", self.curve));
        }
        if self.curve.windows(2).any(|w| w[1] < w[0]) {
            return Err(format!("power curve {:?} falls as load rises", self.curve));
        }
        if !(self.standby_watts.is_finite() && self.standby_watts >= 0.0) {
            return Err(format!("standby watts {} must be zero or more", self.standby_watts));
        }
        if !(self.wake_secs.is_finite() && self.wake_secs >= 0.0) {
            return Err(format!("wake-up time {} s must be zero or more", self.wake_secs));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    /// CPU capacity in cores.
    pub cpu_cores: f64,
    pub memory_bytes: u64,
    pub power: PowerModel,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    pub name: String,
    /// Index into [`Cluster::nodes`] of the node it runs on.
    pub node: usize,
    /// CPU demand in cores, one sample per [`Cluster::sample_secs`], oldest first; the last
    /// one is the current demand. Policies look at as many as they need.
    pub cpu: Vec<f64>,
    pub memory_bytes: u64,
    /// How fast it writes memory, bytes per second (0 if unknown): the cost model uses it.
    pub dirty_bytes_per_sec: f64,
    /// How the `forecast` policy forecasts its CPU demand (its own seasonal-naive by default).
    pub forecast: DemandForecast,
    /// It cannot move (it shares a network namespace or a named volume with other containers
    /// on its node): policies count its demand where it is and never plan its move.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

impl Container {
    /// The current CPU demand (0 without samples).
    pub fn cpu_now(&self) -> f64 {
        self.cpu.last().copied().unwrap_or(0.0)
    }

    /// The mean of the last `n` samples (fewer if there are fewer).
    pub fn cpu_mean(&self, n: usize) -> f64 {
        let tail = &self.cpu[self.cpu.len().saturating_sub(n.max(1))..];
        if tail.is_empty() { 0.0 } else { tail.iter().sum::<f64>() / tail.len() as f64 }
    }

    /// The largest of the last `n` samples.
    pub fn cpu_peak(&self, n: usize) -> f64 {
        self.cpu[self.cpu.len().saturating_sub(n.max(1))..].iter().copied().fold(0.0, f64::max)
    }

    /// Sample `i` counted back from the newest (0 = newest), if there is one.
    pub fn cpu_back(&self, i: usize) -> Option<f64> {
        self.cpu.len().checked_sub(i + 1).map(|j| self.cpu[j])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub containers: Vec<Container>,
    /// Seconds between two demand samples.
    pub sample_secs: f64,
}

impl Cluster {
    /// Checks that every container's node exists and capacities are positive.
    pub fn check(&self) -> Result<(), String> {
        for n in &self.nodes {
            if n.cpu_cores.is_nan() || n.cpu_cores <= 0.0 {
                return Err(format!("node {} has no CPU capacity", n.name));
            }
            n.power.check().map_err(|e| format!("node {}: {e}", n.name))?;
        }
        for c in &self.containers {
            if c.node >= self.nodes.len() {
                return Err(format!("container {} is on node #{} which does not exist", c.name, c.node));
            }
        }
        if self.sample_secs.is_nan() || self.sample_secs <= 0.0 {
            return Err("sample_secs must be positive".into());
        }
        Ok(())
    }
}

/// Where containers are and how loaded nodes are, by one demand estimate per container.
#[derive(Debug, Clone)]
pub struct Layout {
    pub node_of: Vec<usize>,
    /// The demand estimate used for each container, cores.
    pub demand: Vec<f64>,
    pub memory: Vec<u64>,
    pub node_cpu: Vec<f64>,
    pub node_mem: Vec<u64>,
    pub capacity: Vec<f64>,
    pub mem_capacity: Vec<u64>,
    /// Containers that cannot move (see [`Container::pinned`]).
    pub pinned: Vec<bool>,
}

impl Layout {
    /// The layout of `cluster` with each container's demand estimated by `demand`.
    pub fn new(cluster: &Cluster, demand: impl Fn(&Container) -> f64) -> Layout {
        let n = cluster.nodes.len();
        let mut layout = Layout {
            node_of: cluster.containers.iter().map(|c| c.node).collect(),
            demand: cluster.containers.iter().map(&demand).collect(),
            memory: cluster.containers.iter().map(|c| c.memory_bytes).collect(),
            node_cpu: vec![0.0; n],
            node_mem: vec![0; n],
            capacity: cluster.nodes.iter().map(|n| n.cpu_cores).collect(),
            mem_capacity: cluster.nodes.iter().map(|n| n.memory_bytes).collect(),
            pinned: cluster.containers.iter().map(|c| c.pinned).collect(),
        };
        for c in 0..layout.node_of.len() {
            let node = layout.node_of[c];
            layout.node_cpu[node] += layout.demand[c];
            layout.node_mem[node] += layout.memory[c];
        }
        layout
    }

    pub fn util(&self, node: usize) -> f64 {
        self.node_cpu[node] / self.capacity[node]
    }

    pub fn mem_util(&self, node: usize) -> f64 {
        self.node_mem[node] as f64 / self.mem_capacity[node].max(1) as f64
    }

    /// CPU utilisation of `to` if container `c` moved there.
    pub fn util_with(&self, c: usize, to: usize) -> f64 {
        (self.node_cpu[to] + self.demand[c]) / self.capacity[to]
    }

    /// Whether `c` fits on `to` with CPU utilisation at most `cpu_limit` and memory within
    /// capacity.
    pub fn fits(&self, c: usize, to: usize, cpu_limit: f64) -> bool {
        self.node_of[c] != to
            && self.util_with(c, to) <= cpu_limit
            && self.node_mem[to] + self.memory[c] <= self.mem_capacity[to]
    }

    pub fn containers_on(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.node_of.len()).filter(move |&c| self.node_of[c] == node)
    }

    /// The containers on `node` that may move.
    pub fn movable_on(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.containers_on(node).filter(move |&c| !self.pinned[c])
    }

    pub fn is_empty(&self, node: usize) -> bool {
        !self.node_of.contains(&node)
    }

    pub fn apply(&mut self, c: usize, to: usize) {
        let from = self.node_of[c];
        self.node_cpu[from] -= self.demand[c];
        self.node_mem[from] -= self.memory[c];
        self.node_cpu[to] += self.demand[c];
        self.node_mem[to] += self.memory[c];
        self.node_of[c] = to;
    }
}
