//! The committed inputs of the engine's fuzz target, replayed by the ordinary test suite
//! through the very check the fuzz target runs (`fuzz/src/engine.rs`, included in `main.rs`
//! as it is), so a regression input in `fuzz/regressions/engine/` keeps being checked without
//! libFuzzer (docs/FUZZING.md).

use crate::{fixture, fuzz_engine};

#[test]
fn the_engine_inputs_pass() {
    fixture::replay("engine", fuzz_engine::engine);
}

/// The first bug the fuzzer found, spelled out: after a real login the server seals an empty
/// record (no type byte at all); the engine took the missing type byte for a panic.
#[test]
fn an_empty_record_after_the_login_is_garbled_not_a_panic() {
    // Setup 0xcc (WebSocket framing, no pin, an alias), log in (op 7), then feed the sealed
    // chunk of length 0 (op 1).
    fuzz_engine::engine(&[0xcc, 7, 1, 0]);
}
