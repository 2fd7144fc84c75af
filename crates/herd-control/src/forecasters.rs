//! The forecasting model per workload class, for the `forecast` policy.
//!
//! Every [`EVERY`] (while the running policy forecasts at all), the Control node copies the
//! last [`HISTORY_MS`] of every running container's recorded series, classifies the containers
//! (`herd-workload`, as `herd analyze classes` does), compares the models of `herd-forecast` on
//! each class's CPU and memory series by pooled rolling validation (as `herd analyze models`
//! does, bounded by [`LIMITS`]) and keeps the best per class. It then fits each container's
//! class's CPU model on that container's history and forecasts the policy's horizon plus one
//! refresh period ahead. The forecasts are cached ([`CachedForecast`]); an evaluation only
//! slices them by the time elapsed and the policy anchors them at the current level, so the
//! per-evaluation cost stays a copy of a few hundred numbers per container.
//!
//! Stated fallbacks, each to the policy's own seasonal-naive forecast: a container without a
//! class (fewer than 10 samples), in a class without a winner (too little history for the
//! horizon), whose model fails to fit, beyond the first [`MAX_FORECAST`] containers, or whose
//! cached forecast has run out. The memory model is chosen and shown but not used: the policies
//! take memory as a constraint at its current size.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_forecast::{Series, models, season};
use herd_metrics::history::QueryResult;
use herd_policy::CachedForecast;
use herd_proto::policy::{ClassModelInfo, ForecastersInfo};
use herd_workload::{ClassRules, Field, ModelLimits, Recording, class_models};

/// How often the models are chosen again and the forecasts refitted.
pub const EVERY: Duration = Duration::from_secs(120);
/// How much of each container's history is used.
pub const HISTORY_MS: u64 = 30 * 60 * 1000;
/// The validation's horizon is the policy's, at most this many steps: a class has a winner once
/// its containers have twice this many samples (2 minutes of 1 s samples), and the ranking at
/// this horizon stands in for the policy's longer one.
pub const MAX_VALIDATION_HORIZON: usize = 60;
/// Containers validated per class, and the samples of each.
pub const LIMITS: ModelLimits = ModelLimits { max_containers: 4, max_points: 1800 };
/// Containers forecast by their class's model per refresh.
pub const MAX_FORECAST: usize = 200;

/// One running container's recorded series, copied out of the monitoring history.
pub struct Recorded {
    pub name: String,
    pub series: QueryResult,
}

/// The choice and the forecasts it made.
pub struct Choice {
    pub cache: Arc<HashMap<String, CachedForecast>>,
    pub info: ForecastersInfo,
}

/// What the policy engine keeps between refreshes.
pub struct Forecasters {
    pub cache: Arc<HashMap<String, CachedForecast>>,
    pub info: ForecastersInfo,
    pub running: bool,
    started: Option<Instant>,
}

impl Default for Forecasters {
    fn default() -> Self {
        Forecasters {
            cache: Arc::default(),
            info: ForecastersInfo {
                refreshed_at: None,
                every_secs: EVERY.as_secs_f64(),
                horizon_steps: 0,
                classes: Vec::new(),
                containers_forecast: 0,
                note: "not chosen yet: the models are chosen while a policy that forecasts (forecast) runs".into(),
            },
            running: false,
            started: None,
        }
    }
}

impl Forecasters {
    /// Whether a refresh should start now; if so, marks one as running.
    pub fn start_if_due(&mut self, now: Instant) -> bool {
        if self.running || self.started.is_some_and(|t| now.duration_since(t) < EVERY) {
            return false;
        }
        self.running = true;
        self.started = Some(now);
        true
    }

    pub fn finish(&mut self, choice: Choice) {
        self.cache = choice.cache;
        self.info = choice.info;
        self.running = false;
    }
}

/// Chooses the models and forecasts the containers (CPU-heavy: run it off the async runtime).
/// `horizon_steps` is the policy's horizon in samples of `step_ms`.
pub fn choose(recorded: Vec<Recorded>, step_ms: u64, horizon_steps: usize, now_ms: u64) -> Choice {
    let mut rec = Recording::default();
    for r in &recorded {
        rec.push_recorded(&r.name, &r.series.fields, r.series.points.iter().map(|p| (p.ts_ms, p.values.as_slice())));
    }
    let report = herd_workload::report(&rec, &ClassRules::default());
    let validation = horizon_steps.clamp(1, MAX_VALIDATION_HORIZON);
    let chosen = class_models(&rec, &report, validation, &LIMITS);
    let ahead = horizon_steps.max(1) + (EVERY.as_millis() as u64 / step_ms.max(1)) as usize;
    let mut cache = HashMap::new();
    let mut failed = 0;
    for c in report.containers.iter().take(MAX_FORECAST) {
        let Some(name) = chosen.class(c.class).and_then(|m| m.cpu_model()) else { continue };
        let Some(model) = models::by_name(name) else { continue };
        let Some(samples) = rec.containers.get(&c.name) else { continue };
        let samples = &samples[samples.len().saturating_sub(LIMITS.max_points)..];
        let values: Vec<f64> = samples.iter().filter_map(|s| s.get(Field::CPU)).collect();
        let (Some(last), Some(newest)) = (values.last().copied(), samples.last()) else { continue };
        let season = season::detect(&Series::new(&c.name, values.clone())).ok().and_then(|s| s.length);
        match models::fit_and_forecast(model.as_ref(), &values, season, ahead) {
            Ok((forecast, _)) => {
                cache.insert(
                    c.name.clone(),
                    CachedForecast {
                        model: name.to_string(),
                        origin_ms: (newest.t * 1000.0).round() as u64,
                        step_ms,
                        last_value: last,
                        values: forecast,
                    },
                );
            }
            Err(e) => {
                failed += 1;
                tracing::debug!("policy: {name} cannot forecast {}: {e}; it uses seasonal-naive", c.name);
            }
        }
    }
    let classes = chosen
        .classes
        .iter()
        .map(|c| ClassModelInfo {
            class: c.class.as_str().into(),
            containers: c.containers.len(),
            cpu_model: c.cpu.best.clone(),
            cpu_rmse: c.cpu.best.as_deref().and_then(|b| c.cpu.model(b)).map(|m| m.accuracy.rmse),
            memory_model: c.memory.best.clone(),
            memory_rmse: c.memory.best.as_deref().and_then(|b| c.memory.model(b)).map(|m| m.accuracy.rmse),
        })
        .collect();
    let others = recorded.len() - cache.len();
    let mut note = format!(
        "{} of {} running containers forecast by their class's model; the others use seasonal-naive",
        cache.len(),
        recorded.len()
    );
    if others > 0 {
        note.push_str(&format!(
            " ({} unclassified, {failed} whose model failed, the rest in classes with too little history for a {validation}-step validation or beyond the first {MAX_FORECAST})",
            recorded.len() - report.containers.len()
        ));
    }
    let info = ForecastersInfo {
        refreshed_at: Some(now_ms),
        every_secs: EVERY.as_secs_f64(),
        horizon_steps: validation,
        classes,
        containers_forecast: cache.len(),
        note,
    };
    Choice { cache: Arc::new(cache), info }
}
