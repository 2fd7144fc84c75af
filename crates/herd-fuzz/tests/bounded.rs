//! The bounded fuzzing run of the test suite: every target gets its seeds, the crash inputs
//! kept in `fuzz/regressions/<target>/`, and a fixed number of seeded mutations of the seeds
//! (stopping early after a few seconds), on stable Rust. A panic fails the test and names the
//! input; a hang fails it through the targets' own time limit. The long, coverage-guided runs
//! are `bench/fuzz.sh` (cargo fuzz).

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Mutated inputs per target, at most.
const MUTATIONS: usize = 20_000;
/// Time per target for the mutations, at most.
const BUDGET: Duration = Duration::from_secs(4);

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn run_one(target: &herd_fuzz::Target, what: &str, input: &[u8]) {
    if let Err(panic) = std::panic::catch_unwind(|| (target.run)(input)) {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let file = std::env::temp_dir().join(format!("herd-fuzz-{}-failure", target.name));
        std::fs::write(&file, input).unwrap();
        panic!(
            "target {} panicked on {what} ({} bytes, written to {}): {message}\n\
             keep it in fuzz/regressions/{}/ once fixed",
            target.name,
            input.len(),
            file.display(),
            target.name
        );
    }
}

fn bounded(name: &str) {
    let target = herd_fuzz::target(name).unwrap();
    let seeds = herd_fuzz::seeds::seeds(name);
    assert!(!seeds.is_empty());
    for (seed, input) in &seeds {
        run_one(target, &format!("seed {seed}"), input);
    }
    for (path, input) in regressions(name) {
        run_one(target, &format!("regression {path}"), &input);
    }
    let mut rng = herd_fuzz::mutate::Rng::new(0x4845_5244 ^ name.len() as u64);
    let started = Instant::now();
    let mut ran = 0;
    while ran < MUTATIONS && started.elapsed() < BUDGET {
        let (_, input) = &seeds[rng.below(seeds.len())];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let mutated = herd_fuzz::mutate::mutate(&mut rng, input, other, target.max_len);
        run_one(target, &format!("mutation {ran}"), &mutated);
        ran += 1;
    }
    println!("{name}: {} seeds, {ran} mutations in {:.1} s", seeds.len(), started.elapsed().as_secs_f64());
}

#[test]
fn image_archive() {
    bounded("image_archive");
}

#[test]
fn oci_manifest() {
    bounded("oci_manifest");
}

#[test]
fn checkpoint() {
    bounded("checkpoint");
}

#[test]
fn transfer() {
    bounded("transfer");
}

#[test]
fn api_request() {
    bounded("api_request");
}

/// The seeds reach past the first checks: they are what Herd accepts.
#[test]
fn seeds_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, input) in herd_fuzz::seeds::seeds("image_archive").iter().filter(|(_, i)| i[0] == 0) {
        let path = tmp.path().join(name);
        std::fs::write(&path, &input[1..]).unwrap();
        let image = herd_image::import_archive(
            &path,
            &tmp.path().join(format!("{name}.work")),
            &herd_image::UnpackLimits::UNLIMITED,
        );
        assert!(image.is_ok(), "{name}: {image:?}");
    }
    let dir = tmp.path().join("ck");
    let manifest = herd_fuzz::seeds::checkpoint_dir(&dir);
    let mut packed = Vec::new();
    herd_image::pack_checkpoint(&dir, &mut packed, false).unwrap();
    assert_eq!(herd_image::unpack_checkpoint(&packed[..], &tmp.path().join("ck2"), "seed").unwrap(), manifest);
    herd_image::criu_image::Images::read_dir(&dir.join("criu")).unwrap();
    let parts = herd_fuzz::targets::split_parts(&[3, 0, 1, 2, 3, 9, 0, 7][..]);
    assert_eq!(parts, [&[1u8, 2, 3][..], &[7][..]]);
}
