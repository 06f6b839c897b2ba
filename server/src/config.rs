//! Every limit and setting of the server, named and documented in one place.
//!
//! Each channel says what happens when it is full: the relay never blocks on a slow peer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::origin::WebOrigin;
use crate::rates::Rate;
use crate::tls::TlsFiles;

/// Where the server listens and keeps its data.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the raw TCP listener (FLEX with the `\xa4FLEX` header).
    pub tcp: SocketAddr,
    /// Address of the HTTP listener: `/ws`, the static browser client, `/healthz`, `/metrics`.
    pub http: SocketAddr,
    /// Directory for the server key and the embedded store; created if missing.
    pub data: PathBuf,
    /// Directory served at `/` (the browser client). Not served if it does not exist.
    pub static_dir: PathBuf,
    /// The name the server announces as its alias in the User datum it sends after the header.
    pub name: String,
    /// Where users, aliases and queues live.
    pub store: StoreChoice,
    /// The protocol limits.
    pub limits: Limits,
    /// TLS, the admin listener and the origins `/ws` admits.
    pub edge: EdgeConfig,
}

/// How the HTTP side faces the network. The default is what `flexim-server` runs without
/// flags: plain http and ws, `/metrics` on the HTTP listener for loopback peers only, and
/// `/ws` open to pages of the server's own origin (and to clients that send no `Origin`).
#[derive(Debug, Clone, Default)]
pub struct EdgeConfig {
    /// The certificate and key that make the HTTP listener serve https and wss. Without
    /// them it serves plain http and ws (behind a proxy that terminates TLS, say).
    pub tls: Option<TlsFiles>,
    /// A second, plain HTTP listener for operators. When set, `/metrics` is served there (to
    /// anyone who reaches it) and no longer on the HTTP listener; when not, the HTTP listener
    /// serves `/metrics` to loopback peers only, so that a public listener does not tell
    /// everyone how many users are online.
    pub admin: Option<SocketAddr>,
    /// Origins besides the server's own whose pages may open `/ws`. A browser names the page
    /// that opens a WebSocket in `Origin`; an upgrade whose `Origin` is neither the server's
    /// own (the scheme of this listener and the request's `Host`) nor one of these is refused
    /// with 403, so that another site's page cannot use a visitor's browser to talk to this
    /// server. Behind a proxy that terminates TLS, the public `https://` origin goes here.
    pub allowed_origins: Vec<WebOrigin>,
}

/// The storage engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// redb in the data directory: one node, no other service.
    Embedded,
    /// Redis at this URL (`redis://HOST:PORT[/DB]`): any number of nodes sharing it.
    Redis(String),
}

/// The protocol limits. Defaults are what `flexim-server` runs with; all are documented in
/// `docs/PROTOCOL.md` so clients can stay inside them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted datum body in bytes. A frame announcing more is answered with Status
    /// TOO_LARGE and skipped without being buffered. 48 KiB holds the largest sealed message
    /// (32 KiB of text) with room to spare.
    pub max_body: usize,
    /// How long a TCP or WebSocket client has to send the header before it is reset.
    pub header_timeout: Duration,
    /// How long an HTTP client has to finish the TLS handshake (with TLS on), and then to send
    /// each request's head: the first, and the next one on a kept-alive connection. Past it
    /// the connection is closed. Bounds what a client that connects and stays silent holds (a
    /// socket and a task); a WebSocket, once upgraded, is not affected.
    pub http_timeout: Duration,
    /// How long a connection may stay unauthenticated before it is closed. Bounds the resources
    /// a client that never authenticates can hold.
    pub auth_timeout: Duration,
    /// How long one write or flush to a client may take. A client that stops reading fills
    /// its socket's buffers, and the session's next write would wait for it forever, holding
    /// the session's memory and never seeing a kick; past this deadline the session ends as
    /// a broken connection (its unacknowledged messages go to the store, their senders told
    /// `8`), so a reader that stops reading is disconnected within this time once its buffers
    /// are full.
    pub write_timeout: Duration,
    /// TCP keepalive on FLEX connections: idle time before the first probe (and the interval
    /// between probes), so that a peer that vanished without a FIN or RST is found.
    pub tcp_keepalive: Duration,
    /// TCP_USER_TIMEOUT on FLEX connections (Linux): how long sent data may stay
    /// unacknowledged by the peer's TCP before the kernel drops the connection. Ends the
    /// connections of peers that vanished while data was in flight, which keepalive (idle
    /// connections only) does not cover.
    pub tcp_user_timeout: Duration,
    /// Frames waiting for one session's writer. When full, the session is a slow reader: a
    /// Message for it is stored for later delivery instead (nothing is lost), presence notices
    /// for it are dropped, and the session is disconnected so it can log in again and catch up.
    pub outbound_queue: usize,
    /// Bytes waiting for one session's writer, the same bound in bytes: a thousand large
    /// messages would otherwise pin tens of megabytes for a client that reads slowly. A frame
    /// that does not fit is handled as for a full `outbound_queue`.
    pub outbound_bytes: usize,
    /// Bytes waiting in all sessions' queues together. When reached, a frame for a session
    /// with more than a sixteenth of `outbound_bytes` waiting is handled as for a full queue
    /// (stored, the session disconnected with `-18`): the slowest readers are shed and the
    /// sessions that keep up are still written to.
    pub queued_bytes_budget: usize,
    /// Messages with an id that one session may hold unacknowledged. Beyond it the session
    /// counts as a slow reader: what it holds is stored, it is disconnected, and it gets the
    /// rest at its next login. Bounds the memory a client that never sends ACK can pin.
    pub max_unacked: usize,
    /// Bytes of those messages, for the same reason: the count alone lets a client that
    /// never acknowledges pin a thousand messages of 48 KiB each.
    pub max_unacked_bytes: usize,
    /// Answers one connection may have waiting for the store (Messages to offline users
    /// whose commit is still running). When reached, the connection's next datum is read
    /// only after the oldest answer was sent: the sender is slowed, nothing is dropped.
    pub max_pipelined: usize,
    /// Stored messages per offline recipient; beyond it the sender gets Status QUEUE_FULL.
    /// Messages a connection held unacknowledged when it ended count too: those that find no
    /// room are not stored, and their senders get Status NOT_KEPT (-24) instead of `8`.
    pub max_offline_messages: u64,
    /// Stored bytes per offline recipient; beyond it the sender gets Status QUEUE_FULL.
    pub max_offline_bytes: u64,
    /// Stored messages one sender may have waiting in one recipient's queue: its share. Without
    /// it one key (a throwaway one costs nothing) could fill a user's queue alone, and the
    /// user's friends would get QUEUE_FULL. Beyond it that sender gets Status SHARE_FULL (-21)
    /// and nothing is stored; other senders still have room. A quarter of
    /// `max_offline_messages` by default (`flexim-server` takes a quarter of whatever
    /// `--max-offline-messages` is); at or above the queue's limit it has no effect.
    pub max_offline_per_sender: u64,
    /// Stored bytes one sender may have waiting in one recipient's queue, as for
    /// `max_offline_per_sender`; a quarter of `max_offline_bytes` by default.
    pub max_offline_per_sender_bytes: u64,
    /// Bytes of stored messages in every queue together: the store's budget, so that the
    /// server refuses clearly before the disk fills (a full disk would fail every write,
    /// logins included). A Message that would pass it gets Status STORE_FULL (-22) and is not
    /// stored; messages to users who are online are still relayed, and room comes back as
    /// stored messages are delivered, acknowledged or expire. Counted as the queues count
    /// (each entry, its id and frame, and 41 bytes), not as the file's size, which is larger.
    /// Receipts kept for offline senders are not held back by it (they are small, and bounded
    /// by their recipient's queue), so the store may pass it by their size. `None`: no budget.
    pub max_store_bytes: Option<u64>,
    /// How long a stored message waits for its recipient before it is deleted unread; its
    /// sender (if the message had an id) and its recipient are told (Status 9). `None` keeps
    /// messages until they are delivered. Checked every tenth of it (at least every second,
    /// at most every hour).
    pub retention: Option<Duration>,
    /// Stored messages delivered per batch at login or on OFFLINES; each batch is removed from
    /// the store only after it was written to the connection.
    pub offline_batch: usize,
    /// Most users in a ROSTER answer (online users first, then the most recently seen); also
    /// bounded by what fits in one datum.
    pub roster_limit: usize,
    /// Most users in a SEARCH answer.
    pub search_limit: usize,
    /// Most aliases one key may register.
    pub max_aliases: usize,
    /// Largest WebSocket message accepted: the largest frame the framing can express (65535 +
    /// 3 bytes), so that a frame over `max_body` gets Status TOO_LARGE exactly as on TCP. A
    /// bigger message cannot be one frame; the socket is closed with code 1009.
    pub ws_max_message: usize,
    /// WebSocket write buffer per connection. tungstenite's default (128 KiB) is far too much
    /// memory for many idle connections; frames are small.
    pub ws_write_buffer: usize,
    /// WebSocket read buffer per connection, for the same reason; tungstenite allocates it up
    /// front, so it is most of an idle WebSocket's memory. Larger messages still arrive (the
    /// buffer grows for them).
    pub ws_read_buffer: usize,
    /// Connections (TCP and WebSocket together) the server keeps open at once. One more is
    /// told Status -19 (server-full) right after its header and closed; the connections
    /// already open are not affected. The default leaves half of this machine kind's 20,000
    /// open files for the store, the listeners, and refusing connections over the limit.
    pub max_connections: usize,
    /// Connections one address (an IPv4 address, an IPv6 /64) may keep open at once. One
    /// more is told Status -23 (address-full) after its header and closed. 0 turns it off
    /// (behind a proxy every client has the proxy's address: limit there instead).
    pub max_connections_per_address: usize,
    /// New connections per address and second, with bursts. Each connection may make one
    /// handshake, so this bounds the X25519 work one address can ask of the server. Over it,
    /// a connection is told Status -23 after its header and closed.
    pub connection_rate: Rate,
    /// Keys seen for the first time per address and second, with bursts: the first login of
    /// a key creates a user, so this bounds how fast one address can mint identities (to
    /// fill queues under many names, say). Over it, the AuthResponse is answered with Status
    /// -20 (rate-limited) and the connection closed; keys that logged in before are not
    /// counted.
    pub new_key_rate: Rate,
    /// Messages per key and second, with bursts. Over it the sender is slowed, not refused:
    /// the session reads its next datum only when the rate allows, so nothing is lost and a
    /// flood costs the server no more than this rate.
    pub message_rate: Rate,
    /// Commands per key and second (every command but ACK, which a receiver sends for each
    /// batch it reads, and AUTH), with bursts. Over it a command is answered with Status -20
    /// (rate-limited) and not carried out.
    pub command_rate: Rate,
    /// ROSTER and SEARCH per key and second, with bursts, besides `command_rate`: each
    /// answer can list `roster_limit` users, hundreds of times the request's size. Over it,
    /// Status -20.
    pub lookup_rate: Rate,
    /// Most messages a stranger (a key the recipient has not accepted) may put into one
    /// recipient's requests box before the recipient accepts it (docs/PROTOCOL.md §14). Counted
    /// from the first contact, not given back when they are read: a stranger gets this many
    /// messages in all until accepted. Over it, Status -25 and nothing is forwarded or stored.
    pub request_messages: u32,
    /// Most strangers one user's requests box holds at once; a new stranger beyond it gets
    /// Status -25 until the user answers (accepts, declines or blocks) one of them. With
    /// `request_messages` it bounds what strangers can put in front of one user.
    pub max_requests: u32,
    /// Most members of one room (docs/PROTOCOL.md §16.3). A commit that would add beyond it
    /// gets Status -28; it also keeps the Welcome, which carries the whole tree, within one
    /// datum.
    pub max_room_members: u32,
    /// Most rooms one user is a member of: CREATEROOM beyond it, or a commit adding a user
    /// who is in this many, gets Status -28. It bounds the room records one key can make the
    /// server keep.
    pub max_rooms: u32,
    /// Most KeyPackages the server keeps for one user (the oldest; later ones are ignored):
    /// they are public and small, but a user must not be able to fill the store with them.
    pub key_packages: u32,
    /// How long a shutdown waits for the connections to send their goodbye (Status -17) and
    /// close before the server stops regardless.
    pub shutdown_grace: Duration,
}

/// The limits that change while the server runs ([`crate::Server::reloader`], SIGHUP for
/// `flexim-server`): those checked where they are enforced, at each use, so that a new value
/// holds from the next message, claim or commit on. The others (addresses, buffers, timeouts,
/// rates) are fixed when connections or tasks are made, and change with a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    /// [`Limits::max_offline_messages`].
    pub max_offline_messages: u64,
    /// [`Limits::max_offline_bytes`].
    pub max_offline_bytes: u64,
    /// [`Limits::max_offline_per_sender`].
    pub max_offline_per_sender: u64,
    /// [`Limits::max_offline_per_sender_bytes`].
    pub max_offline_per_sender_bytes: u64,
    /// [`Limits::max_store_bytes`].
    pub max_store_bytes: Option<u64>,
    /// [`Limits::request_messages`].
    pub request_messages: u32,
    /// [`Limits::max_requests`].
    pub max_requests: u32,
    /// [`Limits::max_room_members`].
    pub max_room_members: u32,
    /// [`Limits::max_rooms`].
    pub max_rooms: u32,
    /// [`Limits::key_packages`].
    pub key_packages: u32,
}

impl Limits {
    /// The limits of these that can change while the server runs.
    pub fn live(&self) -> Live {
        Live {
            max_offline_messages: self.max_offline_messages,
            max_offline_bytes: self.max_offline_bytes,
            max_offline_per_sender: self.max_offline_per_sender,
            max_offline_per_sender_bytes: self.max_offline_per_sender_bytes,
            max_store_bytes: self.max_store_bytes,
            request_messages: self.request_messages,
            max_requests: self.max_requests,
            max_room_members: self.max_room_members,
            max_rooms: self.max_rooms,
            key_packages: self.key_packages,
        }
    }
}

impl Live {
    /// Each limit by its flag's name, as a number (no store budget is 0): for the log of a
    /// reload and for `admin stats`.
    pub fn named(&self) -> [(&'static str, u64); 10] {
        [
            ("max-offline-messages", self.max_offline_messages),
            ("max-offline-bytes", self.max_offline_bytes),
            ("max-offline-per-sender", self.max_offline_per_sender),
            (
                "max-offline-per-sender-bytes",
                self.max_offline_per_sender_bytes,
            ),
            ("max-store-bytes", self.max_store_bytes.unwrap_or(0)),
            ("request-messages", self.request_messages.into()),
            ("max-requests", self.max_requests.into()),
            ("max-room-members", self.max_room_members.into()),
            ("max-rooms", self.max_rooms.into()),
            ("key-packages", self.key_packages.into()),
        ]
    }

    /// What differs from `before`, as `flag: old -> new` (the flags' names), for the log.
    pub fn changes_from(&self, before: &Live) -> Vec<String> {
        before
            .named()
            .into_iter()
            .zip(self.named())
            .filter(|((_, old), (_, new))| old != new)
            .map(|((name, old), (_, new))| format!("{name}: {old} -> {new}"))
            .collect()
    }
}

/// The largest frame body the transports accept: any record the framing can express. A
/// record must be read whole even when the datum inside is over [`Limits::max_body`]: skipping
/// it would leave the two sides' nonces apart, so the datum is refused with TOO_LARGE after
/// opening, and the connection goes on. The cost is a read buffer of up to 64 KiB for a
/// connection that sends one.
pub const RECORD_BODY: usize = flexim_protocol::MAX_BODY;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 48 * 1024,
            header_timeout: Duration::from_secs(5),
            http_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            tcp_keepalive: Duration::from_secs(60),
            tcp_user_timeout: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(30),
            outbound_queue: 1024,
            outbound_bytes: 2 * 1024 * 1024,
            queued_bytes_budget: 512 * 1024 * 1024,
            max_unacked: 1024,
            max_unacked_bytes: 8 * 1024 * 1024,
            max_pipelined: 1024,
            max_offline_messages: 10_000,
            max_offline_bytes: 64 * 1024 * 1024,
            max_offline_per_sender: 2_500,
            max_offline_per_sender_bytes: 16 * 1024 * 1024,
            max_store_bytes: Some(2 * 1024 * 1024 * 1024),
            retention: Some(Duration::from_secs(30 * 86_400)),
            offline_batch: 256,
            roster_limit: 500,
            search_limit: 50,
            max_aliases: 8,
            ws_max_message: flexim_protocol::MAX_BODY + flexim_protocol::frame::PREFIX_LEN,
            ws_write_buffer: 8 * 1024,
            ws_read_buffer: 2 * 1024,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            connection_rate: Rate::new(50.0, 500.0),
            new_key_rate: Rate::new(2.0, 200.0),
            message_rate: Rate::new(500.0, 2_000.0),
            command_rate: Rate::new(50.0, 200.0),
            lookup_rate: Rate::new(2.0, 20.0),
            request_messages: 5,
            max_requests: 100,
            max_room_members: 100,
            max_rooms: 100,
            key_packages: 64,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}
