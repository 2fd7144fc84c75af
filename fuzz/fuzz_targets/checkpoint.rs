#![no_main]
//! `herd_fuzz::targets::checkpoint` under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_fuzz::targets::checkpoint(data));
