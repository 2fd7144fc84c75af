//! The policy engine in the Control node: every interval, a snapshot of the cluster (ready
//! nodes and their capacity, running containers with their recent CPU samples and memory) goes
//! through the [`Engine`] with the current policy, and each planned move is explained in an
//! event (kind `policy`) and carried out, one after the other, as a live migration. The last
//! decisions are kept for `herd policy explain`. The default policy is `none`: nothing moves.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_broker::{Broker, Bucket};
use herd_metrics::history::SeriesId;
use herd_policy::cost::{Calibration, Observation, calibrate};
use herd_policy::{
    CachedForecast, Cluster, Container, CostModel, DemandForecast, Engine, EngineConfig, Move, Node, Policy,
    PowerModel, parse_policy,
};
use herd_proto::api::{MigrateRequest, NodeState};
use herd_proto::migration::Outcome;
use herd_proto::now_millis;
use herd_proto::policy::{CostModelInfo, PolicyDecision, PolicyFigure, PolicyInfo, SetPolicyRequest, StoredPolicy};
use herd_proto::state::{Availability, ContainerState};
use herd_proto::subjects;

use crate::control::{Control, ControlConfig};
use crate::error::{Error, Kind, Result};
use crate::forecasters::{self, Forecasters, Recorded};

/// How many decisions `herd policy explain` can show.
const DECISIONS_KEPT: usize = 200;
/// How much of each container's history a policy sees.
const WINDOW_MS: u64 = 300_000;
/// The power model of a node, for the policies that count watts: nodes do not report theirs.
const POWER: PowerModel = PowerModel::linear(100.0, 300.0);
/// The shortest evaluation interval accepted.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The engine and what it decided.
pub struct PolicyState {
    engine: Engine,
    interval: Duration,
    since: u64,
    evaluations: u64,
    decisions: VecDeque<PolicyDecision>,
    /// Where the running policy came from: `set`, `flag`, `config` or `default`.
    source: String,
    /// The policy the Control node was started with, and its source: `herd policy reset`
    /// returns to it.
    configured: (String, Duration, String),
    /// Where `herd policy set` keeps its choice; holding its lock serialises changes, so the
    /// stored and the running policy cannot end up different.
    store: Arc<tokio::sync::Mutex<Bucket<StoredPolicy>>>,
    /// The cost model the engine uses, and where it came from.
    calibration: Calibration,
    /// The forecasting model per workload class, and each container's cached forecast.
    forecasters: Forecasters,
}

impl PolicyState {
    /// The engine with the configured policy (`cfg.policy`, checked first so a bad flag fails
    /// before anything else), unless a policy stored by `herd policy set` overrides it. A
    /// stored policy this build cannot parse (from a newer version, say) is logged and the
    /// configured one runs instead.
    pub async fn load(broker: &Broker, cfg: &ControlConfig) -> anyhow::Result<PolicyState> {
        let policy = parse_policy(&cfg.policy).map_err(|e| anyhow::anyhow!("--policy {:?}: {e}", cfg.policy))?;
        let interval = cfg.policy_interval;
        check_interval(interval.as_secs_f64()).map_err(|e| anyhow::anyhow!("--policy-interval: {e}"))?;
        let store: Bucket<StoredPolicy> = broker.bucket(subjects::POLICY_BUCKET).await?;
        let mut state = PolicyState {
            engine: Engine::new(policy, CostModel::default(), EngineConfig::default()),
            interval,
            since: now_millis(),
            evaluations: 0,
            decisions: VecDeque::new(),
            source: cfg.policy_source.clone(),
            configured: (cfg.policy.clone(), interval, cfg.policy_source.clone()),
            store: Arc::new(tokio::sync::Mutex::new(store.clone())),
            calibration: Calibration::default_with(CostModel::default(), "defaults: no migration reports read yet"),
            forecasters: Forecasters::default(),
        };
        let stored = match store.get(subjects::POLICY_KEY).await {
            Ok(s) => s.map(|v| v.value),
            Err(e) => {
                tracing::warn!("policy: the stored policy cannot be read ({e:#}); running {}", cfg.policy);
                None
            }
        };
        if let Some(stored) = stored {
            match (parse_policy(&stored.spec), check_interval(stored.interval_secs)) {
                (Ok(p), Ok(())) => {
                    if stored.spec != cfg.policy {
                        tracing::info!(
                            "policy: running {} as set by herd policy set; it overrides the configured {} (herd policy reset returns to it)",
                            stored.spec,
                            cfg.policy
                        );
                    }
                    state.engine.policy = p;
                    state.interval = Duration::from_secs_f64(stored.interval_secs);
                    state.since = stored.set_at;
                    state.source = "set".into();
                }
                (Err(e), _) => tracing::warn!(
                    "policy: the stored policy {:?} is not valid here ({e}); running the configured {}",
                    stored.spec,
                    cfg.policy
                ),
                (_, Err(e)) => tracing::warn!(
                    "policy: the stored interval is not valid ({e}); running the configured {}",
                    cfg.policy
                ),
            }
        }
        Ok(state)
    }

    fn info(&self) -> PolicyInfo {
        let c = self.engine.config;
        PolicyInfo {
            spec: self.engine.policy.spec(),
            interval_secs: self.interval.as_secs_f64(),
            max_concurrent: c.max_concurrent,
            cooldown_secs: c.cooldown_secs,
            hysteresis_secs: c.hysteresis_secs,
            since: self.since,
            evaluations: self.evaluations,
            source: self.source.clone(),
            configured_spec: self.configured.0.clone(),
            cost_model: Some(cost_info(&self.calibration)),
            forecasters: Some(self.forecasters.info.clone()),
        }
    }

    fn record(&mut self, d: PolicyDecision) {
        if self.decisions.len() == DECISIONS_KEPT {
            self.decisions.pop_front();
        }
        self.decisions.push_back(d);
    }

    /// Sets the outcome of the newest decision about `container`.
    fn settle(&mut self, container: &str, outcome: &str, detail: String) {
        if let Some(d) = self.decisions.iter_mut().rev().find(|d| d.container == container) {
            d.outcome = outcome.into();
            d.detail = Some(detail);
        }
    }
}

/// A `PUT /v1/policy` request's policy and interval (`None`: unchanged), checked.
pub fn check_set_policy(req: &SetPolicyRequest) -> Result<(Box<dyn Policy>, Option<Duration>)> {
    let policy = parse_policy(&req.spec).map_err(|e| Error::bad_request(e.to_string()))?;
    if let Some(secs) = req.interval_secs {
        check_interval(secs).map_err(Error::bad_request)?;
    }
    Ok((policy, req.interval_secs.map(Duration::from_secs_f64)))
}

/// The longest evaluation interval: a day (and so one that a `Duration` holds).
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

fn check_interval(secs: f64) -> std::result::Result<(), String> {
    if secs.is_finite() && secs >= MIN_INTERVAL.as_secs_f64() && secs <= MAX_INTERVAL.as_secs_f64() {
        Ok(())
    } else {
        Err(format!(
            "the interval must be at least {} s and at most {} s (a day), not {secs}",
            MIN_INTERVAL.as_secs_f64(),
            MAX_INTERVAL.as_secs_f64()
        ))
    }
}

fn cost_info(c: &Calibration) -> CostModelInfo {
    CostModelInfo {
        basis: c.basis.into(),
        mode: c.mode.clone(),
        reports: c.reports,
        downtime_intercept_secs: c.model.downtime.intercept_secs,
        downtime_secs_per_gib: c.model.downtime.secs_per_gib,
        total_intercept_secs: c.model.total.intercept_secs,
        total_secs_per_gib: c.model.total.secs_per_gib,
        why: c.why.clone(),
    }
}

/// A planned move as the API shows it.
fn decision(m: &Move) -> PolicyDecision {
    let r = &m.reason;
    PolicyDecision {
        time: now_millis(),
        policy: r.policy.clone(),
        container: m.container.clone(),
        from: m.from.clone(),
        to: m.to.clone(),
        summary: r.summary.clone(),
        figures: r.figures.iter().map(|f| PolicyFigure { name: f.name.clone(), value: f.value }).collect(),
        predicted_gain: r.predicted_gain,
        gain_unit: r.gain_unit.clone(),
        estimated_downtime_secs: r.estimated_cost.downtime_secs,
        estimated_transfer_secs: r.estimated_cost.transfer_secs,
        estimated_bytes: r.estimated_cost.bytes,
        outcome: "migrating".into(),
        detail: None,
    }
}

impl Control {
    pub(crate) fn policy_info(&self) -> PolicyInfo {
        self.policy.lock().unwrap().info()
    }

    /// `PUT /v1/policy`: a spec that does not parse changes nothing. The choice is stored in
    /// the cluster state first (so it survives a restart and overrides the configured policy);
    /// if that write fails nothing changes either. The engine's record of recent moves
    /// (cool-down, hysteresis) carries over to the new policy.
    pub(crate) async fn set_policy(&self, req: &SetPolicyRequest) -> Result<PolicyInfo> {
        let (policy, interval) = check_set_policy(req)?;
        let store = self.policy.lock().unwrap().store.clone();
        let store = store.lock().await;
        let interval = interval.unwrap_or(self.policy.lock().unwrap().interval);
        let stored = StoredPolicy { spec: policy.spec(), interval_secs: interval.as_secs_f64(), set_at: now_millis() };
        store.put(subjects::POLICY_KEY, &stored).await?;
        let info = {
            let mut p = self.policy.lock().unwrap();
            p.engine.policy = policy;
            p.interval = interval;
            p.since = stored.set_at;
            p.source = "set".into();
            p.info()
        };
        let msg = format!("policy set to {} (every {} s)", info.spec, info.interval_secs);
        self.events.emit("policy", "set", &info.spec, None, msg).await;
        Ok(info)
    }

    /// `DELETE /v1/policy` (`herd policy reset`): forgets the stored policy and runs the one
    /// the Control node was started with (flag, config file or default) again.
    pub(crate) async fn reset_policy(&self) -> Result<PolicyInfo> {
        let store = self.policy.lock().unwrap().store.clone();
        let store = store.lock().await;
        store.delete(subjects::POLICY_KEY).await?;
        let info = {
            let mut p = self.policy.lock().unwrap();
            let (spec, interval, source) = p.configured.clone();
            // It parsed when the Control node started, and parsing does not change.
            p.engine.policy = parse_policy(&spec).map_err(|e| Error::new(Kind::Internal, e.to_string()))?;
            p.interval = interval;
            p.since = now_millis();
            p.source = source;
            p.info()
        };
        let msg =
            format!("policy reset to the configured {} ({}, every {} s)", info.spec, info.source, info.interval_secs);
        self.events.emit("policy", "reset", &info.spec, None, msg).await;
        Ok(info)
    }

    /// The newest `limit` decisions, oldest first.
    pub(crate) fn policy_decisions(&self, limit: usize) -> Vec<PolicyDecision> {
        let p = self.policy.lock().unwrap();
        p.decisions.iter().skip(p.decisions.len().saturating_sub(limit)).cloned().collect()
    }

    /// Evaluates the policy every interval, for as long as the Control node runs.
    pub(crate) async fn run_policy(self: Arc<Self>) {
        let origin = Instant::now();
        loop {
            let interval = self.policy.lock().unwrap().interval;
            tokio::time::sleep(interval).await;
            self.clone().evaluate_policy(origin.elapsed().as_secs_f64()).await;
            self.clone().refresh_forecasters_if_due();
        }
    }

    /// Fits the cost model to the migration reports in the containers' records (the last
    /// ones of each container, see `MIGRATION_HISTORY`): cheap, so done at every evaluation.
    fn recalibrate(&self) {
        let mut reports: Vec<(u64, Observation)> = {
            let view = self.view.read().unwrap();
            view.containers
                .values()
                .flat_map(|c| c.migrations.iter())
                .filter(|r| matches!(r.outcome, Outcome::Migrated))
                .map(|r| {
                    let o = Observation {
                        mode: r.mode.as_str().into(),
                        memory_bytes: r.memory_bytes,
                        downtime_secs: r.downtime_ms as f64 / 1000.0,
                        total_secs: r.total_ms as f64 / 1000.0,
                    };
                    (r.finished_at, o)
                })
                .collect()
        };
        reports.sort_by_key(|(t, _)| *t);
        let observations: Vec<Observation> = reports.into_iter().map(|(_, o)| o).collect();
        let calibration = calibrate(&observations, CostModel::default());
        let mut p = self.policy.lock().unwrap();
        p.engine.cost = calibration.model;
        p.calibration = calibration;
    }

    /// Starts choosing the forecasting models again (see [`crate::forecasters`]) if the policy
    /// forecasts and the last choice is [`forecasters::EVERY`] old; the work runs on a blocking
    /// thread, and evaluations go on with the previous choice meanwhile.
    fn refresh_forecasters_if_due(self: Arc<Self>) {
        let horizon_secs = {
            let mut p = self.policy.lock().unwrap();
            match p.engine.policy.forecast_horizon_secs() {
                Some(h) if p.forecasters.start_if_due(Instant::now()) => h,
                _ => return,
            }
        };
        let (recorded, step_ms) = {
            let view = self.view.read().unwrap();
            let monitoring = self.monitoring.lock().unwrap();
            let to = now_millis();
            let from = to.saturating_sub(forecasters::HISTORY_MS);
            let recorded: Vec<Recorded> = view
                .containers
                .values()
                .filter(|c| view.status_of(c).is_some_and(|s| s.state == ContainerState::Running))
                .filter_map(|c| {
                    let series = monitoring.query(SeriesId::Container(c.id.clone()), from, to, None).ok()?;
                    Some(Recorded { name: c.name.clone(), series })
                })
                .collect();
            (recorded, monitoring.interval_ms().max(1))
        };
        let horizon_steps = (horizon_secs * 1000.0 / step_ms as f64).ceil() as usize;
        tokio::spawn(async move {
            let started = Instant::now();
            let choice = tokio::task::spawn_blocking(move || {
                forecasters::choose(recorded, step_ms, horizon_steps, now_millis())
            })
            .await;
            let mut p = self.policy.lock().unwrap();
            match choice {
                Ok(choice) => {
                    tracing::debug!(
                        "policy: forecasting models chosen in {:.1} s: {}",
                        started.elapsed().as_secs_f64(),
                        choice.info.note
                    );
                    p.forecasters.finish(choice);
                }
                Err(e) => {
                    tracing::warn!("policy: choosing the forecasting models failed ({e}); the previous choice stays");
                    p.forecasters.running = false;
                }
            }
        });
    }

    /// One evaluation: plans, explains and carries out the moves one after the other.
    async fn evaluate_policy(self: Arc<Self>, now: f64) {
        self.recalibrate();
        {
            let mut p = self.policy.lock().unwrap();
            p.evaluations += 1;
            if p.engine.policy.spec() == "none" {
                return;
            }
        }
        let cache = self.policy.lock().unwrap().forecasters.cache.clone();
        let Some(cluster) = self.policy_snapshot(&cache) else { return };
        let in_flight = self.migrating.lock().unwrap().len();
        let plan = { self.policy.lock().unwrap().engine.evaluate(now, &cluster, in_flight) };
        for (m, why) in &plan.deferred {
            tracing::debug!("policy: {} from {} to {} held back: {why}", m.container, m.from, m.to);
        }
        for m in plan.moves {
            let d = decision(&m);
            let text = d.explain();
            self.policy.lock().unwrap().record(d);
            let msg = format!("moving {} from {} to {}: {text}", m.container, m.from, m.to);
            self.events.emit("policy", "decide", &m.container, Some(&m.from), msg).await;
            let req = MigrateRequest { to: Some(m.to.clone()), ..Default::default() };
            // Nobody follows a policy migration's progress: its events tell the story.
            let (updates, _) = tokio::sync::mpsc::channel(1);
            match self.clone().migrate(m.container.clone(), req, updates).await {
                Ok(report) => {
                    let detail = format!("migration {} took {} ms", report.id, report.total_ms);
                    self.policy.lock().unwrap().settle(&m.container, "moved", detail);
                }
                Err(e) => {
                    self.policy.lock().unwrap().settle(&m.container, "failed", e.message.clone());
                    let msg = format!("moving {} from {} to {} failed: {}", m.container, m.from, m.to, e.message);
                    self.events.emit("policy", "fail", &m.container, Some(&m.from), msg).await;
                }
            }
        }
    }

    /// The cluster as the policies see it: ready nodes that are not draining (at least two,
    /// else there is nothing to decide; a draining node is `herd nodes drain`'s to empty),
    /// and the running containers on them that are not migrating (those that cannot move
    /// counted where they are, pinned), each with its cached
    /// forecast from its class's model when there is one still running (`forecasts`).
    fn policy_snapshot(&self, forecasts: &HashMap<String, CachedForecast>) -> Option<Cluster> {
        let view = self.view.read().unwrap();
        let migrating = self.migrating.lock().unwrap().keys().cloned().collect::<Vec<_>>();
        let mut ready: Vec<_> = view
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Ready && view.availability_of(&n.record.name) != Availability::Drain)
            .collect();
        if ready.len() < 2 {
            return None;
        }
        ready.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        let index: HashMap<&str, usize> = ready.iter().enumerate().map(|(i, n)| (n.record.name.as_str(), i)).collect();
        let nodes = ready
            .iter()
            .map(|n| Node {
                name: n.record.name.clone(),
                cpu_cores: n.record.capacity.cpus_milli as f64 / 1000.0,
                memory_bytes: n.record.capacity.memory_bytes,
                power: POWER,
            })
            .collect();
        let pinned = crate::hostconfig::unmovable(&view);
        let monitoring = self.monitoring.lock().unwrap();
        let to = now_millis();
        let mut containers: Vec<Container> = view
            .containers
            .values()
            .filter(|c| !migrating.contains(&c.name))
            .filter_map(|c| {
                let s = view.status_of(c).filter(|s| s.state == ContainerState::Running)?;
                let node = *index.get(s.node.as_str())?;
                let (cpu, memory) = monitoring.demand(&c.id, to.saturating_sub(WINDOW_MS), to);
                Some(Container {
                    name: c.name.clone(),
                    node,
                    cpu,
                    memory_bytes: memory.or(c.limits.memory_bytes).unwrap_or(0),
                    dirty_bytes_per_sec: 0.0,
                    forecast: forecasts
                        .get(&c.name)
                        .and_then(|f| f.at(to))
                        .map(DemandForecast::Given)
                        .unwrap_or_default(),
                    // What a migration would refuse (shared namespace or volume) is never planned.
                    pinned: pinned.contains(&c.name),
                })
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        let cluster = Cluster { nodes, containers, sample_secs: monitoring.interval_ms() as f64 / 1000.0 };
        match cluster.check() {
            Ok(()) => Some(cluster),
            Err(e) => {
                tracing::warn!("policy: not evaluating: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_checked_before_they_become_durations() {
        let req = |interval_secs| SetPolicyRequest { spec: "hotspot".into(), interval_secs };
        let (policy, interval) = check_set_policy(&req(Some(5.0))).unwrap();
        assert!(policy.spec().starts_with("hotspot"), "{}", policy.spec());
        assert_eq!(interval, Some(Duration::from_secs(5)));
        assert_eq!(check_set_policy(&req(None)).unwrap().1, None);
        // An interval too large for a Duration made the handler panic (PUT /v1/policy).
        for secs in [0.05, f64::NAN, f64::INFINITY, 1e30, 1e20, 86_400.5] {
            let err = check_set_policy(&req(Some(secs))).err().unwrap();
            assert_eq!(err.kind, Kind::BadRequest, "{secs}");
            assert!(err.message.contains("the interval must be"), "{secs}: {}", err.message);
        }
        check_set_policy(&req(Some(86_400.0))).unwrap();
    }
}
