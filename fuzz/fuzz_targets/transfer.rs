#![no_main]
//! `herd_fuzz::targets::transfer` under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_fuzz::targets::transfer(data));
