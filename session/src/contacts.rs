//! Contacts' keys pinned on first use (docs/PROTOCOL.md §8.2, rule 12).
//!
//! The server vouches for which key an alias belongs to, and a server that lies (or someone in
//! the middle of an unprotected connection) can hand out its own key and read what is sealed
//! to it. So the engine remembers the key each alias had the first time the server named it
//! (a GETUSER, ROSTER or SEARCH answer, a sender looked up, a message sealed to an alias) and
//! compares every later answer with it, as ssh does with host keys:
//!
//! - an alias the server names for the pinned key is fine;
//! - an alias the server names for another key is a [`KeyChange`]: it is reported once
//!   ([`crate::Event::ContactKeyChanged`]), left out of the users the engine reports (so no
//!   client shows the new key under the alias), and nothing is sealed to the alias until the
//!   user accepts the new key ([`Engine::accept_contact_key`]);
//! - messages are attributed by their sender's key, and named only by an alias pinned to that
//!   key ([`crate::Incoming::name`]).
//!
//! The application saves the pins ([`Engine::contact_pins`], [`ContactPins::to_text`]) and
//! gives them back at start ([`Engine::restore_contact_pins`]), as it does the outbox. The rules
//! the engine applies with them are in `pinning.rs`; this module holds what they keep.
//!
//! [`Engine::accept_contact_key`]: crate::Engine::accept_contact_key
//! [`Engine::contact_pins`]: crate::Engine::contact_pins
//! [`Engine::restore_contact_pins`]: crate::Engine::restore_contact_pins

use std::collections::{BTreeMap, HashMap};

use flexim_protocol::PublicKey;
use flexim_protocol::keys::{alias_key, validate_alias};

use crate::pinfile::{self, PinFileError, PinLine};

/// The first line of the saved form, saying what it is.
const HEADER: &str = "flexim contact pins: ALIAS KEY, one line per alias, learnt on first use.";

/// The pinned key of each alias, by the alias's case-insensitive form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactPins {
    /// Alias (as [`alias_key`] writes it) to the alias as first seen and its key.
    pub(crate) pins: BTreeMap<String, (String, PublicKey)>,
}

impl ContactPins {
    /// No pins.
    pub fn new() -> ContactPins {
        ContactPins::default()
    }

    /// The key pinned for `alias` (any case).
    pub fn get(&self, alias: &str) -> Option<&PublicKey> {
        self.pins.get(&alias_key(alias)).map(|(_, key)| key)
    }

    /// Pins `key` for `alias`, replacing any earlier pin; returns the key pinned before.
    pub fn insert(&mut self, alias: &str, key: PublicKey) -> Option<PublicKey> {
        self.pins
            .insert(alias_key(alias), (alias.to_string(), key))
            .map(|(_, old)| old)
    }

    /// The pins as (alias, key), in alias order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.pins.values().map(|(alias, key)| (alias.as_str(), key))
    }

    /// How many aliases are pinned.
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// The first alias (in alias order) pinned to `key`.
    pub fn alias_of(&self, key: &PublicKey) -> Option<&str> {
        self.iter().find(|(_, k)| *k == key).map(|(alias, _)| alias)
    }

    /// The saved form: `ALIAS KEY` lines after a comment ([`crate::pinfile`]).
    pub fn to_text(&self) -> String {
        pinfile::render(HEADER, &self.lines())
    }

    /// The pins as pin lines of one name each, in alias order.
    pub fn lines(&self) -> Vec<PinLine> {
        self.iter()
            .map(|(alias, key)| PinLine {
                names: vec![alias.to_string()],
                key: *key,
            })
            .collect()
    }

    /// Reads the saved form. A line that is not an alias and a key, or an alias given twice
    /// (in any case), is refused rather than guessed at.
    pub fn from_text(text: &str) -> Result<ContactPins, PinFileError> {
        ContactPins::from_lines(pinfile::parse(text, 1)?)
    }

    /// Pins from lines whose last name is the alias (the command line's file puts the server's
    /// key before it), refusing invalid and repeated aliases.
    pub fn from_lines(
        lines: impl IntoIterator<Item = (usize, PinLine)>,
    ) -> Result<ContactPins, PinFileError> {
        let mut pins = ContactPins::new();
        for (number, line) in lines {
            let alias = line.names.last().map(String::as_str).unwrap_or("");
            validate_alias(alias).map_err(|e| PinFileError::at(number, e.to_string()))?;
            if pins.insert(alias, line.key).is_some() {
                return Err(PinFileError::at(
                    number,
                    format!("the alias {alias} is pinned twice"),
                ));
            }
        }
        Ok(pins)
    }
}

/// The server names `presented` for an alias whose pinned key is `pinned`. Either the contact
/// made a new key (a new device, a lost key file), or someone substitutes their own key; only
/// the user can tell, by comparing fingerprints out of band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The alias, as it was pinned.
    pub alias: String,
    /// The key pinned for it on first use (or accepted since).
    pub pinned: PublicKey,
    /// The key the server names for it now.
    pub presented: PublicKey,
}

impl std::fmt::Display for KeyChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server says {} is the key {}, but {} was pinned for it",
            self.alias,
            self.presented.fingerprint(),
            self.pinned.fingerprint()
        )
    }
}

/// What the engine keeps about contacts' keys.
#[derive(Debug, Default)]
pub(crate) struct ContactBook {
    /// The pins, saved by the application.
    pub(crate) pins: ContactPins,
    /// The aliases the server now names another key for, by case-insensitive alias, until the
    /// user accepts the new key or the server names the pinned one again. Not saved: the next
    /// answer about the alias finds the change again.
    pub(crate) changes: HashMap<String, KeyChange>,
    /// Whether the pins changed since the application last saved them.
    pub(crate) changed: bool,
}
