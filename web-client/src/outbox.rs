//! The messages sent but not yet confirmed, and their saved form.
//!
//! Every outgoing message carries a fresh random `id`. The server answers it `3` RELAYED (handed
//! to the recipient's connection, not yet confirmed), `2` STORED (durably committed) or an
//! error, and later sends the receipts `7` DELIVERED (the recipient acknowledged it) or `8`
//! STORED_LATER (the recipient's connection ended before acknowledging it, and it is now
//! stored). Until one of `2`, `7`, `8` or an error arrives the message may still be lost, so the
//! [`Outbox`] keeps its frame and the session sends it again, byte for byte, at every login,
//! before anything new. The recipient recognises a copy by its (sender, id) and shows it once.
//!
//! The outbox is saved in the page's storage with the de-duplication memory (see
//! [`SavedDelivery`]), so that a reload loses neither what was still to be confirmed nor what
//! was already shown.

use std::collections::VecDeque;

use flexim_protocol::keys::hex;
use flexim_protocol::status::validate_id;
use flexim_protocol::{Datum, MAX_BODY, PublicKey, frame};
use serde::{Deserialize, Serialize};

/// How many random bytes make a message id: 16 bytes (128 bits) make a collision between two
/// messages of the same sender practically impossible, and 32 hex digits fit the protocol's
/// 64-character limit with room to spare.
pub const ID_BYTES: usize = 16;

/// How many de-duplication ids are saved across reloads. The server redelivers a message only
/// until it is acknowledged, so the ids that matter are the recent ones; a thousand of them
/// (about 100 KiB) keep the saved form small enough to write after every message.
pub const SAVED_SEEN: usize = 1024;

/// A new message id from `random`: [`ID_BYTES`] random bytes as lowercase hex.
pub fn new_id(random: &mut dyn FnMut(&mut [u8])) -> String {
    let mut bytes = [0u8; ID_BYTES];
    random(&mut bytes);
    hex(&bytes)
}

/// One message waiting for its confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The message's id, also in the frame.
    pub id: String,
    /// The recipient.
    pub peer: PublicKey,
    /// The Message frame exactly as first sent. Sending these same bytes again keeps the id and
    /// the nonce, so a copy that arrives twice is recognised as one message.
    pub frame: Vec<u8>,
}

/// The messages waiting for a confirmation, in the order they were first sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    /// The waiting messages, oldest first.
    entries: VecDeque<Outgoing>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Outbox::default()
    }

    /// Adds a message after all the others.
    pub fn push(&mut self, entry: Outgoing) {
        self.entries.push_back(entry);
    }

    /// Whether the message with `id` is still waiting.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    /// Takes out the message with `id` (it was confirmed or refused for good).
    pub fn remove(&mut self, id: &str) -> Option<Outgoing> {
        let index = self.entries.iter().position(|e| e.id == id)?;
        self.entries.remove(index)
    }

    /// The waiting messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Outgoing> {
        self.entries.iter()
    }

    /// The ids of the waiting messages, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.id.as_str())
    }

    /// How many messages wait.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One outbox entry as saved: the frame in hex, since JSON has no bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedOutgoing {
    /// The message id.
    id: String,
    /// The recipient's key in hex.
    peer: String,
    /// The frame in hex.
    frame: String,
}

/// What the session saves so that a reload loses nothing: the unconfirmed messages and the
/// recently seen message ids. Saved under its own storage key, next to the conversations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedDelivery {
    /// The unconfirmed messages, oldest first.
    pub outbox: Outbox,
    /// The most recent de-duplication ids, oldest first.
    pub seen: Vec<String>,
}

/// The JSON form of [`SavedDelivery`].
#[derive(Serialize, Deserialize)]
struct SavedJson {
    /// The format version, currently 1.
    version: u32,
    /// The key (hex) whose messages these are: after an identity change they are not the
    /// new identity's to send.
    me: String,
    /// The unconfirmed messages, oldest first.
    #[serde(default)]
    outbox: Vec<SavedOutgoing>,
    /// The most recent de-duplication ids, oldest first.
    #[serde(default)]
    seen: Vec<String>,
}

impl SavedDelivery {
    /// The saved form, as JSON, for the identity `me`. Only the last [`SAVED_SEEN`] seen ids
    /// are kept.
    pub fn to_json(&self, me: &PublicKey) -> String {
        let skip = self.seen.len().saturating_sub(SAVED_SEEN);
        let saved = SavedJson {
            version: 1,
            me: me.to_hex(),
            outbox: self
                .outbox
                .iter()
                .map(|e| SavedOutgoing {
                    id: e.id.clone(),
                    peer: e.peer.to_hex(),
                    frame: hex(&e.frame),
                })
                .collect(),
            seen: self.seen[skip..].to_vec(),
        };
        // Strings only: serializing cannot fail.
        serde_json::to_string(&saved).unwrap_or_default()
    }

    /// Reads the saved form for the identity `me`. Returns the state and how many saved
    /// messages were dropped because they were not sound (not a Message frame from `me` with
    /// that id); state saved for another identity reads as empty.
    pub fn from_json(json: &str, me: &PublicKey) -> Result<(SavedDelivery, usize), String> {
        let saved: SavedJson = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if saved.version != 1 {
            return Err(format!("unknown saved format version {}", saved.version));
        }
        if saved.me != me.to_hex() {
            return Ok((SavedDelivery::default(), 0));
        }
        let mut outbox = Outbox::new();
        let mut dropped = 0;
        for entry in saved.outbox {
            match restore_entry(&entry, me) {
                Some(outgoing) if !outbox.contains(&outgoing.id) => outbox.push(outgoing),
                _ => dropped += 1,
            }
        }
        Ok((
            SavedDelivery {
                outbox,
                seen: saved.seen,
            },
            dropped,
        ))
    }
}

/// A saved entry back as an [`Outgoing`], if its frame is what was sent: one whole Message
/// frame from `me` to the saved peer, with the saved id. Anything else is not sent again, since
/// the server would refuse it (or worse, deliver something nobody wrote).
fn restore_entry(entry: &SavedOutgoing, me: &PublicKey) -> Option<Outgoing> {
    validate_id(&entry.id).ok()?;
    let peer = PublicKey::from_hex(&entry.peer)?;
    let bytes = unhex(&entry.frame)?;
    let (kind, body) = frame::split_exact(&bytes, MAX_BODY).ok()?;
    let Datum::Message(message) = Datum::decode(kind, body).ok()? else {
        return None;
    };
    let sound = message.from == me.to_hex()
        && message.to == peer.to_hex()
        && message.id.as_deref() == Some(entry.id.as_str());
    sound.then(|| Outgoing {
        id: entry.id.clone(),
        peer,
        frame: bytes,
    })
}

/// Bytes from hex digits (either case); `None` unless every pair is two hex digits.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            // `from_str_radix` alone would also take a sign, as in "+f".
            if !pair.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()
        })
        .collect()
}
