//! Requests and their answers: the commands, sending messages, and what each answer means.

use flexim_protocol::e2e::NONCE_LEN;
use flexim_protocol::e2e::{self, Envelope};
use flexim_protocol::keys::alias_key;
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Command, Datum, Message, PublicKey, Status, User};

use crate::delivery::{Delivery, is_final};
use crate::engine::{Engine, EngineError, Phase};
use crate::events::{Answer, Event, Refusal};
use crate::outbox::{Outbox, Outgoing, new_id};
use crate::requests::{Lookup, Request, RequestId};

/// A message handed to [`Engine::send_text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sending {
    /// Its id: the answer and the receipts about it carry it.
    pub id: String,
    /// The request its answer comes for, when it went out at once (logged in); otherwise it
    /// goes out at the next login.
    pub request: Option<RequestId>,
}

/// What an answer says when it is not the datum the request wants: an error Status refuses,
/// anything else is garbled.
fn refused(answer: &Result<Datum, String>) -> Refusal {
    match answer {
        Ok(Datum::Status(s)) if status::is_error(s.status) => Refusal::of(s),
        Ok(Datum::Status(s)) => Refusal::garbled(format!(
            "unexpected answer {} ({}): {}",
            status::name(s.status),
            s.status,
            s.payload
        )),
        Ok(other) => Refusal::garbled(format!("unexpected {} answer", other.kind().name())),
        Err(reason) => Refusal::garbled(reason.clone()),
    }
}

/// A Status answer, or why not.
fn status_of(answer: Result<Datum, String>) -> Result<Status, Refusal> {
    match answer {
        Ok(Datum::Status(s)) if !status::is_error(s.status) => Ok(s),
        other => Err(refused(&other)),
    }
}

/// A Roster answer, or why not.
fn users_of(answer: Result<Datum, String>) -> Result<Vec<User>, Refusal> {
    match answer {
        Ok(Datum::Roster(roster)) => Ok(roster.users),
        other => Err(refused(&other)),
    }
}

impl Engine {
    /// Sends a command and records what its answer is for.
    pub(crate) fn request(
        &mut self,
        command: Command,
        request: Request,
    ) -> Result<RequestId, EngineError> {
        self.request_datum(&Datum::Command(command), request)
    }

    /// Sends a datum that gets one answer (a Command, a Request, an Acknowledge) and records
    /// what its answer is for.
    pub(crate) fn request_datum(
        &mut self,
        datum: &Datum,
        request: Request,
    ) -> Result<RequestId, EngineError> {
        if !self.is_ready() {
            return Err(EngineError::NotConnected);
        }
        self.transmit(datum)?;
        Ok(self.expect_answer(request))
    }

    /// Numbers a request whose datum was just queued and waits for its answer.
    fn expect_answer(&mut self, request: Request) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.pending.push(id, request);
        id
    }

    /// REGISTER: claims `alias` for this key ([`Answer::Register`]).
    pub fn register(&mut self, alias: &str) -> Result<RequestId, EngineError> {
        let request = Request::Register {
            alias: alias.to_string(),
        };
        self.request(Command::new(cmd::REGISTER, &[alias]), request)
    }

    /// ROSTER: the users the server lists for this user ([`Answer::Roster`]).
    pub fn roster(&mut self) -> Result<RequestId, EngineError> {
        self.request(Command::new(cmd::ROSTER, &[]), Request::Roster)
    }

    /// Whether a ROSTER waits for its answer (so that a burst of presence notices asks once).
    pub fn roster_pending(&self) -> bool {
        self.pending.any(|r| matches!(r, Request::Roster))
    }

    /// SEARCH: the users whose alias contains `text` ([`Answer::Search`]).
    pub fn search(&mut self, text: &str) -> Result<RequestId, EngineError> {
        let request = Request::Search {
            text: text.to_string(),
        };
        self.request(Command::new(cmd::SEARCH, &[text]), request)
    }

    /// GETUSER: looks up a key or an alias ([`Answer::User`]); the answer is remembered.
    pub fn get_user(&mut self, query: &str, purpose: Lookup) -> Result<RequestId, EngineError> {
        let request = Request::GetUser {
            query: query.to_string(),
            purpose,
        };
        self.request(Command::new(cmd::GETUSER, &[query]), request)
    }

    /// GHOST: makes this connection the key's active session ([`Answer::Ghost`]).
    pub fn ghost(&mut self) -> Result<RequestId, EngineError> {
        self.request(Command::new(cmd::GHOST, &[]), Request::Ghost)
    }

    /// OFFLINES: asks for the stored messages not delivered yet ([`Answer::Offlines`]).
    pub fn offlines(&mut self) -> Result<RequestId, EngineError> {
        self.request(Command::new(cmd::OFFLINES, &[]), Request::Offlines)
    }

    /// Builds the Message carrying `text` sealed for `peer`, dated `date` (Unix seconds), with
    /// `id`: `to` is the peer's key and `from` this user's key, both in hex, so the recipient
    /// needs no lookup to open it. Sending it is up to the caller; [`Engine::send_text`] does
    /// both and keeps it until it is confirmed.
    pub fn seal(
        &mut self,
        peer: &PublicKey,
        text: &str,
        flags: &[String],
        date: i64,
        id: Option<String>,
    ) -> Result<Message, EngineError> {
        let key = self.conversation_key(peer)?;
        let mut nonce = [0u8; NONCE_LEN];
        (self.random)(&mut nonce);
        let envelope = Envelope {
            sender: &self.me,
            recipient: peer,
            date,
            flags,
        };
        let msg = e2e::seal(&key, &envelope, text, nonce)?;
        Ok(Message {
            to: peer.to_hex(),
            from: self.me.to_hex(),
            flags: flags.to_vec(),
            date,
            msg,
            id,
            ..Default::default()
        })
    }

    /// Seals `text` for `peer` under a fresh id, keeps its frame in the outbox until it is
    /// confirmed, and sends it now if logged in (else at the next login). The answer comes as
    /// [`Answer::Sent`], later news as [`Event::Receipt`], both with the returned id.
    pub fn send_text(
        &mut self,
        peer: &PublicKey,
        text: &str,
        flags: &[String],
        date: i64,
    ) -> Result<Sending, EngineError> {
        if self.pairs_with(peer) {
            return self.send_pair(*peer, text, flags, date);
        }
        let id = new_id(&mut *self.random);
        let message = self.seal(peer, text, flags, date, Some(id.clone()))?;
        let frame = Datum::Message(message).to_frame()?;
        self.send_kept(id, crate::outbox::Addressee::User(*peer), frame)
    }

    /// Keeps a sealed message's `frame` in the outbox until it is confirmed, and sends it now
    /// if logged in (else the next login does).
    pub(crate) fn send_kept(
        &mut self,
        id: String,
        to: crate::outbox::Addressee,
        frame: Vec<u8>,
    ) -> Result<Sending, EngineError> {
        self.outbox.push(Outgoing {
            id: id.clone(),
            to,
            frame: frame.clone(),
        });
        self.storage_changed = true;
        let request = match self.is_ready() {
            true => {
                self.transmit_frame(frame)?;
                Some(self.expect_answer(Request::Message { id: id.clone() }))
            }
            false => None,
        };
        Ok(Sending { id, request })
    }

    /// Adds unconfirmed messages (of an earlier engine, or saved) after those already waiting
    /// and, when logged in, sends each of them now, byte for byte and in order; returns the
    /// request of each message sent. Call it before sending anything new, so that recipients
    /// get the messages in the order they were written.
    pub fn resend(&mut self, entries: Outbox) -> Vec<(String, RequestId)> {
        let mut sent = Vec::new();
        for entry in entries {
            let id = entry.id.clone();
            let frame = entry.frame.clone();
            self.outbox.push(entry);
            self.storage_changed = true;
            // A frame that fits no record (none does that this engine sealed) waits.
            if self.is_ready() && self.transmit_frame(frame).is_ok() {
                sent.push((id.clone(), self.expect_answer(Request::Message { id })));
            }
        }
        sent
    }

    /// Sends every unconfirmed message again, byte for byte, oldest first: at login, before
    /// anything else goes out on the new connection.
    pub(crate) fn resend_outbox(&mut self) {
        let waiting: Vec<(String, Vec<u8>)> = self
            .outbox
            .iter()
            .map(|e| (e.id.clone(), e.frame.clone()))
            .collect();
        for (id, frame) in waiting {
            if self.transmit_frame(frame).is_ok() {
                self.expect_answer(Request::Message { id });
            }
        }
    }

    /// Puts an answer to use and reports it.
    pub(crate) fn on_answer(
        &mut self,
        request_id: RequestId,
        request: Request,
        answer: Result<Datum, String>,
    ) {
        let answer = match request {
            Request::Register { alias } => self.on_register(alias, status_of(answer)),
            // Users are reported with the aliases pinned to their keys only (`contacts.rs`).
            Request::Roster => Answer::Roster(self.learn_all(users_of(answer))),
            Request::Search { text } => Answer::Search {
                text,
                result: self.learn_all(users_of(answer)),
            },
            Request::GetUser { query, purpose } => {
                let result = match answer {
                    Ok(Datum::User(user)) => Ok(user),
                    other => Err(refused(&other)),
                };
                if purpose == Lookup::Sender {
                    return self.on_sender_found(&query, result);
                }
                // The user's aliases first, so that an alias is pinned as registered (its
                // case), then the alias asked about, which a server might leave out of them.
                let result = result.map(|user| {
                    let vouched = self.learn(&user);
                    if PublicKey::from_hex(&query).is_none() {
                        self.vouch(&query, user.key);
                        self.aliases.insert(alias_key(&query), user.key);
                    }
                    vouched
                });
                Answer::User {
                    query,
                    purpose,
                    result,
                }
            }
            Request::Message { id } => self.on_message_answer(id, answer),
            Request::Ghost => Answer::Ghost(status_of(answer)),
            Request::Consent { action, who } => Answer::Consent {
                action,
                who,
                result: status_of(answer),
            },
            Request::Requests => Answer::Requests(self.learn_all(users_of(answer))),
            Request::Offlines => Answer::Offlines(status_of(answer)),
            Request::Ack { count } => Answer::Ack {
                count,
                result: status_of(answer),
            },
            room => match self.on_room_answer(request_id, room, answer) {
                Some((request, answer)) => {
                    return self.emit(Event::Answer { request, answer });
                }
                None => return,
            },
        };
        // A held 1:1 message's answer is the one its driver waits for (`rooms/pairs.rs`).
        let request = self.stood_in(request_id);
        self.emit(Event::Answer { request, answer });
    }

    /// Learns the users of a Roster answer, and returns them as the engine reports them.
    fn learn_all(&mut self, users: Result<Vec<User>, Refusal>) -> Result<Vec<User>, Refusal> {
        users.map(|users| users.iter().map(|u| self.learn(u)).collect())
    }

    /// REGISTER's answer: the alias is this user's (and the one to claim at every login), or
    /// it is refused; an alias refused for good is not asked for again.
    fn on_register(&mut self, alias: String, result: Result<Status, Refusal>) -> Answer {
        match &result {
            Ok(_) => {
                self.aliases.insert(alias_key(&alias), self.me);
                if let Phase::Ready { me, .. } = &mut self.phase
                    && !me.aliases.iter().any(|a| alias_key(a) == alias_key(&alias))
                {
                    me.aliases.push(alias.clone());
                }
                self.config.alias = Some(alias.clone());
            }
            Err(r) if matches!(r.status, status::ALIAS_TAKEN | status::BAD_ARGUMENT) => {
                if self.config.alias.as_deref() == Some(alias.as_str()) {
                    self.config.alias = None;
                }
            }
            Err(_) => {}
        }
        Answer::Register { alias, result }
    }

    /// The answer to a sent message: `3` RELAYED leaves it waiting for a receipt, `2` STORED
    /// confirms it and an error refuses it for good; a garbled answer leaves its fate unknown,
    /// so it stays in the outbox and goes out again after a reconnect.
    fn on_message_answer(&mut self, id: String, answer: Result<Datum, String>) -> Answer {
        // Confirmed already: a receipt overtook the answer to a copy sent again.
        let late = !self.outbox.contains(&id);
        let (delivery, result) = match answer {
            Ok(Datum::Status(s)) => {
                if is_final(s.status) && self.outbox.remove(&id).is_some() {
                    self.storage_changed = true;
                }
                let delivery = Delivery::from_status(&s);
                let result = if status::is_error(s.status) {
                    Err(Refusal::of(&s))
                } else {
                    Ok(s)
                };
                (Some(delivery), result)
            }
            other => (None, Err(refused(&other))),
        };
        Answer::Sent {
            id,
            delivery,
            result,
            late,
        }
    }
}
