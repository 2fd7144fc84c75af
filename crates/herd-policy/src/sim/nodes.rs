//! The simulated clusters' node types: two servers with power curves measured with
//! SPECpower_ssj2008 (the default: an old, poorly proportional one and a newer, proportional
//! one, the least and most proportional of CloudSim's SPECpower power models), the former invented default kept for comparison,
//! and node types read from a CSV file. Sources and figures: `docs/design/policies.md`.

use crate::cluster::{Node, PowerModel};
use crate::error::PolicyError;

const GIB: u64 = 1 << 30;

/// Share of a node's peak power drawn in standby: sleep states "consume merely 4-6 % of
/// nominal power" (Xi et al., ISLPED 2013); the middle of that range.
pub const STANDBY_SHARE_OF_PEAK: f64 = 0.05;
/// Seconds from standby to ready: the setup delay of a server switched back on in Gandhi,
/// Gupta, Harchol-Balter and Kozuch's work on turning servers off (200 s; a boot, not a
/// resume from suspend-to-RAM).
pub const WAKE_SECS: f64 = 200.0;

/// A kind of node: its capacity and power model.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeType {
    pub name: String,
    pub cpu_cores: f64,
    pub memory_bytes: u64,
    pub power: PowerModel,
}

fn measured(curve: [f64; 11]) -> PowerModel {
    PowerModel { curve, standby_watts: 0.0, wake_secs: 0.0 }.with_standby(STANDBY_SHARE_OF_PEAK * curve[10], WAKE_SECS)
}

/// HP ProLiant ML110 G4 (1 x Xeon 3040, 2 cores, 1.86 GHz), SPECpower_ssj2008 result
/// power_ssj2008-20110127-00342: 86 W idle, 117 W at full load (idle is 74 % of peak).
/// Memory: 8 GiB, not measured (the measured configuration had 4 GB).
pub fn hp_ml110_g4() -> NodeType {
    NodeType {
        name: "hp-ml110-g4".into(),
        cpu_cores: 2.0,
        memory_bytes: 8 * GIB,
        power: measured([86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0]),
    }
}

/// IBM System x3550 M3 (2 x Xeon X5675, 12 cores, 3.07 GHz), SPECpower_ssj2008 result
/// power_ssj2008-20110406-00368: 58.4 W idle, 222 W at full load (idle is 26 % of peak).
/// Memory: 64 GiB, not measured (the measured configuration had 16 GB).
pub fn ibm_x3550_m3() -> NodeType {
    NodeType {
        name: "ibm-x3550-m3".into(),
        cpu_cores: 12.0,
        memory_bytes: 64 * GIB,
        power: measured([58.4, 98.0, 109.0, 118.0, 128.0, 140.0, 153.0, 170.0, 189.0, 205.0, 222.0]),
    }
}

/// The former default types (not measured): 16 cores / 64 GiB / 110-330 W and 8 cores /
/// 32 GiB / 70-180 W, linear, with the same standby and wake-up as the measured ones.
pub fn legacy_types() -> [NodeType; 2] {
    let standby = |p: PowerModel| p.with_standby(STANDBY_SHARE_OF_PEAK * p.peak_watts(), WAKE_SECS);
    [
        NodeType {
            name: "legacy-16".into(),
            cpu_cores: 16.0,
            memory_bytes: 64 * GIB,
            power: standby(PowerModel::linear(110.0, 330.0)),
        },
        NodeType {
            name: "legacy-8".into(),
            cpu_cores: 8.0,
            memory_bytes: 32 * GIB,
            power: standby(PowerModel::linear(70.0, 180.0)),
        },
    ]
}

/// `m` nodes named `n00`, `n01`, ... cycling through `types`.
pub fn cycle(types: &[NodeType], m: usize) -> Vec<Node> {
    (0..m)
        .map(|i| {
            let t = &types[i % types.len()];
            Node { name: format!("n{i:02}"), cpu_cores: t.cpu_cores, memory_bytes: t.memory_bytes, power: t.power }
        })
        .collect()
}

/// `m` nodes alternating the two measured types, the proportional one first.
pub fn default_nodes(m: usize) -> Vec<Node> {
    cycle(&[ibm_x3550_m3(), hp_ml110_g4()], m)
}

/// `m` nodes alternating the former default's two types.
pub fn legacy_nodes(m: usize) -> Vec<Node> {
    cycle(&legacy_types(), m)
}

/// The same nodes with standby free and waking instant (the simulator's former model of a
/// switched-off node).
pub fn free_standby(nodes: &[Node]) -> Vec<Node> {
    nodes.iter().map(|n| Node { power: n.power.with_standby(0.0, 0.0), ..n.clone() }).collect()
}

/// Nodes from a CSV of node types, one type per row. Columns, by header name: `count`,
/// `cores`, `memory_gib`, the power curve as either `idle_watts,peak_watts` (a straight line)
/// or `w0,w10,...,w100` (watts at each tenth of load), and optionally `standby_watts` (default
/// 5 % of peak) and `wake_secs` (default 200). Nodes are named `n00`, `n01`, ... in row order.
pub fn nodes_from_csv(text: &str) -> Result<Vec<Node>, PolicyError> {
    let bad = |line: usize, why: String| PolicyError::Trace(format!("node types line {line}: {why}"));
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| PolicyError::Trace("node types: the file is empty".into()))?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let need = |name: &str| col(name).ok_or_else(|| bad(1, format!("missing column `{name}`")));
    let (count, cores, mem) = (need("count")?, need("cores")?, need("memory_gib")?);
    let points: Option<Vec<usize>> = (0..=10).map(|i| col(&format!("w{}", i * 10))).collect();
    let line_cols = (col("idle_watts"), col("peak_watts"));
    if points.is_none() && !matches!(line_cols, (Some(_), Some(_))) {
        return Err(bad(1, "give the power as `idle_watts,peak_watts` or `w0,w10,...,w100`".into()));
    }
    let mut nodes = Vec::new();
    for (i, row) in lines {
        let line = i + 1;
        let cells: Vec<&str> = row.split(',').map(str::trim).collect();
        let num = |c: usize| -> Result<f64, PolicyError> {
            let cell = cells.get(c).copied().unwrap_or("");
            cell.parse::<f64>().map_err(|_| bad(line, format!("`{}` = `{cell}` is not a number", cols[c])))
        };
        let power = match &points {
            Some(p) => {
                let mut curve = [0.0; 11];
                for (k, &c) in p.iter().enumerate() {
                    curve[k] = num(c)?;
                }
                PowerModel { curve, standby_watts: 0.0, wake_secs: 0.0 }
            }
            None => PowerModel::linear(num(line_cols.0.unwrap_or(0))?, num(line_cols.1.unwrap_or(0))?),
        };
        let standby = match col("standby_watts") {
            Some(c) => num(c)?,
            None => STANDBY_SHARE_OF_PEAK * power.peak_watts(),
        };
        let wake = match col("wake_secs") {
            Some(c) => num(c)?,
            None => WAKE_SECS,
        };
        let power = power.with_standby(standby, wake);
        power.check().map_err(|e| bad(line, e))?;
        let n = num(count)?;
        let (cpu, gib) = (num(cores)?, num(mem)?);
        if !(n >= 1.0 && n.fract() == 0.0) {
            return Err(bad(line, format!("`count` = {n} must be a whole number of at least 1")));
        }
        if !(cpu > 0.0 && cpu.is_finite() && gib > 0.0 && gib.is_finite()) {
            return Err(bad(line, "`cores` and `memory_gib` must be positive".into()));
        }
        for _ in 0..n as usize {
            nodes.push(Node {
                name: format!("n{:02}", nodes.len()),
                cpu_cores: cpu,
                memory_bytes: (gib * GIB as f64) as u64,
                power,
            });
        }
    }
    if nodes.is_empty() {
        return Err(PolicyError::Trace("node types: no rows".into()));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_curves_are_interpolated_between_tenths() {
        let p = ibm_x3550_m3().power;
        assert_eq!((p.idle_watts(), p.peak_watts()), (58.4, 222.0));
        assert!((p.watts(0.05) - (58.4 + 98.0) / 2.0).abs() < 1e-9);
        assert!((p.watts(0.5) - 140.0).abs() < 1e-9);
        assert!((p.standby_watts - 11.1).abs() < 1e-9 && p.wake_secs == 200.0);
    }

    #[test]
    fn csv_node_types_take_a_line_or_a_curve() {
        let nodes =
            nodes_from_csv("count,cores,memory_gib,idle_watts,peak_watts,wake_secs\n2,8,32,70,180,60\n").unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].name, "n01");
        assert!((nodes[0].power.watts(0.5) - 125.0).abs() < 1e-9);
        assert!((nodes[0].power.standby_watts - 9.0).abs() < 1e-9 && nodes[0].power.wake_secs == 60.0);
        let header = "count,cores,memory_gib,w0,w10,w20,w30,w40,w50,w60,w70,w80,w90,w100,standby_watts";
        let nodes =
            nodes_from_csv(&format!("{header}\n1,2,8,86,89.4,92.6,96,99.5,102,106,108,112,114,117,0\n")).unwrap();
        assert_eq!(nodes[0].power.curve, hp_ml110_g4().power.curve);
        assert_eq!(nodes[0].power.standby_watts, 0.0);
    }

    #[test]
    fn bad_node_types_are_clear_errors() {
        let e = |s: &str| nodes_from_csv(s).unwrap_err().to_string();
        assert!(e("count,cores,memory_gib\n1,8,32\n").contains("idle_watts,peak_watts"));
        assert!(e("cores,memory_gib,idle_watts,peak_watts\n8,32,70,180\n").contains("missing column `count`"));
        assert!(
            e("count,cores,memory_gib,idle_watts,peak_watts\n1,8,32,70,lots\n")
                .contains("line 2: `peak_watts` = `lots`")
        );
        assert!(e("count,cores,memory_gib,idle_watts,peak_watts\n1,8,32,180,70\n").contains("falls as load rises"));
        assert!(e("count,cores,memory_gib,idle_watts,peak_watts\n0.5,8,32,70,180\n").contains("whole number"));
    }
}
