//! The `handshake` fuzz target: see `flexim_fuzz::handshake` and docs/FUZZING.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexim_fuzz::handshake(data));
