//! Idle connections and the handshake rate: how much server memory one authenticated, idle
//! connection costs (TCP and WebSocket separately), whether one server process holds about
//! 19,000 of them with messages still flowing, and how many AUTH handshakes per second the
//! server completes.
//!
//! The connections here are lean on purpose: a raw socket (TCP, or WebSocket over a TCP socket
//! this tool connects itself), the real AUTH handshake of `flexim_protocol::handshake` (X25519,
//! HKDF-SHA256, XChaCha20-Poly1305) and nothing else, so that 19,000 of them fit in a load
//! generator that shares two cores with the server. Each socket binds to one of several
//! 127.0.0.x source addresses before it connects, because one source address has only about
//! 28,000 ephemeral ports towards one server port. A process may hold only 20,000 open files on
//! this machine, so `--procs K` spreads the connections over K processes of this tool.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command as Process, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use flexim_protocol::datum::{Command, Message};
use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use flexim_protocol::frame::{self, PREFIX_LEN};
use flexim_protocol::handshake::{self, NONCE_LEN};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, HEADER, MAX_BODY, PublicKey, SecretKey};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::server::Target;
use crate::stats::{Latency, rate};

/// How long one connection may take to connect and authenticate before it counts as failed
/// (the server itself gives up on an unauthenticated connection after 30 seconds).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(30);
/// How long the server is left alone after a phase before its memory is read, so that
/// transient buffers of the handshakes are freed first.
const SETTLE: Duration = Duration::from_secs(1);
/// Longest wait, after the chatter stops, for the last messages, answers and receipts.
const CHATTER_GRACE: Duration = Duration::from_secs(10);
/// Open files a process needs besides its sockets (standard streams, the runtime, the
/// store's files): a share of connections must leave this many free.
const SPARE_FILES: u64 = 100;
/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on every Linux this runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// Which server to measure (shared by `idle` and `handshakes`).
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Measure the server already running at this TCP address instead of starting one.
    #[arg(long)]
    server: Option<String>,
    /// With --server: its WebSocket URL (ws://HOST:PORT/ws).
    #[arg(long, requires = "server")]
    ws_url: Option<String>,
    /// With --server: its process id, to read its memory, CPU time and open files in /proc.
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// The flexim-server binary to start (default: the one next to this tool).
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
    /// Where the started server keeps its data (a fresh directory inside, removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    data: std::path::PathBuf,
}

/// How connections are made (shared by `idle` and `handshakes`).
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// Source addresses: client sockets bind to 127.0.0.2 .. 127.0.0.(1+N) in turn, each good
    /// for about 28,000 connections to one server port; 0 binds nothing (a remote server).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=250))]
    sources: u8,
    /// Connections connecting and authenticating at once (per process).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Options of `idle`.
#[derive(clap::Args, Debug)]
pub struct IdleArgs {
    /// Authenticated raw TCP connections to open (first phase).
    #[arg(long, default_value_t = 1000)]
    tcp: usize,
    /// Authenticated WebSocket connections to open (second phase, while the TCP ones stay).
    #[arg(long, default_value_t = 0)]
    ws: usize,
    /// How connections are made.
    #[command(flatten)]
    net: NetArgs,
    /// Seconds to keep every connection open (and the chatter flowing) after both phases.
    #[arg(long, default_value_t = 5)]
    hold: u64,
    /// Sender/receiver pairs among the connections that exchange messages during the hold
    /// (a TCP sender to a WebSocket receiver when both kinds are open).
    #[arg(long, default_value_t = 0)]
    chatter: usize,
    /// Messages per second each chatter pair sends.
    #[arg(long, default_value_t = 1.0)]
    chatter_rate: f64,
    /// Load generator processes sharing the connections; one process holds at most about
    /// 19,900 sockets here (20,000 open files per process).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// The server.
    #[command(flatten)]
    target: TargetArgs,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print the figures as one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Internal: run as one of the `--procs` child processes with this share (JSON).
    #[arg(long, hide = true)]
    child: Option<String>,
}

/// Options of `handshakes`.
#[derive(clap::Args, Debug)]
pub struct HandshakeArgs {
    /// Handshakes to make, each on a fresh connection closed right after.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Over WebSocket instead of raw TCP.
    #[arg(long)]
    ws: bool,
    /// How connections are made.
    #[command(flatten)]
    net: NetArgs,
    /// The server.
    #[command(flatten)]
    target: TargetArgs,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print the figures as one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

// ---------------------------------------------------------------------------------------------
// /proc readings

/// The memory of one process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Resident set size (`VmRSS`): every resident page, file-backed ones included.
    pub vm_rss_kib: u64,
    /// Resident anonymous memory (`RssAnon`): the heap and the stacks, what connections cost.
    pub rss_anon_kib: u64,
}

/// Reads `VmRSS` and `RssAnon` from the text of `/proc/<pid>/status`.
fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some(Memory {
        vm_rss_kib: field("VmRSS")?,
        rss_anon_kib: field("RssAnon")?,
    })
}

/// The soft limit on open files from the text of `/proc/<pid>/limits`.
fn parse_open_files_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// User plus system CPU time in clock ticks from the text of `/proc/<pid>/stat`. The command
/// name in parentheses may hold spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name come state (field 3), ..., utime (field 14) and stime (field 15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Kernel memory of all TCP sockets (`mem`, in pages) from the text of `/proc/net/sockstat`.
fn parse_sockstat_tcp_pages(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// A process this tool can look at in `/proc` (the server, or this tool itself).
#[derive(Debug, Clone, Copy)]
struct Proc(Option<u32>);

impl Proc {
    fn path(&self, what: &str) -> String {
        match self.0 {
            Some(pid) => format!("/proc/{pid}/{what}"),
            None => format!("/proc/self/{what}"),
        }
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        let path = self.path("status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_status(&text).ok_or_else(|| anyhow!("no VmRSS/RssAnon in {path}"))
    }

    fn cpu_secs(&self) -> f64 {
        std::fs::read_to_string(self.path("stat"))
            .ok()
            .and_then(|t| parse_cpu_ticks(&t))
            .map_or(0.0, |t| t as f64 / TICKS_PER_SEC)
    }

    fn open_files(&self) -> usize {
        std::fs::read_dir(self.path("fd"))
            .ok()
            .map_or(0, |d| d.count())
    }

    fn open_files_limit(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.path("limits")).ok()?;
        parse_open_files_limit(&text)
    }
}

/// Kernel memory of all TCP sockets on this machine, in KiB (0 when unknown). Socket buffers
/// live in the kernel, not in the server's RSS, so this is reported beside it.
fn kernel_tcp_kib() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|t| parse_sockstat_tcp_pages(&t))
        .map_or(0, |pages| pages * 4)
}

// ---------------------------------------------------------------------------------------------
// Lean connections

/// The two transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Transport {
    /// FLEX over raw TCP (docs/PROTOCOL.md section 2.2).
    Tcp,
    /// FLEX over WebSocket at `/ws` (section 2.3).
    Ws,
}

/// Where the server listens, resolved.
#[derive(Debug, Clone)]
struct Endpoints {
    /// The FLEX-over-TCP listener.
    tcp: SocketAddr,
    /// The HTTP listener's address and the WebSocket URL on it, if known.
    ws: Option<(SocketAddr, String)>,
}

impl Endpoints {
    async fn resolve(tcp: &str, ws: Option<&str>) -> anyhow::Result<Endpoints> {
        async fn v4(hostport: &str) -> anyhow::Result<SocketAddr> {
            tokio::net::lookup_host(hostport)
                .await
                .with_context(|| format!("resolving {hostport}"))?
                .find(SocketAddr::is_ipv4)
                .ok_or_else(|| anyhow!("{hostport} has no IPv4 address"))
        }
        let ws = match ws {
            Some(url) => {
                let rest = url
                    .strip_prefix("ws://")
                    .ok_or_else(|| anyhow!("only ws:// URLs are supported, not {url}"))?;
                let hostport = rest.split('/').next().unwrap_or(rest);
                Some((v4(hostport).await?, url.to_string()))
            }
            None => None,
        };
        Ok(Endpoints {
            tcp: v4(tcp).await?,
            ws,
        })
    }
}

/// One connection after its header, either transport.
enum Conn {
    /// Raw TCP, with the bytes read but not yet framed.
    Tcp {
        /// The socket.
        stream: TcpStream,
        /// Bytes read but not yet framed.
        buf: Vec<u8>,
    },
    /// WebSocket: one frame per binary message.
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// Fills a buffer with secure random bytes (keys and nonces).
fn random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random source is available");
}

/// The current Unix time in seconds.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The source address for the `n`-th connection, or none with `sources == 0`.
fn source(n: usize, sources: u8) -> Option<Ipv4Addr> {
    (sources > 0).then(|| Ipv4Addr::new(127, 0, 0, 2 + (n % sources as usize) as u8))
}

impl Conn {
    /// Connects from `source` (if any) and sends the header.
    async fn open(
        transport: Transport,
        ep: &Endpoints,
        source: Option<Ipv4Addr>,
    ) -> anyhow::Result<Conn> {
        let (addr, url) = match transport {
            Transport::Tcp => (ep.tcp, None),
            Transport::Ws => {
                let (a, u) = ep
                    .ws
                    .as_ref()
                    .ok_or_else(|| anyhow!("the server's WebSocket URL is unknown"))?;
                (*a, Some(u.as_str()))
            }
        };
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip.into(), 0))
                .with_context(|| format!("binding to {ip}"))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        match url {
            None => {
                let mut stream = stream;
                stream.write_all(&HEADER).await?;
                Ok(Conn::Tcp {
                    stream,
                    buf: Vec::new(),
                })
            }
            Some(url) => {
                // Small buffers: the messages are small, and the defaults (128 KiB each) would
                // make the load generator, not the server, the memory hog.
                let config = WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(0);
                let (mut ws, _) =
                    tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
                ws.send(WsMessage::Binary(HEADER.to_vec().into())).await?;
                Ok(Conn::Ws(Box::new(ws)))
            }
        }
    }

    /// Sends one frame.
    async fn send(&mut self, frame: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Conn::Tcp { stream, .. } => stream.write_all(&frame).await?,
            Conn::Ws(ws) => ws.send(WsMessage::Binary(frame.into())).await?,
        }
        Ok(())
    }

    /// The next whole frame; `None` when the server closed the connection. Cancel-safe: bytes
    /// already read stay in the buffer.
    async fn recv(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Conn::Tcp { stream, buf } => loop {
                if let Some(info) = frame::check(buf, MAX_BODY)? {
                    return Ok(Some(buf.drain(..info.total()).collect()));
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
                if stream.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
            },
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(WsMessage::Binary(b))) => return Ok(Some(b.to_vec())),
                    Some(Ok(WsMessage::Text(_))) => bail!("the server sent a text message"),
                    Some(Ok(_)) => {}
                }
            },
        }
    }

    /// Reads and throws away whatever arrives (presence notices); false once the server has
    /// closed the connection. Cheaper than framing, for the thousands of idle connections.
    async fn discard(&mut self) -> bool {
        match self {
            Conn::Tcp { stream, buf } => {
                buf.clear();
                if buf.capacity() < 2048 {
                    buf.reserve(2048);
                }
                matches!(stream.read_buf(buf).await, Ok(n) if n > 0)
            }
            Conn::Ws(ws) => !matches!(ws.next().await, None | Some(Err(_))),
        }
    }

    /// The next frame as a datum.
    async fn recv_datum(&mut self) -> anyhow::Result<Datum> {
        let frame = self
            .recv()
            .await?
            .ok_or_else(|| anyhow!("the server closed the connection"))?;
        Ok(Datum::decode(frame[0], &frame[PREFIX_LEN..])?)
    }
}

/// A client key with its public half computed once, outside any timed part.
#[derive(Clone)]
struct Key {
    /// The secret key.
    secret: SecretKey,
    /// Its public key.
    public: PublicKey,
}

impl Key {
    fn generate() -> Key {
        let mut bytes = [0u8; 32];
        random(&mut bytes);
        let secret = SecretKey::from_bytes(bytes);
        let public = secret.public_key();
        Key { secret, public }
    }
}

/// The AUTH handshake of docs/PROTOCOL.md section 6 on a connection whose header is sent:
/// the server's User, AUTH, the challenge opened and answered, our own User back. The client
/// side does only what the protocol needs (one X25519 agreement and the two seals).
async fn authenticate(conn: &mut Conn, key: &Key) -> anyhow::Result<()> {
    let server = match conn.recv_datum().await? {
        Datum::User(u) => u.key,
        other => bail!("expected the server's User, got {}", other.kind().name()),
    };
    let auth = Command {
        cmd: cmd::AUTH.into(),
        payload: vec![key.public.to_hex()],
    };
    conn.send(Datum::Command(auth).to_frame()?).await?;
    let challenge = match conn.recv_datum().await? {
        Datum::Auth(a) => a,
        Datum::Status(s) => bail!("AUTH refused: {} ({})", s.payload, s.status),
        other => bail!("expected Auth, got {}", other.kind().name()),
    };
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce);
    let response = handshake::answer(&key.secret, &server, &challenge, nonce)?;
    conn.send(Datum::AuthResponse(response).to_frame()?).await?;
    match conn.recv_datum().await? {
        Datum::User(me) if me.key == key.public => Ok(()),
        Datum::Status(s) => bail!("authentication refused: {} ({})", s.payload, s.status),
        other => bail!("expected our User, got {}", other.kind().name()),
    }
}

/// Connects and authenticates one connection within [`HANDSHAKE_DEADLINE`].
async fn connect_authenticated(
    transport: Transport,
    ep: &Endpoints,
    source: Option<Ipv4Addr>,
    key: &Key,
) -> anyhow::Result<Conn> {
    let attempt = async {
        let mut conn = Conn::open(transport, ep, source).await?;
        authenticate(&mut conn, key).await?;
        Ok(conn)
    };
    tokio::time::timeout(HANDSHAKE_DEADLINE, attempt)
        .await
        .map_err(|_| anyhow!("no handshake within {HANDSHAKE_DEADLINE:?}"))?
}

// ---------------------------------------------------------------------------------------------
// Held connections and the chatter

/// Where a worker's connections are in the run; every connection task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Opening and idle: connections only read (and throw away presence notices).
    Idle,
    /// The chatter pairs send.
    Chatter,
    /// The senders stop; the last messages, answers and receipts arrive.
    Drain,
    /// Every connection closes.
    Close,
}

/// One chatter pair seen from one end.
struct Pair {
    /// This end's key.
    me: PublicKey,
    /// The other end's key.
    peer: PublicKey,
    /// The key both ends derive for their messages.
    key: ConversationKey,
    /// The pair's number in its worker, for message ids.
    index: usize,
}

/// What a connection does while held.
enum Role {
    /// Nothing but reading.
    Idle,
    /// Sends sealed messages with ids to its peer at the chatter rate.
    Sender(Box<Pair>),
    /// Opens what arrives, checks it, acknowledges it.
    Receiver(Box<Pair>),
}

/// The chatter's counts, shared by the connection tasks of one worker.
#[derive(Default)]
struct Counters {
    /// Messages sent.
    sent: AtomicU64,
    /// Messages answered as relayed or stored (3, 2 or 8).
    answered: AtomicU64,
    /// Messages answered with an error.
    refused: AtomicU64,
    /// Distinct messages received.
    received: AtomicU64,
    /// Messages received again.
    duplicated: AtomicU64,
    /// Messages that did not open or did not say when they were sent.
    unreadable: AtomicU64,
    /// "delivered" receipts (7) the senders got.
    receipts: AtomicU64,
    /// Connections the server closed before the end.
    closed_early: AtomicU64,
}

impl Counters {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether everything sent has arrived, been answered and been receipted.
    fn settled(&self) -> bool {
        let sent = Self::get(&self.sent);
        Self::get(&self.received) >= sent
            && Self::get(&self.answered) + Self::get(&self.refused) >= sent
            && Self::get(&self.receipts) >= Self::get(&self.received)
    }
}

/// What every connection task of a worker shares.
struct Shared {
    /// The chatter's counts.
    counters: Counters,
    /// The worker's clock: messages carry their send time as microseconds since it.
    epoch: Instant,
    /// The worker's number, for message ids.
    worker: usize,
    /// Time between two messages of one pair.
    period: Duration,
}

/// Builds one sealed chatter message with an id; its text is its send time.
fn chatter_frame(pair: &Pair, shared: &Shared, n: u64) -> anyhow::Result<Vec<u8>> {
    let date = unix_now();
    let text = shared.epoch.elapsed().as_micros().to_string();
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce);
    let env = Envelope {
        sender: &pair.me,
        recipient: &pair.peer,
        date,
        flags: &[],
    };
    let msg = e2e::seal(&pair.key, &env, &text, nonce)?;
    let m = Message {
        to: pair.peer.to_hex(),
        from: pair.me.to_hex(),
        flags: Vec::new(),
        date,
        msg,
        id: Some(format!("w{}p{}n{n}", shared.worker, pair.index)),
    };
    Ok(Datum::Message(m).to_frame()?)
}

/// What arrived on a held connection.
enum Got {
    /// Bytes an idle connection read and threw away.
    Alive,
    /// A whole frame.
    Frame(Vec<u8>),
    /// The server closed the connection.
    Gone,
}

/// Waits for input: an idle connection only throws it away, a chatter one frames it.
async fn next_in(conn: &mut Conn, idle: bool) -> Got {
    if idle {
        if conn.discard().await {
            Got::Alive
        } else {
            Got::Gone
        }
    } else {
        match conn.recv().await {
            Ok(Some(f)) => Got::Frame(f),
            _ => Got::Gone,
        }
    }
}

/// Holds one authenticated connection until the stage says close, doing its role; returns
/// the send-to-receive latencies a receiver saw, in milliseconds.
async fn hold(
    mut conn: Conn,
    role: Role,
    mut stage: watch::Receiver<Stage>,
    shared: Arc<Shared>,
) -> Vec<f32> {
    let c = &shared.counters;
    let mut latencies = Vec::new();
    let mut seen = HashSet::new();
    let mut tick = tokio::time::interval(shared.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut now = *stage.borrow_and_update();
    let mut n = 0u64;
    loop {
        let sending = now == Stage::Chatter && matches!(role, Role::Sender(_));
        tokio::select! {
            changed = stage.changed() => {
                now = if changed.is_ok() { *stage.borrow_and_update() } else { Stage::Close };
                if now == Stage::Close {
                    break;
                }
            }
            _ = tick.tick(), if sending => {
                let Role::Sender(pair) = &role else { unreachable!("only senders tick") };
                // The drain may have begun since this loop last looked: send nothing then.
                if *stage.borrow() != Stage::Chatter {
                    continue;
                }
                // Counted before it is written, so the drain (which waits until everything
                // counted has arrived) can never see the count before this message.
                Counters::inc(&c.sent);
                let sent = match chatter_frame(pair, &shared, n) {
                    Ok(f) => conn.send(f).await.is_ok(),
                    Err(_) => false,
                };
                if !sent {
                    Counters::inc(&c.closed_early);
                    break;
                }
                n += 1;
            }
            got = next_in(&mut conn, matches!(role, Role::Idle)) => {
                let frame = match got {
                    Got::Alive => continue,
                    Got::Frame(f) => f,
                    Got::Gone => {
                        Counters::inc(&c.closed_early);
                        break;
                    }
                };
                let Ok(datum) = Datum::decode(frame[0], &frame[PREFIX_LEN..]) else {
                    Counters::inc(&c.unreadable);
                    continue;
                };
                match (&role, datum) {
                    // A Status about messages (one receipt may name several, in `ids`).
                    (Role::Sender(_), Datum::Status(s)) if s.about().next().is_some() => {
                        let n = s.about().count() as u64;
                        match s.status {
                            status::RELAYED | status::STORED | status::STORED_LATER => {
                                c.answered.fetch_add(n, Ordering::Relaxed);
                            }
                            status::DELIVERED => {
                                c.receipts.fetch_add(n, Ordering::Relaxed);
                            }
                            code if status::is_error(code) => Counters::inc(&c.refused),
                            _ => {}
                        }
                    }
                    (Role::Receiver(pair), Datum::Message(m)) => {
                        let env = Envelope {
                            sender: &pair.peer,
                            recipient: &pair.me,
                            date: m.date,
                            flags: &m.flags,
                        };
                        let sent_us = e2e::open(&pair.key, &env, &m.msg)
                            .ok()
                            .and_then(|t| t.parse::<u64>().ok());
                        match sent_us {
                            Some(us) => latencies.push(
                                shared
                                    .epoch
                                    .elapsed()
                                    .saturating_sub(Duration::from_micros(us))
                                    .as_secs_f32()
                                    * 1000.0,
                            ),
                            None => Counters::inc(&c.unreadable),
                        }
                        let id = m.id.unwrap_or_default();
                        if seen.insert(id.clone()) {
                            Counters::inc(&c.received);
                        } else {
                            Counters::inc(&c.duplicated);
                        }
                        let ack = Command::new(cmd::ACK, &[&id]);
                        let acked = match Datum::Command(ack).to_frame() {
                            Ok(f) => conn.send(f).await.is_ok(),
                            Err(_) => false,
                        };
                        if !acked {
                            Counters::inc(&c.closed_early);
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    latencies
}

// ---------------------------------------------------------------------------------------------
// Workers: one per process, each opening its share

/// What one worker (this process, or one of the `--procs` children) opens and does.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Share {
    /// The worker's number.
    index: usize,
    /// Raw TCP connections.
    tcp: usize,
    /// WebSocket connections.
    ws: usize,
    /// Chatter pairs among them.
    chatter: usize,
    /// Messages per second per pair.
    chatter_rate: f64,
    /// The server's TCP address.
    tcp_addr: String,
    /// The server's WebSocket URL.
    ws_url: Option<String>,
    /// Source addresses to spread over.
    sources: u8,
    /// Handshakes at once.
    concurrency: usize,
}

/// What a worker tells the coordinator.
#[derive(Debug, Serialize, Deserialize)]
enum Event {
    /// A phase's connections are open (or failed).
    Opened(Opened),
    /// Every connection is closed; the chatter's figures.
    Done(Chatter),
    /// The worker gave up.
    Failed(String),
}

/// One worker's result of one opening phase.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Opened {
    /// Connections authenticated.
    opened: usize,
    /// Connections that failed to connect or authenticate.
    failed: usize,
    /// The first failure's reason.
    first_error: Option<String>,
    /// Connect-to-authenticated time of each opened connection, in milliseconds.
    latencies_ms: Vec<f32>,
    /// Seconds from the first connect to the last handshake (key generation excluded).
    seconds: f64,
}

/// The chatter's figures (one worker's, or all of them added up).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Chatter {
    /// Pairs.
    pub pairs: usize,
    /// Messages sent.
    pub sent: u64,
    /// Messages answered "relayed" or "stored".
    pub answered: u64,
    /// Messages refused (an error Status).
    pub refused: u64,
    /// Distinct messages received (each opened and checked).
    pub received: u64,
    /// Messages sent and never received.
    pub lost: u64,
    /// Copies received again.
    pub duplicated: u64,
    /// Messages that did not open.
    pub unreadable: u64,
    /// "delivered" receipts the senders got.
    pub receipts: u64,
    /// Connections the server closed before the end (any, not only chatter ones).
    pub closed_early: u64,
    /// Send-to-receive latency (computed by the coordinator from all samples).
    #[serde(skip_deserializing)]
    pub latency: Latency,
    /// The samples behind `latency` (only between a worker and the coordinator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    latencies_ms: Vec<f32>,
}

/// One planned connection: its transport, key, source address and role.
struct Slot {
    /// Which transport.
    transport: Transport,
    /// Its key.
    key: Key,
    /// Where it connects from.
    source: Option<Ipv4Addr>,
    /// What it does while held.
    role: Role,
}

/// Plans a share's connections: keys, source addresses and chatter roles. A pair is a TCP
/// sender and a WebSocket receiver when both kinds are open, so the chatter crosses transports.
fn plan(share: &Share) -> anyhow::Result<Vec<Slot>> {
    let total = share.tcp + share.ws;
    if share.chatter * 2 > total {
        bail!(
            "{} chatter pairs need {} connections, a process has {total}",
            share.chatter,
            share.chatter * 2
        );
    }
    let mut slots: Vec<Slot> = (0..total)
        .map(|i| Slot {
            transport: if i < share.tcp {
                Transport::Tcp
            } else {
                Transport::Ws
            },
            key: Key::generate(),
            source: source(i + share.index, share.sources),
            role: Role::Idle,
        })
        .collect();
    let crossing = share.tcp >= share.chatter && share.ws >= share.chatter;
    for p in 0..share.chatter {
        let (s, r) = if crossing {
            (p, share.tcp + p)
        } else {
            (2 * p, 2 * p + 1)
        };
        let (sk, rk) = (slots[s].key.clone(), slots[r].key.clone());
        let key = ConversationKey::derive(&sk.secret, &rk.public)?;
        slots[s].role = Role::Sender(Box::new(Pair {
            me: sk.public,
            peer: rk.public,
            key: key.clone(),
            index: p,
        }));
        slots[r].role = Role::Receiver(Box::new(Pair {
            me: rk.public,
            peer: sk.public,
            key,
            index: p,
        }));
    }
    Ok(slots)
}

/// Opens `slots` with `concurrency` handshakes at once; each connection is handed to its own
/// task as soon as it is authenticated, so it starts reading at once (the presence notices of
/// every later login arrive on it).
async fn open_phase(
    slots: Vec<Slot>,
    ep: &Endpoints,
    concurrency: usize,
    stage: &watch::Receiver<Stage>,
    shared: &Arc<Shared>,
) -> (Opened, Vec<JoinHandle<Vec<f32>>>) {
    let started = Instant::now();
    let queue = Arc::new(Mutex::new(VecDeque::from(slots)));
    let openers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (queue, ep, stage, shared) =
                (queue.clone(), ep.clone(), stage.clone(), shared.clone());
            tokio::spawn(async move {
                let mut opened = Opened::default();
                let mut held = Vec::new();
                loop {
                    let Some(slot) = queue.lock().expect("queue lock").pop_front() else {
                        break;
                    };
                    let t = Instant::now();
                    match connect_authenticated(slot.transport, &ep, slot.source, &slot.key).await {
                        Ok(conn) => {
                            opened.opened += 1;
                            opened.latencies_ms.push(t.elapsed().as_secs_f32() * 1000.0);
                            let task = hold(conn, slot.role, stage.clone(), shared.clone());
                            held.push(tokio::spawn(task));
                        }
                        Err(e) => {
                            opened.failed += 1;
                            opened.first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                (opened, held)
            })
        })
        .collect();
    let mut total = Opened::default();
    let mut held = Vec::new();
    for o in openers {
        match o.await {
            Ok((o, h)) => {
                total.opened += o.opened;
                total.failed += o.failed;
                if total.first_error.is_none() {
                    total.first_error = o.first_error;
                }
                total.latencies_ms.extend(o.latencies_ms);
                held.extend(h);
            }
            Err(e) => {
                total.failed += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    (total, held)
}

/// One worker: opens the TCP share, waits for the coordinator, opens the WebSocket share,
/// waits, runs the chatter until told to stop, lets the last messages arrive, closes all.
/// `next` returning `None` (the coordinator is gone) closes everything.
async fn worker(
    share: Share,
    events: mpsc::Sender<Event>,
    mut next: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let ep = Endpoints::resolve(&share.tcp_addr, share.ws_url.as_deref()).await?;
    let mut slots = plan(&share)?;
    let ws_slots = slots.split_off(share.tcp);
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        epoch: Instant::now(),
        worker: share.index,
        period: Duration::from_secs_f64(1.0 / share.chatter_rate.max(0.001)),
    });
    let (stage_tx, stage) = watch::channel(Stage::Idle);
    let mut held = Vec::new();
    let mut go_on = true;
    for phase in [slots, ws_slots] {
        let (opened, h) = open_phase(phase, &ep, share.concurrency, &stage, &shared).await;
        held.extend(h);
        events.send(Event::Opened(opened)).await?;
        go_on = next.recv().await.is_some();
        if !go_on {
            break;
        }
    }
    if go_on {
        let _ = stage_tx.send(Stage::Chatter);
        go_on = next.recv().await.is_some();
    }
    let _ = stage_tx.send(Stage::Drain);
    let c = &shared.counters;
    let deadline = Instant::now() + CHATTER_GRACE;
    while go_on && !c.settled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stage_tx.send(Stage::Close);
    let mut latencies_ms = Vec::new();
    for h in held {
        latencies_ms.extend(h.await.unwrap_or_default());
    }
    let get = Counters::get;
    let chatter = Chatter {
        pairs: share.chatter,
        sent: get(&c.sent),
        answered: get(&c.answered),
        refused: get(&c.refused),
        received: get(&c.received),
        lost: get(&c.sent).saturating_sub(get(&c.received)),
        duplicated: get(&c.duplicated),
        unreadable: get(&c.unreadable),
        receipts: get(&c.receipts),
        closed_early: get(&c.closed_early),
        latency: Latency::default(),
        latencies_ms,
    };
    events.send(Event::Done(chatter)).await?;
    Ok(())
}

/// Runs a worker and turns its error into a `Failed` event.
async fn run_worker(share: Share, events: mpsc::Sender<Event>, next: mpsc::Receiver<()>) {
    if let Err(e) = worker(share, events.clone(), next).await {
        let _ = events.send(Event::Failed(format!("{e:#}"))).await;
    }
}

/// The coordinator's end of one worker.
struct WorkerHandle {
    /// What the worker reports.
    events: mpsc::Receiver<Event>,
    /// How the coordinator says "next".
    control: Control,
}

/// A worker in this process or in a child process.
enum Control {
    /// A task here.
    Local(mpsc::Sender<()>),
    /// A child process: one line on its stdin means "next".
    Child {
        /// The child's stdin.
        stdin: ChildStdin,
        /// The child, waited for (or killed) at the end.
        process: Child,
    },
}

impl WorkerHandle {
    fn local(share: Share) -> WorkerHandle {
        let (ev_tx, events) = mpsc::channel(4);
        let (next_tx, next_rx) = mpsc::channel(4);
        tokio::spawn(run_worker(share, ev_tx, next_rx));
        WorkerHandle {
            events,
            control: Control::Local(next_tx),
        }
    }

    /// Starts a child process of this tool with `share`; its events come as JSON lines.
    fn child(share: &Share) -> anyhow::Result<WorkerHandle> {
        let exe = std::env::current_exe()?;
        let mut process = Process::new(&exe)
            .args(["idle", "--child", &serde_json::to_string(share)?])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = process.stdout.take().expect("stdout is piped");
        let stdin = process.stdin.take().expect("stdin is piped");
        let (ev_tx, events) = mpsc::channel(4);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|e| Event::Failed(format!("a child said {line:?}: {e}")));
                if ev_tx.blocking_send(event).is_err() {
                    break;
                }
            }
        });
        Ok(WorkerHandle {
            events,
            control: Control::Child { stdin, process },
        })
    }

    async fn next(&mut self) {
        match &mut self.control {
            Control::Local(tx) => {
                let _ = tx.send(()).await;
            }
            Control::Child { stdin, .. } => {
                let _ = writeln!(stdin, "next").and_then(|()| stdin.flush());
            }
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Control::Child { process, .. } = &mut self.control {
            // A child that finished has exited; one that did not is stopped here.
            if !matches!(process.try_wait(), Ok(Some(_))) {
                let _ = process.kill();
            }
            let _ = process.wait();
        }
    }
}

/// The `--child` side: runs the worker, reading "next" lines on stdin and writing events as
/// JSON lines on stdout.
async fn child_main(share: &str) -> anyhow::Result<ExitCode> {
    let share: Share = serde_json::from_str(share).context("the --child share")?;
    let (ev_tx, mut events) = mpsc::channel(4);
    let (next_tx, next_rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if line.is_err() || next_tx.blocking_send(()).is_err() {
                break;
            }
        }
    });
    let work = tokio::spawn(run_worker(share, ev_tx, next_rx));
    while let Some(event) = events.recv().await {
        println!("{}", serde_json::to_string(&event)?);
    }
    work.await?;
    Ok(ExitCode::SUCCESS)
}

/// Waits for one event from every worker, failing on a `Failed` one or after `timeout`.
async fn gather(workers: &mut [WorkerHandle], timeout: Duration) -> anyhow::Result<Vec<Event>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(workers.len());
    for w in workers.iter_mut() {
        match tokio::time::timeout_at(deadline, w.events.recv()).await {
            Ok(Some(Event::Failed(why))) => bail!("a load generator process failed: {why}"),
            Ok(Some(event)) => out.push(event),
            Ok(None) => bail!("a load generator process ended early"),
            Err(_) => bail!("no answer from the load generators within {timeout:?}"),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The idle measurement

/// One opening phase, all workers together.
#[derive(Debug, Default, Serialize)]
pub struct Phase {
    /// Connections asked for.
    pub asked: usize,
    /// Connections authenticated.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// The first failure's reason.
    pub first_error: Option<String>,
    /// Seconds from the first connect to the last authentication.
    pub seconds: f64,
    /// Connections authenticated per second during the phase.
    pub per_sec: f64,
    /// Connect-to-authenticated time.
    pub latency: Latency,
    /// The server's memory after the phase (and a second to settle).
    pub memory_after: Memory,
    /// Server memory per connection of this phase, VmRSS, in KiB.
    pub rss_kib_per_conn: f64,
    /// Server memory per connection of this phase, RssAnon, in KiB.
    pub anon_kib_per_conn: f64,
    /// Connections of this kind per GiB of server memory at that rate (VmRSS).
    pub conns_per_gib: f64,
    /// The kernel's TCP socket memory (whole machine, both ends) added in this phase, in KiB.
    pub kernel_tcp_kib_added: i64,
    /// The server's open files after the phase.
    pub server_open_files: usize,
}

/// The figures of `idle`.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    /// Load generator processes.
    pub procs: usize,
    /// Source addresses.
    pub sources: u8,
    /// Handshakes at once per process.
    pub concurrency: usize,
    /// The server's memory before any connection.
    pub memory_before: Memory,
    /// The raw TCP phase.
    pub tcp: Phase,
    /// The WebSocket phase.
    pub ws: Phase,
    /// Seconds everything was held open after both phases.
    pub hold_secs: f64,
    /// The server's memory at the end of the hold.
    pub memory_end: Memory,
    /// The server's open files at the end of the hold.
    pub server_open_files_end: usize,
    /// The server's open-files limit.
    pub server_open_files_limit: Option<u64>,
    /// The server's CPU use during the hold, as a share of one core.
    pub server_cpu_during_hold: f64,
    /// Messages flowing among the connections during the hold.
    pub chatter: Chatter,
}

impl IdleReport {
    /// Whether every connection opened and stayed, and no chatter message went astray.
    pub fn correct(&self) -> bool {
        let c = &self.chatter;
        self.tcp.failed == 0
            && self.ws.failed == 0
            && c.closed_early == 0
            && c.lost == 0
            && c.duplicated == 0
            && c.refused == 0
            && c.unreadable == 0
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let phase = |name: &str, p: &Phase| {
            if p.asked == 0 {
                return format!("{name}: none");
            }
            let error = p
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default();
            format!(
                "{name}: {} of {} authenticated in {:.1} s ({:.0}/s; handshake p50 {:.1} ms, p99 {:.1} ms), \
                 {} failed{error}\n  server memory: {:.2} KiB per connection (VmRSS), {:.2} KiB (RssAnon) \
                 -> {:.0} connections per GiB; kernel TCP memory {:+} KiB (whole machine); server open files {}",
                p.opened,
                p.asked,
                p.seconds,
                p.per_sec,
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.failed,
                p.rss_kib_per_conn,
                p.anon_kib_per_conn,
                p.conns_per_gib,
                p.kernel_tcp_kib_added,
                p.server_open_files,
            )
        };
        let c = &self.chatter;
        let limit = self
            .server_open_files_limit
            .map_or("unknown".to_string(), |l| l.to_string());
        format!(
            "idle: {} process(es), {} source addresses, {} handshakes at once per process\n\
             server before: VmRSS {} KiB, RssAnon {} KiB\n\
             {}\n{}\n\
             held {:.0} s: server VmRSS {} KiB, RssAnon {} KiB, open files {} (limit {limit}), CPU {:.1}% of a core\n\
             chatter: {} pairs, {} sent, {} answered, {} received (p50 {:.2} ms, p99 {:.2} ms), {} receipts; \
             lost {}, duplicated {}, refused {}, unreadable {}; connections closed early {}",
            self.procs,
            self.sources,
            self.concurrency,
            self.memory_before.vm_rss_kib,
            self.memory_before.rss_anon_kib,
            phase("tcp", &self.tcp),
            phase("ws ", &self.ws),
            self.hold_secs,
            self.memory_end.vm_rss_kib,
            self.memory_end.rss_anon_kib,
            self.server_open_files_end,
            self.server_cpu_during_hold * 100.0,
            c.pairs,
            c.sent,
            c.answered,
            c.received,
            c.latency.p50_ms,
            c.latency.p99_ms,
            c.receipts,
            c.lost,
            c.duplicated,
            c.refused,
            c.unreadable,
            c.closed_early,
        )
    }
}

/// Starts the server (or takes the one given) and says which process to read in `/proc`.
fn target(args: &TargetArgs) -> anyhow::Result<(Target, Option<Proc>)> {
    match &args.server {
        Some(tcp) => {
            let mut t = Target::existing(tcp.clone(), None);
            t.ws = args.ws_url.clone();
            Ok((t, args.server_pid.map(|p| Proc(Some(p)))))
        }
        None => {
            let t = Target::spawn(args.server_bin.as_deref(), &args.data, &[])?;
            let pid = t.pid().map(|p| Proc(Some(p)));
            Ok((t, pid))
        }
    }
}

/// Splits `n` into `k` near-equal parts.
fn split(n: usize, k: usize, i: usize) -> usize {
    n / k + usize::from(i < n % k)
}

/// Runs the idle measurement.
pub async fn run_idle(args: IdleArgs) -> anyhow::Result<ExitCode> {
    if let Some(share) = &args.child {
        return child_main(share).await;
    }
    let procs = args.procs.max(1);
    let total = args.tcp + args.ws;
    let own_limit = Proc(None).open_files_limit().unwrap_or(u64::MAX);
    let per_proc = total.div_ceil(procs) as u64;
    if per_proc + SPARE_FILES > own_limit {
        bail!(
            "{per_proc} connections per process, but a process may open only {own_limit} files \
             here: use --procs {}",
            (total as u64).div_ceil(own_limit.saturating_sub(SPARE_FILES).max(1))
        );
    }
    if args.net.sources > 0 && total.div_ceil(args.net.sources as usize) > 25_000 {
        bail!("more than 25,000 connections per source address: raise --sources");
    }
    let (server, proc) = target(&args.target)?;
    let server_limit = proc.and_then(|p| p.open_files_limit());
    if let Some(limit) = server_limit
        && total as u64 + SPARE_FILES > limit
    {
        bail!("{total} connections, but the server may open only {limit} files");
    }
    if args.ws > 0 && server.ws.is_none() {
        bail!("the WebSocket URL is unknown: pass --ws-url with --server");
    }
    let memory = |p: Option<Proc>| p.map_or(Ok(Memory::default()), |p| p.memory());
    eprintln!(
        "idle: {} TCP then {} WebSocket connections against {} from {procs} process(es) ...",
        args.tcp, args.ws, server.tcp
    );
    tokio::time::sleep(SETTLE).await;
    let memory_before = memory(proc)?;
    let mut workers = Vec::with_capacity(procs);
    for i in 0..procs {
        let share = Share {
            index: i,
            tcp: split(args.tcp, procs, i),
            ws: split(args.ws, procs, i),
            chatter: split(args.chatter, procs, i),
            chatter_rate: args.chatter_rate,
            tcp_addr: server.tcp.clone(),
            ws_url: server.ws.clone(),
            sources: args.net.sources,
            concurrency: args.net.concurrency,
        };
        workers.push(if procs == 1 {
            WorkerHandle::local(share)
        } else {
            WorkerHandle::child(&share)?
        });
    }
    let timeout = Duration::from_secs(args.timeout);
    let mut phases = Vec::new();
    let mut before = memory_before;
    for (transport, asked) in [(Transport::Tcp, args.tcp), (Transport::Ws, args.ws)] {
        let kernel_before = kernel_tcp_kib();
        if transport == Transport::Ws {
            for w in workers.iter_mut() {
                w.next().await;
            }
        }
        let events = gather(&mut workers, timeout).await?;
        let mut phase = Phase {
            asked,
            ..Phase::default()
        };
        let mut latencies = Vec::new();
        for e in events {
            if let Event::Opened(o) = e {
                phase.opened += o.opened;
                phase.failed += o.failed;
                phase.first_error = phase.first_error.or(o.first_error);
                latencies.extend(o.latencies_ms);
                // The workers open at the same time: the phase lasts as long as the slowest.
                phase.seconds = phase.seconds.max(o.seconds);
            }
        }
        eprintln!(
            "  {transport:?}: {} authenticated in {:.1} s, {} failed",
            phase.opened, phase.seconds, phase.failed
        );
        phase.per_sec = rate(phase.opened, Duration::from_secs_f64(phase.seconds));
        phase.latency = latency_of(&latencies);
        tokio::time::sleep(SETTLE).await;
        phase.memory_after = memory(proc)?;
        phase.server_open_files = proc.map_or(0, |p| p.open_files());
        phase.kernel_tcp_kib_added = kernel_tcp_kib() as i64 - kernel_before as i64;
        if phase.opened > 0 {
            let n = phase.opened as f64;
            phase.rss_kib_per_conn =
                (phase.memory_after.vm_rss_kib as f64 - before.vm_rss_kib as f64) / n;
            phase.anon_kib_per_conn =
                (phase.memory_after.rss_anon_kib as f64 - before.rss_anon_kib as f64) / n;
            if phase.rss_kib_per_conn > 0.0 {
                phase.conns_per_gib = 1024.0 * 1024.0 / phase.rss_kib_per_conn;
            }
        }
        before = phase.memory_after;
        phases.push(phase);
    }
    // Hold: the chatter flows while every connection stays open.
    let cpu_before = proc.map_or(0.0, |p| p.cpu_secs());
    let hold_started = Instant::now();
    for w in workers.iter_mut() {
        w.next().await;
    }
    eprintln!("  holding for {} s ...", args.hold);
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let hold_secs = hold_started.elapsed().as_secs_f64();
    let cpu_during_hold = (proc.map_or(0.0, |p| p.cpu_secs()) - cpu_before) / hold_secs;
    let memory_end = memory(proc)?;
    let server_open_files_end = proc.map_or(0, |p| p.open_files());
    for w in workers.iter_mut() {
        w.next().await;
    }
    let mut chatter = Chatter::default();
    for e in gather(&mut workers, timeout).await? {
        if let Event::Done(c) = e {
            chatter.pairs += c.pairs;
            chatter.sent += c.sent;
            chatter.answered += c.answered;
            chatter.refused += c.refused;
            chatter.received += c.received;
            chatter.lost += c.lost;
            chatter.duplicated += c.duplicated;
            chatter.unreadable += c.unreadable;
            chatter.receipts += c.receipts;
            chatter.closed_early += c.closed_early;
            chatter.latencies_ms.extend(c.latencies_ms);
        }
    }
    chatter.latency = latency_of(&chatter.latencies_ms);
    chatter.latencies_ms = Vec::new();
    drop(workers);
    drop(server);
    let mut phases = phases.into_iter();
    let report = IdleReport {
        procs,
        sources: args.net.sources,
        concurrency: args.net.concurrency,
        memory_before,
        tcp: phases.next().unwrap_or_default(),
        ws: phases.next().unwrap_or_default(),
        hold_secs,
        memory_end,
        server_open_files_end,
        server_open_files_limit: server_limit,
        server_cpu_during_hold: cpu_during_hold,
        chatter,
    };
    crate::finish(
        args.json,
        &report,
        IdleReport::summary,
        report.correct(),
        "connections failed or were closed, or chatter messages were lost (see above)",
    )
}

/// Percentiles of samples in milliseconds.
fn latency_of(ms: &[f32]) -> Latency {
    let mut d: Vec<Duration> = ms
        .iter()
        .map(|m| Duration::from_secs_f64(f64::from(m.max(0.0)) / 1000.0))
        .collect();
    Latency::of(&mut d)
}

// ---------------------------------------------------------------------------------------------
// The handshake rate

/// The figures of `handshakes`.
#[derive(Debug, Serialize)]
pub struct HandshakeReport {
    /// `tcp` or `ws`.
    pub transport: &'static str,
    /// Handshakes asked for.
    pub count: usize,
    /// Handshakes at once.
    pub concurrency: usize,
    /// Source addresses.
    pub sources: u8,
    /// Handshakes completed (our User datum received).
    pub completed: usize,
    /// Handshakes that failed.
    pub failed: usize,
    /// The first failure's reason.
    pub first_error: Option<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Completed handshakes per second (connect, header, AUTH, challenge, answer, welcome).
    pub per_sec: f64,
    /// Connect-to-authenticated time.
    pub latency: Latency,
    /// The server's CPU seconds during the run (user + system).
    pub server_cpu_secs: f64,
    /// The server's CPU per handshake, in microseconds (accept, both datums, the store's
    /// read and write, the close), from its CPU time.
    pub server_cpu_us_per_handshake: f64,
    /// Handshakes one server core could complete at that cost (the load generator aside).
    pub per_core_projection: f64,
    /// This load generator's CPU seconds during the run.
    pub generator_cpu_secs: f64,
}

impl HandshakeReport {
    /// The human summary.
    pub fn summary(&self) -> String {
        let error = self
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default();
        format!(
            "handshakes ({}): {} of {} in {:.2} s with {} at once over {} source addresses: {:.0} handshakes/s\n\
             latency (connect to authenticated): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; failed {}{error}\n\
             CPU: server {:.2} s ({:.0} us per handshake -> {:.0} handshakes/s per server core), load generator {:.2} s",
            self.transport,
            self.completed,
            self.count,
            self.seconds,
            self.concurrency,
            self.sources,
            self.per_sec,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.failed,
            self.server_cpu_secs,
            self.server_cpu_us_per_handshake,
            self.per_core_projection,
            self.generator_cpu_secs,
        )
    }
}

/// Runs the handshake measurement.
pub async fn run_handshakes(args: HandshakeArgs) -> anyhow::Result<ExitCode> {
    if args.net.sources > 0 && args.count.div_ceil(args.net.sources as usize) > 25_000 {
        // Each closed connection leaves its port in TIME_WAIT for a minute.
        bail!("more than 25,000 handshakes per source address: raise --sources");
    }
    let (server, proc) = target(&args.target)?;
    let transport = if args.ws {
        Transport::Ws
    } else {
        Transport::Tcp
    };
    let ep = Endpoints::resolve(&server.tcp, server.ws.as_deref()).await?;
    eprintln!(
        "handshakes: generating {} client keys (not timed) ...",
        args.count
    );
    let keys: VecDeque<Key> = (0..args.count).map(|_| Key::generate()).collect();
    let queue = Arc::new(Mutex::new(
        keys.into_iter().enumerate().collect::<VecDeque<_>>(),
    ));
    eprintln!(
        "handshakes: {} over {transport:?} against {} ...",
        args.count, server.tcp
    );
    let (server_cpu0, own_cpu0) = (proc.map_or(0.0, |p| p.cpu_secs()), Proc(None).cpu_secs());
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.net.concurrency.max(1))
        .map(|_| {
            let (queue, ep, sources) = (queue.clone(), ep.clone(), args.net.sources);
            tokio::spawn(async move {
                let mut done = Opened::default();
                loop {
                    let Some((n, key)) = queue.lock().expect("queue lock").pop_front() else {
                        break;
                    };
                    let t = Instant::now();
                    match connect_authenticated(transport, &ep, source(n, sources), &key).await {
                        Ok(conn) => {
                            done.opened += 1;
                            done.latencies_ms.push(t.elapsed().as_secs_f32() * 1000.0);
                            drop(conn);
                        }
                        Err(e) => {
                            done.failed += 1;
                            done.first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                done
            })
        })
        .collect();
    let all = async {
        let mut total = Opened::default();
        for t in tasks {
            let o = t.await?;
            total.opened += o.opened;
            total.failed += o.failed;
            total.first_error = total.first_error.or(o.first_error);
            total.latencies_ms.extend(o.latencies_ms);
        }
        anyhow::Ok(total)
    };
    let total = tokio::time::timeout(Duration::from_secs(args.timeout), all)
        .await
        .map_err(|_| anyhow!("the handshakes took longer than {} s", args.timeout))??;
    let elapsed = started.elapsed();
    let server_cpu = proc.map_or(0.0, |p| p.cpu_secs()) - server_cpu0;
    let generator_cpu = Proc(None).cpu_secs() - own_cpu0;
    drop(server);
    let us = if total.opened > 0 {
        server_cpu * 1e6 / total.opened as f64
    } else {
        0.0
    };
    let report = HandshakeReport {
        transport: match transport {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        },
        count: args.count,
        concurrency: args.net.concurrency,
        sources: args.net.sources,
        completed: total.opened,
        failed: total.failed,
        first_error: total.first_error,
        seconds: elapsed.as_secs_f64(),
        per_sec: rate(total.opened, elapsed),
        latency: latency_of(&total.latencies_ms),
        server_cpu_secs: server_cpu,
        server_cpu_us_per_handshake: us,
        per_core_projection: if us > 0.0 { 1e6 / us } else { 0.0 },
        generator_cpu_secs: generator_cpu,
    };
    crate::finish(
        args.json,
        &report,
        |r| r.summary(),
        report.failed == 0,
        "some handshakes failed (see above)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_rss_and_anonymous_memory() {
        let text = "Name:\tflexim-server\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\n\
                    RssAnon:\t    8000 kB\nRssFile:\t    4345 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Memory {
                vm_rss_kib: 12345,
                rss_anon_kib: 8000
            })
        );
        assert_eq!(parse_status("VmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn limits_give_the_soft_open_files_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95000                95000                processes \n\
                    Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_files_limit(text), Some(20000));
        assert_eq!(parse_open_files_limit("Max processes 1 1\n"), None);
    }

    #[test]
    fn stat_gives_user_plus_system_ticks_even_with_spaces_in_the_name() {
        let text = "4242 (flexim (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 25 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(text), Some(175));
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn sockstat_gives_tcp_pages() {
        let text =
            "sockets: used 300\nTCP: inuse 12 orphan 0 tw 3 alloc 15 mem 42\nUDP: inuse 1 mem 2\n";
        assert_eq!(parse_sockstat_tcp_pages(text), Some(42));
        assert_eq!(parse_sockstat_tcp_pages("UDP: inuse 1 mem 2\n"), None);
    }

    #[test]
    fn shares_add_up_and_sources_rotate() {
        assert_eq!(
            (0..3).map(|i| split(10, 3, i)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(source(0, 4), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source(5, 4), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(source(5, 0), None);
    }
}
