//! Keys that have logged in at least once: only they are sent messages (docs/PROTOCOL.md §8),
//! so nobody can fill the store for keys that will never read it (random keys, or keys nobody
//! holds the secret of). The store's user records are the truth; this is a cache in front of
//! them, sharded like the routing table so that the hot path takes no global lock.

use std::collections::HashSet;
use std::sync::Mutex;

use flexim_protocol::PublicKey;

use crate::relay::{Relay, SHARDS, shard_of};
use crate::store::StoreError;

/// Keys known to have logged in (positive answers only: a key may log in at any time, so "not
/// known" is asked of the store again).
pub(crate) struct Known {
    /// The keys, by their first two bytes.
    shards: Box<[Mutex<HashSet<PublicKey>>]>,
}

impl Known {
    /// An empty cache.
    pub(crate) fn new() -> Known {
        Known {
            shards: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
        }
    }

    fn shard(&self, key: &PublicKey) -> std::sync::MutexGuard<'_, HashSet<PublicKey>> {
        self.shards[shard_of(key, self.shards.len())]
            .lock()
            .expect("known-keys lock")
    }

    /// Remembers that `key` logged in.
    pub(crate) fn insert(&self, key: PublicKey) {
        self.shard(&key).insert(key);
    }

    /// Whether `key` is known to have logged in.
    pub(crate) fn contains(&self, key: &PublicKey) -> bool {
        self.shard(key).contains(key)
    }
}

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
