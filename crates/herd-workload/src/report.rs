//! The characterisation report: each container's features and class, the containers of each
//! class, and the feature ranking, with the reasons for anything left out.

use serde::Serialize;

use crate::classify::{Class, ClassRules};
use crate::features::Features;
use crate::importance::{Importance, importance};
use crate::recording::Recording;

/// A container needs at least this many samples with a CPU figure to be classified.
pub const MIN_SAMPLES: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerReport {
    pub name: String,
    pub class: Class,
    /// Why it is in its class.
    pub why: String,
    pub features: Features,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMembers {
    pub class: Class,
    pub containers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub rules: ClassRules,
    pub containers: Vec<ContainerReport>,
    /// Every class, with its members (possibly none).
    pub classes: Vec<ClassMembers>,
    /// Containers left out, and why.
    pub skipped: Vec<(String, String)>,
    pub importance: Option<Importance>,
    /// Why there is no feature ranking, when there is none.
    pub importance_skipped: Option<String>,
    pub notes: Vec<String>,
}

/// Characterises every container of `rec` by `rules`.
pub fn report(rec: &Recording, rules: &ClassRules) -> Report {
    let mut containers = Vec::new();
    let mut skipped = Vec::new();
    for (name, samples) in &rec.containers {
        match Features::of(samples) {
            Some(f) if f.samples >= MIN_SAMPLES => {
                let v = rules.classify(&f);
                containers.push(ContainerReport { name: name.clone(), class: v.class, why: v.why, features: f });
            }
            Some(f) => skipped.push((
                name.clone(),
                format!("too little history: {} samples with CPU, {MIN_SAMPLES} needed", f.samples),
            )),
            None => skipped.push((name.clone(), "no CPU samples".into())),
        }
    }
    let classes = Class::ALL
        .iter()
        .map(|&class| ClassMembers {
            class,
            containers: containers.iter().filter(|c| c.class == class).map(|c| c.name.clone()).collect(),
        })
        .collect();
    let (importance, importance_skipped) = match importance(rec) {
        Ok(i) => (Some(i), None),
        Err(why) => (None, Some(why)),
    };
    let mut notes = Vec::new();
    if !rec.ignored.is_empty() {
        notes.push(format!("columns not used: {}", rec.ignored.join(", ")));
    }
    Report { rules: rules.clone(), containers, classes, skipped, importance, importance_skipped, notes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{FIELDS, Field, Sample};

    /// Synthetic containers of known classes, 120 samples each.
    fn synthetic() -> Recording {
        let mut rec = Recording::default();
        for i in 0..120 {
            let t = i as f64;
            let mut add = |name: &str, set: &[(Field, f64)]| {
                let mut values = [None; FIELDS.len()];
                for f in [Field::CPU, Field::MEMORY, Field::BLK_READ, Field::BLK_WRITE, Field::NET_RX, Field::NET_TX] {
                    values[f.0] = Some(0.0);
                }
                values[Field::MEMORY.0] = Some(8e6);
                for &(f, v) in set {
                    values[f.0] = Some(v);
                }
                rec.push(name, Sample { t, values });
            };
            let wobble = (i % 7) as f64 / 100.0;
            add("burner", &[(Field::CPU, 0.95 + wobble)]);
            add("cache", &[(Field::CPU, 0.05), (Field::MEMORY, 3e9)]);
            add("backup", &[(Field::CPU, 0.1 + wobble), (Field::BLK_WRITE, 60e6)]);
            add("proxy", &[(Field::CPU, 0.2 + wobble), (Field::NET_RX, 25e6), (Field::NET_TX, 20e6)]);
            add("sleeper", &[(Field::CPU, 0.001)]);
            add("cron", &[(Field::CPU, if i % 10 == 0 { 1.5 } else { 0.01 })]);
        }
        rec.push("newcomer", Sample { t: 0.0, values: [Some(1.0); FIELDS.len()] });
        rec
    }

    #[test]
    fn synthetic_containers_land_in_their_classes() {
        let r = report(&synthetic(), &ClassRules::default());
        let class_of = |n: &str| r.containers.iter().find(|c| c.name == n).unwrap().class;
        assert_eq!(class_of("burner"), Class::CpuBound);
        assert_eq!(class_of("cache"), Class::MemoryBound);
        assert_eq!(class_of("backup"), Class::IoBound);
        assert_eq!(class_of("proxy"), Class::NetworkBound);
        assert_eq!(class_of("sleeper"), Class::Idle);
        assert_eq!(class_of("cron"), Class::Bursty);
        assert_eq!(
            r.skipped,
            vec![("newcomer".to_string(), "too little history: 1 samples with CPU, 10 needed".to_string())]
        );
        assert_eq!(r.classes.len(), 6);
        assert!(r.classes.iter().all(|c| c.containers.len() == 1));
        // No throttling or pressure recorded: the ranking is skipped with the reason.
        assert!(r.importance.is_none() && r.importance_skipped.as_deref().unwrap().contains("no performance signal"));
    }
}
