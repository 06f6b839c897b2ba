//! The relay: the one core both transports feed, carrying out the routing table's decisions.
//!
//! A connection — TCP or WebSocket, the session driver does not care — registers here after
//! AUTH and gets a [`Mailbox`]: a queue of frames to write and two signals (close, look at the
//! store). The decisions themselves are made by the synchronous [`Table`] (64 shards, one
//! std mutex each, never two held at once and never across an await); this layer does what
//! they say: it hands store writes to the store in the order decided (while still holding the
//! shard, which is what keeps every sender's order), awaits them in spawned tasks, answers,
//! sends receipts and signals other nodes. `nodes.rs` has the parts that talk to the cluster,
//! `receipts.rs` the receipts and the retention, `directory.rs` (beside this module) the users.

mod consent;
mod known;

pub(crate) use consent::Admitted;
pub(crate) use operator::LoginError;
pub(crate) use rooms::{Changes, RoomMessage};
mod nodes;
mod operator;
mod receipts;
mod registry;
mod rooms;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use flexim_protocol::datum::Status;
use flexim_protocol::{PublicKey, SecretKey, status};
use tokio::sync::oneshot;

use crate::clock;
use crate::cluster::{Claimed, Cluster, Signal};
use crate::config::{Limits, Live};
use crate::frames::{self, Id};
use crate::metrics::{self, Metrics};
use crate::peer::{self, Mailbox, Peer};
use crate::rates::Buckets;
use crate::store::{BoxFuture, Full, Placed, QueueLimits, Store, StoreError, Stored, UserRecord};
use crate::table::{
    Admit, Bounds, GhostCheck, GoLive, Routed, SessionId, Table, Then, ToStore, Unacked, Write,
};

/// The answer to a datum, in the order the datums came: known at once, or once the store has
/// committed (or refused) the message it answers. Every answer is a frame by the time it is
/// known, so the session writes it as it is.
pub(crate) enum Answer {
    /// Ready to write.
    Frame(Bytes),
    /// The store's verdict, framed, when it comes.
    Later(oneshot::Receiver<Bytes>),
}

/// A session registered with the relay after AUTH.
pub(crate) struct Login {
    /// The session's id.
    pub(crate) id: SessionId,
    /// What the relay sends it.
    pub(crate) mailbox: Mailbox,
    /// Whether messages for the key come to this session (false if an older one exists).
    pub(crate) primary: bool,
    /// The user as stored before this login (its `last_seen` is the previous visit).
    pub(crate) before: UserRecord,
}

/// A write handed to the store, with what follows it.
struct Started {
    /// Whose queue it writes to.
    to: PublicKey,
    /// The write, running.
    write: Pending,
    /// What to do when it has ended.
    then: Then,
}

/// A running store write, as its kind of admission answers.
enum Pending {
    /// All or nothing ([`Admit::Message`], [`Admit::Receipt`]): stored, or why not.
    Whole(BoxFuture<'static, Result<Vec<u64>, StoreError>>),
    /// What fits ([`Admit::Held`]): a verdict per entry, and the entries' senders in order, to
    /// tell each sender which of its messages were kept.
    Fitting {
        /// The write.
        write: BoxFuture<'static, Result<Vec<Placed>, StoreError>>,
        /// The sender of each entry, in order.
        senders: Vec<PublicKey>,
    },
}

/// Shards of the routing table. More than the cores of any machine this runs on, so two
/// messages to different users rarely meet on one lock.
const SHARDS: usize = 64;

/// The shard of `key` among `n`: keys are uniformly random (X25519 public keys), so their
/// first bytes spread them. The routing table and the cache of known keys use it alike.
fn shard_of(key: &PublicKey, n: usize) -> usize {
    u16::from_le_bytes([key.0[0], key.0[1]]) as usize % n
}

/// The rate limits of sessions, one bucket per key or address ([`crate::rates`]).
pub(crate) struct Rates {
    /// `Limits::message_rate`, by key.
    pub(crate) messages: Buckets<PublicKey>,
    /// `Limits::command_rate`, by key.
    pub(crate) commands: Buckets<PublicKey>,
    /// `Limits::lookup_rate`, by key.
    pub(crate) lookups: Buckets<PublicKey>,
    /// `Limits::new_key_rate`, by address.
    pub(crate) new_keys: Buckets<std::net::IpAddr>,
}

impl Rates {
    /// Empty buckets for the rates of `limits`.
    fn new(limits: &Limits) -> Self {
        Rates {
            messages: Buckets::new(limits.message_rate),
            commands: Buckets::new(limits.command_rate),
            lookups: Buckets::new(limits.lookup_rate),
            new_keys: Buckets::new(limits.new_key_rate),
        }
    }
}

/// The shared relay state. One per server, shared by every connection of every transport.
pub(crate) struct Relay {
    /// The limits every session enforces, as the server started with them; those that
    /// change while it runs are read from `live` instead.
    pub(crate) limits: Limits,
    /// The limits that change while the server runs ([`Relay::live`], [`Relay::reload`]).
    live: std::sync::RwLock<Live>,
    /// Durable users, aliases and offline queues.
    pub(crate) store: Arc<dyn Store>,
    /// The server's X25519 key: it seals AUTH challenges.
    pub(crate) server_key: SecretKey,
    /// The framed User datum sent after every header, built once.
    pub(crate) hello: Bytes,
    /// The routing table in shards by key, so that messages to different users do not wait for
    /// one lock.
    shards: Box<[Mutex<Table<Peer>>]>,
    /// Source of session ids.
    next_id: AtomicU64,
    /// Statistics.
    pub(crate) metrics: Arc<Metrics>,
    /// The bytes queued for every session's writer, against the server-wide budget.
    pub(crate) queued: Arc<peer::Queued>,
    /// The per-key and per-address rates sessions are held to.
    pub(crate) rates: Rates,
    /// The other nodes, when several share one Redis; `None` for a single node.
    cluster: Option<Arc<Cluster>>,
    /// Keys whose holding node is about to be woken: a wake-up already on its way covers
    /// every message stored before it looks, so a burst of messages costs one lookup.
    waking: Mutex<HashSet<PublicKey>>,
    /// Keys that have logged in at least once (`known.rs`): the only recipients there are.
    known: known::Known,
    /// Acceptances known (`consent.rs`): which users accepted which, so that a message between
    /// contacts costs no store read.
    pub(crate) contacts: consent::Contacts,
    /// Rooms (`rooms.rs`): the records cached, and the lock that puts each room's messages
    /// in one order.
    rooms: rooms::Rooms,
    /// The sessions logged in now, for the admin listener (`registry.rs`).
    pub(crate) sessions: registry::Registry,
    /// Set by the operator (`admin drain`): no new sessions, so that users move to other
    /// servers while the sessions here finish (`operator.rs`).
    draining: AtomicBool,
    /// Held shared by every login from its store write until it has joined the table, and
    /// exclusively by the operator's ending of a key's sessions (`operator.rs`): so a login
    /// that read the user before a block either joins before the sessions are ended (and is
    /// ended with them) or reads the block. A writer waits for the logins under way, not for
    /// sessions.
    login_gate: tokio::sync::RwLock<()>,
}

impl Relay {
    /// A relay with the given key, name, store and limits.
    pub(crate) fn new(
        server_key: SecretKey,
        name: &str,
        store: Arc<dyn Store>,
        limits: Limits,
    ) -> Self {
        let hello = frames::frame(flexim_protocol::datum::User {
            aliases: vec![name.to_string()],
            key: server_key.public_key(),
            last_seen: 0,
            online: None,
        });
        let bounds = Bounds {
            max_unacked: limits.max_unacked,
            max_unacked_bytes: limits.max_unacked_bytes,
        };
        let metrics = Arc::new(Metrics::default());
        let queued = Arc::new(peer::Queued::new(
            limits.queued_bytes_budget,
            limits.outbound_bytes,
            metrics.clone(),
        ));
        Relay {
            rates: Rates::new(&limits),
            live: std::sync::RwLock::new(limits.live()),
            limits,
            store,
            server_key,
            hello,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Table::new(bounds)))
                .collect(),
            next_id: AtomicU64::new(1),
            queued,
            metrics,
            cluster: None,
            waking: Mutex::new(HashSet::new()),
            known: known::Known::new(usize::MAX),
            contacts: consent::Contacts::new(consent::CACHED),
            rooms: rooms::Rooms::default(),
            sessions: registry::Registry::default(),
            draining: AtomicBool::new(false),
            login_gate: tokio::sync::RwLock::new(()),
        }
    }

    /// The same relay as one node of several: sessions, presence and wake-ups are
    /// coordinated through `cluster`.
    pub(crate) fn with_cluster(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The shard that holds `key`: routing a message locks only it.
    fn lock(&self, key: &PublicKey) -> MutexGuard<'_, Table<Peer>> {
        self.shards[shard_of(key, self.shards.len())]
            .lock()
            .expect("routing lock")
    }

    /// Every shard, one at a time (presence, resync): never two locks at once, so no order
    /// between shards can deadlock.
    fn each_shard(&self, mut f: impl FnMut(&mut Table<Peer>)) {
        for shard in self.shards.iter() {
            f(&mut shard.lock().expect("routing lock"));
        }
    }

    /// The limits that change while the server runs, as they are now.
    pub(crate) fn live(&self) -> Live {
        *self.live.read().expect("live limits lock")
    }

    /// Replaces the limits that change while the server runs; returns what changed, as
    /// `flag: old -> new`.
    pub(crate) fn reload(&self, new: Live) -> Vec<String> {
        let mut live = self.live.write().expect("live limits lock");
        let changes = new.changes_from(&live);
        *live = new;
        changes
    }

    /// The bounds a write is held to: for messages every limit (the recipient's queue, the
    /// sender's share, the store's budget); for receipts the queue only ([`Admit::Receipt`]).
    fn bounds(&self, admit: Admit) -> QueueLimits {
        let l = &self.live();
        let queue = QueueLimits::queue(l.max_offline_messages, l.max_offline_bytes);
        match admit {
            Admit::Receipt => queue,
            Admit::Room => QueueLimits::queue(u64::MAX, u64::MAX),
            Admit::Message | Admit::Held => QueueLimits {
                share_messages: l.max_offline_per_sender,
                share_bytes: l.max_offline_per_sender_bytes,
                store_bytes: l.max_store_bytes.unwrap_or(u64::MAX),
                ..queue
            },
        }
    }

    /// Hands a decided write to the store. Called with the write's shard still locked, so
    /// writes reach the store in the order the table decided them.
    fn start(&self, mut w: Write) -> Started {
        let limits = self.bounds(w.admit);
        // When the server accepted the entries, for the retention.
        let now = clock::now();
        for e in &mut w.entries {
            e.at = now;
        }
        let write = match w.admit {
            Admit::Held => Pending::Fitting {
                senders: w.entries.iter().map(|e| e.sender).collect(),
                write: self.store.enqueue_fitting(w.to, w.entries, limits),
            },
            Admit::Message | Admit::Receipt => {
                Pending::Whole(self.store.enqueue(w.to, w.entries, Some(limits)))
            }
            Admit::Room => Pending::Whole(self.store.enqueue(w.to, w.entries, None)),
        };
        Started {
            to: w.to,
            write,
            then: w.then,
        }
    }

    /// Awaits a started write in a task of its own and does what follows it; `answer` gets
    /// the routed message's answer, if it is one.
    fn carry(self: &Arc<Self>, started: Started, answer: Option<oneshot::Sender<Bytes>>) {
        let relay = self.clone();
        tokio::spawn(async move {
            let Started { to, write, then } = started;
            match write {
                Pending::Whole(write) => {
                    let result = write.await;
                    relay.store_finished(to);
                    relay.whole_written(to, result, then, answer);
                }
                Pending::Fitting { write, senders } => {
                    let result = write.await;
                    relay.store_finished(to);
                    match (then, result) {
                        (Then::StoredLater(receipts), Ok(placed)) => {
                            relay.kept_or_not(receipts, &senders, placed)
                        }
                        (_, Ok(_)) => {}
                        (_, Err(e)) => tracing::error!(
                            error = %e,
                            "could not store unacknowledged messages; their senders still hold them"
                        ),
                    }
                }
            }
        });
    }

    /// Awaits a started write of one whole notice here rather than in a task, for a caller
    /// that must not answer before it is durable.
    async fn finish_whole(self: &Arc<Self>, started: Started) -> Result<(), StoreError> {
        let Started { to, write, .. } = started;
        let result = match write {
            Pending::Whole(write) => write.await.map(|_| ()),
            Pending::Fitting { write, .. } => write.await.map(|_| ()),
        };
        self.store_finished(to);
        result
    }

    /// Does what follows a write of a routed message or a receipt.
    fn whole_written(
        &self,
        to: PublicKey,
        result: Result<Vec<u64>, StoreError>,
        then: Then,
        answer: Option<oneshot::Sender<Bytes>>,
    ) {
        match then {
            Then::Answer(id) => {
                let status = self.store_answer(to, result);
                let id = id.as_ref().map(|i| i.as_str().to_string());
                if let Some(answer) = answer {
                    let _ = answer.send(frames::status(status.with_id(id)));
                }
            }
            // Held messages are written as [`Pending::Fitting`]; a whole write of them would
            // have no verdicts to tell their senders.
            Then::StoredLater(_) => {
                tracing::error!("held messages were written whole; their senders were not told")
            }
            // A receipt is a courtesy: the sender resends what it never saw confirmed,
            // and the recipient drops the repeat.
            Then::Nothing => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "a receipt was not stored");
                }
            }
        }
    }

    /// The answer to a Message the store took (or did not).
    fn store_answer(&self, to: PublicKey, result: Result<Vec<u64>, StoreError>) -> Status {
        let full = match result {
            Ok(_) => {
                metrics::inc(&self.metrics.stored);
                return Status::new(
                    status::STORED,
                    format!("stored for {to}: delivered when they log in"),
                );
            }
            Err(StoreError::Full(full)) => full,
            Err(e) => {
                metrics::inc(&self.metrics.errors);
                tracing::error!(error = %e, "could not store a message");
                return Status::new(
                    status::INTERNAL,
                    "storage failure: the message was not stored",
                );
            }
        };
        metrics::inc(&self.metrics.errors);
        let l = &self.live();
        match full {
            Full::Share { messages, bytes } => Status::new(
                status::SHARE_FULL,
                format!(
                    "you have {messages} messages ({bytes} bytes) waiting for {to}, and one \
                     sender may have {} messages or {} bytes waiting for one recipient; not \
                     stored",
                    l.max_offline_per_sender, l.max_offline_per_sender_bytes
                ),
            ),
            Full::Queue { messages, bytes } => Status::new(
                status::QUEUE_FULL,
                format!("{to} has {messages} messages ({bytes} bytes) waiting; not stored"),
            ),
            Full::Store { bytes } => Status::new(
                status::STORE_FULL,
                format!(
                    "the server's store is full ({bytes} bytes of stored messages, its budget \
                     is {}); not stored: messages to users who are online still go through",
                    l.max_store_bytes.unwrap_or(u64::MAX)
                ),
            ),
        }
    }

    /// A store write for `to` ended: its primary, if it is catching up, looks again.
    fn store_finished(self: &Arc<Self>, to: PublicKey) {
        let finished = self.lock(&to).store_finished(to);
        match finished {
            crate::table::Finished::Wake(peer) => peer.wake(),
            crate::table::Finished::WakeElsewhere => self.wake_elsewhere(to),
            crate::table::Finished::Nothing => {}
        }
    }

    /// Registers an authenticated session for `key`. The first session of a key is the
    /// primary; a later one waits for GHOST. Tells everyone else when the key comes online.
    /// Refused while the server drains, and for a key the operator blocked (the store says
    /// so in the same write that records the login).
    pub(crate) async fn login(&self, key: PublicKey) -> Result<Login, LoginError> {
        if self.draining() {
            return Err(LoginError::Draining);
        }
        let gate = self.login_gate.read().await;
        let before = self.store.touch(key, clock::now()).await?;
        if before.banned {
            return Err(LoginError::Banned);
        }
        self.known.insert(key);
        let (peer, mailbox) = peer::pair(self.limits.outbound_queue, self.queued.clone());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut primary = self.lock(&key).join(key, id, peer, self.cluster.is_some());
        // In the table now: an ending of the key's sessions from here on finds this one.
        drop(gate);
        if primary && let Some(cluster) = &self.cluster {
            match cluster.claim(&key, false).await {
                Ok(Claimed::Here) => primary = self.lock(&key).claimed(key, id),
                Ok(Claimed::Elsewhere(_)) => primary = false,
                Err(e) => {
                    self.lock(&key).forget(key, id);
                    return Err(StoreError::Engine(e.to_string()).into());
                }
            }
        }
        metrics::inc(&self.metrics.logins);
        if primary {
            self.broadcast_presence(key, true).await;
        }
        Ok(Login {
            id,
            mailbox,
            primary,
            before,
        })
    }

    /// Removes a session. When the primary leaves, what it had not acknowledged is stored,
    /// and the oldest other session takes over; when the last one leaves, the key goes
    /// offline.
    pub(crate) async fn logout(self: &Arc<Self>, key: PublicKey, id: SessionId) {
        let (left, started) = {
            let mut table = self.lock(&key);
            let mut left = table.leave(key, id);
            let started = left.write.take().map(|w| self.start(w));
            (left, started)
        };
        if let Some(started) = started {
            self.carry(started, None);
        }
        if let Some(next) = left.wake {
            next.wake();
        }
        if left.offline {
            if let Err(e) = self.store.touch(key, clock::now()).await {
                tracing::warn!(error = %e, "could not record last_seen at logout");
            }
            // With several nodes, the others hear of it only if this node held the key: if
            // another node holds it, the key is still online there.
            let to = self.contacts_of(key).await;
            self.presence_here(key, false, &to);
            if left.held_here {
                self.release(key, to).await;
            }
        }
    }

    /// Makes session `id` the primary for `key`; the old primary is told and closed.
    /// Returns false if the session is not registered (it was closed meanwhile).
    pub(crate) async fn ghost(self: &Arc<Self>, key: PublicKey, id: SessionId) -> bool {
        let check = self.lock(&key).ghost_check(key, id);
        match check {
            GhostCheck::Unknown => return false,
            GhostCheck::Elsewhere => {
                if !self.take_over(key).await {
                    return false;
                }
            }
            GhostCheck::Here => {}
        }
        let (ghosted, started) = {
            let mut table = self.lock(&key);
            let Some(mut ghosted) = table.ghost(key, id) else {
                return false;
            };
            let started = ghosted.write.take().map(|w| self.start(w));
            (ghosted, started)
        };
        if let Some(started) = started {
            self.carry(started, None);
        }
        if let Some(old) = ghosted.close {
            old.outlet.close(old.code, old.text);
        }
        if let Some(me) = ghosted.wake {
            me.wake();
        }
        true
    }

    /// Whether `key` has a live session on this node.
    fn is_online(&self, key: &PublicKey) -> bool {
        self.lock(key).is_online(key)
    }

    /// Tells the users `key` accepted (docs/PROTOCOL.md §14.4) that it came online or went
    /// offline, here and (with several nodes) on the others. Presence is best-effort: a session
    /// whose queue is full misses the notice rather than slowing the relay (ROSTER gives the
    /// truth on demand). A user with no contacts costs one read of its ties, whoever else is
    /// online: that is what lets many users log in at once.
    async fn broadcast_presence(&self, key: PublicKey, online: bool) {
        let to = self.contacts_of(key).await;
        self.presence_here(key, online, &to);
        if let Some(cluster) = &self.cluster {
            let node = cluster.node().to_string();
            cluster.send(
                None,
                Signal::Presence {
                    key,
                    online,
                    node,
                    to,
                },
            );
        }
    }

    /// Tells the sessions of this node among `to` that `key` came online or went offline.
    fn presence_here(&self, key: PublicKey, online: bool, to: &[PublicKey]) {
        if to.is_empty() {
            return;
        }
        let code = if online {
            status::PRESENCE_ONLINE
        } else {
            status::PRESENCE_OFFLINE
        };
        let notice = frames::status_frame(code, key.to_hex());
        for k in to.iter().filter(|k| **k != key) {
            self.lock(k).notify(k, &notice);
        }
    }

    /// Delivers a Message frame from `sender` to `to`: straight to its primary session if it
    /// is online and caught up, otherwise into the durable queue. Never waits: a store write
    /// is started here, in order, and its answer comes later.
    pub(crate) fn route(
        self: &Arc<Self>,
        sender: PublicKey,
        to: PublicKey,
        id: Option<Id>,
        frame: Bytes,
    ) -> Answer {
        self.route_as(sender, to, id, frame, Admit::Message)
    }

    /// [`Relay::route`] with the store's bounds of `admit` (a room's commit is unbounded).
    fn route_as(
        self: &Arc<Self>,
        sender: PublicKey,
        to: PublicKey,
        id: Option<Id>,
        frame: Bytes,
        admit: Admit,
    ) -> Answer {
        let mut table = self.lock(&to);
        match table.route_as(sender, to, id, frame, admit) {
            Routed::Relayed(answer) => {
                drop(table);
                metrics::inc(&self.metrics.relayed);
                Answer::Frame(answer)
            }
            Routed::Store(to_store) => {
                let ToStore {
                    demoted,
                    write,
                    close,
                } = *to_store;
                let demoted = demoted.map(|w| self.start(w));
                let write = self.start(write);
                drop(table);
                if let Some(close) = close {
                    close.outlet.close(close.code, close.text);
                }
                if let Some(demoted) = demoted {
                    self.carry(demoted, None);
                }
                let (answer, later) = oneshot::channel();
                self.carry(write, Some(answer));
                Answer::Later(later)
            }
        }
    }

    /// ACK from session `id` of `key`: forgets the acknowledged messages (removing stored ones
    /// from the store) and sends each sender one `7` naming its ids. Returns how many of the
    /// distinct ids were pending.
    pub(crate) fn ack(self: &Arc<Self>, key: PublicKey, id: SessionId, ids: &[&str]) -> usize {
        let acked = self.lock(&key).ack(key, id, ids);
        if !acked.remove.is_empty() {
            metrics::add(&self.metrics.delivered_offline, acked.remove.len() as u64);
            let removal = self.store.remove(key, acked.remove);
            tokio::spawn(async move {
                if let Err(e) = removal.await {
                    // They stay stored and come again at the next login; the client drops
                    // the repeats by id.
                    tracing::warn!(error = %e, "could not remove acknowledged messages");
                }
            });
        }
        if let Some(receipts) = acked.receipts {
            self.send_receipts(status::DELIVERED, receipts);
        }
        acked.matched
    }

    /// Session `id` of `key` wrote these stored messages; they stay in the store until
    /// acknowledged.
    pub(crate) fn track(&self, key: PublicKey, id: SessionId, delivered: Vec<Unacked>) {
        self.lock(&key).track(key, id, delivered);
    }

    /// Whether session `id` of `key` may read the store now (see [`Table::catch_up`]), and
    /// the mark for [`Relay::go_live`].
    pub(crate) fn catch_up(&self, key: PublicKey, id: SessionId) -> Option<u64> {
        self.lock(&key).catch_up(key, id)
    }

    /// Session `id` of `key` found nothing new in the store since `since` (see
    /// [`Table::go_live`]).
    pub(crate) fn go_live(&self, key: PublicKey, id: SessionId, since: u64) -> GoLive {
        self.lock(&key).go_live(key, id, since)
    }

    /// Tells the primary session of `to`, if any, that the store has messages for it.
    pub(crate) fn wake_primary(&self, to: PublicKey) {
        let peer = self.lock(&to).wake(&to);
        if let Some(peer) = peer {
            peer.wake();
        }
    }

    /// The stored entries for `key` from sequence number `from` on, oldest first, at most
    /// one batch.
    pub(crate) async fn peek_offline(
        &self,
        key: PublicKey,
        from: u64,
    ) -> Result<Vec<Stored>, StoreError> {
        self.store.peek(key, from, self.limits.offline_batch).await
    }

    /// Whether the store holds anything for `key`.
    pub(crate) async fn has_stored(&self, key: PublicKey) -> Result<bool, StoreError> {
        Ok(!self.store.peek(key, 0, 1).await?.is_empty())
    }

    /// Forgets stored entries without an id once they were written to their recipient.
    pub(crate) async fn remove_offline(
        &self,
        key: PublicKey,
        seqs: Vec<u64>,
    ) -> Result<(), StoreError> {
        let n = seqs.len() as u64;
        self.store.remove(key, seqs).await?;
        metrics::add(&self.metrics.delivered_offline, n);
        Ok(())
    }
}
