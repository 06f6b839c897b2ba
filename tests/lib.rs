//! Helpers for the end-to-end suite: a real `flexim-server` process on ports chosen by the OS,
//! with its own temporary data directory, and a raw FLEX connection for sending exactly the
//! bytes a test wants (including wrong ones).

pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use flexim_protocol::datum::{Message, Status};
use flexim_protocol::frame::{self, HEADER};
use flexim_protocol::handshake::{ClientHandshake, ClientStep};
use flexim_protocol::{Datum, PublicKey, SecretKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for any single expected datum before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// The directory holding the workspace's binaries (`target/debug`), built if missing.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        if !dir.join("flexim-server").exists() || !dir.join("flexim").exists() {
            // `cargo test` builds only this package's targets; build the binaries it runs.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "-p",
                    "flexim-server",
                    "-p",
                    "flexim-client",
                    "--bins",
                ])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the binaries failed");
        }
        dir
    })
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Makes a new empty directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).unwrap();
        let dir =
            std::env::temp_dir().join(format!("flexim-{tag}-{}", flexim_protocol::keys::hex(&rnd)));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `flexim-server` process.
pub struct TestServer {
    /// The child process.
    child: Option<Child>,
    /// Its data directory (kept across restarts).
    pub dir: TempDir,
    /// The bound TCP address.
    pub tcp: SocketAddr,
    /// The WebSocket URL.
    pub ws: String,
    /// The HTTP base URL.
    pub http: String,
    /// The server key as printed.
    pub key: String,
    /// Every stdout line it printed at start.
    pub banner: Vec<String>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 port 0 with a new data directory.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags.
    pub fn start_with(extra: &[&str]) -> TestServer {
        let dir = TempDir::new("server");
        Self::spawn(dir, "127.0.0.1:0", "127.0.0.1:0", extra).expect("server starts")
    }

    fn spawn(dir: TempDir, tcp: &str, http: &str, extra: &[&str]) -> Result<TestServer> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.0.join("server.log"))?;
        let mut child = Command::new(bin_dir().join("flexim-server"))
            .args(["--tcp", tcp, "--http", http, "--log", "trace"])
            .arg("--static")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../static"))
            .arg("--data")
            .arg(dir.0.join("data"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .spawn()
            .context("spawning flexim-server")?;
        let stdout = child.stdout.take().unwrap();
        let mut banner = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line?;
            let done = line == "ready";
            banner.push(line);
            if done {
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let field = |name: &str| {
            banner
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
                .ok_or_else(|| anyhow!("no {name} in banner {banner:?}"))
        };
        Ok(TestServer {
            tcp: field("tcp")?.parse()?,
            ws: field("ws")?,
            http: field("http")?,
            key: field("key")?,
            banner: banner.clone(),
            child: Some(child),
            dir,
        })
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the server with SIGKILL (no chance to flush or close anything) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL and starts it again on the same data directory and
    /// ports: a crash and a restart.
    pub fn crash_and_restart(mut self) -> TestServer {
        self.kill();
        self.start_again_on_same_ports()
    }

    /// Stops the server and starts it again on the same data directory (new ports).
    pub fn restart(mut self) -> TestServer {
        assert!(self.stop(), "server exits cleanly on SIGTERM");
        let dir = TempDir(std::mem::take(&mut self.dir.0));
        Self::spawn(dir, "127.0.0.1:0", "127.0.0.1:0", &[]).expect("server restarts")
    }

    /// Stops the server and starts it again on the same data directory and the same ports, so
    /// that clients (a browser page, whose origin is the HTTP address) can reconnect.
    pub fn restart_on_same_ports(mut self) -> TestServer {
        assert!(self.stop(), "server exits cleanly on SIGTERM");
        self.start_again_on_same_ports()
    }

    /// Starts a stopped server again on its data directory and ports.
    fn start_again_on_same_ports(mut self) -> TestServer {
        let dir = TempDir(std::mem::take(&mut self.dir.0));
        let http = self
            .http
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Self::spawn(dir, &self.tcp.to_string(), &http, &[]).expect("server restarts")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How long a `redis-server` may take to answer PING after it starts (it loads its
/// append-only file first, which is quick for a test's data).
const REDIS_START: Duration = Duration::from_secs(20);

/// A real `redis-server` child process, for the Redis store and multi-node tests.
///
/// It listens on 127.0.0.1 on a port that was free when it started, keeps its append-only
/// file in its own temporary directory (`--appendonly yes --appendfsync always`, no RDB
/// snapshots), so every write it acknowledged survives [`RedisServer::restart`] (a SIGKILL, a
/// crash) as well as [`RedisServer::stop`]. Its log is `redis.log` in that directory
/// ([`RedisServer::logs`]). It is killed when dropped. Each test starts its own: nothing is
/// shared between tests, and a test never depends on a Redis already running.
///
/// ```no_run
/// let mut redis = flexim_tests::RedisServer::start();
/// let server = flexim_tests::TestServer::start_with(&["--store", &redis.url]);
/// redis.restart(); // same port, same data
/// ```
pub struct RedisServer {
    /// The process; `None` while it is stopped or killed.
    child: Option<Child>,
    /// The TCP port on 127.0.0.1, the same across restarts.
    pub port: u16,
    /// The URL to give a client: `redis://127.0.0.1:PORT`.
    pub url: String,
    /// Its working directory: the append-only file and `redis.log`. Kept across restarts.
    pub dir: TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free port with a new directory and waits until it answers
    /// PING. Panics (with how to install it) if `redis-server` is not installed.
    pub fn start() -> RedisServer {
        let dir = TempDir::new("redis");
        // A port the OS says is free may be taken again before Redis binds it; then Redis
        // exits at once and another port is tried.
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            match Self::spawn(&dir.0, port) {
                Ok(child) => {
                    return RedisServer {
                        child: Some(child),
                        port,
                        url: format!("redis://127.0.0.1:{port}"),
                        dir,
                    };
                }
                Err(e) => last = format!("{e:#}"),
            }
        }
        panic!(
            "redis-server did not start: {last}\n{}",
            std::fs::read_to_string(dir.0.join("redis.log")).unwrap_or_default()
        );
    }

    /// Starts the process on `port` in `dir` and waits for PONG; an error if it exits first
    /// or does not answer within [`REDIS_START`].
    fn spawn(dir: &Path, port: u16) -> Result<Child> {
        let mut child = match Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .args(["--logfile", "redis.log", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server not found: install it (apt-get install redis-server, or `just setup`)"
            ),
            Err(e) => return Err(e).context("spawning redis-server"),
        };
        let deadline = std::time::Instant::now() + REDIS_START;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("redis-server exited ({status}) before answering PING");
            }
            if ping(port) {
                return Ok(child);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("redis-server did not answer PING within {REDIS_START:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a stopped or killed Redis again on the same port and directory (so with the
    /// same data) and waits until it answers PING. Does nothing if it is running.
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        // The port was ours a moment ago, but a client's connection attempt or another
        // test's probe may hold it briefly: try a few times.
        let mut last = String::new();
        for _ in 0..10 {
            match Self::spawn(&self.dir.0, self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "redis-server did not start again on port {}: {last}\n{}",
            self.port,
            self.logs()
        );
    }

    /// Kills Redis with SIGKILL (a crash: no chance to do anything more) and starts it again
    /// on the same port and data, waiting until it answers PING. With `appendfsync always`
    /// every write it acknowledged is still there.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Kills Redis with SIGKILL and waits for it to exit; [`RedisServer::start_again`]
    /// brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops Redis with SIGTERM (it syncs and exits cleanly) and waits for it to exit, at
    /// most ten seconds before it is killed; [`RedisServer::start_again`] brings it back.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the process is running (not stopped or killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything Redis logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("redis.log")).unwrap_or_default()
    }

    /// Sends one command (plain RESP over a new TCP connection) and returns the reply as
    /// strings: a string or an integer is one item, an array its items in order (nested
    /// arrays flattened), nil nothing. An error reply is an `Err` with Redis's message.
    /// For looking at what a test left in Redis, e.g. `redis.command(&["KEYS", "*"])`.
    pub fn command(&self, args: &[&str]) -> Result<Vec<String>> {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(WAIT))?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(s);
        fn reply(r: &mut impl BufRead, out: &mut Vec<String>) -> Result<()> {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let line = line.trim_end_matches("\r\n");
            let (kind, rest) = line.split_at_checked(1).context("empty reply")?;
            match kind {
                "+" | ":" => out.push(rest.to_string()),
                "-" => bail!("Redis: {rest}"),
                "$" => {
                    let len: i64 = rest.parse()?;
                    if len >= 0 {
                        let mut buf = vec![0u8; len as usize + 2];
                        r.read_exact(&mut buf)?;
                        buf.truncate(len as usize);
                        out.push(String::from_utf8_lossy(&buf).into_owned());
                    }
                }
                "*" => {
                    let n: i64 = rest.parse()?;
                    for _ in 0..n.max(0) {
                        reply(r, out)?;
                    }
                }
                other => bail!("unexpected RESP reply type {other:?}"),
            }
            Ok(())
        }
        let mut out = Vec::new();
        reply(&mut reader, &mut out)?;
        Ok(out)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Redis on 127.0.0.1:`port` answers PING with PONG (not, say, LOADING while it
/// reads its append-only file). Plain RESP over TCP: the helper needs no Redis client.
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 5];
    s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
        && s.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG"
}

/// A plain HTTP/1.1 GET to the server's HTTP side: (status line, body).
pub async fn http_get(base: &str, path: &str) -> Result<(String, String)> {
    let host = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = TcpStream::connect(&host).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// Random bytes from the OS.
pub fn random(buf: &mut [u8]) {
    getrandom::fill(buf).unwrap();
}

/// A new random identity.
pub fn new_key() -> SecretKey {
    let mut b = [0u8; 32];
    random(&mut b);
    SecretKey::from_bytes(b)
}

/// A raw FLEX connection over TCP: exact bytes in, decoded datums out.
pub struct Raw {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read but not yet decoded.
    buf: Vec<u8>,
}

impl Raw {
    /// Connects and sends the header.
    pub async fn connect(addr: SocketAddr) -> Result<Raw> {
        let mut stream = TcpStream::connect(addr).await?;
        // Datums are written one by one; without this, Nagle's algorithm holds each small
        // write until the previous one is acknowledged, and a test that streams messages
        // crawls at one delayed ACK per round.
        stream.set_nodelay(true)?;
        stream.write_all(&HEADER).await?;
        Ok(Raw {
            stream,
            buf: Vec::new(),
        })
    }

    /// Connects, sends the header and authenticates as `key`.
    pub async fn login(addr: SocketAddr, key: &SecretKey) -> Result<Raw> {
        let mut raw = Raw::connect(addr).await?;
        let mut hs = ClientHandshake::new(key.clone(), None);
        loop {
            let datum = raw.recv().await?;
            match hs.handle(datum, &mut random)? {
                ClientStep::Send(d) => raw.send(&d).await?,
                ClientStep::Done { .. } => return Ok(raw),
            }
        }
    }

    /// Sends a datum.
    pub async fn send(&mut self, d: &Datum) -> Result<()> {
        self.send_bytes(&d.to_frame()?).await
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, b: &[u8]) -> Result<()> {
        self.stream.write_all(b).await?;
        Ok(())
    }

    /// Sends a frame with the given type and raw body.
    pub async fn send_frame(&mut self, kind: u8, body: &[u8]) -> Result<()> {
        let mut out = Vec::new();
        frame::encode_into(kind, body, &mut out)?;
        self.send_bytes(&out).await
    }

    /// The next datum, waiting at most [`WAIT`]; an error if the server closed.
    pub async fn recv(&mut self) -> Result<Datum> {
        tokio::time::timeout(WAIT, self.recv_inner())
            .await
            .map_err(|_| anyhow!("no datum within {WAIT:?}"))?
    }

    async fn recv_inner(&mut self) -> Result<Datum> {
        let bytes = self.recv_frame_inner().await?;
        Ok(Datum::decode(bytes[0], &bytes[frame::PREFIX_LEN..])?)
    }

    /// The next whole frame as raw bytes, waiting at most [`WAIT`].
    pub async fn recv_frame(&mut self) -> Result<Vec<u8>> {
        tokio::time::timeout(WAIT, self.recv_frame_inner())
            .await
            .map_err(|_| anyhow!("no frame within {WAIT:?}"))?
    }

    async fn recv_frame_inner(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(info) = frame::check(&self.buf, frame::MAX_BODY)? {
                return Ok(self.buf.drain(..info.total()).collect());
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next Status that is not a presence notice.
    pub async fn status(&mut self) -> Result<Status> {
        loop {
            match self.recv().await? {
                Datum::Status(s) if s.status.abs() == 10 => continue,
                Datum::Status(s) => return Ok(s),
                other => bail!("expected a Status, got {other:?}"),
            }
        }
    }

    /// The next Message, skipping presence and other notices.
    pub async fn message(&mut self) -> Result<Message> {
        loop {
            match self.recv().await? {
                Datum::Message(m) => return Ok(m),
                Datum::Status(s) if s.status.abs() == 10 => continue,
                other => bail!("expected a Message, got {other:?}"),
            }
        }
    }

    /// Whether the server closes the connection (EOF or reset) within [`WAIT`], ignoring any
    /// datums it sends first.
    pub async fn closed(&mut self) -> bool {
        let wait = async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        };
        tokio::time::timeout(WAIT, wait).await.unwrap_or(false)
    }
}

/// A plain (unsealed) Message from `from` to `to`, for tests of routing rules where the body
/// does not matter; the server never reads it.
pub fn message(from: &PublicKey, to: &str, body: &str) -> Datum {
    Datum::Message(Message {
        to: to.to_string(),
        from: from.to_hex(),
        flags: vec![],
        date: 1_700_000_000,
        msg: body.to_string(),
        id: None,
    })
}

/// Like [`message`], with a message `id`.
pub fn message_with_id(from: &PublicKey, to: &str, body: &str, id: &str) -> Datum {
    match message(from, to, body) {
        Datum::Message(mut m) => {
            m.id = Some(id.to_string());
            Datum::Message(m)
        }
        _ => unreachable!("message() builds a Message"),
    }
}

/// A raw FLEX connection over WebSocket: one frame per binary message.
pub struct WsRaw {
    /// The WebSocket.
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

/// What a raw WebSocket read produced.
#[derive(Debug)]
pub enum WsEvent {
    /// A datum in a binary message.
    Datum(Datum),
    /// The server closed with this code and reason.
    Close(u16, String),
    /// The connection ended without a close frame.
    Gone,
}

impl WsRaw {
    /// Connects to `url` and sends `header` as the first binary message.
    pub async fn connect_with(url: &str, header: &[u8]) -> Result<WsRaw> {
        use futures_util::SinkExt;
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(
            header.to_vec().into(),
        ))
        .await?;
        Ok(WsRaw { ws })
    }

    /// Connects and sends the right header.
    pub async fn connect(url: &str) -> Result<WsRaw> {
        Self::connect_with(url, &HEADER).await
    }

    /// Connects and authenticates as `key`.
    pub async fn login(url: &str, key: &SecretKey) -> Result<WsRaw> {
        let mut raw = WsRaw::connect(url).await?;
        let mut hs = ClientHandshake::new(key.clone(), None);
        loop {
            let WsEvent::Datum(datum) = raw.next().await? else {
                bail!("closed during the handshake");
            };
            match hs.handle(datum, &mut random)? {
                ClientStep::Send(d) => raw.send_bytes(&d.to_frame()?).await?,
                ClientStep::Done { .. } => return Ok(raw),
            }
        }
    }

    /// Sends one binary message.
    pub async fn send_bytes(&mut self, b: &[u8]) -> Result<()> {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                b.to_vec().into(),
            ))
            .await?;
        Ok(())
    }

    /// Sends one text message (a protocol violation).
    pub async fn send_text(&mut self, t: &str) -> Result<()> {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(t.into()))
            .await?;
        Ok(())
    }

    /// The next datum or close, waiting at most [`WAIT`].
    pub async fn next(&mut self) -> Result<WsEvent> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message as M;
        let read = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(M::Binary(b))) => {
                        let (kind, body) = frame::split_exact(&b, frame::MAX_BODY)?;
                        return Ok(WsEvent::Datum(Datum::decode(kind, body)?));
                    }
                    Some(Ok(M::Close(Some(c)))) => {
                        return Ok(WsEvent::Close(c.code.into(), c.reason.to_string()));
                    }
                    Some(Ok(M::Close(None))) | None | Some(Err(_)) => return Ok(WsEvent::Gone),
                    Some(Ok(_)) => continue,
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .map_err(|_| anyhow!("nothing from the WebSocket within {WAIT:?}"))?
    }

    /// The next Status that is not a presence notice.
    pub async fn status(&mut self) -> Result<Status> {
        loop {
            match self.next().await? {
                WsEvent::Datum(Datum::Status(s)) if s.status.abs() == 10 => continue,
                WsEvent::Datum(Datum::Status(s)) => return Ok(s),
                other => bail!("expected a Status, got {other:?}"),
            }
        }
    }
}

/// A `flexim` CLI process with piped standard streams, read line by line.
pub struct Cli {
    /// The process.
    pub child: Child,
    /// Lines from its stdout, read on a thread.
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stdout line seen so far, for failure messages.
    pub seen: Vec<String>,
}

impl Cli {
    /// Starts `flexim ARGS` with piped stdin and stdout (stderr goes to the test's stderr).
    pub fn spawn(args: &[&str]) -> Cli {
        let mut child = Command::new(bin_dir().join("flexim"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flexim runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Cli {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits up to [`WAIT`] for a stdout line containing `needle` and returns it.
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Writes one line to the process's stdin.
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `flexim ARGS` to completion: (exit code, stdout, stderr).
pub fn flexim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_dir().join("flexim"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("flexim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
