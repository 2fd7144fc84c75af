//! Planning a live migration: is the destination compatible, and which mode moves the
//! memory. Pure logic over the facts nodes register.

use herd_proto::migration::{MigrationMode, ModeRequest};
use herd_proto::state::NodeFacts;

fn version(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Whether a container checkpointed on `src` can be restored on `dst`; the error says why not.
pub fn check_compatible(src_name: &str, src: &NodeFacts, dst_name: &str, dst: &NodeFacts) -> Result<(), String> {
    for (name, facts) in [(src_name, src), (dst_name, dst)] {
        if facts.criu_version.is_none() {
            return Err(format!("node {name} cannot checkpoint or restore: CRIU >= 4.2 is not installed there"));
        }
    }
    if src.arch != dst.arch {
        return Err(format!(
            "node {dst_name} is {} but the container runs on {} ({src_name}): processes cannot move between architectures",
            dst.arch, src.arch
        ));
    }
    if src.cgroup_version != dst.cgroup_version {
        return Err(format!(
            "node {dst_name} uses cgroup v{} and {src_name} cgroup v{}: CRIU restores cgroups only between the same versions",
            dst.cgroup_version, src.cgroup_version
        ));
    }
    let (sv, dv) = (src.criu_version.as_deref().unwrap(), dst.criu_version.as_deref().unwrap());
    if version(dv) < version(sv) {
        return Err(format!(
            "node {dst_name} has CRIU {dv}, older than {src_name}'s {sv}: it may not read the images; upgrade it"
        ));
    }
    let missing: Vec<&str> = src.cpu_flags.iter().filter(|f| !dst.cpu_flags.contains(f)).map(String::as_str).collect();
    if !missing.is_empty() && !dst.cpu_flags.is_empty() {
        let shown: Vec<&str> = missing.iter().take(8).copied().collect();
        return Err(format!(
            "node {dst_name}'s CPU lacks features the container may use on {src_name}: {}{}",
            shown.join(" "),
            if missing.len() > shown.len() {
                format!(" and {} more", missing.len() - shown.len())
            } else {
                String::new()
            }
        ));
    }
    Ok(())
}

/// The mode a migration uses and why. `auto` picks post-copy where userfaultfd works on both
/// nodes, pre-copy where both track dirty memory, cold otherwise. A `safe` `auto` never picks
/// post-copy, whose container runs on the destination while part of its memory is still on
/// the source (losing either node or the link then loses the container): pre-copy where both
/// nodes track dirty memory, cold otherwise.
pub fn choose_mode(
    requested: ModeRequest,
    safe: bool,
    src_name: &str,
    src: &NodeFacts,
    dst_name: &str,
    dst: &NodeFacts,
) -> Result<(MigrationMode, String), String> {
    let lacking = |pick: fn(&NodeFacts) -> bool| -> Vec<&str> {
        [(src_name, src), (dst_name, dst)].into_iter().filter(|(_, f)| !pick(f)).map(|(n, _)| n).collect()
    };
    let no_uffd = lacking(|f| f.criu_features.lazy_pages);
    let no_dirty = lacking(|f| f.criu_features.dirty_tracking);
    let nodes = |v: &[&str]| v.join(" and ");
    match requested {
        ModeRequest::Cold => Ok((MigrationMode::Cold, "cold migration was asked for".into())),
        ModeRequest::Postcopy if no_uffd.is_empty() => {
            Ok((MigrationMode::Postcopy, "post-copy was asked for; both nodes support userfaultfd".into()))
        }
        ModeRequest::Postcopy => Err(format!(
            "post-copy needs userfaultfd on both nodes, which {} lack{}: use --mode cold",
            nodes(&no_uffd),
            if no_uffd.len() == 1 { "s" } else { "" }
        )),
        ModeRequest::Precopy if no_dirty.is_empty() => {
            Ok((MigrationMode::Precopy, "pre-copy was asked for; both nodes track dirty memory".into()))
        }
        ModeRequest::Precopy => Err(format!(
            "pre-copy needs the kernel to track dirty memory (soft-dirty, or userfaultfd write-protection with Herd's CRIU), which {} lack{}: use --mode postcopy or --mode cold",
            nodes(&no_dirty),
            if no_dirty.len() == 1 { "s" } else { "" }
        )),
        ModeRequest::Auto if safe && no_dirty.is_empty() => Ok((
            MigrationMode::Precopy,
            "auto, safe: both nodes track dirty memory, so pre-copy (the memory is on one node at any time)".into(),
        )),
        ModeRequest::Auto if safe => Ok((
            MigrationMode::Cold,
            format!("auto, safe: {} lack dirty-memory tracking (pre-copy), so cold", nodes(&no_dirty)),
        )),
        ModeRequest::Auto if no_uffd.is_empty() => Ok((
            MigrationMode::Postcopy,
            "auto: both nodes support userfaultfd, so post-copy (the shortest downtime)".into(),
        )),
        ModeRequest::Auto if no_dirty.is_empty() => Ok((
            MigrationMode::Precopy,
            format!("auto: {} lack userfaultfd; both nodes track dirty memory, so pre-copy", nodes(&no_uffd)),
        )),
        ModeRequest::Auto => Ok((
            MigrationMode::Cold,
            format!(
                "auto: {} lack userfaultfd (post-copy) and {} lack dirty-memory tracking (pre-copy), so cold",
                nodes(&no_uffd),
                nodes(&no_dirty)
            ),
        )),
    }
}

/// How long the final stop-and-copy of a pre-copy migration should spend moving the last
/// dirty pages: the dirty set is small enough once the link moves it in about this long.
pub const PRECOPY_FINAL_COPY: std::time::Duration = std::time::Duration::from_millis(50);
/// The fewest bytes worth another pre-copy round: below this a round costs more in CRIU's own
/// work (freezing, the page map scan) than the copy it saves.
pub const PRECOPY_MIN_ROUND: u64 = 256 << 10;
/// The most pre-copy rounds before the final stop-and-copy, whatever the dirty set does.
pub const PRECOPY_MAX_ROUNDS: usize = 8;

/// The dirty set small enough for the final stop-and-copy, given what the first round moved and
/// how long it took: what the link moves in [`PRECOPY_FINAL_COPY`] at that pace, and at least
/// [`PRECOPY_MIN_ROUND`].
pub fn precopy_small_enough(first_round_bytes: u64, first_round: std::time::Duration) -> u64 {
    let secs = first_round.as_secs_f64().max(1e-3);
    let rate = first_round_bytes as f64 / secs;
    ((rate * PRECOPY_FINAL_COPY.as_secs_f64()) as u64).max(PRECOPY_MIN_ROUND)
}

/// Pre-copy rounds: whether to dump again while the container runs, given the bytes each
/// round so far had to send. Stops when the dirty set stops shrinking (a round sends more
/// than 90% of the previous one), when it is small enough for a short stop-and-copy, or after
/// `max_rounds`.
pub fn precopy_again(rounds: &[u64], small_enough: u64, max_rounds: usize) -> bool {
    match rounds {
        [] => true,
        _ if rounds.len() >= max_rounds => false,
        [.., last] if *last <= small_enough => false,
        [.., prev, last] => (*last as f64) < (*prev as f64) * 0.9,
        [_] => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use herd_proto::state::CriuFeatures;

    fn facts(uffd: bool, dirty: bool) -> NodeFacts {
        NodeFacts {
            arch: "amd64".into(),
            criu_version: Some("4.2.1".into()),
            criu_features: CriuFeatures { lazy_pages: uffd, dirty_tracking: dirty, dirty_tracking_by: None },
            cgroup_version: 1,
            cpu_flags: vec!["sse2".into(), "avx2".into()],
            ..Default::default()
        }
    }

    #[test]
    fn auto_prefers_postcopy_then_precopy_then_cold() {
        let (m, why) =
            choose_mode(ModeRequest::Auto, false, "a", &facts(true, false), "b", &facts(true, false)).unwrap();
        assert_eq!(m, MigrationMode::Postcopy);
        assert!(why.contains("userfaultfd"), "{why}");
        let (m, why) =
            choose_mode(ModeRequest::Auto, false, "a", &facts(false, true), "b", &facts(true, true)).unwrap();
        assert_eq!(m, MigrationMode::Precopy);
        assert!(why.contains("a lack userfaultfd"), "{why}");
        let (m, why) =
            choose_mode(ModeRequest::Auto, false, "a", &facts(false, false), "b", &facts(true, false)).unwrap();
        assert_eq!(m, MigrationMode::Cold);
        assert!(why.contains("a lack userfaultfd") && why.contains("a and b lack dirty-memory"), "{why}");
    }

    #[test]
    fn a_safe_auto_never_picks_postcopy() {
        let (m, why) = choose_mode(ModeRequest::Auto, true, "a", &facts(true, true), "b", &facts(true, true)).unwrap();
        assert_eq!(m, MigrationMode::Precopy);
        assert!(why.contains("safe"), "{why}");
        let (m, why) = choose_mode(ModeRequest::Auto, true, "a", &facts(true, false), "b", &facts(true, true)).unwrap();
        assert_eq!(m, MigrationMode::Cold);
        assert!(why.contains("a lack dirty-memory tracking"), "{why}");
        // An explicit mode is what was asked for.
        let (m, _) =
            choose_mode(ModeRequest::Postcopy, true, "a", &facts(true, true), "b", &facts(true, true)).unwrap();
        assert_eq!(m, MigrationMode::Postcopy);
    }

    #[test]
    fn unsupported_modes_are_refused_with_the_reason() {
        let err =
            choose_mode(ModeRequest::Precopy, false, "a", &facts(true, false), "b", &facts(true, false)).unwrap_err();
        assert!(
            err.contains("dirty memory") && err.contains("a and b lack") && err.contains("--mode postcopy"),
            "{err}"
        );
        let err =
            choose_mode(ModeRequest::Postcopy, false, "a", &facts(true, false), "b", &facts(false, false)).unwrap_err();
        assert!(err.contains("which b lacks"), "{err}");
        assert_eq!(
            choose_mode(ModeRequest::Cold, false, "a", &facts(false, false), "b", &facts(false, false)).unwrap().0,
            MigrationMode::Cold
        );
    }

    #[test]
    fn incompatible_destinations_are_explained() {
        let src = facts(true, false);
        assert!(check_compatible("a", &src, "b", &facts(true, false)).is_ok());
        let mut dst = facts(true, false);
        dst.arch = "arm64".into();
        assert!(check_compatible("a", &src, "b", &dst).unwrap_err().contains("between architectures"));
        let mut dst = facts(true, false);
        dst.cpu_flags = vec!["sse2".into()];
        assert!(
            check_compatible("a", &src, "b", &dst)
                .unwrap_err()
                .contains("lacks features the container may use on a: avx2")
        );
        let mut dst = facts(true, false);
        dst.criu_version = Some("4.1.1".into());
        assert!(check_compatible("a", &src, "b", &dst).unwrap_err().contains("older than"));
        let mut dst = facts(true, false);
        dst.criu_version = None;
        assert!(check_compatible("a", &src, "b", &dst).unwrap_err().contains("node b cannot checkpoint"));
    }

    #[test]
    fn precopy_stops_at_what_the_link_moves_in_50_ms() {
        // 1 GiB in 1 s: 50 ms move about 51 MiB.
        assert_eq!(precopy_small_enough(1 << 30, Duration::from_secs(1)), (1u64 << 30) / 20);
        // A slow or tiny first round: never below the floor.
        assert_eq!(precopy_small_enough(100 << 10, Duration::from_secs(2)), PRECOPY_MIN_ROUND);
        // A round that took no measurable time does not divide by zero.
        assert!(precopy_small_enough(1 << 20, Duration::ZERO) >= PRECOPY_MIN_ROUND);
    }

    #[test]
    fn precopy_stops_when_the_dirty_set_stops_shrinking() {
        assert!(precopy_again(&[], 1 << 20, 8));
        assert!(precopy_again(&[100 << 20], 1 << 20, 8));
        assert!(precopy_again(&[100 << 20, 40 << 20], 1 << 20, 8));
        assert!(!precopy_again(&[100 << 20, 95 << 20], 1 << 20, 8), "shrank by less than 10%");
        assert!(!precopy_again(&[100 << 20, 512 << 10], 1 << 20, 8), "small enough to stop and copy");
        assert!(!precopy_again(&[8, 4, 2], 1, 3), "round limit");
    }
}
