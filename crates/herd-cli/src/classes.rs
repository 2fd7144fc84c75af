//! `herd analyze classes`: characterises the containers of a recording (the running cluster's
//! recorded series, or a CSV) with `herd-workload`: features, classes, the features that
//! matter most for CPU stall or throttling; a table or JSON, and SVG plots.
//! `herd analyze export`: writes the cluster's recorded series as a trace CSV for `herd sim`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use herd_workload::{ClassRules, Field, Recording, Report};

use crate::client::Client;
use crate::format;
use crate::recorded::{fetch, parse_duration};

/// `herd analyze classes`
#[derive(Debug, Args)]
pub struct ClassesArgs {
    /// A recording as CSV (time,container,cpu[,memory_bytes,...]: docs/design/workloads.md);
    /// default: the running cluster's recorded series.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// From the cluster: how far back (e.g. 30m; the Control node keeps an hour at full
    /// resolution).
    #[arg(long, default_value = "1h", conflicts_with = "csv")]
    pub since: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write SVG plots (CPU per class over time, feature importance) into this directory.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
}

/// `herd analyze export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The trace CSV to write (herd sim --trace FILE replays it).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// How far back (e.g. 30m).
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Seconds between two rows of the trace (samples are averaged into them); default: the
    /// recorded resolution.
    #[arg(long, value_name = "SECS")]
    pub step: Option<String>,
}

/// Reads `path` as a recording, naming the file in errors.
pub fn read_csv(path: &Path) -> anyhow::Result<Recording> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Recording::from_csv(&text).with_context(|| format!("{}", path.display()))
}

/// The recorded metrics to analyse: from `csv` if given, else the Control node's last `since`;
/// an error if no container has samples.
pub async fn recording(
    client: impl FnOnce() -> anyhow::Result<Client>,
    csv: Option<&Path>,
    since: &str,
) -> anyhow::Result<Recording> {
    let rec = match csv {
        Some(path) => read_csv(path)?,
        None => fetch(&client()?, parse_duration(since)?, None).await?,
    };
    if rec.containers.is_empty() {
        anyhow::bail!("no recorded samples: no container ran in the last {since}");
    }
    Ok(rec)
}

pub async fn classes(client: impl FnOnce() -> anyhow::Result<Client>, args: ClassesArgs) -> anyhow::Result<()> {
    let rec = recording(client, args.csv.as_deref(), &args.since).await?;
    let report = herd_workload::report(&rec, &ClassRules::default());
    if let Some(dir) = &args.plot {
        write_plots(dir, &rec, &report)?;
    }
    if args.json {
        return crate::commands::print_json(&report);
    }
    print!("{}", text(&report));
    Ok(())
}

pub async fn export(client: impl FnOnce() -> anyhow::Result<Client>, args: ExportArgs) -> anyhow::Result<()> {
    let step = args.step.as_deref().map(parse_duration).transpose()?;
    let rec = fetch(&client()?, parse_duration(&args.since)?, step).await?;
    if rec.containers.is_empty() {
        anyhow::bail!("no recorded samples to export: no container ran in the last {}", args.since);
    }
    let step = step.unwrap_or_else(|| median_step(&rec));
    let (csv, filled) = rec.to_trace_csv(step)?;
    std::fs::write(&args.out, csv).with_context(|| format!("cannot write {}", args.out.display()))?;
    let rows = rec.containers.len();
    eprintln!(
        "wrote {}: {rows} containers, one row each every {step} s; filled in: {} cells carried over gaps, {} cells of 0 before a container's first or after its last sample",
        args.out.display(),
        filled.carried,
        filled.absent
    );
    Ok(())
}

/// The most common gap between two samples of a container, seconds (1 without any).
fn median_step(rec: &Recording) -> f64 {
    let mut gaps: Vec<f64> =
        rec.containers.values().flat_map(|s| s.windows(2).map(|w| w[1].t - w[0].t)).filter(|g| *g > 0.0).collect();
    gaps.sort_by(f64::total_cmp);
    gaps.get(gaps.len() / 2).copied().unwrap_or(1.0)
}

fn bytes(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(b) if b >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1}G", b / (1024.0 * 1024.0 * 1024.0)),
        Some(b) if b >= 1024.0 * 1024.0 => format!("{:.1}M", b / (1024.0 * 1024.0)),
        Some(b) if b >= 1024.0 => format!("{:.1}K", b / 1024.0),
        Some(b) => format!("{b:.0}"),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |p| format!("{p:.1}"))
}

fn text(r: &Report) -> String {
    let mut out = String::new();
    let mut t = format::table(&[
        "CONTAINER",
        "CLASS",
        "CPU MEAN",
        "CPU P95",
        "CPU CV",
        "MEM",
        "BLK/s",
        "NET/s",
        "PSI CPU%",
        "THROTTLED%",
    ]);
    for c in &r.containers {
        let f = &c.features;
        t.add_row(vec![
            c.name.clone(),
            c.class.as_str().into(),
            format!("{:.3}", f.cpu_mean),
            format!("{:.3}", f.cpu_p95),
            format!("{:.2}", f.cpu_cv),
            bytes(f.memory_mean_bytes),
            bytes(f.blk_mean_bps),
            bytes(f.net_mean_bps),
            pct(f.psi_cpu_mean),
            pct(f.throttled_pct_mean),
        ]);
    }
    push_table(&mut out, &t);
    out.push('\n');
    for c in &r.containers {
        let _ = writeln!(out, "{}: {}: {}", c.name, c.class.as_str(), c.why);
    }
    for (name, why) in &r.skipped {
        let _ = writeln!(out, "{name}: not classified: {why}");
    }
    out.push('\n');
    for m in &r.classes {
        let members = if m.containers.is_empty() { "-".into() } else { m.containers.join(", ") };
        let _ = writeln!(out, "{:<14} {members}", m.class.as_str());
    }
    out.push('\n');
    match (&r.importance, &r.importance_skipped) {
        (Some(i), _) => {
            let _ = writeln!(
                out,
                "What predicts {} (random forest on {} samples; held-out R² {:.2}):",
                i.target, i.rows, i.held_out_r2
            );
            let mut t = format::table(&["FEATURE", "IMPORTANCE"]);
            for x in &i.ranking {
                t.add_row(vec![x.feature.clone(), format!("{:.3}", x.importance)]);
            }
            push_table(&mut out, &t);
            for n in &i.notes {
                let _ = writeln!(out, "note: {n}");
            }
        }
        (None, why) => {
            let _ = writeln!(out, "feature importance: skipped: {}", why.as_deref().unwrap_or("unknown"));
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

fn push_table(out: &mut String, t: &comfy_table::Table) {
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// CPU of each class over time (summed over its containers, in at most 300 buckets), and the
/// feature importances.
fn write_plots(dir: &Path, rec: &Recording, r: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let samples = rec.containers.values().flatten();
    let (first, last) = samples.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| (a.min(s.t), b.max(s.t)));
    let bucket = ((last - first) / 300.0).max(median_step(rec));
    let n = ((last - first) / bucket).floor() as usize + 1;
    let mut series = Vec::new();
    for m in r.classes.iter().filter(|m| !m.containers.is_empty()) {
        let mut sum = vec![0.0; n];
        for name in &m.containers {
            let mut per = vec![(0.0, 0u32); n];
            for s in &rec.containers[name] {
                let k = (((s.t - first) / bucket) as usize).min(n - 1);
                per[k].0 += s.get(Field::CPU).unwrap_or(0.0);
                per[k].1 += 1;
            }
            for (k, (v, c)) in per.iter().enumerate() {
                if *c > 0 {
                    sum[k] += v / *c as f64;
                }
            }
        }
        series.push((m.class.as_str().to_string(), sum));
    }
    let mut files =
        vec![("classes-cpu.svg", herd_policy::sim::plot::line_chart("CPU by class", "cores", bucket, &series))];
    if let Some(i) = &r.importance {
        let bars: Vec<(String, f64)> = i.ranking.iter().map(|x| (x.feature.clone(), x.importance)).collect();
        let title = format!("What predicts {} (held-out R² {:.2})", i.target, i.held_out_r2);
        files.push((
            "importance.svg",
            herd_policy::sim::plot::bar_chart(&title, "share of the forest's variance reduction", &bars),
        ));
    }
    for (file, svg) in files {
        let path = dir.join(file);
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSV of two containers of known classes classifies and plots; the trace it exports
    /// reads back as a simulator trace with the same CPU.
    #[test]
    fn a_csv_is_classified_plotted_and_exported_as_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("time,container,cpu,memory_bytes,net_rx_bps,throttled_pct\n");
        for t in 0..60 {
            let burst = if t % 10 == 0 { 2.0 } else { 0.0 };
            csv.push_str(&format!("{t},burner,{},1000000,0,{}\n", 0.9 + (t % 3) as f64 * 0.05, (t % 3) * 10));
            csv.push_str(&format!("{t},cron,{burst},1000000,0,0\n"));
        }
        let path = dir.path().join("rec.csv");
        std::fs::write(&path, &csv).unwrap();
        let rec = read_csv(&path).unwrap();
        let report = herd_workload::report(&rec, &ClassRules::default());
        let out = text(&report);
        assert!(out.contains("burner: cpu-bound") && out.contains("cron: bursty"), "{out}");
        write_plots(dir.path(), &rec, &report).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("classes-cpu.svg")).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2);

        let (trace_csv, _) = rec.to_trace_csv(1.0).unwrap();
        let trace = herd_policy::sim::Trace::from_csv(&trace_csv).unwrap();
        assert_eq!((trace.steps(), trace.step_secs), (60, 1.0));
        let burner = trace.names.iter().position(|n| n == "burner").unwrap();
        assert_eq!(trace.cpu[burner][1], 0.95);
        assert_eq!(trace.memory[burner][0], 1_000_000);
    }

    #[test]
    fn a_bad_csv_names_the_file_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        std::fs::write(&path, "time,container,cpu\n0,a,1\n1,a,high\n").unwrap();
        let err = format!("{:#}", read_csv(&path).unwrap_err());
        assert!(err.contains("bad.csv") && err.contains("line 3") && err.contains("`high`"), "{err}");
    }
}
