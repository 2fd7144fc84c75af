//! The comparison table of simulation results, as plain text (for `herd sim` and the bench).

use crate::sim::run::SimResult;

const GIB: f64 = (1u64 << 30) as f64;

/// One row per policy: contention, SLA violations, migrations, bytes moved, downtime, energy,
/// active nodes (mean, min-max) and nodes woken from standby.
pub fn table(names: &[String], results: &[SimResult]) -> String {
    let header = [
        "POLICY",
        "CONTENTION core-s",
        "CONTENTION ctr-s",
        "SLA VIOL",
        "MIGRATIONS",
        "MOVED GiB",
        "DOWNTIME s",
        "ENERGY kWh",
        "ACTIVE NODES",
        "WAKE-UPS",
    ];
    let rows: Vec<Vec<String>> = names
        .iter()
        .zip(results)
        .map(|(n, r)| {
            let lo = r.active_nodes.iter().min().unwrap_or(&0);
            let hi = r.active_nodes.iter().max().unwrap_or(&0);
            vec![
                n.clone(),
                format!("{:.0}", r.contention_core_secs),
                format!("{:.0}", r.contention_container_secs),
                r.sla_violations.to_string(),
                r.migrations.to_string(),
                format!("{:.1}", r.bytes_moved as f64 / GIB),
                format!("{:.1}", r.downtime_secs),
                format!("{:.1}", r.energy_kwh),
                format!("{:.1} ({lo}-{hi})", r.mean_active_nodes),
                r.wake_ups.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}
