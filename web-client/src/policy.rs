//! Small decisions that need neither the DOM nor the network: the reconnect schedule, the
//! server-key pin check, parsing an imported identity, and de-duplicating delivered messages.
//!
//! They live apart from the code that uses them so that the browser tests can check each rule
//! on its own, with plain values in and plain values out.

use std::collections::{HashSet, VecDeque};

use flexim_protocol::keys::KEY_LEN;
use flexim_protocol::{PublicKey, SecretKey};

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

/// What the server key presented on a connection means against the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// Nothing was pinned yet: trust on first use, pin this key once the handshake proves it.
    FirstUse,
    /// The key is the pinned one.
    Match,
    /// The server presents another key than the pinned one. This is either a server that was
    /// re-installed or someone in the middle; only the user can tell, so the client must not
    /// log in until the user accepts the new key.
    Mismatch {
        /// The key pinned earlier.
        pinned: PublicKey,
    },
}

/// Compares the presented server key with the pinned one (if any).
pub fn check_pin(pinned: Option<&PublicKey>, presented: &PublicKey) -> PinCheck {
    match pinned {
        None => PinCheck::FirstUse,
        Some(p) if p == presented => PinCheck::Match,
        Some(p) => PinCheck::Mismatch { pinned: *p },
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

/// How many delivered messages are remembered for de-duplication.
pub const DEDUP_WINDOW: usize = 4096;

/// The identity of a delivered message for de-duplication: the sender, the date, and the first
/// 44 characters of the box (33 bytes: the version byte, the 24-byte random nonce and 8 bytes
/// of ciphertext). A replayed or re-delivered copy has exactly the same three; two different
/// messages practically never share a random nonce.
pub fn message_id(sender: &PublicKey, date: i64, msg: &str) -> String {
    let prefix: String = msg.chars().take(44).collect();
    format!("{}:{date}:{prefix}", sender.to_hex())
}

/// The identity of a delivered message that carries an `id`: its sender and the id. The sender
/// sends an unconfirmed message again with the same id after a reconnect, and the server
/// delivers it again until it is acknowledged, so every copy has the same key. (A key from
/// [`message_id`] has two colons and an id has none, so the two kinds never collide.)
pub fn sender_id_key(sender: &PublicKey, id: &str) -> String {
    format!("{}:{id}", sender.to_hex())
}

/// The messages recently shown, so that a second copy is not shown again.
///
/// The server delivers stored messages at least once (a connection lost at the wrong moment
/// means a second delivery), and nothing stops a replay, so the client has to recognise
/// copies itself. The memory is bounded: the oldest ids are forgotten first.
#[derive(Debug, Clone, Default)]
pub struct Dedupe {
    /// The remembered ids.
    seen: HashSet<String>,
    /// The same ids, oldest first, to know which to forget.
    order: VecDeque<String>,
}

impl Dedupe {
    /// An empty memory.
    pub fn new() -> Self {
        Dedupe::default()
    }

    /// Remembers `id`; false if it was already remembered (the message is a copy).
    pub fn insert(&mut self, id: String) -> bool {
        if !self.seen.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > DEDUP_WINDOW
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    /// The remembered ids, oldest first (to save them).
    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The flag a sender sets to ask for the recipient's attention.
pub const NOTIFY_FLAG: &str = "NOTIFY";

/// Whether an incoming message deserves a desktop notification: when the sender flagged it
/// `NOTIFY`, or when the page is hidden (a background tab), since the user would otherwise
/// not see it arrive.
pub fn should_notify(flags: &[String], page_hidden: bool) -> bool {
    page_hidden || flags.iter().any(|f| f == NOTIFY_FLAG)
}
