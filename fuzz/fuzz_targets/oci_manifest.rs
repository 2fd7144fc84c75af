#![no_main]
//! `herd_fuzz::targets::oci_manifest` under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_fuzz::targets::oci_manifest(data));
