//! Keys that have logged in at least once: only they are sent messages (docs/PROTOCOL.md §8),
//! so nobody can fill the store for keys that will never read it (random keys, or keys nobody
//! holds the secret of). The store's user records are the truth; this is a cache in front of
//! them, sharded like the routing table so that the hot path takes no global lock.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Mutex;

use flexim_protocol::PublicKey;

use crate::relay::{Relay, SHARDS, shard_of};
use crate::store::StoreError;

/// A set sharded by key like the routing table, so that the hot path takes no global lock: the
/// positive caches in front of the store (keys that logged in, acceptances) are these.
pub(crate) struct ShardedSet<T> {
    /// The entries, by the first two bytes of their key.
    shards: Box<[Mutex<HashSet<T>>]>,
    /// Most entries one shard keeps: a shard that outgrows it is emptied (a cache fills again
    /// from the store), so that the set's memory is bounded.
    per_shard: usize,
}

/// What a [`ShardedSet`] entry is sharded by.
pub(crate) trait ShardKey: Eq + Hash {
    /// The key that picks the entry's shard.
    fn shard_key(&self) -> &PublicKey;
}

impl ShardKey for PublicKey {
    fn shard_key(&self) -> &PublicKey {
        self
    }
}

/// A pair is sharded by its first key (an acceptance by its owner).
impl ShardKey for (PublicKey, PublicKey) {
    fn shard_key(&self) -> &PublicKey {
        &self.0
    }
}

impl<T: ShardKey> ShardedSet<T> {
    /// An empty set of at most `most` entries (about: each shard keeps its part).
    pub(crate) fn new(most: usize) -> ShardedSet<T> {
        ShardedSet {
            shards: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            per_shard: (most / SHARDS).max(1),
        }
    }

    fn shard(&self, entry: &T) -> std::sync::MutexGuard<'_, HashSet<T>> {
        self.shards[shard_of(entry.shard_key(), self.shards.len())]
            .lock()
            .expect("sharded set lock")
    }

    /// Adds `entry`.
    pub(crate) fn insert(&self, entry: T) {
        let mut shard = self.shard(&entry);
        if shard.len() >= self.per_shard {
            shard.clear();
        }
        shard.insert(entry);
    }

    /// Whether `entry` is in the set.
    pub(crate) fn contains(&self, entry: &T) -> bool {
        self.shard(entry).contains(entry)
    }

    /// Takes `entry` out.
    pub(crate) fn remove(&self, entry: &T) {
        self.shard(entry).remove(entry);
    }
}

/// Keys known to have logged in (positive answers only: a key may log in at any time, so "not
/// known" is asked of the store again). Never emptied: a key that logged in stays one.
pub(crate) type Known = ShardedSet<PublicKey>;

impl Relay {
    /// Whether `key` has ever logged in (here, or on another node of the cluster).
    pub(crate) async fn has_logged_in(&self, key: PublicKey) -> Result<bool, StoreError> {
        if self.known.contains(&key) {
            return Ok(true);
        }
        let found = self.store.user(key).await?.is_some();
        if found {
            self.known.insert(key);
        }
        Ok(found)
    }
}
