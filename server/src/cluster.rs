//! Several server nodes on one Redis: which node holds which key, and the signals nodes send
//! each other. Messages themselves never travel here: a message for a user on another node
//! goes into the shared queue in Redis (durably), and only a wake-up crosses over.
//!
//! In Redis (all under `flexim:`):
//! - `node:<id>`: a heartbeat each node refreshes every second with a 3-second expiry; a node
//!   whose heartbeat is gone is dead, and the keys it held are free.
//! - `online` (hash): key hex -> id of the node holding the key's active session.
//! - channels `to:<id>` (signals for one node) and `presence` (for every node).
//!
//! The relay uses this through [`Cluster`]; it still knows no sockets.

use std::sync::Arc;
use std::time::Duration;

use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use futures_util::StreamExt;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

/// How often a node refreshes its heartbeat.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a heartbeat lives: a node silent for this long is dead and its keys are free.
pub(crate) const HEARTBEAT_TTL_SECS: u64 = 3;
/// Longest wait for one Redis command; a Redis that does not answer counts as down.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis refused or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {COMMAND_TIMEOUT:?}")]
    Timeout,
}

/// What one node tells another (or all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Messages for this key were stored; its active session (on the receiving node) should
    /// look at the store.
    Wake(PublicKey),
    /// Another node took this key over (GHOST): close the session here.
    Kick(PublicKey),
    /// The operator ended every session of this key (it blocked the key or changed its
    /// aliases): close them here too, with this Status code (`relay/operator.rs` words it).
    End(PublicKey, i8),
    /// A frame for the key's active session on the receiving node: a receipt, which is best
    /// effort and so need not go through the store when its recipient is online.
    Frame(PublicKey, Vec<u8>),
    /// The key came online or went offline on some node.
    Presence {
        /// The user.
        key: PublicKey,
        /// True when it came online.
        online: bool,
        /// The node it happened on (nodes ignore their own notices).
        node: String,
        /// Who is told: the users the key accepted (docs/PROTOCOL.md §14.4).
        to: Vec<PublicKey>,
    },
    /// `owner` no longer accepts `other` (it declined or blocked it): nodes forget the
    /// acceptance they cached.
    Untie(PublicKey, PublicKey),
    /// The subscription to Redis was re-established after a failure: signals may have been
    /// missed meanwhile, so every local session should look at the store again.
    Resync,
    /// A room's members or epoch changed on some node: nodes forget the record they cached,
    /// and read it again from the store at the room's next message.
    Room(RoomId),
}

impl Signal {
    fn encode(&self) -> String {
        match self {
            Signal::Wake(k) => format!("wake {}", k.to_hex()),
            Signal::Kick(k) => format!("kick {}", k.to_hex()),
            Signal::End(k, code) => format!("end {} {code}", k.to_hex()),
            Signal::Frame(k, f) => {
                let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
                format!("frame {} {hex}", k.to_hex())
            }
            Signal::Presence {
                key,
                online,
                node,
                to,
            } => {
                let to: Vec<String> = to.iter().map(PublicKey::to_hex).collect();
                let to = if to.is_empty() {
                    "-".into()
                } else {
                    to.join(",")
                };
                format!(
                    "presence {} {} {node} {to}",
                    key.to_hex(),
                    u8::from(*online)
                )
            }
            Signal::Untie(owner, other) => format!("untie {} {}", owner.to_hex(), other.to_hex()),
            Signal::Resync => "resync".to_string(),
            Signal::Room(id) => format!("room {id}"),
        }
    }

    fn decode(text: &str) -> Option<Signal> {
        let mut parts = text.split(' ');
        let kind = parts.next()?;
        if kind == "resync" {
            return Some(Signal::Resync);
        }
        if kind == "room" {
            return RoomId::parse(parts.next()?).map(Signal::Room);
        }
        let key = PublicKey::from_hex(parts.next()?)?;
        match kind {
            "wake" => Some(Signal::Wake(key)),
            "kick" => Some(Signal::Kick(key)),
            "end" => Some(Signal::End(key, parts.next()?.parse().ok()?)),
            "frame" => {
                let hex = parts.next()?;
                if hex.len() % 2 != 0 {
                    return None;
                }
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                Some(Signal::Frame(key, bytes))
            }
            "presence" => {
                let online = parts.next()? == "1";
                let node = parts.next()?.to_string();
                let to = match parts.next()? {
                    "-" => Vec::new(),
                    list => list
                        .split(',')
                        .map(PublicKey::from_hex)
                        .collect::<Option<Vec<_>>>()?,
                };
                Some(Signal::Presence {
                    key,
                    online,
                    node,
                    to,
                })
            }
            "untie" => Some(Signal::Untie(key, PublicKey::from_hex(parts.next()?)?)),
            _ => None,
        }
    }
}

/// The outcome of claiming a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// This node holds the key now.
    Here,
    /// A live node holds it.
    Elsewhere(String),
}

/// Claims `KEYS[1]` (the online hash) field `ARGV[1]` (key hex) for node `ARGV[2]`, unless a
/// live node (one whose heartbeat `ARGV[3]..id` exists) other than this one holds it, or
/// `ARGV[4]` is "1" (GHOST: take it regardless). Returns the holder's id when refused.
const CLAIM: &str = r#"
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder and holder ~= ARGV[2] and ARGV[4] ~= '1' and redis.call('EXISTS', ARGV[3] .. holder) == 1 then
  return holder
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return false
"#;

/// For each key hex in `ARGV[2..]`, the node holding it in `KEYS[1]` if that node's heartbeat
/// (`ARGV[1]..id`) exists, else false: one round trip for any number of keys.
const HOLDERS: &str = r#"
local out = {}
for i = 2, #ARGV do
  local h = redis.call('HGET', KEYS[1], ARGV[i])
  if h and redis.call('EXISTS', ARGV[1] .. h) == 1 then out[i - 1] = h else out[i - 1] = false end
end
return out
"#;

/// Releases field `ARGV[1]` of `KEYS[1]` if node `ARGV[2]` holds it.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#;

/// This node's handle on the cluster.
pub(crate) struct Cluster {
    /// This node's id: random, so a restarted node is a new node and never mistaken for
    /// its dead predecessor.
    node: String,
    /// Commands; reconnects by itself after Redis restarts.
    conn: ConnectionManager,
    /// The claim script, loaded once.
    claim: redis::Script,
    /// The release script.
    release: redis::Script,
    /// The live-holders script.
    holders: redis::Script,
}

const ONLINE: &str = "flexim:online";
const NODE_PREFIX: &str = "flexim:node:";
const PRESENCE: &str = "flexim:presence";

fn to_channel(node: &str) -> String {
    format!("flexim:to:{node}")
}

async fn timed<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ClusterError::Timeout),
    }
}

impl Cluster {
    /// Connects to Redis at `url`, starts the heartbeat and the subscription, and returns
    /// the handle and the signals for this node (a bounded channel: when the relay falls
    /// behind, the oldest signals are not dropped but the subscription waits).
    pub(crate) async fn connect(
        url: &str,
    ) -> Result<(Arc<Cluster>, mpsc::Receiver<Signal>), ClusterError> {
        let client = redis::Client::open(url)?;
        let conn = timed(client.get_connection_manager()).await?;
        let mut id = [0u8; 8];
        crate::clock::random(&mut id);
        let node: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let cluster = Arc::new(Cluster {
            node,
            conn,
            claim: redis::Script::new(CLAIM),
            release: redis::Script::new(RELEASE),
            holders: redis::Script::new(HOLDERS),
        });
        cluster.beat().await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(heartbeat(cluster.clone()));
        tokio::spawn(listen(client, cluster.node.clone(), tx));
        Ok((cluster, rx))
    }

    /// This node's id.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    async fn beat(&self) -> Result<(), ClusterError> {
        let mut c = self.conn.clone();
        let key = format!("{NODE_PREFIX}{}", self.node);
        timed(c.set_ex::<_, _, ()>(key, 1, HEARTBEAT_TTL_SECS)).await
    }

    /// Makes this node the holder of `key`, unless a live node holds it (with `force`,
    /// regardless: GHOST).
    pub(crate) async fn claim(
        &self,
        key: &PublicKey,
        force: bool,
    ) -> Result<Claimed, ClusterError> {
        let mut c = self.conn.clone();
        let mut call = self.claim.key(ONLINE);
        call.arg(key.to_hex())
            .arg(&self.node)
            .arg(NODE_PREFIX)
            .arg(if force { "1" } else { "0" });
        let holder: Option<String> = timed(call.invoke_async(&mut c)).await?;
        Ok(match holder {
            Some(node) => Claimed::Elsewhere(node),
            None => Claimed::Here,
        })
    }

    /// Gives `key` up if this node holds it.
    pub(crate) async fn release(&self, key: &PublicKey) -> Result<(), ClusterError> {
        let mut c = self.conn.clone();
        let mut call = self.release.key(ONLINE);
        call.arg(key.to_hex()).arg(&self.node);
        timed(call.invoke_async::<i64>(&mut c)).await.map(|_| ())
    }

    /// The live nodes holding each key (`None`: offline, or its node is dead).
    pub(crate) async fn holders(
        &self,
        keys: &[PublicKey],
    ) -> Result<Vec<Option<String>>, ClusterError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let mut call = self.holders.key(ONLINE);
        call.arg(NODE_PREFIX);
        for k in keys {
            call.arg(k.to_hex());
        }
        timed(call.invoke_async(&mut c)).await
    }

    /// Sends `signal` to node `node`, or to every node for presence. Best effort: a lost
    /// signal delays delivery until the next login or resync, it never loses a message.
    pub(crate) fn send(self: &Arc<Self>, node: Option<&str>, signal: Signal) {
        let channel = match node {
            Some(n) => to_channel(n),
            None => PRESENCE.to_string(),
        };
        let me = self.clone();
        tokio::spawn(async move {
            let mut c = me.conn.clone();
            if let Err(e) = timed(c.publish::<_, _, i64>(channel, signal.encode())).await {
                tracing::debug!(error = %e, "a cluster signal was not sent");
            }
        });
    }
}

/// Refreshes the heartbeat for as long as the node runs.
async fn heartbeat(cluster: Arc<Cluster>) {
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        if let Err(e) = cluster.beat().await {
            tracing::warn!(error = %e, "cluster heartbeat failed; retrying");
        }
    }
}

/// Receives this node's signals and presence, resubscribing after every failure.
async fn listen(client: redis::Client, node: String, tx: mpsc::Sender<Signal>) {
    let mut first = true;
    loop {
        match subscribe(&client, &node).await {
            Ok(mut pubsub) => {
                if !first {
                    tracing::info!("cluster subscription restored");
                    if tx.send(Signal::Resync).await.is_err() {
                        return;
                    }
                }
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    match Signal::decode(&text) {
                        Some(Signal::Presence { node: from, .. }) if from == node => {}
                        Some(signal) => {
                            if tx.send(signal).await.is_err() {
                                return;
                            }
                        }
                        None => tracing::debug!("ignored a malformed cluster signal"),
                    }
                }
                tracing::warn!("cluster subscription lost; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to the cluster; retrying"),
        }
        first = false;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn subscribe(client: &redis::Client, node: &str) -> Result<redis::aio::PubSub, ClusterError> {
    let mut pubsub = timed(client.get_async_pubsub()).await?;
    timed(pubsub.subscribe(to_channel(node))).await?;
    timed(pubsub.subscribe(PRESENCE)).await?;
    Ok(pubsub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_as_text() {
        let key = PublicKey([7; 32]);
        for s in [
            Signal::Wake(key),
            Signal::Kick(key),
            Signal::End(key, -31),
            Signal::Frame(key, vec![6, 0, 1, 0x80, 0xff]),
            Signal::Presence {
                key,
                online: true,
                node: "ab12".into(),
                to: vec![PublicKey([1; 32]), PublicKey([2; 32])],
            },
            Signal::Presence {
                key,
                online: false,
                node: "ab12".into(),
                to: vec![],
            },
            Signal::Untie(key, PublicKey([3; 32])),
            Signal::Resync,
            Signal::Room(RoomId([0xab; 16])),
        ] {
            assert_eq!(Signal::decode(&s.encode()), Some(s));
        }
        assert_eq!(Signal::decode("wake nothex"), None);
        assert_eq!(Signal::decode("bogus"), None);
        assert_eq!(Signal::decode("room 12"), None);
    }
}
