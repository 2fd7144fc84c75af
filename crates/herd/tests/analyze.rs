//! `herd analyze forecast` on CSV files: no cluster, no root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HERD: &str = env!("CARGO_BIN_EXE_herd");

fn herd(args: &[&str]) -> Output {
    Command::new(HERD).args(args).env_remove("HERD_CONFIG").output().expect("run herd")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Eight days of 30-minute samples (RFC 3339 times): a daily cycle with deterministic noise.
fn daily_cycle_csv() -> String {
    let mut csv = String::from("time,cpu,memory\n");
    let mut state: u64 = 42;
    for i in 0..8 * 48 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let noise = ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
        let cpu = 40.0 + 25.0 * (i as f64 * std::f64::consts::TAU / 48.0).sin() + 3.0 * noise;
        let (h, m) = ((i / 2) % 24, (i % 2) * 30);
        csv.push_str(&format!("2024-05-{:02}T{h:02}:{m:02}:00Z,{cpu:.3},{}\n", 1 + i / 48, 1000 + i));
    }
    csv
}

#[test]
fn forecast_of_a_daily_cycle_beats_the_naive_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "load.csv", &daily_cycle_csv());
    let csv = csv.to_str().unwrap();
    let args =
        ["analyze", "forecast", "--csv", csv, "--column", "cpu", "--timestamp-column", "time", "--horizon", "48"];
    let out = herd(&[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["season"]["length"], 48, "{json:#}");
    assert_eq!(json["ranked_by"], "rmse");
    let best = json["best"].as_str().unwrap();
    assert_ne!(best, "naive", "{json:#}");
    let rmse = |name: &str| {
        json["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()["accuracy"]["rmse"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} has no RMSE: {json:#}"))
    };
    assert!(rmse(best) < rmse("naive"), "{json:#}");
    let forecast = json["forecast"].as_array().unwrap();
    assert_eq!(forecast.len(), 48);
    assert_eq!(forecast[0]["timestamp"], "2024-05-09T00:00:00Z");
    assert!(forecast.iter().all(|p| p["value"].as_f64().is_some_and(f64::is_finite)));

    // The same run for people: a table of models with the winner marked, then the forecast.
    let out = herd(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in ["MODEL", "RMSE", "MAPE", "seasonal-naive", "regression", "best (lowest RMSE)", "2024-05-09T23:30:00Z"]
    {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn bad_cell_names_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("time,cpu\n");
    for i in 0..50 {
        text.push_str(&format!("{},{}\n", 1_714_521_600 + 60 * i, if i == 30 { "n/a".into() } else { i.to_string() }));
    }
    let csv = write(dir.path(), "bad.csv", &text);
    let out = herd(&["analyze", "forecast", "--csv", csv.to_str().unwrap(), "--column", "cpu", "--horizon", "5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 32, column 2 (\"cpu\"): \"n/a\" is not a number"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = herd(&["analyze", "forecast", "--csv", csv.to_str().unwrap(), "--column", "mem", "--horizon", "5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no column named \"mem\"; the columns are: time, cpu"), "{err}");
}

#[test]
fn too_little_history_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "short.csv", "cpu\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n");
    let out = herd(&["analyze", "forecast", "--csv", csv.to_str().unwrap(), "--column", "cpu", "--horizon", "6"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too little history: a horizon of 6 needs at least 16 rows"), "{err}");
    assert!(err.contains("there are 12"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
