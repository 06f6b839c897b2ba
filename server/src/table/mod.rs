//! The routing table: every decision about where a message goes, made without I/O.
//!
//! One [`Table`] is one shard of the server's routing state (the relay keeps 64, each behind
//! its own mutex). Per key it holds the sessions (the primary, which messages go to, and the
//! others, which may only send), whether the primary is `live` (caught up with the store, so
//! new messages go straight to its queue), the messages it has not acknowledged yet, and how
//! many store writes for the key are still running. It reads no clock (the entries it decides
//! to store are stamped with the time when the relay hands them to the store), calls no store
//! and spawns nothing: its methods return decisions — deliver this
//! frame, start these store writes in this order and then do this, close this session with
//! this Status, wake this session, send these receipts — and the async relay carries them out.
//!
//! One thing it does itself, because it must happen in the same step as the decision: it offers
//! a frame to a session's bounded queue ([`Outlet::offer`]) and, when the queue is full, turns
//! the delivery into "store it and close the session" at once. The table is generic over the
//! outlet, so the tests use a recording fake that can also be full or closed.
//!
//! The delivery invariants of ARCHITECTURE.md are this module's rules; `tests.rs` checks each,
//! and `model.rs` checks them all under random interleavings (proptest).

mod acks;
mod decisions;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod model;
mod nodes;
mod rooms;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use flexim_protocol::PublicKey;
use flexim_protocol::status;

use crate::frames::{Answers, Id};
use crate::store::Entry;

pub(crate) use decisions::{
    Acked, Admit, Close, Finished, GhostCheck, Ghosted, GoLive, Left, ReceiptRoute, Receipts,
    Routed, Then, ToStore, Why, Write,
};

/// Identifies one session among all of this server's sessions (the relay numbers them).
pub(crate) type SessionId = u64;

/// Why a session's queue did not take a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue is at its bound: the session does not read fast enough.
    Full,
    /// The session is gone (its end of the queue was dropped).
    Closed,
}

/// A session's queue of frames to write, as the table sees it. It must never wait.
pub(crate) trait Outlet: Clone {
    /// Puts `frame` at the end of the queue, or says why not.
    fn offer(&self, frame: Bytes) -> Result<(), Refused>;
}

/// A message with an id that the key's primary session was given and has not acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Unacked {
    /// The Message's id, as the ACK names it.
    pub(crate) id: Id,
    /// Who gets the receipt (Status 7) when it is acknowledged.
    pub(crate) sender: PublicKey,
    /// Where the message is kept until then.
    pub(crate) held: Held,
}

/// Where an unacknowledged message is kept.
#[derive(Debug, Clone)]
pub(crate) enum Held {
    /// Only in memory: it was relayed to an online recipient. If the session ends first, it is
    /// written to the store (and its sender gets Status 8).
    Memory(Bytes),
    /// In the store under this sequence number: the ACK removes it from there.
    Stored(u64),
}

/// One session as the table holds it.
struct Session<O> {
    /// Which session.
    id: SessionId,
    /// Its queue.
    outlet: O,
}

/// Everything about one key that has a session here.
struct Key<O> {
    /// The session messages are delivered to.
    primary: Session<O>,
    /// Later sessions of the same key, oldest first; one becomes primary by GHOST or when the
    /// primary leaves.
    others: Vec<Session<O>>,
    /// Whether new messages go straight to the primary's queue. False until the primary has
    /// delivered everything stored for the key with no store write for it still running:
    /// until then new messages are stored too, behind the older ones, which keeps every
    /// sender's order.
    live: bool,
    /// The primary was told to close (slow reader, taken over on another node) or is gone:
    /// it must not catch up with the store again, or it would be given what it already has.
    closing: bool,
    /// With several nodes: another node holds the key's active session, so the sessions here
    /// wait (as secondary ones do) until they GHOST or the other node lets the key go.
    elsewhere: bool,
    /// Messages with an id given to the primary and not acknowledged yet, oldest first.
    unacked: VecDeque<Unacked>,
    /// How many of `unacked` are held only in memory (relayed). Only these count against the
    /// `max_unacked` bound: stored ones cost the store, not the relay's memory, so a login that
    /// delivers a long backlog does not make the session a slow reader.
    in_memory: usize,
    /// The bytes of those frames, against `max_unacked_bytes`: a thousand large messages pin
    /// far more memory than a thousand small ones.
    in_memory_bytes: usize,
    /// Store writes decided for this key since it has had a session here. A session that
    /// looked at the store and found nothing new goes live only if no write was decided since
    /// its look began: then nothing can be in the store, or on its way there, that it has not
    /// been given.
    decided: u64,
    /// The answers to Messages relayed to this key (`3 relayed to KEY`), framed once at login.
    answers: Answers,
    /// The text of the receipts its ACKs cause (`delivered to KEY`), made once at login.
    delivered: std::sync::Arc<str>,
}

impl<O> Key<O> {
    fn new(key: PublicKey, primary: Session<O>, elsewhere: bool) -> Self {
        Key {
            answers: Answers::new(status::RELAYED, &format!("relayed to {key}")),
            delivered: format!("delivered to {key}").into(),
            primary,
            others: Vec::new(),
            live: false,
            closing: false,
            elsewhere,
            unacked: VecDeque::new(),
            in_memory: 0,
            in_memory_bytes: 0,
            decided: 0,
        }
    }

    /// Every session of the key, primary first.
    fn sessions(&self) -> impl Iterator<Item = &Session<O>> {
        std::iter::once(&self.primary).chain(self.others.iter())
    }

    /// Whether session `id` is one of the key's.
    fn has(&self, id: SessionId) -> bool {
        self.sessions().any(|s| s.id == id)
    }
}

/// Bounds the table enforces, copied from `config::Limits`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Messages with an id a primary may hold in memory unacknowledged (`Limits::max_unacked`).
    pub(crate) max_unacked: usize,
    /// Their bytes (`Limits::max_unacked_bytes`).
    pub(crate) max_unacked_bytes: usize,
}

/// What the tests may break on purpose, to show that the property test notices.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breakage {
    /// Go live even while a store write for the key runs.
    LiveWhileWriting,
    /// Forget what a leaving primary held in memory instead of storing it.
    DropUnackedOnLeave,
}

/// One shard of the routing state.
pub(crate) struct Table<O> {
    /// Keys with a session here.
    keys: HashMap<PublicKey, Key<O>>,
    /// Store writes started and not finished, per recipient. A session goes live only when its
    /// key has none, so it never receives a new message before an older one still being
    /// written.
    writing: HashMap<PublicKey, usize>,
    /// The bounds.
    bounds: Bounds,
    /// A rule broken on purpose (tests only).
    #[cfg(test)]
    broken: Option<Breakage>,
}

impl<O: Outlet> Table<O> {
    /// An empty shard.
    pub(crate) fn new(bounds: Bounds) -> Self {
        Table {
            keys: HashMap::new(),
            writing: HashMap::new(),
            bounds,
            #[cfg(test)]
            broken: None,
        }
    }

    /// The same table with one rule broken (tests only).
    #[cfg(test)]
    pub(crate) fn broken(mut self, breakage: Breakage) -> Self {
        self.broken = Some(breakage);
        self
    }

    /// Registers session `id` of `key`. The first session of a key is its primary (with
    /// several nodes, only once its claim succeeds: `clustered` marks it as held elsewhere
    /// until [`Table::claimed`]); a later one waits for GHOST. Returns whether it is primary.
    pub(crate) fn join(
        &mut self,
        key: PublicKey,
        id: SessionId,
        outlet: O,
        clustered: bool,
    ) -> bool {
        let session = Session { id, outlet };
        match self.keys.get_mut(&key) {
            Some(k) => {
                k.others.push(session);
                false
            }
            None => {
                self.keys.insert(key, Key::new(key, session, clustered));
                true
            }
        }
    }

    /// Removes a session that never finished logging in (it was given nothing).
    pub(crate) fn forget(&mut self, key: PublicKey, id: SessionId) {
        let Some(k) = self.keys.get_mut(&key) else {
            return;
        };
        if k.primary.id != id {
            k.others.retain(|s| s.id != id);
        } else if k.others.is_empty() {
            self.keys.remove(&key);
        } else {
            k.primary = k.others.remove(0);
        }
    }

    /// Session `id` of `key` ended. When it was the primary, what it had not acknowledged goes
    /// to the store, and the oldest other session takes over; when it was the last, the key is
    /// offline.
    pub(crate) fn leave(&mut self, key: PublicKey, id: SessionId) -> Left<O> {
        let mut left = Left {
            write: None,
            wake: None,
            offline: false,
            held_here: false,
        };
        let Some(k) = self.keys.get_mut(&key) else {
            return left;
        };
        if k.primary.id != id {
            k.others.retain(|s| s.id != id);
            return left;
        }
        left.held_here = !k.elsewhere;
        let why = if k.others.is_empty() {
            Why::Offline
        } else {
            Why::NextSession
        };
        #[cfg(test)]
        if self.broken == Some(Breakage::DropUnackedOnLeave) {
            k.unacked.clear();
            k.in_memory = 0;
            k.in_memory_bytes = 0;
        }
        left.write = self.demote(key, why);
        let k = self.keys.get_mut(&key).expect("still registered");
        if k.others.is_empty() {
            self.keys.remove(&key);
            left.offline = true;
        } else {
            k.primary = k.others.remove(0);
            k.closing = false;
            // The new primary catches up from the store before it goes live.
            left.wake = Some(k.primary.outlet.clone());
        }
        left
    }

    /// Where session `id`'s GHOST stands: whether it is registered, and whether the key's
    /// active session is on another node.
    pub(crate) fn ghost_check(&self, key: PublicKey, id: SessionId) -> GhostCheck {
        match self.keys.get(&key) {
            Some(k) if k.has(id) && k.elsewhere => GhostCheck::Elsewhere,
            Some(k) if k.has(id) => GhostCheck::Here,
            _ => GhostCheck::Unknown,
        }
    }

    /// Makes session `id` the primary of `key`; the old primary is closed, and what it had not
    /// acknowledged goes to the store first, so the new primary receives it, in order, when it
    /// catches up. `None` if the session is not registered (it was closed meanwhile).
    pub(crate) fn ghost(&mut self, key: PublicKey, id: SessionId) -> Option<Ghosted<O>> {
        let k = self.keys.get_mut(&key)?;
        k.elsewhere = false;
        if k.primary.id == id {
            return Some(Ghosted {
                write: None,
                close: None,
                wake: Some(k.primary.outlet.clone()),
            });
        }
        let pos = k.others.iter().position(|s| s.id == id)?;
        let write = self.demote(key, Why::Ghost);
        let k = self.keys.get_mut(&key).expect("still registered");
        k.closing = false;
        let new = k.others.remove(pos);
        let old = std::mem::replace(&mut k.primary, new);
        Some(Ghosted {
            write,
            close: Some(Close {
                outlet: old.outlet,
                code: status::TAKEN_OVER,
                text: "a newer session of this key took over (GHOST)",
            }),
            wake: None,
        })
    }

    /// Decides where a Message frame from `sender` to `to` goes: straight into the queue of
    /// `to`'s primary if it is live and keeps up, otherwise into the store, behind everything
    /// held for `to` already. A message with an id is remembered until it is acknowledged.
    #[cfg(test)]
    pub(crate) fn route(
        &mut self,
        sender: PublicKey,
        to: PublicKey,
        id: Option<Id>,
        frame: Bytes,
    ) -> Routed<O> {
        self.route_as(sender, to, id, frame, Admit::Message)
    }

    /// [`Table::route`], with the store write (if there is one) held to the bounds of
    /// `admit`: a room's commit is [`Admit::Room`], everything else [`Admit::Message`].
    pub(crate) fn route_as(
        &mut self,
        sender: PublicKey,
        to: PublicKey,
        id: Option<Id>,
        frame: Bytes,
        admit: Admit,
    ) -> Routed<O> {
        let mut demoted = None;
        let mut close = None;
        if let Some(k) = self.keys.get_mut(&to)
            && k.live
        {
            // A message with an id beyond the bound counts as a full queue: a client that
            // never acknowledges must not pin unbounded memory.
            let over = id.is_some()
                && (k.in_memory >= self.bounds.max_unacked
                    || k.in_memory_bytes + frame.len() > self.bounds.max_unacked_bytes);
            let refused = if over {
                Err(Refused::Full)
            } else {
                k.primary.outlet.offer(frame.clone())
            };
            let why = match refused {
                Ok(()) => {
                    let answer = k.answers.about(id.as_ref());
                    if let Some(id) = id {
                        k.in_memory += 1;
                        k.in_memory_bytes += frame.len();
                        k.unacked.push_back(Unacked {
                            id,
                            sender,
                            held: Held::Memory(frame),
                        });
                    }
                    return Routed::Relayed(answer);
                }
                Err(Refused::Full) => {
                    // The recipient does not keep up. Keep its messages safe in the store and
                    // drop the session; it catches up at its next login.
                    let text = if over {
                        "you have not acknowledged your messages; reconnect to get the rest"
                    } else {
                        "you are not reading fast enough; reconnect to get the rest"
                    };
                    close = Some(Close {
                        outlet: k.primary.outlet.clone(),
                        code: status::TOO_SLOW,
                        text,
                    });
                    Why::SlowReader
                }
                // The session is ending (its logout follows): another session of the key, or
                // its next login, gets what it held.
                Err(Refused::Closed) if k.others.is_empty() => Why::Offline,
                Err(Refused::Closed) => Why::NextSession,
            };
            // Either way the session must not be given anything again.
            k.closing = true;
            demoted = self.demote(to, why);
        }
        let write = self.write(
            to,
            vec![Entry {
                sender,
                id: id.as_ref().map(|i| i.as_str().to_string()),
                frame,
                at: 0,
            }],
            admit,
            Then::Answer(id),
        );
        Routed::Store(Box::new(ToStore {
            demoted,
            write,
            close,
        }))
    }

    /// A write the caller starts now, counted for `to` until [`Table::store_finished`].
    fn write(&mut self, to: PublicKey, entries: Vec<Entry>, admit: Admit, then: Then) -> Write {
        *self.writing.entry(to).or_default() += 1;
        if let Some(k) = self.keys.get_mut(&to) {
            k.decided += 1;
        }
        Write {
            to,
            entries,
            admit,
            then,
        }
    }

    /// Takes `key`'s primary off the fast path: new messages are stored from now on, and the
    /// messages it holds only in memory without an acknowledgement go to the store now, ahead
    /// of anything routed later, in one write held to the store's bounds entry by entry
    /// ([`Admit::Held`]); their senders get `8` once they are durable, or `-24` for those the
    /// store had no room for.
    fn demote(&mut self, key: PublicKey, why: Why) -> Option<Write> {
        let k = self.keys.get_mut(&key)?;
        k.live = false;
        if k.in_memory == 0 {
            return None;
        }
        k.in_memory = 0;
        k.in_memory_bytes = 0;
        let mut entries = Vec::new();
        let mut senders: Vec<(PublicKey, Vec<Id>)> = Vec::new();
        for u in std::mem::take(&mut k.unacked) {
            if let Held::Memory(frame) = u.held {
                entries.push(Entry {
                    sender: u.sender,
                    id: Some(u.id.as_str().to_string()),
                    frame,
                    at: 0,
                });
                add_receipt(&mut senders, u.sender, u.id, 1);
            }
        }
        let receipts = Receipts {
            about: key,
            why: Some(why),
            delivered: None,
            senders,
        };
        Some(self.write(key, entries, Admit::Held, Then::StoredLater(receipts)))
    }

    /// A store write for `to` ended: the key's primary, if it may catch up, looks again.
    pub(crate) fn store_finished(&mut self, to: PublicKey) -> Finished<O> {
        if let Some(n) = self.writing.get_mut(&to) {
            *n -= 1;
            if *n == 0 {
                self.writing.remove(&to);
            }
        }
        match self.keys.get(&to) {
            Some(k) if k.elsewhere => Finished::WakeElsewhere,
            Some(k) if k.closing => Finished::Nothing,
            Some(k) => Finished::Wake(k.primary.outlet.clone()),
            None => Finished::WakeElsewhere,
        }
    }

    /// Whether session `id` of `key` may read the store now: it is the key's active session
    /// and not closing. If so, the answer is the mark to pass to [`Table::go_live`] once a
    /// look that started now finds nothing new. Asked again after every read, because a
    /// session closed meanwhile must not write what it read (copies of what it was given,
    /// ahead of older messages still in its queue).
    pub(crate) fn catch_up(&self, key: PublicKey, id: SessionId) -> Option<u64> {
        let k = self.keys.get(&key)?;
        (k.primary.id == id && !k.closing && !k.elsewhere).then_some(k.decided)
    }

    /// Session `id` of `key` looked at the store, from a point marked `since`, and found
    /// nothing it had not been given: it goes live if nothing can have reached the store since
    /// (no write running, none decided after the mark). So a live session has been given
    /// everything stored before it, and every later message comes to its queue behind them.
    pub(crate) fn go_live(&mut self, key: PublicKey, id: SessionId, since: u64) -> GoLive {
        let writing = self.writing.contains_key(&key);
        #[cfg(test)]
        let writing = writing && self.broken != Some(Breakage::LiveWhileWriting);
        let Some(k) = self.keys.get_mut(&key) else {
            return GoLive::Stop;
        };
        if k.primary.id != id || k.closing || k.elsewhere {
            GoLive::Stop
        } else if writing {
            GoLive::Wait
        } else if k.decided != since {
            GoLive::Again(k.decided)
        } else {
            k.live = true;
            GoLive::Live
        }
    }

    /// Whether `key` has a session here.
    pub(crate) fn is_online(&self, key: &PublicKey) -> bool {
        self.keys.contains_key(key)
    }

    /// The primary of `key`, if it is the active one, to tell it the store has messages.
    pub(crate) fn wake(&self, key: &PublicKey) -> Option<O> {
        self.keys
            .get(key)
            .filter(|k| !k.elsewhere)
            .map(|k| k.primary.outlet.clone())
    }

    /// The queues of every session of `key` here, to close them all (the operator blocked
    /// the key or changed its aliases).
    pub(crate) fn outlets(&self, key: &PublicKey) -> Vec<O> {
        self.keys
            .get(key)
            .map(|k| k.sessions().map(|s| s.outlet.clone()).collect())
            .unwrap_or_default()
    }

    /// Offers `frame` to every session of `key` (presence notices, best effort: a full queue
    /// misses the notice rather than slowing the relay).
    pub(crate) fn notify(&self, key: &PublicKey, frame: &Bytes) {
        if let Some(sessions) = self.keys.get(key) {
            for s in sessions.sessions() {
                let _ = s.outlet.offer(frame.clone());
            }
        }
    }

    /// Where a receipt for `to` goes: into its active session's queue if there is room, else
    /// into the store (or, with several nodes and no session here, to wherever `to` is).
    pub(crate) fn receipt(&mut self, to: PublicKey, frame: Bytes, clustered: bool) -> ReceiptRoute {
        match self.keys.get(&to) {
            Some(k) if !k.elsewhere && k.primary.outlet.offer(frame.clone()).is_ok() => {
                ReceiptRoute::Sent
            }
            None if clustered => ReceiptRoute::AskCluster(frame),
            _ => ReceiptRoute::Store(self.store_receipt(to, frame)),
        }
    }

    /// A write keeping a receipt in the store for `to`'s next login (or catch-up).
    pub(crate) fn store_receipt(&mut self, to: PublicKey, frame: Bytes) -> Write {
        let entry = Entry {
            sender: to,
            id: None,
            frame,
            at: 0,
        };
        self.write(to, vec![entry], Admit::Receipt, Then::Nothing)
    }

    /// Every message held only in memory, as (recipient, sender, id), for the tests' checks.
    #[cfg(test)]
    pub(crate) fn held(&self) -> Vec<(PublicKey, PublicKey, Id)> {
        let mut out = Vec::new();
        for (key, k) in &self.keys {
            for u in &k.unacked {
                if let Held::Memory(_) = u.held {
                    out.push((*key, u.sender, u.id.clone()));
                }
            }
        }
        out
    }

    /// Whether every key's count of messages held in memory is what its list holds (tests).
    #[cfg(test)]
    pub(crate) fn counts_agree(&self) -> bool {
        self.keys.values().all(|k| {
            let memory = k
                .unacked
                .iter()
                .filter(|u| matches!(u.held, Held::Memory(_)));
            let (n, bytes) = memory.fold((0, 0), |(n, b), u| match &u.held {
                Held::Memory(f) => (n + 1, b + f.len()),
                Held::Stored(_) => (n, b),
            });
            n == k.in_memory && bytes == k.in_memory_bytes
        })
    }

    /// Whether `key`'s primary is live (tests).
    #[cfg(test)]
    pub(crate) fn is_live(&self, key: &PublicKey) -> bool {
        self.keys.get(key).is_some_and(|k| k.live)
    }

    /// Whether a store write for `key` is running (tests).
    #[cfg(test)]
    pub(crate) fn is_writing(&self, key: &PublicKey) -> bool {
        self.writing.contains_key(key)
    }
}

/// Adds `id` to `sender`'s receipt (senders are few per recipient: a list beats a map), with
/// room for `expected` ids when it is the sender's first.
fn add_receipt(
    senders: &mut Vec<(PublicKey, Vec<Id>)>,
    sender: PublicKey,
    id: Id,
    expected: usize,
) {
    match senders.iter_mut().find(|(s, _)| *s == sender) {
        Some((_, ids)) => ids.push(id),
        None => {
            let mut ids = Vec::with_capacity(expected);
            ids.push(id);
            senders.push((sender, ids));
        }
    }
}
