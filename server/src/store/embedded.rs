//! The embedded default engine: redb, one file in the data directory, no other service.
//!
//! redb commits are durable (fsync) by default, which is what "stored" promises. Writes go
//! through one writer thread that commits everything waiting in one transaction: while one
//! commit syncs, the next batch gathers, so many messages share each sync (group commit).
//! Reads run on tokio's blocking pool and see every committed write.

use std::path::Path;
use std::sync::{Arc, mpsc};

use bytes::Bytes;
use flexim_protocol::PublicKey;
use flexim_protocol::keys::alias_key;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use super::{
    BoxFuture, Claim, Entry, Expired, QueueLimits, Store, StoreError, StoreStats, Stored,
    UserRecord,
};

/// key (32 bytes) -> msgpack UserRecord
const USERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("users");
/// lower-cased alias -> key (32 bytes)
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
/// (recipient key, sequence) -> entry (see [`encode_entry`])
const OFFLINE: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("offline");
/// recipient key -> (messages, bytes) queued, so limits are checked without a scan
const QUEUES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("queues");
/// named counters: "seq" is the next offline sequence number, "format" the entry format
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The entry format this code writes (see [`encode_entry`]). Format 1 (before message ids)
/// stored the bare frame; [`EmbeddedStore::open`] converts it.
const FORMAT: u64 = 2;

/// Most writes in one commit. Bounds the time one commit holds its callers; under load a
/// commit of this many small messages still takes about one sync.
const MAX_BATCH: usize = 4096;

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
    /// The queue. Unbounded on purpose: callers submit while holding the relay's lock (that
    /// is how order is kept) and must never block there; the sessions bound how much each
    /// connection can have in flight. `None` once dropped.
    writes: Option<mpsc::Sender<Job>>,
    /// Joined on drop, so that the database file is closed (and can be opened again) when
    /// the store is gone, and every submitted write is committed first.
    thread: Option<std::thread::JoinHandle<()>>,
    /// What the thread did, for `/metrics`.
    stats: Arc<Counters>,
}

/// The writer thread's counters. Relaxed atomics: they are statistics.
#[derive(Default)]
struct Counters {
    /// Writes committed.
    writes: std::sync::atomic::AtomicU64,
    /// Commits.
    commits: std::sync::atomic::AtomicU64,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop after the writes already in it.
        self.writes.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A write for the writer thread.
enum Op {
    Touch {
        key: PublicKey,
        now: i64,
    },
    Claim {
        key: PublicKey,
        alias: String,
        max_aliases: usize,
    },
    Enqueue {
        to: PublicKey,
        entries: Vec<Entry>,
        limits: Option<QueueLimits>,
    },
    Remove {
        to: PublicKey,
        seqs: Vec<u64>,
    },
    Expire {
        before: i64,
    },
}

/// What a write produced.
enum Outcome {
    User(UserRecord),
    Claim(Claim),
    Seqs(Vec<u64>),
    Removed,
    Expired(Vec<Expired>),
}

/// A write and where its outcome goes once it is committed.
struct Job {
    /// The write.
    op: Op,
    /// Answered after the commit (or with the engine's error).
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
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

fn key_of(bytes: &[u8]) -> Result<PublicKey, StoreError> {
    bytes
        .try_into()
        .map(PublicKey)
        .map_err(|_| StoreError::Engine("stored key is not 32 bytes".into()))
}

/// An entry on disk: acceptance time (8 bytes, big-endian Unix seconds), sender key (32
/// bytes), id length (1 byte, 0 for none), id, frame.
fn encode_entry(e: &Entry) -> Vec<u8> {
    let id = e.id.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(41 + id.len() + e.frame.len());
    out.extend_from_slice(&e.at.to_be_bytes());
    out.extend_from_slice(e.sender.as_bytes());
    // Ids are at most 64 bytes (the protocol's MAX_ID_LEN), so the length fits a byte.
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&e.frame);
    out
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    let bad = || StoreError::Engine("stored entry is damaged".into());
    let at = bytes.get(..8).ok_or_else(bad)?;
    let at = i64::from_be_bytes(at.try_into().map_err(|_| bad())?);
    let bytes = &bytes[8..];
    let sender = key_of(bytes.get(..32).ok_or_else(bad)?)?;
    let id_len = *bytes.get(32).ok_or_else(bad)? as usize;
    let id = bytes.get(33..33 + id_len).ok_or_else(bad)?;
    let id = (id_len > 0)
        .then(|| String::from_utf8(id.to_vec()).map_err(|_| bad()))
        .transpose()?;
    Ok(Entry {
        sender,
        id,
        frame: Bytes::copy_from_slice(&bytes[33 + id_len..]),
        at,
    })
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
        Self::open_at(path, crate::relay::now())
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
            txn.open_table(META).map_err(eng)?;
        }
        let converted = migrate(&txn, now)?;
        txn.commit().map_err(eng)?;
        if converted > 0 {
            tracing::info!(
                entries = converted,
                "converted stored messages to the format with ids"
            );
        }
        let db = Arc::new(db);
        let (writes, jobs) = mpsc::channel();
        let writer_db = db.clone();
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(&writer_db, jobs, &counters))
            .map_err(eng)?;
        let writer = Arc::new(Writer {
            writes: Some(writes),
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

    /// Hands a write to the writer thread now (so that writes keep the order of the calls)
    /// and returns a future for its outcome.
    fn submit(&self, op: Op) -> BoxFuture<'static, Result<Outcome, StoreError>> {
        let (reply, outcome) = oneshot::channel();
        let sent = match &self.writer.writes {
            Some(w) => w.send(Job { op, reply }).map_err(|_| ()),
            None => Err(()),
        };
        Box::pin(async move {
            sent.map_err(|_| StoreError::Engine("the store writer has stopped".into()))?;
            outcome
                .await
                .map_err(|_| StoreError::Engine("the store writer has stopped".into()))?
        })
    }

    /// [`EmbeddedStore::submit`], then picks the outcome this kind of write produces.
    fn write<T: Send + 'static>(
        &self,
        op: Op,
        pick: fn(Outcome) -> Option<T>,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let done = self.submit(op);
        Box::pin(async move { pick(done.await?).ok_or_else(mismatch) })
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
fn writer(db: &Database, jobs: mpsc::Receiver<Job>, counters: &Counters) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|j| (j.op, j.reply)).unzip();
        match commit(db, ops) {
            Ok(outcomes) => {
                use std::sync::atomic::Ordering::Relaxed;
                counters.commits.fetch_add(1, Relaxed);
                counters.writes.fetch_add(outcomes.len() as u64, Relaxed);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = replies.len(), "a store commit failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Engine(e.to_string())));
                }
            }
        }
    }
}

/// Applies `ops` in one write transaction and commits it. The inner results are the
/// per-write outcomes (a full queue refuses one write, not the batch).
fn commit(db: &Database, ops: Vec<Op>) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    let txn = db.begin_write().map_err(eng)?;
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        let outcome = match op {
            Op::Touch { key, now } => touch(&txn, key, now).map(Outcome::User),
            Op::Claim {
                key,
                alias,
                max_aliases,
            } => claim(&txn, key, alias, max_aliases).map(Outcome::Claim),
            Op::Enqueue {
                to,
                entries,
                limits,
            } => enqueue(&txn, to, entries, limits).map(Outcome::Seqs),
            Op::Remove { to, seqs } => remove(&txn, to, seqs).map(|()| Outcome::Removed),
            Op::Expire { before } => expire(&txn, before).map(Outcome::Expired),
        };
        match outcome {
            Err(StoreError::Engine(e)) => return Err(StoreError::Engine(e)),
            other => outcomes.push(other),
        }
    }
    txn.commit().map_err(eng)?;
    Ok(outcomes)
}

fn touch(txn: &WriteTransaction, key: PublicKey, now: i64) -> Result<UserRecord, StoreError> {
    let mut table = txn.open_table(USERS).map_err(eng)?;
    let before = match table.get(key.as_bytes().as_slice()).map_err(eng)? {
        Some(v) => decode_user(v.value())?,
        None => UserRecord::default(),
    };
    let after = UserRecord {
        last_seen: now,
        ..before.clone()
    };
    table
        .insert(key.as_bytes().as_slice(), encode_user(&after).as_slice())
        .map_err(eng)?;
    Ok(before)
}

fn claim(
    txn: &WriteTransaction,
    key: PublicKey,
    alias: String,
    max_aliases: usize,
) -> Result<Claim, StoreError> {
    let folded = alias_key(&alias);
    let mut aliases = txn.open_table(ALIASES).map_err(eng)?;
    let owner = aliases
        .get(folded.as_str())
        .map_err(eng)?
        .map(|v| key_of(v.value()))
        .transpose()?;
    Ok(match owner {
        Some(owner) if owner == key => Claim::AlreadyYours,
        Some(_) => Claim::Taken,
        None => {
            let mut users = txn.open_table(USERS).map_err(eng)?;
            let mut record = match users.get(key.as_bytes().as_slice()).map_err(eng)? {
                Some(v) => decode_user(v.value())?,
                None => UserRecord::default(),
            };
            if record.aliases.len() >= max_aliases {
                Claim::TooMany
            } else {
                record.aliases.push(alias);
                users
                    .insert(key.as_bytes().as_slice(), encode_user(&record).as_slice())
                    .map_err(eng)?;
                aliases
                    .insert(folded.as_str(), key.as_bytes().as_slice())
                    .map_err(eng)?;
                Claim::Registered
            }
        }
    })
}

fn enqueue(
    txn: &WriteTransaction,
    to: PublicKey,
    entries: Vec<Entry>,
    limits: Option<QueueLimits>,
) -> Result<Vec<u64>, StoreError> {
    let k = to.as_bytes().as_slice();
    let encoded: Vec<Vec<u8>> = entries.iter().map(encode_entry).collect();
    let added: u64 = encoded.iter().map(|e| e.len() as u64).sum();
    let mut queues = txn.open_table(QUEUES).map_err(eng)?;
    let (messages, bytes) = queues
        .get(k)
        .map_err(eng)?
        .map(|v| v.value())
        .unwrap_or((0, 0));
    if let Some(limits) = limits
        && (messages + encoded.len() as u64 > limits.messages || bytes + added > limits.bytes)
    {
        return Err(StoreError::QueueFull { messages, bytes });
    }
    queues
        .insert(k, (messages + encoded.len() as u64, bytes + added))
        .map_err(eng)?;
    let mut meta = txn.open_table(META).map_err(eng)?;
    let mut seq = meta
        .get("seq")
        .map_err(eng)?
        .map(|v| v.value())
        .unwrap_or(0);
    let mut offline = txn.open_table(OFFLINE).map_err(eng)?;
    let mut seqs = Vec::with_capacity(encoded.len());
    for e in &encoded {
        offline.insert((k, seq), e.as_slice()).map_err(eng)?;
        seqs.push(seq);
        seq += 1;
    }
    meta.insert("seq", seq).map_err(eng)?;
    Ok(seqs)
}

fn remove(txn: &WriteTransaction, to: PublicKey, seqs: Vec<u64>) -> Result<(), StoreError> {
    let k = to.as_bytes().as_slice();
    let mut offline = txn.open_table(OFFLINE).map_err(eng)?;
    let (mut removed, mut freed) = (0u64, 0u64);
    for seq in seqs {
        if let Some(v) = offline.remove((k, seq)).map_err(eng)? {
            removed += 1;
            freed += v.value().len() as u64;
        }
    }
    if removed == 0 {
        return Ok(());
    }
    let mut queues = txn.open_table(QUEUES).map_err(eng)?;
    let (messages, bytes) = queues
        .get(k)
        .map_err(eng)?
        .map(|v| v.value())
        .unwrap_or((0, 0));
    let left = (
        messages.saturating_sub(removed),
        bytes.saturating_sub(freed),
    );
    if left.0 == 0 {
        queues.remove(k).map_err(eng)?;
    } else {
        queues.insert(k, left).map_err(eng)?;
    }
    Ok(())
}

fn expire(txn: &WriteTransaction, before: i64) -> Result<Vec<Expired>, StoreError> {
    let mut found = Vec::new();
    {
        let offline = txn.open_table(OFFLINE).map_err(eng)?;
        for row in offline.iter().map_err(eng)? {
            let (k, v) = row.map_err(eng)?;
            let entry = decode_entry(v.value())?;
            if entry.at < before {
                let (to, seq) = k.value();
                found.push((key_of(to)?, seq, entry));
            }
        }
    }
    let mut by_queue: std::collections::BTreeMap<PublicKey, Vec<u64>> = Default::default();
    for (to, seq, _) in &found {
        by_queue.entry(*to).or_default().push(*seq);
    }
    for (to, seqs) in by_queue {
        remove(txn, to, seqs)?;
    }
    Ok(found
        .into_iter()
        .map(|(to, _, e)| Expired {
            to,
            sender: e.sender,
            id: e.id,
        })
        .collect())
}

/// The outcome a write of this kind produces; any other is a bug in the writer.
fn mismatch() -> StoreError {
    StoreError::Engine("the store writer answered with the wrong outcome".into())
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
        self.write(Op::Touch { key, now }, |o| match o {
            Outcome::User(u) => Some(u),
            _ => None,
        })
    }

    fn claim_alias(
        &self,
        key: PublicKey,
        alias: String,
        max_aliases: usize,
    ) -> BoxFuture<'_, Result<Claim, StoreError>> {
        self.write(
            Op::Claim {
                key,
                alias,
                max_aliases,
            },
            |o| match o {
                Outcome::Claim(c) => Some(c),
                _ => None,
            },
        )
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
            let mut found: Vec<_> = Self::read_users(db)?
                .into_iter()
                .filter(|(_, u)| {
                    u.aliases
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
        self.write(
            Op::Enqueue {
                to,
                entries,
                limits,
            },
            |o| match o {
                Outcome::Seqs(seqs) => Some(seqs),
                _ => None,
            },
        )
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
        self.write(Op::Remove { to, seqs }, |o| match o {
            Outcome::Removed => Some(()),
            _ => None,
        })
    }

    fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        StoreStats {
            writes: self.writer.stats.writes.load(Relaxed),
            commits: self.writer.stats.commits.load(Relaxed),
        }
    }

    fn expire(&self, before: i64) -> BoxFuture<'static, Result<Vec<Expired>, StoreError>> {
        self.write(Op::Expire { before }, |o| match o {
            Outcome::Expired(found) => Some(found),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (EmbeddedStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "flexim-store-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (EmbeddedStore::open(&dir.join("db.redb")).unwrap(), dir)
    }

    const LIMITS: QueueLimits = QueueLimits {
        messages: 2,
        bytes: 1000,
    };

    fn entry(frame: &'static [u8], id: Option<&str>) -> Entry {
        Entry {
            sender: PublicKey([7; 32]),
            id: id.map(str::to_string),
            frame: Bytes::from_static(frame),
            at: 100,
        }
    }

    #[tokio::test]
    async fn queue_keeps_order_limits_and_survives_reopen() {
        let (store, dir) = temp_store();
        let bob = PublicKey([2; 32]);
        store
            .enqueue(bob, vec![entry(b"one", Some("id-1"))], Some(LIMITS))
            .await
            .unwrap();
        store
            .enqueue(bob, vec![entry(b"two", None)], Some(LIMITS))
            .await
            .unwrap();
        assert!(matches!(
            store
                .enqueue(bob, vec![entry(b"three", None)], Some(LIMITS))
                .await,
            Err(StoreError::QueueFull { messages: 2, .. })
        ));
        drop(store);
        let store = EmbeddedStore::open(&dir.join("db.redb")).unwrap();
        let got = store.peek(bob, 0, 10).await.unwrap();
        let entries: Vec<_> = got.iter().map(|s| s.entry.clone()).collect();
        assert_eq!(
            entries,
            [entry(b"one", Some("id-1")), entry(b"two", None)],
            "sender, id and frame come back as stored, in order"
        );
        // Peeking from a sequence number skips what came before it.
        let later = store.peek(bob, got[1].seq, 10).await.unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].entry.frame, Bytes::from_static(b"two"));
        store.remove(bob, vec![got[0].seq]).await.unwrap();
        // Removing frees room in the queue.
        store
            .enqueue(bob, vec![entry(b"three", None)], Some(LIMITS))
            .await
            .unwrap();
        let left: Vec<_> = store
            .peek(bob, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.entry.frame)
            .collect();
        assert_eq!(
            left,
            [Bytes::from_static(b"two"), Bytes::from_static(b"three")]
        );
        // Without limits (messages a connection already accepted), a full queue still takes them.
        store
            .enqueue(bob, vec![entry(b"four", None)], None)
            .await
            .unwrap();
        assert_eq!(store.peek(bob, 0, 10).await.unwrap().len(), 3);
        assert!(
            store
                .peek(PublicKey([3; 32]), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_keep_call_order() {
        let (store, dir) = temp_store();
        let bob = PublicKey([2; 32]);
        let frames: Vec<Bytes> = (0..500u32)
            .map(|i| Bytes::from(i.to_be_bytes().to_vec()))
            .collect();
        // Every write is submitted before any is awaited: their order is the call order.
        let pending: Vec<_> = frames
            .iter()
            .map(|f| {
                let e = Entry {
                    sender: PublicKey([7; 32]),
                    id: None,
                    frame: f.clone(),
                    at: 100,
                };
                store.enqueue(bob, vec![e], None)
            })
            .collect();
        for p in pending {
            p.await.unwrap();
        }
        // They were waiting together, so they shared commits: far fewer syncs than writes.
        let stats = store.stats();
        assert_eq!(stats.writes, 500);
        assert!(stats.commits <= 50, "{stats:?}");
        let got: Vec<_> = store
            .peek(bob, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.entry.frame)
            .collect();
        assert_eq!(got, frames);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn old_entries_expire_and_say_whose_they_were() {
        let (store, dir) = temp_store();
        let (bob, carol) = (PublicKey([2; 32]), PublicKey([3; 32]));
        let mut old = entry(b"old", Some("o-1"));
        old.at = 10;
        store.enqueue(bob, vec![old], None).await.unwrap();
        store
            .enqueue(bob, vec![entry(b"new", None)], None)
            .await
            .unwrap();
        let mut old_plain = entry(b"old2", None);
        old_plain.at = 20;
        store.enqueue(carol, vec![old_plain], None).await.unwrap();
        let mut gone = store.expire(50).await.unwrap();
        gone.sort_by_key(|e| e.to);
        assert_eq!(
            gone,
            [
                Expired {
                    to: bob,
                    sender: PublicKey([7; 32]),
                    id: Some("o-1".into())
                },
                Expired {
                    to: carol,
                    sender: PublicKey([7; 32]),
                    id: None
                },
            ]
        );
        let left = store.peek(bob, 0, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].entry.frame, Bytes::from_static(b"new"));
        assert!(store.peek(carol, 0, 10).await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn entries_of_the_first_format_are_converted_once() {
        let (store, dir) = temp_store();
        drop(store);
        let path = dir.join("db.redb");
        let bob = PublicKey([2; 32]);
        {
            // Write what the first format held: bare frames, and no format number.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut offline = txn.open_table(OFFLINE).unwrap();
                offline
                    .insert((bob.as_bytes().as_slice(), 0), b"frame one".as_slice())
                    .unwrap();
                let mut meta = txn.open_table(META).unwrap();
                meta.remove("format").unwrap();
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open_at(&path, 1234).unwrap();
        let got = store.peek(bob, 0, 10).await.unwrap();
        assert_eq!(
            got[0].entry,
            Entry {
                sender: PublicKey([0; 32]),
                id: None,
                frame: Bytes::from_static(b"frame one"),
                at: 1234,
            }
        );
        drop(store);
        // A second open leaves converted entries alone.
        let store = EmbeddedStore::open_at(&path, 9999).unwrap();
        assert_eq!(store.peek(bob, 0, 10).await.unwrap()[0].entry.at, 1234);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn aliases_are_unique_ignoring_case() {
        let (store, dir) = temp_store();
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        assert_eq!(
            store.claim_alias(a, "Alice".into(), 2).await.unwrap(),
            Claim::Registered
        );
        assert_eq!(
            store.claim_alias(a, "alice".into(), 2).await.unwrap(),
            Claim::AlreadyYours
        );
        assert_eq!(
            store.claim_alias(b, "ALICE".into(), 2).await.unwrap(),
            Claim::Taken
        );
        assert_eq!(store.resolve_alias("aLiCe".into()).await.unwrap(), Some(a));
        assert_eq!(
            store.claim_alias(a, "al2".into(), 2).await.unwrap(),
            Claim::Registered
        );
        assert_eq!(
            store.claim_alias(a, "al3".into(), 2).await.unwrap(),
            Claim::TooMany
        );
        let before = store.touch(a, 50).await.unwrap();
        assert_eq!(before.aliases, ["Alice", "al2"]);
        assert_eq!(store.user(a).await.unwrap().unwrap().last_seen, 50);
        let found = store.search("LI".into(), 10).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, a);
        let _ = std::fs::remove_dir_all(dir);
    }
}
