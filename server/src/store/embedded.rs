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
    BoxFuture, Claim, Entry, Expired, QueueLimits, Store, StoreError, StoreStats, Stored,
    UserRecord,
};
use tokio::sync::mpsc;

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
        answer(replies, commit(db, ops), counters);
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
        self.writer.queue.enqueue(to, entries, limits)
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

    fn stats(&self) -> StoreStats {
        self.writer.stats.stats()
    }

    fn expire(&self, before: i64) -> BoxFuture<'static, Result<Vec<Expired>, StoreError>> {
        self.writer.queue.expire(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    /// A fresh store in a new directory; the directory is removed by [`Cleanup`] on drop.
    fn temp_store() -> (EmbeddedStore, Cleanup) {
        let dir = std::env::temp_dir().join(format!(
            "flexim-store-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (
            EmbeddedStore::open(&dir.join("db.redb")).unwrap(),
            Cleanup(dir),
        )
    }

    /// Removes a test's directory when dropped, also when the test fails.
    struct Cleanup(std::path::PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn conformance_queue_order_limits_peek_and_remove() {
        let (store, _dir) = temp_store();
        conformance::queue_order_limits_peek_and_remove(&store).await;
    }

    #[tokio::test]
    async fn conformance_queue_limits_are_all_or_nothing() {
        let (store, _dir) = temp_store();
        conformance::queue_limits_are_all_or_nothing(&store).await;
    }

    #[tokio::test]
    async fn conformance_sequence_numbers_are_one_global_order() {
        let (store, _dir) = temp_store();
        conformance::sequence_numbers_are_one_global_order(&store).await;
    }

    #[tokio::test]
    async fn conformance_writes_take_effect_in_call_order() {
        let (store, _dir) = temp_store();
        conformance::writes_take_effect_in_call_order(&store).await;
    }

    #[tokio::test]
    async fn conformance_aliases_are_unique_ignoring_case() {
        let (store, _dir) = temp_store();
        conformance::aliases_are_unique_ignoring_case(&store).await;
    }

    #[tokio::test]
    async fn conformance_users_touch_and_search() {
        let (store, _dir) = temp_store();
        conformance::users_touch_and_search(&store).await;
    }

    #[tokio::test]
    async fn conformance_old_entries_expire_and_say_whose_they_were() {
        let (store, _dir) = temp_store();
        conformance::old_entries_expire_and_say_whose_they_were(&store).await;
    }

    #[tokio::test]
    async fn conformance_stats_count_writes() {
        let (store, _dir) = temp_store();
        conformance::stats_count_writes(&store).await;
    }

    #[tokio::test]
    async fn everything_survives_reopening_the_file() {
        let (store, dir) = temp_store();
        let (alice, bob) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let one = conformance::entry(b"one", Some("id-1"));
        let seqs = store.enqueue(bob, vec![one.clone()], None).await.unwrap();
        store.touch(alice, 42).await.unwrap();
        store.claim_alias(alice, "Alice".into(), 1).await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(&dir.0.join("db.redb")).unwrap();
        let got = store.peek(bob, 0, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].seq, &got[0].entry), (seqs[0], &one));
        assert_eq!(
            store.user(alice).await.unwrap(),
            Some(UserRecord {
                aliases: vec!["Alice".into()],
                last_seen: 42
            })
        );
        assert_eq!(
            store.resolve_alias("alice".into()).await.unwrap(),
            Some(alice)
        );
        // The sequence counter survives too: numbers never repeat.
        let next = store
            .enqueue(bob, vec![conformance::entry(b"two", None)], None)
            .await
            .unwrap();
        assert!(next[0] > seqs[0]);
    }

    #[tokio::test]
    async fn entries_of_the_first_format_are_converted_once() {
        let (store, dir) = temp_store();
        drop(store);
        let path = dir.0.join("db.redb");
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
    }
}
