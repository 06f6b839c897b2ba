//! Receiving: senders resolved in order, boxes opened, copies dropped, messages acknowledged.
//!
//! A message whose `from` is an alias needs its sender's key to open, so the engine asks the
//! server (GETUSER) and holds that message and every later one until the answer comes: the
//! application sees messages in the order they arrived. A message that opened is reported once
//! ([`crate::dedupe`]); one that will never open (its box is forged, its sender does not exist)
//! is reported once too and acknowledged, since the server would otherwise deliver it at every
//! login. A failure that may pass (the server's storage failed during the lookup, the
//! connection dropped) is not acknowledged: the message comes again and may open then.

use flexim_protocol::e2e::{self, ConversationKey, E2eError, Envelope};
use flexim_protocol::keys::alias_key;
use flexim_protocol::status::{self, cmd, validate_id};
use flexim_protocol::{Command, Message, PublicKey, User};

use crate::dedupe::{message_key, unopened_key};
use crate::engine::Engine;
use crate::events::{Event, Incoming, Refusal};
use crate::requests::{Lookup, Request, Unresolved};

/// Why a box did not open: the sender if known, the reason, and whether it is final.
type Unopened = (Option<PublicKey>, String, bool);

impl Engine {
    /// Opens the queued messages in order, stopping at one whose sender alias is still being
    /// looked up (and starting that lookup if needed).
    pub(crate) fn drain_inbox(&mut self) {
        while let Some(front) = self.inbox.front() {
            let sender = match PublicKey::from_hex(&front.from) {
                Some(key) => Ok(key),
                None => {
                    let name = alias_key(&front.from);
                    if let Some(key) = self.aliases.get(&name) {
                        Ok(*key)
                    } else if let Some(unresolved) = self.failed_aliases.get(&name) {
                        Err(unresolved.clone())
                    } else {
                        if self.is_ready() && !self.looking_up.contains(&name) {
                            let query = front.from.clone();
                            self.looking_up.insert(name);
                            let request = Request::GetUser {
                                query: query.clone(),
                                purpose: Lookup::Sender,
                            };
                            // Only a frame too large fails, which an alias rules out.
                            let _ = self.request(Command::new(cmd::GETUSER, &[&query]), request);
                        }
                        return;
                    }
                }
            };
            if let Some(message) = self.inbox.pop_front() {
                self.open_message(message, sender);
            }
        }
        // Every message that waited for a failed lookup has been reported; a later message
        // from the same alias deserves a fresh lookup (the alias may exist by then).
        self.failed_aliases.clear();
    }

    /// The answer to a sender lookup: learn the key, or remember why not; then go on opening.
    pub(crate) fn on_sender_found(&mut self, query: &str, found: Result<User, Refusal>) {
        let name = alias_key(query);
        self.looking_up.remove(&name);
        match found {
            Ok(user) => {
                self.learn(&user);
                self.vouch(query, user.key);
                self.aliases.insert(name, user.key);
            }
            Err(refusal) => {
                let for_good =
                    matches!(refusal.status, status::NO_SUCH_USER | status::BAD_ARGUMENT);
                let reason = format!("cannot resolve the sender: {refusal}");
                self.failed_aliases
                    .insert(name, Unresolved { reason, for_good });
            }
        }
        self.drain_inbox();
    }

    /// The conversation key with `peer`, derived on first use.
    pub(crate) fn conversation_key(
        &mut self,
        peer: &PublicKey,
    ) -> Result<ConversationKey, E2eError> {
        if let Some(key) = self.keys.get(peer) {
            return Ok(key.clone());
        }
        let key = ConversationKey::derive(&self.secret, peer)?;
        self.keys.insert(*peer, key.clone());
        Ok(key)
    }

    /// Opens one message whose sender is resolved (or not) and reports it, unless it is a copy.
    fn open_message(&mut self, message: Message, sender: Result<PublicKey, Unresolved>) {
        // An id the protocol does not allow was not accepted by the server and cannot be
        // acknowledged.
        let id = message.id.clone().filter(|id| validate_id(id).is_ok());
        let opened = match sender {
            Ok(sender) => self.open_box(&message, sender),
            Err(Unresolved { reason, for_good }) => Err((None, reason, for_good)),
        };
        match opened {
            Ok(text) => self.opened(message, id, text),
            Err(unopened) => self.unopened(message, id, unopened),
        }
    }

    /// Reports a message that opened, or acknowledges a copy of one reported before.
    fn opened(
        &mut self,
        message: Message,
        id: Option<String>,
        (sender, text): (PublicKey, String),
    ) {
        let key = message_key(&sender, message.date, &message.msg);
        if !self.dedupe.insert(key.clone()) {
            // A copy. Processed already unless the application has not acknowledged the first
            // copy yet, whose ACK will cover this one.
            if let Some(id) = id
                && !self.unacked.contains(&id)
            {
                self.queue_ack(id);
            }
            return;
        }
        self.storage_changed = true;
        if let Some(id) = &id {
            self.unacked.insert(id.clone());
        }
        let name = self.sender_name(&sender, &message.from);
        let request = self.strangers.contains(&sender);
        if self.config.pairs && self.has_pair(&sender) {
            // A server that withholds KeyPackages could force the weaker scheme: it is seen.
            self.notice(format!(
                "a message from {sender} came sealed with the static-key box, although you share \
                 an MLS group: it is not forward secret"
            ));
        }
        self.emit(Event::Message(Incoming {
            forward_secret: false,
            request,
            from: sender,
            name,
            from_text: message.from,
            to: message.to,
            date: message.date,
            flags: message.flags,
            text,
            id,
            key,
        }));
    }

    /// Reports a message that did not open; one that never will is acknowledged and reported
    /// only the first time.
    fn unopened(&mut self, message: Message, id: Option<String>, unopened: Unopened) {
        let (sender, reason, for_good) = unopened;
        if let Some(id) = id
            && for_good
        {
            self.queue_ack(id.clone());
            if !self.dedupe.insert(unopened_key(&message.from, &id)) {
                return;
            }
            self.storage_changed = true;
        }
        self.emit(Event::Undecryptable {
            from: message.from,
            sender,
            date: message.date,
            reason,
        });
    }

    /// Opens the box of a message from `sender`: the text, or why it does not open (which is
    /// final: the box is what it is).
    fn open_box(
        &mut self,
        message: &Message,
        sender: PublicKey,
    ) -> Result<(PublicKey, String), Unopened> {
        let key = self
            .conversation_key(&sender)
            .map_err(|e| (Some(sender), e.to_string(), true))?;
        // The server delivers to this session only what is addressed to this user, whatever
        // form `to` takes, so the recipient bound into the box is always this user's key; a
        // message sealed for another key does not open (docs/PROTOCOL.md §9.5).
        let envelope = Envelope {
            sender: &sender,
            recipient: &self.me,
            date: message.date,
            flags: &message.flags,
        };
        let text = e2e::open(&key, &envelope, &message.msg)
            .map_err(|e| (Some(sender), e.to_string(), true))?;
        Ok((sender, text))
    }

    /// The application has processed the message with `id` (shown or saved it): it is
    /// acknowledged with the next [`Engine::flush_acks`], and the server forgets it then.
    pub fn acknowledge(&mut self, id: &str) {
        self.unacked.remove(id);
        self.forget_opened(id);
        self.queue_ack(id.to_string());
    }

    /// Puts `id` on the next ACK, once.
    pub(crate) fn queue_ack(&mut self, id: String) {
        if !self.to_ack.contains(&id) {
            self.to_ack.push(id);
        }
    }

    /// Whether acknowledgements wait for [`Engine::flush_acks`].
    pub fn has_acks(&self) -> bool {
        !self.to_ack.is_empty()
    }

    /// Sends the acknowledgements queued since the last call: one ACK, or a few of at most
    /// [`crate::ACK_BATCH`] ids each; returns their requests. Does nothing when not logged in
    /// (the server then delivers those messages again, and their copies are acknowledged).
    pub fn flush_acks(&mut self) -> Vec<crate::RequestId> {
        if !self.is_ready() || self.to_ack.is_empty() {
            return Vec::new();
        }
        let ids = std::mem::take(&mut self.to_ack);
        ids.chunks(crate::ACK_BATCH)
            .filter_map(|chunk| {
                let command = Command {
                    cmd: cmd::ACK.to_string(),
                    payload: chunk.to_vec(),
                };
                self.request(command, Request::Ack { count: chunk.len() })
                    .ok()
            })
            .collect()
    }
}
