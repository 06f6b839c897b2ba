//! The browser's clock and its secure random source: the one place the page reads either,
//! handing them to the engine, which has neither of its own.

/// The current time in milliseconds since 1970.
pub(crate) fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// The current time in whole seconds since 1970, the protocol's `date`.
pub(crate) fn now_secs() -> i64 {
    (now_ms() / 1000.0) as i64
}

/// Fills `buf` from the browser's `crypto.getRandomValues`, or says why it cannot.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), String> {
    getrandom::fill(buf).map_err(|e| format!("this browser has no secure random generator: {e}"))
}

/// The engine's random source, for nonces and message ids.
pub(crate) fn random() -> flexim_session::Random {
    Box::new(|buf: &mut [u8]| {
        // Start-up has already drawn the identity or checked the generator, so this cannot
        // fail later; if it somehow did, stopping is the only safe choice, because a nonce
        // that is not random would weaken the encryption.
        fill(buf).expect("the browser's secure random generator failed")
    })
}
