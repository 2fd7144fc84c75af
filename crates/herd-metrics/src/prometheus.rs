//! Renders the latest samples in the Prometheus text exposition format 0.0.4, for the
//! Control node's `GET /metrics`.
//!
//! Names follow Prometheus conventions: base units (seconds, bytes), `_total` counters built
//! from the raw cumulative counters carried in the samples (so `rate()` works and resets
//! after a restart or migration are handled by Prometheus), gauges for levels, ratios in
//! `0..1`. Container series carry the labels `container` (name, or id if unnamed),
//! `container_id`, `image` and `node`; node series carry `node`. A figure a sample does not
//! have is left out rather than written as `NaN`. Rendering is by hand (a few dozen
//! families of one `fmt::Write` loop) rather than through a client library: the samples
//! already are the registry.

use std::fmt::Write;

use crate::cgroup::USER_HZ;
use crate::sample::{ContainerSample, NodeSample};

/// The `Content-Type` of the output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A container's latest sample with the labels the sample itself does not carry.
#[derive(Debug, Clone, Copy)]
pub struct ContainerEntry<'a> {
    /// The sample.
    pub sample: &'a ContainerSample,
    /// The node it came from.
    pub node: &'a str,
    /// The container's image.
    pub image: &'a str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Metric<T> {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// An extra label for families split by mode or resource.
    label: Option<(&'static str, &'static str)>,
    get: fn(&T) -> Option<f64>,
}

const fn m<T>(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    label: Option<(&'static str, &'static str)>,
    get: fn(&T) -> Option<f64>,
) -> Metric<T> {
    Metric { name, help, kind, label, get }
}

use Kind::{Counter, Gauge};

fn u(x: Option<u64>) -> Option<f64> {
    x.map(|v| v as f64)
}

type C = ContainerSample;
const H_CPU_SECS: &str = "Cumulative CPU time consumed by the container, seconds.";
const H_PSI_C: &str = "Pressure stall information: share of the last 10 s some tasks of the container were stalled.";

const CONTAINER_METRICS: &[Metric<C>] = &[
    m("herd_container_cpu_usage_seconds_total", H_CPU_SECS, Counter, None, |s| {
        s.totals?.cpu_ns.map(|ns| ns as f64 / 1e9)
    }),
    m("herd_container_cpu_usage_cores", "CPU used over the last sampling interval, cores.", Gauge, None, |s| {
        s.cpu_cores
    }),
    m(
        "herd_container_cpu_limit_usage_ratio",
        "CPU used over the last interval as a share of the CPU limit.",
        Gauge,
        None,
        |s| s.cpu_limit_pct.map(|p| p / 100.0),
    ),
    m("herd_container_cpu_cfs_periods_total", "CFS enforcement periods elapsed.", Counter, None, |s| {
        u(s.totals?.cpu_periods)
    }),
    m(
        "herd_container_cpu_cfs_throttled_periods_total",
        "CFS periods in which the container was throttled.",
        Counter,
        None,
        |s| u(s.totals?.cpu_throttled_periods),
    ),
    m(
        "herd_container_cpu_cfs_throttled_seconds_total",
        "Total time the container was throttled, seconds.",
        Counter,
        None,
        |s| s.totals?.cpu_throttled_ns.map(|ns| ns as f64 / 1e9),
    ),
    m("herd_container_memory_usage_bytes", "Memory charged to the container, bytes.", Gauge, None, |s| u(s.mem_bytes)),
    m("herd_container_memory_working_set_bytes", "Memory usage minus inactive file pages, bytes.", Gauge, None, |s| {
        u(s.working_set)
    }),
    m("herd_container_memory_rss_bytes", "Anonymous memory, bytes.", Gauge, None, |s| u(s.rss)),
    m("herd_container_memory_cache_bytes", "Page cache, bytes.", Gauge, None, |s| u(s.cache)),
    m("herd_container_memory_page_faults_total", "Page faults.", Counter, None, |s| u(s.totals?.pgfault)),
    m("herd_container_memory_major_page_faults_total", "Major page faults.", Counter, None, |s| {
        u(s.totals?.pgmajfault)
    }),
    m("herd_container_oom_kills_total", "Processes of the container killed by the OOM killer.", Counter, None, |s| {
        u(s.oom_kills)
    }),
    m("herd_container_blkio_read_bytes_total", "Bytes read from block devices.", Counter, None, |s| {
        u(s.totals?.blk_read_bytes)
    }),
    m("herd_container_blkio_written_bytes_total", "Bytes written to block devices.", Counter, None, |s| {
        u(s.totals?.blk_write_bytes)
    }),
    m("herd_container_blkio_reads_total", "Block device read operations.", Counter, None, |s| u(s.totals?.blk_reads)),
    m("herd_container_blkio_writes_total", "Block device write operations.", Counter, None, |s| {
        u(s.totals?.blk_writes)
    }),
    m(
        "herd_container_network_receive_bytes_total",
        "Bytes received by the container's network namespace (all interfaces but lo).",
        Counter,
        None,
        |s| u(s.totals?.net_rx_bytes),
    ),
    m(
        "herd_container_network_transmit_bytes_total",
        "Bytes sent by the container's network namespace (all interfaces but lo).",
        Counter,
        None,
        |s| u(s.totals?.net_tx_bytes),
    ),
    m(
        "herd_container_network_receive_packets_total",
        "Packets received by the container's network namespace.",
        Counter,
        None,
        |s| u(s.totals?.net_rx_packets),
    ),
    m(
        "herd_container_network_transmit_packets_total",
        "Packets sent by the container's network namespace.",
        Counter,
        None,
        |s| u(s.totals?.net_tx_packets),
    ),
    m("herd_container_pids", "Tasks in the container.", Gauge, None, |s| u(s.pids)),
    m("herd_container_pressure_some_avg10_ratio", H_PSI_C, Gauge, Some(("resource", "cpu")), |s| {
        s.psi_cpu_some10.map(|p| p / 100.0)
    }),
    m("herd_container_pressure_some_avg10_ratio", H_PSI_C, Gauge, Some(("resource", "memory")), |s| {
        s.psi_mem_some10.map(|p| p / 100.0)
    }),
    m("herd_container_pressure_some_avg10_ratio", H_PSI_C, Gauge, Some(("resource", "io")), |s| {
        s.psi_io_some10.map(|p| p / 100.0)
    }),
    m(
        "herd_container_last_sample_timestamp_seconds",
        "When the container's latest sample was taken, Unix seconds.",
        Gauge,
        None,
        |s| Some(s.ts_ms as f64 / 1000.0),
    ),
];

type N = NodeSample;
const H_NODE_CPU: &str = "Cumulative CPU time of the node by mode, seconds.";
const H_NODE_RATIO: &str = "CPU time of the node over the last sampling interval by mode, share of all CPUs.";
const H_PSI_N: &str = "Pressure stall information: share of the last 10 s tasks on the node were stalled.";
const H_PSI_NF: &str =
    "Pressure stall information: share of the last 10 s all non-idle tasks on the node were stalled.";

fn ticks(s: &N, f: fn(&crate::node::CpuTimes) -> u64) -> Option<f64> {
    s.totals?.cpu_ticks.map(|t| f(&t) as f64 / USER_HZ as f64)
}

const NODE_METRICS: &[Metric<N>] = &[
    m("herd_node_cpu_seconds_total", H_NODE_CPU, Counter, Some(("mode", "user")), |s| ticks(s, |t| t.user)),
    m("herd_node_cpu_seconds_total", H_NODE_CPU, Counter, Some(("mode", "nice")), |s| ticks(s, |t| t.nice)),
    m("herd_node_cpu_seconds_total", H_NODE_CPU, Counter, Some(("mode", "system")), |s| ticks(s, |t| t.system)),
    m("herd_node_cpu_seconds_total", H_NODE_CPU, Counter, Some(("mode", "idle")), |s| ticks(s, |t| t.idle)),
    m("herd_node_cpu_seconds_total", H_NODE_CPU, Counter, Some(("mode", "iowait")), |s| ticks(s, |t| t.iowait)),
    m("herd_node_cpu_seconds_total", H_NODE_CPU, Counter, Some(("mode", "irq")), |s| ticks(s, |t| t.irq)),
    m("herd_node_cpu_seconds_total", H_NODE_CPU, Counter, Some(("mode", "softirq")), |s| ticks(s, |t| t.softirq)),
    m("herd_node_cpu_seconds_total", H_NODE_CPU, Counter, Some(("mode", "steal")), |s| ticks(s, |t| t.steal)),
    m("herd_node_cpu_usage_ratio", H_NODE_RATIO, Gauge, Some(("mode", "user")), |s| s.cpu_user_pct.map(|p| p / 100.0)),
    m("herd_node_cpu_usage_ratio", H_NODE_RATIO, Gauge, Some(("mode", "system")), |s| {
        s.cpu_system_pct.map(|p| p / 100.0)
    }),
    m("herd_node_cpu_usage_ratio", H_NODE_RATIO, Gauge, Some(("mode", "iowait")), |s| {
        s.cpu_iowait_pct.map(|p| p / 100.0)
    }),
    m("herd_node_cpu_usage_ratio", H_NODE_RATIO, Gauge, Some(("mode", "steal")), |s| {
        s.cpu_steal_pct.map(|p| p / 100.0)
    }),
    m("herd_node_cpus", "Online CPUs.", Gauge, None, |s| s.cpus.map(f64::from)),
    m("herd_node_load1", "1-minute load average.", Gauge, None, |s| s.load1),
    m("herd_node_load5", "5-minute load average.", Gauge, None, |s| s.load5),
    m("herd_node_load15", "15-minute load average.", Gauge, None, |s| s.load15),
    m("herd_node_memory_total_bytes", "Memory of the node, bytes.", Gauge, None, |s| u(s.mem_total)),
    m("herd_node_memory_available_bytes", "Memory available for new work without swapping, bytes.", Gauge, None, |s| {
        u(s.mem_available)
    }),
    m("herd_node_memory_containers_bytes", "Memory charged to the node's containers, bytes.", Gauge, None, |s| {
        u(s.mem_containers)
    }),
    m("herd_node_disk_read_bytes_total", "Bytes read from the node's whole disks.", Counter, None, |s| {
        u(s.totals?.disk_read_bytes)
    }),
    m("herd_node_disk_written_bytes_total", "Bytes written to the node's whole disks.", Counter, None, |s| {
        u(s.totals?.disk_write_bytes)
    }),
    m("herd_node_network_receive_bytes_total", "Bytes received by the node's interfaces.", Counter, None, |s| {
        u(s.totals?.net_rx_bytes)
    }),
    m("herd_node_network_transmit_bytes_total", "Bytes sent by the node's interfaces.", Counter, None, |s| {
        u(s.totals?.net_tx_bytes)
    }),
    m("herd_node_pressure_some_avg10_ratio", H_PSI_N, Gauge, Some(("resource", "cpu")), |s| {
        s.psi_cpu_some10.map(|p| p / 100.0)
    }),
    m("herd_node_pressure_some_avg10_ratio", H_PSI_N, Gauge, Some(("resource", "memory")), |s| {
        s.psi_mem_some10.map(|p| p / 100.0)
    }),
    m("herd_node_pressure_some_avg10_ratio", H_PSI_N, Gauge, Some(("resource", "io")), |s| {
        s.psi_io_some10.map(|p| p / 100.0)
    }),
    m("herd_node_pressure_full_avg10_ratio", H_PSI_NF, Gauge, Some(("resource", "memory")), |s| {
        s.psi_mem_full10.map(|p| p / 100.0)
    }),
    m("herd_node_pressure_full_avg10_ratio", H_PSI_NF, Gauge, Some(("resource", "io")), |s| {
        s.psi_io_full10.map(|p| p / 100.0)
    }),
    m("herd_node_containers", "Containers running on the node.", Gauge, None, |s| Some(f64::from(s.containers))),
    m(
        "herd_node_last_sample_timestamp_seconds",
        "When the node's latest sample was taken, Unix seconds.",
        Gauge,
        None,
        |s| Some(s.ts_ms as f64 / 1000.0),
    ),
];

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus reads it (Go float syntax).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Writes every family of `metrics` that has at least one value among `items`, each with
/// its HELP and TYPE lines once and its samples grouped under it.
fn write_families<T>(out: &mut String, metrics: &[Metric<T>], items: &[(&T, String)]) {
    let mut i = 0;
    while i < metrics.len() {
        let name = metrics[i].name;
        let end = i + metrics[i..].iter().take_while(|x| x.name == name).count();
        let rows = &metrics[i..end];
        let mut body = String::new();
        for row in rows {
            for (item, labels) in items {
                let Some(v) = (row.get)(item).filter(|v| v.is_finite()) else { continue };
                let extra =
                    row.label.map(|(k, val)| format!(",{k}=\"{}\"", escape_label_value(val))).unwrap_or_default();
                let _ = writeln!(body, "{name}{{{labels}{extra}}} {}", format_value(v));
            }
        }
        if !body.is_empty() {
            let kind = match rows[0].kind {
                Counter => "counter",
                Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", escape_help(rows[0].help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            out.push_str(&body);
        }
        i = end;
    }
}

/// Renders nodes' and containers' latest samples. Output order is the order given.
pub fn render(nodes: &[&NodeSample], containers: &[ContainerEntry<'_>]) -> String {
    let mut out = String::new();
    let c: Vec<(&ContainerSample, String)> = containers
        .iter()
        .map(|e| {
            let s = e.sample;
            let name = s.name.as_deref().unwrap_or(&s.id);
            let labels = format!(
                "container=\"{}\",container_id=\"{}\",image=\"{}\",node=\"{}\"",
                escape_label_value(name),
                escape_label_value(&s.id),
                escape_label_value(e.image),
                escape_label_value(e.node)
            );
            (s, labels)
        })
        .collect();
    write_families(&mut out, CONTAINER_METRICS, &c);
    let n: Vec<(&NodeSample, String)> =
        nodes.iter().map(|s| (*s, format!("node=\"{}\"", escape_label_value(&s.node)))).collect();
    write_families(&mut out, NODE_METRICS, &n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::CpuTimes;
    use crate::sample::{ContainerTotals, NodeTotals};
    use std::collections::{BTreeMap, HashMap};

    /// One parsed sample line.
    #[derive(Debug)]
    struct Line {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    fn valid_name(n: &str) -> bool {
        let mut cs = n.chars();
        cs.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// A strict reader of the text format, as far as this renderer uses it: returns the
    /// families' types and the samples, failing on anything malformed.
    fn parse(text: &str) -> Result<(HashMap<String, String>, Vec<Line>), String> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helps: HashMap<String, String> = HashMap::new();
        let mut lines = Vec::new();
        let mut current: Option<String> = None;
        let mut closed: Vec<String> = Vec::new();
        if !text.ends_with('\n') {
            return Err("output must end with a newline".into());
        }
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').ok_or("HELP without text")?;
                if helps.insert(name.into(), help.into()).is_some() {
                    return Err(format!("HELP twice for {name}"));
                }
                if let Some(c) = current.replace(name.to_string()) {
                    closed.push(c);
                }
                if closed.contains(&name.to_string()) {
                    return Err(format!("family {name} split"));
                }
                continue;
            }
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').ok_or("TYPE without type")?;
                if !["counter", "gauge"].contains(&t) {
                    return Err(format!("type {t}"));
                }
                if Some(name) != current.as_deref() || types.insert(name.into(), t.into()).is_some() {
                    return Err(format!("TYPE {name} out of place"));
                }
                continue;
            }
            if l.starts_with('#') || l.is_empty() {
                return Err(format!("unexpected line {l:?}"));
            }
            // name{labels} value
            let brace = l.find('{').ok_or("no labels")?;
            let name = &l[..brace];
            if !valid_name(name) {
                return Err(format!("bad name {name}"));
            }
            if Some(name) != current.as_deref() || !types.contains_key(name) {
                return Err(format!("sample {name} outside its family"));
            }
            let mut labels = BTreeMap::new();
            let mut chars = l[brace + 1..].char_indices().peekable();
            let rest_start;
            loop {
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                if !valid_name(&key) {
                    return Err(format!("bad label name {key:?}"));
                }
                if chars.next().map(|x| x.1) != Some('"') {
                    return Err("label value not quoted".into());
                }
                let mut val = String::new();
                loop {
                    let (_, c) = chars.next().ok_or("unterminated label value")?;
                    match c {
                        '"' => break,
                        '\\' => match chars.next().ok_or("dangling escape")?.1 {
                            '\\' => val.push('\\'),
                            '"' => val.push('"'),
                            'n' => val.push('\n'),
                            e => return Err(format!("bad escape \\{e}")),
                        },
                        '\n' => return Err("raw newline in label value".into()),
                        c => val.push(c),
                    }
                }
                if labels.insert(key.clone(), val).is_some() {
                    return Err(format!("label {key} twice"));
                }
                match chars.next().ok_or("unterminated labels")? {
                    (_, ',') => continue,
                    (i, '}') => {
                        rest_start = brace + 1 + i + 1;
                        break;
                    }
                    (_, c) => return Err(format!("unexpected {c:?} after a label")),
                }
            }
            let v = l[rest_start..].strip_prefix(' ').ok_or("no space before the value")?;
            let value = match v {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
            };
            lines.push(Line { name: name.into(), labels, value });
        }
        Ok((types, lines))
    }

    fn container(id: &str, name: Option<&str>) -> ContainerSample {
        ContainerSample {
            id: id.into(),
            name: name.map(Into::into),
            ts_ms: 1_700_000_000_500,
            cpu_cores: Some(0.25),
            cpu_limit_pct: Some(50.0),
            mem_bytes: Some(1_076_064_256),
            working_set: Some(1_076_064_256),
            pids: Some(1),
            oom_kills: Some(2),
            psi_mem_some10: Some(1.5),
            totals: Some(ContainerTotals {
                cpu_ns: Some(17_709_534_787),
                net_rx_bytes: Some(100),
                cpu_periods: Some(10),
                cpu_throttled_periods: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node() -> NodeSample {
        NodeSample {
            node: "n1".into(),
            ts_ms: 1_700_000_000_000,
            cpus: Some(2),
            cpu_user_pct: Some(12.5),
            load1: Some(1.14),
            mem_total: Some(25_276_063_744),
            psi_io_full10: Some(0.32),
            containers: 2,
            totals: Some(NodeTotals {
                cpu_ticks: Some(CpuTimes { user: 776_619, idle: 2_274_593, ..Default::default() }),
                disk_read_bytes: Some(4096),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn output_parses_back() {
        let a = container("9d2e016ed4fa8325e6e0359a5fcc68e9", Some("web"));
        let b = container("42f0d9f5c9bab014ffe2b8ecc22e8586", None);
        let n = node();
        let text = render(
            &[&n],
            &[
                ContainerEntry { sample: &a, node: "n1", image: "busybox" },
                ContainerEntry { sample: &b, node: "n2", image: "docker.io/library/busybox:1.36" },
            ],
        );
        let (types, lines) = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        // Conventions: counters end in _total, nothing else does.
        for (name, t) in &types {
            assert_eq!(name.ends_with("_total"), t == "counter", "{name} is a {t}");
            assert!(name.starts_with("herd_"));
        }
        let get = |name: &str, want: &[(&str, &str)]| -> Vec<f64> {
            lines
                .iter()
                .filter(|l| {
                    l.name == name && want.iter().all(|(k, v)| l.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|l| l.value)
                .collect()
        };
        assert_eq!(types["herd_container_cpu_usage_seconds_total"], "counter");
        assert_eq!(types["herd_container_memory_usage_bytes"], "gauge");
        assert_eq!(get("herd_container_cpu_usage_seconds_total", &[("container", "web")]), vec![17.709534787]);
        // An unnamed container is labelled by id.
        assert_eq!(
            get(
                "herd_container_memory_usage_bytes",
                &[("container", "42f0d9f5c9bab014ffe2b8ecc22e8586"), ("node", "n2")]
            ),
            vec![1_076_064_256.0]
        );
        assert_eq!(get("herd_container_cpu_limit_usage_ratio", &[("container", "web")]), vec![0.5]);
        assert_eq!(get("herd_container_pressure_some_avg10_ratio", &[("resource", "memory")]), vec![0.015, 0.015]);
        assert_eq!(get("herd_container_cpu_cfs_throttled_periods_total", &[]), vec![3.0, 3.0]);
        assert_eq!(get("herd_container_last_sample_timestamp_seconds", &[("container", "web")]), vec![1_700_000_000.5]);
        // Every container line has all four labels.
        for l in lines.iter().filter(|l| l.name.starts_with("herd_container_")) {
            for k in ["container", "container_id", "image", "node"] {
                assert!(l.labels.contains_key(k), "{l:?}");
            }
        }
        assert_eq!(get("herd_node_cpu_seconds_total", &[("node", "n1"), ("mode", "user")]), vec![7766.19]);
        assert_eq!(get("herd_node_cpu_usage_ratio", &[("mode", "user")]), vec![0.125]);
        assert_eq!(get("herd_node_containers", &[]), vec![2.0]);
        assert_eq!(get("herd_node_pressure_full_avg10_ratio", &[("resource", "io")]), vec![0.0032]);
        // Absent figures are left out, and so are families without any value.
        assert!(get("herd_container_blkio_read_bytes_total", &[]).is_empty());
        assert!(!types.contains_key("herd_container_blkio_read_bytes_total"));
        assert!(!text.contains("NaN"));
        assert!(text.contains("# TYPE herd_container_cpu_usage_seconds_total counter\n"));
        assert!(text.contains("# HELP herd_node_load1 1-minute load average.\n"));
    }

    #[test]
    fn label_escaping() {
        let odd = "we\"ird\\na\nme";
        let a = container("id\"1", Some(odd));
        let text = render(&[], &[ContainerEntry { sample: &a, node: "n\\1", image: "img\nx" }]);
        assert!(text.contains(r#"container="we\"ird\\na\nme""#), "{text}");
        let (_, lines) = parse(&text).unwrap();
        let l = &lines[0];
        assert_eq!(l.labels["container"], odd);
        assert_eq!(l.labels["container_id"], "id\"1");
        assert_eq!(l.labels["node"], "n\\1");
        assert_eq!(l.labels["image"], "img\nx");
        assert_eq!(escape_label_value("plain"), "plain");
    }

    #[test]
    fn values_and_empty_output() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.125), "0.125");
        assert_eq!(format_value(1e20), "100000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(-2.5), "-2.5");
        assert_eq!(render(&[], &[]), "");
        assert!(parse("x{a=\"1\"} 1").is_err(), "the checker rejects output without a final newline");
        assert!(parse("# TYPE x counter\nx{a=\"1\"} 1\n").is_err(), "TYPE before HELP");
        assert!(parse("# HELP x h\n# TYPE x gauge\nx{a=\"1\\q\"} 1\n").is_err());
    }

    #[test]
    fn families_stay_together_with_many_containers() {
        let samples: Vec<ContainerSample> = (0..50).map(|i| container(&format!("c{i}"), None)).collect();
        let entries: Vec<ContainerEntry> =
            samples.iter().map(|s| ContainerEntry { sample: s, node: "n1", image: "busybox" }).collect();
        let text = render(&[], &entries);
        let (_, lines) = parse(&text).unwrap();
        assert_eq!(lines.iter().filter(|l| l.name == "herd_container_memory_usage_bytes").count(), 50);
    }
}
