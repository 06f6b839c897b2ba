//! The engine, driven deterministically without sockets: bytes in, frames and events out. The
//! shapes are those of the end-to-end tests (login, reconnect, resend, copies, receipts), with
//! a pretend server played by the protocol crate ([`kit`]).

mod contacts;
mod hostile;
mod kit;
mod login;
mod receiving;
mod requests;
mod sending;
mod soak;
mod units;
