//! The `datums` fuzz target: see `flexim_fuzz::datums` and docs/FUZZING.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexim_fuzz::datums(data));
