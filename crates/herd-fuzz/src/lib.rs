//! Fuzzing Herd's parsers of outside input (see `docs/design/fuzzing.md`).
//!
//! Each target is a function that takes arbitrary bytes and feeds them to the real entry
//! points of one family of parsers, the way Herd meets such input: image archives
//! ([`targets::image_archive`]), registry documents ([`targets::oci_manifest`]), checkpoint
//! manifests and archives ([`targets::checkpoint`]), the node-to-node transfer protocol
//! ([`targets::transfer`]) and the API's request bodies ([`targets::api_request`]). A target
//! returns normally for any input that Herd refuses or accepts; a panic, a hang or an
//! unbounded allocation is a bug. The first byte of an input picks which entry point of the
//! family gets the rest.
//!
//! Two drivers run the same bodies: `fuzz/` (cargo fuzz, coverage-guided, for long runs:
//! `bench/fuzz.sh`) and this crate's test (`tests/bounded.rs`), which runs every seed
//! ([`seeds`]), every kept crash input (`fuzz/regressions/<target>/`) and a fixed number of
//! mutations of the seeds ([`mutate`]) within seconds, on stable Rust, in the test suite.

pub mod mutate;
pub mod seeds;
pub mod targets;

/// A fuzz target: its name (as in `fuzz/fuzz_targets/<name>.rs`) and its body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// Largest input worth trying (`-max_len`).
    pub max_len: usize,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target { name: "image_archive", run: targets::image_archive, max_len: 64 << 10 },
    Target { name: "oci_manifest", run: targets::oci_manifest, max_len: 16 << 10 },
    Target { name: "checkpoint", run: targets::checkpoint, max_len: 64 << 10 },
    Target { name: "transfer", run: targets::transfer, max_len: 16 << 10 },
    Target { name: "api_request", run: targets::api_request, max_len: 8 << 10 },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
