//! The `frame` fuzz target: see `flexim_fuzz::frame` and docs/FUZZING.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexim_fuzz::frame(data));
