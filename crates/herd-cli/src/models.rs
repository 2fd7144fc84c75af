//! `herd analyze models`: which forecasting model suits each workload class. The containers of
//! a recording (the running cluster's recorded series, or a CSV) are classified as by `herd
//! analyze classes`, then every model of `herd-forecast` is validated on the CPU and memory
//! series of each class's containers (rolling origin, errors pooled over the class) and the
//! best is kept per class and resource (`herd_workload::models`).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use herd_forecast::PooledComparison;
use herd_workload::{ClassRules, ModelLimits, ModelsReport};

use crate::analyze::{num, push_table};
use crate::classes::recording;
use crate::client::Client;
use crate::format;

/// `herd analyze models`
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// A recording as CSV (time,container,cpu[,memory_bytes,...]: docs/design/workloads.md);
    /// default: the running cluster's recorded series.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// From the cluster: how far back (e.g. 30m; the Control node keeps an hour at full
    /// resolution).
    #[arg(long, default_value = "1h", conflicts_with = "csv")]
    pub since: String,
    /// Steps (samples) to forecast; as many are held out per validation fold.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub horizon: usize,
    /// At most this many containers of each class are validated (evenly spread over it).
    #[arg(long, value_name = "N", default_value_t = ModelLimits::default().max_containers)]
    pub max_containers: usize,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub async fn models(client: impl FnOnce() -> anyhow::Result<Client>, args: ModelsArgs) -> anyhow::Result<()> {
    if args.horizon == 0 {
        anyhow::bail!("--horizon must be at least 1 step");
    }
    if args.max_containers == 0 {
        anyhow::bail!("--max-containers must be at least 1");
    }
    let rec = recording(client, args.csv.as_deref(), &args.since).await?;
    let classes = herd_workload::report(&rec, &ClassRules::default());
    let limits = ModelLimits { max_containers: args.max_containers, ..ModelLimits::default() };
    let report = herd_workload::class_models(&rec, &classes, args.horizon, &limits);
    if args.json {
        return crate::commands::print_json(&report);
    }
    print!("{}", text(&report));
    Ok(())
}

/// An error in the resource's unit: cores for CPU, MiB for memory.
fn error(resource: &str, v: f64) -> String {
    if resource == "memory" { format!("{} MiB", num(v / (1024.0 * 1024.0))) } else { num(v) }
}

fn text(r: &ModelsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Models per workload class: a horizon of {} steps, rolling-origin validation, errors (CPU in cores, memory in MiB) pooled over each class's containers, lowest RMSE kept\n",
        r.horizon
    );
    let mut t = format::table(&["CLASS", "CONTAINERS", "SERIES", "MODEL", "MAE", "RMSE", "MAPE", "", "FELL BACK"]);
    for c in &r.classes {
        for (resource, cmp) in [("cpu", &c.cpu), ("memory", &c.memory)] {
            let first = resource == "cpu";
            let label = |s: String| if first { s } else { String::new() };
            if cmp.models.is_empty() {
                t.add_row(vec![
                    label(c.class.as_str().into()),
                    label(c.containers.len().to_string()),
                    resource.into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "no series long enough".into(),
                    String::new(),
                ]);
                continue;
            }
            for (i, m) in cmp.models.iter().enumerate() {
                let won = if cmp.best.as_deref() == Some(m.name.as_str()) { "best" } else { "" };
                t.add_row(vec![
                    if i == 0 { label(c.class.as_str().into()) } else { String::new() },
                    if i == 0 { label(c.containers.len().to_string()) } else { String::new() },
                    if i == 0 { format!("{resource} ({})", cmp.series.len()) } else { String::new() },
                    m.name.clone(),
                    error(resource, m.accuracy.mae),
                    error(resource, m.accuracy.rmse),
                    m.accuracy.mape.map_or_else(|| "-".to_string(), |p| format!("{p:.2}%")),
                    won.into(),
                    if m.fell_back > 0 { format!("{} series", m.fell_back) } else { String::new() },
                ]);
            }
        }
    }
    push_table(&mut out, &t);
    out.push('\n');
    for c in &r.classes {
        let pick = |cmp: &PooledComparison| cmp.best.clone().unwrap_or_else(|| "none (too little history)".into());
        let _ = writeln!(
            out,
            "{}: cpu {}, memory {} ({} validated: {})",
            c.class.as_str(),
            pick(&c.cpu),
            pick(&c.memory),
            c.validated.len(),
            c.validated.join(", ")
        );
    }
    for c in &r.classes {
        for (resource, cmp) in [("cpu", &c.cpu), ("memory", &c.memory)] {
            for s in &cmp.skipped {
                let _ = writeln!(out, "{}: {resource} of {} not validated: {}", c.class.as_str(), s.name, s.why);
            }
            for m in cmp.models.iter().filter(|m| m.fell_back > 0) {
                let _ = writeln!(
                    out,
                    "{}: {resource}: {} could not fit {} series, the naive forecast stood in ({})",
                    c.class.as_str(),
                    m.name,
                    m.fell_back,
                    m.fell_back_why.as_deref().unwrap_or("")
                );
            }
        }
    }
    if let Some(why) = r
        .classes
        .iter()
        .flat_map(|c| [&c.cpu, &c.memory])
        .find_map(|cmp| cmp.models.first().and_then(|m| m.accuracy.mape_absent.clone()))
    {
        let _ = writeln!(out, "MAPE: where absent, {why}");
    }
    for (name, why) in &r.unclassified {
        let _ = writeln!(out, "{name}: not classified: {why}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
