//! The outbox: messages this client sent that the server has not confirmed yet.
//!
//! A message with an `id` is confirmed once the server answers `2` STORED (durably written), or
//! later sends the receipt `7` DELIVERED (the recipient acknowledged it) or `8` STORED_LATER (it
//! had been relayed, the recipient went away before acknowledging it, and it is stored now). An
//! error answer is final too: the server did not take the message and will not take it later
//! either. Everything else, in particular `3` RELAYED, leaves the message unconfirmed, because a
//! relayed message lives only in the server's memory and in the recipient's connection until the
//! recipient acknowledges it.
//!
//! After a lost connection the application moves the outbox to the new connection and sends
//! every unconfirmed message again, byte for byte and in the original order (see
//! [`crate::Client::resend`]). The recipient drops a copy it already has by its id, so sending
//! twice is harmless, whereas not sending again could lose the message.
//!
//! This module does no I/O, which is why it is tested on its own.

use std::collections::{BTreeMap, HashMap};

use flexim_protocol::Message;
use flexim_protocol::keys::hex;
use flexim_protocol::status;

use crate::error::ClientError;

/// How many random bytes a message id has: 128 bits make a collision between two messages of
/// one sender, or an id guessed by someone else, negligible.
const ID_BYTES: usize = 16;

/// A fresh message id: 16 random bytes from the operating system, as 32 lower-case hex digits.
/// It passes [`flexim_protocol::status::validate_id`].
pub fn new_message_id() -> Result<String, ClientError> {
    let mut bytes = [0u8; ID_BYTES];
    getrandom::fill(&mut bytes).map_err(ClientError::Random)?;
    Ok(hex(&bytes))
}

/// Whether a Status about a message (an answer or a receipt carrying its id) settles that
/// message for good, so that it must not be sent again: `2` STORED, `7` DELIVERED,
/// `8` STORED_LATER, or any error.
pub fn is_final(code: i8) -> bool {
    matches!(
        code,
        status::STORED | status::DELIVERED | status::STORED_LATER
    ) || status::is_error(code)
}

/// Sent messages awaiting confirmation, in the order they were sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    /// The messages by their place in the send order, so that iteration follows it.
    messages: BTreeMap<u64, Message>,
    /// Each message's place in `messages`, by id, so that confirming one is cheap.
    places: HashMap<String, u64>,
    /// The place the next message gets; it only grows, so later messages sort after earlier ones.
    next_place: u64,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Keeps `message` until it is confirmed. Returns whether it is kept: a message without an
    /// `id` is not, because nothing can ever confirm it (the server sends no receipts for it),
    /// and a message whose id is already here keeps its first place rather than being sent
    /// twice by a later resend.
    pub fn push(&mut self, message: Message) -> bool {
        let Some(id) = message.id.clone() else {
            return false;
        };
        if self.places.contains_key(&id) {
            return false;
        }
        let place = self.next_place;
        self.next_place += 1;
        self.places.insert(id, place);
        self.messages.insert(place, message);
        true
    }

    /// Forgets the message with `id` because it was confirmed (or finally refused). Returns
    /// whether it was here; receipts for messages sent by an earlier process, or confirmed
    /// already, are not.
    pub fn confirm(&mut self, id: &str) -> bool {
        match self.places.remove(id) {
            Some(place) => self.messages.remove(&place).is_some(),
            None => false,
        }
    }

    /// Applies a Status about the message `id`: a final one ([`is_final`]) confirms it, any
    /// other (`3` RELAYED) leaves it waiting. Returns whether the message was removed.
    pub fn settle(&mut self, id: &str, code: i8) -> bool {
        is_final(code) && self.confirm(id)
    }

    /// The unconfirmed messages, oldest first.
    pub fn unconfirmed(&self) -> impl Iterator<Item = &Message> {
        self.messages.values()
    }

    /// The unconfirmed message with `id`, if it is here.
    pub fn get(&self, id: &str) -> Option<&Message> {
        self.places.get(id).and_then(|p| self.messages.get(p))
    }

    /// Whether the message with `id` is still unconfirmed.
    pub fn contains(&self, id: &str) -> bool {
        self.places.contains_key(id)
    }

    /// How many messages are unconfirmed.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether every message sent has been confirmed.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

impl IntoIterator for Outbox {
    type Item = Message;
    type IntoIter = std::collections::btree_map::IntoValues<u64, Message>;

    /// The unconfirmed messages, oldest first.
    fn into_iter(self) -> Self::IntoIter {
        self.messages.into_values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexim_protocol::status::validate_id;

    fn message(id: Option<&str>, text: &str) -> Message {
        Message {
            to: "bob".into(),
            from: "alice".into(),
            flags: vec![],
            date: 1,
            msg: text.into(),
            id: id.map(str::to_owned),
        }
    }

    fn texts(outbox: &Outbox) -> Vec<&str> {
        outbox.unconfirmed().map(|m| m.msg.as_str()).collect()
    }

    #[test]
    fn ids_are_32_lower_case_hex_digits_and_differ() {
        let a = new_message_id().unwrap();
        let b = new_message_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_eq!(validate_id(&a), Ok(()));
        assert_ne!(a, b);
    }

    #[test]
    fn keeps_messages_in_send_order_until_confirmed() {
        let mut outbox = Outbox::new();
        assert!(outbox.is_empty());
        assert!(outbox.push(message(Some("a"), "first")));
        assert!(outbox.push(message(Some("b"), "second")));
        assert!(outbox.push(message(Some("c"), "third")));
        assert_eq!(outbox.len(), 3);
        assert_eq!(texts(&outbox), ["first", "second", "third"]);

        assert!(outbox.confirm("b"));
        assert!(!outbox.confirm("b"), "confirming twice finds nothing");
        assert!(!outbox.confirm("unknown"));
        assert!(!outbox.contains("b") && outbox.contains("a") && outbox.contains("c"));
        assert_eq!(texts(&outbox), ["first", "third"]);
        assert_eq!(outbox.get("c").unwrap().msg, "third");

        // A message pushed after a confirmation still goes last.
        assert!(outbox.push(message(Some("d"), "fourth")));
        assert_eq!(texts(&outbox), ["first", "third", "fourth"]);
        let all: Vec<_> = outbox.clone().into_iter().map(|m| m.msg).collect();
        assert_eq!(all, ["first", "third", "fourth"]);

        for id in ["a", "c", "d"] {
            assert!(outbox.confirm(id));
        }
        assert!(outbox.is_empty());
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn refuses_messages_without_id_and_repeated_ids() {
        let mut outbox = Outbox::new();
        assert!(!outbox.push(message(None, "no id")));
        assert!(outbox.is_empty());
        assert!(outbox.push(message(Some("x"), "original")));
        assert!(!outbox.push(message(Some("x"), "copy")));
        assert_eq!(texts(&outbox), ["original"]);
    }

    #[test]
    fn only_final_statuses_settle_a_message() {
        let mut outbox = Outbox::new();
        for id in ["s", "r", "d", "l", "e"] {
            outbox.push(message(Some(id), id));
        }
        assert!(
            !outbox.settle("r", status::RELAYED),
            "relayed is not confirmed"
        );
        assert!(!outbox.settle("r", status::OK));
        assert!(outbox.settle("s", status::STORED));
        assert!(outbox.settle("d", status::DELIVERED));
        assert!(outbox.settle("l", status::STORED_LATER));
        assert!(outbox.settle("e", status::QUEUE_FULL));
        assert_eq!(texts(&outbox), ["r"]);
        assert!(is_final(status::SPOOF) && !is_final(status::PRESENCE_OFFLINE));
    }
}
