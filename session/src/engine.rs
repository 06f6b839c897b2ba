//! The engine: one identity's protocol state, its connection's life, and the dispatch of what
//! the server sends. Receiving is in `inbox.rs`, requests and their answers in `commands.rs`,
//! what an application saves of it (the outbox, the de-duplication memory) in `saved.rs`.

use std::collections::{HashMap, HashSet, VecDeque};

use flexim_protocol::e2e::{ConversationKey, E2eError};
use flexim_protocol::keys::alias_key;
use flexim_protocol::link::RECORD;
use flexim_protocol::status;
use flexim_protocol::{
    Datum, DatumKind, FrameError, HEADER, Link, LinkError, Message, PublicKey, SecretKey, User,
};

use crate::contacts::{ContactBook, KeyChange};
use crate::dedupe::Dedupe;
use crate::events::Event;
use crate::login::{Login, LoginError, Step};
use crate::outbox::Outbox;
use crate::requests::{PendingQueue, RequestId, Unresolved};
pub use crate::stream::Framing;
use crate::stream::Reader;
use crate::text::describe;

/// The most ids one ACK carries. 256 ids of the longest allowed kind (64 characters, 66 bytes
/// in msgpack) are about 17 KB, inside the body limit of any server that accepts messages of a
/// useful size; a wake-up after a long absence is acknowledged in a few ACKs.
pub const ACK_BATCH: usize = 256;

/// A source of secure random bytes: the operating system's (`getrandom`) natively, the
/// browser's `crypto.getRandomValues` in a page, a fixed sequence in tests. It must not fail: a
/// driver whose generator fails stops rather than seal with bytes that are not random.
pub type Random = Box<dyn FnMut(&mut [u8]) + Send>;

/// What a driver sets up an engine with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server key pinned earlier, if any. Nothing pinned is trust on first use: the key
    /// the handshake proves becomes the pin ([`Engine::pinned`]).
    pub pinned: Option<PublicKey>,
    /// The alias to claim right after every login (with REGISTER), if any. An alias registered
    /// later replaces it, and one the server refuses for good (taken, invalid) is forgotten, so
    /// it is not asked for at every login ([`Engine::alias`]).
    pub alias: Option<String>,
    /// How the transport delivers frames.
    pub framing: Framing,
    /// Whether this client takes part in rooms (docs/PROTOCOL.md §16): it then counts its
    /// KeyPackages on the server at every login and publishes more when few are left, so that
    /// others can add it to rooms while it is away. A client that never joins rooms (a test's
    /// raw connection, a load generator) leaves this off and sends no such command.
    pub rooms: bool,
    /// Whether 1:1 conversations run on MLS (docs/PROTOCOL.md §16.9): a message to a user goes
    /// through the pair room of the two, made at the first message. Needs `rooms`. Off, every
    /// 1:1 message is sealed with the static-key box of section 9 (no forward secrecy): for
    /// connections that take no part in rooms.
    pub pairs: bool,
}

/// Why the engine could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A request needs a logged-in connection.
    #[error("not connected")]
    NotConnected,
    /// The message could not be sealed (empty or too long text, a weak peer key).
    #[error("cannot encrypt: {0}")]
    Seal(#[from] E2eError),
    /// The datum does not fit in a frame.
    #[error("cannot frame the datum: {0}")]
    Frame(#[from] FrameError),
    /// The datum does not fit in one record of the link.
    #[error("cannot send the datum: {0}")]
    Link(#[from] LinkError),
    /// An alias the server has not named a key for since this engine started (a saved pin
    /// alone is not enough): the driver asks the server (GETUSER) first, so that its current
    /// word is compared with the pinned key.
    #[error("{0} has not been looked up yet")]
    UnknownContact(String),
    /// The server names another key for the alias than the one pinned for it: nothing is
    /// sealed to it until the user accepts the new key ([`Engine::accept_contact_key`]).
    #[error("refusing to encrypt: {0}")]
    ContactKeyChanged(KeyChange),
    /// An MLS operation of a room failed (docs/PROTOCOL.md §16); the text says which and why.
    #[error("room encryption: {0}")]
    Mls(String),
    /// This user is in no room of that id (or was removed from it).
    #[error("not in room {0}")]
    NoRoom(String),
}

/// Where the current connection stands.
pub(crate) enum Phase {
    /// No connection.
    Idle,
    /// Between the header and this user's User datum.
    Login(Login),
    /// Logged in.
    Ready {
        /// The server's User datum.
        server: User,
        /// This user as the server knows it, aliases kept current by REGISTER.
        me: User,
    },
}

/// The protocol state of one identity (see the crate documentation). It outlives its
/// connections: the conversation keys, the aliases learnt, the outbox and the de-duplication
/// memory stay valid across reconnects.
pub struct Engine {
    /// This user's secret key.
    pub(crate) secret: SecretKey,
    /// This user's public key, computed once.
    pub(crate) me: PublicKey,
    /// The pin, the alias to claim and the framing.
    pub(crate) config: Config,
    /// Where the current connection stands.
    pub(crate) phase: Phase,
    /// Cuts what the transport delivers into frames.
    pub(crate) reader: Reader,
    /// The connection's Noise link, from the handshake's third message on: every frame sent
    /// after it is sealed into a record, every record received is opened with it.
    pub(crate) link: Option<Link>,
    /// Sent requests waiting for their answers.
    pub(crate) pending: PendingQueue,
    /// The number the next request gets.
    pub(crate) next_request: u64,
    /// The REGISTER of the configured alias sent at the latest login, so that a driver can wait
    /// for its outcome.
    pub(crate) alias_request: Option<RequestId>,
    /// Conversation keys per peer, derived once (an X25519 and an HKDF each).
    pub(crate) keys: HashMap<PublicKey, ConversationKey>,
    /// Alias (in its case-insensitive form) to key, from every User the server sent: the
    /// server's word, which opens messages from senders named by alias. What may be sealed to
    /// is decided against the pins ([`Engine::contact`]).
    pub(crate) aliases: HashMap<String, PublicKey>,
    /// Contacts' keys pinned on first use, and the changes waiting for the user (`contacts.rs`).
    pub(crate) contacts: ContactBook,
    /// The latest User datum per key, with presence kept current by presence notices.
    pub(crate) users: HashMap<PublicKey, User>,
    /// Aliases that GETUSER could not resolve, with the reason, until the messages waiting
    /// for them have been reported.
    pub(crate) failed_aliases: HashMap<String, Unresolved>,
    /// Aliases with a sender lookup in flight.
    pub(crate) looking_up: HashSet<String>,
    /// Incoming messages not yet opened, oldest first. A message whose sender is an alias
    /// waits here for its lookup, and the ones behind it wait too, so that messages are
    /// reported in the order they arrived.
    pub(crate) inbox: VecDeque<Message>,
    /// The keys of the messages already reported.
    pub(crate) dedupe: Dedupe,
    /// Ids reported to the application and not acknowledged by it yet. A copy of one of these
    /// is dropped without an ACK: acknowledging it would tell the server to forget a message
    /// the application may not have processed yet, and the application's own ACK of the id
    /// covers the copy too.
    pub(crate) unacked: HashSet<String>,
    /// Ids to acknowledge with the next [`Engine::flush_acks`], in order.
    pub(crate) to_ack: Vec<String>,
    /// Messages sent and not yet confirmed, oldest first.
    pub(crate) outbox: Outbox,
    /// Whether the outbox or the de-duplication memory changed since the application last
    /// saved them ([`Engine::take_storage_changed`]).
    pub(crate) storage_changed: bool,
    /// Bytes to write, oldest first: each is one WebSocket message, or the next bytes of the
    /// TCP stream.
    pub(crate) transmits: VecDeque<Vec<u8>>,
    /// Events for the driver, oldest first.
    pub(crate) events: VecDeque<Event>,
    /// Where nonces and message ids come from.
    pub(crate) random: Random,
    /// Users who asked to talk and whom this user has not answered (`consent.rs`): their
    /// messages are reported as requests ([`crate::Incoming::request`]).
    pub(crate) strangers: HashSet<PublicKey>,
    /// The rooms: MLS groups, invitations, commits waiting for a retry (`rooms/`).
    pub(crate) rooms: crate::rooms::state::Rooms,
    /// The pair rooms' messages held until their group exists, and what decides their updates
    /// (`rooms/pairs.rs`).
    pub(crate) pairs: crate::rooms::state::Pairs,
}

impl Engine {
    /// An engine for the holder of `secret`.
    pub fn new(secret: SecretKey, config: Config, random: Random) -> Engine {
        Engine {
            me: secret.public_key(),
            reader: Reader::new(config.framing),
            link: None,
            secret,
            config,
            phase: Phase::Idle,
            pending: PendingQueue::default(),
            next_request: 1,
            alias_request: None,
            keys: HashMap::new(),
            aliases: HashMap::new(),
            contacts: ContactBook::default(),
            users: HashMap::new(),
            failed_aliases: HashMap::new(),
            looking_up: HashSet::new(),
            inbox: VecDeque::new(),
            dedupe: Dedupe::new(),
            unacked: HashSet::new(),
            to_ack: Vec::new(),
            outbox: Outbox::new(),
            storage_changed: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            random,
            strangers: HashSet::new(),
            rooms: crate::rooms::state::Rooms::default(),
            pairs: crate::rooms::state::Pairs::default(),
        }
    }

    /// This user's key.
    pub fn me(&self) -> &PublicKey {
        &self.me
    }

    /// This user as the server knows it, once logged in (aliases kept current by REGISTER).
    pub fn user(&self) -> Option<&User> {
        match &self.phase {
            Phase::Ready { me, .. } => Some(me),
            _ => None,
        }
    }

    /// The server's User datum, once logged in (its key proven by the handshake).
    pub fn server(&self) -> Option<&User> {
        match &self.phase {
            Phase::Ready { server, .. } => Some(server),
            _ => None,
        }
    }

    /// The pinned server key: the configured one, or the one a login proved.
    pub fn pinned(&self) -> Option<&PublicKey> {
        self.config.pinned.as_ref()
    }

    /// Sets the pinned key (the user accepted a new one while disconnected).
    pub fn set_pinned(&mut self, pinned: Option<PublicKey>) {
        self.config.pinned = pinned;
    }

    /// Sets how the transport delivers frames, for a driver that learns it only when it
    /// connects. Takes effect for the next connection.
    pub fn set_framing(&mut self, framing: Framing) {
        self.config.framing = framing;
        self.reader = Reader::new(framing);
    }

    /// The alias claimed at every login (see [`Config::alias`]).
    pub fn alias(&self) -> Option<&str> {
        self.config.alias.as_deref()
    }

    /// The REGISTER of [`Engine::alias`] sent at the latest login, if one was.
    pub fn alias_request(&self) -> Option<RequestId> {
        self.alias_request
    }

    /// Whether the connection is logged in (requests can be sent).
    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Ready { .. })
    }

    /// Whether a connection is open (logging in or logged in).
    pub fn is_connected(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// Whether the login waits for the application to accept a server key that does not
    /// match the pin ([`Engine::accept_server_key`]).
    pub fn is_holding_server_key(&self) -> bool {
        matches!(&self.phase, Phase::Login(login) if login.is_holding())
    }

    /// The latest User datum seen for `key` (GETUSER, ROSTER, SEARCH), presence kept current.
    pub fn cached_user(&self, key: &PublicKey) -> Option<&User> {
        self.users.get(key)
    }

    /// The key for `who` without asking the server: 64 hex digits, or an alias learnt before
    /// whose key is the pinned one ([`Engine::contact`] says why not).
    pub fn resolve_cached(&self, who: &str) -> Option<PublicKey> {
        self.contact(who).ok()
    }

    /// How many requests wait for an answer.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Starts a new connection: the header is the first transmit. A connection still open is
    /// ended first ([`Engine::disconnected`]).
    pub fn connect(&mut self) {
        if self.is_connected() {
            self.disconnected();
        }
        self.phase = Phase::Login(Login::new(self.secret.clone()));
        self.transmits.push_back(HEADER.to_vec());
    }

    /// The connection is gone. The requests waiting for answers are forgotten; the messages
    /// among them stay in the outbox and go out again at the next login. Reports
    /// [`Event::Closed`] if a connection was open.
    pub fn disconnected(&mut self) {
        if !self.is_connected() {
            return;
        }
        // Bytes that never made a datum, from a peer that never sent one, then the end: another
        // kind of server (an HTTP server answering the header and closing).
        if let Phase::Login(login) = &self.phase
            && !login.heard()
            && self.reader.buffered() > 0
        {
            let reason = format!(
                "{} bytes that are no FLEX frame, then the end of the connection",
                self.reader.buffered()
            );
            self.events
                .push_back(Event::LoginFailed(LoginError::NotFlexim(reason)));
        }
        self.phase = Phase::Idle;
        self.reader.reset();
        self.link = None;
        self.transmits.clear();
        self.pending.clear();
        // Lookups in flight are asked again at the next login, when the inbox drains.
        self.looking_up.clear();
        // The server delivers whatever was not acknowledged again at the next login, where
        // the copies are recognised and acknowledged.
        self.to_ack.clear();
        self.events.push_back(Event::Closed);
    }

    /// The next bytes to write: one WebSocket binary message, or the next bytes of the TCP
    /// stream. Take them all after every call that may have queued some.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether events are waiting.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Handles what the transport delivered: one WebSocket binary message, or the next bytes of
    /// the TCP stream (any amount; a frame cut by the read is completed by the next call).
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if !self.is_connected() {
            // The connection ended (closed, a failed login, a broken link): what still arrives
            // on it is no datum from the server.
            return self.notice(format!(
                "ignored {} bytes outside a connection",
                bytes.len()
            ));
        }
        for frame in self.reader.push(bytes) {
            match frame {
                Ok(frame) => self.handle_frame(&frame),
                // Once the link is up only whole records come from the server: anything else
                // was put on the path by someone else, and the connection is over.
                Err(e) if self.link.is_some() => return self.link_broken(LinkError::Framing(e)),
                Err(e) => self.on_garbled(bytes.first().copied(), e.to_string()),
            }
            if !self.is_connected() {
                // A broken link or a failed login: nothing after it is read.
                return;
            }
        }
    }

    /// Handles one whole frame: a record of the link once it is up (opened first), a clear
    /// datum before.
    fn handle_frame(&mut self, frame: &[u8]) {
        let opened;
        let frame = match &mut self.link {
            Some(link) => match link.open(frame) {
                Ok(inner) => {
                    opened = inner;
                    &opened[..]
                }
                Err(e) => return self.link_broken(e),
            },
            None if frame[0] == RECORD => {
                return self.on_garbled(None, "a link record before the handshake".into());
            }
            None => frame,
        };
        let body = match flexim_protocol::frame::split_exact(frame, flexim_protocol::MAX_BODY) {
            Ok((_, body)) => body,
            // An empty record holds no type byte at all: the server sealed nothing (found by
            // the engine's fuzz target; it used to index past the end).
            Err(e) => return self.on_garbled(frame.first().copied(), e.to_string()),
        };
        let kind = frame[0];
        match Datum::decode(kind, body) {
            Ok(datum) => self.on_datum(datum, frame),
            Err(e) => self.on_garbled(Some(kind), e.to_string()),
        }
    }

    /// A record from the server did not open: the connection cannot be trusted any further
    /// (someone on the path altered, replayed or injected data). The login fails, or the
    /// driver is told to close; nothing from the connection is handled after it.
    fn link_broken(&mut self, error: LinkError) {
        if let Phase::Login(_) = self.phase {
            return self.login_failed(LoginError::Link(error));
        }
        self.link = None;
        self.phase = Phase::Idle;
        self.reader.reset();
        self.pending.clear();
        self.looking_up.clear();
        self.to_ack.clear();
        self.emit(Event::LinkBroken(error));
    }

    /// The application accepts the server key that did not match the pin: it becomes the pin
    /// and the login goes on. Does nothing if no key is held.
    pub fn accept_server_key(&mut self) {
        let Phase::Login(login) = &mut self.phase else {
            return;
        };
        if let Some(step) = login.accept(&mut *self.random) {
            self.on_login_step(step);
        }
    }

    /// The first queued event that `pred` picks, left in the queue.
    pub fn find_event(&self, mut pred: impl FnMut(&Event) -> bool) -> Option<&Event> {
        self.events.iter().find(|e| pred(e))
    }

    /// Takes the first queued event that `pred` picks, leaving the others in order: how a
    /// driver that waits for one answer finds it among the events.
    pub fn take_event(&mut self, mut pred: impl FnMut(&Event) -> bool) -> Option<Event> {
        let at = self.events.iter().position(&mut pred)?;
        self.events.remove(at)
    }

    /// A fresh message id from the engine's random source (for [`Engine::seal`]).
    pub fn new_message_id(&mut self) -> String {
        crate::outbox::new_id(&mut *self.random)
    }

    /// Takes the bytes of a TCP stream read but not yet a whole frame, for a program that takes
    /// the connection over after the login (the load generator writes frames in bulk).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        self.reader.take()
    }

    /// Takes the connection's link, for a program that takes the connection over after the
    /// login (with [`Engine::take_buffered`]): the engine sends and reads nothing more on it.
    pub fn take_link(&mut self) -> Option<Link> {
        self.link.take()
    }

    /// Queues a datum for the connection, sealed into a record once the link is up.
    pub(crate) fn transmit(&mut self, datum: &Datum) -> Result<(), EngineError> {
        let frame = datum.to_frame()?;
        self.transmit_frame(frame)
    }

    /// Queues a whole frame for the connection, sealed into a record once the link is up.
    pub(crate) fn transmit_frame(&mut self, frame: Vec<u8>) -> Result<(), EngineError> {
        let bytes = match &mut self.link {
            Some(link) => link.seal(&frame)?,
            None => frame,
        };
        self.transmits.push_back(bytes);
        Ok(())
    }

    /// Reports an event.
    pub(crate) fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Reports a notice.
    pub(crate) fn notice(&mut self, text: String) {
        self.emit(Event::Notice(text));
    }

    /// Remembers a user's aliases and details, and returns the user as the engine reports it:
    /// with only the aliases pinned to its key (`contacts.rs`).
    pub(crate) fn learn(&mut self, user: &User) -> User {
        for alias in &user.aliases {
            self.aliases.insert(alias_key(alias), user.key);
        }
        let vouched = self.vouched(user);
        self.users.insert(user.key, vouched.clone());
        vouched
    }

    /// Dispatches one datum by the connection's phase.
    fn on_datum(&mut self, datum: Datum, frame: &[u8]) {
        match &mut self.phase {
            Phase::Idle => {
                let kind = datum.kind().name();
                self.notice(format!("ignored a {kind} datum outside a connection"));
            }
            Phase::Login(login) => {
                let step =
                    login.handle(datum, frame, self.config.pinned.as_ref(), &mut *self.random);
                self.on_login_step(step);
            }
            Phase::Ready { .. } => self.on_ready_datum(datum),
        }
    }

    /// A frame that does not decode (or a WebSocket message that is not one frame).
    fn on_garbled(&mut self, kind: Option<u8>, reason: String) {
        let kind = kind.and_then(DatumKind::from_u8);
        match (&mut self.phase, kind) {
            (Phase::Login(login), _) => {
                let step = login.garbled(reason);
                self.on_login_step(step);
            }
            // A garbled answer still uses up its request, or every later answer would be given
            // to the wrong one.
            (
                Phase::Ready { .. },
                Some(
                    DatumKind::Status
                    | DatumKind::User
                    | DatumKind::Roster
                    | DatumKind::RoomMemberList,
                ),
            ) => match self.pending.pop() {
                Some((id, request)) => self.on_answer(id, request, Err(reason)),
                None => self.notice(format!("the server sent a garbled datum: {reason}")),
            },
            (_, Some(DatumKind::Message)) => self.emit(Event::Undecryptable {
                from: String::new(),
                sender: None,
                date: 0,
                reason: format!("a garbled message arrived: {reason}"),
            }),
            _ => self.notice(format!("the server sent a garbled datum: {reason}")),
        }
    }

    /// Acts on a step of the login.
    fn on_login_step(&mut self, step: Step) {
        let sent = match step {
            Step::Wait => Ok(()),
            Step::Introduced { key, check, send } => {
                self.emit(Event::ServerKey { key, check });
                send.map_or(Ok(()), |d| self.transmit(&d))
            }
            Step::Send(d) => self.transmit(&d),
            Step::Linked { send, link } => {
                // Message 3 itself goes in clear; the link seals what follows.
                let sent = self.transmit(&send);
                self.link = Some(link);
                sent
            }
            Step::Done { server, me } => {
                self.logged_in(server, me);
                Ok(())
            }
            Step::Failed(e) => {
                self.login_failed(e);
                Ok(())
            }
        };
        // The handshake's datums are small and fixed: one that does not frame is a bug.
        if let Err(e) = sent {
            self.login_failed(LoginError::NotFlexim(e.to_string()));
        }
    }

    /// The login failed: the connection is over (the driver closes it).
    fn login_failed(&mut self, error: LoginError) {
        self.phase = Phase::Idle;
        self.reader.reset();
        self.link = None;
        self.pending.clear();
        self.emit(Event::LoginFailed(error));
    }

    /// The handshake succeeded: pin the key, send the unconfirmed messages again (before
    /// anything else), claim the alias, and open what waited for a lookup.
    fn logged_in(&mut self, server: User, me: User) {
        self.config.pinned = Some(server.key);
        self.learn(&me);
        self.phase = Phase::Ready {
            server: server.clone(),
            me: me.clone(),
        };
        self.emit(Event::LoggedIn { me, server });
        // Whether the server holds enough of this user's KeyPackages (others need one to add
        // it to a room while it is away); a command, not a message, so it does not change the
        // order of the messages resent next.
        if self.config.rooms {
            self.check_key_packages();
        }
        self.resend_outbox();
        // Held 1:1 messages after the unconfirmed ones, which were written before them.
        if self.config.pairs {
            self.drive_pairs();
        }
        self.alias_request = None;
        if let Some(alias) = self.config.alias.clone() {
            self.alias_request = self.register(&alias).ok();
        }
        self.drain_inbox();
    }

    /// Logged in: messages, notices and answers.
    fn on_ready_datum(&mut self, datum: Datum) {
        match datum {
            Datum::Message(message)
                if let Some(room) = flexim_protocol::conversation::RoomId::parse(&message.to) =>
            {
                self.on_room_message(room, message)
            }
            Datum::Message(message) => {
                self.inbox.push_back(message);
                self.drain_inbox();
            }
            Datum::Status(s) if status::is_notice(s.status) => self.on_notice(s),
            Datum::Status(_) | Datum::User(_) | Datum::Roster(_) | Datum::RoomMemberList(_) => {
                match self.pending.pop() {
                    Some((id, request)) => self.on_answer(id, request, Ok(datum)),
                    None => self.notice(format!(
                        "the server sent an answer to nothing: {}",
                        match &datum {
                            Datum::Status(s) => describe(s),
                            other => other.kind().name().to_string(),
                        }
                    )),
                }
            }
            Datum::Request(mut r) => match r.welcome.take() {
                Some(welcome) => self.on_invitation(r, welcome),
                None => self.on_request(r),
            },
            Datum::RoomMemberJoin(j) => self.on_room_join(j),
            Datum::RoomMemberPart(p) => self.on_room_part(p),
            Datum::Connection(c) => self.on_connection(c),
            other => self.notice(format!("ignored a {} datum", other.kind().name())),
        }
    }
}
