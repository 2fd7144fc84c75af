//! Generated traces: every container follows a daily cycle (its own peak size, a peak hour
//! near midday, night-time demand a fraction of the peak) with noise; `bursty` adds frequent
//! bursts (a few times a day per container, 10 to 40 minutes, up to twice the peak), `daily`
//! rare ones (about one a day), and `trend` grows every container from 60 % to 120 % of its
//! size over the trace. Container sizes are scaled so that the cluster-wide daily peak of the
//! plain cycle is `peak_load` (default 80 %) of the given capacity. Memory: 256 MiB to 4 GiB
//! per container, constant. The same seed gives the same trace.

use std::str::FromStr;

use crate::error::PolicyError;
use crate::sim::rng::Rng;
use crate::sim::trace::Trace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Daily,
    Bursty,
    Trend,
}

impl FromStr for Shape {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Shape, PolicyError> {
        match s {
            "daily" => Ok(Shape::Daily),
            "bursty" => Ok(Shape::Bursty),
            "trend" => Ok(Shape::Trend),
            other => Err(PolicyError::Trace(format!("unknown trace shape `{other}` (known: daily, bursty, trend)"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenSpec {
    pub shape: Shape,
    pub containers: usize,
    pub hours: f64,
    pub seed: u64,
    pub step_secs: f64,
    /// Total CPU capacity of the cluster the trace is meant for, cores.
    pub capacity_cores: f64,
    /// Cluster-wide daily peak of the plain cycle, as a fraction of `capacity_cores`.
    pub peak_load: f64,
}

const DAY: f64 = 86_400.0;

/// A trace as described in the module docs.
pub fn generate(spec: &GenSpec) -> Trace {
    let mut rng = Rng::new(spec.seed);
    let steps = (spec.hours * 3600.0 / spec.step_secs).round().max(1.0) as usize;
    let night = |rng: &mut Rng| rng.range(0.15, 0.35);
    struct Params {
        size: f64,
        peak_hour: f64,
        night: f64,
    }
    let params: Vec<Params> = (0..spec.containers)
        .map(|_| Params { size: rng.range(0.2, 1.0), peak_hour: rng.range(10.0, 17.0), night: night(&mut rng) })
        .collect();
    let cycle = |p: &Params, t: f64| {
        let phase = 2.0 * std::f64::consts::PI * (t - p.peak_hour * 3600.0) / DAY;
        p.night + (1.0 - p.night) * (0.5 + 0.5 * phase.cos())
    };
    // Scale sizes so the aggregate daily peak of the cycle is `peak_load` of capacity.
    let aggregate_peak = (0..(DAY / spec.step_secs) as usize)
        .map(|i| params.iter().map(|p| p.size * cycle(p, i as f64 * spec.step_secs)).sum::<f64>())
        .fold(0.0, f64::max);
    let scale = if aggregate_peak > 0.0 { spec.peak_load * spec.capacity_cores / aggregate_peak } else { 1.0 };
    let (burst_per_day, noise) = match spec.shape {
        Shape::Daily => (1.0, 0.05),
        Shape::Bursty => (4.0, 0.08),
        Shape::Trend => (1.0, 0.05),
    };
    let burst_p = burst_per_day * spec.step_secs / DAY;
    let mut trace = Trace { step_secs: spec.step_secs, names: Vec::new(), cpu: Vec::new(), memory: Vec::new() };
    for (i, p) in params.iter().enumerate() {
        let peak = p.size * scale;
        let memory = (rng.range(256.0, 4096.0) as u64) << 20;
        let mut cpu = Vec::with_capacity(steps);
        let mut burst_left = 0usize;
        let mut burst = 0.0;
        for s in 0..steps {
            let t = s as f64 * spec.step_secs;
            let mut v = peak * cycle(p, t) * (1.0 + noise * rng.normal());
            if spec.shape == Shape::Trend {
                v *= 0.6 + 0.6 * s as f64 / steps as f64;
            }
            if burst_left == 0 && rng.unit() < burst_p {
                burst_left = (rng.range(600.0, 2400.0) / spec.step_secs).ceil() as usize;
                burst = peak * rng.range(0.5, 1.0);
            }
            if burst_left > 0 {
                burst_left -= 1;
                v += burst;
            }
            cpu.push(v.max(0.0));
        }
        trace.names.push(format!("c{i:03}"));
        trace.cpu.push(cpu);
        trace.memory.push(vec![memory; steps]);
    }
    trace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: Shape) -> GenSpec {
        GenSpec { shape, containers: 20, hours: 48.0, seed: 7, step_secs: 60.0, capacity_cores: 40.0, peak_load: 0.8 }
    }

    #[test]
    fn traces_are_reproducible_and_cycle_daily() {
        let a = generate(&spec(Shape::Daily));
        assert_eq!(a, generate(&spec(Shape::Daily)));
        assert_ne!(a, generate(&GenSpec { seed: 8, ..spec(Shape::Daily) }));
        assert_eq!(a.steps(), 48 * 60);
        let total = |s: usize| a.cpu.iter().map(|c| c[s]).sum::<f64>();
        // Midday is much busier than 3 am, and the peak is near 80 % of 40 cores.
        assert!(total(13 * 60) > 2.0 * total(3 * 60), "{} vs {}", total(13 * 60), total(3 * 60));
        let peak = (0..a.steps()).map(total).fold(0.0, f64::max);
        assert!((28.0..42.0).contains(&peak), "{peak}");
    }

    #[test]
    fn trend_grows() {
        let t = generate(&spec(Shape::Trend));
        let day = |d: usize| t.cpu.iter().map(|c| c[d * 1440..(d + 1) * 1440].iter().sum::<f64>()).sum::<f64>();
        assert!(day(1) > 1.3 * day(0));
        assert!("weekly".parse::<Shape>().unwrap_err().to_string().contains("unknown trace shape `weekly`"));
    }
}
