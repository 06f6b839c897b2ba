//! The engine, driven deterministically without sockets: bytes in, frames and events out. The
//! shapes are those of the end-to-end tests (login, reconnect, resend, copies, receipts), with
//! a pretend server played by the protocol crate ([`kit`]).

mod consent;
mod contacts;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/fixture.rs"]
mod fixture;
mod fuzz_corpus;
#[allow(unreachable_pub)]
#[path = "../../../fuzz/src/engine.rs"]
mod fuzz_engine;
mod hostile;
mod kit;
mod login;
mod receiving;
mod requests;
mod sending;
mod soak;
mod units;
