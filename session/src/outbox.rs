//! The messages sent but not yet confirmed, and the form an application saves them in.
//!
//! Every outgoing message carries a fresh random `id`. The server answers it `3` RELAYED (handed
//! to the recipient's connection, not yet durable), `2` STORED (durably committed) or an error,
//! and later sends the receipts `7` DELIVERED, `8` STORED_LATER or `9` EXPIRED. Until a final one
//! arrives ([`crate::is_final`]) the message may still be lost, so the [`Outbox`] keeps its frame
//! and the engine sends it again, byte for byte, at every login, before anything new. The
//! recipient recognises a copy by its box and shows it once (see [`crate::dedupe`]).

use std::collections::{BTreeMap, HashMap};

use flexim_protocol::conversation::RoomId;
use flexim_protocol::keys::hex;
use flexim_protocol::status::validate_id;
use flexim_protocol::{Datum, FrameError, MAX_BODY, Message, PublicKey, frame};
use serde::{Deserialize, Serialize};

use crate::dedupe::Dedupe;

/// How many random bytes make a message id: 16 bytes (128 bits) make a collision between two
/// messages of one sender, or an id guessed by someone else, negligible, and 32 hex digits fit
/// the protocol's 64-character limit with room to spare.
pub const ID_BYTES: usize = 16;

/// How many de-duplication keys are saved across reloads (see [`SavedDelivery`]). The server
/// redelivers a message only until it is acknowledged, so the keys that matter are the recent
/// ones; a thousand of them (about 100 KiB) keep the saved form small enough to write often.
pub const SAVED_SEEN: usize = 1024;

/// A new message id from `random`: [`ID_BYTES`] random bytes as 32 lower-case hex digits. It
/// passes [`flexim_protocol::status::validate_id`].
pub fn new_id(random: &mut dyn FnMut(&mut [u8])) -> String {
    let mut bytes = [0u8; ID_BYTES];
    random(&mut bytes);
    hex(&bytes)
}

/// Whom an outgoing message is for: a user, or every member of a room (docs/PROTOCOL.md §16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Addressee {
    /// A user, by key.
    User(PublicKey),
    /// A room's members, by the room's id.
    Room(RoomId),
}

impl Addressee {
    /// The `to` of the Message: the key's 64 hex digits, or the room id's 32.
    pub fn to_hex(&self) -> String {
        match self {
            Addressee::User(key) => key.to_hex(),
            Addressee::Room(room) => room.to_hex(),
        }
    }

    /// Reads a `to`: a key or a room id (the two differ in length).
    pub fn parse(text: &str) -> Option<Addressee> {
        PublicKey::from_hex(text)
            .map(Addressee::User)
            .or_else(|| RoomId::parse(text).map(Addressee::Room))
    }
}

/// One message waiting for its confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The message's id, also in the frame.
    pub id: String,
    /// The recipient: a user, or a room. A room message is kept as sealed, like any other:
    /// sent again byte for byte, it still opens for members who moved on a few epochs since
    /// ([`flexim_mls::PAST_EPOCHS`]), and members who had it already recognise the copy.
    pub to: Addressee,
    /// The Message frame exactly as first sent. Sending these same bytes again keeps the id and
    /// the nonce, so a copy that arrives twice is recognised as one message.
    pub frame: Vec<u8>,
}

impl Outgoing {
    /// The entry for a sealed `message` addressed to a key: `None` if it has no id or its `to`
    /// is not a key; an error if it does not fit in a frame.
    pub fn from_message(message: &Message) -> Result<Option<Outgoing>, FrameError> {
        let (Some(id), Some(to)) = (message.id.clone(), Addressee::parse(&message.to)) else {
            return Ok(None);
        };
        let frame = Datum::Message(message.clone()).to_frame()?;
        Ok(Some(Outgoing { id, to, frame }))
    }
}

/// The messages waiting for a confirmation, in the order they were first sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    /// The waiting messages by their place in the send order, so that iteration follows it.
    entries: BTreeMap<u64, Outgoing>,
    /// Each message's place, by id, so that settling one of thousands is cheap.
    places: HashMap<String, u64>,
    /// The place the next message gets; it only grows, so later messages sort after earlier ones.
    next_place: u64,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Outbox::default()
    }

    /// Adds a message after all the others. Returns false (and keeps the first) if a message
    /// with this id is already waiting, so that a later resend does not send it twice.
    pub fn push(&mut self, entry: Outgoing) -> bool {
        if self.places.contains_key(&entry.id) {
            return false;
        }
        let place = self.next_place;
        self.next_place += 1;
        self.places.insert(entry.id.clone(), place);
        self.entries.insert(place, entry);
        true
    }

    /// Whether the message with `id` is still waiting.
    pub fn contains(&self, id: &str) -> bool {
        self.places.contains_key(id)
    }

    /// The waiting message with `id`, if it is here.
    pub fn get(&self, id: &str) -> Option<&Outgoing> {
        self.places.get(id).and_then(|p| self.entries.get(p))
    }

    /// Takes out the message with `id` (it was confirmed or refused for good).
    pub fn remove(&mut self, id: &str) -> Option<Outgoing> {
        let place = self.places.remove(id)?;
        self.entries.remove(&place)
    }

    /// The waiting messages, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Outgoing> {
        self.entries.values()
    }

    /// The ids of the waiting messages, oldest first.
    pub fn ids(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.entries.values().map(|e| e.id.as_str())
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

impl IntoIterator for Outbox {
    type Item = Outgoing;
    type IntoIter = std::collections::btree_map::IntoValues<u64, Outgoing>;

    /// The waiting messages, oldest first.
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_values()
    }
}

/// What an application saves so that a restart or a page reload loses nothing: the unconfirmed
/// messages and the most recent de-duplication keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedDelivery {
    /// The unconfirmed messages, oldest first.
    pub outbox: Outbox,
    /// The most recent de-duplication keys, oldest first.
    pub seen: Vec<String>,
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

/// The JSON form of [`SavedDelivery`].
#[derive(Serialize, Deserialize)]
struct SavedJson {
    /// The format version, currently 1.
    version: u32,
    /// The key (hex) whose messages these are: after an identity change they are not the new
    /// identity's to send.
    me: String,
    /// The unconfirmed messages, oldest first.
    #[serde(default)]
    outbox: Vec<SavedOutgoing>,
    /// The most recent de-duplication keys, oldest first.
    #[serde(default)]
    seen: Vec<String>,
}

impl SavedDelivery {
    /// The saved form of an outbox and a de-duplication memory: the last [`SAVED_SEEN`] keys.
    pub fn of(outbox: &Outbox, dedupe: &Dedupe) -> SavedDelivery {
        let skip = dedupe.len().saturating_sub(SAVED_SEEN);
        SavedDelivery {
            outbox: outbox.clone(),
            seen: dedupe.recent().skip(skip).map(str::to_string).collect(),
        }
    }

    /// The saved form as JSON, for the identity `me`.
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
                    peer: e.to.to_hex(),
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
            let kept = restore_entry(&entry, me).is_some_and(|outgoing| outbox.push(outgoing));
            if !kept {
                dropped += 1;
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
    let to = Addressee::parse(&entry.peer)?;
    let bytes = unhex(&entry.frame)?;
    let (kind, body) = frame::split_exact(&bytes, MAX_BODY).ok()?;
    let Datum::Message(message) = Datum::decode(kind, body).ok()? else {
        return None;
    };
    let sound = message.from == me.to_hex()
        && message.to == to.to_hex()
        && message.id.as_deref() == Some(entry.id.as_str());
    sound.then(|| Outgoing {
        id: entry.id.clone(),
        to,
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
