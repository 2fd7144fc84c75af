//! Provisioning policies side by side: every built-in policy of `herd-policy` replayed through
//! the simulator on the same generated traces (daily cycle, bursty, trend; several seeds),
//! then the goals checked with the figures. Pure simulation: no cluster, no root.
//!
//! Run: `cargo run -p herd-bench --release --bin provisioning`. `SEEDS=1`, `HOURS=24`,
//! `CONTAINERS=..` and `NODES=..` change the runs (defaults: 3 seeds, 72 h, 60 containers,
//! 8 nodes).

use herd_policy::sim::{self, GenSpec, Shape, SimConfig, SimResult};
use herd_policy::{Policy, parse_policy};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The policies compared, by spec. `hotspot` at the forecast's trigger is there so the
/// comparison does not hinge on the two defaults' thresholds.
const POLICIES: &[&str] = &["none", "hotspot", "hotspot:threshold=0.85", "balance", "consolidate", "forecast"];

/// Sums of each figure over the seeds of one trace shape.
#[derive(Default, Clone)]
struct Total {
    contention: f64,
    migrations: u64,
    energy: f64,
}

fn add(t: &mut Total, r: &SimResult) {
    t.contention += r.contention_core_secs;
    t.migrations += r.migrations;
    t.energy += r.energy_kwh;
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

fn main() -> anyhow::Result<()> {
    let seeds = env_or("SEEDS", 3);
    let hours = env_or("HOURS", 72) as f64;
    let containers = env_or("CONTAINERS", 60) as usize;
    let nodes = sim::default_nodes(env_or("NODES", 8) as usize);
    let capacity: f64 = nodes.iter().map(|n| n.cpu_cores).sum();
    let config = SimConfig::new(nodes.clone());
    let names: Vec<String> = POLICIES.iter().map(|s| s.to_string()).collect();
    println!(
        "{containers} containers on {} nodes ({capacity} cores), {hours} h of 60 s steps, seeds 1..={seeds}; \
         daily peak of the plain cycle at 80 % of capacity\n",
        nodes.len()
    );
    let mut goals = Vec::new();
    for (shape_name, shape) in [("daily", Shape::Daily), ("bursty", Shape::Bursty), ("trend", Shape::Trend)] {
        let mut totals = vec![Total::default(); POLICIES.len()];
        let mut floor = 0.0;
        for seed in 1..=seeds {
            let trace = sim::generate(&GenSpec {
                shape,
                containers,
                hours,
                seed,
                step_secs: 60.0,
                capacity_cores: capacity,
                peak_load: 0.8,
            });
            let mut results = Vec::new();
            for spec in POLICIES {
                let policy: Box<dyn Policy> = parse_policy(spec)?;
                results.push(sim::simulate(&trace, policy, &config)?);
            }
            for (t, r) in totals.iter_mut().zip(&results) {
                add(t, r);
            }
            floor += sim::energy_floor(&trace, &nodes);
            println!("trace {shape_name}, seed {seed}:");
            print!("{}", sim::table(&names, &results));
            println!();
        }
        let by = |name: &str| &totals[POLICIES.iter().position(|p| *p == name).expect("a compared policy")];
        let (none, hot, fc, cons) = (by("none"), by("hotspot"), by("forecast"), by("consolidate"));
        let hot85 = by("hotspot:threshold=0.85");
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        goals.push(format!(
            "{shape_name}: forecast contention <= 50% of none | {:.0} vs {:.0} core-s ({:.1}%) | {}",
            fc.contention,
            none.contention,
            100.0 * ratio(fc.contention, none.contention),
            verdict(fc.contention <= 0.5 * none.contention)
        ));
        goals.push(format!(
            "{shape_name}: forecast contention <= 75% of hotspot | {:.0} vs {:.0} core-s ({:.1}%; vs hotspot at 0.85: {:.0}, {:.1}%) | {}",
            fc.contention,
            hot.contention,
            100.0 * ratio(fc.contention, hot.contention),
            hot85.contention,
            100.0 * ratio(fc.contention, hot85.contention),
            verdict(fc.contention <= 0.75 * hot.contention)
        ));
        goals.push(format!(
            "{shape_name}: forecast migrations <= hotspot's | {} vs {} (hotspot at 0.85: {}) | {}",
            fc.migrations,
            hot.migrations,
            hot85.migrations,
            verdict(fc.migrations <= hot.migrations)
        ));
        if shape == Shape::Daily {
            goals.push(format!(
                "daily: consolidate energy <= 70% of none | {:.1} vs {:.1} kWh ({:.1}%; floor for any policy {:.1} kWh, {:.1}%) | {}",
                cons.energy,
                none.energy,
                100.0 * ratio(cons.energy, none.energy),
                floor,
                100.0 * ratio(floor, none.energy),
                verdict(cons.energy <= 0.7 * none.energy)
            ));
            goals.push(format!(
                "daily: consolidate contention <= 110% of none | {:.0} vs {:.0} core-s ({:.1}%) | {}",
                cons.contention,
                none.contention,
                100.0 * ratio(cons.contention, none.contention),
                verdict(cons.contention <= 1.1 * none.contention)
            ));
        }
    }
    println!("goals (sums over the seeds):");
    for g in goals {
        println!("  {g}");
    }
    Ok(())
}
