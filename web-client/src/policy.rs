//! Small decisions of the page that need neither the DOM nor the network: the reconnect
//! schedule, parsing an imported identity, and when to notify. (The protocol's own rules, the
//! pin check and de-duplication among them, are the engine's.)
//!
//! They live apart from the code that uses them so that the browser tests can check each rule
//! on its own, with plain values in and plain values out.

use flexim_protocol::SecretKey;
use flexim_protocol::keys::KEY_LEN;

/// The first reconnect delay, in milliseconds.
pub const BACKOFF_FIRST_MS: u32 = 500;
/// The longest reconnect delay, in milliseconds. Past this, waiting longer only makes the user
/// wait for a server that is probably back already.
pub const BACKOFF_MAX_MS: u32 = 30_000;

/// Exponential backoff for reconnecting: 0.5 s, 1 s, 2 s, ... up to 30 s, back to 0.5 s after
/// a successful login.
///
/// Doubling keeps a browser full of tabs from hammering a server that is restarting, while the
/// first retries still come quickly after a short network blip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// How many reconnect attempts have been scheduled since the last successful login.
    attempts: u32,
}

impl Backoff {
    /// A schedule that starts at the first delay.
    pub fn new() -> Self {
        Backoff::default()
    }

    /// The delay before the next attempt, in milliseconds; each call moves one step along.
    pub fn next_delay_ms(&mut self) -> u32 {
        // 2^6 × 500 ms is already past the cap, so the shift never needs to go further; the
        // `min` keeps the exponent (and the multiplication) far from overflow.
        let exponent = self.attempts.min(6);
        self.attempts = self.attempts.saturating_add(1);
        BACKOFF_FIRST_MS
            .saturating_mul(1 << exponent)
            .min(BACKOFF_MAX_MS)
    }

    /// Back to the first delay: called once a connection has logged in.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// How many attempts were scheduled since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// Why a pasted secret key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// Nothing was pasted.
    Empty,
    /// Something other than hexadecimal digits (and spaces) was pasted.
    NotHex,
    /// Hex digits, but not 64 of them.
    Length(usize),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Empty => f.write_str("paste a secret key (64 hexadecimal digits) first"),
            ImportError::NotHex => {
                f.write_str("a secret key contains only hexadecimal digits (0-9, a-f)")
            }
            ImportError::Length(n) => write!(
                f,
                "a secret key is exactly {} hexadecimal digits; this has {n}",
                KEY_LEN * 2
            ),
        }
    }
}

/// Parses a pasted secret key: 64 hex digits in either case. Whitespace anywhere is ignored,
/// because a key copied out of a text file or an e-mail often comes with a line break or with
/// the digits grouped.
pub fn parse_identity_import(text: &str) -> Result<SecretKey, ImportError> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.is_empty() {
        return Err(ImportError::Empty);
    }
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ImportError::NotHex);
    }
    if digits.len() != KEY_LEN * 2 {
        return Err(ImportError::Length(digits.len()));
    }
    SecretKey::from_hex(&digits).ok_or(ImportError::NotHex)
}

/// The flag a sender sets to ask for the recipient's attention.
pub const NOTIFY_FLAG: &str = "NOTIFY";

/// Whether an incoming message deserves a desktop notification: when the sender flagged it
/// `NOTIFY`, or when the page is hidden (a background tab), since the user would otherwise
/// not see it arrive.
pub fn should_notify(flags: &[String], page_hidden: bool) -> bool {
    page_hidden || flags.iter().any(|f| f == NOTIFY_FLAG)
}
