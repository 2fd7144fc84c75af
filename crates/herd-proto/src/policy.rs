//! The policy engine's API (`/v1/policy`): what runs, and the decisions it made, each with the
//! figures it was made on, the predicted gain and the estimated cost.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// `GET /v1/policy`: the policy the Control node runs and the engine's safeguards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// The policy with all of its parameters (`hotspot:threshold=0.8,k=3,n=5,margin=0.1`).
    pub spec: String,
    /// Seconds between two evaluations.
    pub interval_secs: f64,
    /// At most this many migrations at once (those in flight included).
    pub max_concurrent: usize,
    /// A container moved is not moved again for this long, seconds.
    pub cooldown_secs: f64,
    /// A container is not moved back to the node it left for this long, seconds.
    pub hysteresis_secs: f64,
    /// When the policy was last set, ms since the Unix epoch.
    pub since: UnixMillis,
    /// Evaluations made since the Control node started.
    pub evaluations: u64,
    /// Where the policy came from: `set` (stored by `herd policy set`, survives restarts),
    /// `flag` (`herd control --policy`), `config` (the config file's `[control]` section) or
    /// `default` (`none`).
    #[serde(default)]
    pub source: String,
    /// The policy the Control node was started with (flag, config file or default): what
    /// `herd policy reset` returns to.
    #[serde(default)]
    pub configured_spec: String,
    /// The migration cost model the policies rank moves by.
    #[serde(default)]
    pub cost_model: Option<CostModelInfo>,
    /// The forecasting model chosen per workload class for the `forecast` policy.
    #[serde(default)]
    pub forecasters: Option<ForecastersInfo>,
}

/// The cost model in use: calibrated from the cluster's migration reports, or the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostModelInfo {
    /// `calibrated` or `default`.
    pub basis: String,
    /// The migration mode whose reports it was fitted to.
    pub mode: Option<String>,
    /// Reports it was fitted to (0 for the defaults).
    pub reports: usize,
    pub downtime_intercept_secs: f64,
    pub downtime_secs_per_gib: f64,
    pub total_intercept_secs: f64,
    pub total_secs_per_gib: f64,
    /// Why this model, in one sentence.
    pub why: String,
}

/// The forecasting models the Control node chose per workload class, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastersInfo {
    /// When the choice was last made, ms since the Unix epoch (`None`: not yet).
    pub refreshed_at: Option<UnixMillis>,
    /// Seconds between two choices.
    pub every_secs: f64,
    /// Steps forecast and held out in the validation.
    pub horizon_steps: usize,
    pub classes: Vec<ClassModelInfo>,
    /// Containers forecast by their class's model at the last choice (the others use the
    /// policy's own seasonal-naive forecast).
    pub containers_forecast: usize,
    /// What happened at the last choice, or why there was none.
    pub note: String,
}

/// One workload class's models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassModelInfo {
    pub class: String,
    pub containers: usize,
    /// The model kept for CPU and its pooled RMSE (cores); `None`: too little history.
    pub cpu_model: Option<String>,
    pub cpu_rmse: Option<f64>,
    pub memory_model: Option<String>,
    /// Pooled RMSE of the memory model, bytes.
    pub memory_rmse: Option<f64>,
}

/// The policy `herd policy set` chose, kept in the cluster state so it survives a restart
/// of the Control node; it takes precedence over the flag and the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub spec: String,
    /// Seconds between two evaluations.
    pub interval_secs: f64,
    /// When it was set, ms since the Unix epoch.
    pub set_at: UnixMillis,
}

/// `PUT /v1/policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetPolicyRequest {
    pub spec: String,
    /// A new evaluation interval, seconds (unchanged when absent).
    #[serde(default)]
    pub interval_secs: Option<f64>,
}

/// One figure a decision was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyFigure {
    pub name: String,
    pub value: f64,
}

/// One move the engine decided, explained, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDecision {
    pub time: UnixMillis,
    /// The policy that proposed the move.
    pub policy: String,
    pub container: String,
    pub from: String,
    pub to: String,
    /// One sentence.
    pub summary: String,
    pub figures: Vec<PolicyFigure>,
    pub predicted_gain: f64,
    pub gain_unit: String,
    pub estimated_downtime_secs: f64,
    pub estimated_transfer_secs: f64,
    pub estimated_bytes: u64,
    /// `migrating`, `moved` or `failed`.
    pub outcome: String,
    /// The migration's id and duration, or why it failed.
    #[serde(default)]
    pub detail: Option<String>,
}

impl PolicyDecision {
    /// The whole explanation in one line: the figures, the predicted gain, the estimated cost.
    pub fn explain(&self) -> String {
        let figures: Vec<String> = self.figures.iter().map(|f| format!("{}={}", f.name, round3(f.value))).collect();
        format!(
            "{}: {} (figures: {}; predicted gain {} {}; estimated cost: downtime {:.2} s, transfer {:.2} s, {} bytes)",
            self.policy,
            self.summary,
            figures.join(", "),
            round3(self.predicted_gain),
            self.gain_unit,
            self.estimated_downtime_secs,
            self.estimated_transfer_secs,
            self.estimated_bytes
        )
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_names_figures_gain_and_cost() {
        let d = PolicyDecision {
            time: 0,
            policy: "hotspot".into(),
            container: "c".into(),
            from: "n1".into(),
            to: "n2".into(),
            summary: "move c off n1".into(),
            figures: vec![PolicyFigure { name: "from_util".into(), value: 0.87654 }],
            predicted_gain: 0.25,
            gain_unit: "cores above threshold".into(),
            estimated_downtime_secs: 0.23,
            estimated_transfer_secs: 0.5,
            estimated_bytes: 1000,
            outcome: "migrating".into(),
            detail: None,
        };
        assert_eq!(
            d.explain(),
            "hotspot: move c off n1 (figures: from_util=0.877; predicted gain 0.25 cores above threshold; \
             estimated cost: downtime 0.23 s, transfer 0.50 s, 1000 bytes)"
        );
    }
}
