//! The engine's rules for contacts' keys (docs/PROTOCOL.md §8.2, rule 12): the server's word
//! about an alias compared with its pin, changes reported once and refused until accepted, and
//! the pins saved and restored. What they keep is in `contacts.rs`.

use flexim_protocol::keys::{alias_key, validate_alias};
use flexim_protocol::{PublicKey, User};

use crate::contacts::{ContactPins, KeyChange};
use crate::engine::{Engine, EngineError};
use crate::events::Event;

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
