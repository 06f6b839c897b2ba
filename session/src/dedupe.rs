//! Recognising a message that was reported already.
//!
//! The server delivers a message with an id until its recipient acknowledges it, and a sender
//! sends an unconfirmed message again after a reconnect, so a client sees copies. A copy is
//! the same frame: the sender resends its frame byte for byte and the server forwards frames
//! byte for byte. It is therefore recognised by its **box**: the sender, the date and the start
//! of the sealed `msg`, which holds the box's random 24-byte nonce ([`message_key`]).
//!
//! Not by its `id`: the id is outside the seal (docs/PROTOCOL.md §9.2), so anyone on the path
//! could rename a new message's id to one already seen and have it dropped as a repeat, whereas
//! a changed nonce or date makes the box fail to open. Only boxes that opened are remembered,
//! so a forgery cannot suppress a real message either (docs/PROTOCOL.md §8.2).

use std::collections::{HashSet, VecDeque};

use flexim_protocol::PublicKey;

/// How many delivered messages are remembered. The server redelivers a message only until it
/// is acknowledged, and senders resend only what is unconfirmed, so copies come close behind
/// the first; a few thousand is plenty and bounds the memory (and the saved form).
pub const DEDUP_WINDOW: usize = 4096;

/// How many characters of the box identify it: 44 base64 characters are 33 bytes, the version
/// byte, the 24-byte random nonce and 8 bytes of ciphertext.
const BOX_PREFIX: usize = 44;

/// The key of a delivered message that opened: its sender, its date and the start of its box
/// (see the module documentation). Two different messages practically never share a random
/// nonce; every copy of one message has the same three.
pub fn message_key(sender: &PublicKey, date: i64, msg: &str) -> String {
    let prefix: String = msg.chars().take(BOX_PREFIX).collect();
    format!("{}:{date}:{prefix}", sender.to_hex())
}

/// The key of a room message: the room and the start of its MLS message, which differs for
/// every message (its encrypted sender data and ciphertext are fresh), so a copy is recognised
/// before it is opened (MLS opens each message once).
pub fn room_message_key(room: &flexim_protocol::conversation::RoomId, msg: &str) -> String {
    let tail: String = msg.chars().rev().take(BOX_PREFIX).collect();
    format!("room:{room}:{tail}")
}

/// The key of a message with an id that did not open, so that it is reported once rather than
/// at every redelivery. It is apart from [`message_key`]'s keys, so a forgery cannot suppress a
/// real message; a forged id can at most hide another forgery.
pub fn unopened_key(from: &str, id: &str) -> String {
    format!("unopened:{from}:{id}")
}

/// The keys of the messages recently reported, oldest first, bounded by [`DEDUP_WINDOW`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dedupe {
    /// The remembered keys.
    seen: HashSet<String>,
    /// The same keys, oldest first, to know which to forget.
    order: VecDeque<String>,
}

/// What a client carries from one connection (or one process) to the next so that a message
/// reported there is not reported again: the de-duplication memory.
pub type Seen = Dedupe;

impl Dedupe {
    /// An empty memory.
    pub fn new() -> Self {
        Dedupe::default()
    }

    /// Remembers `key`; false if it was already remembered (the message is a copy).
    pub fn insert(&mut self, key: String) -> bool {
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > DEDUP_WINDOW
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }

    /// Forgets `key` (a message whose report never reached the application).
    pub fn remove(&mut self, key: &str) -> bool {
        if !self.seen.remove(key) {
            return false;
        }
        self.order.retain(|k| k != key);
        true
    }

    /// Whether `key` is remembered.
    pub fn contains(&self, key: &str) -> bool {
        self.seen.contains(key)
    }

    /// The remembered keys, oldest first (to save them).
    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.order.iter().map(String::as_str)
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
