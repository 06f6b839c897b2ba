//! The Redis engine: users, aliases and queues in one Redis, shared by several server nodes.
//!
//! Every write is one Lua script, so it is atomic however many nodes write at once, and every
//! write goes through one writer task per store: the task takes everything waiting and sends
//! it as one pipeline wrapped in MULTI/EXEC (one round trip). Redis runs the transaction in
//! one go, so with `appendfsync always` it appends it to its AOF and syncs once before it
//! replies: a group commit, like the embedded engine's. [`Store::stats`] counts each write
//! once and each transaction as one commit. The transaction also keeps other nodes' writes
//! from landing between two of this node's, but it is not all-or-nothing: a script that
//! fails (damaged data) fails alone, and the others in the batch are done.
//!
//! Whether "stored" is durable depends on how Redis runs; [`RedisStore::durability_warnings`]
//! says when it is not.
//!
//! Data model (every key starts with [`PREFIX`], keys are 64 lower-case hex digits):
//!
//! - `flexim:user:<key>`: hash; `last_seen` (Unix seconds), once the user has one,
//!   `aliases` (a msgpack array of the aliases as spelled, in order of registration), and
//!   `banned` (`1`) while the operator blocks the key.
//! - `flexim:users`: sorted set of every user's key scored by `last_seen`, for
//!   [`Store::users`] (most recently seen first without a scan).
//! - `flexim:aliases`: hash of lower-cased alias -> key. One hash rather than a key per alias
//!   so that [`Store::search`] walks only aliases (HSCAN with a pattern), not the whole keyspace.
//! - `flexim:seq`: the next sequence number, one counter for every queue, so that the order
//!   of sequence numbers is the order of acceptance across queues and nodes.
//! - `flexim:queue:<recipient>`: sorted set scored by sequence number; each member is the
//!   sequence number (8 bytes, big-endian) then the entry (see [`encode_entry`](super::entry::encode_entry)). The number
//!   makes members unique: two identical entries would otherwise be one member.
//! - `flexim:qbytes:<recipient>`: the bytes of entries in that queue (entries only, as the
//!   embedded engine counts them, so the byte limit means the same with either engine); the
//!   message count is the sorted set's size. Deleted with the queue's last entry.
//! - `flexim:shares:<recipient>`: hash of each sender's part of that queue, `m:<sender>` its
//!   entries and `b:<sender>` its bytes (counted as `qbytes` counts), for the per-sender
//!   share. A sender's fields go with its last entry, the hash with the queue's last entry.
//! - `flexim:bytes`: the bytes of every queue together, for the store's budget.
//! - `flexim:counted`: set once the shares and `flexim:bytes` count every entry. Data written
//!   by a version that did not keep them is counted once, by the first node that starts
//!   (one script: nodes must all run a version that keeps them, or the counts drift).
//! - `flexim:expiry`: sorted set of `<recipient>:<sequence>` scored by acceptance time, so that
//!   [`Store::expire`] finds old entries without reading every queue.
//!
//! - `flexim:ties:<owner>`: hash of other key -> the owner's tie with it (`p<n>`, `a`, `d`,
//!   `b`: [`Tie::encode`](super::Tie::encode)).
//! - `flexim:discoverable`: set of the keys SEARCH may find.
//! - `flexim:room:<room id>`: a room's record ([`Room::encode`](super::Room::encode)), changed
//!   only by the compare-and-set `ROOM_SET` (`store/rooms.rs` decides every change).
//! - `flexim:roomsof:<key>`: set of the ids of the rooms the user is a member of.
//! - `flexim:kp:<key>`: list of the KeyPackages the user published, oldest first.
//!
//! The scripts compute some key names from others (an expiry names its queue), which is fine
//! on one Redis (or a primary with replicas) but not on Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisResult};
use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use flexim_protocol::keys::alias_key;

mod replies;
mod rooms;
mod scripts;
mod writer;

use super::rooms::{Room, RoomChange, RoomOutcome};
use super::writes::{Counters, WriteQueue};
use super::{
    BoxFuture, Claim, Counts, Entry, Expired, Placed, QueueLimits, Store, StoreError, StoreStats,
    Stored, Tie, TieChange, TieChanged, UserRecord,
};
use replies::{parse_key, record_from_hmget, stored_of, tie_of};
use rooms::{packages_key, room_key, rooms_of_prefix};

/// The start of every key this engine uses, so that flexim can share a Redis with others.
pub const PREFIX: &str = "flexim:";

/// How long one command or pipeline may take before it counts as failed. Generous because a
/// batch of thousands of writes waits for a disk sync; a Redis that does not answer at all
/// (stopped, or a network partition) still fails its callers instead of holding them forever.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many entries one HSCAN step of a search asks for.
const SCAN_COUNT: usize = 1000;

/// The Redis-backed store. Clones share one connection and one writer task.
#[derive(Clone)]
pub struct RedisStore {
    /// For reads; reconnects by itself after Redis restarts.
    conn: ConnectionManager,
    /// The writer task's queue; the task ends when the last clone is dropped.
    queue: Arc<WriteQueue>,
    /// What the writer task did, for `/metrics`.
    stats: Arc<Counters>,
}

/// Any engine failure as [`StoreError::Engine`].
fn eng(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// A user's hash.
fn user_key(key: &PublicKey) -> String {
    format!("{}{}", user_prefix(), key.to_hex())
}

/// The start of every user's hash (a script that finds a user by alias names its hash).
fn user_prefix() -> String {
    format!("{PREFIX}user:")
}

/// A user's ties (section 14.2 of docs/PROTOCOL.md): whom it accepted, declined or blocked.
fn ties_key(owner: &PublicKey) -> String {
    format!("{PREFIX}ties:{}", owner.to_hex())
}

/// The users who chose to be found by SEARCH.
fn discoverable_key() -> String {
    format!("{PREFIX}discoverable")
}

/// Every user by `last_seen`.
fn users_key() -> String {
    format!("{PREFIX}users")
}

/// Lower-cased alias -> key.
fn aliases_key() -> String {
    format!("{PREFIX}aliases")
}

/// A recipient's queue is this and its key.
fn queue_prefix() -> String {
    format!("{PREFIX}queue:")
}

/// A recipient's queued bytes are this and its key.
fn bytes_prefix() -> String {
    format!("{PREFIX}qbytes:")
}

/// A recipient's shares (each sender's entries and bytes in its queue) are this and its key.
fn shares_prefix() -> String {
    format!("{PREFIX}shares:")
}

/// The bytes of every queue together.
fn store_bytes_key() -> String {
    format!("{PREFIX}bytes")
}

/// Set once the shares and the store's bytes count every entry.
fn counted_key() -> String {
    format!("{PREFIX}counted")
}

/// Every queued entry by acceptance time.
fn expiry_key() -> String {
    format!("{PREFIX}expiry")
}

/// The one sequence counter.
fn seq_key() -> String {
    format!("{PREFIX}seq")
}

/// `needle` as a Redis glob that matches it anywhere, with glob characters taken literally.
fn contains_pattern(needle: &str) -> String {
    let mut p = String::with_capacity(needle.len() + 2);
    p.push('*');
    for c in needle.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('*');
    p
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://HOST:PORT[/DB]`) and starts the writer task,
    /// which ends when the last clone of the store is dropped. Fails if Redis cannot be
    /// reached now; later outages fail the writes made during them, and the store
    /// reconnects by itself.
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        let client = Client::open(url)
            .map_err(|e| StoreError::Engine(format!("bad Redis URL {}: {e}", redacted(url))))?;
        // Few retries with short delays: each failed command starts a new reconnection
        // anyway, and a caller should learn soon that Redis is away.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let unreachable = |e: ::redis::RedisError| {
            StoreError::Engine(format!("cannot reach Redis at {}: {e}", redacted(url)))
        };
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unreachable)?;
        // A connection is not yet an answer (a wrong password or database shows only now).
        ::redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(unreachable)?;
        writer::count_once(&mut conn).await?;
        let (queue, jobs) = WriteQueue::new();
        let stats = Arc::new(Counters::default());
        tokio::spawn(writer::writer(conn.clone(), jobs, stats.clone()));
        Ok(RedisStore {
            conn,
            queue: Arc::new(queue),
            stats,
        })
    }

    /// Why "stored" would not mean durable with this Redis's settings, in words for the
    /// operator (empty when it does): without the append-only file a crash of Redis loses
    /// what it held, and only `appendfsync always` syncs before Redis answers.
    pub async fn durability_warnings(&self) -> Vec<String> {
        let get = |name: &'static str| {
            let mut conn = self.conn.clone();
            async move {
                let pairs: RedisResult<Vec<String>> = ::redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut conn)
                    .await;
                pairs.map(|p| p.get(1).cloned())
            }
        };
        let (appendonly, appendfsync) = match (get("appendonly").await, get("appendfsync").await) {
            (Ok(Some(a)), Ok(Some(f))) => (a, f),
            (Err(e), _) | (_, Err(e)) => {
                return vec![format!(
                    "could not check whether Redis keeps stored messages durably (CONFIG GET failed: {e}); \
                     run redis-server with --appendonly yes --appendfsync always"
                )];
            }
            _ => {
                return vec![
                    "could not check whether Redis keeps stored messages durably (CONFIG GET answered nothing); \
                     run redis-server with --appendonly yes --appendfsync always"
                        .into(),
                ];
            }
        };
        let mut warnings = Vec::new();
        if appendonly != "yes" {
            warnings.push(
                "Redis runs without its append-only file: a crash of Redis loses stored messages; \
                 run redis-server with --appendonly yes --appendfsync always"
                    .to_string(),
            );
        } else {
            match appendfsync.as_str() {
                "always" => {}
                "everysec" => warnings.push(
                    "Redis syncs its append-only file once a second (appendfsync everysec): \
                     up to one second of stored messages can be lost in a crash; \
                     run redis-server with --appendfsync always"
                        .to_string(),
                ),
                other => warnings.push(format!(
                    "Redis leaves syncing its append-only file to the OS (appendfsync {other}): \
                     recently stored messages can be lost in a crash; \
                     run redis-server with --appendfsync always"
                )),
            }
        }
        warnings
    }

    /// Those of `keys` (hex) that SEARCH may find.
    async fn discoverable_of(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, StoreError> {
        if keys.is_empty() {
            return Ok(keys);
        }
        let mut conn = self.conn.clone();
        let found: Vec<bool> = ::redis::cmd("SMISMEMBER")
            .arg(discoverable_key())
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(eng)?;
        Ok(keys
            .into_iter()
            .zip(found)
            .filter_map(|(k, on)| on.then_some(k))
            .collect())
    }

    /// The records of `keys` (hex), read in one pipeline; unknown users are left out.
    async fn records(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<(PublicKey, UserRecord)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for hex in &keys {
            pipe.cmd("HMGET")
                .arg([PREFIX.as_bytes(), b"user:", hex].concat())
                .arg("last_seen")
                .arg("aliases")
                .arg("banned");
        }
        let mut conn = self.conn.clone();
        let rows: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(&mut conn).await.map_err(eng)?;
        let mut out = Vec::with_capacity(rows.len());
        for (hex, row) in keys.iter().zip(rows) {
            if let Some(record) = record_from_hmget(row)? {
                out.push((parse_key(hex)?, record));
            }
        }
        Ok(out)
    }
}

impl Store for RedisStore {
    fn user(&self, key: PublicKey) -> BoxFuture<'_, Result<Option<UserRecord>, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let fields: Vec<Option<Vec<u8>>> = ::redis::cmd("HMGET")
                .arg(user_key(&key))
                .arg("last_seen")
                .arg("aliases")
                .arg("banned")
                .query_async(&mut conn)
                .await
                .map_err(eng)?;
            record_from_hmget(fields)
        })
    }

    fn touch(&self, key: PublicKey, now: i64) -> BoxFuture<'_, Result<UserRecord, StoreError>> {
        self.queue.touch(key, now)
    }

    fn claim_alias(
        &self,
        key: PublicKey,
        alias: String,
        max_aliases: usize,
    ) -> BoxFuture<'_, Result<Claim, StoreError>> {
        self.queue.claim(key, alias, max_aliases)
    }

    fn assign_alias(
        &self,
        alias: String,
        to: Option<PublicKey>,
    ) -> BoxFuture<'static, Result<Option<PublicKey>, StoreError>> {
        self.queue.assign(alias, to)
    }

    fn set_banned(&self, key: PublicKey, on: bool) -> BoxFuture<'static, Result<(), StoreError>> {
        self.queue.ban(key, on)
    }

    fn resolve_alias(&self, alias: String) -> BoxFuture<'_, Result<Option<PublicKey>, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let hex: Option<Vec<u8>> = ::redis::cmd("HGET")
                .arg(aliases_key())
                .arg(alias_key(&alias))
                .query_async(&mut conn)
                .await
                .map_err(eng)?;
            hex.map(|h| parse_key(&h)).transpose()
        })
    }

    fn users(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(PublicKey, UserRecord)>, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let keys: Vec<Vec<u8>> = ::redis::cmd("ZRANGE")
                .arg(users_key())
                .arg("+inf")
                .arg("-inf")
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn)
                .await
                .map_err(eng)?;
            let mut found = self.records(keys).await?;
            // Already in the set's order; sorting again (stable, so ties keep that order) covers
            // a login between the two reads.
            found.sort_by_key(|(_, u)| std::cmp::Reverse(u.last_seen));
            Ok(found)
        })
    }

    fn search(
        &self,
        needle: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(PublicKey, UserRecord)>, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            // Aliases are kept lower-cased, so a lower-cased needle ignores ASCII case.
            let pattern = contains_pattern(&needle.to_ascii_lowercase());
            // A scan may return an entry more than once; the set keeps each user once, the
            // list keeps the order found (the final order is by last_seen anyway).
            let mut seen = std::collections::HashSet::new();
            let mut keys: Vec<Vec<u8>> = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, pairs): (u64, Vec<Vec<u8>>) = ::redis::cmd("HSCAN")
                    .arg(aliases_key())
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut conn)
                    .await
                    .map_err(eng)?;
                // Field, value, field, value: the values are the keys.
                for hex in pairs.into_iter().skip(1).step_by(2) {
                    if seen.insert(hex.clone()) {
                        keys.push(hex);
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            let keys = self.discoverable_of(keys).await?;
            let mut found = self.records(keys).await?;
            found.sort_by_key(|(k, u)| (std::cmp::Reverse(u.last_seen), *k));
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
        self.queue.enqueue(to, entries, limits)
    }

    fn enqueue_fitting(
        &self,
        to: PublicKey,
        entries: Vec<Entry>,
        limits: QueueLimits,
    ) -> BoxFuture<'static, Result<Vec<Placed>, StoreError>> {
        self.queue.enqueue_fitting(to, entries, limits)
    }

    fn counts(
        &self,
        to: PublicKey,
        sender: PublicKey,
    ) -> BoxFuture<'_, Result<Counts, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let (hex, s) = (to.to_hex(), sender.to_hex());
            let mut pipe = ::redis::pipe();
            pipe.cmd("ZCARD")
                .arg(format!("{}{hex}", queue_prefix()))
                .cmd("GET")
                .arg(format!("{}{hex}", bytes_prefix()))
                .cmd("HMGET")
                .arg(format!("{}{hex}", shares_prefix()))
                .arg(format!("m:{s}"))
                .arg(format!("b:{s}"))
                .cmd("GET")
                .arg(store_bytes_key());
            type Reply = (u64, Option<u64>, (Option<u64>, Option<u64>), Option<u64>);
            let (messages, bytes, (share_messages, share_bytes), store_bytes): Reply =
                pipe.query_async(&mut conn).await.map_err(eng)?;
            Ok(Counts {
                messages,
                bytes: bytes.unwrap_or(0),
                share_messages: share_messages.unwrap_or(0),
                share_bytes: share_bytes.unwrap_or(0),
                store_bytes: store_bytes.unwrap_or(0),
            })
        })
    }

    fn peek(
        &self,
        to: PublicKey,
        from: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            let members: Vec<Vec<u8>> = ::redis::cmd("ZRANGE")
                .arg(format!("{}{}", queue_prefix(), to.to_hex()))
                .arg(from)
                .arg("+inf")
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(max)
                .query_async(&mut conn)
                .await
                .map_err(eng)?;
            members.iter().map(|m| stored_of(m)).collect()
        })
    }

    fn remove(&self, to: PublicKey, seqs: Vec<u64>) -> BoxFuture<'static, Result<(), StoreError>> {
        self.queue.remove(to, seqs)
    }

    fn expire(&self, before: i64) -> BoxFuture<'static, Result<Vec<Expired>, StoreError>> {
        self.queue.expire(before)
    }

    fn tie(
        &self,
        owner: PublicKey,
        other: PublicKey,
        change: TieChange,
    ) -> BoxFuture<'static, Result<TieChanged, StoreError>> {
        self.queue.tie(owner, other, change)
    }

    fn tie_of(
        &self,
        owner: PublicKey,
        other: PublicKey,
    ) -> BoxFuture<'_, Result<Option<Tie>, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let found: Option<Vec<u8>> = ::redis::cmd("HGET")
                .arg(ties_key(&owner))
                .arg(other.to_hex())
                .query_async(&mut conn)
                .await
                .map_err(eng)?;
            tie_of(&found.unwrap_or_default())
        })
    }

    fn ties(&self, owner: PublicKey) -> BoxFuture<'_, Result<Vec<(PublicKey, Tie)>, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = ::redis::cmd("HGETALL")
                .arg(ties_key(&owner))
                .query_async(&mut conn)
                .await
                .map_err(eng)?;
            let mut out = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                let tie = tie_of(&v)?.ok_or_else(|| StoreError::Engine("an empty tie".into()))?;
                out.push((parse_key(&k)?, tie));
            }
            Ok(out)
        })
    }

    fn set_discoverable(
        &self,
        key: PublicKey,
        on: bool,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.queue.discoverable(key, on)
    }

    fn stats(&self) -> StoreStats {
        self.stats.stats()
    }

    fn room(&self, id: RoomId) -> BoxFuture<'_, Result<Option<Room>, StoreError>> {
        Box::pin(rooms::room(self.conn.clone(), id))
    }

    fn change_room(
        &self,
        id: RoomId,
        change: RoomChange,
    ) -> BoxFuture<'static, Result<RoomOutcome, StoreError>> {
        Box::pin(super::rooms::change(self.clone(), id, change))
    }

    fn rooms_of(&self, key: PublicKey) -> BoxFuture<'_, Result<u32, StoreError>> {
        Box::pin(rooms::rooms_of(self.conn.clone(), key))
    }

    fn publish_key_packages(
        &self,
        owner: PublicKey,
        packages: Vec<Vec<u8>>,
        max: u32,
    ) -> BoxFuture<'static, Result<u32, StoreError>> {
        self.queue.publish(owner, packages, max)
    }

    fn claim_key_package(
        &self,
        owner: PublicKey,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, StoreError>> {
        self.queue.claim_package(owner)
    }

    fn key_packages(&self, owner: PublicKey) -> BoxFuture<'_, Result<u32, StoreError>> {
        Box::pin(rooms::key_packages(self.conn.clone(), owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_take_glob_characters_literally() {
        assert_eq!(contains_pattern("al"), "*al*");
        assert_eq!(contains_pattern("a*b?[c]\\"), "*a\\*b\\?\\[c\\]\\\\*");
        assert_eq!(contains_pattern(""), "**");
    }

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(redacted("redis://:pw@host:1/0"), "redis://***@host:1/0");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
