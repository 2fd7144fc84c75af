//! CRIU's own test suite through Herd, the subset CI runs on every change
//! ([`herd_bench::zdtm::CI_SUBSET`], tests that pass plain CRIU here): each must still hold its
//! state after `herd checkpoint` + `herd restore`, `herd migrate --mode cold` and
//! `herd migrate --mode postcopy` between two nodes. The whole suite, with plain CRIU beside
//! it, is `target/release/zdtm` (docs/zdtm.md).

use herd_bench::BenchCluster;
use herd_bench::zdtm::{self, CI_SUBSET, Column, Outcome};

#[test]
fn criu_test_suite_subset_moves_through_herd() {
    assert!(unsafe { libc::geteuid() } == 0, "the ZDTM subset needs root (it starts a local cluster)");
    let src = zdtm::criu_source().expect("CRIU's source");
    let suite = zdtm::load_suite(&src.join("test/zdtm/static"))
        .expect("the ZDTM image and its list of tests (scripts/zdtm-image.sh, run by scripts/setup.sh)");
    let tests: Vec<_> = suite.into_iter().filter(|t| CI_SUBSET.contains(&t.name.as_str())).collect();
    assert_eq!(tests.len(), CI_SUBSET.len(), "every test of the subset is in the image");

    let cluster = BenchCluster::up(24, 2).expect("a local cluster");
    let image = std::path::Path::new(zdtm::IMAGE_DIR).join("zdtm.tar");
    cluster.ok(&["image", "import", "zdtm", image.to_str().unwrap()]).expect("importing the ZDTM image");
    let results = zdtm::run_all(&cluster, &tests, 2);

    let failed: Vec<String> = results
        .iter()
        .flat_map(|(test, r)| {
            Column::ALL.into_iter().filter_map(move |c| match &r[&c] {
                Outcome::Pass => None,
                o => Some(format!("{test} ({}): {} {}", c.title(), o.short(), o.detail())),
            })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} moves lost a test's state:\n{}",
        failed.len(),
        3 * tests.len(),
        failed.join("\n")
    );
}
