//! The checks behind flexim's fuzz targets, one function per target (`fuzz_targets/*.rs` are
//! one line each). They are plain Rust with no libFuzzer in them: the protocol crate's and the
//! session crate's tests include these same files (`#[path]`) and replay the committed corpus
//! and regression inputs through them, so what the fuzzer checks and what `cargo test` checks
//! is one piece of code. docs/FUZZING.md says how to run them.

pub mod engine;
pub mod fixture;
pub mod wire;

pub use engine::engine;
pub use wire::{datums, frame, handshake, link};
