//! The `engine` fuzz target: see `flexim_fuzz::engine` and docs/FUZZING.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexim_fuzz::engine(data));
