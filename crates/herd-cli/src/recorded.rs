//! The cluster's recorded metrics as a [`Recording`]: every container the Control node knows
//! (running or not), its series over a time range from `/v1/containers/NAME/series`.

use herd_metrics::history::QueryResult;
use herd_proto::api::ContainerInfo;
use herd_workload::Recording;

use crate::client::{Client, segment};

/// `30`, `90s`, `15m`, `1h`: seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<f64> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => anyhow::bail!("{text:?} is not a duration: use seconds, or a number with s, m or h (e.g. 30m)"),
    };
    match num.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x * scale),
        _ => anyhow::bail!("{text:?} is not a duration: use seconds, or a number with s, m or h (e.g. 30m)"),
    }
}

/// Adds one container's series to `rec`, times in seconds since the Unix epoch. Points
/// without a CPU figure are left out (a sample always has one; a bucket with none is a gap).
pub fn add_series(rec: &mut Recording, name: &str, series: &QueryResult) {
    rec.push_recorded(name, &series.fields, series.points.iter().map(|p| (p.ts_ms, p.values.as_slice())));
}

/// Every container's series over the last `since_secs`, averaged into `step_secs` buckets
/// (the recorded resolution when `None`).
pub async fn fetch(client: &Client, since_secs: f64, step_secs: Option<f64>) -> anyhow::Result<Recording> {
    let containers: Vec<ContainerInfo> = client.get("/v1/containers?all=true").await?;
    let to = herd_proto::now_millis();
    let from = to.saturating_sub((since_secs * 1000.0) as u64);
    let step = step_secs.map(|s| format!("&step={}", (s * 1000.0).round() as u64)).unwrap_or_default();
    let mut rec = Recording::default();
    for c in &containers {
        let path = format!("/v1/containers/{}/series?from={from}&to={to}{step}", segment(&c.name));
        let series: QueryResult = client.get(&path).await?;
        add_series(&mut rec, &c.name, &series);
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_metrics::history::{Point, SeriesId};
    use herd_workload::Field;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), 90.0);
        assert_eq!(parse_duration("15m").unwrap(), 900.0);
        assert_eq!(parse_duration("1h").unwrap(), 3600.0);
        for bad in ["", "soon", "-5m", "3d"] {
            assert!(parse_duration(bad).unwrap_err().to_string().contains("not a duration"), "{bad}");
        }
    }

    #[test]
    fn a_series_becomes_samples_by_field_name() {
        let mut q = QueryResult::empty(SeriesId::Container("id".into()), 1000);
        let cpu = q.fields.iter().position(|f| f == "cpu_cores").unwrap();
        let mem = q.fields.iter().position(|f| f == "mem_bytes").unwrap();
        let mut values = vec![None; q.fields.len()];
        values[cpu] = Some(0.5);
        values[mem] = Some(1024.0);
        q.points.push(Point { ts_ms: 2000, values: values.clone() });
        values[cpu] = None;
        q.points.push(Point { ts_ms: 3000, values });
        let mut rec = Recording::default();
        add_series(&mut rec, "web", &q);
        let s = &rec.containers["web"];
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].t, s[0].get(Field::CPU), s[0].get(Field::MEMORY)), (2.0, Some(0.5), Some(1024.0)));
    }
}
