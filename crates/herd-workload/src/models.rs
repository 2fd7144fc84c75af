//! The best forecasting model per workload class: for each class of a [`Report`], the CPU and
//! the memory series of its containers go through `herd-forecast`'s pooled rolling validation
//! ([`herd_forecast::compare_pooled`]: every model on every container, held-out errors pooled
//! over the class) and the model with the lowest pooled RMSE is kept, per class and resource.
//!
//! Validation fits every model several times per container, so [`ModelLimits`] bound the work:
//! at most `max_containers` containers per class (evenly spread over the class's containers in
//! name order, the others named in a note) and their last `max_points` samples.

use serde::Serialize;

use herd_forecast::{PooledComparison, Series, compare_pooled};

use crate::classify::Class;
use crate::recording::{Field, Recording, Sample};
use crate::report::Report;

/// How much work [`class_models`] may do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelLimits {
    /// Containers validated per class.
    pub max_containers: usize,
    /// The newest samples of each container used.
    pub max_points: usize,
}

impl Default for ModelLimits {
    fn default() -> Self {
        ModelLimits { max_containers: 12, max_points: 3600 }
    }
}

/// One class's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassModels {
    pub class: Class,
    /// Every container of the class.
    pub containers: Vec<String>,
    /// Those whose series were validated (at most `max_containers`).
    pub validated: Vec<String>,
    pub cpu: PooledComparison,
    pub memory: PooledComparison,
}

impl ClassModels {
    /// The model kept for CPU, if any container could be validated.
    pub fn cpu_model(&self) -> Option<&str> {
        self.cpu.best.as_deref()
    }

    pub fn memory_model(&self) -> Option<&str> {
        self.memory.best.as_deref()
    }
}

/// The comparison for every class that has containers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelsReport {
    /// Steps forecast and held out per fold.
    pub horizon: usize,
    pub limits: ModelLimits,
    pub classes: Vec<ClassModels>,
    /// Containers that were not classified (so not compared), and why.
    pub unclassified: Vec<(String, String)>,
    pub notes: Vec<String>,
}

impl ModelsReport {
    pub fn class(&self, class: Class) -> Option<&ClassModels> {
        self.classes.iter().find(|c| c.class == class)
    }
}

/// Compares the models per class of `report` (made from `rec`), forecasting `horizon` steps.
pub fn class_models(rec: &Recording, report: &Report, horizon: usize, limits: &ModelLimits) -> ModelsReport {
    let mut classes = Vec::new();
    let mut notes = Vec::new();
    for members in report.classes.iter().filter(|m| !m.containers.is_empty()) {
        let validated = spread(&members.containers, limits.max_containers.max(1));
        if validated.len() < members.containers.len() {
            notes.push(format!(
                "{}: {} of its {} containers validated ({})",
                members.class.as_str(),
                validated.len(),
                members.containers.len(),
                validated.join(", ")
            ));
        }
        let samples: Vec<(&String, &[Sample])> = validated
            .iter()
            .filter_map(|name| rec.containers.get(name).map(|s| (name, tail(s, limits.max_points))))
            .collect();
        let cpu: Vec<Series> = samples.iter().map(|(n, s)| series(n, s, Field::CPU)).collect();
        let memory: Vec<Series> =
            samples.iter().map(|(n, s)| series(n, s, Field::MEMORY)).filter(|s| !s.is_empty()).collect();
        classes.push(ClassModels {
            class: members.class,
            containers: members.containers.clone(),
            validated,
            cpu: compare_pooled(&cpu, horizon),
            memory: compare_pooled(&memory, horizon),
        });
    }
    ModelsReport { horizon, limits: *limits, classes, unclassified: report.skipped.clone(), notes }
}

/// At most `n` of `names`, evenly spread (all of them when they are `n` or fewer).
fn spread(names: &[String], n: usize) -> Vec<String> {
    if names.len() <= n {
        return names.to_vec();
    }
    (0..n).map(|i| names[i * names.len() / n].clone()).collect()
}

fn tail(samples: &[Sample], n: usize) -> &[Sample] {
    &samples[samples.len().saturating_sub(n)..]
}

/// The samples of `field` that have a value, with their times; a series without times if the
/// times do not increase (they do in a recording, but the series must not fail on it).
fn series(name: &str, samples: &[Sample], field: Field) -> Series {
    let (values, times): (Vec<f64>, Vec<i64>) =
        samples.iter().filter_map(|s| s.get(field).map(|v| (v, (s.t * 1000.0).round() as i64))).unzip();
    let plain = Series::new(name, values);
    plain.clone().with_timestamps(times).unwrap_or(plain)
}

#[cfg(test)]
mod tests {
    use std::f64::consts::TAU;

    use super::*;
    use crate::classify::ClassRules;
    use crate::recording::FIELDS;
    use crate::report::report;

    fn add(rec: &mut Recording, name: &str, n: usize, cpu: impl Fn(usize) -> f64, mem: impl Fn(usize) -> f64) {
        for i in 0..n {
            let mut values = [None; FIELDS.len()];
            for f in [Field::BLK_READ, Field::BLK_WRITE, Field::NET_RX, Field::NET_TX] {
                values[f.0] = Some(0.0);
            }
            values[Field::CPU.0] = Some(cpu(i));
            values[Field::MEMORY.0] = Some(mem(i));
            rec.push(name, Sample { t: i as f64, values });
        }
    }

    /// CPU-bound containers on a 30-sample cycle, whose memory grows steadily; memory-bound
    /// ones with flat CPU and memory following a random walk.
    fn recording() -> Recording {
        let mut rec = Recording::default();
        for (k, name) in ["web-1", "web-2", "web-3"].iter().enumerate() {
            let phase = k as f64;
            add(&mut rec, name, 300, |i| 1.5 + 0.5 * (i as f64 * TAU / 30.0 + phase).sin(), |i| 1e8 + 1e6 * i as f64);
        }
        let mut state = 7u64;
        let mut walk = Vec::new();
        let mut level = 3e9;
        for _ in 0..300 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            level += ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 1e7;
            walk.push(level);
        }
        add(&mut rec, "cache", 300, |_| 0.3, |i| walk[i]);
        add(&mut rec, "tiny", 5, |_| 1.0, |_| 1.0);
        rec
    }

    #[test]
    fn each_class_keeps_the_model_that_suits_it() {
        let rec = recording();
        let rep = report(&rec, &ClassRules::default());
        let r = class_models(&rec, &rep, 15, &ModelLimits::default());
        let web = r.class(Class::CpuBound).expect("a cpu-bound class");
        assert_eq!(web.containers, ["web-1", "web-2", "web-3"]);
        // A cycle: a seasonal model beats repeating the last value by far.
        let cpu = web.cpu_model().unwrap();
        assert!(cpu != "naive", "{:#?}", web.cpu);
        assert!(web.cpu.model(cpu).unwrap().accuracy.rmse < web.cpu.model("naive").unwrap().accuracy.rmse / 3.0);
        assert_eq!(web.cpu.model("naive").unwrap().accuracy.points, 3 * 3 * 15);
        // A steady climb: a model with a trend beats the last value.
        let mem = web.memory_model().unwrap();
        assert!(mem == "ets" || mem == "regression", "{:#?}", web.memory);
        let cache = r.class(Class::MemoryBound).expect("a memory-bound class");
        assert_eq!(cache.containers, ["cache"]);
        assert!(cache.memory_model().is_some());
        assert_eq!(r.unclassified.len(), 1, "{:?}", r.unclassified);
        assert!(r.class(Class::Idle).is_none());
    }

    #[test]
    fn limits_bound_the_work_and_say_so() {
        let rec = recording();
        let rep = report(&rec, &ClassRules::default());
        let r = class_models(&rec, &rep, 15, &ModelLimits { max_containers: 2, max_points: 100 });
        let web = r.class(Class::CpuBound).unwrap();
        assert_eq!(web.validated, ["web-1", "web-2"]);
        assert!(r.notes[0].contains("2 of its 3 containers"), "{:?}", r.notes);
        assert!(web.cpu.series.iter().all(|s| s.points == 100));
        // Too long a horizon for the history: nothing validated, no winner, the reason given.
        let r = class_models(&rec, &rep, 200, &ModelLimits::default());
        let web = r.class(Class::CpuBound).unwrap();
        assert_eq!(web.cpu_model(), None);
        assert!(web.cpu.skipped[0].why.contains("too little history"), "{:?}", web.cpu.skipped);
    }
}
