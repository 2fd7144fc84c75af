//! `forecast`: relieve a node before it gets hot. Each container's demand over the next
//! `horizon` is its current level plus the change the seasonal-naive model of `herd-forecast`
//! expects (what followed the same time a day earlier, smoothed over `level` samples; the
//! cheapest model that follows a daily cycle, so the simulator can call it thousands of times),
//! or the current level without a day of history. Node loads are forecast step by step (the
//! sum of their containers' forecasts), and a node whose predicted peak utilisation exceeds
//! `threshold` in the forecasts made at `k` of the last `n` samples (a predicted peak must
//! persist) is relieved as in `hotspot`: the move cutting most of the peak per unit of cost, to
//! a node whose predicted peak stays at most `threshold - margin` over the horizon, preferring
//! one that also stays under `threshold` for `hold` (the engine's hysteresis: the container
//! cannot come back sooner), running nodes first. Only when the node is predicted above its
//! capacity may a receiver come up to `threshold`: a move for a peak under capacity that leaves
//! the receiver near its threshold makes the next hot spot at the receiver's next burst.

use herd_forecast::models::{fit_and_forecast, naive::SeasonalNaive};

use crate::cluster::{Cluster, Container, Layout};
use crate::cost::CostModel;
use crate::demand::DemandForecast;
use crate::plan::{Explanation, Move, Plan, fig};
use crate::policies::Policy;

#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub horizon_secs: f64,
    pub threshold: f64,
    pub margin: f64,
    /// Season length, seconds (a day).
    pub season_secs: f64,
    /// Samples compared with a season earlier to scale the forecast.
    pub level: usize,
    pub max_moves: usize,
    /// A node is relieved only if the forecasts made at `k` of the last `n` samples each
    /// predicted its peak above `threshold` (a forecast peak must persist, as in `hotspot`).
    pub k: usize,
    pub n: usize,
    /// A receiver must be predicted to stay at or below `threshold` with the container for this
    /// long if any can (by default the engine's hysteresis: the container cannot come back
    /// sooner), so that a move does not make the next hot spot.
    pub hold_secs: f64,
}

impl Default for Forecast {
    fn default() -> Self {
        Forecast {
            horizon_secs: 600.0,
            threshold: 0.85,
            margin: 0.1,
            season_secs: 86_400.0,
            level: 15,
            max_moves: 4,
            k: 3,
            n: 5,
            hold_secs: 4.0 * 3600.0,
        }
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

impl Forecast {
    fn steps(&self, sample_secs: f64) -> (usize, usize) {
        let season = (self.season_secs / sample_secs).round() as usize;
        let horizon = ((self.horizon_secs / sample_secs).ceil() as usize).max(1);
        (season, horizon)
    }

    /// Steps over which a receiver is checked: at least the horizon.
    fn hold_steps(&self, sample_secs: f64) -> usize {
        let (_, horizon) = self.steps(sample_secs);
        ((self.hold_secs / sample_secs).ceil() as usize).max(horizon)
    }

    /// The predicted CPU demand of `c` at each step of the horizon, cores: the current level
    /// (mean of the last 3 samples) plus the change the seasonal-naive forecast expects from
    /// now to that step, both smoothed over `level` samples so that yesterday's short bursts
    /// are not taken to repeat. Without a season of history: the current level.
    pub fn predict(&self, c: &Container, sample_secs: f64) -> Vec<f64> {
        self.forecast_of(c, &c.cpu, sample_secs, self.steps(sample_secs).1)
    }

    /// The forecast of container `c` from its samples `h` (all of them, or those up to an
    /// earlier sample), `horizon` steps: when the container comes with a forecast made
    /// elsewhere ([`DemandForecast::Given`]: the Control node's per-class model), that one,
    /// anchored at the current level of `h` (mean of its last 3 samples); else
    /// [`Forecast::predict_from`].
    pub fn forecast_of(&self, c: &Container, h: &[f64], sample_secs: f64, horizon: usize) -> Vec<f64> {
        match &c.forecast {
            DemandForecast::Given(g) => g.anchored(mean(&h[h.len().saturating_sub(3)..]), horizon),
            DemandForecast::SeasonalNaive => self.predict_from(h, sample_secs, horizon),
        }
    }

    /// As [`Forecast::predict`], from the demand samples `h` (oldest first), `horizon` steps.
    pub fn predict_from(&self, h: &[f64], sample_secs: f64, horizon: usize) -> Vec<f64> {
        let tail = &h[h.len().saturating_sub(3)..];
        let now = mean(tail);
        let (season, _) = self.steps(sample_secs);
        let w = self.level.max(1);
        if season < 2 || h.len() < season + w || horizon + w > season {
            return vec![now; horizon];
        }
        // What happened a season ago around now (the last `w` samples before this point) ...
        let before = &h[h.len() - season - w..h.len() - season];
        // ... and after it, as the seasonal-naive model forecasts it.
        let Ok((after, _)) = fit_and_forecast(&SeasonalNaive, &h[h.len() - season..], Some(season), horizon + w) else {
            return vec![now; horizon];
        };
        let ago: Vec<f64> = before.iter().chain(&after).copied().collect();
        // Means over `w` samples centred on each point (the base: the `w` samples up to now).
        let smooth = |i: usize| mean(&ago[i..i + w]);
        let base = smooth(0);
        (1..=horizon).map(|k| (now + smooth(k + w / 2) - base).max(0.0)).collect()
    }
}

/// Predicted load of every node at every step of the hold period (the horizon is its start).
struct Outlook {
    /// `fc[container][step]`
    fc: Vec<Vec<f64>>,
    /// `load[node][step]`
    load: Vec<Vec<f64>>,
    node_of: Vec<usize>,
    /// Steps of the horizon (the first ones of `fc` and `load`).
    horizon: usize,
}

impl Outlook {
    fn new(cluster: &Cluster, fc: Vec<Vec<f64>>, horizon: usize) -> Outlook {
        let steps = fc.first().map_or(horizon, Vec::len);
        let mut load = vec![vec![0.0; steps]; cluster.nodes.len()];
        for (c, ct) in cluster.containers.iter().enumerate() {
            for (h, f) in fc[c].iter().enumerate() {
                load[ct.node][h] += f;
            }
        }
        Outlook { fc, load, node_of: cluster.containers.iter().map(|c| c.node).collect(), horizon }
    }

    /// Peak utilisation of node `n` over the first `steps` steps.
    fn peak_over(&self, cluster: &Cluster, n: usize, steps: usize) -> f64 {
        self.load[n][..steps.min(self.load[n].len())].iter().copied().fold(0.0, f64::max) / cluster.nodes[n].cpu_cores
    }

    fn peak(&self, cluster: &Cluster, n: usize) -> f64 {
        self.peak_over(cluster, n, self.horizon)
    }

    /// Peak utilisation of node `n` over the first `steps` steps with container `c` added
    /// (`sign` 1) or taken away (`sign` -1).
    fn peak_with(&self, cluster: &Cluster, c: usize, n: usize, sign: f64, steps: usize) -> f64 {
        self.load[n].iter().zip(&self.fc[c]).take(steps).map(|(l, f)| l + sign * f).fold(0.0, f64::max)
            / cluster.nodes[n].cpu_cores
    }

    fn apply(&mut self, c: usize, to: usize) {
        let from = self.node_of[c];
        for (h, f) in self.fc[c].iter().enumerate() {
            self.load[from][h] -= f;
            self.load[to][h] += f;
        }
        self.node_of[c] = to;
    }
}

impl Forecast {
    /// How many of the forecasts made at the last `n` samples predicted each node's peak over
    /// the horizon above `threshold` (the newest one is `outlook`'s).
    fn hot_forecasts(&self, cluster: &Cluster, outlook: &Outlook) -> Vec<usize> {
        let mut counts: Vec<usize> =
            (0..cluster.nodes.len()).map(|n| usize::from(outlook.peak(cluster, n) > self.threshold)).collect();
        let shortest = cluster.containers.iter().map(|c| c.cpu.len()).min().unwrap_or(0);
        for back in 1..self.n.min(shortest) {
            let fc = cluster
                .containers
                .iter()
                .map(|ct| self.forecast_of(ct, &ct.cpu[..ct.cpu.len() - back], cluster.sample_secs, outlook.horizon))
                .collect();
            let earlier = Outlook::new(cluster, fc, outlook.horizon);
            for (n, count) in counts.iter_mut().enumerate() {
                if earlier.peak(cluster, n) > self.threshold {
                    *count += 1;
                }
            }
        }
        counts
    }
}

impl Policy for Forecast {
    fn spec(&self) -> String {
        format!(
            "forecast:horizon={},threshold={},margin={},k={},n={},hold={}",
            self.horizon_secs, self.threshold, self.margin, self.k, self.n, self.hold_secs
        )
    }

    fn forecast_horizon_secs(&self) -> Option<f64> {
        Some(self.horizon_secs)
    }

    fn plan(&self, cluster: &Cluster, cost: &CostModel) -> Plan {
        let (_, horizon) = self.steps(cluster.sample_secs);
        let hold = self.hold_steps(cluster.sample_secs);
        let fc: Vec<Vec<f64>> =
            cluster.containers.iter().map(|c| self.forecast_of(c, &c.cpu, cluster.sample_secs, hold)).collect();
        let mut o = Outlook::new(cluster, fc, horizon);
        let counts = self.hot_forecasts(cluster, &o);
        let mut mem = Layout::new(cluster, |_| 0.0);
        let now = Layout::new(cluster, |c| c.cpu_now());
        let mut hot: Vec<usize> = (0..cluster.nodes.len()).filter(|&n| counts[n] >= self.k).collect();
        hot.sort_by(|&a, &b| o.peak(cluster, b).total_cmp(&o.peak(cluster, a)));
        let limit = self.threshold - self.margin;
        let mut moves = Vec::new();
        for node in hot {
            while o.peak(cluster, node) > self.threshold && moves.len() < self.max_moves {
                let before = o.peak(cluster, node);
                let excess = before - self.threshold;
                let receiver_cap = if before > 1.0 { self.threshold } else { limit };
                let mut best: Option<(f64, usize, usize, f64)> = None;
                for c in (0..o.node_of.len()).filter(|&c| o.node_of[c] == node && !cluster.containers[c].pinned) {
                    // The receiver: within `limit` over the horizon and `threshold` over the
                    // hold period if one is, running nodes first, then the lowest peak.
                    // A receiver may come within `margin` of the threshold only when this node
                    // is predicted above its capacity: such a move prevents contention, while
                    // one made for a peak under capacity would make the receiver the next hot
                    // spot at its next burst.
                    let target = (0..cluster.nodes.len())
                        .filter(|&t| t != node && mem.fits(c, t, f64::INFINITY))
                        .map(|t| {
                            let short = o.peak_with(cluster, c, t, 1.0, horizon);
                            let long = o.peak_with(cluster, c, t, 1.0, hold);
                            ((short > limit, long > self.threshold, mem.is_empty(t)), short, long, t)
                        })
                        .filter(|x| x.1 <= receiver_cap)
                        .min_by(|a, b| a.0.cmp(&b.0).then(a.2.total_cmp(&b.2)));
                    let Some((_, _, _, to)) = target else { continue };
                    let relief = (before - o.peak_with(cluster, c, node, -1.0, horizon)).min(excess)
                        * cluster.nodes[node].cpu_cores;
                    let ct = &cluster.containers[c];
                    let score = relief / cost.predict(ct.memory_bytes, ct.dirty_bytes_per_sec).weight(cost).max(1e-6);
                    if relief > 0.0 && best.is_none_or(|b| score > b.0) {
                        best = Some((score, c, to, relief));
                    }
                }
                let Some((score, c, to, relief)) = best else { break };
                let ct = &cluster.containers[c];
                let figures = vec![
                    fig("from_util_now", now.util(node)),
                    fig("from_predicted_peak_util", before),
                    fig("hot_forecasts", counts[node] as f64),
                    fig("of_last", self.n as f64),
                    fig("to_predicted_peak_util_before", o.peak(cluster, to)),
                    fig("to_predicted_peak_util_after", o.peak_with(cluster, c, to, 1.0, horizon)),
                    fig("to_predicted_peak_util_over_hold", o.peak_with(cluster, c, to, 1.0, hold)),
                    fig("container_predicted_peak_cpu", o.fc[c][..horizon].iter().copied().fold(0.0, f64::max)),
                    fig("horizon_secs", self.horizon_secs),
                    fig("threshold", self.threshold),
                ];
                moves.push(Move::new(
                    cluster,
                    c,
                    node,
                    to,
                    score,
                    Explanation {
                        policy: "forecast".into(),
                        summary: format!(
                            "{} is predicted to peak at {:.0}% CPU within {:.0} min (threshold {:.0}%, now {:.0}%; in {} of the last {} forecasts): moving {} to {} cuts {:.2} cores of the peak",
                            cluster.nodes[node].name,
                            before * 100.0,
                            self.horizon_secs / 60.0,
                            self.threshold * 100.0,
                            now.util(node) * 100.0,
                            counts[node],
                            self.n,
                            ct.name,
                            cluster.nodes[to].name,
                            relief
                        ),
                        figures,
                        predicted_gain: relief,
                        gain_unit: "predicted peak cores above threshold".into(),
                        estimated_cost: cost.predict(ct.memory_bytes, ct.dirty_bytes_per_sec),
                    },
                ));
                o.apply(c, to);
                mem.apply(c, to);
            }
        }
        Plan { moves, ..Plan::default() }
    }
}
