//! The migration cost model: predicted downtime, transfer time and bytes moved for a container
//! of a given memory size and dirty rate.
//!
//! Downtime and the time of one pass over memory are each a [`Line`] in the memory size:
//! seconds = intercept + slope x GiB. Pages written during that pass are sent again once
//! (capped at the memory size), at the same per-byte cost.
//!
//! The defaults are post-copy migration as measured on this machine (README, "Live
//! migration"): downtime 0.23 s for an empty container rising to 0.35 s at 1 GiB; total time
//! 0.46 s + about 2.6 s per GiB, of which the link (2.8 GB/s) carries 1 GiB in 0.38 s and the
//! rest is dumping and restoring pages (about 460 MiB/s). [`calibrate`] fits both lines to the
//! migrations a cluster has made instead.

pub mod calibrate;

use serde::Serialize;

pub use calibrate::{Calibration, MIN_REPORTS, MIN_SPREAD_BYTES, ModeFit, Observation, calibrate};

pub(crate) const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// The link bandwidth behind the default slope, bytes per second.
const DEFAULT_LINK_BYTES_PER_SEC: f64 = 2.8e9;
/// How fast pages are dumped and restored at the ends, behind the default slope.
const DEFAULT_DUMP_BYTES_PER_SEC: f64 = 460.0 * 1024.0 * 1024.0;

/// Seconds as a straight line in the memory size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Line {
    /// Seconds for an empty container.
    pub intercept_secs: f64,
    /// Extra seconds per GiB of memory.
    pub secs_per_gib: f64,
}

impl Line {
    pub fn at(&self, bytes: f64) -> f64 {
        self.intercept_secs + self.secs_per_gib * bytes / GIB
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostModel {
    /// Downtime by memory size.
    pub downtime: Line,
    /// Total migration time by memory moved (one pass).
    pub total: Line,
    /// How many seconds of transfer one second of downtime is worth when ranking moves.
    pub downtime_weight: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        let per_byte = 1.0 / DEFAULT_LINK_BYTES_PER_SEC + 1.0 / DEFAULT_DUMP_BYTES_PER_SEC;
        CostModel {
            downtime: Line { intercept_secs: 0.23, secs_per_gib: 0.12 },
            total: Line { intercept_secs: 0.46, secs_per_gib: per_byte * GIB },
            downtime_weight: 10.0,
        }
    }
}

/// What one migration is predicted to cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MigrationCost {
    pub downtime_secs: f64,
    pub transfer_secs: f64,
    pub bytes: u64,
}

impl MigrationCost {
    /// One number to rank moves by: transfer seconds plus weighted downtime seconds.
    pub fn weight(&self, model: &CostModel) -> f64 {
        self.transfer_secs + model.downtime_weight * self.downtime_secs
    }
}

impl CostModel {
    /// The predicted cost of moving `memory_bytes` written at `dirty_bytes_per_sec`.
    pub fn predict(&self, memory_bytes: u64, dirty_bytes_per_sec: f64) -> MigrationCost {
        let per_byte = self.total.secs_per_gib.max(0.0) / GIB;
        let mem = memory_bytes as f64;
        let first_pass = mem * per_byte;
        // Pages dirtied while the first pass runs go again, at most the whole memory once more.
        let resent = (dirty_bytes_per_sec.max(0.0) * first_pass).min(mem);
        MigrationCost {
            downtime_secs: self.downtime.at(mem),
            transfer_secs: self.total.intercept_secs + first_pass + resent * per_byte,
            bytes: (mem + resent) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_measured_figures() {
        let m = CostModel::default();
        let empty = m.predict(0, 0.0);
        assert!((empty.downtime_secs - 0.23).abs() < 1e-9 && (empty.transfer_secs - 0.46).abs() < 1e-9);
        let gib = m.predict(1 << 30, 0.0);
        assert!((gib.downtime_secs - 0.35).abs() < 0.02, "{gib:?}");
        assert!((gib.transfer_secs - 3.05).abs() < 0.3, "{gib:?}");
        assert_eq!(gib.bytes, 1 << 30);
    }

    #[test]
    fn dirty_pages_cost_more_and_are_capped() {
        let m = CostModel::default();
        let clean = m.predict(1 << 30, 0.0);
        let dirty = m.predict(1 << 30, 100e6);
        assert!(dirty.transfer_secs > clean.transfer_secs && dirty.bytes > clean.bytes);
        let very = m.predict(1 << 30, 1e12);
        assert_eq!(very.bytes, 2 << 30);
    }
}
