//! The native client: a tokio driver over the engine of `flexim-session`.
//!
//! Everything the protocol asks of a client (the login, matching answers to requests, the
//! outbox, receipts, opening messages and looking up their senders, de-duplication and
//! acknowledgements) is the engine's. This file only moves bytes between a [`Transport`] and
//! the engine, and turns "send a request, then wait for the event that answers it" into
//! `async` calls. Events that arrive while a call waits are kept, in order, for
//! [`Client::next_event`].
//!
//! Every call is cancel-safe, because `next_event` runs inside `tokio::select!` next to stdin:
//! the transport keeps partial input and unsent output, the engine changes state only
//! synchronously, and an answer whose waiter was cancelled comes out of `next_event` as an
//! [`Event::Answer`].

mod consent;
mod messages;
mod rooms;

use std::collections::HashSet;
use std::time::Duration;

use flexim_protocol::status;
use flexim_protocol::{PublicKey, Status, User};
use flexim_session::{
    Answer, Config, ContactPins, Engine, EngineError, Event, Framing, LoginError, Lookup, PinCheck,
    Refusal, RequestId, Seen,
};

use crate::endpoint::Endpoint;
use crate::error::ClientError;
use crate::identity::Identity;
use crate::os;
use crate::transport::Transport;

/// How long [`Client::connect`] may take, from the TCP connect to the end of the login. A
/// server that accepts the connection but never speaks flexim would otherwise hang the client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A logged-in connection to a flexim server.
pub struct Client {
    /// The connection.
    transport: Transport,
    /// Where it goes.
    endpoint: Endpoint,
    /// This user's secret key.
    identity: Identity,
    /// The protocol.
    engine: Engine,
    /// The server's User datum from the latest login (its key proven by the handshake).
    server: User,
    /// Whether a server key that does not match the pin refuses the login (a pin the user
    /// gave, or the key an earlier login of this client proved) rather than being accepted.
    strict_pin: bool,
    /// The ACKs [`Client::next_event`] sent by itself: nobody waits for their answers, which
    /// are dropped unless they report a failure.
    own_acks: HashSet<RequestId>,
    /// Set once the connection ended; later calls report it.
    closed: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.to_string())
            .field("me", self.engine.me())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// How [`Client::connect_with`] logs in.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The alias to claim right after the login, if any (see [`Client::connect`]).
    pub alias: Option<String>,
    /// The server key to insist on, if any: another key refuses the login before anything
    /// about this user is sent. Without it, the key the first login proves is the one every
    /// reconnection of this client insists on.
    pub server_key: Option<PublicKey>,
    /// Contacts' keys pinned earlier ([`Client::contact_pins`]), given to the engine before
    /// the login so that anything the server says during it is checked against them.
    pub contact_pins: ContactPins,
    /// The rooms' state saved earlier ([`Client::take_saved_rooms`]), given to the engine
    /// before the login so that the KeyPackages it publishes are its own.
    pub rooms: Option<flexim_session::SavedRooms>,
    /// Whether 1:1 messages go through the pair room of the two users, on MLS (forward
    /// secrecy and post-compromise security, docs/PROTOCOL.md §16.9), rather than the
    /// static-key box. The `flexim` command sets it. Off by default for library users that
    /// keep no rooms' state between runs (the load generator, tests of the box): a pair group
    /// not saved is lost with the process.
    pub pairs: bool,
}

/// The error a refused request becomes: a Status refusal is the server's error, anything else
/// an answer this client could not use.
fn refusal_error(refusal: Refusal) -> ClientError {
    match refusal.status {
        0 => ClientError::BadAnswer(refusal.reason),
        status => ClientError::Server {
            status,
            payload: refusal.reason,
        },
    }
}

impl Client {
    /// Connects to `server` (`HOST:PORT` or a `ws://` URL), logs in as `identity`, and claims
    /// `alias` right after (its outcome stays queued as an [`Event::Answer`]; a taken alias
    /// does not fail the login). Everything the server sends during the login (SESSION_EXISTS,
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
        let options = ConnectOptions {
            alias: alias.map(str::to_string),
            server_key: server_key.copied(),
            contact_pins: ContactPins::new(),
            ..Default::default()
        };
        Client::connect_with(Endpoint::parse(server)?, identity, options).await
    }

    /// [`Client::connect`] to an endpoint already parsed (such as a `wss://` server with a
    /// private CA, [`Endpoint::trusting`]), as `options` say.
    pub async fn connect_with(
        endpoint: Endpoint,
        identity: &Identity,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let config = Config {
            pinned: options.server_key,
            alias: options.alias,
            framing: Framing::Stream,
            rooms: true,
            pairs: options.pairs,
        };
        let mut engine = Engine::new(identity.secret().clone(), config, os::random());
        engine.restore_contact_pins(options.contact_pins);
        if let Some(rooms) = &options.rooms {
            engine.restore_rooms(rooms)?;
        }
        let name = endpoint.to_string();
        let strict = options.server_key.is_some();
        let connecting = Client::open(endpoint, identity.clone(), engine, strict);
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .unwrap_or(Err(ClientError::Timeout {
                endpoint: name,
                secs: CONNECT_TIMEOUT.as_secs(),
            }))
    }

    /// Opens a connection for `engine` and logs in.
    async fn open(
        endpoint: Endpoint,
        identity: Identity,
        engine: Engine,
        strict_pin: bool,
    ) -> Result<Client, ClientError> {
        let transport = Transport::connect(&endpoint).await?;
        let mut client = Client {
            transport,
            endpoint,
            identity,
            server: User {
                aliases: Vec::new(),
                key: PublicKey([0; 32]),
                last_seen: 0,
                online: None,
            },
            engine,
            strict_pin,
            own_acks: HashSet::new(),
            closed: false,
        };
        client.start().await?;
        Ok(client)
    }

    /// Logs in again after the connection was lost, with the same engine: what was not
    /// confirmed goes out again first (its answers come as [`Event::Answer`]s), and what was
    /// reported is not reported again. On failure the client stays closed and may try again.
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.engine.disconnected();
        self.closed = true;
        while self
            .engine
            .take_event(|e| matches!(e, Event::Closed))
            .is_some()
        {}
        let name = self.endpoint.to_string();
        let attempt = async {
            self.transport = Transport::connect(&self.endpoint).await?;
            self.start().await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(ClientError::Timeout {
                endpoint: name,
                secs: CONNECT_TIMEOUT.as_secs(),
            }))
    }

    /// Logs in on a transport just connected.
    async fn start(&mut self) -> Result<(), ClientError> {
        self.engine.set_framing(if self.transport.is_websocket() {
            Framing::Messages
        } else {
            Framing::Stream
        });
        self.closed = false;
        self.log_in().await
    }

    /// Runs the login to its end, then waits for the outcome of the alias (if one is claimed),
    /// so that [`Client::me`] has it when `connect` returns. The login's own events are not
    /// handed out; what the server sends after it waits for [`Client::next_event`].
    async fn log_in(&mut self) -> Result<(), ClientError> {
        self.engine.connect();
        while !self.login_done()? {
            self.read().await.map_err(|e| match e {
                ClientError::Closed => ClientError::ClosedDuringHandshake,
                other => other,
            })?;
            if self.closed {
                // The end came without an explanation the engine could give.
                return Err(self
                    .login_failure()
                    .unwrap_or(ClientError::ClosedDuringHandshake));
            }
        }
        if let Some(request) = self.engine.alias_request() {
            let answered =
                |e: &Event| matches!(e, Event::Answer { request: r, .. } if *r == request);
            while self.engine.find_event(answered).is_none() {
                self.read().await?;
                if self.closed {
                    return Err(ClientError::Closed);
                }
            }
        }
        // The KeyPackages every login counts (and publishes when the server holds few) are
        // settled before `connect` returns, so that a short-lived program (one CLI command)
        // still leaves others able to add this user to rooms. Their answers are not news.
        while self.engine.key_packages_pending() {
            self.read().await?;
            if self.closed {
                return Err(ClientError::Closed);
            }
        }
        let counted = |e: &Event| {
            matches!(
                e,
                Event::Answer {
                    answer: Answer::KeyPackages(Ok(_)),
                    ..
                }
            )
        };
        while self.engine.take_event(counted).is_some() {}
        Ok(())
    }

    /// Looks at the events of the login: true once logged in, an error if it failed (or the
    /// server's key is not the pinned one), false if more must be read.
    fn login_done(&mut self) -> Result<bool, ClientError> {
        if let Some(e) = self.login_failure() {
            return Err(e);
        }
        while let Some(Event::ServerKey { key, check }) = self
            .engine
            .take_event(|e| matches!(e, Event::ServerKey { .. }))
        {
            if let PinCheck::Mismatch { pinned } = check {
                if self.strict_pin {
                    self.engine.disconnected();
                    self.closed = true;
                    return Err(ClientError::ServerKeyMismatch {
                        endpoint: self.endpoint.to_string(),
                        pinned,
                        got: key,
                    });
                }
                self.engine.accept_server_key();
            }
        }
        match self
            .engine
            .take_event(|e| matches!(e, Event::LoggedIn { .. }))
        {
            Some(Event::LoggedIn { server, .. }) => {
                self.server = server;
                // The engine pinned the key this login proved: a reconnection that meets
                // another one meets another server, and must not log in there.
                self.strict_pin = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Takes a failed login's reason out of the events, as an error.
    fn login_failure(&mut self) -> Option<ClientError> {
        let Some(Event::LoginFailed(failure)) = self
            .engine
            .take_event(|e| matches!(e, Event::LoginFailed(_)))
        else {
            return None;
        };
        self.closed = true;
        Some(match failure {
            LoginError::NotFlexim(reason) => ClientError::NotFlexim {
                endpoint: self.endpoint.to_string(),
                reason,
            },
            LoginError::Refused { status, payload } => ClientError::Server { status, payload },
            LoginError::Handshake(e) => ClientError::Handshake(e),
            LoginError::Link(e) => ClientError::Link(e),
        })
    }

    /// This user as the server knows it: key, aliases (kept current by REGISTER), previous
    /// `last_seen`.
    pub fn me(&self) -> User {
        self.engine.user().cloned().unwrap_or_else(|| User {
            aliases: Vec::new(),
            key: *self.engine.me(),
            last_seen: 0,
            online: None,
        })
    }

    /// The server's User datum. The handshake proved that the server holds the secret half of
    /// this key; whether it is the *right* server is for the user to check by comparing its
    /// fingerprint out of band (or to pin with `--server-key`).
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

    /// The protocol engine, for what this driver does not wrap.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The latest User datum seen for `key` (GETUSER, ROSTER, SEARCH), presence kept current.
    pub fn cached_user(&self, key: &PublicKey) -> Option<&User> {
        self.engine.cached_user(key)
    }

    /// Whether events wait, so that [`Client::next_event`] returns without reading (for
    /// instance the login notices right after [`Client::connect`]).
    pub fn has_queued_events(&self) -> bool {
        self.engine.has_events()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Queues the engine's transmits on the transport (they go out with the next flush).
    fn queue_transmits(&mut self) {
        while let Some(bytes) = self.engine.poll_transmit() {
            self.transport.queue(bytes);
        }
    }

    /// Writes what the engine queued.
    async fn flush(&mut self) -> Result<(), ClientError> {
        self.queue_transmits();
        if self.closed {
            return Err(ClientError::Closed);
        }
        self.transport.flush().await
    }

    /// Writes what is queued, reads once and hands it to the engine. The end of the connection,
    /// or a failure of it, ends the engine's connection too.
    async fn read(&mut self) -> Result<(), ClientError> {
        self.queue_transmits();
        if self.closed {
            return Err(ClientError::Closed);
        }
        let received = self.transport.recv().await;
        match received {
            Ok(Some(bytes)) => {
                self.engine.handle_bytes(&bytes);
                // A record that did not authenticate: nothing more is read from this
                // connection, and the caller hears why.
                if let Some(Event::LinkBroken(e)) = self
                    .engine
                    .take_event(|e| matches!(e, Event::LinkBroken(_)))
                {
                    self.closed = true;
                    self.own_acks.clear();
                    let _ = self.transport.close().await;
                    return Err(ClientError::Link(e));
                }
            }
            Ok(None) => self.ended(),
            Err(e) if e.is_connection_lost() || e.is_garbage() => {
                self.ended();
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The connection ended.
    fn ended(&mut self) {
        self.closed = true;
        self.own_acks.clear();
        self.engine.disconnected();
    }

    /// Waits for the answer to `request`, leaving every other event queued for later.
    async fn answer(&mut self, request: RequestId) -> Result<Answer, ClientError> {
        self.flush().await?;
        loop {
            let mine = |e: &Event| matches!(e, Event::Answer { request: r, .. } if *r == request);
            if let Some(Event::Answer { answer, .. }) = self.engine.take_event(mine) {
                return Ok(answer);
            }
            if self.closed {
                return Err(ClientError::Closed);
            }
            self.read().await?;
        }
    }

    /// The next event: queued ones first, then whatever the server sends. Before it reads,
    /// the acknowledgements queued since the last read go out in one ACK ([`Client::acknowledge`],
    /// and those the engine owes the server itself: copies of processed messages, messages that
    /// never open), so that everything processed in one wake-up is acknowledged at once. After
    /// the end of the connection, [`Event::Closed`] every time.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            // What the engine queued while making the events (held messages sealed once their
            // pair room exists, commits) goes out before the program gets them, so that a
            // program that stops asking for events has sent it all. Written before an event is
            // taken, so that a caller that drops this call while it writes loses no event.
            if self.engine.has_events() && !self.closed {
                self.queue_transmits();
                if self.transport.has_queued()
                    && let Err(e) = self.transport.flush().await
                {
                    // Gone: the events already made are still the program's, then Closed.
                    if !e.is_connection_lost() {
                        return Err(e);
                    }
                    self.ended();
                }
            }
            while let Some(event) = self.engine.poll_event() {
                if let Event::Answer {
                    request,
                    answer: Answer::Ack { result, .. },
                } = &event
                    && self.own_acks.remove(request)
                    && result.is_ok()
                {
                    continue;
                }
                return Ok(event);
            }
            if self.closed {
                return Ok(Event::Closed);
            }
            let sent = self.engine.flush_acks();
            self.own_acks.extend(sent);
            self.read().await?;
        }
    }

    /// Whether acknowledgements are queued or sent and not answered yet: a program that
    /// leaves right after processing waits for this to be false, so that the senders get
    /// their receipts.
    pub fn acks_pending(&self) -> bool {
        self.engine.has_acks() || !self.own_acks.is_empty()
    }

    /// Queues the acknowledgement of a processed message without sending it: it goes out with
    /// the others of the same wake-up before [`Client::next_event`] reads again (or at once with
    /// [`Client::ack`]). Until the server has it, the message comes again at every login.
    pub fn acknowledge(&mut self, id: &str) {
        self.engine.acknowledge(id);
    }

    /// The key for `who`: 64 hex digits parse directly, an alias is looked up with GETUSER once
    /// and then remembered. The key the server names is checked against the
    /// one pinned for the alias ([`Engine::contact`]): a changed key is
    /// [`ClientError::ContactKeyChanged`] until [`Client::accept_contact_key`].
    pub async fn resolve(&mut self, who: &str) -> Result<PublicKey, ClientError> {
        match self.engine.contact(who) {
            Err(EngineError::UnknownContact(_)) => {
                self.get_user(who).await?;
                Ok(self.engine.contact(who)?)
            }
            found => Ok(found?),
        }
    }

    /// The user accepts the key the server now names for `alias`: it becomes the pin, and
    /// sending to the alias works again. The new key, or `None` if no change waited for it.
    pub fn accept_contact_key(&mut self, alias: &str) -> Option<PublicKey> {
        self.engine.accept_contact_key(alias)
    }

    /// Contacts' keys pinned so far (those given at connect, and those learnt since), for the
    /// application to save.
    pub fn contact_pins(&self) -> &ContactPins {
        self.engine.contact_pins()
    }

    /// Gives the engine pins saved earlier (see [`flexim_session::Engine::restore_contact_pins`]).
    pub fn restore_contact_pins(&mut self, pins: ContactPins) {
        self.engine.restore_contact_pins(pins);
    }

    /// Whether [`Client::contact_pins`] changed since the last call.
    pub fn take_pins_changed(&mut self) -> bool {
        self.engine.take_pins_changed()
    }

    /// GETUSER: one user by key or alias.
    pub async fn get_user(&mut self, who: &str) -> Result<User, ClientError> {
        let request = self.engine.get_user(who, Lookup::Contact)?;
        match self.answer(request).await? {
            Answer::User { result, .. } => result.map_err(refusal_error),
            other => Err(ClientError::BadAnswer(format!("{other:?}"))),
        }
    }

    /// ROSTER: the users the server lists, with their presence.
    pub async fn roster(&mut self) -> Result<Vec<User>, ClientError> {
        let request = self.engine.roster()?;
        match self.answer(request).await? {
            Answer::Roster(result) => result.map_err(refusal_error),
            other => Err(ClientError::BadAnswer(format!("{other:?}"))),
        }
    }

    /// SEARCH: the users whose alias contains `text`.
    pub async fn search(&mut self, text: &str) -> Result<Vec<User>, ClientError> {
        let request = self.engine.search(text)?;
        match self.answer(request).await? {
            Answer::Search { result, .. } => result.map_err(refusal_error),
            other => Err(ClientError::BadAnswer(format!("{other:?}"))),
        }
    }

    /// A request whose answer is a Status.
    async fn status(&mut self, request: RequestId) -> Result<Status, ClientError> {
        match self.answer(request).await? {
            Answer::Register { result, .. }
            | Answer::Ghost(result)
            | Answer::Offlines(result)
            | Answer::Consent { result, .. }
            | Answer::Ack { result, .. } => result.map_err(refusal_error),
            other => Err(ClientError::BadAnswer(format!("{other:?}"))),
        }
    }

    /// The answer to a sent message as a Status (an error Status as [`ClientError::Server`]).
    async fn sent_status(&mut self, request: RequestId) -> Result<Status, ClientError> {
        match self.answer(request).await? {
            Answer::Sent { result, .. } => result.map_err(refusal_error),
            other => Err(ClientError::BadAnswer(format!("{other:?}"))),
        }
    }

    /// REGISTER: claims `alias` for this key.
    pub async fn register(&mut self, alias: &str) -> Result<Status, ClientError> {
        let request = self.engine.register(alias)?;
        self.status(request).await
    }

    /// GHOST: makes this connection the key's active session (Status 4); the older session is
    /// closed by the server.
    pub async fn ghost(&mut self) -> Result<Status, ClientError> {
        let request = self.engine.ghost()?;
        self.status(request).await
    }

    /// OFFLINES: asks for the messages stored while offline; they arrive as events and the
    /// returned Status says how many there were.
    pub async fn offlines(&mut self) -> Result<Status, ClientError> {
        let request = self.engine.offlines()?;
        self.status(request).await
    }

    /// ACK: tells the server that the messages with these ids were received and processed, so
    /// that it forgets them and sends their senders `7` DELIVERED. Call it after handling an
    /// [`flexim_session::Incoming`] whose `id` is set. Acknowledgements the engine owes the
    /// server anyway go along. Returns the server's answer to the last ACK (Status `1`); with
    /// nothing to acknowledge nothing is sent and the answer is made up locally.
    pub async fn ack(&mut self, ids: &[String]) -> Result<Status, ClientError> {
        for id in ids {
            self.engine.acknowledge(id);
        }
        let requests = self.engine.flush_acks();
        if requests.is_empty() && self.closed {
            return Err(ClientError::Closed);
        }
        let mut last = Status::new(status::OK, "acknowledged 0");
        for request in requests {
            last = self.status(request).await?;
        }
        Ok(last)
    }

    /// Takes what this client remembers about the messages it reported, for the next
    /// connection's [`Client::restore_seen`].
    pub fn take_seen(&mut self) -> Seen {
        self.engine.seen()
    }

    /// Continues the de-duplication of an earlier connection: a message it reported is not
    /// reported again, and is acknowledged automatically when it comes again (the earlier
    /// connection's application has had it).
    pub fn restore_seen(&mut self, seen: Seen) {
        self.engine.restore_seen(seen);
    }

    /// Closes the connection politely, sending the acknowledgements still owed first. Queued
    /// events stay readable.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        if self.closed {
            return Ok(());
        }
        self.engine.flush_acks();
        self.queue_transmits();
        self.closed = true;
        let closing = self.transport.close().await;
        self.engine.disconnected();
        closing
    }
}
