//! CRIU's own test suite (ZDTM) through Herd, beside plain CRIU: for each static test, plain
//! CRIU (`zdtm.py run -f h`), `herd checkpoint` + `herd restore`, `herd migrate --mode cold`
//! and `herd migrate --mode postcopy` between two nodes (see `herd_bench::zdtm`).
//!
//! ```sh
//! scripts/zdtm-image.sh        # once: builds the suite and its image (setup.sh does it)
//! cargo build --release --bin herd --bin zdtm && target/release/zdtm [--jobs 2] [--doc docs/zdtm.md]
//!     [--baseline-tap FILE | --no-baseline] [--keep] [--subset ci | TEST...]
//! ```
//!
//! It prints a line per test as it ends, then the table by feature group and the goal's
//! figure: of the tests plain CRIU passes here and Herd runs, the share that pass each column.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use herd_bench::BenchCluster;
use herd_bench::zdtm::{self, Baseline, Column, Outcome, TestCase};

const INDEX: u8 = 23;

struct Args {
    jobs: usize,
    doc: Option<PathBuf>,
    baseline_tap: Option<PathBuf>,
    no_baseline: bool,
    keep: bool,
    tests: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args { jobs: 2, doc: None, baseline_tap: None, no_baseline: false, keep: false, tests: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--jobs" => a.jobs = it.next().context("--jobs N")?.parse().context("--jobs N")?,
            "--doc" => a.doc = Some(it.next().context("--doc FILE")?.into()),
            "--baseline-tap" => a.baseline_tap = Some(it.next().context("--baseline-tap FILE")?.into()),
            "--no-baseline" => a.no_baseline = true,
            "--keep" => a.keep = true,
            "--subset" => {
                let which = it.next().context("--subset ci")?;
                if which != "ci" {
                    bail!("unknown subset {which} (there is: ci)");
                }
                a.tests.extend(zdtm::CI_SUBSET.iter().map(|s| s.to_string()));
            }
            "-h" | "--help" => {
                println!(
                    "usage: zdtm [--jobs N] [--doc FILE] [--baseline-tap FILE | --no-baseline] [--keep] [--subset ci | TEST...]"
                );
                std::process::exit(0);
            }
            t if !t.starts_with('-') => a.tests.push(t.to_string()),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let started = Instant::now();
    let src = zdtm::criu_source()?;
    let mut suite = zdtm::load_suite(&src.join("test/zdtm/static"))?;
    if !args.tests.is_empty() {
        for t in &args.tests {
            if !suite.iter().any(|s| &s.name == t) {
                bail!("no test {t} in the suite");
            }
        }
        suite.retain(|t| args.tests.contains(&t.name));
    }

    let baseline = if args.no_baseline {
        Baseline::default()
    } else if let Some(tap) = &args.baseline_tap {
        Baseline::from_tap(&std::fs::read_to_string(tap).with_context(|| format!("reading {}", tap.display()))?)
    } else {
        println!("plain CRIU: zdtm.py run -a -f h over the static tests ...");
        let t = Instant::now();
        let b = Baseline::run(&src, &std::env::temp_dir().join("herd-zdtm-baseline"))?;
        println!("plain CRIU: {} tests in {:.0} s", b.results.len(), t.elapsed().as_secs_f64());
        b
    };

    let mut has = zdtm::criu_feature_checker();
    let mut not_run: BTreeMap<String, String> = BTreeMap::new();
    let mut to_run: Vec<TestCase> = Vec::new();
    for t in &suite {
        match zdtm::not_run_because(t, &mut has) {
            Some(why) => {
                not_run.insert(t.name.clone(), why);
            }
            None => to_run.push(t.clone()),
        }
    }
    println!("{} tests: {} run through Herd, {} not (reasons in the table)", suite.len(), to_run.len(), not_run.len());

    let cluster = BenchCluster::up(INDEX, 2)?;
    let image = PathBuf::from(zdtm::IMAGE_DIR).join("zdtm.tar");
    cluster.ok(&["image", "import", "zdtm", image.to_str().context("image path")?])?;
    let herd_started = Instant::now();
    let results = zdtm::run_all(&cluster, &to_run, args.jobs);
    let herd_secs = herd_started.elapsed().as_secs_f64();
    if args.keep {
        println!("cluster {} kept, with its logs (herd down --name {} --purge removes it)", cluster.name, cluster.name);
        std::mem::forget(cluster);
    } else {
        drop(cluster);
    }

    let report = Report { suite: &suite, baseline: &baseline, not_run: &not_run, results: &results };
    let text = report.markdown(herd_secs, started.elapsed().as_secs_f64());
    println!("\n{text}");
    if let Some(doc) = &args.doc {
        std::fs::write(doc, &text).with_context(|| format!("writing {}", doc.display()))?;
        println!("written to {}", doc.display());
    }
    Ok(())
}

struct Report<'a> {
    suite: &'a [TestCase],
    baseline: &'a Baseline,
    not_run: &'a BTreeMap<String, String>,
    results: &'a BTreeMap<String, BTreeMap<Column, Outcome>>,
}

impl Report<'_> {
    fn baseline_cell(&self, test: &str) -> String {
        match self.baseline.results.get(test) {
            None => "-".into(),
            Some(Outcome::Pass) => "pass".into(),
            Some(Outcome::Skip(why)) => format!("skip ({why})"),
            Some(o) => o.short().into(),
        }
    }

    /// A table of how many of `tests` pass each column.
    fn shares(&self, tests: &[&String]) -> String {
        let mut s = String::from("| column | pass | of | share |\n|---|---|---|---|\n");
        for col in Column::ALL {
            let pass = tests.iter().filter(|t| self.results[**t][&col].is_pass()).count();
            s.push_str(&format!(
                "| {} | {pass} | {} | {:.1} % |\n",
                col.title(),
                tests.len(),
                100.0 * pass as f64 / tests.len().max(1) as f64
            ));
        }
        s
    }

    fn markdown(&self, herd_secs: f64, total_secs: f64) -> String {
        let mut s = String::new();
        s.push_str("# CRIU's test suite (ZDTM) through Herd\n\n");
        s.push_str(
            "Written by `target/release/zdtm --doc docs/zdtm.md` (bench/src/bin/zdtm.rs); the method is in \
             docs/design/zdtm.md.\n\n",
        );
        // The goal: of what plain CRIU passes and Herd runs, the share that passes each column.
        let eligible: Vec<&String> = self
            .results
            .keys()
            .filter(|t| self.baseline.results.is_empty() || self.baseline.results.get(*t) == Some(&Outcome::Pass))
            .collect();
        s.push_str(&format!(
            "{} static tests; {} not run through Herd (reasons below); {} run, {} of them pass plain CRIU here.\n\n",
            self.suite.len(),
            self.not_run.len(),
            self.results.len(),
            eligible.len()
        ));
        s.push_str(&self.shares(&eligible));
        // The same, leaving out what could not start in a Herd container (a capability Docker
        // does not give, a device, a sysctl it writes): no move was tried on those.
        let started: Vec<&String> = eligible
            .iter()
            .copied()
            .filter(|t| !self.results[*t].values().all(|o| matches!(o, Outcome::Skip(_))))
            .collect();
        s.push_str(&format!(
            "\nOf the {} that start in a Herd container (the others need a device, a writable /proc/sys, \
             real-time CPU time or a network namespace of their own, or their own `.checkskip` says no there):\n\n",
            started.len()
        ));
        s.push_str(&self.shares(&started));
        s.push_str(&format!("\nThe Herd columns took {:.0} s, the whole run {:.0} s.\n\n", herd_secs, total_secs));

        let mut groups: BTreeMap<&str, Vec<&TestCase>> = BTreeMap::new();
        for t in self.suite {
            groups.entry(zdtm::group_of(&t.name)).or_default().push(t);
        }
        for (group, tests) in groups {
            s.push_str(&format!(
                "## {group}\n\n| test | plain CRIU | {} | why not |\n|---|---|---|---|---|---|\n",
                Column::ALL.map(|c| c.title()).join(" | ")
            ));
            for t in tests {
                let base = self.baseline_cell(&t.name);
                let (cells, why) = match (self.results.get(&t.name), self.not_run.get(&t.name)) {
                    (Some(r), _) => {
                        let cells = Column::ALL.map(|c| r[&c].short().to_string()).join(" | ");
                        let why = r.values().find(|o| !o.is_pass()).map(|o| o.detail().to_string());
                        let mut why = match (why, zdtm::known_cause(&t.name)) {
                            (Some(w), Some(cause)) => format!("{cause} ({})", escape(&w)),
                            (Some(w), None) => escape(&w),
                            (None, _) => String::new(),
                        };
                        let caps = zdtm::capabilities_needed(&t.name);
                        if !caps.is_empty() {
                            let added = caps.iter().map(|c| format!("--cap-add {c}")).collect::<Vec<_>>().join(" ");
                            why = if why.is_empty() {
                                format!("run with {added}")
                            } else {
                                format!("run with {added}; {why}")
                            };
                        }
                        (cells, why)
                    }
                    (None, Some(why)) => (Column::ALL.map(|_| "not run").join(" | "), escape(why)),
                    (None, None) => (Column::ALL.map(|_| "-").join(" | "), String::new()),
                };
                s.push_str(&format!("| {} | {} | {cells} | {why} |\n", t.name, escape(&base)));
            }
            s.push('\n');
        }
        s
    }
}

fn escape(s: &str) -> String {
    let s: String = s.chars().take(300).collect();
    s.replace('|', "\\|").replace('\n', " ")
}
