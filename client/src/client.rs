//! The client: login, requests and their answers, incoming messages as events.
//!
//! # Matching answers to requests
//!
//! After login the server answers every datum the client sends with exactly one datum, in order
//! (a Roster, a User or a Status), and interleaves unsolicited datums at any time: incoming
//! Messages, presence (Status ±10), SESSION_EXISTS (5), DELIVERED_STORED (6), TAKEN_OVER (-15),
//! SHUTTING_DOWN (-17) and TOO_SLOW (-18). The client therefore numbers what it sends and what
//! it receives: every datum sent counts one request, every answer-like datum received counts
//! one answer, and a waiter takes the answer whose number is its own. Unsolicited datums, and
//! answers whose waiter is gone (a cancelled future, or a datum sent with
//! [`Client::send_datum`]), are queued and come out of [`Client::next_event`] /
//! [`Client::recv_datum`] in arrival order. The numbering also survives cancellation, which
//! matters because `next_event` runs inside `tokio::select!` and may itself have to look up a
//! sender's alias (see [`Client::resolve`]).
//!
//! # Login
//!
//! Right after the client's User datum the server may send, in this order, the alias
//! registration Status, SESSION_EXISTS, stored messages and a DELIVERED_STORED notice. The alias outcome looks exactly like an answer (a Status 1, -9 or -12) and comes only
//! if an alias was asked for. So [`Client::connect`] sends one request of its own (GETUSER of
//! its own key) and files everything that arrives before that User answer as events: after
//! `connect` returns, every later answer belongs to a later request, whatever the server sent
//! during login.
//!
//! # Duplicates
//!
//! Stored messages are delivered at least once, and nothing stops a replay, so a message that
//! opens is remembered (sender, date and the start of the box, which holds its random nonce)
//! and a second copy is not reported again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use flexim_protocol::handshake::{ClientHandshake, ClientStep};
use flexim_protocol::keys::alias_key;
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Command, Datum, DatumKind, Message, PublicKey, Status, User};
use serde::Serialize;

use crate::endpoint::Endpoint;
use crate::error::ClientError;
use crate::identity::Identity;
use crate::transport::Transport;

/// How long [`Client::connect`] may take, from the TCP connect to the end of the login. A
/// server that accepts the connection but never speaks flexim would otherwise hang the client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A decrypted incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sender's key (the `from` field resolved to a key).
    pub from: PublicKey,
    /// The `from` field as the sender wrote it (its key hex, or one of its aliases).
    pub from_text: String,
    /// The `to` field as the sender wrote it (this client's key hex, or one of its aliases).
    pub to: String,
    /// When the sender says it sent the message (Unix seconds); bound into the encryption,
    /// so the server cannot change it.
    pub date: i64,
    /// The message's flags; bound into the encryption too.
    pub flags: Vec<String>,
    /// The decrypted text.
    pub text: String,
}

/// The JSON form of a received message, one object per line (see [`Received::json_line`]).
#[derive(Serialize)]
struct JsonLine<'a> {
    /// The sender's key hex.
    from: String,
    /// The `to` field as sent.
    to: &'a str,
    /// Unix seconds.
    date: i64,
    /// The flags.
    flags: &'a [String],
    /// The decrypted text.
    msg: &'a str,
}

impl Received {
    /// The message as one line of JSON, without the newline:
    /// `{"from":"<key hex>","to":"...","date":N,"flags":[...],"msg":"<plaintext>"}`.
    pub fn json_line(&self) -> String {
        let line = JsonLine {
            from: self.from.to_hex(),
            to: &self.to,
            date: self.date,
            flags: &self.flags,
            msg: &self.text,
        };
        // A struct of strings and integers always serializes; there is no map with
        // non-string keys and no custom Serialize impl that could fail.
        serde_json::to_string(&line).expect("a JSON line of strings and numbers serializes")
    }
}

/// Something that happened on the connection without being asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message that opened.
    Message(Received),
    /// A message that arrived but did not open (unknown sender alias, wrong key, tampered,
    /// malformed). It is reported rather than dropped so that the user knows something arrived.
    Undecryptable {
        /// The `from` field as sent.
        from: String,
        /// Why it did not open.
        reason: String,
    },
    /// A user came online or went offline.
    Presence {
        /// The user.
        key: PublicKey,
        /// True when the user came online.
        online: bool,
    },
    /// Any other Status: login notices (alias registration, SESSION_EXISTS, stored-message
    /// count), TAKEN_OVER, SHUTTING_DOWN, and answers to datums sent with
    /// [`Client::send_datum`].
    Status(Status),
    /// Any other datum (for instance the answer to a datum sent with [`Client::send_datum`]
    /// that is not a Status).
    Other(Datum),
    /// The server closed the connection. Every later call returns this again.
    Closed,
}

/// A logged-in connection to a flexim server.
pub struct Client {
    /// The connection.
    transport: Transport,
    /// Where it goes.
    endpoint: Endpoint,
    /// This user's secret key.
    identity: Identity,
    /// This user as the server knows it (aliases refreshed at login).
    me: User,
    /// The server's User datum; its key is proven by the handshake.
    server: User,
    /// Datums (or undecodable frames) received but not yet handed out, oldest first.
    pending: VecDeque<Result<Datum, ClientError>>,
    /// How many datums were sent since login (each gets exactly one answer).
    sent: u64,
    /// How many answers were received since login.
    answered: u64,
    /// Conversation keys per peer, derived once (an X25519 and an HKDF each).
    conversation_keys: HashMap<PublicKey, ConversationKey>,
    /// Alias (in its case-insensitive form) to key, learnt from GETUSER, ROSTER and SEARCH.
    aliases: HashMap<String, PublicKey>,
    /// The latest User datum seen per key, for display.
    users: HashMap<PublicKey, User>,
    /// [`Client::resolve`]'s GETUSER lookups in flight: request number to alias (in its
    /// case-insensitive form).
    lookups: HashMap<u64, String>,
    /// Lookups that failed and whose waiter has not collected the error yet, by alias.
    lookup_failures: HashMap<String, ClientError>,
    /// Messages recently reported, to drop duplicates (see the module documentation).
    seen: HashSet<SeenMessage>,
    /// The same, oldest first, to forget the oldest once [`DEDUP_WINDOW`] is reached.
    seen_order: VecDeque<SeenMessage>,
    /// Set once the server closed the connection.
    closed: bool,
}

/// How many delivered messages are remembered for de-duplication.
const DEDUP_WINDOW: usize = 4096;

/// What identifies a delivered message: the sender, the date, and the first 44 characters of
/// the box (33 bytes: the version byte, the 24-byte random nonce and 8 bytes of ciphertext).
type SeenMessage = (PublicKey, i64, String);

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.to_string())
            .field("me", &self.me.key)
            .field("server", &self.server.key)
            .field("pending", &self.pending.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// What [`Client::read_one`] found.
enum Read {
    /// The server closed the connection.
    Closed,
    /// The answer to one of [`Client::resolve`]'s lookups, already filed.
    Internal,
    /// Anything else: a datum, or a frame that did not decode.
    Item {
        /// The datum, or why it did not decode.
        item: Result<Datum, ClientError>,
        /// Its answer number, if it answers something this client sent.
        answer: Option<u64>,
    },
}

/// True for datums that are never the answer to anything the client sent.
fn is_unsolicited(datum: &Datum) -> bool {
    match datum {
        Datum::Roster(_) | Datum::User(_) => false,
        Datum::Status(s) => status::is_notice(s.status),
        _ => true,
    }
}

/// Type bytes of the datums that can be answers, for counting frames that fail to decode.
fn is_answer_kind(kind: u8) -> bool {
    [DatumKind::Roster, DatumKind::User, DatumKind::Status]
        .iter()
        .any(|k| *k as u8 == kind)
}

/// The current time in Unix seconds (0 if the clock is before 1970).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Turns an answer into a Status, an error Status into [`ClientError::Server`].
fn expect_status(answer: Datum) -> Result<Status, ClientError> {
    match answer {
        Datum::Status(s) if status::is_error(s.status) => Err(ClientError::Server {
            status: s.status,
            payload: s.payload,
        }),
        Datum::Status(s) => Ok(s),
        other => Err(unexpected("a Status", &other)),
    }
}

/// The error for an answer of the wrong kind (an error Status becomes a server error).
fn unexpected(expected: &'static str, got: &Datum) -> ClientError {
    match got {
        Datum::Status(s) if status::is_error(s.status) => ClientError::Server {
            status: s.status,
            payload: s.payload.clone(),
        },
        Datum::Status(s) => ClientError::Unexpected {
            expected,
            got: format!(
                "Status {} ({}): {}",
                s.status,
                status::name(s.status),
                s.payload
            ),
        },
        other => ClientError::Unexpected {
            expected,
            got: other.kind().name().to_string(),
        },
    }
}

impl Client {
    /// Connects to `server` (`HOST:PORT` or a `ws://` URL), logs in as `identity`, and claims
    /// `alias` on the way if given (the outcome arrives as an [`Event::Status`]; a taken alias
    /// does not fail the login). Everything the server sends during login (SESSION_EXISTS,
    /// stored messages, ...) is kept for [`Client::next_event`].
    pub async fn connect(
        server: &str,
        identity: &Identity,
        alias: Option<&str>,
    ) -> Result<Client, ClientError> {
        Client::connect_pinned(server, identity, alias, None).await
    }

    /// [`Client::connect`], refusing to log in unless the server's key is `server_key` (when
    /// given). Without a pin, the handshake proves only that the server holds *some* key.
    pub async fn connect_pinned(
        server: &str,
        identity: &Identity,
        alias: Option<&str>,
        server_key: Option<&PublicKey>,
    ) -> Result<Client, ClientError> {
        let endpoint = Endpoint::parse(server)?;
        let name = endpoint.to_string();
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Client::connect_endpoint(endpoint, identity, alias, server_key),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                endpoint: name,
                secs: CONNECT_TIMEOUT.as_secs(),
            }),
        }
    }

    /// [`Client::connect_pinned`] for a parsed address, without the overall time limit.
    pub async fn connect_endpoint(
        endpoint: Endpoint,
        identity: &Identity,
        alias: Option<&str>,
        server_key: Option<&PublicKey>,
    ) -> Result<Client, ClientError> {
        let mut transport = Transport::connect(&endpoint).await?;
        transport.send_header().await?;
        let mut handshake =
            ClientHandshake::new(identity.secret().clone(), alias.map(str::to_owned));
        let mut first = true;
        let (server, me) = loop {
            let received = transport.recv().await;
            // Garbage in place of the server's first datum means another kind of server (an
            // HTTP server, say) is listening there; saying so beats a framing error.
            let not_flexim = |e: &ClientError| ClientError::NotFlexim {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            };
            let datum = match received {
                Ok(Some(datum)) => datum,
                Ok(None) => return Err(ClientError::ClosedDuringHandshake),
                Err(e) if first && e.is_garbage() => return Err(not_flexim(&e)),
                Err(e) => return Err(e),
            };
            if first && !matches!(datum, Datum::User(_) | Datum::Status(_)) {
                return Err(not_flexim(&ClientError::Unexpected {
                    expected: "the server's User datum",
                    got: datum.kind().name().to_string(),
                }));
            }
            // The pin is checked before AUTH goes out, so that an impostor does not even learn
            // who is connecting.
            if let (true, Some(pinned), Datum::User(user)) = (first, server_key, &datum)
                && user.key != *pinned
            {
                return Err(ClientError::ServerKeyMismatch {
                    endpoint: endpoint.to_string(),
                    pinned: *pinned,
                    got: user.key,
                });
            }
            first = false;
            // The protocol crate takes an infallible fill function; a failure is recorded and
            // checked before anything built from those bytes is sent.
            let mut rng_error = None;
            let step = handshake.handle(datum, &mut |buf: &mut [u8]| {
                if let Err(e) = getrandom::fill(buf) {
                    rng_error = Some(e);
                }
            });
            if let Some(e) = rng_error {
                return Err(ClientError::Random(e));
            }
            match step? {
                ClientStep::Send(datum) => transport.send(&datum).await?,
                ClientStep::Done { server, me } => break (server, me),
            }
        };
        let mut client = Client {
            transport,
            endpoint,
            identity: identity.clone(),
            me,
            server,
            pending: VecDeque::new(),
            sent: 0,
            answered: 0,
            conversation_keys: HashMap::new(),
            aliases: HashMap::new(),
            users: HashMap::new(),
            lookups: HashMap::new(),
            lookup_failures: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            closed: false,
        };
        client.finish_login(alias.is_some()).await?;
        Ok(client)
    }

    /// Files the login notices as events, up to the answer to a GETUSER of our own key (see
    /// the module documentation for why).
    async fn finish_login(&mut self, alias_status_due: bool) -> Result<(), ClientError> {
        let me_hex = self.me.key.to_hex();
        self.transport
            .send(&Datum::Command(Command::new(cmd::GETUSER, &[&me_hex])))
            .await?;
        let mut alias_status_due = alias_status_due;
        loop {
            let datum = match self.transport.recv().await {
                Ok(Some(datum)) => datum,
                Ok(None) => {
                    self.closed = true;
                    // A server that shuts down right after login explains itself in a Status;
                    // that explanation is more useful than "closed".
                    let reason = self.pending.iter().rev().find_map(|d| match d {
                        Ok(Datum::Status(s)) if status::is_error(s.status) => Some(s.clone()),
                        _ => None,
                    });
                    return Err(match reason {
                        Some(s) => ClientError::Server {
                            status: s.status,
                            payload: s.payload,
                        },
                        None => ClientError::Closed,
                    });
                }
                Err(e @ ClientError::BadDatum { .. }) => {
                    self.pending.push_back(Err(e));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match &datum {
                Datum::User(user) if user.key == self.me.key => {
                    // The handshake's User predates the alias registration; this one has it.
                    self.me.aliases = user.aliases.clone();
                    if user.online.is_some() {
                        self.me.online = user.online;
                    }
                    self.remember(user.clone());
                    break;
                }
                // The first answer-like Status after login is the outcome of the alias in AUTH.
                Datum::Status(_) if alias_status_due && !is_unsolicited(&datum) => {
                    alias_status_due = false;
                    self.pending.push_back(Ok(datum));
                }
                // The server refused the GETUSER itself. That should not happen, but the login
                // is complete all the same and the numbering stays right.
                Datum::Status(s) if status::is_error(s.status) && !is_unsolicited(&datum) => {
                    break;
                }
                _ => self.pending.push_back(Ok(datum)),
            }
        }
        self.sent = 1;
        self.answered = 1;
        Ok(())
    }

    /// This user as the server knows it: key, aliases (as of login), previous `last_seen`.
    pub fn me(&self) -> &User {
        &self.me
    }

    /// The server's User datum. The handshake proved that the server holds the secret half
    /// of this key; whether it is the *right* server is for the user to check by comparing
    /// its fingerprint out of band.
    pub fn server(&self) -> &User {
        &self.server
    }

    /// The server address.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// This user's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The latest User datum this client has seen for `key` (from GETUSER, ROSTER, SEARCH),
    /// with presence updated from presence notices. `None` if it never asked.
    pub fn cached_user(&self, key: &PublicKey) -> Option<&User> {
        self.users.get(key)
    }

    /// Whether events are queued, so that [`Client::next_event`] returns without waiting for
    /// the server (for instance the login notices right after [`Client::connect`]).
    pub fn has_queued_events(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the server has closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Remembers a user's aliases and details.
    fn remember(&mut self, user: User) {
        for alias in &user.aliases {
            self.aliases.insert(alias_key(alias), user.key);
        }
        self.users.insert(user.key, user);
    }

    /// Sends one datum without waiting for its answer. Its answer (every datum gets one) comes
    /// out of [`Client::recv_datum`] or [`Client::next_event`].
    pub async fn send_datum(&mut self, datum: &Datum) -> Result<(), ClientError> {
        self.transport.queue(datum)?;
        self.sent += 1;
        self.transport.flush().await
    }

    /// Sends raw bytes (on WebSocket: one binary message), for testing the server's handling
    /// of broken input. They are not counted as a request: whatever the server answers comes
    /// out of [`Client::recv_datum`] or [`Client::next_event`].
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.transport.send_raw(bytes).await
    }

    /// The next datum as it arrived, queued ones first; `Ok(None)` once the server has closed
    /// the connection. Messages are not decrypted. Cancel-safe.
    pub async fn recv_datum(&mut self) -> Result<Option<Datum>, ClientError> {
        loop {
            if let Some(queued) = self.pending.pop_front() {
                return queued.map(Some);
            }
            if self.closed {
                return Ok(None);
            }
            match self.read_one().await? {
                Read::Closed => return Ok(None),
                Read::Internal => {}
                Read::Item { item, .. } => return item.map(Some),
            }
        }
    }

    /// Reads one datum from the connection, numbers it if it is an answer, and consumes it
    /// if it answers one of [`Client::resolve`]'s lookups. Returns `Err` only for failures of
    /// the connection itself; a frame that does not decode is an [`Read::Item`] too.
    /// Cancel-safe, because [`Transport::recv`] is and the filing happens after it returns.
    async fn read_one(&mut self) -> Result<Read, ClientError> {
        let (item, answer_like) = match self.transport.recv().await {
            Ok(Some(datum)) => {
                let answer_like = !is_unsolicited(&datum);
                (Ok(datum), answer_like)
            }
            Ok(None) => {
                self.closed = true;
                return Ok(Read::Closed);
            }
            // A garbled answer still uses up its number, or every later answer would be
            // given to the wrong request.
            Err(ClientError::BadDatum { kind, error }) => (
                Err(ClientError::BadDatum { kind, error }),
                is_answer_kind(kind),
            ),
            Err(e) => return Err(e),
        };
        // An answer-like datum when nothing is outstanding is a server quirk; it is handed
        // out as an event rather than shifting the numbering.
        let answer = if answer_like && self.answered < self.sent {
            self.answered += 1;
            Some(self.answered)
        } else {
            None
        };
        if let Some(who) = answer.and_then(|n| self.lookups.remove(&n)) {
            match item {
                Ok(Datum::User(user)) => {
                    self.aliases.insert(who, user.key);
                    self.remember(user);
                }
                Ok(other) => {
                    self.lookup_failures
                        .insert(who, unexpected("a User", &other));
                }
                Err(e) => {
                    self.lookup_failures.insert(who, e);
                }
            }
            return Ok(Read::Internal);
        }
        Ok(Read::Item { item, answer })
    }

    /// Sends a datum and waits for its answer, queueing everything else that arrives
    /// meanwhile. An error Status is returned as `Ok(Datum::Status)`; use the typed helpers
    /// ([`Client::send_text`], [`Client::get_user`], ...) to get it as an error.
    ///
    /// If this future is dropped before the answer arrives, the answer later comes out of
    /// [`Client::next_event`] as an [`Event::Status`] or [`Event::Other`].
    pub async fn request(&mut self, datum: &Datum) -> Result<Datum, ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        self.transport.queue(datum)?;
        self.sent += 1;
        let mine = self.sent;
        self.transport.flush().await?;
        loop {
            match self.read_one().await? {
                Read::Item {
                    item,
                    answer: Some(n),
                } if n == mine => return item,
                Read::Item { item, .. } => self.pending.push_back(item),
                Read::Internal => {}
                Read::Closed => return Err(ClientError::Closed),
            }
        }
    }

    /// Sends a Command and waits for its answer: the first Roster or User datum, or a Status
    /// that is neither presence nor a notice (see the module documentation). Messages and
    /// notices arriving meanwhile are kept for [`Client::next_event`].
    pub async fn command(&mut self, cmd: &str, payload: &[&str]) -> Result<Datum, ClientError> {
        self.request(&Datum::Command(Command::new(cmd, payload)))
            .await
    }

    /// Looks a user up by key or alias (GETUSER) and remembers the answer.
    pub async fn get_user(&mut self, who: &str) -> Result<User, ClientError> {
        match self.command(cmd::GETUSER, &[who]).await? {
            Datum::User(user) => {
                if PublicKey::from_hex(who).is_none() {
                    self.aliases.insert(alias_key(who), user.key);
                }
                self.remember(user.clone());
                Ok(user)
            }
            other => Err(unexpected("a User", &other)),
        }
    }

    /// The key for `who`: 64 hex digits parse directly, an alias is looked up with GETUSER
    /// once and then cached.
    ///
    /// Cancel-safe, unlike a plain request: [`Client::next_event`] resolves senders' aliases
    /// and may be cancelled at any time. The lookup is therefore recorded in the client; a
    /// retry waits for the lookup already under way instead of sending another, and whoever
    /// reads its answer files it in the cache.
    pub async fn resolve(&mut self, who: &str) -> Result<PublicKey, ClientError> {
        if let Some(key) = PublicKey::from_hex(who) {
            return Ok(key);
        }
        let name = alias_key(who);
        loop {
            if let Some(key) = self.aliases.get(&name) {
                return Ok(*key);
            }
            if let Some(error) = self.lookup_failures.remove(&name) {
                return Err(error);
            }
            if self.closed {
                return Err(ClientError::Closed);
            }
            if !self.lookups.values().any(|w| *w == name) {
                self.transport
                    .queue(&Datum::Command(Command::new(cmd::GETUSER, &[who])))?;
                self.sent += 1;
                self.lookups.insert(self.sent, name.clone());
            }
            match self.read_one().await? {
                Read::Item { item, .. } => self.pending.push_back(item),
                Read::Internal => {}
                Read::Closed => return Err(ClientError::Closed),
            }
        }
    }

    /// The conversation key with `peer`, derived on first use.
    fn conversation_key(&mut self, peer: &PublicKey) -> Result<ConversationKey, ClientError> {
        if let Some(key) = self.conversation_keys.get(peer) {
            return Ok(key.clone());
        }
        let key = ConversationKey::derive(self.identity.secret(), peer)?;
        self.conversation_keys.insert(*peer, key.clone());
        Ok(key)
    }

    /// Builds the Message datum carrying `text` sealed for `to`, dated now, from this user's
    /// key. Sending it is up to the caller; [`Client::send_text`] does both.
    pub fn seal_message(
        &mut self,
        to: &PublicKey,
        text: &str,
        flags: &[String],
    ) -> Result<Message, ClientError> {
        let key = self.conversation_key(to)?;
        let me = self.me.key;
        let date = unix_now();
        let mut nonce = [0u8; flexim_protocol::handshake::NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(ClientError::Random)?;
        let envelope = Envelope {
            sender: &me,
            recipient: to,
            date,
            flags,
        };
        let msg = e2e::seal(&key, &envelope, text, nonce)?;
        Ok(Message {
            to: to.to_hex(),
            from: me.to_hex(),
            flags: flags.to_vec(),
            date,
            msg,
            id: None,
        })
    }

    /// Encrypts `text` for `to` (a key or an alias) and sends it. Returns the server's
    /// positive Status ([`status::STORED`] or [`status::RELAYED`]); an error Status becomes
    /// [`ClientError::Server`].
    pub async fn send_text(
        &mut self,
        to: &str,
        text: &str,
        flags: &[String],
    ) -> Result<Status, ClientError> {
        let recipient = self.resolve(to).await?;
        let message = self.seal_message(&recipient, text, flags)?;
        expect_status(self.request(&Datum::Message(message)).await?)
    }

    /// The next event: queued ones first, then whatever the server sends. Messages are
    /// decrypted here. Cancel-safe: a datum leaves the queue only once its event is complete,
    /// so a cancelled call (for instance while resolving a sender's alias) loses nothing.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            while self.pending.is_empty() {
                if self.closed {
                    return Ok(Event::Closed);
                }
                match self.read_one().await? {
                    Read::Item { item, .. } => self.pending.push_back(item),
                    Read::Internal => {}
                    Read::Closed => return Ok(Event::Closed),
                }
            }
            let datum = match self.pending.front() {
                Some(Ok(datum)) => datum.clone(),
                Some(Err(_)) | None => {
                    return match self.pending.pop_front() {
                        Some(Err(e)) => Err(e),
                        // Unreachable: the queue was filled above; `Closed` is harmless.
                        _ => Ok(Event::Closed),
                    };
                }
            };
            let event = self.event_for(datum).await;
            self.pending.pop_front();
            if let Some(event) = event {
                return Ok(event);
            }
        }
    }

    /// Turns a datum into an event, decrypting messages; `None` for a duplicate message.
    async fn event_for(&mut self, datum: Datum) -> Option<Event> {
        Some(match datum {
            Datum::Message(message) => return self.open_message(message).await,
            Datum::Status(s)
                if s.status == status::PRESENCE_ONLINE || s.status == status::PRESENCE_OFFLINE =>
            {
                match PublicKey::from_hex(&s.payload) {
                    Some(key) => {
                        let online = s.status == status::PRESENCE_ONLINE;
                        if let Some(user) = self.users.get_mut(&key) {
                            user.online = Some(online);
                        }
                        Event::Presence { key, online }
                    }
                    None => Event::Status(s),
                }
            }
            Datum::Status(s) => Event::Status(s),
            other => Event::Other(other),
        })
    }

    /// Opens an incoming message; any failure becomes [`Event::Undecryptable`], a copy of a
    /// message already reported becomes `None`.
    async fn open_message(&mut self, message: Message) -> Option<Event> {
        let undecryptable = |reason: String| {
            Some(Event::Undecryptable {
                from: message.from.clone(),
                reason,
            })
        };
        let sender = match self.resolve(&message.from).await {
            Ok(key) => key,
            Err(e) => return undecryptable(format!("cannot resolve the sender: {e}")),
        };
        let key = match self.conversation_key(&sender) {
            Ok(key) => key,
            Err(e) => return undecryptable(e.to_string()),
        };
        // The server delivers to this session only what is addressed to this user, whatever
        // form `to` takes, so the recipient bound into the box is always our own key.
        let me = self.me.key;
        let envelope = Envelope {
            sender: &sender,
            recipient: &me,
            date: message.date,
            flags: &message.flags,
        };
        let text = match e2e::open(&key, &envelope, &message.msg) {
            Ok(text) => text,
            Err(e) => return undecryptable(e.to_string()),
        };
        // Only boxes that opened are remembered, so a forgery cannot suppress a real message.
        let id: SeenMessage = (sender, message.date, message.msg.chars().take(44).collect());
        if !self.seen.insert(id.clone()) {
            return None;
        }
        self.seen_order.push_back(id);
        if self.seen_order.len() > DEDUP_WINDOW
            && let Some(oldest) = self.seen_order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        Some(Event::Message(Received {
            from: sender,
            from_text: message.from,
            to: message.to,
            date: message.date,
            flags: message.flags,
            text,
        }))
    }

    /// GHOST: makes this connection the key's active session (Status 4); the older session
    /// is closed by the server.
    pub async fn ghost(&mut self) -> Result<Status, ClientError> {
        expect_status(self.command(cmd::GHOST, &[]).await?)
    }

    /// ROSTER: the users the server knows, with their presence.
    pub async fn roster(&mut self) -> Result<Vec<User>, ClientError> {
        let answer = self.command(cmd::ROSTER, &[]).await?;
        self.users_from(answer)
    }

    /// SEARCH: the users whose alias contains `text`.
    pub async fn search(&mut self, text: &str) -> Result<Vec<User>, ClientError> {
        let answer = self.command(cmd::SEARCH, &[text]).await?;
        self.users_from(answer)
    }

    /// Remembers and returns the users of a Roster answer.
    fn users_from(&mut self, answer: Datum) -> Result<Vec<User>, ClientError> {
        match answer {
            Datum::Roster(roster) => {
                for user in &roster.users {
                    self.remember(user.clone());
                }
                Ok(roster.users)
            }
            other => Err(unexpected("a Roster", &other)),
        }
    }

    /// REGISTER: claims `alias` for this key.
    pub async fn register(&mut self, alias: &str) -> Result<Status, ClientError> {
        let answer = expect_status(self.command(cmd::REGISTER, &[alias]).await?)?;
        if !self
            .me
            .aliases
            .iter()
            .any(|a| alias_key(a) == alias_key(alias))
        {
            self.me.aliases.push(alias.to_string());
        }
        self.aliases.insert(alias_key(alias), self.me.key);
        Ok(answer)
    }

    /// OFFLINES: asks for the messages stored while offline; they arrive as events and the
    /// returned Status says how many there were.
    pub async fn offlines(&mut self) -> Result<Status, ClientError> {
        expect_status(self.command(cmd::OFFLINES, &[]).await?)
    }

    /// Closes the connection politely. Queued events stay readable.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.transport.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_format() {
        let r = Received {
            from: PublicKey([0xab; 32]),
            from_text: "alice".into(),
            to: "bob".into(),
            date: 1_700_000_000,
            flags: vec!["NOTIFY".into()],
            text: "hi \"there\"\nline two ✓".into(),
        };
        let line = r.json_line();
        assert!(!line.contains('\n'));
        assert_eq!(
            line,
            format!(
                r#"{{"from":"{}","to":"bob","date":1700000000,"flags":["NOTIFY"],"msg":"hi \"there\"\nline two ✓"}}"#,
                "ab".repeat(32)
            )
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "hi \"there\"\nline two ✓");
        assert_eq!(v["flags"][0], "NOTIFY");
    }

    #[test]
    fn answers_and_notices_are_told_apart() {
        let st = |c| Datum::Status(Status::new(c, ""));
        for notice in [10, -10, 5, 6, -15, -17, -18] {
            assert!(is_unsolicited(&st(notice)), "{notice}");
        }
        for answer in [1, 2, 3, 4, -1, -3, -7, -8, -9, -11, -12, -13, -14, -16] {
            assert!(!is_unsolicited(&st(answer)), "{answer}");
        }
        assert!(is_answer_kind(DatumKind::Status as u8));
        assert!(!is_answer_kind(DatumKind::Message as u8));
    }

    #[test]
    fn error_statuses_become_server_errors() {
        let err = expect_status(Datum::Status(Status::new(-7, "not you"))).unwrap_err();
        assert_eq!(err.server_status(), Some(-7));
        assert_eq!(err.to_string(), "spoof (-7): not you");
        assert!(!err.is_connection_lost());
        assert_eq!(
            expect_status(Datum::Status(Status::new(3, "relayed")))
                .unwrap()
                .status,
            3
        );
    }
}
