//! A container's features: what its recorded samples say about it in a few numbers (means,
//! peaks, burstiness), the input of the classification.

use serde::Serialize;

use crate::recording::{Field, Sample};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Features {
    /// Samples with a CPU figure.
    pub samples: usize,
    /// From the first sample to the last, seconds.
    pub span_secs: f64,
    /// CPU use, cores.
    pub cpu_mean: f64,
    /// 95th percentile of CPU use, cores: the peak, without one-sample spikes.
    pub cpu_p95: f64,
    /// Coefficient of variation of CPU use (standard deviation / mean; 0 when the mean is 0).
    pub cpu_cv: f64,
    /// `cpu_p95 / cpu_mean` (0 when the mean is 0).
    pub cpu_peak_to_mean: f64,
    /// Mean CPU use in percent of the container's CPU limit, when it has one.
    pub cpu_limit_pct_mean: Option<f64>,
    /// Mean percent of periods throttled by the CPU limit.
    pub throttled_pct_mean: Option<f64>,
    pub memory_mean_bytes: Option<f64>,
    pub memory_peak_bytes: Option<f64>,
    /// Block I/O, read + written, bytes per second.
    pub blk_mean_bps: Option<f64>,
    pub blk_p95_bps: Option<f64>,
    /// Network, received + sent, bytes per second.
    pub net_mean_bps: Option<f64>,
    pub net_p95_bps: Option<f64>,
    pub pgfaults_mean_per_s: Option<f64>,
    /// Pressure stall information: percent of time some task waited, 10 s average.
    pub psi_cpu_mean: Option<f64>,
    pub psi_mem_mean: Option<f64>,
    pub psi_io_mean: Option<f64>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The `q` quantile (0..=1) by the nearest-rank method.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

/// The values of `f` where measured.
fn column(samples: &[Sample], f: Field) -> Vec<f64> {
    samples.iter().filter_map(|s| s.get(f)).collect()
}

/// The sum of two fields where at least one is measured.
fn sum_column(samples: &[Sample], a: Field, b: Field) -> Vec<f64> {
    samples
        .iter()
        .filter_map(|s| match (s.get(a), s.get(b)) {
            (None, None) => None,
            (x, y) => Some(x.unwrap_or(0.0) + y.unwrap_or(0.0)),
        })
        .collect()
}

impl Features {
    /// The features of `samples` (oldest first); `None` without a CPU figure.
    pub fn of(samples: &[Sample]) -> Option<Features> {
        let cpu = column(samples, Field::CPU);
        let cpu_mean = mean(&cpu)?;
        let var = cpu.iter().map(|x| (x - cpu_mean).powi(2)).sum::<f64>() / cpu.len() as f64;
        let cpu_p95 = quantile(&cpu, 0.95).unwrap_or(0.0);
        let ratio = |x: f64| if cpu_mean > 0.0 { x / cpu_mean } else { 0.0 };
        let mem = column(samples, Field::MEMORY);
        let blk = sum_column(samples, Field::BLK_READ, Field::BLK_WRITE);
        let net = sum_column(samples, Field::NET_RX, Field::NET_TX);
        Some(Features {
            samples: cpu.len(),
            span_secs: samples.last().map_or(0.0, |l| l.t - samples[0].t),
            cpu_mean,
            cpu_p95,
            cpu_cv: ratio(var.sqrt()),
            cpu_peak_to_mean: ratio(cpu_p95),
            cpu_limit_pct_mean: mean(&column(samples, Field::CPU_LIMIT_PCT)),
            throttled_pct_mean: mean(&column(samples, Field::THROTTLED_PCT)),
            memory_mean_bytes: mean(&mem),
            memory_peak_bytes: mem.iter().copied().reduce(f64::max),
            blk_mean_bps: mean(&blk),
            blk_p95_bps: quantile(&blk, 0.95),
            net_mean_bps: mean(&net),
            net_p95_bps: quantile(&net, 0.95),
            pgfaults_mean_per_s: mean(&column(samples, Field::PGFAULTS)),
            psi_cpu_mean: mean(&column(samples, Field::PSI_CPU)),
            psi_mem_mean: mean(&column(samples, Field::PSI_MEM)),
            psi_io_mean: mean(&column(samples, Field::PSI_IO)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::FIELDS;

    fn samples(cpu: &[f64], net: Option<f64>) -> Vec<Sample> {
        cpu.iter()
            .enumerate()
            .map(|(i, &c)| {
                let mut values = [None; FIELDS.len()];
                values[Field::CPU.0] = Some(c);
                values[Field::NET_RX.0] = net;
                values[Field::NET_TX.0] = net.map(|n| n / 2.0);
                Sample { t: i as f64, values }
            })
            .collect()
    }

    #[test]
    fn steady_and_bursty_cpu() {
        let steady = Features::of(&samples(&[1.0; 20], None)).unwrap();
        assert_eq!((steady.cpu_mean, steady.cpu_p95, steady.cpu_cv, steady.cpu_peak_to_mean), (1.0, 1.0, 0.0, 1.0));
        assert_eq!((steady.samples, steady.span_secs, steady.net_mean_bps), (20, 19.0, None));
        // On one sample in four: mean 0.5, standard deviation sqrt(3)/2.
        let on_off: Vec<f64> = (0..20).map(|i| if i % 4 == 0 { 2.0 } else { 0.0 }).collect();
        let b = Features::of(&samples(&on_off, Some(100.0))).unwrap();
        assert!((b.cpu_mean - 0.5).abs() < 1e-12 && (b.cpu_cv - 3f64.sqrt()).abs() < 1e-12, "{b:?}");
        assert_eq!((b.cpu_p95, b.cpu_peak_to_mean, b.net_mean_bps), (2.0, 4.0, Some(150.0)));
    }

    #[test]
    fn no_cpu_no_features_and_zero_cpu_has_no_ratios() {
        assert!(Features::of(&[]).is_none());
        let idle = Features::of(&samples(&[0.0; 5], None)).unwrap();
        assert_eq!((idle.cpu_cv, idle.cpu_peak_to_mean), (0.0, 0.0));
    }
}
