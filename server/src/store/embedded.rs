//! The embedded default engine: redb, one file in the data directory, no other service.
//!
//! redb commits are durable (fsync) by default, which is what "stored" promises. Its calls
//! block, so each one runs on tokio's blocking pool and the relay's tasks never stall on disk.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use flexim_protocol::PublicKey;
use flexim_protocol::keys::alias_key;
use redb::{Database, ReadableTable, TableDefinition};

use super::{BoxFuture, Claim, QueueLimits, Store, StoreError, Stored, UserRecord};

/// key (32 bytes) -> msgpack UserRecord
const USERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("users");
/// lower-cased alias -> key (32 bytes)
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
/// (recipient key, sequence) -> Message frame
const OFFLINE: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("offline");
/// recipient key -> (messages, bytes) queued, so limits are checked without a scan
const QUEUES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("queues");
/// named counters: "seq" is the next offline sequence number
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The redb-backed store.
#[derive(Clone)]
pub struct EmbeddedStore {
    /// Shared with the blocking-pool closures that run each operation.
    db: Arc<Database>,
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

impl EmbeddedStore {
    /// Opens (or creates) the database file at `path` and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(eng)?;
        let txn = db.begin_write().map_err(eng)?;
        {
            txn.open_table(USERS).map_err(eng)?;
            txn.open_table(ALIASES).map_err(eng)?;
            txn.open_table(OFFLINE).map_err(eng)?;
            txn.open_table(QUEUES).map_err(eng)?;
            txn.open_table(META).map_err(eng)?;
        }
        txn.commit().map_err(eng)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    /// Runs `f` on the blocking pool.
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
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(eng)?;
            let before = {
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
                before
            };
            txn.commit().map_err(eng)?;
            Ok(before)
        })
    }

    fn claim_alias(
        &self,
        key: PublicKey,
        alias: String,
        max_aliases: usize,
    ) -> BoxFuture<'_, Result<Claim, StoreError>> {
        self.blocking(move |db| {
            let folded = alias_key(&alias);
            let txn = db.begin_write().map_err(eng)?;
            let outcome = {
                let mut aliases = txn.open_table(ALIASES).map_err(eng)?;
                let owner = aliases
                    .get(folded.as_str())
                    .map_err(eng)?
                    .map(|v| key_of(v.value()))
                    .transpose()?;
                match owner {
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
                }
            };
            if outcome == Claim::Registered {
                txn.commit().map_err(eng)?;
            } else {
                txn.abort().map_err(eng)?;
            }
            Ok(outcome)
        })
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
        frame: Bytes,
        limits: QueueLimits,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(eng)?;
            {
                let mut queues = txn.open_table(QUEUES).map_err(eng)?;
                let (messages, bytes) = queues
                    .get(to.as_bytes().as_slice())
                    .map_err(eng)?
                    .map(|v| v.value())
                    .unwrap_or((0, 0));
                if messages >= limits.messages || bytes + frame.len() as u64 > limits.bytes {
                    return Err(StoreError::QueueFull { messages, bytes });
                }
                queues
                    .insert(
                        to.as_bytes().as_slice(),
                        (messages + 1, bytes + frame.len() as u64),
                    )
                    .map_err(eng)?;
                let mut meta = txn.open_table(META).map_err(eng)?;
                let seq = meta
                    .get("seq")
                    .map_err(eng)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                meta.insert("seq", seq + 1).map_err(eng)?;
                let mut offline = txn.open_table(OFFLINE).map_err(eng)?;
                offline
                    .insert((to.as_bytes().as_slice(), seq), frame.as_ref())
                    .map_err(eng)?;
            }
            txn.commit().map_err(eng)
        })
    }

    fn peek(&self, to: PublicKey, max: usize) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(eng)?;
            let table = txn.open_table(OFFLINE).map_err(eng)?;
            let k = to.as_bytes().as_slice();
            let mut out = Vec::new();
            for row in table.range((k, 0)..=(k, u64::MAX)).map_err(eng)?.take(max) {
                let (key, value) = row.map_err(eng)?;
                out.push(Stored {
                    seq: key.value().1,
                    frame: Bytes::copy_from_slice(value.value()),
                });
            }
            Ok(out)
        })
    }

    fn remove(&self, to: PublicKey, seqs: Vec<u64>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(move |db| {
            let k = to.as_bytes().as_slice();
            let txn = db.begin_write().map_err(eng)?;
            {
                let mut offline = txn.open_table(OFFLINE).map_err(eng)?;
                let (mut removed, mut freed) = (0u64, 0u64);
                for seq in seqs {
                    if let Some(v) = offline.remove((k, seq)).map_err(eng)? {
                        removed += 1;
                        freed += v.value().len() as u64;
                    }
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
            }
            txn.commit().map_err(eng)
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

    #[tokio::test]
    async fn queue_keeps_order_limits_and_survives_reopen() {
        let (store, dir) = temp_store();
        let bob = PublicKey([2; 32]);
        store
            .enqueue(bob, Bytes::from_static(b"one"), LIMITS)
            .await
            .unwrap();
        store
            .enqueue(bob, Bytes::from_static(b"two"), LIMITS)
            .await
            .unwrap();
        assert!(matches!(
            store
                .enqueue(bob, Bytes::from_static(b"three"), LIMITS)
                .await,
            Err(StoreError::QueueFull { messages: 2, .. })
        ));
        drop(store);
        let store = EmbeddedStore::open(&dir.join("db.redb")).unwrap();
        let got = store.peek(bob, 10).await.unwrap();
        let frames: Vec<_> = got.iter().map(|s| s.frame.clone()).collect();
        assert_eq!(
            frames,
            [Bytes::from_static(b"one"), Bytes::from_static(b"two")]
        );
        store.remove(bob, vec![got[0].seq]).await.unwrap();
        // Removing frees room in the queue.
        store
            .enqueue(bob, Bytes::from_static(b"three"), LIMITS)
            .await
            .unwrap();
        let left: Vec<_> = store
            .peek(bob, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.frame)
            .collect();
        assert_eq!(
            left,
            [Bytes::from_static(b"two"), Bytes::from_static(b"three")]
        );
        assert!(store.peek(PublicKey([3; 32]), 10).await.unwrap().is_empty());
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
