//! The server's clock and its source of randomness, in one place: every other module gets the
//! time and random bytes from here (or as arguments), so nothing else reads the clock or the
//! OS random source, and the routing table, which takes the time as an argument, stays
//! deterministic under test.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current Unix time in seconds, as the protocol counts it (0 if the clock is before 1970).
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Fills `buf` from the operating system's secure random source. Without one the server cannot
/// make challenges or node ids at all, so its absence is a fatal error.
pub(crate) fn random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random source is available");
}
