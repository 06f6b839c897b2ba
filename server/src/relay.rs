//! The relay core: who is online, where a message goes, presence, and the durable queue.
//!
//! The core knows no sockets and no transports. A connection — TCP or WebSocket, the session
//! driver does not care — registers here after AUTH and gets back a queue of frames to write
//! and a kick signal. Everything the core does to a session goes through those two.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flexim_protocol::datum::{Roster, Status, User};
use flexim_protocol::handshake::{HandshakeError, PendingChallenge};
use flexim_protocol::keys::validate_alias;
use flexim_protocol::{Datum, PublicKey, SecretKey, status};
use tokio::sync::{Notify, mpsc};

use crate::config::Limits;
use crate::store::{Claim, QueueLimits, Store, StoreError, Stored, UserRecord};

/// The current Unix time in seconds. The core reads the clock here and nowhere else, and
/// passes the time into the protocol crate, which has no clock.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Fills a buffer from the operating system's secure random source.
pub fn random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random source is available");
}

/// A one-shot "close this session" signal with the reason to tell the client.
#[derive(Default)]
pub struct Kick {
    /// Wakes the session's driver; a permit is stored if it is not waiting yet.
    notify: Notify,
    /// The Status to send before closing; the first reason wins.
    reason: Mutex<Option<Status>>,
}

impl Kick {
    /// Asks the session to close after telling the client `code` and `text`.
    pub fn fire(&self, code: i8, text: &str) {
        let mut reason = self.reason.lock().expect("kick lock");
        if reason.is_none() {
            *reason = Some(Status::new(code, text));
        }
        self.notify.notify_one();
    }

    /// Waits for the signal and returns the reason.
    pub async fn fired(&self) -> Status {
        self.notify.notified().await;
        self.reason
            .lock()
            .expect("kick lock")
            .clone()
            .unwrap_or_else(|| Status::new(status::TAKEN_OVER, "closed by the server"))
    }
}

/// What the core holds for one live session.
#[derive(Clone)]
struct Peer {
    /// Identifies the session among the key's sessions.
    id: u64,
    /// Frames for the session's writer; bounded by `Limits::outbound_queue`, never awaited.
    tx: mpsc::Sender<Bytes>,
    /// Closes the session (slow reader, GHOST).
    kick: Arc<Kick>,
    /// Wakes the session to deliver from the store: a message for it was stored after it
    /// looked (it was routed while the session was still logging in).
    stored: Arc<Notify>,
}

/// All live sessions of one key. Only the primary receives messages; the others may send.
struct KeySessions {
    /// The session messages are delivered to.
    primary: Peer,
    /// Later sessions of the same key, oldest first; one becomes primary by GHOST or when the
    /// primary leaves.
    others: Vec<Peer>,
}

/// Counters for `/metrics` and the benchmarks. Relaxed atomics: they are statistics.
#[derive(Default)]
pub struct Metrics {
    /// Connections accepted since start (both transports).
    pub connections_total: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Successful AUTHs.
    pub logins: AtomicU64,
    /// Failed AUTHs.
    pub auth_failures: AtomicU64,
    /// Messages handed to an online recipient.
    pub relayed: AtomicU64,
    /// Messages written to the durable queue.
    pub stored: AtomicU64,
    /// Stored messages delivered.
    pub delivered_offline: AtomicU64,
    /// Datums answered with an error Status.
    pub errors: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A session registered with the core after AUTH.
pub struct Login {
    /// The session's id among its key's sessions.
    pub id: u64,
    /// Frames the core wants written to this session.
    pub rx: mpsc::Receiver<Bytes>,
    /// Fired when the core wants this session closed.
    pub kick: Arc<Kick>,
    /// Fired when a message for this session was stored while it was online; it should
    /// deliver from the store again.
    pub stored: Arc<Notify>,
    /// Whether messages for the key come to this session (false if an older one exists).
    pub primary: bool,
    /// The user as stored before this login (its `last_seen` is the previous visit).
    pub before: UserRecord,
}

/// The shared relay state. One per server, shared by every connection of every transport.
pub struct Relay {
    /// The limits every session enforces.
    pub limits: Limits,
    /// Durable users, aliases and offline queues.
    store: Arc<dyn Store>,
    /// The server's X25519 key: it seals AUTH challenges.
    server_key: SecretKey,
    /// The framed User datum sent after every header, built once.
    hello: Bytes,
    /// Live sessions by key. A std mutex: it is held only for map operations, never across
    /// an await.
    sessions: Mutex<HashMap<PublicKey, KeySessions>>,
    /// Source of session ids.
    next_id: AtomicU64,
    /// Statistics.
    pub metrics: Metrics,
}

/// Frames a datum the server built itself. Server datums are far below 64 KiB by
/// construction (rosters are trimmed to fit), so a failure is a bug.
pub fn frame(datum: impl Into<Datum>) -> Bytes {
    Bytes::from(
        datum
            .into()
            .to_frame()
            .expect("server datums fit in a frame"),
    )
}

/// A Status frame.
pub fn status_frame(code: i8, text: impl Into<String>) -> Bytes {
    frame(Status::new(code, text))
}

impl Relay {
    /// A relay with the given key, name, store and limits.
    pub fn new(server_key: SecretKey, name: &str, store: Arc<dyn Store>, limits: Limits) -> Self {
        let hello = frame(User {
            aliases: vec![name.to_string()],
            key: server_key.public_key(),
            last_seen: 0,
            online: None,
        });
        Relay {
            limits,
            store,
            server_key,
            hello,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            metrics: Metrics::default(),
        }
    }

    /// The server's User datum, framed.
    pub fn hello(&self) -> Bytes {
        self.hello.clone()
    }

    /// The server's public key.
    pub fn public_key(&self) -> PublicKey {
        self.server_key.public_key()
    }

    /// Issues an AUTH challenge to `client`, telling it when it was last seen.
    pub async fn challenge(
        &self,
        client: PublicKey,
    ) -> Result<(PendingChallenge, Bytes), HandshakeError> {
        let last_seen = match self.store.user(client).await {
            Ok(Some(u)) => u.last_seen,
            _ => 0,
        };
        let (pending, auth) =
            PendingChallenge::issue(&self.server_key, client, now(), last_seen, &mut random)?;
        Ok((pending, frame(auth)))
    }

    /// Registers an authenticated session for `key`. The first session of a key is the
    /// primary; a later one waits for GHOST. Tells everyone else when the key comes online.
    pub async fn login(&self, key: PublicKey) -> Result<Login, StoreError> {
        let before = self.store.touch(key, now()).await?;
        let (tx, rx) = mpsc::channel(self.limits.outbound_queue);
        let kick = Arc::new(Kick::default());
        let stored = Arc::new(Notify::new());
        let peer = Peer {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            kick: kick.clone(),
            stored: stored.clone(),
        };
        let id = peer.id;
        let primary = {
            let mut sessions = self.sessions.lock().expect("sessions lock");
            match sessions.get_mut(&key) {
                Some(s) => {
                    s.others.push(peer);
                    false
                }
                None => {
                    sessions.insert(
                        key,
                        KeySessions {
                            primary: peer,
                            others: Vec::new(),
                        },
                    );
                    true
                }
            }
        };
        Metrics::inc(&self.metrics.logins);
        if primary {
            self.broadcast_presence(key, status::PRESENCE_ONLINE);
        }
        Ok(Login {
            id,
            rx,
            kick,
            stored,
            primary,
            before,
        })
    }

    /// Removes a session. When the primary leaves, the oldest other session takes over; when
    /// the last one leaves, the key goes offline.
    pub async fn logout(&self, key: PublicKey, id: u64) {
        let gone = {
            let mut sessions = self.sessions.lock().expect("sessions lock");
            let Some(s) = sessions.get_mut(&key) else {
                return;
            };
            if s.primary.id == id {
                if s.others.is_empty() {
                    sessions.remove(&key);
                    true
                } else {
                    s.primary = s.others.remove(0);
                    false
                }
            } else {
                s.others.retain(|p| p.id != id);
                false
            }
        };
        if gone {
            if let Err(e) = self.store.touch(key, now()).await {
                tracing::warn!(error = %e, "could not record last_seen at logout");
            }
            self.broadcast_presence(key, status::PRESENCE_OFFLINE);
        }
    }

    /// Makes session `id` the primary for `key`; the old primary is told and closed.
    /// Returns false if the session is not registered (it was closed meanwhile).
    pub fn ghost(&self, key: PublicKey, id: u64) -> bool {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let Some(s) = sessions.get_mut(&key) else {
            return false;
        };
        if s.primary.id == id {
            return true;
        }
        let Some(pos) = s.others.iter().position(|p| p.id == id) else {
            return false;
        };
        let new = s.others.remove(pos);
        let old = std::mem::replace(&mut s.primary, new);
        old.kick.fire(
            status::TAKEN_OVER,
            "a newer session of this key took over (GHOST)",
        );
        true
    }

    /// Whether `key` has a live session.
    pub fn is_online(&self, key: &PublicKey) -> bool {
        self.sessions
            .lock()
            .expect("sessions lock")
            .contains_key(key)
    }

    /// Tells every live session that `key` came online or went offline. Presence is
    /// best-effort: a session whose queue is full misses the notice rather than slowing the
    /// relay (ROSTER gives the truth on demand).
    fn broadcast_presence(&self, key: PublicKey, code: i8) {
        let notice = status_frame(code, key.to_hex());
        let sessions = self.sessions.lock().expect("sessions lock");
        for (k, s) in sessions.iter() {
            if *k == key {
                continue;
            }
            for peer in std::iter::once(&s.primary).chain(s.others.iter()) {
                let _ = peer.tx.try_send(notice.clone());
            }
        }
    }

    /// Resolves a `to` field: a hex key, or a registered alias.
    pub async fn resolve(&self, who: &str) -> Result<Option<PublicKey>, StoreError> {
        if let Some(k) = PublicKey::from_hex(who) {
            return Ok(Some(k));
        }
        if validate_alias(who).is_err() {
            return Ok(None);
        }
        self.store.resolve_alias(who.to_string()).await
    }

    /// Delivers a Message frame to `to`: straight to its primary session if it has one,
    /// otherwise into the durable queue. Returns the Status for the sender.
    pub async fn route(&self, to: PublicKey, frame: Bytes) -> Status {
        let target = self
            .sessions
            .lock()
            .expect("sessions lock")
            .get(&to)
            .map(|s| s.primary.clone());
        let mut kicked = false;
        if let Some(peer) = target {
            match peer.tx.try_send(frame.clone()) {
                Ok(()) => {
                    Metrics::inc(&self.metrics.relayed);
                    return Status::new(status::RELAYED, format!("relayed to {to}"));
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // The recipient does not read fast enough. Keep the message safe in the
                    // store and drop the session; it catches up at its next login.
                    peer.kick.fire(
                        status::TOO_SLOW,
                        "you are not reading fast enough; reconnect to get the rest",
                    );
                    kicked = true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        let limits = QueueLimits {
            messages: self.limits.max_offline_messages,
            bytes: self.limits.max_offline_bytes,
        };
        match self.store.enqueue(to, frame, limits).await {
            Ok(()) => {
                Metrics::inc(&self.metrics.stored);
                // The recipient may have logged in while this message was being written, after
                // its session had looked at the store: wake it, or the message would wait for
                // its next login. (A session kicked for reading too slowly gets it then.)
                if !kicked {
                    self.wake_primary(to);
                }
                Status::new(
                    status::STORED,
                    format!("stored for {to}: delivered when they log in"),
                )
            }
            Err(StoreError::QueueFull { messages, bytes }) => Status::new(
                status::QUEUE_FULL,
                format!("{to} has {messages} messages ({bytes} bytes) waiting; not stored"),
            ),
            Err(e) => {
                tracing::error!(error = %e, "could not store a message");
                Status::new(
                    status::INTERNAL,
                    "storage failure: the message was not stored",
                )
            }
        }
    }

    /// Tells the primary session of `to`, if any, that the store has messages for it.
    pub fn wake_primary(&self, to: PublicKey) {
        let sessions = self.sessions.lock().expect("sessions lock");
        if let Some(s) = sessions.get(&to) {
            s.primary.stored.notify_one();
        }
    }

    /// The stored messages for `key`, oldest first, at most one batch.
    pub async fn peek_offline(&self, key: PublicKey) -> Result<Vec<Stored>, StoreError> {
        self.store.peek(key, self.limits.offline_batch).await
    }

    /// Forgets stored messages that were written to their recipient.
    pub async fn remove_offline(&self, key: PublicKey, seqs: Vec<u64>) -> Result<(), StoreError> {
        let n = seqs.len() as u64;
        self.store.remove(key, seqs).await?;
        self.metrics
            .delivered_offline
            .fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Claims an alias for `key`.
    pub async fn register(&self, key: PublicKey, alias: &str) -> Status {
        if let Err(e) = validate_alias(alias) {
            return Status::new(
                status::BAD_ARGUMENT,
                format!("invalid alias {alias:?}: {e}"),
            );
        }
        match self
            .store
            .claim_alias(key, alias.to_string(), self.limits.max_aliases)
            .await
        {
            Ok(Claim::Registered) | Ok(Claim::AlreadyYours) => {
                Status::new(status::OK, format!("registered {alias}"))
            }
            Ok(Claim::Taken) => Status::new(
                status::ALIAS_TAKEN,
                format!("the alias {alias} belongs to someone else"),
            ),
            Ok(Claim::TooMany) => Status::new(
                status::BAD_ARGUMENT,
                format!("a key may have at most {} aliases", self.limits.max_aliases),
            ),
            Err(e) => {
                tracing::error!(error = %e, "could not register an alias");
                Status::new(status::INTERNAL, "storage failure: alias not registered")
            }
        }
    }

    /// The stored aliases of `key`.
    pub async fn aliases(&self, key: PublicKey) -> Vec<String> {
        match self.store.user(key).await {
            Ok(Some(u)) => u.aliases,
            _ => Vec::new(),
        }
    }

    fn user_datum(&self, key: PublicKey, record: UserRecord) -> User {
        User {
            aliases: record.aliases,
            online: Some(self.is_online(&key)),
            key,
            last_seen: record.last_seen,
        }
    }

    /// GETUSER: one user by key or alias.
    pub async fn get_user(&self, who: &str) -> Result<Datum, Status> {
        let not_found = || Status::new(status::NO_SUCH_USER, format!("no user {who:?}"));
        let key = self
            .resolve(who)
            .await
            .map_err(|_| Status::new(status::INTERNAL, "storage failure"))?
            .ok_or_else(not_found)?;
        match self.store.user(key).await {
            Ok(Some(record)) => Ok(Datum::User(self.user_datum(key, record))),
            Ok(None) => Err(not_found()),
            Err(_) => Err(Status::new(status::INTERNAL, "storage failure")),
        }
    }

    /// ROSTER (all known users) or SEARCH (users whose alias contains `needle`): online users
    /// first, then the most recently seen, trimmed to fit in one datum.
    pub async fn roster(&self, needle: Option<&str>) -> Result<Datum, Status> {
        let found = match needle {
            None => self.store.users(self.limits.roster_limit).await,
            Some(n) => {
                self.store
                    .search(n.to_string(), self.limits.search_limit)
                    .await
            }
        }
        .map_err(|_| Status::new(status::INTERNAL, "storage failure"))?;
        let mut users: Vec<User> = found
            .into_iter()
            .map(|(k, r)| self.user_datum(k, r))
            .collect();
        users.sort_by_key(|u| std::cmp::Reverse((u.online, u.last_seen)));
        let mut roster = Roster { users };
        while Datum::Roster(roster.clone()).encode_body().len() > flexim_protocol::MAX_BODY {
            let keep = roster.users.len() * 9 / 10;
            roster.users.truncate(keep);
        }
        Ok(Datum::Roster(roster))
    }
}

/// Whether `from` names the sender: its key in hex (any case) or one of its aliases (any case).
pub fn names_sender(from: &str, key: &PublicKey, aliases: &[String]) -> bool {
    PublicKey::from_hex(from).is_some_and(|k| k == *key)
        || aliases.iter().any(|a| a.eq_ignore_ascii_case(from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_must_name_the_sender() {
        let key = PublicKey([0xab; 32]);
        let aliases = vec!["Alice".to_string()];
        assert!(names_sender(&key.to_hex(), &key, &aliases));
        assert!(names_sender(&key.to_hex().to_uppercase(), &key, &aliases));
        assert!(names_sender("alice", &key, &aliases));
        assert!(!names_sender("bob", &key, &aliases));
        assert!(!names_sender(&PublicKey([1; 32]).to_hex(), &key, &aliases));
    }
}
