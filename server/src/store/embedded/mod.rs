//! The embedded default engine: redb, one file in the data directory, no other service.
//!
//! redb commits are durable (fsync) by default, which is what "stored" promises. Writes go
//! through one writer thread that commits everything waiting in one transaction: while one
//! commit syncs, the next batch gathers, so many messages share each sync (group commit).
//! Reads run on tokio's blocking pool and see every committed write.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use flexim_protocol::PublicKey;
use flexim_protocol::keys::alias_key;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use super::entry::{decode_entry, encode_entry, key_of};
use super::writes::{Counters, Job, Op, Outcome, WriteQueue, answer, take_waiting};
use super::{
    BoxFuture, Claim, Counts, Entry, Expired, Placed, QueueLimits, Store, StoreError, StoreStats,
    Stored, Tie, TieChange, TieChanged, UserRecord,
};
use flexim_protocol::conversation::RoomId;
use queues::{QUEUES, SHARES};
use tokio::sync::mpsc;

use super::rooms::{Room, RoomChange, RoomEngine, RoomOutcome, RoomSet, Snapshot};

mod backup;
mod queues;
mod rooms;
mod ties;
mod users;

pub use backup::{Backup, inspect, restore};

/// key (32 bytes) -> msgpack UserRecord
const USERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("users");
/// lower-cased alias -> key (32 bytes)
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
/// (recipient key, sequence) -> entry (see [`encode_entry`])
const OFFLINE: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("offline");
/// named counters: "seq" is the next offline sequence number, "format" the entry format,
/// "bytes" and "counted" the store's byte count (`queues.rs`)
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (owner key, other key) -> the owner's [`Tie`](super::Tie), encoded (`ties.rs`)
const TIES: TableDefinition<(&[u8], &[u8]), &str> = TableDefinition::new("ties");
/// key -> 1 for every user SEARCH may find
const DISCOVERABLE: TableDefinition<&[u8], u8> = TableDefinition::new("discoverable");

/// The entry format this code writes (see [`encode_entry`]). Format 1 (before message ids)
/// stored the bare frame; [`EmbeddedStore::open`] converts it.
const FORMAT: u64 = 2;

/// The redb-backed store.
#[derive(Clone)]
pub struct EmbeddedStore {
    /// Shared with the blocking-pool closures that run reads.
    db: Arc<Database>,
    /// The writer thread; shared by the clones, stopped when the last one goes.
    writer: Arc<Writer>,
}

/// The writer thread and its queue.
struct Writer {
    /// The callers' side of the writer thread's queue.
    queue: WriteQueue,
    /// Joined on drop, so that the database file is closed (and can be opened again) when
    /// the store is gone, and every submitted write is committed first.
    thread: Option<std::thread::JoinHandle<()>>,
    /// What the thread did, for `/metrics`.
    stats: Arc<Counters>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop after the writes already in it.
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn eng(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn decode_user(bytes: &[u8]) -> Result<UserRecord, StoreError> {
    rmp_serde::from_slice(bytes).map_err(eng)
}

fn encode_user(user: &UserRecord) -> Vec<u8> {
    rmp_serde::to_vec_named(user).expect("UserRecord serializes")
}

/// Converts entries of format 1 (the bare frame) to the current format, once. Their sender
/// is unknown (all zeros: no receipt goes anywhere), they have no id (they leave the store
/// when written, as they did before), and their age starts now.
fn migrate(txn: &WriteTransaction, now: i64) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META).map_err(eng)?;
    if meta.get("format").map_err(eng)?.is_some() {
        return Ok(0);
    }
    let mut offline = txn.open_table(OFFLINE).map_err(eng)?;
    let mut old = Vec::new();
    for row in offline.iter().map_err(eng)? {
        let (k, v) = row.map_err(eng)?;
        let (to, seq) = k.value();
        old.push((to.to_vec(), seq, v.value().to_vec()));
    }
    for (to, seq, frame) in &old {
        let entry = Entry {
            sender: PublicKey([0; 32]),
            id: None,
            frame: Bytes::copy_from_slice(frame),
            at: now,
        };
        offline
            .insert((to.as_slice(), *seq), encode_entry(&entry).as_slice())
            .map_err(eng)?;
    }
    meta.insert("format", FORMAT).map_err(eng)?;
    Ok(old.len() as u64)
}

impl EmbeddedStore {
    /// Opens (or creates) the database file at `path`, makes sure every table exists and
    /// starts the writer thread (it ends when the last clone of the store is dropped).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_at(path, crate::clock::now())
    }

    /// [`EmbeddedStore::open`] with the time given, for converting old entries.
    fn open_at(path: &Path, now: i64) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(eng)?;
        let txn = db.begin_write().map_err(eng)?;
        {
            txn.open_table(USERS).map_err(eng)?;
            txn.open_table(ALIASES).map_err(eng)?;
            txn.open_table(OFFLINE).map_err(eng)?;
            txn.open_table(QUEUES).map_err(eng)?;
            txn.open_table(SHARES).map_err(eng)?;
            txn.open_table(META).map_err(eng)?;
            txn.open_table(TIES).map_err(eng)?;
            txn.open_table(DISCOVERABLE).map_err(eng)?;
            txn.open_table(rooms::ROOMS).map_err(eng)?;
            txn.open_table(rooms::ROOMS_OF).map_err(eng)?;
            txn.open_table(rooms::KEY_PACKAGES).map_err(eng)?;
        }
        let converted = migrate(&txn, now)?;
        let counted = queues::count_once(&txn)?;
        txn.commit().map_err(eng)?;
        if converted > 0 {
            tracing::info!(
                entries = converted,
                "converted stored messages to the format with ids"
            );
        }
        if counted > 0 {
            tracing::info!(
                entries = counted,
                "counted stored messages per sender and for the store's budget"
            );
        }
        let db = Arc::new(db);
        let (queue, jobs) = WriteQueue::new();
        let writer_db = db.clone();
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(&writer_db, jobs, &counters))
            .map_err(eng)?;
        let writer = Arc::new(Writer {
            queue,
            thread: Some(thread),
            stats,
        });
        Ok(EmbeddedStore { db, writer })
    }

    /// Runs a read on the blocking pool.
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&db))
                .await
                .map_err(eng)?
        })
    }

    fn read_users(db: &Database) -> Result<Vec<(PublicKey, UserRecord)>, StoreError> {
        let txn = db.begin_read().map_err(eng)?;
        let table = txn.open_table(USERS).map_err(eng)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(eng)? {
            let (k, v) = row.map_err(eng)?;
            out.push((key_of(k.value())?, decode_user(v.value())?));
        }
        Ok(out)
    }
}

/// The writer thread: takes everything waiting, applies it in one transaction, commits
/// (one sync), then answers each caller. An engine error fails the whole batch, and nothing
/// of it is committed, so no caller is told "done" for a write that did not happen.
fn writer(db: &Database, mut jobs: mpsc::UnboundedReceiver<Job>, counters: &Counters) {
    while let Some(first) = jobs.blocking_recv() {
        let batch = take_waiting(first, &mut jobs);
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|j| (j.op, j.reply)).unzip();
        let began = std::time::Instant::now();
        answer(replies, commit(db, ops), counters, began);
    }
}

/// Applies `ops` in one write transaction and commits it. The inner results are the
/// per-write outcomes (a full queue refuses one write, not the batch).
fn commit(db: &Database, ops: Vec<Op>) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    let txn = db.begin_write().map_err(eng)?;
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        let outcome = match op {
            Op::Touch { key, now } => users::touch(&txn, key, now).map(Outcome::User),
            Op::Claim {
                key,
                alias,
                max_aliases,
            } => users::claim(&txn, key, alias, max_aliases).map(Outcome::Claim),
            Op::Assign { alias, to } => users::assign(&txn, alias, to).map(Outcome::Owner),
            Op::Ban { key, on } => users::ban(&txn, key, on).map(|()| Outcome::Done),
            Op::Enqueue { to, entries, mode } => queues::enqueue(&txn, to, entries, mode),
            Op::Remove { to, seqs } => queues::remove(&txn, to, seqs).map(|()| Outcome::Removed),
            Op::Expire { before } => queues::expire(&txn, before).map(Outcome::Expired),
            Op::Tie {
                owner,
                other,
                change,
            } => ties::change(&txn, owner, other, change).map(|(b, a)| Outcome::Tie(b, a)),
            Op::Discoverable { key, on } => {
                ties::discoverable(&txn, key, on).map(|()| Outcome::Done)
            }
            Op::RoomSet(set) => rooms::set(&txn, set).map(Outcome::Set),
            Op::Publish {
                owner,
                packages,
                max,
            } => rooms::publish(&txn, owner, packages, max).map(Outcome::Count),
            Op::ClaimPackage { owner } => rooms::claim(&txn, owner).map(Outcome::Package),
        };
        match outcome {
            Err(StoreError::Engine(e)) => return Err(StoreError::Engine(e)),
            other => outcomes.push(other),
        }
    }
    txn.commit().map_err(eng)?;
    Ok(outcomes)
}

impl Store for EmbeddedStore {
    fn user(&self, key: PublicKey) -> BoxFuture<'_, Result<Option<UserRecord>, StoreError>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(eng)?;
            let table = txn.open_table(USERS).map_err(eng)?;
            let row = table.get(key.as_bytes().as_slice()).map_err(eng)?;
            row.map(|v| decode_user(v.value())).transpose()
        })
    }

    fn touch(&self, key: PublicKey, now: i64) -> BoxFuture<'_, Result<UserRecord, StoreError>> {
        self.writer.queue.touch(key, now)
    }

    fn claim_alias(
        &self,
        key: PublicKey,
        alias: String,
        max_aliases: usize,
    ) -> BoxFuture<'_, Result<Claim, StoreError>> {
        self.writer.queue.claim(key, alias, max_aliases)
    }

    fn assign_alias(
        &self,
        alias: String,
        to: Option<PublicKey>,
    ) -> BoxFuture<'static, Result<Option<PublicKey>, StoreError>> {
        self.writer.queue.assign(alias, to)
    }

    fn set_banned(&self, key: PublicKey, on: bool) -> BoxFuture<'static, Result<(), StoreError>> {
        self.writer.queue.ban(key, on)
    }

    fn resolve_alias(&self, alias: String) -> BoxFuture<'_, Result<Option<PublicKey>, StoreError>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(eng)?;
            let table = txn.open_table(ALIASES).map_err(eng)?;
            let row = table.get(alias_key(&alias).as_str()).map_err(eng)?;
            row.map(|v| key_of(v.value())).transpose()
        })
    }

    fn users(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(PublicKey, UserRecord)>, StoreError>> {
        self.blocking(move |db| {
            let mut all = Self::read_users(db)?;
            all.sort_by_key(|(_, u)| std::cmp::Reverse(u.last_seen));
            all.truncate(limit);
            Ok(all)
        })
    }

    fn search(
        &self,
        needle: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(PublicKey, UserRecord)>, StoreError>> {
        self.blocking(move |db| {
            let needle = needle.to_ascii_lowercase();
            let findable = ties::discoverable_keys(db)?;
            let mut found: Vec<_> = Self::read_users(db)?
                .into_iter()
                .filter(|(k, u)| {
                    findable.contains(k)
                        && u.aliases
                            .iter()
                            .any(|a| a.to_ascii_lowercase().contains(&needle))
                })
                .collect();
            found.sort_by_key(|(_, u)| std::cmp::Reverse(u.last_seen));
            found.truncate(limit);
            Ok(found)
        })
    }

    fn enqueue(
        &self,
        to: PublicKey,
        entries: Vec<Entry>,
        limits: Option<QueueLimits>,
    ) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        self.writer.queue.enqueue(to, entries, limits)
    }

    fn enqueue_fitting(
        &self,
        to: PublicKey,
        entries: Vec<Entry>,
        limits: QueueLimits,
    ) -> BoxFuture<'static, Result<Vec<Placed>, StoreError>> {
        self.writer.queue.enqueue_fitting(to, entries, limits)
    }

    fn peek(
        &self,
        to: PublicKey,
        from: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(eng)?;
            let table = txn.open_table(OFFLINE).map_err(eng)?;
            let k = to.as_bytes().as_slice();
            let mut out = Vec::new();
            for row in table
                .range((k, from)..=(k, u64::MAX))
                .map_err(eng)?
                .take(max)
            {
                let (key, value) = row.map_err(eng)?;
                out.push(Stored {
                    seq: key.value().1,
                    entry: decode_entry(value.value())?,
                });
            }
            Ok(out)
        })
    }

    fn remove(&self, to: PublicKey, seqs: Vec<u64>) -> BoxFuture<'static, Result<(), StoreError>> {
        self.writer.queue.remove(to, seqs)
    }

    fn counts(
        &self,
        to: PublicKey,
        sender: PublicKey,
    ) -> BoxFuture<'_, Result<Counts, StoreError>> {
        self.blocking(move |db| queues::counts(db, to, sender))
    }

    fn stats(&self) -> StoreStats {
        self.writer.stats.stats()
    }

    fn backup(&self, to: std::path::PathBuf) -> BoxFuture<'_, Result<Backup, StoreError>> {
        Box::pin(self.backup_to(to))
    }

    fn tie(
        &self,
        owner: PublicKey,
        other: PublicKey,
        change: TieChange,
    ) -> BoxFuture<'static, Result<TieChanged, StoreError>> {
        self.writer.queue.tie(owner, other, change)
    }

    fn tie_of(
        &self,
        owner: PublicKey,
        other: PublicKey,
    ) -> BoxFuture<'_, Result<Option<Tie>, StoreError>> {
        self.blocking(move |db| ties::tie_of(db, owner, other))
    }

    fn ties(&self, owner: PublicKey) -> BoxFuture<'_, Result<Vec<(PublicKey, Tie)>, StoreError>> {
        self.blocking(move |db| ties::ties(db, owner))
    }

    fn set_discoverable(
        &self,
        key: PublicKey,
        on: bool,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.writer.queue.discoverable(key, on)
    }

    fn expire(&self, before: i64) -> BoxFuture<'static, Result<Vec<Expired>, StoreError>> {
        self.writer.queue.expire(before)
    }

    fn room(&self, id: RoomId) -> BoxFuture<'_, Result<Option<Room>, StoreError>> {
        self.blocking(move |db| rooms::room(db, id))
    }

    fn change_room(
        &self,
        id: RoomId,
        change: RoomChange,
    ) -> BoxFuture<'static, Result<RoomOutcome, StoreError>> {
        Box::pin(super::rooms::change(self.clone(), id, change))
    }

    fn rooms_of(&self, key: PublicKey) -> BoxFuture<'_, Result<u32, StoreError>> {
        self.blocking(move |db| rooms::rooms_of(db, key))
    }

    fn publish_key_packages(
        &self,
        owner: PublicKey,
        packages: Vec<Vec<u8>>,
        max: u32,
    ) -> BoxFuture<'static, Result<u32, StoreError>> {
        self.writer.queue.publish(owner, packages, max)
    }

    fn claim_key_package(
        &self,
        owner: PublicKey,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, StoreError>> {
        self.writer.queue.claim_package(owner)
    }

    fn key_packages(&self, owner: PublicKey) -> BoxFuture<'_, Result<u32, StoreError>> {
        self.blocking(move |db| rooms::packages(db, owner))
    }
}

impl RoomEngine for EmbeddedStore {
    fn snapshot(
        &self,
        id: RoomId,
        users: Vec<PublicKey>,
    ) -> BoxFuture<'static, Result<Snapshot, StoreError>> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || rooms::snapshot(&db, id, &users))
                .await
                .map_err(eng)?
        })
    }

    fn set(&self, set: RoomSet) -> BoxFuture<'static, Result<bool, StoreError>> {
        self.writer.queue.room_set(set)
    }
}

#[cfg(test)]
mod tests;
