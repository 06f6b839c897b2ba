//! The protocol, driven without I/O: bytes from the server go in, frames to send and events
//! for the page come out.
//!
//! # Shape
//!
//! [`Session::receive`] takes one WebSocket binary message (which the protocol guarantees is
//! exactly one frame); the request methods ([`Session::register`], [`Session::send_text`], ...)
//! queue a frame. After any call the caller takes [`Session::take_outgoing`] and
//! [`Session::take_events`] and does the I/O and the rendering itself. Nothing here knows
//! about the DOM, sockets or the clock, which is what lets the tests run a whole login and a
//! whole conversation through it.
//!
//! # Matching answers to requests
//!
//! Once logged in, the server answers every datum the client sends with exactly one Status,
//! User or Roster, in order, and slips unsolicited datums in between: Messages, presence
//! (Status 10 and -10) and the notices 5, 6, -15, -17 and -18. Each of those unsolicited
//! codes is distinct from every answer code, so the session keeps a FIFO of what each sent
//! datum was for ([`PendingQueue`]) and pops one entry per answer-like datum.
//!
//! The client's AUTH carries no alias: the outcome of an alias in AUTH would arrive as an
//! answer-like Status that answers nothing in the FIFO. The page registers its alias with an
//! ordinary REGISTER right after login instead.
//!
//! # Delivery that loses nothing
//!
//! Every message sent gets a fresh random id and waits in the [`Outbox`] until the server
//! confirms it (`2` STORED, or the receipts `7` DELIVERED and `8` STORED_LATER) or refuses it
//! for good (an error). A stored message may still end `9` EXPIRED, deleted unread. At every login the waiting messages go out again, byte for byte and
//! in their original order, before anything else; the outbox is saved with the page (see
//! [`Session::saved`]), so a reload does not lose them either.
//!
//! Received messages are de-duplicated by (sender, id) as well as by their box, and every
//! message with an id is acknowledged once processed, copies and boxes that do not open
//! included, since the server delivers a message again until it is acknowledged. The page
//! sends the acknowledgements with [`Session::flush_acks`] after it has shown and saved what
//! arrived: one ACK for everything processed in one wake-up.
//!
//! # One session per identity
//!
//! A `Session` outlives its connections: the conversation keys, the aliases learnt, the
//! outbox and the de-duplication memory stay valid across reconnects. [`Session::connect`]
//! starts a new connection and [`Session::disconnected`] ends one.

use std::collections::{HashMap, HashSet, VecDeque};

use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use flexim_protocol::handshake::{ClientHandshake, ClientStep, NONCE_LEN};
use flexim_protocol::keys::alias_key;
use flexim_protocol::status::{self, cmd, validate_id};
use flexim_protocol::{
    Command, Datum, DatumKind, HEADER, MAX_BODY, Message, PublicKey, SecretKey, Status, User, frame,
};

pub use crate::events::{Event, Incoming};
use crate::outbox::{self, SAVED_SEEN};
pub use crate::outbox::{Outbox, Outgoing, SavedDelivery};
use crate::policy::{self, Dedupe, PinCheck};
pub use crate::requests::{Lookup, PendingQueue, Request, is_notice};
use crate::requests::{describe, refusal};
use crate::state::Delivery;

/// The most ids one ACK carries. A wake-up after a long absence can process hundreds of
/// stored messages; a few ACKs of at most this many ids keep each frame far below the frame
/// size limit (256 ids of 32 characters are about 9 KB).
pub const ACK_BATCH: usize = 256;

/// Where the current connection stands.
enum Phase {
    /// No connection.
    Idle,
    /// Between the header and the client's User datum.
    Handshake {
        /// The handshake state machine.
        handshake: ClientHandshake,
        /// The server's User datum, held back while the user decides about a key that does
        /// not match the pin.
        held: Option<User>,
    },
    /// Logged in.
    Ready {
        /// The server's User datum.
        server: User,
    },
}

/// Why a message's sender could not be resolved to a key.
#[derive(Debug, Clone)]
struct Unresolved {
    /// What went wrong, for the user.
    reason: String,
    /// Whether it is final (nobody has the alias) rather than a failure that may pass (the
    /// server's storage failed, the answer was garbled). Only a message that will never open
    /// is acknowledged unopened; the others come back at the next login and may open then.
    for_good: bool,
}

/// A source of secure random bytes (the browser's `crypto.getRandomValues` in the page, a
/// fixed sequence in tests).
pub type Random = Box<dyn FnMut(&mut [u8])>;

/// The protocol state of one identity (see the module documentation).
pub struct Session {
    /// This user's secret key.
    secret: SecretKey,
    /// This user's public key.
    me: PublicKey,
    /// The server key pinned earlier, if any.
    pinned: Option<PublicKey>,
    /// Where the current connection stands.
    phase: Phase,
    /// Sent requests waiting for their answers.
    pending: PendingQueue,
    /// Conversation keys per peer, derived once (an X25519 and an HKDF each).
    keys: HashMap<PublicKey, ConversationKey>,
    /// Alias (in its case-insensitive form) to key, from every User the server sent.
    aliases: HashMap<String, PublicKey>,
    /// Aliases that GETUSER could not resolve, with the reason, until the messages waiting
    /// for them have been reported.
    failed_aliases: HashMap<String, Unresolved>,
    /// Aliases with a [`Lookup::Sender`] GETUSER in flight.
    looking_up: HashSet<String>,
    /// Incoming messages not yet opened, oldest first. A message whose sender is an alias
    /// waits here for its GETUSER, and the ones behind it wait too, so that messages are
    /// reported in the order they arrived.
    inbox: VecDeque<Message>,
    /// Messages already reported.
    dedupe: Dedupe,
    /// Messages sent and not yet confirmed, oldest first.
    outbox: Outbox,
    /// Ids of received messages processed since the last [`Session::flush_acks`], to
    /// acknowledge.
    to_ack: Vec<String>,
    /// Whether the outbox or the de-duplication memory changed since the page last saved
    /// them (see [`Session::take_storage_changed`]).
    storage_changed: bool,
    /// Frames to send, oldest first.
    outgoing: Vec<Vec<u8>>,
    /// Events for the page, oldest first.
    events: Vec<Event>,
    /// Where nonces come from.
    random: Random,
}

impl Session {
    /// A session for `secret`, trusting `pinned` as the server's key if given.
    pub fn new(secret: SecretKey, pinned: Option<PublicKey>, random: Random) -> Self {
        Session {
            me: secret.public_key(),
            secret,
            pinned,
            phase: Phase::Idle,
            pending: PendingQueue::new(),
            keys: HashMap::new(),
            aliases: HashMap::new(),
            failed_aliases: HashMap::new(),
            looking_up: HashSet::new(),
            inbox: VecDeque::new(),
            dedupe: Dedupe::new(),
            outbox: Outbox::new(),
            to_ack: Vec::new(),
            storage_changed: false,
            outgoing: Vec::new(),
            events: Vec::new(),
            random,
        }
    }

    /// This user's key.
    pub fn me(&self) -> &PublicKey {
        &self.me
    }

    /// Whether the connection is logged in (requests can be sent).
    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Ready { .. })
    }

    /// Whether the session is waiting for the user to accept a server key that does not
    /// match the pin.
    pub fn is_holding_server_key(&self) -> bool {
        matches!(self.phase, Phase::Handshake { held: Some(_), .. })
    }

    /// The server's User datum once logged in.
    pub fn server(&self) -> Option<&User> {
        match &self.phase {
            Phase::Ready { server } => Some(server),
            _ => None,
        }
    }

    /// Remembers a message id as already shown (from the saved history), so that a copy
    /// delivered after a reload is not shown twice.
    pub fn remember_seen(&mut self, id: &str) {
        self.dedupe.insert(id.to_string());
    }

    /// The messages sent and not yet confirmed, oldest first.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// What the page saves so that a reload loses nothing: the outbox and the most recent
    /// de-duplication ids.
    pub fn saved(&self) -> SavedDelivery {
        let skip = self.dedupe.len().saturating_sub(SAVED_SEEN);
        SavedDelivery {
            outbox: self.outbox.clone(),
            seen: self
                .dedupe
                .recent()
                .skip(skip)
                .map(str::to_string)
                .collect(),
        }
    }

    /// Takes back what [`Session::saved`] gave before a reload: the waiting messages go out
    /// at the next login (before any sent since), and the seen ids are not shown again.
    pub fn restore(&mut self, saved: SavedDelivery) {
        for id in saved.seen {
            self.dedupe.insert(id);
        }
        let mut outbox = saved.outbox;
        for entry in self.outbox.iter() {
            if !outbox.contains(&entry.id) {
                outbox.push(entry.clone());
            }
        }
        self.outbox = outbox;
    }

    /// Whether what [`Session::saved`] returns changed since the last call.
    pub fn take_storage_changed(&mut self) -> bool {
        std::mem::take(&mut self.storage_changed)
    }

    /// Frames to send now, in order; each is one WebSocket binary message.
    pub fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outgoing)
    }

    /// Events for the page, in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Whether a ROSTER is already waiting for its answer (so a burst of presence notices
    /// asks only once).
    pub fn roster_pending(&self) -> bool {
        self.pending.any(|r| matches!(r, Request::Roster))
    }

    /// How many requests wait for an answer.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Starts a new connection: returns the header, the first binary message to send. Any
    /// previous connection must have been ended with [`Session::disconnected`].
    pub fn connect(&mut self) -> Vec<u8> {
        self.phase = Phase::Handshake {
            handshake: ClientHandshake::new(self.secret.clone(), None),
            held: None,
        };
        self.outgoing.clear();
        HEADER.to_vec()
    }

    /// The connection is gone. The requests waiting for answers are forgotten; the messages
    /// among them stay in the outbox and go out again at the next login.
    pub fn disconnected(&mut self) {
        self.phase = Phase::Idle;
        self.outgoing.clear();
        // Lookups in flight will be asked again at the next login, when the inbox drains.
        self.looking_up.clear();
        self.pending.take_all();
        // The server delivers whatever was not acknowledged again at the next login, where
        // the copies are recognised and acknowledged then.
        self.to_ack.clear();
    }

    /// The user accepts the server key that did not match the pin: it becomes the pin and
    /// the login goes on. Does nothing if no key is held.
    pub fn accept_server_key(&mut self) {
        let Phase::Handshake { held, .. } = &mut self.phase else {
            return;
        };
        if let Some(server) = held.take() {
            self.pinned = Some(server.key);
            self.advance_handshake(Datum::User(server));
        }
    }

    /// Sets the pinned key (after the user accepted a new one while disconnected).
    pub fn set_pinned(&mut self, pinned: Option<PublicKey>) {
        self.pinned = pinned;
    }

    /// Handles one binary WebSocket message from the server.
    pub fn receive(&mut self, bytes: &[u8]) {
        let decoded = frame::split_exact(bytes, MAX_BODY)
            .map_err(|e| e.to_string())
            .and_then(|(kind, body)| Datum::decode(kind, body).map_err(|e| e.to_string()));
        match decoded {
            Ok(datum) => self.on_datum(datum),
            Err(reason) => self.on_garbled(bytes.first().copied(), reason),
        }
    }

    /// A frame that did not decode. If it was meant as an answer it still uses up its
    /// request, or every later answer would go to the wrong request.
    fn on_garbled(&mut self, kind: Option<u8>, reason: String) {
        let kind = kind.and_then(DatumKind::from_u8);
        match (&self.phase, kind) {
            (
                Phase::Ready { .. },
                Some(DatumKind::Status | DatumKind::User | DatumKind::Roster),
            ) => match self.pending.pop() {
                Some(request) => self.on_answer(request, Err(reason)),
                None => self.notice(format!("the server sent a garbled datum: {reason}")),
            },
            (_, Some(DatumKind::Message)) => self.events.push(Event::Undecryptable {
                from: String::new(),
                sender: None,
                date: 0,
                reason: format!("a garbled message arrived: {reason}"),
            }),
            (Phase::Handshake { .. }, _) => {
                self.fail(format!("the server sent a garbled datum: {reason}"))
            }
            _ => self.notice(format!("the server sent a garbled datum: {reason}")),
        }
    }

    fn notice(&mut self, text: String) {
        self.events.push(Event::Notice(text));
    }

    fn fail(&mut self, reason: String) {
        self.phase = Phase::Idle;
        self.events.push(Event::Failed(reason));
    }

    fn send(&mut self, datum: &Datum) -> Result<Vec<u8>, String> {
        let frame = datum.to_frame().map_err(|e| e.to_string())?;
        self.outgoing.push(frame.clone());
        Ok(frame)
    }

    fn on_datum(&mut self, datum: Datum) {
        match &mut self.phase {
            Phase::Idle => self.notice(format!(
                "ignored a {} datum outside a connection",
                datum.kind().name()
            )),
            Phase::Handshake { handshake, held } => {
                if held.is_some() {
                    // Waiting for the user: only a refusal (the server's 30-second deadline)
                    // matters; the server sends nothing else before AUTH.
                    if let Datum::Status(s) = &datum
                        && status::is_error(s.status)
                    {
                        let text = describe(s);
                        self.fail(format!("the server refused: {text}"));
                    }
                    return;
                }
                if handshake.server().is_none()
                    && let Datum::User(server) = &datum
                {
                    let check = policy::check_pin(self.pinned.as_ref(), &server.key);
                    self.events.push(Event::ServerKey {
                        key: server.key,
                        check,
                    });
                    if let PinCheck::Mismatch { .. } = check {
                        *held = Some(server.clone());
                        return;
                    }
                }
                self.advance_handshake(datum);
            }
            Phase::Ready { .. } => self.on_ready_datum(datum),
        }
    }

    fn advance_handshake(&mut self, datum: Datum) {
        let Phase::Handshake { handshake, .. } = &mut self.phase else {
            return;
        };
        match handshake.handle(datum, &mut self.random) {
            Ok(ClientStep::Send(reply)) => {
                if let Err(e) = self.send(&reply) {
                    self.fail(e);
                }
            }
            Ok(ClientStep::Done { server, me }) => {
                self.pinned = Some(server.key);
                self.learn(&me);
                self.phase = Phase::Ready {
                    server: server.clone(),
                };
                self.events.push(Event::LoggedIn { me, server });
                // Unconfirmed messages go first, before anything the page sends on login.
                self.resend_outbox();
                // Messages that waited for an alias lookup when the last connection dropped.
                self.drain_inbox();
            }
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn on_ready_datum(&mut self, datum: Datum) {
        match datum {
            Datum::Message(message) => {
                self.inbox.push_back(message);
                self.drain_inbox();
            }
            Datum::Status(s) if is_notice(s.status) => self.on_notice(s),
            Datum::Status(_) | Datum::User(_) | Datum::Roster(_) => match self.pending.pop() {
                Some(request) => self.on_answer(request, Ok(datum)),
                None => self.notice(format!(
                    "the server sent an answer to nothing: {}",
                    match &datum {
                        Datum::Status(s) => describe(s),
                        other => other.kind().name().to_string(),
                    }
                )),
            },
            other => self.notice(format!("ignored a {} datum", other.kind().name())),
        }
    }

    fn on_notice(&mut self, s: Status) {
        match s.status {
            status::PRESENCE_ONLINE | status::PRESENCE_OFFLINE => {
                match PublicKey::from_hex(&s.payload) {
                    Some(key) => self.events.push(Event::Presence {
                        key,
                        online: s.status == status::PRESENCE_ONLINE,
                    }),
                    None => self.notice(format!("a presence notice without a key: {}", s.payload)),
                }
            }
            status::SESSION_EXISTS => {
                // A browser tab the user is looking at is the session they mean to use, so
                // it takes over at once; the other session is told TAKEN_OVER and does not
                // fight back (see `Event::Closing`).
                self.notice("another session of this key was active; taking over".into());
                self.ghost();
            }
            status::DELIVERED_STORED => self.notice(s.payload),
            // A receipt may name several messages (`ids`): each is handled as if alone.
            status::DELIVERED | status::STORED_LATER | status::EXPIRED if !s.ids.is_empty() => {
                for id in &s.ids {
                    let one = Status::new(s.status, s.payload.clone()).with_id(Some(id.clone()));
                    self.on_notice(one);
                }
            }
            status::DELIVERED | status::STORED_LATER | status::EXPIRED => match s.id {
                Some(id) => {
                    // Confirmed: no need to send it again. The receipt may also concern a
                    // message confirmed before (stored, then delivered): the page still
                    // wants to hear that it was delivered.
                    if self.outbox.remove(&id).is_some() {
                        self.storage_changed = true;
                    }
                    let delivery = match s.status {
                        status::DELIVERED => Delivery::Delivered,
                        status::STORED_LATER => Delivery::Stored,
                        _ => Delivery::Expired,
                    };
                    self.events.push(Event::Delivery { id, delivery });
                }
                // Without an id, EXPIRED tells this user how many messages for them the server
                // deleted unread ("N stored messages expired unread after 30 days").
                None if s.status == status::EXPIRED => self.notice(s.payload),
                None => self.notice(format!("a receipt without a message id: {}", describe(&s))),
            },
            _ => self.events.push(Event::Closing {
                status: s.status,
                reason: describe(&s),
            }),
        }
    }

    fn on_answer(&mut self, request: Request, answer: Result<Datum, String>) {
        // An error Status, a garbled frame or a datum of the wrong kind all fail the request;
        // this gives each its code (0 when there is none) and text.
        let failure = |answer: &Result<Datum, String>| -> (i8, String) {
            match answer {
                Ok(Datum::Status(s)) => (s.status, describe(s)),
                Ok(other) => (0, format!("unexpected {} answer", other.kind().name())),
                Err(reason) => (0, reason.clone()),
            }
        };
        match request {
            Request::Register { alias } => match &answer {
                Ok(Datum::Status(s)) if !status::is_error(s.status) => {
                    self.aliases.insert(alias_key(&alias), self.me);
                    self.events.push(Event::AliasRegistered { alias });
                }
                _ => {
                    // The page words "taken" and "invalid" itself; the server's own text is
                    // the useful part of the reason.
                    let (code, reason) = match &answer {
                        Ok(Datum::Status(s)) => (s.status, s.payload.clone()),
                        _ => failure(&answer),
                    };
                    self.events.push(Event::AliasRefused {
                        alias,
                        status: code,
                        reason,
                    });
                }
            },
            Request::Roster => match answer {
                Ok(Datum::Roster(roster)) => {
                    roster.users.iter().for_each(|u| self.learn(u));
                    self.events.push(Event::Roster(roster.users));
                }
                other => {
                    let (_, reason) = failure(&other);
                    self.notice(format!("the roster could not be loaded: {reason}"));
                }
            },
            Request::Search { text } => match answer {
                Ok(Datum::Roster(roster)) => {
                    roster.users.iter().for_each(|u| self.learn(u));
                    self.events.push(Event::SearchResults {
                        text,
                        users: roster.users,
                    });
                }
                other => {
                    let (_, reason) = failure(&other);
                    self.events.push(Event::SearchFailed { text, reason });
                }
            },
            Request::GetUser { query, purpose } => self.on_user_answer(query, purpose, answer),
            Request::Message { id } => self.on_message_answer(id, answer),
            Request::Ack { count } => match &answer {
                Ok(Datum::Status(s)) if !status::is_error(s.status) => {}
                _ => {
                    let (_, reason) = failure(&answer);
                    self.notice(format!(
                        "the server did not take the acknowledgement of {count} messages \
                         ({reason}); it will deliver them again, and they will not be shown twice"
                    ));
                }
            },
            Request::Ghost => match &answer {
                Ok(Datum::Status(s)) if !status::is_error(s.status) => {
                    self.notice("this tab is now your active session".into())
                }
                _ => {
                    let (_, reason) = failure(&answer);
                    self.notice(format!("could not take over the session: {reason}"));
                }
            },
        }
    }

    /// The answer to a sent message: `3` RELAYED leaves it waiting for a receipt, `2` STORED
    /// confirms it and an error refuses it for good.
    fn on_message_answer(&mut self, id: String, answer: Result<Datum, String>) {
        if !self.outbox.contains(&id) {
            // Confirmed already: a receipt overtook the answer to a copy sent again after a
            // reconnect. The answer has nothing to add.
            return;
        }
        let delivery = match &answer {
            Ok(Datum::Status(s)) if s.status == status::STORED => Delivery::Stored,
            Ok(Datum::Status(s)) if status::is_error(s.status) => Delivery::Failed(refusal(s)),
            // RELAYED, or a success code this version does not know: the protocol says unknown
            // positive codes mean success, but only STORED and the receipts confirm.
            Ok(Datum::Status(_)) => Delivery::Relayed,
            Ok(other) => {
                let kind = other.kind().name();
                self.notice(format!(
                    "the server answered a message with a {kind}; it will be sent again after \
                     reconnecting"
                ));
                return;
            }
            Err(reason) => {
                // Whether the server took the message is unknown, so it stays in the outbox.
                self.notice(format!(
                    "the server's answer to a message was garbled ({reason}); it will be sent \
                     again after reconnecting"
                ));
                return;
            }
        };
        if matches!(delivery, Delivery::Stored | Delivery::Failed(_)) {
            self.outbox.remove(&id);
            self.storage_changed = true;
        }
        self.events.push(Event::Delivery { id, delivery });
    }

    fn on_user_answer(&mut self, query: String, purpose: Lookup, answer: Result<Datum, String>) {
        let found = match answer {
            Ok(Datum::User(user)) => Ok(user),
            Ok(Datum::Status(s)) => Err((s.status, describe(&s))),
            Ok(other) => Err((0, format!("unexpected {} answer", other.kind().name()))),
            Err(reason) => Err((0, reason)),
        };
        if purpose == Lookup::Sender {
            let name = alias_key(&query);
            self.looking_up.remove(&name);
            match found {
                Ok(user) => {
                    self.learn(&user);
                    self.aliases.insert(name, user.key);
                }
                Err((code, reason)) => {
                    let for_good = matches!(code, status::NO_SUCH_USER | status::BAD_ARGUMENT);
                    let reason = format!("cannot resolve the sender: {reason}");
                    self.failed_aliases
                        .insert(name, Unresolved { reason, for_good });
                }
            }
            self.drain_inbox();
            return;
        }
        match found {
            Ok(user) => {
                self.learn(&user);
                if PublicKey::from_hex(&query).is_none() {
                    self.aliases.insert(alias_key(&query), user.key);
                }
                self.events.push(Event::UserFound {
                    query,
                    purpose,
                    user,
                });
            }
            Err((code, reason)) => self.events.push(Event::UserNotFound {
                query,
                purpose,
                status: code,
                reason,
            }),
        }
    }

    /// Remembers a user's aliases, to resolve `from` fields without asking the server.
    fn learn(&mut self, user: &User) {
        for alias in &user.aliases {
            self.aliases.insert(alias_key(alias), user.key);
        }
    }

    /// Opens the queued messages in order, stopping at one whose sender alias is still being
    /// looked up (and starting that lookup if needed).
    fn drain_inbox(&mut self) {
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
                            self.request(
                                Command::new(cmd::GETUSER, &[&query]),
                                Request::GetUser {
                                    query,
                                    purpose: Lookup::Sender,
                                },
                            );
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

    fn conversation_key(
        &mut self,
        peer: &PublicKey,
    ) -> Result<ConversationKey, flexim_protocol::e2e::E2eError> {
        if let Some(key) = self.keys.get(peer) {
            return Ok(key.clone());
        }
        let key = ConversationKey::derive(&self.secret, peer)?;
        self.keys.insert(*peer, key.clone());
        Ok(key)
    }

    fn open_message(&mut self, message: Message, sender: Result<PublicKey, Unresolved>) {
        // An id the protocol does not allow was not checked by the server and cannot be
        // acknowledged.
        let ack = message.id.clone().filter(|id| validate_id(id).is_ok());
        let opened = match sender {
            Ok(sender) => self.open_box(&message, sender),
            Err(Unresolved { reason, for_good }) => Err((None, reason, for_good)),
        };
        let (sender, text) = match opened {
            Ok(opened) => opened,
            Err((sender, reason, for_good)) => {
                if let Some(id) = &ack
                    && for_good
                {
                    // It will never open, and the server would deliver it at every login
                    // until acknowledged. It is shown once, not at every redelivery: its key
                    // is apart from real messages' keys, so a forgery cannot suppress a real
                    // message.
                    self.acknowledge(id);
                    if !self.remember(format!("unopened:{}:{id}", message.from)) {
                        return;
                    }
                }
                self.events.push(Event::Undecryptable {
                    from: message.from,
                    sender,
                    date: message.date,
                    reason,
                });
                return;
            }
        };
        // Shown now or a copy of one shown before, it is processed: acknowledged either way,
        // since the server delivers it again until it is.
        if let Some(id) = &ack {
            self.acknowledge(id);
        }
        // Only boxes that opened are remembered, so a forgery cannot suppress a real message.
        // A copy is recognised by its box (a message sent again byte for byte, or replayed)
        // or by its sender and id (the same message, whatever else changed on the way).
        let content = policy::message_id(&sender, message.date, &message.msg);
        let fresh_content = self.remember(content.clone());
        let fresh_id = ack
            .as_ref()
            .is_none_or(|id| self.remember(policy::sender_id_key(&sender, id)));
        if !(fresh_content && fresh_id) {
            return;
        }
        self.events.push(Event::Message(Incoming {
            from: sender,
            date: message.date,
            flags: message.flags,
            text,
            id: content,
        }));
    }

    /// Puts `id` on the next ACK (once).
    fn acknowledge(&mut self, id: &str) {
        if !self.to_ack.iter().any(|a| a == id) {
            self.to_ack.push(id.to_string());
        }
    }

    /// Remembers a de-duplication key; false if it was known (a copy).
    fn remember(&mut self, key: String) -> bool {
        let fresh = self.dedupe.insert(key);
        self.storage_changed |= fresh;
        fresh
    }

    /// Opens the box of a message from `sender`: the text, or why it does not open (which
    /// is final: the box is what it is).
    fn open_box(
        &mut self,
        message: &Message,
        sender: PublicKey,
    ) -> Result<(PublicKey, String), (Option<PublicKey>, String, bool)> {
        let key = self
            .conversation_key(&sender)
            .map_err(|e| (Some(sender), e.to_string(), true))?;
        // The server delivers to this session only what is addressed to this user, whatever
        // form `to` takes, so the recipient bound into the box is always our own key.
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

    /// Sends a command and records what its answer is for. Only called when logged in.
    fn request(&mut self, command: Command, request: Request) {
        match self.send(&Datum::Command(command)) {
            Ok(_) => self.pending.push(request),
            Err(e) => self.notice(format!("could not send a command: {e}")),
        }
    }

    fn require_ready(&self) -> Result<(), String> {
        if self.is_ready() {
            Ok(())
        } else {
            Err("not connected".into())
        }
    }

    /// REGISTER: claims `alias` for this key.
    pub fn register(&mut self, alias: &str) -> Result<(), String> {
        self.require_ready()?;
        self.request(
            Command::new(cmd::REGISTER, &[alias]),
            Request::Register {
                alias: alias.to_string(),
            },
        );
        Ok(())
    }

    /// ROSTER: the users the server knows, with presence.
    pub fn roster(&mut self) -> Result<(), String> {
        self.require_ready()?;
        self.request(Command::new(cmd::ROSTER, &[]), Request::Roster);
        Ok(())
    }

    /// SEARCH: users whose alias contains `text`.
    pub fn search(&mut self, text: &str) -> Result<(), String> {
        self.require_ready()?;
        self.request(
            Command::new(cmd::SEARCH, &[text]),
            Request::Search {
                text: text.to_string(),
            },
        );
        Ok(())
    }

    /// GETUSER: looks up a key or an alias.
    pub fn get_user(&mut self, query: &str, purpose: Lookup) -> Result<(), String> {
        self.require_ready()?;
        self.request(
            Command::new(cmd::GETUSER, &[query]),
            Request::GetUser {
                query: query.to_string(),
                purpose,
            },
        );
        Ok(())
    }

    /// GHOST: makes this connection the key's active session.
    pub fn ghost(&mut self) {
        if self.is_ready() {
            self.request(Command::new(cmd::GHOST, &[]), Request::Ghost);
        }
    }

    /// Builds the Message carrying `text` sealed for `peer`: `to` is the peer's key, `from`
    /// this user's key (both in hex, so the recipient needs no lookup to open it), with `id`.
    pub fn seal(
        &mut self,
        peer: &PublicKey,
        text: &str,
        flags: &[String],
        date: i64,
        id: Option<String>,
    ) -> Result<Message, String> {
        let key = self.conversation_key(peer).map_err(|e| e.to_string())?;
        let mut nonce = [0u8; NONCE_LEN];
        (self.random)(&mut nonce);
        let envelope = Envelope {
            sender: &self.me,
            recipient: peer,
            date,
            flags,
        };
        let msg = e2e::seal(&key, &envelope, text, nonce).map_err(|e| e.to_string())?;
        Ok(Message {
            to: peer.to_hex(),
            from: self.me.to_hex(),
            flags: flags.to_vec(),
            date,
            msg,
            id,
        })
    }

    /// Seals `text` for `peer` under a fresh id, keeps it in the outbox until it is
    /// confirmed, and sends it now if logged in (else at the next login). Returns the id,
    /// which the [`Event::Delivery`] events about this message carry.
    pub fn send_text(
        &mut self,
        peer: &PublicKey,
        text: &str,
        flags: &[String],
        date: i64,
    ) -> Result<String, String> {
        let id = outbox::new_id(&mut *self.random);
        let message = self.seal(peer, text, flags, date, Some(id.clone()))?;
        let frame = Datum::Message(message)
            .to_frame()
            .map_err(|e| e.to_string())?;
        self.outbox.push(Outgoing {
            id: id.clone(),
            peer: *peer,
            frame: frame.clone(),
        });
        self.storage_changed = true;
        if self.is_ready() {
            self.outgoing.push(frame);
            self.pending.push(Request::Message { id: id.clone() });
        }
        Ok(id)
    }

    /// Sends every unconfirmed message again, byte for byte, oldest first. Only called at
    /// login, before anything else is sent on the new connection.
    fn resend_outbox(&mut self) {
        for entry in self.outbox.iter() {
            self.outgoing.push(entry.frame.clone());
            self.pending.push(Request::Message {
                id: entry.id.clone(),
            });
        }
    }

    /// Acknowledges the messages processed since the last call: one ACK (or a few, of at most
    /// [`ACK_BATCH`] ids each). The page calls this once it has shown and saved what arrived.
    /// Does nothing when not logged in; the server then delivers those messages again.
    pub fn flush_acks(&mut self) {
        if !self.is_ready() || self.to_ack.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.to_ack);
        for chunk in ids.chunks(ACK_BATCH) {
            self.request(
                Command {
                    cmd: cmd::ACK.to_string(),
                    payload: chunk.to_vec(),
                },
                Request::Ack { count: chunk.len() },
            );
        }
    }
}
