//! Calibrating the cost model from the migrations a cluster has made.
//!
//! Each completed migration is an [`Observation`]: its mode, the memory bytes it moved, its
//! downtime and total time (the Control node turns its migration reports into these). Per
//! mode, downtime and total time are each fitted as a line in the memory moved by least
//! squares with both coefficients kept non-negative (a migration cannot take negative time, nor
//! get faster with more memory): the ordinary fit when it is non-negative, else the best fit on
//! the boundary (a constant at the mean, or a line through the origin).
//!
//! Stated fallbacks:
//! - a mode with fewer than [`MIN_REPORTS`] observations is not fitted;
//! - when a mode's memory sizes span less than [`MIN_SPREAD_BYTES`], the slope cannot be told
//!   from noise: the default slope is kept and only the intercept is fitted (the mean of what
//!   is left after the slope);
//! - the model in use is that of the mode with the most observations among the fitted ones
//!   (the mode `auto` takes on this cluster, usually); with no fitted mode it is the default.
//!
//! The fit is the closed form of a two-parameter least squares rather than a regression crate:
//! it is a few lines, it needs the non-negativity and degeneracy cases handled explicitly
//! either way, and it keeps this crate free of a linear-algebra dependency.

use serde::Serialize;

use super::{CostModel, GIB, Line};

/// The fewest observations of a mode that are fitted.
pub const MIN_REPORTS: usize = 5;
/// The least span of memory sizes (largest minus smallest) that lets the slope be fitted.
pub const MIN_SPREAD_BYTES: u64 = 64 * 1024 * 1024;

/// One completed migration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// `cold`, `postcopy` or `precopy`.
    pub mode: String,
    pub memory_bytes: u64,
    pub downtime_secs: f64,
    pub total_secs: f64,
}

/// The lines fitted for one mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeFit {
    pub mode: String,
    pub reports: usize,
    pub downtime: Line,
    pub total: Line,
    /// Whether the slopes were fitted (else the defaults were kept: memory sizes too alike).
    pub slopes_fitted: bool,
    /// Root mean squared error of the fitted lines on the observations, seconds.
    pub downtime_rmse_secs: f64,
    pub total_rmse_secs: f64,
    /// How the fit was made, in words.
    pub note: String,
}

/// The model to use, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub model: CostModel,
    /// `calibrated` or `default`.
    pub basis: &'static str,
    /// The mode whose fit is in use, when calibrated.
    pub mode: Option<String>,
    /// Observations behind the model in use (0 for the default).
    pub reports: usize,
    /// Every mode that could be fitted.
    pub fits: Vec<ModeFit>,
    /// Why this model, in one sentence.
    pub why: String,
}

impl Calibration {
    /// The default model, with the reason it is used.
    pub fn default_with(model: CostModel, why: impl Into<String>) -> Calibration {
        Calibration { model, basis: "default", mode: None, reports: 0, fits: Vec::new(), why: why.into() }
    }
}

/// Fits the cost model to `observations` (module docs); `default` supplies the fallback and
/// the ranking weight.
pub fn calibrate(observations: &[Observation], default: CostModel) -> Calibration {
    let usable: Vec<&Observation> = observations
        .iter()
        .filter(|o| o.downtime_secs.is_finite() && o.total_secs.is_finite() && o.downtime_secs >= 0.0)
        .filter(|o| o.total_secs >= o.downtime_secs)
        .collect();
    // Modes in the order their newest observation appears, newest first: ties go to the newest.
    let mut modes: Vec<&str> = Vec::new();
    for o in usable.iter().rev() {
        if !modes.contains(&o.mode.as_str()) {
            modes.push(&o.mode);
        }
    }
    let mut fits = Vec::new();
    let mut counts = Vec::new();
    for mode in &modes {
        let of: Vec<&Observation> = usable.iter().copied().filter(|o| o.mode == *mode).collect();
        counts.push(format!("{} {mode}", of.len()));
        if of.len() >= MIN_REPORTS {
            fits.push(fit_mode(mode, &of, &default));
        }
    }
    let Some(chosen) = fits.iter().fold(None::<&ModeFit>, |best, f| match best {
        Some(b) if b.reports >= f.reports => Some(b),
        _ => Some(f),
    }) else {
        let have = if counts.is_empty() { "no completed migrations".to_string() } else { counts.join(", ") };
        return Calibration {
            fits,
            ..Calibration::default_with(
                default,
                format!("defaults: {MIN_REPORTS} completed migrations of one mode are needed to calibrate ({have})"),
            )
        };
    };
    let model = CostModel { downtime: chosen.downtime, total: chosen.total, ..default };
    Calibration {
        model,
        basis: "calibrated",
        mode: Some(chosen.mode.clone()),
        reports: chosen.reports,
        why: format!("fitted to {} {} migrations ({})", chosen.reports, chosen.mode, chosen.note),
        fits,
    }
}

fn fit_mode(mode: &str, of: &[&Observation], default: &CostModel) -> ModeFit {
    let x: Vec<f64> = of.iter().map(|o| o.memory_bytes as f64 / GIB).collect();
    let down: Vec<f64> = of.iter().map(|o| o.downtime_secs).collect();
    let total: Vec<f64> = of.iter().map(|o| o.total_secs).collect();
    let (min, max) = of.iter().fold((u64::MAX, 0), |(a, b), o| (a.min(o.memory_bytes), b.max(o.memory_bytes)));
    let spread = max - min;
    let slopes_fitted = spread >= MIN_SPREAD_BYTES;
    let (downtime, total_line, note) = if slopes_fitted {
        (nonnegative_fit(&x, &down), nonnegative_fit(&x, &total), "least squares on memory moved".to_string())
    } else {
        (
            intercept_fit(&x, &down, default.downtime.secs_per_gib),
            intercept_fit(&x, &total, default.total.secs_per_gib),
            format!(
                "memory sizes span {:.1} MiB, less than {} MiB: default slopes, intercepts fitted",
                spread as f64 / (1024.0 * 1024.0),
                MIN_SPREAD_BYTES / (1024 * 1024)
            ),
        )
    };
    ModeFit {
        mode: mode.to_string(),
        reports: of.len(),
        downtime,
        total: total_line,
        slopes_fitted,
        downtime_rmse_secs: rmse(&x, &down, &downtime),
        total_rmse_secs: rmse(&x, &total, &total_line),
        note,
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn sse(x: &[f64], y: &[f64], a: f64, b: f64) -> f64 {
    x.iter().zip(y).map(|(x, y)| (y - a - b * x).powi(2)).sum()
}

fn rmse(x: &[f64], y: &[f64], line: &Line) -> f64 {
    (sse(x, y, line.intercept_secs, line.secs_per_gib) / x.len() as f64).sqrt()
}

/// Least squares `y = a + b x` with `a, b >= 0` (`x` in GiB); `x` must not be constant.
fn nonnegative_fit(x: &[f64], y: &[f64]) -> Line {
    let (mx, my) = (mean(x), mean(y));
    let sxx: f64 = x.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    if a >= 0.0 && b >= 0.0 {
        return Line { intercept_secs: a, secs_per_gib: b };
    }
    // The optimum is on the boundary: a constant (b = 0) or a line through the origin (a = 0).
    let xx: f64 = x.iter().map(|x| x * x).sum();
    let through_origin = if xx > 0.0 { (x.iter().zip(y).map(|(x, y)| x * y).sum::<f64>() / xx).max(0.0) } else { 0.0 };
    let candidates = [(my.max(0.0), 0.0), (0.0, through_origin)];
    let (a, b) = candidates
        .into_iter()
        .min_by(|p, q| sse(x, y, p.0, p.1).total_cmp(&sse(x, y, q.0, q.1)))
        .unwrap_or((my.max(0.0), 0.0));
    Line { intercept_secs: a, secs_per_gib: b }
}

/// The intercept for a given slope: the mean of `y - slope x`, at least 0.
fn intercept_fit(x: &[f64], y: &[f64], slope: f64) -> Line {
    let rest: Vec<f64> = x.iter().zip(y).map(|(x, y)| y - slope * x).collect();
    Line { intercept_secs: mean(&rest).max(0.0), secs_per_gib: slope }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// Deterministic noise in [-1, 1).
    fn noise(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    /// Migrations of `mode` of 0 to 2 GiB whose times follow the given lines, with noise.
    fn synthetic(mode: &str, n: usize, down: (f64, f64), total: (f64, f64), jitter: f64) -> Vec<Observation> {
        let mut rand = noise(n as u64 + 11);
        (0..n)
            .map(|i| {
                let bytes = (i as u64 * 2048 * MIB) / (n as u64 - 1);
                let gib = bytes as f64 / GIB;
                Observation {
                    mode: mode.into(),
                    memory_bytes: bytes,
                    downtime_secs: down.0 + down.1 * gib + jitter * rand(),
                    total_secs: total.0 + total.1 * gib + jitter * rand(),
                }
            })
            .collect()
    }

    #[test]
    fn recovers_known_coefficients() {
        let c = calibrate(&synthetic("cold", 20, (0.3, 2.8), (0.35, 2.9), 0.0), CostModel::default());
        assert_eq!((c.basis, c.mode.as_deref(), c.reports), ("calibrated", Some("cold"), 20));
        let m = c.model;
        assert!(
            (m.downtime.intercept_secs - 0.3).abs() < 1e-9 && (m.downtime.secs_per_gib - 2.8).abs() < 1e-9,
            "{m:?}"
        );
        assert!((m.total.intercept_secs - 0.35).abs() < 1e-9 && (m.total.secs_per_gib - 2.9).abs() < 1e-9, "{m:?}");
        assert!(c.fits[0].slopes_fitted && c.fits[0].total_rmse_secs < 1e-9);
        // With noise, close to them; and the prediction follows the fit, not the defaults.
        let c = calibrate(&synthetic("postcopy", 40, (0.25, 0.1), (0.5, 2.0), 0.02), CostModel::default());
        let m = c.model;
        assert!(
            (m.downtime.intercept_secs - 0.25).abs() < 0.03 && (m.downtime.secs_per_gib - 0.1).abs() < 0.03,
            "{m:?}"
        );
        assert!((m.total.intercept_secs - 0.5).abs() < 0.03 && (m.total.secs_per_gib - 2.0).abs() < 0.03, "{m:?}");
        let gib = m.predict(1 << 30, 0.0);
        assert!((gib.transfer_secs - 2.5).abs() < 0.05, "{gib:?}");
        assert_eq!(m.downtime_weight, CostModel::default().downtime_weight);
    }

    #[test]
    fn too_few_reports_fall_back_to_the_defaults() {
        let obs = synthetic("postcopy", MIN_REPORTS - 1, (0.3, 0.1), (0.4, 2.0), 0.0);
        let c = calibrate(&obs, CostModel::default());
        assert_eq!((c.basis, c.reports, c.mode.as_deref()), ("default", 0, None));
        assert_eq!(c.model, CostModel::default());
        assert!(
            c.why.contains("5 completed migrations of one mode are needed") && c.why.contains("4 postcopy"),
            "{}",
            c.why
        );
        let c = calibrate(&[], CostModel::default());
        assert!(c.why.contains("no completed migrations"), "{}", c.why);
    }

    #[test]
    fn same_sized_migrations_keep_the_default_slopes() {
        let obs: Vec<Observation> = (0..6)
            .map(|i| Observation {
                mode: "cold".into(),
                memory_bytes: MIB + i * 1000,
                downtime_secs: 0.4,
                total_secs: 0.5,
            })
            .collect();
        let c = calibrate(&obs, CostModel::default());
        assert_eq!(c.basis, "calibrated");
        let d = CostModel::default();
        assert!(!c.fits[0].slopes_fitted && c.fits[0].note.contains("default slopes"), "{:?}", c.fits[0]);
        assert_eq!(c.model.downtime.secs_per_gib, d.downtime.secs_per_gib);
        assert_eq!(c.model.total.secs_per_gib, d.total.secs_per_gib);
        let want = 0.4 - d.downtime.secs_per_gib * (MIB as f64 + 2500.0) / GIB;
        assert!((c.model.downtime.intercept_secs - want).abs() < 1e-9, "{:?}", c.model);
    }

    #[test]
    fn coefficients_stay_non_negative() {
        // Downtime falling with memory (noise, say): the best non-negative fit is the mean.
        let mut obs = synthetic("cold", 10, (1.0, 0.0), (1.0, 1.0), 0.0);
        for (i, o) in obs.iter_mut().enumerate() {
            o.downtime_secs = 1.0 - 0.01 * i as f64;
        }
        let c = calibrate(&obs, CostModel::default());
        assert_eq!(c.model.downtime.secs_per_gib, 0.0);
        assert!((c.model.downtime.intercept_secs - 0.955).abs() < 1e-9, "{:?}", c.model);
        // A line that would cross below zero at no memory goes through the origin instead.
        let obs: Vec<Observation> = (1..=6)
            .map(|i| Observation {
                mode: "cold".into(),
                memory_bytes: i * 256 * MIB,
                downtime_secs: 0.1,
                total_secs: (2.0 * i as f64 * 0.25 - 0.2).max(0.1),
            })
            .collect();
        let c = calibrate(&obs, CostModel::default());
        assert!(c.model.total.intercept_secs >= 0.0 && c.model.total.secs_per_gib > 0.0, "{:?}", c.model);
    }

    #[test]
    fn the_mode_with_most_reports_is_used_and_bad_reports_are_ignored() {
        let mut obs = synthetic("cold", 6, (0.3, 2.8), (0.35, 2.9), 0.0);
        obs.extend(synthetic("postcopy", 8, (0.2, 0.1), (0.4, 2.0), 0.0));
        obs.push(Observation { mode: "postcopy".into(), memory_bytes: 0, downtime_secs: f64::NAN, total_secs: 1.0 });
        obs.push(Observation { mode: "postcopy".into(), memory_bytes: 0, downtime_secs: 2.0, total_secs: 1.0 });
        let c = calibrate(&obs, CostModel::default());
        assert_eq!((c.mode.as_deref(), c.reports, c.fits.len()), (Some("postcopy"), 8, 2));
        assert!((c.model.total.secs_per_gib - 2.0).abs() < 1e-9);
    }
}
