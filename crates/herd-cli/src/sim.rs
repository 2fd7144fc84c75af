//! `herd sim`: replays a workload trace (a CSV file or a generated one) through the policy
//! engine of `herd-policy` on a model of nodes, and compares policies: contention, SLA
//! violations, migrations, bytes moved, energy and active nodes, as a table or JSON, and
//! optionally SVG plots over time. No cluster needed.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use herd_policy::sim::{self, GenSpec, Shape, SimConfig, SimResult, Trace};

/// `herd sim`
#[derive(Debug, Args)]
pub struct SimArgs {
    /// A trace CSV: `time,container,cpu,memory_bytes` (see docs/design/policies.md).
    #[arg(long, value_name = "FILE", conflicts_with = "generate")]
    pub trace: Option<PathBuf>,
    /// Generate a trace instead: daily, bursty or trend.
    #[arg(long, value_name = "SHAPE")]
    pub generate: Option<String>,
    /// Containers in a generated trace.
    #[arg(long, default_value_t = 60)]
    pub containers: usize,
    /// Nodes to simulate, alternating the two types of --node-types (default 8; not with a file).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Node types: `measured` (IBM x3550 M3 and HP ML110 G4 with their SPECpower_ssj2008
    /// curves, standby 5 % of peak, 200 s wake-up), `legacy` (the former 16-core 110-330 W and
    /// 8-core 70-180 W types, same standby and wake-up), `legacy-free` (the same, standby free
    /// and instant), or a CSV file of types: count,cores,memory_gib and idle_watts,peak_watts
    /// or w0,w10,...,w100, optionally standby_watts and wake_secs (docs/design/policies.md).
    #[arg(long, value_name = "KIND|FILE", default_value = "measured")]
    pub node_types: String,
    /// Length of a generated trace, hours.
    #[arg(long, default_value_t = 72.0)]
    pub hours: f64,
    /// Seed of a generated trace.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Policies to compare (repeatable), e.g. `hotspot:threshold=0.8,k=3,n=5`.
    /// Default: none, hotspot, balance, consolidate, forecast.
    #[arg(long = "policy", value_name = "SPEC")]
    pub policies: Vec<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write SVG plots (active nodes, contention over time) into this directory.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
}

/// The simulated nodes `--node-types` and `--nodes` ask for.
fn nodes_of(args: &SimArgs) -> anyhow::Result<Vec<herd_policy::Node>> {
    let m = args.nodes.unwrap_or(8);
    let nodes = match args.node_types.as_str() {
        "measured" => sim::default_nodes(m),
        "legacy" => sim::legacy_nodes(m),
        "legacy-free" => sim::free_standby(&sim::legacy_nodes(m)),
        path => {
            if args.nodes.is_some() {
                bail!("--nodes goes with a built-in --node-types; a file gives each type's count");
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read node types {path} (built-in: measured, legacy, legacy-free)"))?;
            sim::nodes_from_csv(&text).with_context(|| path.to_string())?
        }
    };
    if nodes.is_empty() {
        bail!("--nodes must be at least 1");
    }
    Ok(nodes)
}

pub fn sim(args: SimArgs) -> anyhow::Result<()> {
    let nodes = nodes_of(&args)?;
    let capacity: f64 = nodes.iter().map(|n| n.cpu_cores).sum();
    let trace = match (&args.trace, &args.generate) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Trace::from_csv(&text).with_context(|| format!("{}", path.display()))?
        }
        (None, Some(shape)) => sim::generate(&GenSpec {
            shape: shape.parse::<Shape>()?,
            containers: args.containers,
            hours: args.hours,
            seed: args.seed,
            step_secs: 60.0,
            capacity_cores: capacity,
            peak_load: 0.8,
        }),
        (None, None) => bail!("give a trace: --trace FILE.csv or --generate daily|bursty|trend"),
    };
    let specs = if args.policies.is_empty() {
        herd_policy::POLICY_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        args.policies.clone()
    };
    // Parse them all first so a typo fails before minutes of simulation.
    let mut policies = Vec::new();
    for s in &specs {
        policies.push(herd_policy::parse_policy(s)?);
    }
    let config = SimConfig::new(nodes);
    let mut results = Vec::new();
    for p in policies {
        results.push(sim::simulate(&trace, p, &config)?);
    }
    if let Some(dir) = &args.plot {
        write_plots(dir, &specs, &results)?;
    }
    if args.json {
        let out = serde_json::json!({
            "containers": trace.names.len(),
            "steps": trace.steps(),
            "step_secs": trace.step_secs,
            "nodes": config.nodes,
            "results": results.iter().zip(&specs).map(|(r, s)| serde_json::json!({
                "policy": s,
                "spec": r.policy,
                "contention_core_secs": r.contention_core_secs,
                "contention_container_secs": r.contention_container_secs,
                "sla_violations": r.sla_violations,
                "migrations": r.migrations,
                "bytes_moved": r.bytes_moved,
                "downtime_secs": r.downtime_secs,
                "energy_kwh": r.energy_kwh,
                "mean_active_nodes": r.mean_active_nodes,
                "wake_ups": r.wake_ups,
                "active_nodes": r.active_nodes,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} containers, {} nodes, {} steps of {} s ({:.1} h)\n",
            trace.names.len(),
            config.nodes.len(),
            trace.steps(),
            trace.step_secs,
            trace.steps() as f64 * trace.step_secs / 3600.0
        );
        print!("{}", sim::table(&specs, &results));
    }
    Ok(())
}

fn write_plots(dir: &std::path::Path, names: &[String], results: &[SimResult]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let step = results.first().map_or(60.0, |r| r.step_secs);
    let active: Vec<(String, Vec<f64>)> = names
        .iter()
        .zip(results)
        .map(|(n, r)| (n.clone(), r.active_nodes.iter().map(|&a| a as f64).collect()))
        .collect();
    // Contention per hour reads better than per step.
    let per = (3600.0 / step).round().max(1.0) as usize;
    let contention: Vec<(String, Vec<f64>)> = names
        .iter()
        .zip(results)
        .map(|(n, r)| (n.clone(), r.contention.chunks(per).map(|c| c.iter().sum::<f64>()).collect()))
        .collect();
    for (file, svg) in [
        ("active-nodes.svg", sim::plot::line_chart("Active nodes", "nodes", step, &active)),
        (
            "contention.svg",
            sim::plot::line_chart("Contention per hour", "core-seconds", step * per as f64, &contention),
        ),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
