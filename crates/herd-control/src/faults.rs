//! Fault injection for tests: `HERD_FAULT_INJECT=point,...` makes the Control node die at a
//! named point, once per data directory (a marker file remembers), as a crash would. Points:
//! `control-before-send` (a migration journalled as transferring, its source not told yet).

use std::path::Path;

/// Ends the process at `point` if `HERD_FAULT_INJECT` names it and it has not fired yet.
pub(crate) fn fault_point(data_dir: &Path, point: &str) {
    let Ok(list) = std::env::var("HERD_FAULT_INJECT") else { return };
    if !list.split(',').any(|p| p.trim() == point) {
        return;
    }
    let marker = data_dir.join(format!("fault-{point}"));
    if marker.exists() {
        return;
    }
    let _ = std::fs::write(&marker, b"");
    tracing::error!("fault injection: dying at {point}");
    // At once, like a crash: no request in flight is finished, no lease let go.
    std::process::exit(86);
}
