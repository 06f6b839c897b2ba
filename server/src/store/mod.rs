//! Durable state behind one trait: users, aliases and offline message queues.
//!
//! The relay core talks only to [`Store`], so the embedded engine (the default, no other
//! service needed) and the Redis engine (state shared by several server nodes) can be
//! swapped without the core noticing. [`conformance`] holds both to the same contract.

mod bounds;
pub mod conformance;
mod embedded;
mod entry;
mod redis;
pub mod rooms;
pub mod ties;
mod writes;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use serde::{Deserialize, Serialize};

pub use embedded::{Backup, EmbeddedStore, inspect as inspect_backup, restore as restore_backup};
pub use redis::{PREFIX as REDIS_PREFIX, RedisStore};
pub use rooms::{Refused, Room, RoomChange, RoomChanged, RoomLimits, RoomMember, RoomOutcome};
pub use ties::{Admission, RequestLimits, Tie, TieChange, TieChanged};

/// A boxed future, so the trait stays usable as `dyn Store`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the store keeps about a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Registered aliases, as the user spelled them.
    pub aliases: Vec<String>,
    /// Last time the user logged in or out (Unix seconds).
    pub last_seen: i64,
    /// Whether the server's operator blocked the key (`flexim-server admin block`): it
    /// cannot log in until unblocked. Absent in records written before there were blocks.
    #[serde(default)]
    pub banned: bool,
}

/// A frame to append to a recipient's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Who sent it: the key that gets the receipt when the recipient acknowledges it.
    pub sender: PublicKey,
    /// The Message's `id`, if it had one. Entries with an id stay until acknowledged (ACK);
    /// entries without one (old clients, stored receipts) leave once written to the recipient.
    pub id: Option<String>,
    /// The frame exactly as it will be written to the recipient.
    pub frame: Bytes,
    /// When the server accepted it (Unix seconds), for the retention limit.
    pub at: i64,
}

/// A stored entry deleted for being older than the retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Whose queue it was in.
    pub to: PublicKey,
    /// Who sent it.
    pub sender: PublicKey,
    /// Its id, if it had one (its sender is told).
    pub id: Option<String>,
}

/// One stored frame waiting for its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The store's sequence number; frames come back in this order and are removed by it.
    pub seq: u64,
    /// The entry as it was enqueued.
    pub entry: Entry,
}

/// The outcome of claiming an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The alias is now this key's.
    Registered,
    /// The key already had it: nothing changed.
    AlreadyYours,
    /// Another key has it.
    Taken,
    /// The key already has the most aliases allowed.
    TooMany,
}

/// The bounds an enqueue is held to. Every entry counts against all of them whatever bounds
/// its write is held to, so the counts are always exact; only the checks differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most entries in the recipient's queue.
    pub messages: u64,
    /// Most bytes in the recipient's queue (each entry counted as its encoding: 41 bytes, the
    /// id and the frame).
    pub bytes: u64,
    /// Most entries of one sender in the recipient's queue: its share, so that no sender can
    /// fill another user's queue alone.
    pub share_messages: u64,
    /// Most bytes of one sender in the recipient's queue.
    pub share_bytes: u64,
    /// Most bytes in every queue together: the store's budget, so that the disk does not fill.
    pub store_bytes: u64,
}

impl QueueLimits {
    /// Bounds on the recipient's queue only: no share, no budget.
    pub const fn queue(messages: u64, bytes: u64) -> QueueLimits {
        QueueLimits {
            messages,
            bytes,
            share_messages: u64::MAX,
            share_bytes: u64::MAX,
            store_bytes: u64::MAX,
        }
    }
}

/// Which bound refused an entry, with the counts found (before the entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// The sender's share of the recipient's queue ([`QueueLimits::share_messages`],
    /// [`QueueLimits::share_bytes`]).
    #[error("the sender has {messages} messages ({bytes} bytes) waiting in the queue")]
    Share {
        /// The sender's entries in the queue.
        messages: u64,
        /// The sender's bytes in the queue.
        bytes: u64,
    },
    /// The recipient's queue ([`QueueLimits::messages`], [`QueueLimits::bytes`]).
    #[error("the recipient's offline queue is full ({messages} messages, {bytes} bytes)")]
    Queue {
        /// Entries in the queue.
        messages: u64,
        /// Bytes in the queue.
        bytes: u64,
    },
    /// The store's budget across every queue ([`QueueLimits::store_bytes`]).
    #[error("the store is full ({bytes} bytes in every queue together)")]
    Store {
        /// Bytes in every queue together.
        bytes: u64,
    },
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The entries do not fit one of the bounds of their write; nothing was stored.
    #[error(transparent)]
    Full(#[from] Full),
    /// The engine failed (disk, corruption, a lost connection).
    #[error("storage failure: {0}")]
    Engine(String),
}

/// The outcome of one entry of [`Store::enqueue_fitting`]: its sequence number, or the bound
/// that left it out.
pub type Placed = Result<u64, Full>;

/// The counts a store keeps for its bounds ([`Store::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Entries in the recipient's queue.
    pub messages: u64,
    /// Bytes in the recipient's queue.
    pub bytes: u64,
    /// Entries of the sender in it.
    pub share_messages: u64,
    /// Bytes of the sender in it.
    pub share_bytes: u64,
    /// Bytes in every queue together.
    pub store_bytes: u64,
}

/// Counters of the store's work since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Writes applied (each enqueue, removal, login, alias claim).
    pub writes: u64,
    /// Transactions committed (each one disk sync).
    pub commits: u64,
    /// How long the commits took.
    pub commit_time: crate::histogram::Snapshot,
}

/// Durable storage. Every write is durable (synced) when its future completes.
///
/// Ordering: writes take effect in the order the methods were *called*, not the order their
/// futures are polled, so a caller that holds a lock while calling knows its place in line.
/// The relay relies on this for per-sender order. Engines group concurrent writes into one
/// commit (one sync for many messages).
pub trait Store: Send + Sync + 'static {
    /// The record of a user, if the key was ever seen.
    fn user(&self, key: PublicKey) -> BoxFuture<'_, Result<Option<UserRecord>, StoreError>>;

    /// Sets `last_seen`, creating the user if new; returns the record as it was before.
    fn touch(&self, key: PublicKey, now: i64) -> BoxFuture<'_, Result<UserRecord, StoreError>>;

    /// Claims `alias` (already validated) for `key`; uniqueness ignores ASCII case.
    fn claim_alias(
        &self,
        key: PublicKey,
        alias: String,
        max_aliases: usize,
    ) -> BoxFuture<'_, Result<Claim, StoreError>>;

    /// Gives `alias` (already validated) to `to`, or with `None` to nobody, whoever held it:
    /// the operator's override (`flexim-server admin reassign` and `revoke`), so the most
    /// aliases a key may hold does not apply. Returns who held it before. A user given an
    /// alias before it ever logged in is created with `last_seen` 0, as by a claim.
    fn assign_alias(
        &self,
        alias: String,
        to: Option<PublicKey>,
    ) -> BoxFuture<'static, Result<Option<PublicKey>, StoreError>>;

    /// Sets [`UserRecord::banned`] of `key`, creating the user (with `last_seen` 0) if it was
    /// never seen, so that a key can be blocked before it first logs in.
    fn set_banned(&self, key: PublicKey, on: bool) -> BoxFuture<'static, Result<(), StoreError>>;

    /// The key that registered `alias` (any case), if any.
    fn resolve_alias(&self, alias: String) -> BoxFuture<'_, Result<Option<PublicKey>, StoreError>>;

    /// All known users, most recently seen first, at most `limit`.
    fn users(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(PublicKey, UserRecord)>, StoreError>>;

    /// Users who chose to be found ([`Store::set_discoverable`]) with an alias containing
    /// `needle` (ASCII case ignored), at most `limit`.
    fn search(
        &self,
        needle: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(PublicKey, UserRecord)>, StoreError>>;

    /// Appends entries to `to`'s queue, durably and in order, and returns their sequence
    /// numbers. With `limits`, all of them are refused with [`StoreError::Full`] if they do
    /// not all fit (the first bound that refuses, checked for each entry in order: the
    /// queue, then the sender's share, then the store's budget); without, they are taken
    /// whatever the queues hold.
    fn enqueue(
        &self,
        to: PublicKey,
        entries: Vec<Entry>,
        limits: Option<QueueLimits>,
    ) -> BoxFuture<'static, Result<Vec<u64>, StoreError>>;

    /// Appends to `to`'s queue, durably, in order and in one write, those of `entries` that
    /// fit `limits`, and says for each entry whether it was stored (its sequence number) or
    /// which bound left it out. The entries are checked in order, each against the counts
    /// with the entries kept before it; once one of a sender's entries is left out, every
    /// later entry of that sender is left out too (with the same bound), so that what is kept
    /// of each sender has no gaps. For messages that were accepted already and must now
    /// find room (a connection's unacknowledged messages when it ends): those left out are
    /// reported to their senders.
    fn enqueue_fitting(
        &self,
        to: PublicKey,
        entries: Vec<Entry>,
        limits: QueueLimits,
    ) -> BoxFuture<'static, Result<Vec<Placed>, StoreError>>;

    /// The oldest `max` entries of `to`'s queue with a sequence number of at least `from`,
    /// without removing them.
    fn peek(
        &self,
        to: PublicKey,
        from: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>>;

    /// Removes delivered or acknowledged entries from `to`'s queue (unknown ones are ignored),
    /// and their counts from every bound.
    fn remove(&self, to: PublicKey, seqs: Vec<u64>) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Deletes every entry of every queue accepted before `before` (Unix seconds), and their
    /// counts from every bound, and says which they were.
    fn expire(&self, before: i64) -> BoxFuture<'static, Result<Vec<Expired>, StoreError>>;

    /// What `to`'s queue holds: its counts, and those of `sender` in it. Engines keep these
    /// counts durably with the entries (they are what the bounds are checked against), so
    /// this is a read of a few counters, not of the queue.
    fn counts(&self, to: PublicKey, sender: PublicKey)
    -> BoxFuture<'_, Result<Counts, StoreError>>;

    /// Applies `change` to what `owner` decided about `other` ([`ties::decide`], atomically:
    /// the count of strangers waiting in `owner`'s box is read in the same write) and returns
    /// the tie before and after.
    fn tie(
        &self,
        owner: PublicKey,
        other: PublicKey,
        change: TieChange,
    ) -> BoxFuture<'static, Result<TieChanged, StoreError>>;

    /// What `owner` decided about `other`, if anything.
    fn tie_of(
        &self,
        owner: PublicKey,
        other: PublicKey,
    ) -> BoxFuture<'_, Result<Option<Tie>, StoreError>>;

    /// Every tie of `owner`, in no particular order.
    fn ties(&self, owner: PublicKey) -> BoxFuture<'_, Result<Vec<(PublicKey, Tie)>, StoreError>>;

    /// Whether SEARCH finds `key` (users are not found until they turn this on).
    fn set_discoverable(
        &self,
        key: PublicKey,
        on: bool,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// The record of room `id`, if there is such a room.
    fn room(&self, id: RoomId) -> BoxFuture<'_, Result<Option<Room>, StoreError>>;

    /// Applies `change` to room `id` by the rule of [`rooms::decide`], atomically with the
    /// room's record and the users' counts of rooms it read (a compare-and-set: a commit at an
    /// epoch the room has left is [`Refused::Stale`] however many nodes commit at once).
    fn change_room(
        &self,
        id: RoomId,
        change: RoomChange,
    ) -> BoxFuture<'static, Result<RoomOutcome, StoreError>>;

    /// How many rooms `key` is a member of.
    fn rooms_of(&self, key: PublicKey) -> BoxFuture<'_, Result<u32, StoreError>>;

    /// Keeps `packages` (already checked) for `owner`, after those it has, as long as it has
    /// fewer than `max` (the rest are ignored); returns how many it holds now.
    fn publish_key_packages(
        &self,
        owner: PublicKey,
        packages: Vec<Vec<u8>>,
        max: u32,
    ) -> BoxFuture<'static, Result<u32, StoreError>>;

    /// Removes and returns `owner`'s oldest KeyPackage: each is handed out once.
    fn claim_key_package(
        &self,
        owner: PublicKey,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, StoreError>>;

    /// How many KeyPackages `owner` has.
    fn key_packages(&self, owner: PublicKey) -> BoxFuture<'_, Result<u32, StoreError>>;

    /// Writes and commits since start, for `/metrics`: their ratio is how many writes share
    /// one commit (one disk sync).
    fn stats(&self) -> StoreStats;

    /// A consistent copy of the store in a new file at `to`, made while the server runs.
    /// Only the embedded store makes one; Redis is backed up with its own tools.
    fn backup(&self, to: std::path::PathBuf) -> BoxFuture<'_, Result<Backup, StoreError>> {
        let _ = to;
        Box::pin(async {
            Err(StoreError::Engine(
                "this store is Redis: back it up with Redis (BGSAVE, or a copy of its \
                 append-only file), as docs/DEPLOY.md says"
                    .into(),
            ))
        })
    }
}
