//! The user's contacts and conversations: who they are, what was said, what is unread.
//!
//! This is plain data with the rules that change it (unread counting, bounded history, the
//! saved form for `localStorage`); the DOM only ever reads it. Keeping it free of `web-sys`
//! lets the tests exercise every rule directly.

use std::collections::HashSet;

use flexim_protocol::PublicKey;
use flexim_protocol::keys::alias_key;
use serde::{Deserialize, Serialize};

/// How many lines each conversation keeps, in memory and in storage. `localStorage` holds a
/// few megabytes per site, and a conversation's recent past is what people scroll back to.
pub const HISTORY_LIMIT: usize = 200;

/// What became of an outgoing message: the engine's [`flexim_session::Delivery`], saved with
/// each outgoing line.
pub use flexim_session::Delivery;

/// Which way a line of a conversation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received from the contact.
    In,
    /// Sent to the contact.
    Out,
    /// Something arrived from the contact but could not be opened. It is kept as a line of
    /// its own so that the user knows a message was lost rather than never sent.
    Error,
}

/// One line of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// A number unique in this page's lifetime, for matching the server's answer to the
    /// line and for updating the line on screen. Not saved: renumbered on load.
    #[serde(skip)]
    pub id: u64,
    /// Which way it went.
    pub dir: Direction,
    /// The plaintext, or for an error line the reason it did not open.
    pub text: String,
    /// Unix seconds: the sender's `date` for incoming lines, the sending time for outgoing.
    pub date: i64,
    /// For outgoing lines, what the server said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// For incoming lines, the de-duplication key (the engine's [`flexim_session::Incoming::key`]); saved
    /// so that a copy delivered after a reload is still recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// For outgoing lines, the id the message was sent with, which the server's answers and
    /// receipts carry; saved so that receipts arriving after a reload still find their line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_id: Option<String>,
    /// For incoming lines, whether the message came sealed with the static-key box rather
    /// than in the pair room of the two (MLS, docs/PROTOCOL.md §16.9): it is not forward
    /// secret, and the line says so, so that a server forcing the weaker scheme is seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_forward_secret: bool,
}

/// Someone the user talks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The contact's key: the contact's identity.
    #[serde(with = "hex_key")]
    pub key: PublicKey,
    /// The alias the user knows the contact by, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether the contact has a live session, as far as the server last said. Not saved:
    /// after a reload only the server knows.
    #[serde(skip)]
    pub online: bool,
    /// Messages received while the conversation was not in front of the user.
    #[serde(default)]
    pub unread: u32,
    /// Unix seconds of the latest line (or of the contact's creation), to list the most
    /// recent conversations first.
    #[serde(default)]
    pub last_activity: i64,
    /// The conversation, oldest first, at most [`HISTORY_LIMIT`] lines.
    #[serde(default)]
    pub lines: Vec<Line>,
}

impl Contact {
    /// A contact with no history.
    fn new(key: PublicKey, name: Option<String>, now: i64) -> Self {
        Contact {
            key,
            name,
            online: false,
            unread: 0,
            last_activity: now,
            lines: Vec::new(),
        }
    }

    /// The name to show: the alias, else the start of the fingerprint.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => short_fingerprint(&self.key),
        }
    }

    /// Appends a line, forgetting the oldest beyond [`HISTORY_LIMIT`].
    fn push(&mut self, line: Line) {
        self.last_activity = self.last_activity.max(line.date);
        self.lines.push(line);
        if self.lines.len() > HISTORY_LIMIT {
            let extra = self.lines.len() - HISTORY_LIMIT;
            self.lines.drain(..extra);
        }
    }
}

/// The first four groups of a key's fingerprint, enough to tell contacts apart at a glance
/// (but not to verify them: that takes the whole fingerprint).
pub fn short_fingerprint(key: &PublicKey) -> String {
    let fp = key.fingerprint();
    format!("{}…", &fp[..19])
}

/// What [`Contacts::add`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// True if the contact is new.
    pub created: bool,
    /// If another contact was known by the same alias, its key: the alias now points to a
    /// different key, which the user should hear about (it may be a server lying about who
    /// owns the alias).
    pub alias_moved_from: Option<PublicKey>,
}

/// All contacts, which conversation is open, and whether the page is visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contacts {
    /// The contacts, in no particular order (see [`Contacts::sorted`]).
    list: Vec<Contact>,
    /// The conversation in front of the user, if any.
    open: Option<PublicKey>,
    /// Whether the page is visible (not a background tab, not minimised).
    visible: bool,
    /// The next line id.
    next_line: u64,
}

impl Default for Contacts {
    fn default() -> Self {
        Contacts {
            list: Vec::new(),
            open: None,
            visible: true,
            next_line: 1,
        }
    }
}

/// The saved form: a version number, so that a later format can tell old data apart.
#[derive(Serialize, Deserialize)]
struct Saved {
    /// The format version, currently 1.
    version: u32,
    /// The contacts with their history.
    contacts: Vec<Contact>,
}

impl Contacts {
    /// No contacts.
    pub fn new() -> Self {
        Contacts::default()
    }

    /// The contact with `key`.
    pub fn get(&self, key: &PublicKey) -> Option<&Contact> {
        self.list.iter().find(|c| c.key == *key)
    }

    fn get_mut(&mut self, key: &PublicKey) -> Option<&mut Contact> {
        self.list.iter_mut().find(|c| c.key == *key)
    }

    /// The contact with `key`, created (without a name) if unknown.
    fn ensure(&mut self, key: &PublicKey, now: i64) -> &mut Contact {
        let index = match self.list.iter().position(|c| c.key == *key) {
            Some(i) => i,
            None => {
                self.list.push(Contact::new(*key, None, now));
                self.list.len() - 1
            }
        };
        &mut self.list[index]
    }

    /// Adds a contact, or names an existing one when `name` is given.
    pub fn add(&mut self, key: &PublicKey, name: Option<&str>, now: i64) -> Added {
        let alias_moved_from = name.and_then(|n| {
            self.list
                .iter()
                .find(|c| c.key != *key && c.name.as_deref().map(alias_key) == Some(alias_key(n)))
                .map(|c| c.key)
        });
        let created = self.get(key).is_none();
        let contact = self.ensure(key, now);
        if let Some(n) = name {
            contact.name = Some(n.to_string());
        }
        Added {
            created,
            alias_moved_from,
        }
    }

    /// Takes the name `alias` (any case) away from every contact that has it: the alias now
    /// belongs to another key, and a contact shown under it would be shown as someone else.
    pub fn forget_name(&mut self, alias: &str) {
        for c in &mut self.list {
            if c.name.as_deref().map(alias_key) == Some(alias_key(alias)) {
                c.name = None;
            }
        }
    }

    /// Gives a contact a name if it has none yet (from a roster or a lookup), without
    /// overriding the alias the user chose.
    pub fn learn_name(&mut self, key: &PublicKey, aliases: &[String]) {
        if let (Some(c), Some(first)) = (self.get_mut(key), aliases.first())
            && c.name.is_none()
        {
            c.name = Some(first.clone());
        }
    }

    /// Records whether a contact is online. Unknown keys are ignored: presence concerns
    /// everyone on the server, not only contacts.
    pub fn set_online(&mut self, key: &PublicKey, online: bool) {
        if let Some(c) = self.get_mut(key) {
            c.online = online;
        }
    }

    /// Brings a conversation in front of the user; its unread count goes back to zero.
    pub fn open(&mut self, key: &PublicKey, now: i64) {
        self.ensure(key, now).unread = 0;
        self.open = Some(*key);
    }

    /// No conversation is in front of the user any more (a room is).
    pub fn close(&mut self) {
        self.open = None;
    }

    /// The conversation in front of the user.
    pub fn open_key(&self) -> Option<&PublicKey> {
        self.open.as_ref()
    }

    /// Records whether the page is visible. When it becomes visible, the open conversation
    /// is being read again, so its unread count goes back to zero.
    pub fn set_visible(&mut self, visible: bool) {
        self.visible = visible;
        if visible
            && let Some(key) = self.open
            && let Some(c) = self.get_mut(&key)
        {
            c.unread = 0;
        }
    }

    /// Whether the user is looking at the conversation with `key` right now.
    pub fn is_read_now(&self, key: &PublicKey) -> bool {
        self.visible && self.open.as_ref() == Some(key)
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_line;
        self.next_line += 1;
        id
    }

    /// Adds a received message to its sender's conversation (creating the contact) and
    /// counts it as unread unless the user is looking at that conversation. Returns the
    /// line's id.
    pub fn receive(&mut self, from: &PublicKey, text: &str, date: i64, msg_id: String) -> u64 {
        self.incoming(from, Direction::In, text, date, Some(msg_id))
    }

    /// Adds an error line for a message from `from` that did not open. It counts as unread
    /// like a message: something arrived that the user should look at.
    pub fn receive_error(&mut self, from: &PublicKey, reason: &str, date: i64) -> u64 {
        self.incoming(from, Direction::Error, reason, date, None)
    }

    fn incoming(
        &mut self,
        from: &PublicKey,
        dir: Direction,
        text: &str,
        date: i64,
        msg_id: Option<String>,
    ) -> u64 {
        let id = self.next_id();
        let read_now = self.is_read_now(from);
        let contact = self.ensure(from, date);
        if !read_now {
            contact.unread = contact.unread.saturating_add(1);
        }
        contact.push(Line {
            id,
            dir,
            text: text.to_string(),
            date,
            delivery: None,
            msg_id,
            sent_id: None,
            not_forward_secret: false,
        });
        id
    }

    /// Adds an outgoing message, marked as sending, and returns its line id.
    pub fn send(&mut self, to: &PublicKey, text: &str, date: i64) -> u64 {
        let id = self.next_id();
        self.ensure(to, date).push(Line {
            id,
            dir: Direction::Out,
            text: text.to_string(),
            date,
            delivery: Some(Delivery::Sending),
            msg_id: None,
            sent_id: None,
            not_forward_secret: false,
        });
        id
    }

    /// Records the id an outgoing line was sent with, so that answers and receipts find it.
    pub fn set_sent_id(&mut self, to: &PublicKey, line: u64, id: String) -> bool {
        match self.line_mut(to, line) {
            Some(l) => {
                l.sent_id = Some(id);
                true
            }
            None => false,
        }
    }

    /// Marks a received line as not forward secret (it came with the static-key box).
    pub fn set_not_forward_secret(&mut self, from: &PublicKey, line: u64) {
        if let Some(l) = self.line_mut(from, line) {
            l.not_forward_secret = true;
        }
    }

    fn line_mut(&mut self, to: &PublicKey, line: u64) -> Option<&mut Line> {
        self.get_mut(to)?.lines.iter_mut().find(|l| l.id == line)
    }

    /// Records what became of an outgoing line, if that moves it forward (see
    /// [`Delivery::can_become`]). False if nothing changed: the line is gone (trimmed from the
    /// history, or the history was cleared) or already further along.
    pub fn set_delivery(&mut self, to: &PublicKey, line: u64, delivery: Delivery) -> bool {
        self.line_mut(to, line)
            .is_some_and(|l| advance(l, delivery))
    }

    /// Records what became of the outgoing message sent with `id`, whichever conversation it
    /// is in, if that moves it forward. False if nothing changed.
    pub fn set_delivery_by_id(&mut self, id: &str, delivery: Delivery) -> bool {
        self.list
            .iter_mut()
            .flat_map(|c| c.lines.iter_mut())
            .find(|l| l.dir == Direction::Out && l.sent_id.as_deref() == Some(id))
            .is_some_and(|l| advance(l, delivery))
    }

    /// The delivery state of the outgoing message sent with `id`.
    pub fn delivery_of(&self, id: &str) -> Option<&Delivery> {
        self.list
            .iter()
            .flat_map(|c| c.lines.iter())
            .find(|l| l.dir == Direction::Out && l.sent_id.as_deref() == Some(id))
            .and_then(|l| l.delivery.as_ref())
    }

    /// After a reload: outgoing lines still waiting for their first answer whose message is not
    /// among `waiting` (the restored outbox) can no longer be sent again, so they become
    /// [`Delivery::Unconfirmed`]. Returns how many did.
    pub fn settle_unsent(&mut self, waiting: &HashSet<&str>) -> usize {
        let mut settled = 0;
        for line in self.list.iter_mut().flat_map(|c| c.lines.iter_mut()) {
            let lost = line.delivery == Some(Delivery::Sending)
                && line
                    .sent_id
                    .as_deref()
                    .is_none_or(|id| !waiting.contains(id));
            if lost {
                line.delivery = Some(Delivery::Unconfirmed);
                settled += 1;
            }
        }
        settled
    }

    /// The contacts, most recent conversation first.
    pub fn sorted(&self) -> Vec<&Contact> {
        let mut v: Vec<&Contact> = self.list.iter().collect();
        v.sort_by(|a, b| {
            b.last_activity
                .cmp(&a.last_activity)
                .then_with(|| a.display_name().cmp(&b.display_name()))
        });
        v
    }

    /// The number of contacts.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are no contacts.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Unread messages over all conversations (for the page title).
    pub fn total_unread(&self) -> u32 {
        self.list.iter().map(|c| c.unread).sum()
    }

    /// The de-duplication ids of all saved incoming messages.
    pub fn seen_ids(&self) -> impl Iterator<Item = &str> {
        self.list
            .iter()
            .flat_map(|c| c.lines.iter())
            .filter_map(|l| l.msg_id.as_deref())
    }

    /// Forgets every conversation's lines and unread counts but keeps the contacts (used
    /// when the identity changes: the old conversations were with the old key).
    pub fn clear_history(&mut self) {
        for c in &mut self.list {
            c.lines.clear();
            c.unread = 0;
        }
    }

    /// The saved form, as JSON.
    pub fn to_json(&self) -> String {
        let saved = Saved {
            version: 1,
            contacts: self.list.clone(),
        };
        // Strings, integers and enums only: serializing cannot fail.
        serde_json::to_string(&saved).unwrap_or_default()
    }

    /// Reads the saved form. Lines get fresh ids and keep their delivery state; outgoing
    /// lines still waiting for an answer are checked against the saved outbox afterwards
    /// ([`Contacts::settle_unsent`]).
    pub fn from_json(json: &str) -> Result<Contacts, String> {
        let saved: Saved = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if saved.version != 1 {
            return Err(format!("unknown saved format version {}", saved.version));
        }
        let mut contacts = Contacts::new();
        for mut contact in saved.contacts {
            if contacts.get(&contact.key).is_some() {
                continue;
            }
            for line in &mut contact.lines {
                line.id = contacts.next_id();
            }
            let extra = contact.lines.len().saturating_sub(HISTORY_LIMIT);
            contact.lines.drain(..extra);
            contacts.list.push(contact);
        }
        Ok(contacts)
    }
}

/// Moves `line` to `delivery` if that is forward; whether it did.
fn advance(line: &mut Line, delivery: Delivery) -> bool {
    let forward = line
        .delivery
        .as_ref()
        .is_none_or(|current| current.can_become(&delivery));
    if forward {
        line.delivery = Some(delivery);
    }
    forward
}

/// Keys are saved as 64 hex digits, the form people recognise, rather than as a list of
/// numbers.
mod hex_key {
    use flexim_protocol::PublicKey;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key.to_hex())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let text = String::deserialize(d)?;
        PublicKey::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a key must be 64 hexadecimal digits"))
    }
}

/// A stranger waiting in the requests box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Its key.
    pub key: PublicKey,
    /// Its first alias, once the server named it.
    pub name: Option<String>,
}
