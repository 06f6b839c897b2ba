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
//! gives them back at start ([`Engine::restore_contact_pins`]), as it does the outbox.

use std::collections::{BTreeMap, HashMap};

use flexim_protocol::keys::{alias_key, validate_alias};
use flexim_protocol::{PublicKey, User};

use crate::engine::{Engine, EngineError};
use crate::events::Event;
use crate::pinfile::{self, PinFileError, PinLine};

/// The first line of the saved form, saying what it is.
const HEADER: &str = "flexim contact pins: ALIAS KEY, one line per alias, learnt on first use.";

/// The pinned key of each alias, by the alias's case-insensitive form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactPins {
    /// Alias (as [`alias_key`] writes it) to the alias as first seen and its key.
    pins: BTreeMap<String, (String, PublicKey)>,
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
    pins: ContactPins,
    /// The aliases the server now names another key for, by case-insensitive alias, until the
    /// user accepts the new key or the server names the pinned one again. Not saved: the next
    /// answer about the alias finds the change again.
    changes: HashMap<String, KeyChange>,
    /// Whether the pins changed since the application last saved them.
    changed: bool,
}

impl Engine {
    /// Compares the server's word that `alias` is `key` with the pin: pins it on first use,
    /// reports a change once. True if the alias may be shown for the key (pinned to it now).
    pub(crate) fn vouch(&mut self, alias: &str, key: PublicKey) -> bool {
        // This user's own aliases are the server's to report, not a contact's to pin; and an
        // alias the rules do not allow is nobody's (it could not even be written down).
        if key == self.me || validate_alias(alias).is_err() {
            return key == self.me;
        }
        let name = alias_key(alias);
        let book = &mut self.contacts;
        match book.pins.get(alias).copied() {
            None => {
                book.pins.insert(alias, key);
                book.changed = true;
                true
            }
            Some(pinned) if pinned == key => {
                book.changes.remove(&name);
                true
            }
            Some(pinned) => {
                let change = KeyChange {
                    alias: book.pins.pins[&name].0.clone(),
                    pinned,
                    presented: key,
                };
                if book.changes.get(&name) != Some(&change) {
                    book.changes.insert(name, change.clone());
                    self.emit(Event::ContactKeyChanged(change));
                }
                false
            }
        }
    }

    /// `user` as the engine reports it: with only the aliases vouched for (pinned to its key),
    /// so that no client shows a key under an alias pinned to another one.
    pub(crate) fn vouched(&mut self, user: &User) -> User {
        let mut vouched = user.clone();
        vouched.aliases.retain(|alias| self.vouch(alias, user.key));
        vouched
    }

    /// The key to seal to for `who`: 64 hex digits are the key itself; an alias is the key the
    /// server last named for it (since this engine started), if that is the pinned key (or nothing was pinned
    /// yet). [`EngineError::UnknownContact`] asks the driver to look the alias up first (so the
    /// server's current word is compared with the pin); [`EngineError::ContactKeyChanged`]
    /// refuses an alias whose key changed until the user accepts it.
    pub fn contact(&self, who: &str) -> Result<PublicKey, EngineError> {
        if let Some(key) = PublicKey::from_hex(who) {
            return Ok(key);
        }
        let name = alias_key(who);
        if let Some(change) = self.contacts.changes.get(&name) {
            return Err(EngineError::ContactKeyChanged(change.clone()));
        }
        let said = *self
            .aliases
            .get(&name)
            .ok_or_else(|| EngineError::UnknownContact(who.to_string()))?;
        match self.contacts.pins.get(who) {
            Some(pinned) if *pinned != said && said != self.me => {
                Err(EngineError::ContactKeyChanged(KeyChange {
                    alias: who.to_string(),
                    pinned: *pinned,
                    presented: said,
                }))
            }
            _ => Ok(said),
        }
    }

    /// [`Engine::send_text`] to `who`, a key or an alias checked against its pin by
    /// [`Engine::contact`]; an alias sealed to for the first time is pinned.
    pub fn send_text_to(
        &mut self,
        who: &str,
        text: &str,
        flags: &[String],
        date: i64,
    ) -> Result<crate::Sending, EngineError> {
        let key = self.contact(who)?;
        if PublicKey::from_hex(who).is_none() {
            self.vouch(who, key);
        }
        self.send_text(&key, text, flags, date)
    }

    /// The alias pinned to `key`, if any: the name a client may show for it.
    pub fn contact_name(&self, key: &PublicKey) -> Option<&str> {
        self.contacts.pins.alias_of(key)
    }

    /// The name of a message's sender: the alias in its `from` if that alias is pinned to the
    /// sender's key, else any alias pinned to the key, else none.
    pub(crate) fn sender_name(&self, sender: &PublicKey, from: &str) -> Option<String> {
        match self.contacts.pins.get(from) {
            Some(key) if key == sender => Some(from.to_string()),
            _ => self.contact_name(sender).map(str::to_string),
        }
    }

    /// The change waiting for the user's decision about `alias` (any case), if any.
    pub fn key_change(&self, alias: &str) -> Option<&KeyChange> {
        self.contacts.changes.get(&alias_key(alias))
    }

    /// Every change waiting for the user's decision, in no particular order.
    pub fn key_changes(&self) -> impl Iterator<Item = &KeyChange> {
        self.contacts.changes.values()
    }

    /// The user accepts the key the server now names for `alias`: it becomes the pin, and the
    /// alias may be sealed to (and shown for that key) again. Returns the new pinned key, or
    /// `None` when no change waits for `alias`.
    pub fn accept_contact_key(&mut self, alias: &str) -> Option<PublicKey> {
        let change = self.contacts.changes.remove(&alias_key(alias))?;
        self.contacts.pins.insert(&change.alias, change.presented);
        self.contacts.changed = true;
        if let Some(user) = self.users.get_mut(&change.presented)
            && !user
                .aliases
                .iter()
                .any(|a| alias_key(a) == alias_key(alias))
        {
            user.aliases.push(change.alias.clone());
        }
        Some(change.presented)
    }

    /// The pins, for the application to save ([`ContactPins::to_text`]).
    pub fn contact_pins(&self) -> &ContactPins {
        &self.contacts.pins
    }

    /// Takes back saved pins. They are older than anything this engine learnt, so they win:
    /// an alias this engine pinned meanwhile to another key (the server named it during the
    /// login) becomes a change for the user to decide, as if the pin had been there first.
    pub fn restore_contact_pins(&mut self, saved: ContactPins) {
        for (name, (alias, key)) in saved.pins {
            self.contacts.pins.insert(&alias, key);
            let Some(&said) = self.aliases.get(&name) else {
                continue;
            };
            if said != key && !self.vouch(&alias, said) {
                // Shown under the alias before the saved pin arrived: no longer.
                if let Some(user) = self.users.get_mut(&said) {
                    user.aliases.retain(|a| alias_key(a) != name);
                }
            }
        }
    }

    /// Whether [`Engine::contact_pins`] changed since the last call (a pin learnt or accepted).
    pub fn take_pins_changed(&mut self) -> bool {
        std::mem::take(&mut self.contacts.changed)
    }
}
