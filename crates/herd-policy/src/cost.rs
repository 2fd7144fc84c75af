//! The migration cost model: predicted downtime, transfer time and bytes moved for a container
//! of a given memory size and dirty rate over a link of a given bandwidth.
//!
//! The defaults are post-copy migration as measured on this machine (README, "Live
//! migration"): downtime 0.23 s for an empty container rising to 0.35 s at 1 GiB; total time
//! 0.46 s + about 2.6 s per GiB, of which the link (2.8 GB/s) carries 1 GiB in 0.38 s and the
//! rest is dumping and restoring pages (about 460 MiB/s). Pages written during the transfer
//! are sent again once (capped at the memory size).

use serde::Serialize;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostModel {
    /// Downtime of a migration of an empty container, seconds.
    pub base_downtime_secs: f64,
    /// Extra downtime per GiB of memory, seconds.
    pub downtime_secs_per_gib: f64,
    /// Fixed part of the total migration time, seconds.
    pub base_transfer_secs: f64,
    /// Measured link bandwidth, bytes per second.
    pub link_bytes_per_sec: f64,
    /// Rate at which pages are dumped and restored at the ends, bytes per second.
    pub dump_bytes_per_sec: f64,
    /// How many seconds of transfer one second of downtime is worth when ranking moves.
    pub downtime_weight: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            base_downtime_secs: 0.23,
            downtime_secs_per_gib: 0.12,
            base_transfer_secs: 0.46,
            link_bytes_per_sec: 2.8e9,
            dump_bytes_per_sec: 460.0 * 1024.0 * 1024.0,
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
        let per_byte = 1.0 / self.link_bytes_per_sec + 1.0 / self.dump_bytes_per_sec;
        let mem = memory_bytes as f64;
        let first_pass = mem * per_byte;
        // Pages dirtied while the first pass runs go again, at most the whole memory once more.
        let resent = (dirty_bytes_per_sec.max(0.0) * first_pass).min(mem);
        MigrationCost {
            downtime_secs: self.base_downtime_secs + self.downtime_secs_per_gib * mem / GIB,
            transfer_secs: self.base_transfer_secs + first_pass + resent * per_byte,
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
