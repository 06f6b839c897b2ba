//! The `link` fuzz target: see `flexim_fuzz::link` and docs/FUZZING.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexim_fuzz::link(data));
