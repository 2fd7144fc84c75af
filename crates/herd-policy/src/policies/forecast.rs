//! `forecast`: relieve a node before it gets hot. Each container's demand over the next
//! `horizon` is forecast with the seasonal-naive model of `herd-forecast` (a day earlier,
//! scaled by how the last `level` samples compare with the same samples a day earlier; the
//! cheapest model that follows a daily cycle, so the simulator can call it thousands of times),
//! or the current level without a day of history. A node whose predicted peak utilisation
//! exceeds `threshold` is relieved as in `hotspot`, by the predicted peaks.

use herd_forecast::models::{fit_and_forecast, naive::SeasonalNaive};

use crate::cluster::{Cluster, Container, Layout};
use crate::cost::CostModel;
use crate::plan::{Plan, fig};
use crate::policies::Policy;
use crate::policies::relieve::Relief;

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
}

impl Default for Forecast {
    fn default() -> Self {
        Forecast { horizon_secs: 1800.0, threshold: 0.75, margin: 0.1, season_secs: 86_400.0, level: 15, max_moves: 4 }
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

impl Forecast {
    /// The predicted peak CPU demand of `c` over the horizon, cores.
    pub fn predict(&self, c: &Container, sample_secs: f64) -> f64 {
        let now = c.cpu_mean(3);
        let season = (self.season_secs / sample_secs).round() as usize;
        let horizon = ((self.horizon_secs / sample_secs).ceil() as usize).max(1);
        let h = &c.cpu;
        if season < 2 || h.len() < season + self.level {
            return now;
        }
        let Ok((values, _)) = fit_and_forecast(&SeasonalNaive, &h[h.len() - season..], Some(season), horizon) else {
            return now;
        };
        let recent = mean(&h[h.len() - self.level..]);
        let ago = mean(&h[h.len() - season - self.level..h.len() - season]);
        let scale = if ago > 1e-3 { (recent / ago).clamp(0.5, 2.0) } else { 1.0 };
        let peak = values.iter().copied().fold(0.0, f64::max) * scale;
        peak.max(now)
    }
}

impl Policy for Forecast {
    fn spec(&self) -> String {
        format!("forecast:horizon={},threshold={},margin={}", self.horizon_secs, self.threshold, self.margin)
    }

    fn plan(&self, cluster: &Cluster, cost: &CostModel) -> Plan {
        let mut layout = Layout::new(cluster, |c| self.predict(c, cluster.sample_secs));
        let now = Layout::new(cluster, |c| c.cpu_now());
        let hot: Vec<usize> = (0..cluster.nodes.len()).filter(|&n| layout.util(n) > self.threshold).collect();
        let relief = Relief {
            policy: "forecast",
            trigger: self.threshold,
            limit: self.threshold - self.margin,
            max_moves: self.max_moves,
            gain_unit: "predicted cores above threshold",
        };
        let predicted: Vec<f64> = (0..cluster.nodes.len()).map(|n| layout.util(n)).collect();
        let figures = |n: usize| {
            vec![
                fig("util_now", now.util(n)),
                fig("predicted_peak_util", predicted[n]),
                fig("horizon_secs", self.horizon_secs),
            ]
        };
        let moves = relief.run(cluster, cost, &mut layout, hot, &figures);
        Plan { moves, ..Plan::default() }
    }
}
