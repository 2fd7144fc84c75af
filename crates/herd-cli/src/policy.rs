//! `herd policy`: the built-in migration policies, the one the Control node runs, setting it,
//! and the explained decisions it made.

use clap::{Args, Subcommand};
use herd_proto::policy::{PolicyDecision, PolicyInfo, SetPolicyRequest};
use reqwest::Method;

use crate::client::Client;
use crate::format::{print_table, table, timestamp};

/// `herd policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the built-in policies and their parameters with their defaults.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show the policy the Control node runs and the engine's safeguards.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Set the policy: a spec (hotspot:threshold=80%, 0.7*forecast+0.3*balance) or a name
    /// with --param. It is stored in the cluster state: it survives a restart of the Control
    /// node and overrides its --policy flag and config file until herd policy reset.
    Set(SetArgs),
    /// Forget the policy herd policy set stored: the Control node runs the one it was
    /// started with (--policy flag, else the config file's [control] policy, else none).
    Reset,
    /// Show the recent decisions: what moved where, and why.
    Explain {
        /// How many decisions, newest last.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// A policy spec, or just a policy's name.
    pub spec: String,
    /// A parameter, KEY=VALUE (repeatable), added to the spec.
    #[arg(long = "param", short = 'p')]
    pub params: Vec<String>,
    /// Seconds between two evaluations.
    #[arg(long)]
    pub interval: Option<f64>,
}

/// One line a person reads about each built-in policy.
fn about(name: &str) -> &'static str {
    match name {
        "none" => "never migrates (the default)",
        "hotspot" => "relieves a node above threshold in k of the last n samples",
        "balance" => "keeps node utilisations within tolerance of each other",
        "consolidate" => "packs containers onto fewer nodes when load is low, emptying the least efficient node first",
        "forecast" => "relieves nodes before they get hot, from a demand forecast",
        _ => "",
    }
}

/// `NAME` with `--param`s made into `NAME:K=V,...` (appended to any parameters the spec has).
fn spec_of(args: &SetArgs) -> anyhow::Result<String> {
    for p in &args.params {
        anyhow::ensure!(p.contains('='), "--param {p:?}: expected KEY=VALUE, e.g. threshold=80%");
    }
    if args.params.is_empty() {
        return Ok(args.spec.clone());
    }
    anyhow::ensure!(
        !args.spec.contains('+') && !args.spec.contains('*'),
        "--param applies to one policy: write the parameters of a combination in its spec"
    );
    let sep = if args.spec.contains(':') { "," } else { ":" };
    Ok(format!("{}{sep}{}", args.spec, args.params.join(",")))
}

/// Where a policy came from, in words.
fn source(info: &PolicyInfo) -> String {
    match info.source.as_str() {
        "set" => format!("herd policy set (stored; overrides the configured {})", info.configured_spec),
        "flag" => "the --policy flag".into(),
        "config" => "the config file's [control] section".into(),
        "default" => "the default".into(),
        other => other.into(),
    }
}

fn print_info(info: &PolicyInfo) {
    println!("policy:         {}", info.spec);
    if !info.source.is_empty() {
        println!("from:           {}", source(info));
    }
    println!("interval:       {} s", info.interval_secs);
    println!("max concurrent: {} migrations", info.max_concurrent);
    println!("cool-down:      {} s", info.cooldown_secs);
    println!("hysteresis:     {} s", info.hysteresis_secs);
    println!("set at:         {}", timestamp(info.since));
    println!("evaluations:    {}", info.evaluations);
    if let Some(c) = &info.cost_model {
        let basis = match (&c.mode, c.basis.as_str()) {
            (Some(mode), "calibrated") => format!("calibrated from {} {mode} migration reports", c.reports),
            _ => "default (measured on the development machine)".into(),
        };
        println!("cost model:     {basis}");
        println!(
            "                downtime {:.3} s + {:.3} s/GiB, total {:.3} s + {:.3} s/GiB",
            c.downtime_intercept_secs, c.downtime_secs_per_gib, c.total_intercept_secs, c.total_secs_per_gib
        );
        println!("                {}", c.why);
    }
    if let Some(f) = &info.forecasters {
        let when = f.refreshed_at.map_or_else(|| "not yet".to_string(), timestamp);
        println!("forecasting:    models per workload class, chosen every {} s (last: {when})", f.every_secs);
        for c in &f.classes {
            let model = |m: &Option<String>, e: Option<f64>, unit: &str| match (m, e) {
                (Some(m), Some(e)) => format!("{m} (RMSE {e:.3}{unit})"),
                _ => "none (too little history)".into(),
            };
            let mib = c.memory_rmse.map(|b| b / 1048576.0);
            println!(
                "                {}: {} containers: cpu {}, memory {}",
                c.class,
                c.containers,
                model(&c.cpu_model, c.cpu_rmse, " cores"),
                model(&c.memory_model, mib, " MiB")
            );
        }
        println!("                {}", f.note);
    }
}

/// Runs `cmd`; `client` is called only by the subcommands that talk to the cluster (`ls`
/// works without one).
pub async fn policy(client: impl FnOnce() -> anyhow::Result<Client>, cmd: PolicyCommand) -> anyhow::Result<()> {
    if let PolicyCommand::Ls { json } = cmd {
        return list(json);
    }
    let client = client()?;
    match cmd {
        PolicyCommand::Ls { .. } => unreachable!("handled above"),
        PolicyCommand::Show { json } => {
            let info: PolicyInfo = client.get("/v1/policy").await?;
            if json {
                return crate::commands::print_json(&info);
            }
            print_info(&info);
        }
        PolicyCommand::Set(args) => {
            let req = SetPolicyRequest { spec: spec_of(&args)?, interval_secs: args.interval };
            let resp = client.send(client.request(Method::PUT, "/v1/policy").json(&req)).await?;
            let info: PolicyInfo = resp.json().await?;
            print_info(&info);
        }
        PolicyCommand::Reset => {
            let resp = client.send(client.request(Method::DELETE, "/v1/policy")).await?;
            let info: PolicyInfo = resp.json().await?;
            print_info(&info);
        }
        PolicyCommand::Explain { limit, json } => {
            let decisions: Vec<PolicyDecision> = client.get(&format!("/v1/policy/decisions?limit={limit}")).await?;
            if json {
                return crate::commands::print_json(&decisions);
            }
            if decisions.is_empty() {
                println!("no decisions yet (herd policy show: which policy runs)");
                return Ok(());
            }
            for d in &decisions {
                println!("{} {} {} -> {} [{}]", timestamp(d.time), d.container, d.from, d.to, d.outcome);
                println!("    {}", d.explain());
                if let Some(detail) = &d.detail {
                    println!("    {detail}");
                }
            }
        }
    }
    Ok(())
}

/// `herd policy ls`: from the policy crate itself, no cluster needed.
fn list(json: bool) -> anyhow::Result<()> {
    let rows: Vec<(String, String)> = herd_policy::POLICY_NAMES
        .iter()
        .map(|n| {
            let spec = herd_policy::parse_policy(n).map(|p| p.spec()).unwrap_or_else(|e| e.to_string());
            (n.to_string(), spec)
        })
        .collect();
    if json {
        let v: Vec<_> =
            rows.iter().map(|(n, s)| serde_json::json!({"name": n, "defaults": s, "about": about(n)})).collect();
        return crate::commands::print_json(&v);
    }
    let mut t = table(&["NAME", "DEFAULTS", "WHAT IT DOES"]);
    for (n, s) in &rows {
        t.add_row(vec![n.clone(), s.clone(), about(n).to_string()]);
    }
    print_table(&t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(spec: &str, params: &[&str]) -> SetArgs {
        SetArgs { spec: spec.into(), params: params.iter().map(|s| s.to_string()).collect(), interval: None }
    }

    #[test]
    fn params_join_the_spec() {
        assert_eq!(spec_of(&args("hotspot", &[])).unwrap(), "hotspot");
        assert_eq!(spec_of(&args("hotspot", &["k=2", "n=4"])).unwrap(), "hotspot:k=2,n=4");
        assert_eq!(spec_of(&args("hotspot:k=2", &["n=4"])).unwrap(), "hotspot:k=2,n=4");
        assert!(spec_of(&args("hotspot", &["k"])).unwrap_err().to_string().contains("KEY=VALUE"));
        assert!(spec_of(&args("0.5*hotspot+0.5*balance", &["k=2"])).is_err());
    }
}
