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
//! # Delivery that loses nothing
//!
//! Every message this client seals gets a fresh random `id`. The server keeps an id'd message
//! until its recipient acknowledges it, and tells the sender how far it got: the answer `2`
//! STORED (durable), `3` RELAYED (handed to the recipient's connection, not yet durable), or an
//! error, and later the receipts `7` DELIVERED or `8` STORED_LATER. The client keeps each sent
//! message in its [`Outbox`] until a final Status about it arrives (see
//! [`crate::outbox::is_final`]); that bookkeeping happens in [`Client::read_one`], so it works
//! whichever call happens to read the Status. After a lost connection the application moves the
//! outbox to a new connection with [`Client::take_outbox`] and [`Client::resend`].
//!
//! On the receiving side, a message with an id is reported with that id ([`Received::id`]), and
//! the application acknowledges it with [`Client::ack`] once it has processed it. Until then the
//! server redelivers it at every login, so nothing is lost if the application dies in between.
//!
//! # Duplicates
//!
//! Stored messages are delivered at least once, senders resend unconfirmed messages after a
//! reconnect, and nothing stops a replay, so a second copy of a message is not reported again.
//! A message with an id is recognised by its sender and id. A message without one is
//! recognised by its sender, date and the start of its box, which holds its random nonce. A
//! repeated id is still acknowledged (automatically, see [`Client::next_event`]) once the
//! application has acknowledged the first copy, because the server would otherwise redeliver
//! it for ever.

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
use crate::outbox::{Outbox, new_message_id};
use crate::transport::{RawConnection, Transport};

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
    /// The sender's id for this message, when it set one. Pass it to [`Client::ack`] once the
    /// message is processed; until then the server keeps it and delivers it again at the next
    /// login.
    pub id: Option<String>,
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
    /// The message id, left out when the sender set none.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

impl Received {
    /// The message as one line of JSON, without the newline:
    /// `{"from":"<key hex>","to":"...","date":N,"flags":[...],"msg":"<plaintext>","id":"..."}`,
    /// where `id` is present only when the sender set one.
    pub fn json_line(&self) -> String {
        let line = JsonLine {
            from: self.from.to_hex(),
            to: &self.to,
            date: self.date,
            flags: &self.flags,
            msg: &self.text,
            id: self.id.as_deref(),
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
    /// A receipt about a message this client (or an earlier connection of this user) sent:
    /// `7` DELIVERED, the recipient acknowledged it, or `8` STORED_LATER, it had been relayed
    /// but the recipient's connection ended before acknowledging it, and it is durably stored
    /// now. Either way the server no longer needs the sender to send it again.
    Receipt {
        /// The id of the message the receipt is about.
        id: String,
        /// The receipt itself (its code is [`status::DELIVERED`] or [`status::STORED_LATER`]).
        status: Status,
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
    /// Messages with an id recently reported, by sender and id, to drop repeats.
    seen_ids: HashSet<(PublicKey, String)>,
    /// The same, oldest first, to forget the oldest once [`DEDUP_WINDOW`] is reached.
    seen_id_order: VecDeque<(PublicKey, String)>,
    /// Ids reported to the application and not yet acknowledged by it. A repeat of one of
    /// these is dropped without an automatic ACK: acknowledging it would tell the server to
    /// forget a message the application may not have processed yet, and the application's own
    /// ACK of the id will cover the repeat too.
    unacked: HashSet<String>,
    /// Ids to acknowledge without the application's help (repeats of processed messages,
    /// messages that can never be opened); sent by [`Client::next_event`], [`Client::ack`] and
    /// [`Client::close`].
    pending_acks: Vec<String>,
    /// Request numbers of the automatic ACKs, whose answers nobody waits for; they are
    /// consumed rather than handed out as events.
    internal_acks: HashSet<u64>,
    /// Set when automatic ACKs were queued but not flushed yet.
    acks_unflushed: bool,
    /// Request numbers of the Messages with an id sent on this connection, so that an answer
    /// without an id (from a server that predates ids) still settles the right message.
    message_requests: HashMap<u64, String>,
    /// Messages sent and not yet confirmed, oldest first.
    outbox: Outbox,
    /// Set once the server closed the connection.
    closed: bool,
}

/// How many delivered messages are remembered for de-duplication.
const DEDUP_WINDOW: usize = 4096;

/// The most ids one ACK command carries. An id is at most 64 characters, 66 bytes in
/// msgpack, so 500 of them stay well inside the server's default 48 KiB datum limit.
const MAX_ACK_IDS: usize = 500;

/// What identifies a delivered message: the sender, the date, and the first 44 characters of
/// the box (33 bytes: the version byte, the 24-byte random nonce and 8 bytes of ciphertext).
type SeenMessage = (PublicKey, i64, String);

/// What a client remembers about the messages it reported, carried from one connection to the
/// next ([`Client::take_seen`], [`Client::restore_seen`]). The server redelivers everything
/// not acknowledged, and a sender resends what it never saw confirmed, so a message can come
/// again on a later connection; with this it is still reported once.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Messages with an id, by sender and id.
    ids: HashSet<(PublicKey, String)>,
    /// The same, oldest first, to forget the oldest once [`DEDUP_WINDOW`] is reached.
    id_order: VecDeque<(PublicKey, String)>,
    /// Messages without an id, by sender, date and the start of the box (its nonce).
    nonces: HashSet<SeenMessage>,
    /// The same, oldest first.
    nonce_order: VecDeque<SeenMessage>,
}

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

/// Why a message did not open.
struct Unopened {
    /// What went wrong, for [`Event::Undecryptable`].
    reason: String,
    /// Whether the message can never open (a bad box, an unknown sender), as opposed to a
    /// failure that may pass (the connection failing during the sender lookup).
    for_good: bool,
}

impl Unopened {
    /// A failure that no later attempt can fix.
    fn for_good(reason: String) -> Unopened {
        Unopened {
            reason,
            for_good: true,
        }
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
            seen_ids: HashSet::new(),
            seen_id_order: VecDeque::new(),
            unacked: HashSet::new(),
            pending_acks: Vec::new(),
            internal_acks: HashSet::new(),
            acks_unflushed: false,
            message_requests: HashMap::new(),
            outbox: Outbox::new(),
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
        self.note_message_request(datum);
        self.transport.flush().await
    }

    /// Remembers which message id the request just counted carries, if it is a Message with
    /// one (see [`Client::message_requests`]).
    fn note_message_request(&mut self, datum: &Datum) {
        if let Datum::Message(Message { id: Some(id), .. }) = datum {
            self.message_requests.insert(self.sent, id.clone());
        }
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
        // Any Status about one of our messages moves the outbox along, whether it is an answer
        // or a receipt and whoever reads it. An answer without an id (a server that predates
        // ids) is matched to its message by its number.
        let by_number = answer.and_then(|n| self.message_requests.remove(&n));
        if let Ok(Datum::Status(s)) = &item {
            // A receipt may name several messages (`ids`): each is settled.
            for id in s
                .about()
                .chain(by_number.as_deref().filter(|_| s.id.is_none()))
            {
                self.outbox.settle(id, s.status);
            }
        }
        if answer.is_some_and(|n| self.internal_acks.remove(&n)) {
            return Ok(Read::Internal);
        }
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
        self.note_message_request(datum);
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
    /// key, with a fresh random id. Sending it is up to the caller (and so is keeping it in an
    /// outbox); [`Client::send_text`] does both.
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
            id: Some(new_message_id()?),
        })
    }

    /// Encrypts `text` for `to` (a key or an alias) and sends it. Returns the server's
    /// positive Status ([`status::STORED`] or [`status::RELAYED`]), carrying the message's id;
    /// an error Status becomes [`ClientError::Server`].
    ///
    /// The message goes into this client's [`Outbox`] before it is sent and stays there until
    /// it is confirmed: at once by STORED, or later by a receipt ([`Event::Receipt`]) after
    /// RELAYED. If the connection is lost first, it is still there for [`Client::resend`].
    pub async fn send_text(
        &mut self,
        to: &str,
        text: &str,
        flags: &[String],
    ) -> Result<Status, ClientError> {
        let recipient = self.resolve(to).await?;
        let message = self.seal_message(&recipient, text, flags)?;
        self.outbox.push(message.clone());
        expect_status(self.request(&Datum::Message(message)).await?)
    }

    /// Ends this client and hands over its logged-in connection (see [`RawConnection`]) after
    /// writing everything queued, for a program that takes over the wire itself, such as the
    /// load generator. Datums already received but not handed out yet (login notices) are
    /// dropped, and so is this client's state (outbox, de-duplication, automatic ACKs not yet
    /// queued): the caller takes over all of it.
    pub async fn into_parts(self) -> Result<RawConnection, ClientError> {
        self.transport.into_parts().await
    }

    /// The messages sent on this connection (or handed to [`Client::resend`]) that are not
    /// confirmed yet, oldest first.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Takes the unconfirmed messages out of this client, typically after its connection was
    /// lost, to pass them to [`Client::resend`] on a new connection.
    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.outbox)
    }

    /// Takes what this client remembers about the messages it reported, for the next
    /// connection's [`Client::restore_seen`].
    pub fn take_seen(&mut self) -> Seen {
        Seen {
            ids: std::mem::take(&mut self.seen_ids),
            id_order: std::mem::take(&mut self.seen_id_order),
            nonces: std::mem::take(&mut self.seen),
            nonce_order: std::mem::take(&mut self.seen_order),
        }
    }

    /// Continues the de-duplication of an earlier connection: a message it reported is not
    /// reported again, and is acknowledged automatically when it comes again. The earlier
    /// connection ended, so the application has had every message it reported there; a
    /// repeat of one it could not acknowledge before the end is acknowledged for it.
    pub fn restore_seen(&mut self, seen: Seen) {
        self.seen_ids = seen.ids;
        self.seen_id_order = seen.id_order;
        self.seen = seen.nonces;
        self.seen_order = seen.nonce_order;
    }

    /// Sends every message of `outbox` again, byte for byte (same id, same nonce) and in the
    /// original order, each after the answer to the one before. Call it right after
    /// connecting and before sending anything new, so that the recipient gets the messages in
    /// the order they were written.
    ///
    /// The messages join this client's outbox before the first one goes out, so that a
    /// connection lost during the resend loses none of them. A message that a receipt already
    /// queued on this connection confirms is skipped. Returns the server's answers, one per
    /// message sent, in order; each carries its message's id, and an error answer (for
    /// instance [`status::QUEUE_FULL`]) is returned as a Status like the others, because the
    /// remaining messages are sent all the same. `Err` means the connection failed.
    pub async fn resend(&mut self, outbox: Outbox) -> Result<Vec<Status>, ClientError> {
        let messages: Vec<Message> = outbox.into_iter().collect();
        for message in &messages {
            self.outbox.push(message.clone());
        }
        // Receipts that arrived during the login (filed as events before this outbox was
        // here) may already confirm some of the messages.
        let receipts: Vec<(String, i8)> = self
            .pending
            .iter()
            .flat_map(|d| match d {
                Ok(Datum::Status(s)) => s.about().map(|id| (id.to_string(), s.status)).collect(),
                _ => Vec::new(),
            })
            .collect();
        for (id, code) in receipts {
            self.outbox.settle(&id, code);
        }
        let mut answers = Vec::with_capacity(messages.len());
        for message in messages {
            let Some(id) = message.id.clone() else {
                continue;
            };
            // A receipt read while waiting for an earlier answer may confirm a later message.
            if !self.outbox.contains(&id) {
                continue;
            }
            match self.request(&Datum::Message(message)).await? {
                Datum::Status(mut s) => {
                    s.id.get_or_insert(id);
                    answers.push(s);
                }
                other => return Err(unexpected("a Status", &other)),
            }
        }
        Ok(answers)
    }

    /// ACK: tells the server that the messages with these ids were received and processed, so
    /// that it forgets them and sends their senders `7` DELIVERED. Call it after handling a
    /// [`Received`] whose `id` is set. Ids this client owes the server anyway (see
    /// [`Client::next_event`]) go along. Returns the server's answer (Status `1`); with no id
    /// at all, nothing is sent and the answer is made up locally. Very long lists are split
    /// into several commands, and the last answer is returned.
    pub async fn ack(&mut self, ids: &[String]) -> Result<Status, ClientError> {
        for id in ids {
            self.unacked.remove(id);
        }
        let mut all = std::mem::take(&mut self.pending_acks);
        for id in ids {
            if !all.contains(id) {
                all.push(id.clone());
            }
        }
        if all.is_empty() {
            return Ok(Status::new(status::OK, "acknowledged 0"));
        }
        let mut last = None;
        for chunk in all.chunks(MAX_ACK_IDS) {
            let payload: Vec<&str> = chunk.iter().map(String::as_str).collect();
            last = Some(expect_status(self.command(cmd::ACK, &payload).await?)?);
        }
        // `all` is not empty, so at least one chunk was sent.
        Ok(last.unwrap_or_else(|| Status::new(status::OK, "acknowledged 0")))
    }

    /// Queues ACK commands for the ids in `pending_acks`, without waiting: their answers are
    /// consumed by [`Client::read_one`]. The bytes go out with the next flush, which every
    /// read does first.
    fn queue_pending_acks(&mut self) {
        if self.pending_acks.is_empty() || self.closed {
            return;
        }
        let ids = std::mem::take(&mut self.pending_acks);
        for chunk in ids.chunks(MAX_ACK_IDS) {
            let payload: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let datum = Datum::Command(Command::new(cmd::ACK, &payload));
            // Only an oversized frame fails to queue, which MAX_ACK_IDS rules out; if it did,
            // the server would simply deliver those messages again at the next login.
            if self.transport.queue(&datum).is_ok() {
                self.sent += 1;
                self.internal_acks.insert(self.sent);
                self.acks_unflushed = true;
            }
        }
    }

    /// The next event: queued ones first, then whatever the server sends. Messages are
    /// decrypted here. Cancel-safe: a datum leaves the queue only once its event is complete,
    /// so a cancelled call (for instance while resolving a sender's alias) loses nothing.
    ///
    /// A repeat of a message already reported is dropped here, and so is acknowledged
    /// automatically when the application has acknowledged the first copy; so is a message
    /// with an id that can never be opened. Those ACKs go out without waiting for their
    /// answers, which never come out as events.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            // Automatic ACKs queued by an earlier call go out now rather than with the next
            // read, which may be a while away if events are queued. A failure is left for
            // that read to report, so that the events queued already still come out first.
            if self.acks_unflushed && !self.closed {
                self.acks_unflushed = false;
                let _ = self.transport.flush().await;
            }
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
            // A receipt naming several messages comes out as one Event::Receipt per message.
            if let Datum::Status(s) = &datum
                && !s.ids.is_empty()
            {
                self.pending.pop_front();
                for id in s.ids.iter().rev() {
                    let one = Status::new(s.status, s.payload.clone()).with_id(Some(id.clone()));
                    self.pending.push_front(Ok(Datum::Status(one)));
                }
                continue;
            }
            let event = self.event_for(datum).await;
            self.queue_pending_acks();
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
            Datum::Status(Status {
                status: code @ (status::DELIVERED | status::STORED_LATER),
                payload,
                id: Some(id),
                ..
            }) => Event::Receipt {
                id: id.clone(),
                status: Status::new(code, payload).with_id(Some(id)),
            },
            Datum::Status(s) => Event::Status(s),
            other => Event::Other(other),
        })
    }

    /// Opens an incoming message; any failure becomes [`Event::Undecryptable`], a copy of a
    /// message already reported becomes `None`.
    async fn open_message(&mut self, message: Message) -> Option<Event> {
        let (sender, text) = match self.open_text(&message).await {
            Ok(opened) => opened,
            Err(Unopened { reason, for_good }) => {
                // A message that will never open is acknowledged all the same: the server keeps
                // an id'd message until its recipient acknowledges it, so it would come back at
                // every login, for ever, and open no better. A failure that may pass (the
                // connection or the server's storage failing during the sender lookup) is not
                // acknowledged, so that the message comes back when it can be opened.
                if for_good && let Some(id) = &message.id {
                    self.pending_acks.push(id.clone());
                }
                return Some(Event::Undecryptable {
                    from: message.from,
                    reason,
                });
            }
        };
        // Only boxes that opened are remembered, so a forgery cannot suppress a real message.
        if !self.first_copy(&sender, &message) {
            return None;
        }
        Some(Event::Message(Received {
            from: sender,
            from_text: message.from,
            to: message.to,
            date: message.date,
            flags: message.flags,
            text,
            id: message.id,
        }))
    }

    /// Resolves the sender of `message` and opens its box: the sender's key and the text.
    async fn open_text(&mut self, message: &Message) -> Result<(PublicKey, String), Unopened> {
        let sender = self.resolve(&message.from).await.map_err(|e| Unopened {
            for_good: !(e.is_connection_lost() || e.server_status() == Some(status::INTERNAL)),
            reason: format!("cannot resolve the sender: {e}"),
        })?;
        let key = self
            .conversation_key(&sender)
            .map_err(|e| Unopened::for_good(e.to_string()))?;
        // The server delivers to this session only what is addressed to this user, whatever
        // form `to` takes, so the recipient bound into the box is always our own key.
        let me = self.me.key;
        let envelope = Envelope {
            sender: &sender,
            recipient: &me,
            date: message.date,
            flags: &message.flags,
        };
        let text = e2e::open(&key, &envelope, &message.msg)
            .map_err(|e| Unopened::for_good(e.to_string()))?;
        Ok((sender, text))
    }

    /// Records an opened message for de-duplication; false if it was seen already. A repeated
    /// id that the application has acknowledged is acknowledged again (see
    /// [`Client::unacked`] for why one it has not acknowledged yet is not).
    fn first_copy(&mut self, sender: &PublicKey, message: &Message) -> bool {
        match &message.id {
            Some(id) => {
                let seen = (*sender, id.clone());
                if self.seen_ids.contains(&seen) {
                    if !self.unacked.contains(id) && !self.pending_acks.contains(id) {
                        self.pending_acks.push(id.clone());
                    }
                    return false;
                }
                self.seen_ids.insert(seen.clone());
                self.seen_id_order.push_back(seen);
                self.unacked.insert(id.clone());
                if self.seen_id_order.len() > DEDUP_WINDOW
                    && let Some(oldest) = self.seen_id_order.pop_front()
                {
                    self.seen_ids.remove(&oldest);
                    self.unacked.remove(&oldest.1);
                }
                true
            }
            None => {
                let seen: SeenMessage = (
                    *sender,
                    message.date,
                    message.msg.chars().take(44).collect(),
                );
                if !self.seen.insert(seen.clone()) {
                    return false;
                }
                self.seen_order.push_back(seen);
                if self.seen_order.len() > DEDUP_WINDOW
                    && let Some(oldest) = self.seen_order.pop_front()
                {
                    self.seen.remove(&oldest);
                }
                true
            }
        }
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

    /// Closes the connection politely, sending any automatic ACKs still owed first. Queued
    /// events stay readable.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        if self.closed {
            return Ok(());
        }
        self.queue_pending_acks();
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
            id: None,
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

        // The id comes last, and only when the sender set one.
        let with_id = Received {
            id: Some("0123abcd".into()),
            ..r
        };
        let line = with_id.json_line();
        assert!(line.ends_with(r#","id":"0123abcd"}"#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], "0123abcd");
    }

    #[test]
    fn answers_and_notices_are_told_apart() {
        let st = |c| Datum::Status(Status::new(c, ""));
        for notice in [10, -10, 5, 6, 7, 8, -15, -17, -18] {
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
