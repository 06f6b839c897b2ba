//! One connection's protocol driver: the handshake, then datums in and frames out.
//!
//! It is generic over a `Stream` of inbound frames and a `Sink` of outbound frames, so the TCP
//! and WebSocket transports share it byte for byte, and tests can drive it with channels. It
//! never sees a socket: the transports turn bytes into [`Inbound`] items and back.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use flexim_protocol::datum::{Command, Status, User};
use flexim_protocol::datum::{DatumKind, MessageRef};
use flexim_protocol::frame::{FrameError, PREFIX_LEN};
use flexim_protocol::handshake::{PendingChallenge, parse_auth};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, DatumError, PublicKey};
use futures_util::{FutureExt as _, Sink, SinkExt, Stream, StreamExt};
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot, watch};

use crate::relay::{self, Answer, Held, Kick, Metrics, Relay, Unacked, names_sender, status_frame};

/// What a transport hands the driver.
#[derive(Debug)]
pub enum Inbound {
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
pub enum End {
    /// The client closed the connection.
    Closed,
    /// The transport rule named was broken.
    Violation(&'static str),
    /// Authentication failed or timed out.
    AuthFailed,
    /// The core closed the session (GHOST, slow reader).
    Kicked,
    /// The server is shutting down.
    Shutdown,
    /// Writing to the client failed.
    Io(io::Error),
}

/// Most datums handled between two flushes when they arrive faster than they are answered.
const COALESCE: usize = 64;

/// How long a session waits before looking at the store again after a failed read.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Where the connection is in the handshake.
enum Phase {
    /// Header seen; waiting for AUTH.
    Fresh,
    /// Challenge sent; waiting for the AuthResponse.
    Challenged {
        /// The single-use challenge; consumed by the first AuthResponse.
        pending: PendingChallenge,
        /// The alias the AUTH command asked for, claimed after success.
        alias: Option<String>,
    },
    /// Authenticated.
    Authed(Authed),
}

/// An authenticated session.
struct Authed {
    /// The session's key.
    key: PublicKey,
    /// Its id among the key's sessions.
    id: u64,
    /// The key's aliases, for the `from` check; kept current by REGISTER on this session.
    aliases: Vec<String>,
}

/// An answer to a Message, in the order the Messages came.
enum Queued {
    /// Known already, but an older answer is still waiting for the store.
    Ready(Status),
    /// The same, framed already.
    Framed(Bytes),
    /// Waiting for the store's commit.
    Waiting {
        /// Where the relay sends the answer.
        rx: oneshot::Receiver<Status>,
        /// The Message's id, for the answer if the relay drops the channel (a bug).
        id: Option<String>,
    },
}

/// The outcome of handling one datum.
enum Flow {
    Continue,
    Stop(End),
}

/// Runs one connection after its header: sends the server's User datum, then serves datums
/// until the client leaves, breaks a rule, is kicked, or the server shuts down.
pub async fn run<St, Si>(
    relay: Arc<Relay>,
    inbound: &mut St,
    outbound: &mut Si,
    mut shutdown: watch::Receiver<bool>,
) -> End
where
    St: Stream<Item = Inbound> + Unpin,
    Si: Sink<Bytes, Error = io::Error> + Unpin,
{
    Metrics::inc(&relay.metrics.connections_open);
    let mut session = Session {
        relay: relay.clone(),
        phase: Phase::Fresh,
        rx: None,
        kick: None,
        stored: None,
        answers: VecDeque::new(),
        cursor: 0,
        unflushed: std::sync::atomic::AtomicBool::new(false),
    };
    let end = session.serve(inbound, outbound, &mut shutdown).await;
    if let Phase::Authed(a) = &session.phase {
        relay.logout(a.key, a.id).await;
        tracing::debug!(key = %a.key, ?end, "session ended");
    }
    relay
        .metrics
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
    end
}

/// The per-connection state the driver carries between datums.
struct Session {
    /// The shared core.
    relay: Arc<Relay>,
    /// Where the handshake stands.
    phase: Phase,
    /// Frames the core sends this session (messages, presence); set at login.
    rx: Option<mpsc::Receiver<Bytes>>,
    /// The core's close signal; set at login.
    kick: Option<Arc<Kick>>,
    /// The core's "messages were stored for you" signal; set at login.
    stored: Option<Arc<tokio::sync::Notify>>,
    /// Answers to Messages not sent yet, oldest first. A Message for an offline user is
    /// answered when its commit is done, so the connection keeps reading meanwhile (many
    /// messages share one commit), and answers still go out in the order of the Messages.
    answers: VecDeque<Queued>,
    /// Set when a reply was queued but not flushed yet (see [`Session::reply`]). Atomic only
    /// because the session is borrowed shared while it replies; it never leaves its task.
    unflushed: std::sync::atomic::AtomicBool,
    /// The sequence number from which the store still holds entries this session has not
    /// been given; stored messages are written to a session once, and again only after a
    /// reconnect.
    cursor: u64,
}

/// Completes when the server starts shutting down (the watch guard is dropped inside, so the
/// session future stays `Send`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn wait_kick(kick: &Option<Arc<Kick>>) -> Status {
    match kick {
        Some(k) => k.fired().await,
        None => std::future::pending().await,
    }
}

async fn wait_stored(stored: &Option<Arc<tokio::sync::Notify>>) {
    match stored {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// The oldest answer, once it is known (pending while there is none).
async fn next_answer(answers: &mut VecDeque<Queued>) -> Reply {
    match answers.front_mut() {
        None => std::future::pending().await,
        Some(Queued::Ready(s)) => Reply::Status(s.clone()),
        Some(Queued::Framed(f)) => Reply::Frame(f.clone()),
        Some(Queued::Waiting { rx, id }) => Reply::Status(rx.await.unwrap_or_else(|_| {
            Status::new(
                status::INTERNAL,
                "the message's fate is unknown; send it again",
            )
            .with_id(id.clone())
        })),
    }
}

/// An answer ready to go out.
enum Reply {
    /// A Status to frame.
    Status(Status),
    /// A frame.
    Frame(Bytes),
}

async fn recv_queued(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn io_flow(r: io::Result<()>) -> Flow {
    match r {
        Ok(()) => Flow::Continue,
        Err(e) => Flow::Stop(End::Io(e)),
    }
}

impl Session {
    async fn serve<St, Si>(
        &mut self,
        inbound: &mut St,
        outbound: &mut Si,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End
    where
        St: Stream<Item = Inbound> + Unpin,
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        if let Err(e) = outbound.send(self.relay.hello()).await {
            return End::Io(e);
        }
        let auth_deadline = tokio::time::sleep(self.relay.limits.auth_timeout);
        tokio::pin!(auth_deadline);
        loop {
            let authed = matches!(self.phase, Phase::Authed(_));
            let flow = tokio::select! {
                _ = stopped(shutdown) => {
                    let _ = outbound
                        .send(status_frame(status::SHUTTING_DOWN, "the server is shutting down"))
                        .await;
                    Flow::Stop(End::Shutdown)
                }
                reason = wait_kick(&self.kick) => self.kicked(reason, outbound).await,
                queued = recv_queued(&mut self.rx) => match queued {
                    Some(first) => io_flow(self.write_queued(first, outbound).await),
                    // The core dropped this session (GHOST): its kick says why.
                    None => {
                        let reason = wait_kick(&self.kick).await;
                        self.kicked(reason, outbound).await
                    }
                },
                _ = wait_stored(&self.stored) => self.deliver_offline(outbound, false).await,
                answer = next_answer(&mut self.answers) => {
                    self.answers.pop_front();
                    self.send_reply(outbound, answer).await
                }
                _ = &mut auth_deadline, if !authed => {
                    self.auth_failed(outbound, "authentication timed out").await
                }
                item = inbound.next() => {
                    let mut flow = self.inbound(item, outbound).await;
                    // Datums that have arrived already are handled before anything is
                    // flushed, so their answers share one write (one system call) instead of
                    // one each. Bounded, so a client that never pauses still gets its answers.
                    for _ in 0..COALESCE {
                        if !matches!(flow, Flow::Continue) {
                            break;
                        }
                        match inbound.next().now_or_never() {
                            Some(item) => flow = self.inbound(item, outbound).await,
                            None => break,
                        }
                    }
                    flow
                }
            };
            let flow = match flow {
                Flow::Continue if self.unflushed.swap(false, Ordering::Relaxed) => {
                    io_flow(outbound.flush().await)
                }
                Flow::Stop(end) => {
                    // The last answers still go out (best effort), e.g. the Status for a
                    // frame cut short by the end of input.
                    if self.unflushed.swap(false, Ordering::Relaxed) {
                        let _ = outbound.flush().await;
                    }
                    Flow::Stop(end)
                }
                other => other,
            };
            if let Flow::Stop(end) = flow {
                return end;
            }
        }
    }

    /// Handles one item from the transport.
    async fn inbound<Si>(&mut self, item: Option<Inbound>, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        match item {
            None => Flow::Stop(End::Closed),
            Some(Inbound::Violation(why)) => Flow::Stop(End::Violation(why)),
            Some(Inbound::Bad(e)) => {
                let code = match e {
                    FrameError::TooLarge { .. } => status::TOO_LARGE,
                    _ => status::TRUNCATED,
                };
                self.reply(outbound, Status::new(code, e.to_string())).await
            }
            Some(Inbound::Frame(frame)) => self.handle(frame, outbound).await,
        }
    }

    /// Writes a queued frame and whatever else is queued, then flushes once: many frames per
    /// system call when the relay is busy.
    async fn write_queued<Si>(&mut self, first: Bytes, outbound: &mut Si) -> io::Result<()>
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        outbound.feed(first).await?;
        if let Some(rx) = self.rx.as_mut() {
            while let Ok(more) = rx.try_recv() {
                outbound.feed(more).await?;
            }
        }
        outbound.flush().await
    }

    async fn kicked<Si>(&mut self, reason: Status, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        // Best effort with a deadline: a slow reader may never read this.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            outbound.send(relay::frame(reason)),
        )
        .await;
        Flow::Stop(End::Kicked)
    }

    /// Queues a Status for the client; errors are counted for `/metrics`. It is written at
    /// the next flush, which the serve loop does once the datums at hand are handled.
    async fn reply<Si>(&self, outbound: &mut Si, s: Status) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        if status::is_error(s.status) {
            Metrics::inc(&self.relay.metrics.errors);
        }
        self.unflushed.store(true, Ordering::Relaxed);
        io_flow(outbound.feed(relay::frame(s)).await)
    }

    /// Handles one whole frame.
    async fn handle<Si>(&mut self, frame: Bytes, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        // The hot path: a Message from an authenticated client is read without copying its
        // body (and decoded no other way), then forwarded as the bytes that came.
        if frame[0] == DatumKind::Message as u8
            && let Phase::Authed(a) = &self.phase
        {
            let key = a.key;
            return self.message_frame(frame, key, outbound).await;
        }
        let datum = match Datum::decode(frame[0], &frame[PREFIX_LEN..]) {
            Ok(d) => d,
            Err(e) => {
                let code = match e {
                    DatumError::UnknownType(_) => status::UNKNOWN_DATUM,
                    _ => status::MALFORMED,
                };
                return self.reply(outbound, Status::new(code, e.to_string())).await;
            }
        };
        match std::mem::replace(&mut self.phase, Phase::Fresh) {
            Phase::Authed(authed) => {
                self.phase = Phase::Authed(authed);
                self.handle_authed(datum, frame, outbound).await
            }
            Phase::Challenged { pending, alias } => match datum {
                Datum::AuthResponse(resp) => {
                    let ttl = self.relay.limits.challenge_ttl.as_secs() as i64;
                    match pending.verify(&resp, relay::now(), ttl) {
                        Ok(key) => self.login(key, alias, outbound).await,
                        Err(e) => self.auth_failed(outbound, &e.to_string()).await,
                    }
                }
                other => {
                    self.phase = Phase::Challenged { pending, alias };
                    self.handle_fresh(other, outbound).await
                }
            },
            Phase::Fresh => self.handle_fresh(datum, outbound).await,
        }
    }

    /// Before authentication only AUTH (and the AuthResponse to it) is accepted.
    async fn handle_fresh<Si>(&mut self, datum: Datum, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        match datum {
            Datum::Command(c) if c.cmd == cmd::AUTH => {
                let key = match parse_auth(&c) {
                    Ok((key, _)) => key,
                    Err(e) => return self.auth_failed(outbound, &e.to_string()).await,
                };
                match self.relay.challenge(key).await {
                    Ok((pending, auth)) => {
                        // A second AUTH replaces the first challenge: only the newest is live.
                        self.phase = Phase::Challenged {
                            pending,
                            alias: c.payload.get(1).cloned(),
                        };
                        io_flow(outbound.send(auth).await)
                    }
                    Err(e) => self.auth_failed(outbound, &e.to_string()).await,
                }
            }
            Datum::AuthResponse(_) => {
                self.auth_failed(outbound, "no challenge is pending: send AUTH first")
                    .await
            }
            other => {
                let text = format!(
                    "authenticate first: {} is not accepted before AUTH",
                    other.kind().name()
                );
                self.reply(outbound, Status::new(status::UNAUTHENTICATED, text))
                    .await
            }
        }
    }

    async fn auth_failed<Si>(&mut self, outbound: &mut Si, why: &str) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        Metrics::inc(&self.relay.metrics.auth_failures);
        self.phase = Phase::Fresh;
        let _ = outbound
            .send(status_frame(
                status::AUTH_FAILED,
                format!("authentication failed: {why}"),
            ))
            .await;
        Flow::Stop(End::AuthFailed)
    }

    /// AUTH succeeded: register with the core, send the client its User datum, claim the
    /// alias it asked for, and deliver what was stored while it was away.
    async fn login<Si>(&mut self, key: PublicKey, alias: Option<String>, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        let login = match self.relay.login(key).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "login failed in the store");
                let _ = outbound
                    .send(status_frame(status::INTERNAL, "storage failure; try again"))
                    .await;
                return Flow::Stop(End::AuthFailed);
            }
        };
        tracing::info!(key = %key, primary = login.primary, "authenticated");
        self.phase = Phase::Authed(Authed {
            key,
            id: login.id,
            aliases: login.before.aliases.clone(),
        });
        self.rx = Some(login.rx);
        self.kick = Some(login.kick);
        self.stored = Some(login.stored);
        let me = User {
            aliases: login.before.aliases,
            key,
            last_seen: login.before.last_seen,
            online: Some(true),
        };
        if let Err(e) = outbound.send(relay::frame(me)).await {
            return Flow::Stop(End::Io(e));
        }
        if let Some(alias) = alias
            && let Flow::Stop(end) = self.register(&alias, outbound).await
        {
            return Flow::Stop(end);
        }
        if !login.primary {
            let text =
                "this key already has an active session; messages go there until you send GHOST";
            return self
                .reply(outbound, Status::new(status::SESSION_EXISTS, text))
                .await;
        }
        self.deliver_offline(outbound, false).await
    }

    /// Writes what the store holds for this session's key that it has not been given yet,
    /// in batches. Entries with an id stay stored until the client acknowledges them; the
    /// others leave once written and flushed. When the key has no store write running, the
    /// session first goes live (new messages come straight to it from then on), so this
    /// last look at the store sees every message that came before. With `always_report`, a
    /// Status follows even when nothing waited.
    async fn deliver_offline<Si>(&mut self, outbound: &mut Si, always_report: bool) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        let Phase::Authed(a) = &self.phase else {
            return Flow::Continue;
        };
        let (key, session) = (a.key, a.id);
        // Messages go to the key's active session only; another one would take them from it.
        if !self.relay.is_active(key, session) {
            if always_report {
                let text = "delivered 0 stored messages: another session of this key is the \
                    active one; send GHOST to take over";
                return self.reply(outbound, Status::new(status::OK, text)).await;
            }
            return Flow::Continue;
        }
        // If a write is still running, its end wakes this session to look again.
        self.relay.try_go_live(key, session);
        let mut total = 0usize;
        loop {
            let batch = match self.relay.peek_offline(key, self.cursor).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "could not read stored messages; retrying soon");
                    // The store may be back in a moment (a restarting Redis): look again then,
                    // rather than leave the messages until the next login.
                    if let Some(stored) = self.stored.clone() {
                        tokio::spawn(async move {
                            tokio::time::sleep(STORE_RETRY).await;
                            stored.notify_one();
                        });
                    }
                    if !always_report {
                        // Unasked, so no Status: only answers may be errors.
                        return Flow::Continue;
                    }
                    let text = format!(
                        "storage failure after {total} stored messages; they will come when \
                         the store is back"
                    );
                    return self
                        .reply(outbound, Status::new(status::INTERNAL, text))
                        .await;
                }
            };
            if batch.is_empty() {
                break;
            }
            let mut plain = Vec::new();
            let mut tracked = Vec::new();
            for stored in batch {
                self.cursor = stored.seq + 1;
                let entry = stored.entry;
                if let Err(e) = outbound.feed(entry.frame).await {
                    return Flow::Stop(End::Io(e));
                }
                match entry.id {
                    Some(id) => tracked.push(Unacked {
                        id,
                        sender: entry.sender,
                        held: Held::Stored(stored.seq),
                    }),
                    None => plain.push(stored.seq),
                }
            }
            if let Err(e) = outbound.flush().await {
                return Flow::Stop(End::Io(e));
            }
            total += plain.len() + tracked.len();
            self.relay.track(key, session, tracked);
            if !plain.is_empty()
                && let Err(e) = self.relay.remove_offline(key, plain).await
            {
                // They were delivered; they come again at the next login, and clients drop
                // repeats. Nothing to tell the client now (it did not ask).
                tracing::error!(error = %e, "could not remove delivered messages");
            }
        }
        let text = format!("delivered {total} stored messages");
        if always_report {
            return self.reply(outbound, Status::new(status::OK, text)).await;
        }
        if total > 0 {
            return self
                .reply(outbound, Status::new(status::DELIVERED_STORED, text))
                .await;
        }
        Flow::Continue
    }

    async fn register<Si>(&mut self, alias: &str, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        let Phase::Authed(a) = &mut self.phase else {
            return Flow::Continue;
        };
        let answer = self.relay.register(a.key, alias).await;
        if answer.status == status::OK {
            a.aliases = self.relay.aliases(a.key).await;
        }
        self.reply(outbound, answer).await
    }

    /// After authentication: messages and commands.
    async fn handle_authed<Si>(&mut self, datum: Datum, frame: Bytes, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        let Phase::Authed(a) = &self.phase else {
            return Flow::Continue;
        };
        let (key, id) = (a.key, a.id);
        match datum {
            // `handle` takes authenticated Messages before this decode; should one get here,
            // it goes the same way.
            Datum::Message(_) => self.message_frame(frame, key, outbound).await,
            Datum::Command(c) => {
                // Commands are answered after every Message before them.
                if let Flow::Stop(end) = self.flush_answers(outbound).await {
                    return Flow::Stop(end);
                }
                self.command(c, key, id, outbound).await
            }
            other => {
                let text = format!(
                    "{} datums are not accepted from clients",
                    other.kind().name()
                );
                self.reply(outbound, Status::new(status::UNSUPPORTED, text))
                    .await
            }
        }
    }

    /// A Message frame from the authenticated client: read as [`MessageRef`] (its body not
    /// copied), checked, routed, answered in order.
    async fn message_frame<Si>(&mut self, frame: Bytes, key: PublicKey, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        let answer = match MessageRef::decode(&frame[PREFIX_LEN..]) {
            Ok(m) => self.message(m, frame.clone(), key).await,
            Err(e) => Answer::Now(Status::new(status::MALFORMED, e.to_string())),
        };
        self.answer(answer, outbound).await
    }

    /// Checks a Message and hands it to the core.
    async fn message(&self, m: MessageRef<'_>, frame: Bytes, key: PublicKey) -> Answer {
        let Phase::Authed(a) = &self.phase else {
            return Answer::Now(Status::new(status::UNAUTHENTICATED, "authenticate first"));
        };
        if let Some(id) = m.id
            && let Err(why) = status::validate_id(id)
        {
            let text = format!("bad message id: {why}; the message was not sent");
            return Answer::Now(Status::new(status::BAD_ARGUMENT, text));
        }
        let id = m.id.map(str::to_string);
        if !names_sender(m.from, &key, &a.aliases) {
            let text = format!(
                "spoof: from {:?} is not you; use your key or one of your aliases",
                m.from
            );
            return Answer::Now(Status::new(status::SPOOF, text).with_id(id));
        }
        match self.relay.resolve(m.to).await {
            Ok(Some(to)) => self.relay.route(key, to, id, frame),
            Ok(None) => Answer::Now(
                Status::new(
                    status::NO_SUCH_USER,
                    format!(
                        "no user {:?}: use a 64-digit hex key or a registered alias",
                        m.to
                    ),
                )
                .with_id(id),
            ),
            Err(_) => Answer::Now(
                Status::new(status::INTERNAL, "storage failure: message not sent").with_id(id),
            ),
        }
    }

    /// Sends a Message's answer now if nothing older waits, or queues it behind the older
    /// ones. With too many answers waiting, waits for the oldest before reading on.
    async fn answer<Si>(&mut self, answer: Answer, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        match answer {
            Answer::Now(s) if self.answers.is_empty() => return self.reply(outbound, s).await,
            Answer::Frame(f) if self.answers.is_empty() => {
                return self.send_reply(outbound, Reply::Frame(f)).await;
            }
            Answer::Now(s) => self.answers.push_back(Queued::Ready(s)),
            Answer::Frame(f) => self.answers.push_back(Queued::Framed(f)),
            Answer::Later(rx) => self.answers.push_back(Queued::Waiting { rx, id: None }),
        }
        while self.answers.len() > self.relay.limits.max_pipelined {
            let r = next_answer(&mut self.answers).await;
            self.answers.pop_front();
            if let Flow::Stop(end) = self.send_reply(outbound, r).await {
                return Flow::Stop(end);
            }
        }
        Flow::Continue
    }

    /// Sends every queued answer, waiting for the store where needed.
    async fn flush_answers<Si>(&mut self, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        while !self.answers.is_empty() {
            let r = next_answer(&mut self.answers).await;
            self.answers.pop_front();
            if let Flow::Stop(end) = self.send_reply(outbound, r).await {
                return Flow::Stop(end);
            }
        }
        Flow::Continue
    }

    /// Queues an answer for the client (see [`Session::reply`]).
    async fn send_reply<Si>(&self, outbound: &mut Si, r: Reply) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        match r {
            Reply::Status(s) => self.reply(outbound, s).await,
            Reply::Frame(f) => {
                self.unflushed.store(true, Ordering::Relaxed);
                io_flow(outbound.feed(f).await)
            }
        }
    }

    async fn command<Si>(&mut self, c: Command, key: PublicKey, id: u64, outbound: &mut Si) -> Flow
    where
        Si: Sink<Bytes, Error = io::Error> + Unpin,
    {
        let arg = c.payload.first().map(String::as_str);
        let answer: Result<Datum, Status> = match (c.cmd.as_str(), arg) {
            (cmd::ROSTER, _) => self.relay.roster(None).await,
            (cmd::SEARCH, Some(needle)) if !needle.is_empty() => {
                self.relay.roster(Some(needle)).await
            }
            (cmd::GETUSER, Some(who)) => self.relay.get_user(who).await,
            (cmd::REGISTER, Some(alias)) => {
                let alias = alias.to_string();
                return self.register(&alias, outbound).await;
            }
            (cmd::OFFLINES, _) => return self.deliver_offline(outbound, true).await,
            (cmd::ACK, Some(_)) => {
                if let Some(bad) = c.payload.iter().find(|i| status::validate_id(i).is_err()) {
                    Err(Status::new(
                        status::BAD_ARGUMENT,
                        format!("ACK: {bad:?} is not a message id; nothing was acknowledged"),
                    ))
                } else {
                    let n = self.relay.ack(key, id, &c.payload);
                    Err(Status::new(
                        status::OK,
                        format!("acknowledged {n} of {}", c.payload.len()),
                    ))
                }
            }
            (cmd::GHOST, _) => {
                if self.relay.ghost(key, id).await {
                    let text = "this session now receives this key's messages";
                    if let Flow::Stop(end) = self
                        .reply(outbound, Status::new(status::GHOSTED, text))
                        .await
                    {
                        return Flow::Stop(end);
                    }
                    return self.deliver_offline(outbound, false).await;
                }
                Err(Status::new(status::INTERNAL, "this session is closing"))
            }
            (cmd::AUTH, _) => Err(Status::new(status::BAD_ARGUMENT, "already authenticated")),
            (cmd::SEARCH | cmd::GETUSER | cmd::REGISTER | cmd::ACK, _) => Err(Status::new(
                status::BAD_ARGUMENT,
                format!("{} needs an argument", c.cmd),
            )),
            (other, _) => Err(Status::new(
                status::UNKNOWN_COMMAND,
                format!("unknown command {other:?}"),
            )),
        };
        match answer {
            Ok(datum) => io_flow(outbound.send(relay::frame(datum)).await),
            Err(s) => self.reply(outbound, s).await,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The driver on channels instead of sockets: the same code path both transports use.

    use super::*;
    use crate::config::Limits;
    use crate::store::EmbeddedStore;
    use flexim_protocol::datum::Message;
    use flexim_protocol::handshake::{ClientHandshake, ClientStep};
    use flexim_protocol::{SecretKey, frame};

    fn decode(b: &Bytes) -> Datum {
        let (kind, body) = frame::split_exact(b, frame::MAX_BODY).unwrap();
        Datum::decode(kind, body).unwrap()
    }

    #[tokio::test]
    async fn handshake_routing_and_spoofing_without_sockets() {
        let dir = std::env::temp_dir().join(format!("flexim-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = EmbeddedStore::open(&dir.join("db")).unwrap();
        let store_handle = store.clone();
        let relay = Arc::new(Relay::new(
            SecretKey::from_bytes([1; 32]),
            "test",
            Arc::new(store),
            Limits::default(),
        ));
        let core = relay.clone();
        let (in_tx, in_rx) = mpsc::unbounded_channel::<Inbound>();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut inbound = Box::pin(futures_util::stream::unfold(in_rx, |mut r| async move {
                r.recv().await.map(|x| (x, r))
            }));
            let mut outbound = Box::pin(futures_util::sink::unfold(
                out_tx,
                |tx, b: Bytes| async move {
                    tx.send(b).map_err(io::Error::other)?;
                    Ok::<_, io::Error>(tx)
                },
            ));
            run(relay, &mut inbound, &mut outbound, stop_rx).await
        });

        let me = SecretKey::from_bytes([2; 32]);
        let mut hs = ClientHandshake::new(me.clone(), Some("alice".into()));
        let mut rng = |b: &mut [u8]| b.fill(9);
        loop {
            let datum = decode(&out_rx.recv().await.unwrap());
            match hs.handle(datum, &mut rng).unwrap() {
                ClientStep::Send(d) => in_tx
                    .send(Inbound::Frame(d.to_frame().unwrap().into()))
                    .unwrap(),
                ClientStep::Done { me: user, .. } => {
                    assert_eq!(user.key, me.public_key());
                    break;
                }
            }
        }
        // The alias asked for in AUTH was registered.
        assert!(
            matches!(decode(&out_rx.recv().await.unwrap()), Datum::Status(s) if s.status == status::OK)
        );

        let to_self = |from: &str| Message {
            to: "alice".into(),
            from: from.into(),
            flags: vec![],
            date: 0,
            msg: "sealed".into(),
            id: None,
        };
        let frame = Bytes::from(Datum::Message(to_self("ALICE")).to_frame().unwrap());
        in_tx.send(Inbound::Frame(frame.clone())).unwrap();
        let mut got = [out_rx.recv().await.unwrap(), out_rx.recv().await.unwrap()];
        got.sort_by_key(|b| b[0]);
        assert_eq!(got[0], frame, "the message comes back byte for byte");
        assert!(matches!(decode(&got[1]), Datum::Status(s) if s.status == status::RELAYED));

        let spoof = Datum::Message(to_self("bob")).to_frame().unwrap();
        in_tx.send(Inbound::Frame(spoof.into())).unwrap();
        assert!(
            matches!(decode(&out_rx.recv().await.unwrap()), Datum::Status(s) if s.status == status::SPOOF)
        );

        // A message that reached the store while the session was online (routed during its
        // login) is delivered as soon as the core wakes the session.
        use crate::store::{Entry, Store};
        let late = Bytes::from(Datum::Message(to_self("ALICE")).to_frame().unwrap());
        let entry = Entry {
            sender: me.public_key(),
            id: None,
            frame: late.clone(),
            at: relay::now(),
        };
        store_handle
            .enqueue(me.public_key(), vec![entry], None)
            .await
            .unwrap();
        core.wake_primary(me.public_key());
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), out_rx.recv());
        assert_eq!(woken.await.expect("delivered when woken").unwrap(), late);
        assert!(matches!(decode(&out_rx.recv().await.unwrap()),
            Datum::Status(s) if s.status == status::DELIVERED_STORED));

        drop(in_tx);
        assert!(matches!(task.await.unwrap(), End::Closed));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_message_stored_while_online_wakes_the_session() {
        let dir = std::env::temp_dir().join(format!("flexim-wake-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = EmbeddedStore::open(&dir.join("db")).unwrap();
        let relay = Arc::new(Relay::new(
            SecretKey::from_bytes([1; 32]),
            "test",
            Arc::new(store),
            Limits::default(),
        ));
        let bob = SecretKey::from_bytes([3; 32]).public_key();
        let login = relay.login(bob).await.unwrap();
        // Bob's session is registered but its queue is gone (as if it were still logging in
        // and not reading yet): the message goes to the store...
        drop(login.rx);
        let frame = Bytes::from_static(b"\x03\x00\x01\x80");
        let answer = match relay.route(bob, bob, None, frame.clone()) {
            Answer::Now(s) => s,
            Answer::Frame(f) => match decode(&f) {
                Datum::Status(s) => s,
                other => panic!("not a Status: {other:?}"),
            },
            Answer::Later(rx) => rx.await.unwrap(),
        };
        assert_eq!(answer.status, status::STORED);
        // ...and the session is told to look at the store again.
        tokio::time::timeout(std::time::Duration::from_secs(5), login.stored.notified())
            .await
            .expect("the session is woken");
        let stored = relay.peek_offline(bob, 0).await.unwrap();
        assert_eq!(stored[0].entry.frame, frame);
        let _ = std::fs::remove_dir_all(dir);
    }
}
