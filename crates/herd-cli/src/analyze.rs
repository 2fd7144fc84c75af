//! `herd analyze`: analysis of workloads. `herd analyze forecast` forecasts one column of a
//! CSV file with the models of `herd-forecast` and shows how accurate each was on held-out
//! data (no cluster needed); `herd analyze classes` and `herd analyze export` are in
//! [`crate::classes`], `herd analyze models` in [`crate::models`].

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use herd_forecast::{Selection, Series};

use crate::format;

/// `herd analyze ...`
#[derive(Debug, Subcommand)]
pub enum AnalyzeCommand {
    /// Forecast a column of a CSV file and compare the models on held-out data.
    Forecast(ForecastArgs),
    /// Characterise containers from recorded metrics (the cluster's, or a CSV): features,
    /// classes (cpu-bound, memory-bound, io-bound, network-bound, idle, bursty), the features
    /// that matter most for CPU stall or throttling.
    Classes(crate::classes::ClassesArgs),
    /// Write the cluster's recorded metrics as a trace CSV that herd sim --trace replays.
    Export(crate::classes::ExportArgs),
    /// Compare the forecasting models per workload class (the cluster's recorded metrics, or a
    /// CSV): each model's pooled accuracy on the CPU and memory of each class's containers,
    /// and the best per class.
    Models(crate::models::ModelsArgs),
}

/// `herd analyze forecast`
#[derive(Debug, Args)]
pub struct ForecastArgs {
    /// The CSV file: a header row, then one row per sample, comma-separated.
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// The column to forecast.
    #[arg(long, value_name = "NAME")]
    pub column: String,
    /// The column holding each row's time (RFC 3339, or Unix seconds or milliseconds);
    /// without it rows are taken as evenly spaced.
    #[arg(long, value_name = "NAME")]
    pub timestamp_column: Option<String>,
    /// How many steps to forecast; as many points are held out to measure accuracy.
    #[arg(long, value_name = "N")]
    pub horizon: usize,
    /// Season length in rows (1: no season). Default: one day of samples when the
    /// timestamps allow, else the autocorrelation peak, else none.
    #[arg(long, value_name = "N")]
    pub season: Option<usize>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Runs `cmd`; `client` is called only by the subcommands that read the cluster.
pub async fn analyze(
    client: impl FnOnce() -> anyhow::Result<crate::Client>,
    cmd: AnalyzeCommand,
) -> anyhow::Result<()> {
    match cmd {
        AnalyzeCommand::Forecast(a) => forecast(a),
        AnalyzeCommand::Classes(a) => crate::classes::classes(client, a).await,
        AnalyzeCommand::Export(a) => crate::classes::export(client, a).await,
        AnalyzeCommand::Models(a) => crate::models::models(client, a).await,
    }
}

fn forecast(args: ForecastArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.csv).with_context(|| format!("cannot read {}", args.csv.display()))?;
    let mut series: Series = herd_forecast::read_csv(file, &args.column, args.timestamp_column.as_deref())
        .with_context(|| format!("{}", args.csv.display()))?;
    if let Some(s) = args.season {
        series = series.with_season(s);
    }
    let selection = herd_forecast::select_best(&series, args.horizon)?;
    let out = if args.json { serde_json::to_string_pretty(&selection)? + "\n" } else { text(&selection) };
    // Written at once; a reader that went away (`| head`) is not an error.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Appends a table without the trailing spaces of its last column.
pub(crate) fn push_table(out: &mut String, t: &comfy_table::Table) {
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn text(s: &Selection) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{}: {} rows; season: {}; {} fold(s), {} held-out points\n",
        s.series, s.rows, s.season.why, s.folds, s.held_out_points
    );
    let mut t = format::table(&["MODEL", "MAE", "RMSE", "MAPE", "", "DETAIL"]);
    for m in &s.models {
        let won = if m.name == s.best { "best (lowest RMSE)" } else { "" };
        let row = match (&m.accuracy, &m.failed) {
            (Some(a), _) => vec![
                m.name.clone(),
                num(a.mae),
                num(a.rmse),
                a.mape.map_or_else(|| "-".to_string(), |p| format!("{p:.2}%")),
                won.to_string(),
                m.detail.clone().unwrap_or_default(),
            ],
            (None, failed) => vec![
                m.name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "failed".into(),
                failed.clone().unwrap_or_default(),
            ],
        };
        t.add_row(row);
    }
    push_table(&mut out, &t);
    if let Some(why) = s.models.iter().find_map(|m| m.accuracy.as_ref()?.mape_absent.clone()) {
        let _ = writeln!(out, "MAPE: {why}");
    }
    for note in &s.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(out, "\nForecast ({}, {} steps):", s.best, s.horizon);
    let timed = s.forecast.iter().any(|p| p.timestamp.is_some());
    let mut t = format::table(if timed { &["STEP", "TIME", "VALUE"] } else { &["STEP", "VALUE"] });
    for p in &s.forecast {
        let mut row = vec![p.step.to_string()];
        if timed {
            row.push(p.timestamp.clone().unwrap_or_default());
        }
        row.push(num(p.value));
        t.add_row(row);
    }
    push_table(&mut out, &t);
    out
}

/// Four significant figures at least, without a wall of digits.
pub(crate) fn num(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 { format!("{v:.3e}") } else { format!("{v:.4}") }
}
