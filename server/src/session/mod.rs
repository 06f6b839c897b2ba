//! One connection's protocol driver: the handshake, then datums in and frames out.
//!
//! It is generic over a `Stream` of inbound frames and a `Sink` of outbound frames, so the TCP
//! and WebSocket transports share it byte for byte, and tests can drive it with channels. It
//! never sees a socket: the transports turn bytes into [`Inbound`] items and back. The
//! session owns its outbound side ([`Outbound`]); `messages.rs` has the Message path and the
//! queue of answers, `commands.rs` the commands, `stored.rs` delivery from the store.

mod commands;
mod conversations;
mod messages;
mod outbound;
mod rooms;
mod stored;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use flexim_protocol::datum::{DatumKind, Status, User};
use flexim_protocol::frame::{FrameError, PREFIX_LEN};
use flexim_protocol::handshake::ServerHandshake;
use flexim_protocol::link::RECORD;
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, DatumError, PublicKey};
use futures_util::{FutureExt as _, Sink, Stream, StreamExt};
use tokio::sync::watch;

use crate::clock;
use crate::frames::{frame, status_frame};
use crate::metrics;
use crate::peer::{FromRelay, Mailbox};
use crate::relay::{Answer, Relay};
use crate::table::SessionId;
use outbound::Outbound;

/// What a transport hands the driver.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// One whole frame: type byte, length, body.
    Frame(Bytes),
    /// A framing problem the transport recovered from (an oversized frame it skipped, a
    /// truncated frame at the end of input). The driver answers with a Status.
    Bad(FrameError),
    /// Something that breaks the transport's rules (a WebSocket text message). The driver
    /// stops; the transport closes with a protocol error.
    Violation(&'static str),
}

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The client closed the connection.
    Closed,
    /// The transport rule named was broken.
    Violation(&'static str),
    /// Authentication failed or timed out.
    AuthFailed,
    /// The relay closed the session (GHOST, slow reader).
    Kicked,
    /// The server is shutting down.
    Shutdown,
    /// Writing to the client failed.
    Io(io::Error),
}

/// Most datums handled between two flushes when they arrive faster than they are answered.
const COALESCE: usize = 64;

/// Most queued frames written in one round. Senders on other cores may refill a session's
/// queue as fast as it is written; a round that wrote for as long as frames came would leave
/// its client's datums unread meanwhile.
const WRITE_PER_ROUND: usize = 256;

/// Where the connection is in the handshake.
enum Phase {
    /// Header seen; waiting for AUTH.
    Fresh,
    /// Noise message 2 sent; waiting for message 3 in the AuthResponse.
    Challenged {
        /// The responder's handshake, consumed by the AuthResponse.
        pending: Box<ServerHandshake>,
        /// When AUTH came, for the handshake histogram.
        since: std::time::Instant,
    },
    /// Authenticated.
    Authed(Authed),
}

/// An authenticated session.
struct Authed {
    /// The session's key.
    key: PublicKey,
    /// Its id among the relay's sessions.
    id: SessionId,
    /// The key's aliases, for the `from` check; kept current by REGISTER on this session.
    aliases: Vec<String>,
}

/// The outcome of handling one datum.
enum Flow {
    /// Go on serving.
    Continue,
    /// The session ends.
    Stop(End),
}

/// Turns a write's outcome into a [`Flow`].
fn io_flow(r: io::Result<()>) -> Flow {
    match r {
        Ok(()) => Flow::Continue,
        Err(e) => Flow::Stop(End::Io(e)),
    }
}

/// Runs one connection after its header: sends the server's User datum, then serves datums
/// until the client leaves, breaks a rule, is kicked, or the server shuts down.
pub(crate) async fn run<St, Si>(
    relay: Arc<Relay>,
    (peer, transport): (IpAddr, &'static str),
    inbound: &mut St,
    outbound: Si,
    mut shutdown: watch::Receiver<bool>,
) -> End
where
    St: Stream<Item = Inbound> + Unpin,
    Si: Sink<Bytes, Error = io::Error> + Unpin,
{
    metrics::inc(&relay.metrics.connections_open);
    let mut session = Session {
        relay: relay.clone(),
        phase: Phase::Fresh,
        mailbox: None,
        answers: VecDeque::new(),
        cursor: 0,
        peer,
        transport,
        pause: None,
        out: Outbound::new(outbound, relay.limits.write_timeout, relay.clone()),
    };
    let end = session.serve(inbound, &mut shutdown).await;
    if let End::Io(e) = &end {
        if e.kind() == io::ErrorKind::TimedOut {
            relay
                .metrics
                .disconnected(metrics::Disconnect::WriteTimeout);
        }
        tracing::debug!(error = %e, "writing to the client failed");
    }
    if let Phase::Authed(a) = &session.phase {
        relay.sessions.remove(a.id);
        relay.logout(a.key, a.id).await;
        tracing::debug!(key = %a.key, ?end, "session ended");
    }
    metrics::dec(&relay.metrics.connections_open);
    end
}

/// The per-connection state the driver carries between datums.
struct Session<Si> {
    /// The shared core.
    relay: Arc<Relay>,
    /// Where the handshake stands.
    phase: Phase,
    /// What the relay sends this session (messages, presence, signals); set at login.
    mailbox: Option<Mailbox>,
    /// Answers not sent yet, oldest first. A Message for an offline user is answered when its
    /// commit is done, so the connection keeps reading meanwhile (many messages share one
    /// commit), and answers still go out in the order of the datums.
    answers: VecDeque<Answer>,
    /// The sequence number from which the store still holds entries this session has not
    /// been given; stored messages are written to a session once, and again only after a
    /// reconnect.
    cursor: u64,
    /// The client's address, for the per-address limits (`Limits::new_key_rate`).
    peer: IpAddr,
    /// `tcp` or `ws`, for the admin listener's list of sessions.
    transport: &'static str,
    /// Until when the client's datums are left unread: its key is over
    /// `Limits::message_rate`. Frames for it are still written meanwhile.
    pause: Option<tokio::time::Instant>,
    /// Where frames go.
    out: Outbound<Si>,
}

/// Completes when the server starts shutting down (the watch guard is dropped inside, so the
/// session future stays `Send`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Completes when a pause ends (never, without one).
async fn paused(until: Option<tokio::time::Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The next thing the relay has for the session (never, before login).
async fn from_relay(mailbox: &mut Option<Mailbox>) -> FromRelay {
    match mailbox {
        Some(m) => m.next().await,
        None => std::future::pending().await,
    }
}

impl<Si: Sink<Bytes, Error = io::Error> + Unpin> Session<Si> {
    /// The serve loop: whatever comes first, from the relay, the store, the client or the
    /// server's shutdown, then one flush for everything it wrote.
    async fn serve<St>(&mut self, inbound: &mut St, shutdown: &mut watch::Receiver<bool>) -> End
    where
        St: Stream<Item = Inbound> + Unpin,
    {
        if let Err(e) = self.out.send(self.relay.hello.clone()).await {
            return End::Io(e);
        }
        let auth_deadline = tokio::time::sleep(self.relay.limits.auth_timeout);
        tokio::pin!(auth_deadline);
        loop {
            let authed = matches!(self.phase, Phase::Authed(_));
            let flow = tokio::select! {
                _ = stopped(shutdown) => {
                    let bye = status_frame(status::SHUTTING_DOWN, "the server is shutting down");
                    let _ = self.out.send(bye).await;
                    Flow::Stop(End::Shutdown)
                }
                event = from_relay(&mut self.mailbox) => self.on_relay(event).await,
                answer = messages::next_answer(&mut self.answers) => {
                    self.answers.pop_front();
                    io_flow(self.out.feed(answer).await)
                }
                _ = &mut auth_deadline, if !authed => {
                    self.auth_failed("authentication timed out").await
                }
                _ = paused(self.pause) => {
                    self.pause = None;
                    Flow::Continue
                }
                item = inbound.next(), if self.pause.is_none() => {
                    let flow = self.inbound(item).await;
                    // Datums that have arrived already are handled before anything is
                    // flushed, so their answers share one write (one system call) instead of
                    // one each.
                    match flow {
                        Flow::Continue => self.arrived(inbound).await,
                        stop => stop,
                    }
                }
            };
            match flow {
                Flow::Continue => {
                    // Frames the relay queued meanwhile (messages, receipts) go out in the same
                    // write as the answers: one system call instead of two.
                    if let Err(e) = self.write_waiting().await {
                        return End::Io(e);
                    }
                    if let Err(e) = self.out.flush().await {
                        return End::Io(e);
                    }
                }
                Flow::Stop(end) => {
                    // The last answers still go out (best effort), e.g. the Status for a
                    // frame cut short by the end of input.
                    let _ = self.out.flush().await;
                    return end;
                }
            }
        }
    }

    /// Handles the datums that have arrived already, without waiting for more. Bounded, so a
    /// client that never pauses still gets its answers.
    async fn arrived<St>(&mut self, inbound: &mut St) -> Flow
    where
        St: Stream<Item = Inbound> + Unpin,
    {
        for _ in 0..COALESCE {
            if self.pause.is_some() {
                break;
            }
            match inbound.next().now_or_never() {
                Some(item) => {
                    if let Flow::Stop(end) = self.inbound(item).await {
                        return Flow::Stop(end);
                    }
                }
                None => break,
            }
        }
        Flow::Continue
    }

    /// Acts on what the relay sent.
    async fn on_relay(&mut self, event: FromRelay) -> Flow {
        match event {
            FromRelay::Frame(first) => io_flow(self.write_queued(first).await),
            FromRelay::Close(reason) => self.kicked(reason).await,
            // The relay dropped this session (GHOST): its close signal says why.
            FromRelay::Gone => {
                let reason = match &self.mailbox {
                    Some(m) => m.closed().await,
                    None => Status::new(status::TAKEN_OVER, "closed by the server"),
                };
                self.kicked(reason).await
            }
            FromRelay::Stored => self.deliver_stored(false).await,
        }
    }

    /// Handles one item from the transport.
    async fn inbound(&mut self, item: Option<Inbound>) -> Flow {
        match item {
            None => Flow::Stop(End::Closed),
            Some(Inbound::Violation(why)) => Flow::Stop(End::Violation(why)),
            Some(Inbound::Bad(e)) => {
                let code = match e {
                    FrameError::TooLarge { .. } => status::TOO_LARGE,
                    _ => status::TRUNCATED,
                };
                let flow = self.reply(Status::new(code, e.to_string())).await;
                // On the link a record that was skipped or cut leaves the nonces apart: the
                // connection cannot go on (an honest client never sends one).
                match (flow, self.out.is_linked()) {
                    (Flow::Continue, true) => Flow::Stop(End::Violation("a record over the limit")),
                    (flow, _) => flow,
                }
            }
            Some(Inbound::Frame(frame)) if self.out.is_linked() => self.record(frame).await,
            Some(Inbound::Frame(frame)) if frame[0] == RECORD => {
                self.auth_failed("a link record before the handshake finished")
                    .await
            }
            Some(Inbound::Frame(frame)) => self.handle(frame).await,
        }
    }

    /// Opens a record of the link and handles the datum inside. A record that does not
    /// authenticate (replayed, reordered, altered, injected, or a clear datum) ends the
    /// connection without an answer: nothing from it can be trusted, and the nonces of the
    /// two directions no longer agree.
    async fn record(&mut self, record: Bytes) -> Flow {
        let inner = match self.out.open(&record) {
            Ok(inner) => inner,
            Err(e) => {
                metrics::inc(&self.relay.metrics.errors);
                self.relay
                    .metrics
                    .disconnected(metrics::Disconnect::LinkBroken);
                tracing::debug!(error = %e, "closing a connection whose link broke");
                return Flow::Stop(End::Violation("a link record does not authenticate"));
            }
        };
        match flexim_protocol::frame::split_exact(&inner, self.relay.limits.max_body) {
            Ok(_) => self.handle(Bytes::from(inner)).await,
            Err(e) => {
                let code = match e {
                    FrameError::TooLarge { .. } => status::TOO_LARGE,
                    _ => status::TRUNCATED,
                };
                self.reply(Status::new(code, e.to_string())).await
            }
        }
    }

    /// Writes a queued frame and whatever else is queued: many frames per system call when
    /// the relay is busy.
    async fn write_queued(&mut self, first: Bytes) -> io::Result<()> {
        self.out.feed(first).await?;
        self.write_waiting().await
    }

    /// Feeds the frames the relay has queued for this session already (at most
    /// [`WRITE_PER_ROUND`]), without waiting for more.
    async fn write_waiting(&mut self) -> io::Result<()> {
        for _ in 0..WRITE_PER_ROUND {
            match self.mailbox.as_mut().and_then(Mailbox::try_recv) {
                Some(more) => self.out.feed(more).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// The relay closed the session: tell the client why, then stop.
    async fn kicked(&mut self, reason: Status) -> Flow {
        // Best effort with a deadline: a slow reader may never read this.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.out.send(crate::frames::status(reason)),
        )
        .await;
        Flow::Stop(End::Kicked)
    }

    /// Answers the datum at hand with a Status, after the answers still waiting for the store
    /// (so that answers keep the order of the datums); errors are counted.
    async fn reply(&mut self, s: Status) -> Flow {
        let answer = self.status(s);
        self.answer(Answer::Frame(answer)).await
    }

    /// Sends an unsolicited Status now (it answers nothing, so it waits for nothing).
    async fn notice(&mut self, s: Status) -> Flow {
        io_flow(self.out.feed(crate::frames::status(s)).await)
    }

    /// Frames a Status this session answers with, counting errors for `/metrics`.
    fn status(&self, s: Status) -> Bytes {
        if status::is_error(s.status) {
            metrics::inc(&self.relay.metrics.errors);
        }
        crate::frames::status(s)
    }

    /// Handles one whole frame.
    async fn handle(&mut self, frame: Bytes) -> Flow {
        // The hot path: a Message from an authenticated client is read without copying its
        // body (and decoded no other way), then forwarded as the bytes that came.
        if frame[0] == DatumKind::Message as u8
            && let Phase::Authed(a) = &self.phase
        {
            let key = a.key;
            return self.message_frame(frame, key).await;
        }
        // The busiest command, read in place when it comes in its usual form.
        if frame[0] == DatumKind::Command as u8
            && matches!(self.phase, Phase::Authed(_))
            && let Some(ids) = crate::frames::ack_ids(&frame[PREFIX_LEN..])
        {
            if let Flow::Stop(end) = self.flush_answers().await {
                return Flow::Stop(end);
            }
            let answer = self.ack(&ids);
            return self.reply(answer).await;
        }
        let datum = match Datum::decode(frame[0], &frame[PREFIX_LEN..]) {
            Ok(d) => d,
            Err(e) => {
                let code = match e {
                    DatumError::UnknownType(_) => status::UNKNOWN_DATUM,
                    _ => status::MALFORMED,
                };
                return self.reply(Status::new(code, e.to_string())).await;
            }
        };
        match std::mem::replace(&mut self.phase, Phase::Fresh) {
            Phase::Authed(authed) => {
                self.phase = Phase::Authed(authed);
                self.handle_authed(datum).await
            }
            Phase::Challenged { pending, since } => match datum {
                Datum::AuthResponse(resp) => match pending.finish(&resp) {
                    Ok((key, link)) => {
                        self.out.link(link);
                        self.login(key, since).await
                    }
                    Err(e) => self.auth_failed(&e.to_string()).await,
                },
                // One handshake per connection: anything but message 3 ends it.
                other => {
                    let text = format!(
                        "{} arrived where the AuthResponse belongs",
                        other.kind().name()
                    );
                    self.auth_failed(&text).await
                }
            },
            Phase::Fresh => self.handle_fresh(datum).await,
        }
    }

    /// Before authentication only AUTH (and the AuthResponse to it) is accepted.
    async fn handle_fresh(&mut self, datum: Datum) -> Flow {
        match datum {
            Datum::Command(c) if c.cmd == cmd::AUTH => {
                let mut ephemeral = [0u8; 32];
                clock::random(&mut ephemeral);
                let relay = &self.relay;
                match ServerHandshake::start(
                    &relay.server_key,
                    &relay.hello,
                    &c,
                    ephemeral,
                    clock::now(),
                ) {
                    Ok((pending, auth)) => {
                        self.phase = Phase::Challenged {
                            pending: Box::new(pending),
                            since: std::time::Instant::now(),
                        };
                        io_flow(self.out.send(frame(auth)).await)
                    }
                    Err(e) => self.auth_failed(&e.to_string()).await,
                }
            }
            Datum::AuthResponse(_) => {
                self.auth_failed("no challenge is pending: send AUTH first")
                    .await
            }
            other => {
                let text = format!(
                    "authenticate first: {} is not accepted before AUTH",
                    other.kind().name()
                );
                self.reply(Status::new(status::UNAUTHENTICATED, text)).await
            }
        }
    }

    /// The handshake failed: tell the client, then stop.
    async fn auth_failed(&mut self, why: &str) -> Flow {
        metrics::inc(&self.relay.metrics.auth_failures);
        self.phase = Phase::Fresh;
        let text = format!("authentication failed: {why}");
        let _ = self.out.send(status_frame(status::AUTH_FAILED, text)).await;
        Flow::Stop(End::AuthFailed)
    }

    /// The handshake (begun with AUTH at `since`) succeeded: register with the relay, send
    /// the client its User datum (the first record of the link), and deliver what was stored
    /// while it was away.
    async fn login(&mut self, key: PublicKey, since: std::time::Instant) -> Flow {
        if let Some(refusal) = self.new_key_refusal(key).await {
            let _ = self.out.send(self.status(refusal)).await;
            return Flow::Stop(End::AuthFailed);
        }
        let login = match self.relay.login(key).await {
            Ok(l) => l,
            Err(e) => {
                match &e {
                    crate::relay::LoginError::Store(e) => {
                        tracing::error!(error = %e, "login failed in the store");
                    }
                    refusal => tracing::info!(key = %key, why = %refusal, "login refused"),
                }
                let _ = self.out.send(self.status(e.status())).await;
                return Flow::Stop(End::AuthFailed);
            }
        };
        tracing::info!(key = %key, primary = login.primary, "authenticated");
        self.phase = Phase::Authed(Authed {
            key,
            id: login.id,
            aliases: login.before.aliases.clone(),
        });
        let aliases = login.before.aliases.clone();
        (self.relay.sessions).add(
            login.id,
            key,
            aliases,
            self.transport,
            self.peer,
            login.primary,
        );
        self.mailbox = Some(login.mailbox);
        let live = login.primary && self.first_look(key, login.id).await;
        let me = User {
            aliases: login.before.aliases,
            key,
            last_seen: login.before.last_seen,
            online: Some(true),
        };
        if let Err(e) = self.out.send(frame(me)).await {
            return Flow::Stop(End::Io(e));
        }
        self.relay.metrics.handshake_time.observe(since.elapsed());
        if !login.primary {
            let text =
                "this key already has an active session; messages go there until you send GHOST";
            return self.notice(Status::new(status::SESSION_EXISTS, text)).await;
        }
        if live {
            // Nothing was stored: the welcome is complete.
            return Flow::Continue;
        }
        self.deliver_stored(false).await
    }

    /// The refusal for a key seen for the first time when this address has made too many
    /// new ones lately (`Limits::new_key_rate`); `None` lets the login go on. A key the store
    /// cannot be asked about is let in: the login itself reports a failing store.
    async fn new_key_refusal(&self, key: PublicKey) -> Option<Status> {
        let rates = &self.relay.rates;
        if !rates.new_keys.rate().is_on() || self.relay.has_logged_in(key).await.unwrap_or(true) {
            return None;
        }
        let address = crate::rates::address_key(self.peer);
        let wait = rates
            .new_keys
            .take(address, std::time::Instant::now())
            .err()?;
        self.relay.metrics.hit(metrics::Limit::NewKeyRate);
        let text = format!(
            "your address has made too many new keys lately ({}); log in with a key you have \
             used before, or try again in {}",
            rates.new_keys.rate().words(),
            crate::rates::wait_text(wait)
        );
        Some(Status::new(status::RATE_LIMITED, text))
    }

    /// After authentication: messages (see [`Session::handle`]) and commands.
    async fn handle_authed(&mut self, datum: Datum) -> Flow {
        match datum {
            Datum::Command(c) => {
                // Commands are answered after every Message before them.
                if let Flow::Stop(end) = self.flush_answers().await {
                    return Flow::Stop(end);
                }
                self.command(c).await
            }
            d @ (Datum::Request(_) | Datum::Acknowledge(_)) => self.consent_datum(d).await,
            // Messages never get here (`handle` takes them before decoding), and every other
            // datum is the server's to send.
            other => {
                let text = format!(
                    "{} datums are not accepted from clients",
                    other.kind().name()
                );
                self.reply(Status::new(status::UNSUPPORTED, text)).await
            }
        }
    }

    /// The session's key and id, once authenticated.
    fn authed(&self) -> Option<(PublicKey, SessionId)> {
        match &self.phase {
            Phase::Authed(a) => Some((a.key, a.id)),
            _ => None,
        }
    }
}
