//! The clock and the operating system's random source: the one place this crate reads either,
//! handing them to the engine, which has neither of its own.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time in Unix seconds (0 if the clock is before 1970).
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Fills `buf` from the operating system's secure random source, or fails.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}

/// The engine's random source. A failing OS generator stops the program rather than let a
/// message be sealed with a nonce that is not random; on the systems flexim runs on it does not
/// fail once the process has started (key generation, which comes first, reports it as an
/// error).
pub(crate) fn random() -> flexim_session::Random {
    Box::new(|buf: &mut [u8]| {
        fill(buf).expect("the operating system's random source failed; refusing to seal");
    })
}
