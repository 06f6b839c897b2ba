//! The relay core: who is online, where a message goes, presence, and the durable queue.
//!
//! The core knows no sockets and no transports. A connection — TCP or WebSocket, the session
//! driver does not care — registers here after AUTH and gets back a queue of frames to write
//! and a kick signal. Everything the core does to a session goes through those two.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flexim_protocol::datum::{Roster, Status, User};
use flexim_protocol::handshake::{HandshakeError, PendingChallenge};
use flexim_protocol::keys::validate_alias;
use flexim_protocol::{Datum, PublicKey, SecretKey, status};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::cluster::{Claimed, Cluster, Signal};
use crate::config::Limits;
use crate::store::{BoxFuture, Claim, Entry, QueueLimits, Store, StoreError, Stored, UserRecord};

/// The current Unix time in seconds. The core reads the clock here and nowhere else, and
/// passes the time into the protocol crate, which has no clock.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Fills a buffer from the operating system's secure random source.
pub fn random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random source is available");
}

/// A one-shot "close this session" signal with the reason to tell the client.
#[derive(Default)]
pub struct Kick {
    /// Wakes the session's driver; a permit is stored if it is not waiting yet.
    notify: Notify,
    /// The Status to send before closing; the first reason wins.
    reason: Mutex<Option<Status>>,
}

impl Kick {
    /// Asks the session to close after telling the client `code` and `text`.
    pub fn fire(&self, code: i8, text: &str) {
        let mut reason = self.reason.lock().expect("kick lock");
        if reason.is_none() {
            *reason = Some(Status::new(code, text));
        }
        self.notify.notify_one();
    }

    /// Waits for the signal and returns the reason.
    pub async fn fired(&self) -> Status {
        self.notify.notified().await;
        self.reason
            .lock()
            .expect("kick lock")
            .clone()
            .unwrap_or_else(|| Status::new(status::TAKEN_OVER, "closed by the server"))
    }
}

/// What the core holds for one live session.
#[derive(Clone)]
struct Peer {
    /// Identifies the session among the key's sessions.
    id: u64,
    /// Frames for the session's writer; bounded by `Limits::outbound_queue`, never awaited.
    tx: mpsc::Sender<Bytes>,
    /// Closes the session (slow reader, GHOST).
    kick: Arc<Kick>,
    /// Wakes the session to deliver from the store: a message for it was stored after it
    /// looked (it was routed while the session was still logging in).
    stored: Arc<Notify>,
}

/// All live sessions of one key. Only the primary receives messages; the others may send.
struct KeySessions {
    /// The session messages are delivered to.
    primary: Peer,
    /// Later sessions of the same key, oldest first; one becomes primary by GHOST or when the
    /// primary leaves.
    others: Vec<Peer>,
    /// Whether new messages go straight to the primary's queue. False until the primary has
    /// delivered everything stored for the key with no store write for it still running:
    /// until then new messages are stored too, behind the older ones, which keeps every
    /// sender's order.
    live: bool,
    /// The primary was told to close (slow reader): do not wake it to deliver more.
    closing: bool,
    /// With several nodes: another node holds the key's active session, so the sessions here
    /// wait (as secondary ones do) until they GHOST or the other node lets the key go.
    elsewhere: bool,
    /// Messages with an id written to the primary and not acknowledged yet, oldest first.
    unacked: VecDeque<Unacked>,
    /// The answer to a Message without an id relayed to this key, framed once at login: the
    /// busiest answer of all costs no formatting or encoding per message.
    relayed: Bytes,
    /// How many of `unacked` are held only in memory (relayed). Only these count against
    /// `Limits::max_unacked`: stored ones cost the store, not the relay's memory, so a login
    /// that delivers a long backlog does not make the session a "slow reader".
    in_memory: usize,
}

impl KeySessions {
    fn new(key: PublicKey, primary: Peer) -> Self {
        KeySessions {
            relayed: status_frame(status::RELAYED, format!("relayed to {key}")),
            primary,
            others: Vec::new(),
            live: false,
            closing: false,
            elsewhere: false,
            unacked: VecDeque::new(),
            in_memory: 0,
        }
    }
}

/// A message with an id that a session received and its client has not acknowledged.
#[derive(Debug, Clone)]
pub struct Unacked {
    /// The Message's id, as the ACK names it.
    pub id: String,
    /// Who gets the receipt (Status 7) when it is acknowledged.
    pub sender: PublicKey,
    /// Where the message is kept until then.
    pub held: Held,
}

/// Where an unacknowledged message is kept.
#[derive(Debug, Clone)]
pub enum Held {
    /// Only in memory: it was relayed to an online recipient. If the session ends first, it
    /// is written to the store (and its sender gets Status 8).
    Memory(Bytes),
    /// In the store under this sequence number: the ACK removes it from there.
    Stored(u64),
}

/// Who is online, and what is on its way to the store. One lock for both, so that deciding
/// "deliver now or store" and starting the store write happen in one step.
#[derive(Default)]
struct Routing {
    /// Live sessions by key.
    sessions: HashMap<PublicKey, KeySessions>,
    /// Store writes started and not finished, per recipient. A session goes live only when
    /// its key has none, so it never receives a new message before an older one still being
    /// written.
    storing: HashMap<PublicKey, usize>,
}

/// The answer to a routed Message.
pub enum Answer {
    /// Known at once (relayed, or refused).
    Now(Status),
    /// Known at once and framed already (relayed, without an id).
    Frame(Bytes),
    /// Known once the store has committed the message (or failed to).
    Later(oneshot::Receiver<Status>),
}

/// Counters for `/metrics` and the benchmarks. Relaxed atomics: they are statistics.
#[derive(Default)]
pub struct Metrics {
    /// Connections accepted since start (both transports).
    pub connections_total: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Successful AUTHs.
    pub logins: AtomicU64,
    /// Failed AUTHs.
    pub auth_failures: AtomicU64,
    /// Messages handed to an online recipient.
    pub relayed: AtomicU64,
    /// Messages written to the durable queue.
    pub stored: AtomicU64,
    /// Stored messages delivered.
    pub delivered_offline: AtomicU64,
    /// Datums answered with an error Status.
    pub errors: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A session registered with the core after AUTH.
pub struct Login {
    /// The session's id among its key's sessions.
    pub id: u64,
    /// Frames the core wants written to this session.
    pub rx: mpsc::Receiver<Bytes>,
    /// Fired when the core wants this session closed.
    pub kick: Arc<Kick>,
    /// Fired when a message for this session was stored while it was online; it should
    /// deliver from the store again.
    pub stored: Arc<Notify>,
    /// Whether messages for the key come to this session (false if an older one exists).
    pub primary: bool,
    /// The user as stored before this login (its `last_seen` is the previous visit).
    pub before: UserRecord,
}

/// The shared relay state. One per server, shared by every connection of every transport.
pub struct Relay {
    /// The limits every session enforces.
    pub limits: Limits,
    /// Durable users, aliases and offline queues.
    store: Arc<dyn Store>,
    /// The server's X25519 key: it seals AUTH challenges.
    server_key: SecretKey,
    /// The framed User datum sent after every header, built once.
    hello: Bytes,
    /// Live sessions and running store writes, in shards by key so that messages to
    /// different users do not wait for one lock. A std mutex per shard: held only for map
    /// operations and to hand writes to the store in order, never across an await, and never
    /// two at once.
    shards: Box<[Mutex<Routing>]>,
    /// Source of session ids.
    next_id: AtomicU64,
    /// Statistics.
    pub metrics: Metrics,
    /// The other nodes, when several share one Redis; `None` for a single node.
    cluster: Option<Arc<Cluster>>,
    /// Keys whose holding node is about to be woken: a wake-up already on its way covers
    /// every message stored before it looks, so a burst of messages costs one lookup.
    waking: Mutex<HashSet<PublicKey>>,
}

/// Shards of the routing table. More than the cores of any machine this runs on, so two
/// messages to different users rarely meet on one lock.
const SHARDS: usize = 64;

/// Frames a datum the server built itself. Server datums are far below 64 KiB by
/// construction (rosters are trimmed to fit), so a failure is a bug.
pub fn frame(datum: impl Into<Datum>) -> Bytes {
    Bytes::from(
        datum
            .into()
            .to_frame()
            .expect("server datums fit in a frame"),
    )
}

/// A Status frame.
pub fn status_frame(code: i8, text: impl Into<String>) -> Bytes {
    frame(Status::new(code, text))
}

impl Relay {
    /// A relay with the given key, name, store and limits.
    pub fn new(server_key: SecretKey, name: &str, store: Arc<dyn Store>, limits: Limits) -> Self {
        let hello = frame(User {
            aliases: vec![name.to_string()],
            key: server_key.public_key(),
            last_seen: 0,
            online: None,
        });
        Relay {
            limits,
            store,
            server_key,
            hello,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Routing::default()))
                .collect(),
            next_id: AtomicU64::new(1),
            metrics: Metrics::default(),
            cluster: None,
            waking: Mutex::new(HashSet::new()),
        }
    }

    /// The same relay as one node of several: sessions, presence and wake-ups are
    /// coordinated through `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The server's User datum, framed.
    pub fn hello(&self) -> Bytes {
        self.hello.clone()
    }

    /// The store's counters, for `/metrics`.
    pub fn store_stats(&self) -> crate::store::StoreStats {
        self.store.stats()
    }

    /// The server's public key.
    pub fn public_key(&self) -> PublicKey {
        self.server_key.public_key()
    }

    /// Issues an AUTH challenge to `client`, telling it when it was last seen.
    pub async fn challenge(
        &self,
        client: PublicKey,
    ) -> Result<(PendingChallenge, Bytes), HandshakeError> {
        let last_seen = match self.store.user(client).await {
            Ok(Some(u)) => u.last_seen,
            _ => 0,
        };
        let (pending, auth) =
            PendingChallenge::issue(&self.server_key, client, now(), last_seen, &mut random)?;
        Ok((pending, frame(auth)))
    }

    /// Registers an authenticated session for `key`. The first session of a key is the
    /// primary; a later one waits for GHOST. Tells everyone else when the key comes online.
    pub async fn login(&self, key: PublicKey) -> Result<Login, StoreError> {
        let before = self.store.touch(key, now()).await?;
        let (tx, rx) = mpsc::channel(self.limits.outbound_queue);
        let kick = Arc::new(Kick::default());
        let stored = Arc::new(Notify::new());
        let peer = Peer {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            kick: kick.clone(),
            stored: stored.clone(),
        };
        let id = peer.id;
        let mut primary = {
            let mut routing = self.lock(&key);
            match routing.sessions.get_mut(&key) {
                Some(s) => {
                    s.others.push(peer);
                    false
                }
                None => {
                    let mut s = KeySessions::new(key, peer);
                    // Until the claim below succeeds, another node may hold the key.
                    s.elsewhere = self.cluster.is_some();
                    routing.sessions.insert(key, s);
                    true
                }
            }
        };
        if primary && let Some(cluster) = &self.cluster {
            let claimed = cluster.claim(&key, false).await;
            let mut routing = self.lock(&key);
            let s = routing.sessions.get_mut(&key);
            match (claimed, s) {
                (Ok(Claimed::Here), Some(s)) if s.primary.id == id => s.elsewhere = false,
                (Ok(_), _) => primary = false,
                (Err(e), _) => {
                    drop(routing);
                    self.forget(key, id);
                    return Err(StoreError::Engine(e.to_string()));
                }
            }
        }
        Metrics::inc(&self.metrics.logins);
        if primary {
            self.broadcast_presence(key, status::PRESENCE_ONLINE);
            if let Some(cluster) = &self.cluster {
                let node = cluster.node().to_string();
                cluster.send(
                    None,
                    Signal::Presence {
                        key,
                        online: true,
                        node,
                    },
                );
            }
        }
        Ok(Login {
            id,
            rx,
            kick,
            stored,
            primary,
            before,
        })
    }

    /// The shard that holds `key`'s sessions: routing a message locks only it.
    fn lock(&self, key: &PublicKey) -> std::sync::MutexGuard<'_, Routing> {
        // Keys are uniformly random (X25519 public keys), so their first bytes spread them.
        let i = u16::from_le_bytes([key.0[0], key.0[1]]) as usize % self.shards.len();
        self.shards[i].lock().expect("routing lock")
    }

    /// Every shard, one at a time (presence, resync): never two locks at once, so no order
    /// between shards can deadlock.
    fn each_shard(&self, mut f: impl FnMut(&mut Routing)) {
        for shard in self.shards.iter() {
            f(&mut shard.lock().expect("routing lock"));
        }
    }

    /// Removes a session that never finished logging in.
    fn forget(&self, key: PublicKey, id: u64) {
        let mut routing = self.lock(&key);
        if let Some(s) = routing.sessions.get_mut(&key) {
            if s.primary.id == id {
                if s.others.is_empty() {
                    routing.sessions.remove(&key);
                } else {
                    s.primary = s.others.remove(0);
                }
            } else {
                s.others.retain(|p| p.id != id);
            }
        }
    }

    /// Removes a session. When the primary leaves, what it had not acknowledged is stored,
    /// and the oldest other session takes over; when the last one leaves, the key goes
    /// offline.
    pub async fn logout(self: &Arc<Self>, key: PublicKey, id: u64) {
        let mut held_here = false;
        let gone = {
            let mut routing = self.lock(&key);
            let Some(s) = routing.sessions.get_mut(&key) else {
                return;
            };
            if s.primary.id == id {
                held_here = !s.elsewhere;
                self.demote(&mut routing, key);
                let s = routing.sessions.get_mut(&key).expect("still registered");
                if s.others.is_empty() {
                    routing.sessions.remove(&key);
                    true
                } else {
                    s.primary = s.others.remove(0);
                    s.closing = false;
                    // The new primary catches up from the store before it goes live.
                    s.primary.stored.notify_one();
                    false
                }
            } else {
                s.others.retain(|p| p.id != id);
                false
            }
        };
        if gone {
            if let Err(e) = self.store.touch(key, now()).await {
                tracing::warn!(error = %e, "could not record last_seen at logout");
            }
            self.broadcast_presence(key, status::PRESENCE_OFFLINE);
            if let Some(cluster) = &self.cluster
                && held_here
            {
                if let Err(e) = cluster.release(&key).await {
                    // The key stays marked as held here until this node's heartbeat stops;
                    // another node's session takes it over then.
                    tracing::warn!(error = %e, "could not release a key in the cluster");
                }
                let node = cluster.node().to_string();
                cluster.send(
                    None,
                    Signal::Presence {
                        key,
                        online: false,
                        node,
                    },
                );
            }
        }
    }

    /// Makes session `id` the primary for `key`; the old primary is told and closed.
    /// Returns false if the session is not registered (it was closed meanwhile).
    pub async fn ghost(self: &Arc<Self>, key: PublicKey, id: u64) -> bool {
        let elsewhere = {
            let routing = self.lock(&key);
            let Some(s) = routing.sessions.get(&key) else {
                return false;
            };
            if s.primary.id != id && !s.others.iter().any(|p| p.id == id) {
                return false;
            }
            s.elsewhere
        };
        if elsewhere && let Some(cluster) = &self.cluster {
            // Take the key from the node that holds it, and tell that node to close its
            // session (it stores what that session had not acknowledged, then wakes us).
            let old = cluster
                .holders(&[key])
                .await
                .ok()
                .and_then(|h| h[0].clone());
            if cluster.claim(&key, true).await.is_err() {
                return false;
            }
            if let Some(old) = old.filter(|n| n != cluster.node()) {
                cluster.send(Some(&old), Signal::Kick(key));
            }
        }
        let mut routing = self.lock(&key);
        let Some(s) = routing.sessions.get_mut(&key) else {
            return false;
        };
        s.elsewhere = false;
        if s.primary.id == id {
            s.primary.stored.notify_one();
            return true;
        }
        if !s.others.iter().any(|p| p.id == id) {
            return false;
        }
        // What the old primary had not acknowledged goes to the store first, so the new
        // primary receives it, in order, when it catches up.
        self.demote(&mut routing, key);
        let s = routing.sessions.get_mut(&key).expect("still registered");
        let pos = s
            .others
            .iter()
            .position(|p| p.id == id)
            .expect("checked above");
        s.closing = false;
        let new = s.others.remove(pos);
        let old = std::mem::replace(&mut s.primary, new);
        old.kick.fire(
            status::TAKEN_OVER,
            "a newer session of this key took over (GHOST)",
        );
        true
    }

    /// Whether `key` has a live session.
    pub fn is_online(&self, key: &PublicKey) -> bool {
        self.lock(key).sessions.contains_key(key)
    }

    /// Whether each key is online on this node or, with several nodes, on any live one.
    pub async fn online(&self, keys: &[PublicKey]) -> Vec<bool> {
        let here: Vec<bool> = keys.iter().map(|k| self.is_online(k)).collect();
        let Some(cluster) = &self.cluster else {
            return here;
        };
        match cluster.holders(keys).await {
            Ok(holders) => here
                .into_iter()
                .zip(holders)
                .map(|(h, node)| h || node.is_some())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "presence from the cluster is unavailable");
                here
            }
        }
    }

    /// Tells every live session that `key` came online or went offline. Presence is
    /// best-effort: a session whose queue is full misses the notice rather than slowing the
    /// relay (ROSTER gives the truth on demand).
    fn broadcast_presence(&self, key: PublicKey, code: i8) {
        let notice = status_frame(code, key.to_hex());
        self.each_shard(|routing| {
            for (k, s) in routing.sessions.iter() {
                if *k == key {
                    continue;
                }
                for peer in std::iter::once(&s.primary).chain(s.others.iter()) {
                    let _ = peer.tx.try_send(notice.clone());
                }
            }
        });
    }

    /// Resolves a `to` field: a hex key, or a registered alias.
    pub async fn resolve(&self, who: &str) -> Result<Option<PublicKey>, StoreError> {
        if let Some(k) = PublicKey::from_hex(who) {
            return Ok(Some(k));
        }
        if validate_alias(who).is_err() {
            return Ok(None);
        }
        self.store.resolve_alias(who.to_string()).await
    }

    /// Delivers a Message frame from `sender` to `to`: straight to its primary session if it
    /// is online and caught up, otherwise into the durable queue. Messages with an `id` are
    /// remembered until the recipient acknowledges them. Never waits: a store write is
    /// started here, in order, and its answer comes later.
    pub fn route(
        self: &Arc<Self>,
        sender: PublicKey,
        to: PublicKey,
        id: Option<String>,
        frame: Bytes,
    ) -> Answer {
        let mut routing = self.lock(&to);
        if let Some(s) = routing.sessions.get_mut(&to)
            && s.live
        {
            let slow = if id.is_some() && s.in_memory >= self.limits.max_unacked {
                Some("you have not acknowledged your messages; reconnect to get the rest")
            } else {
                match s.primary.tx.try_send(frame.clone()) {
                    Ok(()) => {
                        if let Some(id) = &id {
                            s.in_memory += 1;
                            s.unacked.push_back(Unacked {
                                id: id.clone(),
                                sender,
                                held: Held::Memory(frame),
                            });
                        }
                        Metrics::inc(&self.metrics.relayed);
                        if id.is_none() {
                            return Answer::Frame(s.relayed.clone());
                        }
                        let text = format!("relayed to {to}");
                        return Answer::Now(Status::new(status::RELAYED, text).with_id(id));
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        Some("you are not reading fast enough; reconnect to get the rest")
                    }
                    // The session is ending; its logout stores what it held.
                    Err(mpsc::error::TrySendError::Closed(_)) => None,
                }
            };
            if let Some(why) = slow {
                // The recipient does not keep up. Keep its messages safe in the store and
                // drop the session; it catches up at its next login.
                s.primary.kick.fire(status::TOO_SLOW, why);
                s.closing = true;
            }
            self.demote(&mut routing, to);
        }
        let limits = QueueLimits {
            messages: self.limits.max_offline_messages,
            bytes: self.limits.max_offline_bytes,
        };
        let entry = Entry {
            sender,
            id: id.clone(),
            frame,
            at: now(),
        };
        let write = self.start_store(&mut routing, to, vec![entry], Some(limits));
        drop(routing);
        let (answer, later) = oneshot::channel();
        let relay = self.clone();
        tokio::spawn(async move {
            let result = write.await;
            relay.store_finished(to);
            let status = match result {
                Ok(_) => {
                    Metrics::inc(&relay.metrics.stored);
                    Status::new(
                        status::STORED,
                        format!("stored for {to}: delivered when they log in"),
                    )
                }
                Err(StoreError::QueueFull { messages, bytes }) => Status::new(
                    status::QUEUE_FULL,
                    format!("{to} has {messages} messages ({bytes} bytes) waiting; not stored"),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "could not store a message");
                    Status::new(
                        status::INTERNAL,
                        "storage failure: the message was not stored",
                    )
                }
            };
            let _ = answer.send(status.with_id(id));
        });
        Answer::Later(later)
    }

    /// Starts a store write for `to`, counted in `storing` until [`Relay::store_finished`].
    fn start_store(
        &self,
        routing: &mut Routing,
        to: PublicKey,
        entries: Vec<Entry>,
        limits: Option<QueueLimits>,
    ) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        *routing.storing.entry(to).or_default() += 1;
        self.store.enqueue(to, entries, limits)
    }

    /// A store write for `to` ended: the primary, if it is catching up, looks again.
    fn store_finished(self: &Arc<Self>, to: PublicKey) {
        let mut routing = self.lock(&to);
        if let Some(n) = routing.storing.get_mut(&to) {
            *n -= 1;
            if *n == 0 {
                routing.storing.remove(&to);
            }
        }
        match routing.sessions.get(&to) {
            Some(s) if !s.elsewhere => {
                if !s.closing {
                    s.primary.stored.notify_one();
                }
            }
            _ => {
                drop(routing);
                self.wake_elsewhere(to);
            }
        }
    }

    /// Tells the node holding `to`'s active session, if it is another one, that messages
    /// for it were stored.
    fn wake_elsewhere(self: &Arc<Self>, to: PublicKey) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if !self.waking.lock().expect("waking lock").insert(to) {
            return;
        }
        let relay = self.clone();
        tokio::spawn(async move {
            // Leave the set before looking: a message stored from now on wakes again.
            relay.waking.lock().expect("waking lock").remove(&to);
            if let Ok(holders) = cluster.holders(&[to]).await
                && let Some(node) = holders[0].as_ref().filter(|n| *n != cluster.node())
            {
                cluster.send(Some(node), Signal::Wake(to));
            }
        });
    }

    /// Acts on a signal from another node.
    pub async fn signal(self: &Arc<Self>, signal: Signal) {
        match signal {
            Signal::Wake(key) => self.wake_primary(key),
            Signal::Frame(key, frame) => {
                let routing = self.lock(&key);
                if let Some(s) = routing.sessions.get(&key)
                    && !s.elsewhere
                {
                    // Best effort, like every receipt: a full queue drops it.
                    let _ = s.primary.tx.try_send(Bytes::from(frame));
                }
            }
            Signal::Kick(key) => {
                let mut routing = self.lock(&key);
                if let Some(s) = routing.sessions.get_mut(&key) {
                    s.elsewhere = true;
                    s.closing = true;
                    s.primary.kick.fire(
                        status::TAKEN_OVER,
                        "a newer session of this key took over (GHOST) on another node",
                    );
                    self.demote(&mut routing, key);
                }
            }
            Signal::Presence { key, online, .. } => {
                let code = if online {
                    status::PRESENCE_ONLINE
                } else {
                    status::PRESENCE_OFFLINE
                };
                self.broadcast_presence(key, code);
                if !online {
                    // The key is free: a session waiting here may take it.
                    self.claim_waiting(&[key]).await;
                }
            }
            Signal::Resync => {
                self.each_shard(|routing| {
                    for s in routing.sessions.values().filter(|s| !s.elsewhere) {
                        s.primary.stored.notify_one();
                    }
                });
            }
        }
    }

    /// Tries to make the waiting sessions of these keys (or, with an empty list, of every
    /// key waiting here) active: their holder left or died. Run every second by the server.
    pub async fn claim_waiting(self: &Arc<Self>, keys: &[PublicKey]) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let mut waiting: Vec<PublicKey> = Vec::new();
        self.each_shard(|routing| {
            waiting.extend(
                routing
                    .sessions
                    .iter()
                    .filter(|(k, s)| {
                        s.elsewhere && !s.closing && (keys.is_empty() || keys.contains(k))
                    })
                    .map(|(k, _)| *k),
            );
        });
        for key in waiting {
            if let Ok(Claimed::Here) = cluster.claim(&key, false).await {
                let mut routing = self.lock(&key);
                if let Some(s) = routing.sessions.get_mut(&key) {
                    s.elsewhere = false;
                    s.primary.stored.notify_one();
                }
            }
        }
    }

    /// Takes `key`'s primary off the fast path: new messages are stored from now on, and the
    /// messages it holds only in memory without an acknowledgement are written to the store
    /// now, ahead of anything routed later. Their senders get Status 8 once they are durable.
    fn demote(self: &Arc<Self>, routing: &mut Routing, key: PublicKey) {
        let Some(s) = routing.sessions.get_mut(&key) else {
            return;
        };
        s.live = false;
        let mut entries = Vec::new();
        let mut receipts = Vec::new();
        s.in_memory = 0;
        for u in s.unacked.drain(..) {
            if let Held::Memory(frame) = u.held {
                receipts.push((u.sender, u.id.clone()));
                entries.push(Entry {
                    sender: u.sender,
                    id: Some(u.id),
                    frame,
                    at: now(),
                });
            }
        }
        if entries.is_empty() {
            return;
        }
        let n = entries.len();
        // No limits: the recipient's connection had already accepted these messages.
        let write = self.start_store(routing, key, entries, None);
        let relay = self.clone();
        tokio::spawn(async move {
            let result = write.await;
            relay.store_finished(key);
            match result {
                Ok(_) => {
                    for (sender, id) in receipts {
                        let text = format!("stored for {key}: delivered when they log in");
                        relay.receipt(
                            sender,
                            Status::new(status::STORED_LATER, text).with_id(Some(id)),
                        );
                    }
                }
                Err(e) => tracing::error!(
                    error = %e,
                    messages = n,
                    "could not store unacknowledged messages; their senders still hold them"
                ),
            }
        });
    }

    /// Sends a receipt to `to`'s primary session, or keeps it in the store for its next
    /// login when it is offline or not reading.
    fn receipt(self: &Arc<Self>, to: PublicKey, receipt: Status) {
        let frame = frame(receipt);
        let routing = self.lock(&to);
        let here = routing.sessions.get(&to);
        if let Some(s) = here
            && !s.elsewhere
            && s.primary.tx.try_send(frame.clone()).is_ok()
        {
            return;
        }
        if here.is_none()
            && let Some(cluster) = self.cluster.clone()
        {
            // Not here: if another node holds the sender, hand the receipt over directly;
            // only an offline sender's receipt is worth a store write.
            drop(routing);
            let relay = self.clone();
            tokio::spawn(async move {
                match cluster.holders(&[to]).await {
                    Ok(h) if h[0].as_ref().is_some_and(|n| n != cluster.node()) => {
                        let node = h[0].clone().expect("checked");
                        cluster.send(Some(&node), Signal::Frame(to, frame.to_vec()));
                    }
                    _ => relay.store_receipt(to, frame),
                }
            });
            return;
        }
        drop(routing);
        self.store_receipt(to, frame);
    }

    /// Keeps a receipt in the store for `to`'s next login (or its session catching up).
    fn store_receipt(self: &Arc<Self>, to: PublicKey, frame: Bytes) {
        let mut routing = self.lock(&to);
        let limits = QueueLimits {
            messages: self.limits.max_offline_messages,
            bytes: self.limits.max_offline_bytes,
        };
        let entry = Entry {
            sender: to,
            id: None,
            frame,
            at: now(),
        };
        let write = self.start_store(&mut routing, to, vec![entry], Some(limits));
        drop(routing);
        let relay = self.clone();
        tokio::spawn(async move {
            if let Err(e) = write.await {
                // A receipt is a courtesy: the sender resends what it never saw confirmed,
                // and the recipient drops the repeat.
                tracing::debug!(error = %e, "a receipt was not stored");
            }
            relay.store_finished(to);
        });
    }

    /// ACK from session `session` of `key`: forgets the acknowledged messages (removing
    /// stored ones from the store) and sends each sender Status 7. Returns how many of the
    /// ids were pending. Only the primary's acknowledgements count: the others receive
    /// nothing to acknowledge.
    pub fn ack(self: &Arc<Self>, key: PublicKey, session: u64, ids: &[String]) -> usize {
        let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut done = Vec::new();
        let mut seqs = Vec::new();
        {
            let mut routing = self.lock(&key);
            let Some(s) = routing.sessions.get_mut(&key) else {
                return 0;
            };
            if s.primary.id != session {
                return 0;
            }
            let mut freed = 0;
            s.unacked.retain(|u| {
                if !ids.contains(u.id.as_str()) {
                    return true;
                }
                match u.held {
                    Held::Stored(seq) => seqs.push(seq),
                    Held::Memory(_) => freed += 1,
                }
                done.push((u.sender, u.id.clone()));
                false
            });
            s.in_memory -= freed;
        }
        if !seqs.is_empty() {
            let n = seqs.len() as u64;
            self.metrics
                .delivered_offline
                .fetch_add(n, Ordering::Relaxed);
            let removal = self.store.remove(key, seqs);
            tokio::spawn(async move {
                if let Err(e) = removal.await {
                    // They stay stored and come again at the next login; the client drops
                    // the repeats by id.
                    tracing::warn!(error = %e, "could not remove acknowledged messages");
                }
            });
        }
        for (sender, id) in &done {
            let text = format!("delivered to {key}");
            self.receipt(
                *sender,
                Status::new(status::DELIVERED, text).with_id(Some(id.clone())),
            );
        }
        done.len()
    }

    /// Session `session` of `key` wrote these stored messages; they stay in the store until
    /// acknowledged. Ignored unless it is the primary (only the primary's ACKs count).
    pub fn track(&self, key: PublicKey, session: u64, delivered: Vec<Unacked>) {
        let mut routing = self.lock(&key);
        if let Some(s) = routing.sessions.get_mut(&key)
            && s.primary.id == session
        {
            s.unacked.extend(delivered);
        }
    }

    /// Puts session `session` of `key` on the fast path if it is the primary and no store
    /// write for the key is running. Returns whether it is live; the caller then delivers
    /// what the store holds one last time (everything written before this point).
    pub fn try_go_live(&self, key: PublicKey, session: u64) -> bool {
        let mut routing = self.lock(&key);
        let writing = routing.storing.contains_key(&key);
        match routing.sessions.get_mut(&key) {
            Some(s) if s.primary.id == session && !s.closing && !s.elsewhere => {
                if !writing {
                    s.live = true;
                }
                s.live
            }
            _ => false,
        }
    }

    /// Deletes stored messages older than the retention, telling each sender of one with an
    /// id and each recipient how many it lost (Status 9). Returns how many were deleted.
    pub async fn expire(self: &Arc<Self>, retention: std::time::Duration) -> usize {
        let before = now().saturating_sub(retention.as_secs() as i64);
        let gone = match self.store.expire(before).await {
            Ok(gone) => gone,
            Err(e) => {
                tracing::error!(error = %e, "could not delete expired messages");
                return 0;
            }
        };
        if gone.is_empty() {
            return 0;
        }
        let age = describe_duration(retention);
        let mut per_recipient: HashMap<PublicKey, usize> = HashMap::new();
        for e in &gone {
            *per_recipient.entry(e.to).or_default() += 1;
            if let Some(id) = &e.id {
                let text = format!("expired unread after {age}: {} did not log in", e.to);
                self.receipt(
                    e.sender,
                    Status::new(status::EXPIRED, text).with_id(Some(id.clone())),
                );
            }
        }
        for (to, n) in per_recipient {
            let text = format!(
                "{n} stored message{} expired unread after {age}",
                if n == 1 { "" } else { "s" }
            );
            self.receipt(to, Status::new(status::EXPIRED, text));
        }
        tracing::info!(messages = gone.len(), retention = %age, "deleted expired stored messages");
        gone.len()
    }

    /// Tells the primary session of `to`, if any, that the store has messages for it.
    pub fn wake_primary(&self, to: PublicKey) {
        let routing = self.lock(&to);
        if let Some(s) = routing.sessions.get(&to)
            && !s.elsewhere
        {
            s.primary.stored.notify_one();
        }
    }

    /// Whether session `session` is `key`'s active session: the one messages go to.
    pub fn is_active(&self, key: PublicKey, session: u64) -> bool {
        let routing = self.lock(&key);
        routing
            .sessions
            .get(&key)
            .is_some_and(|s| s.primary.id == session && !s.elsewhere)
    }

    /// The stored entries for `key` from sequence number `from` on, oldest first, at most
    /// one batch.
    pub async fn peek_offline(&self, key: PublicKey, from: u64) -> Result<Vec<Stored>, StoreError> {
        self.store.peek(key, from, self.limits.offline_batch).await
    }

    /// Forgets stored entries without an id once they were written to their recipient.
    pub async fn remove_offline(&self, key: PublicKey, seqs: Vec<u64>) -> Result<(), StoreError> {
        let n = seqs.len() as u64;
        self.store.remove(key, seqs).await?;
        self.metrics
            .delivered_offline
            .fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Claims an alias for `key`.
    pub async fn register(&self, key: PublicKey, alias: &str) -> Status {
        if let Err(e) = validate_alias(alias) {
            return Status::new(
                status::BAD_ARGUMENT,
                format!("invalid alias {alias:?}: {e}"),
            );
        }
        match self
            .store
            .claim_alias(key, alias.to_string(), self.limits.max_aliases)
            .await
        {
            Ok(Claim::Registered) | Ok(Claim::AlreadyYours) => {
                Status::new(status::OK, format!("registered {alias}"))
            }
            Ok(Claim::Taken) => Status::new(
                status::ALIAS_TAKEN,
                format!("the alias {alias} belongs to someone else"),
            ),
            Ok(Claim::TooMany) => Status::new(
                status::BAD_ARGUMENT,
                format!("a key may have at most {} aliases", self.limits.max_aliases),
            ),
            Err(e) => {
                tracing::error!(error = %e, "could not register an alias");
                Status::new(status::INTERNAL, "storage failure: alias not registered")
            }
        }
    }

    /// The stored aliases of `key`.
    pub async fn aliases(&self, key: PublicKey) -> Vec<String> {
        match self.store.user(key).await {
            Ok(Some(u)) => u.aliases,
            _ => Vec::new(),
        }
    }

    fn user_datum(key: PublicKey, record: UserRecord, online: bool) -> User {
        User {
            aliases: record.aliases,
            online: Some(online),
            key,
            last_seen: record.last_seen,
        }
    }

    /// GETUSER: one user by key or alias.
    pub async fn get_user(&self, who: &str) -> Result<Datum, Status> {
        let not_found = || Status::new(status::NO_SUCH_USER, format!("no user {who:?}"));
        let key = self
            .resolve(who)
            .await
            .map_err(|_| Status::new(status::INTERNAL, "storage failure"))?
            .ok_or_else(not_found)?;
        match self.store.user(key).await {
            Ok(Some(record)) => {
                let online = self.online(&[key]).await[0];
                Ok(Datum::User(Self::user_datum(key, record, online)))
            }
            Ok(None) => Err(not_found()),
            Err(_) => Err(Status::new(status::INTERNAL, "storage failure")),
        }
    }

    /// ROSTER (all known users) or SEARCH (users whose alias contains `needle`): online users
    /// first, then the most recently seen, trimmed to fit in one datum.
    pub async fn roster(&self, needle: Option<&str>) -> Result<Datum, Status> {
        let found = match needle {
            None => self.store.users(self.limits.roster_limit).await,
            Some(n) => {
                self.store
                    .search(n.to_string(), self.limits.search_limit)
                    .await
            }
        }
        .map_err(|_| Status::new(status::INTERNAL, "storage failure"))?;
        let keys: Vec<PublicKey> = found.iter().map(|(k, _)| *k).collect();
        let online = self.online(&keys).await;
        let mut users: Vec<User> = found
            .into_iter()
            .zip(online)
            .map(|((k, r), on)| Self::user_datum(k, r, on))
            .collect();
        users.sort_by_key(|u| std::cmp::Reverse((u.online, u.last_seen)));
        let mut roster = Roster { users };
        while Datum::Roster(roster.clone()).encode_body().len() > flexim_protocol::MAX_BODY {
            let keep = roster.users.len() * 9 / 10;
            roster.users.truncate(keep);
        }
        Ok(Datum::Roster(roster))
    }
}

/// A retention in the largest whole unit: "30 days", "12 hours", "90 seconds".
pub fn describe_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3_600 && secs.is_multiple_of(3_600) {
        (secs / 3_600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Whether `from` names the sender: its key in hex (any case) or one of its aliases (any case).
pub fn names_sender(from: &str, key: &PublicKey, aliases: &[String]) -> bool {
    PublicKey::from_hex(from).is_some_and(|k| k == *key)
        || aliases.iter().any(|a| a.eq_ignore_ascii_case(from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_must_name_the_sender() {
        let key = PublicKey([0xab; 32]);
        let aliases = vec!["Alice".to_string()];
        assert!(names_sender(&key.to_hex(), &key, &aliases));
        assert!(names_sender(&key.to_hex().to_uppercase(), &key, &aliases));
        assert!(names_sender("alice", &key, &aliases));
        assert!(!names_sender("bob", &key, &aliases));
        assert!(!names_sender(&PublicKey([1; 32]).to_hex(), &key, &aliases));
    }
}
