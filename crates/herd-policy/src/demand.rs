//! How a policy forecasts one container's CPU demand: the seam between the `forecast` policy
//! and whoever chooses the model.
//!
//! [`DemandForecast::SeasonalNaive`] (the default, and what the simulator uses: it evaluates
//! thousands of snapshots, and the validated models cost milliseconds each) leaves it to the
//! policy's own smoothed seasonal-naive forecast. [`DemandForecast::Given`] carries a forecast
//! made elsewhere: the Control node forecasts each container with the model chosen for its
//! workload class on a slow cadence and caches the result ([`CachedForecast`]), so an
//! evaluation only slices and anchors it.

use serde::Serialize;

/// How the demand of one container is forecast.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DemandForecast {
    /// The policy's own seasonal-naive forecast from the container's samples.
    #[default]
    SeasonalNaive,
    /// A forecast made by a model outside the policy.
    Given(GivenForecast),
}

/// A forecast made outside the policy, as the change it predicts from now: the policy adds
/// `steps[k] - from_level` to the container's current level, so a forecast made a little
/// earlier still starts where the container is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GivenForecast {
    /// The model that made it (`ets`, `regression`, ...).
    pub model: String,
    /// The model's value for the newest sample (what `steps` are relative to), cores.
    pub from_level: f64,
    /// Predicted demand at the samples after the newest one, cores, oldest first.
    pub steps: Vec<f64>,
}

impl GivenForecast {
    /// `horizon` steps starting from `now` (the current level, cores), never below 0; past the
    /// end of `steps` the last one is held (with no steps at all, the current level).
    pub fn anchored(&self, now: f64, horizon: usize) -> Vec<f64> {
        let last = self.steps.last().copied().unwrap_or(self.from_level);
        (0..horizon).map(|k| (now + self.steps.get(k).copied().unwrap_or(last) - self.from_level).max(0.0)).collect()
    }
}

/// A forecast made at `origin_ms` (the time of the newest sample it was fitted on), one value
/// per `step_ms` after it, kept between refits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CachedForecast {
    pub model: String,
    pub origin_ms: u64,
    pub step_ms: u64,
    /// The newest value it was fitted on.
    pub last_value: f64,
    /// `values[k]` is the forecast for `origin_ms + (k + 1) * step_ms`.
    pub values: Vec<f64>,
}

impl CachedForecast {
    /// The part of the forecast after `now_ms`, relative to the forecast for `now_ms`; `None`
    /// once it has run out (the policy then falls back to its own forecast).
    pub fn at(&self, now_ms: u64) -> Option<GivenForecast> {
        let elapsed = (now_ms.saturating_sub(self.origin_ms) / self.step_ms.max(1)) as usize;
        if elapsed >= self.values.len() {
            return None;
        }
        let from_level = if elapsed == 0 { self.last_value } else { self.values[elapsed - 1] };
        Some(GivenForecast { model: self.model.clone(), from_level, steps: self.values[elapsed..].to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_forecast_is_anchored_at_the_current_level() {
        let g = GivenForecast { model: "ets".into(), from_level: 1.0, steps: vec![1.5, 2.0] };
        assert_eq!(g.anchored(0.5, 4), vec![1.0, 1.5, 1.5, 1.5]);
        let falling = GivenForecast { model: "ets".into(), from_level: 1.0, steps: vec![0.0] };
        assert_eq!(falling.anchored(0.5, 1), vec![0.0]);
        let empty = GivenForecast { model: "ets".into(), from_level: 1.0, steps: vec![] };
        assert_eq!(empty.anchored(0.7, 2), vec![0.7, 0.7]);
    }

    #[test]
    fn the_forecast_policy_acts_on_a_given_forecast() {
        use crate::cluster::{Cluster, Container, Node, PowerModel};
        use crate::cost::CostModel;

        let node = |name: &str| Node {
            name: name.into(),
            cpu_cores: 4.0,
            memory_bytes: 64 << 30,
            power: PowerModel::linear(100.0, 300.0),
        };
        let ct = |name: &str, forecast: DemandForecast| Container {
            name: name.into(),
            node: 0,
            cpu: vec![1.5; 10],
            memory_bytes: 1 << 30,
            dirty_bytes_per_sec: 0.0,
            forecast,
            pinned: false,
        };
        let rising = DemandForecast::Given(GivenForecast { model: "ets".into(), from_level: 1.5, steps: vec![2.5; 5] });
        let cluster = |f: DemandForecast| Cluster {
            nodes: vec![node("a"), node("b")],
            containers: vec![ct("up", f), ct("flat", DemandForecast::SeasonalNaive)],
            sample_secs: 60.0,
        };
        let policy = crate::parse_policy("forecast").unwrap();
        // Flat history: its own forecast sees no hot spot (0.75 of a's CPU, threshold 0.85).
        assert!(policy.plan(&cluster(DemandForecast::SeasonalNaive), &CostModel::default()).moves.is_empty());
        // The given forecast has `up` rise by a core: a peaks at 100 % and `up` moves to b.
        let plan = policy.plan(&cluster(rising), &CostModel::default());
        assert_eq!(plan.moves.len(), 1, "{plan:?}");
        assert_eq!((plan.moves[0].container.as_str(), plan.moves[0].to.as_str()), ("up", "b"));
        assert_eq!(policy.forecast_horizon_secs(), Some(600.0));
        assert_eq!(crate::parse_policy("hotspot").unwrap().forecast_horizon_secs(), None);
    }

    #[test]
    fn a_cached_forecast_is_sliced_by_the_time_elapsed() {
        let c = CachedForecast {
            model: "regression".into(),
            origin_ms: 10_000,
            step_ms: 1000,
            last_value: 1.0,
            values: vec![2.0, 3.0, 4.0],
        };
        let now = c.at(10_500).unwrap();
        assert_eq!((now.from_level, now.steps.as_slice()), (1.0, &[2.0, 3.0, 4.0][..]));
        let later = c.at(12_000).unwrap();
        assert_eq!((later.from_level, later.steps.as_slice()), (3.0, &[4.0][..]));
        assert_eq!(c.at(13_000), None);
        // A clock behind the origin counts as no time elapsed.
        assert_eq!(c.at(0).unwrap().from_level, 1.0);
    }
}
