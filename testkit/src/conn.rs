//! One framed connection to a flexim server, over raw TCP or WebSocket, for the tests and the
//! load generator: exact bytes out, whole frames in.
//!
//! It has two faces over one implementation. The async one (`send_bytes`, `recv`, `next`, ...)
//! is what a test needs to send exactly the bytes it wants, wrong ones included, and to see
//! exactly what the server answers, close codes included. The polling one
//! ([`Conn::poll_frames`], [`Conn::poll_send`]) is what the load generator needs to move many
//! frames per system call without a task per direction. [`Conn::login`] logs in with the
//! client engine of `flexim-session`, the same code both clients run, so no test or benchmark
//! has a handshake of its own.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use flexim_protocol::frame::{self, HEADER, MAX_BODY, PREFIX_LEN};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Command, Datum, Link, Message, SecretKey, Status, User};
use flexim_session::{Config, Engine, Event, Framing};
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::WAIT;

/// Bytes a TCP connection reads at most at once by default: room for many frames per read and
/// always for the largest frame.
pub const LARGE_READS: usize = 256 * 1024;
/// Bytes an idle connection's read buffer starts with, so that thousands of them fit in a load
/// generator; it grows when a frame needs more.
pub const SMALL_READS: usize = 4 * 1024;

/// What a read brought.
#[derive(Debug)]
pub enum Got {
    /// A whole frame, decoded.
    Datum(Datum),
    /// The server closed the WebSocket with this code and reason.
    Close(u16, String),
    /// The connection ended without a close frame (a TCP end of stream, or a reset).
    Gone,
}

/// A framed connection (see the module documentation).
pub struct Conn {
    /// The socket and its buffers.
    io: Io,
    /// The Noise link once [`Conn::login`] brought it up: datums sent with [`Conn::send`] are
    /// sealed with it, and records read are opened with it. `None` before a login, and after
    /// [`Conn::login_with`], whose engine keeps the link.
    link: Option<Link>,
}

/// The two transports under a [`Conn`].
enum Io {
    /// Raw TCP: FLEX frames back to back.
    Tcp {
        /// The socket.
        stream: TcpStream,
        /// Read buffer; bytes `..rlen` are read and not yet taken as frames.
        rbuf: Vec<u8>,
        /// See `rbuf`.
        rlen: usize,
        /// Bytes to write; `wpos..` are not written yet.
        wbuf: Vec<u8>,
        /// See `wbuf`.
        wpos: usize,
    },
    /// WebSocket: one frame per binary message.
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// Opens a TCP connection from `source` (if any): a load generator spreads its sockets over
/// several 127.0.0.x addresses, since one source address has only about 28,000 ports towards
/// one server port.
async fn dial(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding to {ip}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    // Frames are small and interactive; waiting to coalesce them only adds latency.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The `HOST:PORT` of a `ws://HOST:PORT/...` URL.
fn ws_authority(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("not a ws:// URL: {url}"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .with_context(|| format!("the URL {url} does not name HOST:PORT"))
}

impl Conn {
    /// A TCP connection to `addr` with nothing sent yet.
    pub async fn open_tcp(addr: SocketAddr, source: Option<IpAddr>, reads: usize) -> Result<Conn> {
        Ok(Conn::tcp_from(dial(addr, source).await?, &[], reads))
    }

    /// A WebSocket connection to `url` (upgraded, nothing sent yet). With `small`, buffers of
    /// a few KiB instead of tungstenite's 128 KiB, so that thousands of connections fit.
    pub async fn open_ws(url: &str, source: Option<IpAddr>, small: bool) -> Result<Conn> {
        Conn::open_ws_at(ws_authority(url)?, url, source, small).await
    }

    /// [`Conn::open_ws`] with the server's address resolved already.
    pub async fn open_ws_at(
        addr: SocketAddr,
        url: &str,
        source: Option<IpAddr>,
        small: bool,
    ) -> Result<Conn> {
        let stream = dial(addr, source).await?;
        let config = small.then(|| {
            WebSocketConfig::default()
                .read_buffer_size(SMALL_READS)
                .write_buffer_size(0)
        });
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, config)
            .await
            .with_context(|| format!("the WebSocket upgrade at {url}"))?;
        Ok(Conn::from_ws(ws))
    }

    /// A WebSocket connection upgraded elsewhere (nothing sent yet).
    pub fn from_ws(ws: WebSocketStream<TcpStream>) -> Conn {
        Conn {
            io: Io::Ws(Box::new(ws)),
            link: None,
        }
    }

    /// A TCP connection whose first bytes (already read) are `read`.
    pub fn tcp_from(stream: TcpStream, read: &[u8], reads: usize) -> Conn {
        let mut rbuf = vec![0; reads.max(read.len() * 2).max(PREFIX_LEN)];
        rbuf[..read.len()].copy_from_slice(read);
        Conn {
            io: Io::Tcp {
                stream,
                rlen: read.len(),
                rbuf,
                wbuf: Vec::new(),
                wpos: 0,
            },
            link: None,
        }
    }

    /// Connects over TCP and sends the header.
    pub async fn tcp(addr: SocketAddr) -> Result<Conn> {
        let mut conn = Conn::open_tcp(addr, None, SMALL_READS).await?;
        conn.send_bytes(&HEADER).await?;
        Ok(conn)
    }

    /// Connects over WebSocket and sends `header` as the first binary message.
    pub async fn ws_with(url: &str, header: &[u8]) -> Result<Conn> {
        let mut conn = Conn::open_ws(url, None, false).await?;
        conn.send_bytes(header).await?;
        Ok(conn)
    }

    /// Connects over WebSocket and sends the right header.
    pub async fn ws(url: &str) -> Result<Conn> {
        Conn::ws_with(url, &HEADER).await
    }

    /// Connects over TCP and logs in as `key`.
    pub async fn login_tcp(addr: SocketAddr, key: &SecretKey) -> Result<Conn> {
        let mut conn = Conn::open_tcp(addr, None, SMALL_READS).await?;
        conn.login(key).await?;
        Ok(conn)
    }

    /// Connects over WebSocket and logs in as `key`.
    pub async fn login_ws(url: &str, key: &SecretKey) -> Result<Conn> {
        let mut conn = Conn::open_ws(url, None, false).await?;
        conn.login(key).await?;
        Ok(conn)
    }

    /// Logs in as `key` on a connection with nothing sent yet, with the client engine (which
    /// sends the header): the login both clients run. Returns this user as the server knows
    /// it. Frames after the login stay unread. The connection keeps the engine's link, so
    /// what the test sends and reads from then on is sealed and opened with it.
    pub async fn login(&mut self, key: &SecretKey) -> Result<User> {
        let mut engine = self.engine(key);
        let me = self.login_with(&mut engine).await?;
        self.link = engine.take_link();
        Ok(me)
    }

    /// Seals and opens with `link` from now on: the link of an engine that logged in on this
    /// connection with [`Conn::login_with`] and is not used on it any more (a load generator
    /// keeps it only to seal message bodies), or of a handshake a test ran by hand.
    pub fn adopt_link(&mut self, link: Option<Link>) {
        self.link = link;
    }

    /// Whether the connection seals and opens with a link of its own.
    pub fn is_linked(&self) -> bool {
        self.link.is_some()
    }

    /// A client engine for `key`, framed for this connection's transport.
    pub fn engine(&self, key: &SecretKey) -> Engine {
        let framing = match self.io {
            Io::Tcp { .. } => Framing::Stream,
            Io::Ws(_) => Framing::Messages,
        };
        let config = Config {
            pinned: None,
            alias: None,
            framing,
            rooms: false,
            pairs: false,
        };
        Engine::new(key.clone(), config, Box::new(crate::random))
    }

    /// Logs in with `engine` (see [`Conn::login`]), which the caller keeps to go on with the
    /// protocol: feed it each frame with [`Engine::handle_bytes`] and send what it transmits.
    pub async fn login_with(&mut self, engine: &mut Engine) -> Result<User> {
        engine.connect();
        loop {
            self.send_transmits(engine).await?;
            while let Some(event) = engine.poll_event() {
                match event {
                    Event::LoggedIn { me, .. } => return Ok(me),
                    Event::LoginFailed(e) => bail!("login failed: {e}"),
                    _ => {}
                }
            }
            match self.next_wire().await? {
                Ok(frame) => engine.handle_bytes(&frame),
                Err(_) => bail!("the server closed the connection during the login"),
            }
        }
    }

    /// Sends everything `engine` queued.
    pub async fn send_transmits(&mut self, engine: &mut Engine) -> Result<()> {
        while let Some(bytes) = engine.poll_transmit() {
            self.send_bytes(&bytes).await?;
        }
        Ok(())
    }

    /// Sends bytes exactly as given, past the link: on TCP onto the stream, on WebSocket as
    /// one binary message. What an attacker on the path can do.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.io {
            Io::Tcp { stream, .. } => stream.write_all(bytes).await?,
            Io::Ws(ws) => {
                ws.send(WsMessage::Binary(Bytes::copy_from_slice(bytes)))
                    .await?
            }
        }
        Ok(())
    }

    /// Sends a datum (sealed, once logged in).
    pub async fn send(&mut self, datum: &Datum) -> Result<()> {
        self.send_sealed(&datum.to_frame()?).await
    }

    /// Sends a frame with the given type and raw body (sealed, once logged in).
    pub async fn send_frame(&mut self, kind: u8, body: &[u8]) -> Result<()> {
        let mut out = Vec::new();
        frame::encode_into(kind, body, &mut out)?;
        self.send_sealed(&out).await
    }

    /// Sends bytes as one record of the link once logged in (any bytes: a test may seal a
    /// frame that is cut short or malformed), as they are before.
    pub async fn send_sealed(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.link {
            Some(link) => {
                let record = link.seal(bytes)?;
                self.send_bytes(&record).await
            }
            None => self.send_bytes(bytes).await,
        }
    }

    /// Seals a frame into the record this connection would send next, without sending it: what
    /// an attacker who captured it could replay, reorder or alter.
    pub fn seal_only(&mut self, frame: &[u8]) -> Result<Vec<u8>> {
        let link = self.link.as_mut().context("not logged in")?;
        Ok(link.seal(frame)?)
    }

    /// Sends one WebSocket text message (a protocol violation); an error on TCP.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        match &mut self.io {
            Io::Ws(ws) => Ok(ws.send(WsMessage::Text(text.into())).await?),
            Io::Tcp { .. } => bail!("TCP has no text messages"),
        }
    }

    /// Closes the TCP connection's sending side (the server sees the end of input); on
    /// WebSocket, sends a close frame.
    pub async fn shutdown(&mut self) -> Result<()> {
        match &mut self.io {
            Io::Tcp { stream, .. } => stream.shutdown().await?,
            Io::Ws(ws) => ws.send(WsMessage::Close(None)).await?,
        }
        Ok(())
    }

    /// The next frame, opened if the link is up, or how the connection ended; waits as long
    /// as it takes. A record that does not open is an error. Cancel-safe: bytes already read
    /// stay in the buffer.
    pub async fn next_read(&mut self) -> Result<Result<Vec<u8>, Got>> {
        let read = self.next_wire().await?;
        match (read, &mut self.link) {
            (Ok(record), Some(link)) => Ok(Ok(link.open(&record)?)),
            (read, _) => Ok(read),
        }
    }

    /// The next frame exactly as it came over the wire (a record, once logged in), or how the
    /// connection ended. Cancel-safe.
    pub async fn next_wire(&mut self) -> Result<Result<Vec<u8>, Got>> {
        match &mut self.io {
            Io::Tcp {
                stream, rbuf, rlen, ..
            } => loop {
                if let Some(info) = frame::check(&rbuf[..*rlen], MAX_BODY)? {
                    let frame = rbuf[..info.total()].to_vec();
                    rbuf.copy_within(info.total()..*rlen, 0);
                    *rlen -= info.total();
                    return Ok(Ok(frame));
                }
                if *rlen == rbuf.len() {
                    // A frame larger than the buffer: make room for the largest one.
                    rbuf.resize((rbuf.len() * 2).max(MAX_BODY + PREFIX_LEN), 0);
                }
                let n = poll_fn(|cx| {
                    let mut buf = ReadBuf::new(&mut rbuf[*rlen..]);
                    Pin::new(&mut *stream)
                        .poll_read(cx, &mut buf)
                        .map_ok(|()| buf.filled().len())
                })
                .await;
                match n {
                    Ok(0) | Err(_) => return Ok(Err(Got::Gone)),
                    Ok(n) => *rlen += n,
                }
            },
            Io::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Binary(b))) => return Ok(Ok(b.to_vec())),
                    Some(Ok(WsMessage::Close(Some(c)))) => {
                        return Ok(Err(Got::Close(c.code.into(), c.reason.to_string())));
                    }
                    Some(Ok(WsMessage::Close(None))) | None | Some(Err(_)) => {
                        return Ok(Err(Got::Gone));
                    }
                    Some(Ok(WsMessage::Text(_))) => bail!("the server sent a text message"),
                    Some(Ok(_)) => {}
                }
            },
        }
    }

    /// The next frame, or `None` once the connection ended; waits as long as it takes.
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(self.next_read().await?.ok())
    }

    /// The next datum or the end, waiting at most [`WAIT`].
    pub async fn next(&mut self) -> Result<Got> {
        let read = tokio::time::timeout(WAIT, self.next_read())
            .await
            .map_err(|_| anyhow!("nothing from the server within {WAIT:?}"))??;
        Ok(match read {
            Ok(frame) => {
                let (kind, body) = frame::split_exact(&frame, MAX_BODY)?;
                Got::Datum(Datum::decode(kind, body)?)
            }
            Err(end) => end,
        })
    }

    /// The next whole frame as raw bytes, waiting at most [`WAIT`]; an error if the server
    /// closed.
    pub async fn recv_frame(&mut self) -> Result<Vec<u8>> {
        tokio::time::timeout(WAIT, self.next_frame())
            .await
            .map_err(|_| anyhow!("no frame within {WAIT:?}"))??
            .ok_or_else(|| anyhow!("connection closed"))
    }

    /// The next datum, waiting at most [`WAIT`]; an error if the server closed.
    pub async fn recv(&mut self) -> Result<Datum> {
        let frame = self.recv_frame().await?;
        Ok(Datum::decode(frame[0], &frame[PREFIX_LEN..])?)
    }

    /// The next datum that is not a presence notice.
    pub async fn datum(&mut self) -> Result<Datum> {
        loop {
            match self.recv().await? {
                Datum::Status(s) if s.status.abs() == 10 => continue,
                d => return Ok(d),
            }
        }
    }

    /// Sends ACK for `ids` and returns its answer: the first Status that is no notice (the
    /// messages, receipts and presence on the way are skipped).
    pub async fn ack(&mut self, ids: &[&str]) -> Result<Status> {
        self.send(&Command::new(cmd::ACK, ids).into()).await?;
        loop {
            if let Datum::Status(s) = self.recv().await?
                && !status::is_notice(s.status)
            {
                return Ok(s);
            }
        }
    }

    /// The next Status that answers something (no notice), skipping every other datum on the
    /// way (messages, Requests, Connections).
    pub async fn answer(&mut self) -> Result<Status> {
        loop {
            if let Datum::Status(s) = self.datum().await?
                && !flexim_protocol::status::is_notice(s.status)
            {
                return Ok(s);
            }
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

    /// Accepts `other` (an Acknowledge naming its key: docs/PROTOCOL.md §14), so that its
    /// messages to this key are relayed; returns the answer's Status. The Connection datum
    /// that follows a success is read too.
    pub async fn befriend(&mut self, other: &flexim_protocol::PublicKey) -> Result<Status> {
        let ack = flexim_protocol::datum::Acknowledge { id: other.to_hex() };
        self.send(&Datum::Acknowledge(ack)).await?;
        let answer = self.status().await?;
        if answer.status == status::OK {
            loop {
                if let Datum::Connection(_) = self.datum().await? {
                    break;
                }
            }
        }
        Ok(answer)
    }

    /// The next Message, skipping presence notices and the Request notice a stranger's first
    /// message comes after (docs/PROTOCOL.md §14.3).
    pub async fn message(&mut self) -> Result<Message> {
        loop {
            match self.recv().await? {
                Datum::Message(m) => return Ok(m),
                Datum::Status(s) if s.status.abs() == 10 => continue,
                Datum::Request(_) => continue,
                other => bail!("expected a Message, got {other:?}"),
            }
        }
    }

    /// Whether the server closes the connection (end of stream, reset or close frame) within
    /// [`WAIT`], ignoring any frames it sends first.
    pub async fn closed(&mut self) -> bool {
        let wait = async {
            loop {
                match self.next_wire().await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(_)) | Err(_) => return true,
                }
            }
        };
        tokio::time::timeout(WAIT, wait).await.unwrap_or(false)
    }

    /// Reads and throws away whatever arrives (presence notices); false once the server has
    /// closed the connection. Cheaper than framing, for thousands of idle connections.
    pub async fn discard(&mut self) -> bool {
        match &mut self.io {
            Io::Tcp { stream, rbuf, .. } => {
                let n = poll_fn(|cx| {
                    let mut buf = ReadBuf::new(&mut rbuf[..]);
                    Pin::new(&mut *stream)
                        .poll_read(cx, &mut buf)
                        .map_ok(|()| buf.filled().len())
                })
                .await;
                matches!(n, Ok(n) if n > 0)
            }
            Io::Ws(ws) => !matches!(ws.next().await, None | Some(Err(_))),
        }
    }

    /// Reads whatever is available and calls `on_frame(type, body)` for each whole frame
    /// (each record opened first, once logged in). Returns `Ok(true)` when the peer closed the
    /// connection, `Ok(false)` once reading would block (the waker is registered then). A
    /// record that does not open is an error.
    pub fn poll_frames(
        &mut self,
        cx: &mut Context<'_>,
        mut on_frame: impl FnMut(u8, &[u8]),
    ) -> io::Result<bool> {
        let mut broken = None;
        let link = &mut self.link;
        let mut on_wire = |kind: u8, body: &[u8], whole: &[u8]| match link {
            None => on_frame(kind, body),
            Some(link) if broken.is_none() => match link.open(whole) {
                Ok(inner) if inner.len() >= PREFIX_LEN => on_frame(inner[0], &inner[PREFIX_LEN..]),
                Ok(_) => broken = Some(io::Error::other("a record holds no frame")),
                Err(e) => broken = Some(io::Error::other(e)),
            },
            Some(_) => {}
        };
        let closed = Self::poll_wire(&mut self.io, cx, &mut on_wire)?;
        match broken {
            Some(e) => Err(e),
            None => Ok(closed),
        }
    }

    /// Reads whatever is available and calls `on_wire(type, body, whole frame)` for each whole
    /// frame as it came.
    fn poll_wire(
        io: &mut Io,
        cx: &mut Context<'_>,
        on_wire: &mut impl FnMut(u8, &[u8], &[u8]),
    ) -> io::Result<bool> {
        match io {
            Io::Tcp {
                stream, rbuf, rlen, ..
            } => loop {
                if *rlen == rbuf.len() {
                    rbuf.resize((rbuf.len() * 2).max(MAX_BODY + PREFIX_LEN), 0);
                }
                let mut rb = ReadBuf::new(&mut rbuf[*rlen..]);
                match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                    Poll::Pending => return Ok(false),
                    Poll::Ready(r) => r?,
                }
                let n = rb.filled().len();
                if n == 0 {
                    return Ok(true);
                }
                *rlen += n;
                let mut at = 0;
                while *rlen - at >= PREFIX_LEN {
                    let len = usize::from(u16::from_be_bytes([rbuf[at + 1], rbuf[at + 2]]));
                    let end = at + PREFIX_LEN + len;
                    if end > *rlen {
                        break;
                    }
                    on_wire(rbuf[at], &rbuf[at + PREFIX_LEN..end], &rbuf[at..end]);
                    at = end;
                }
                rbuf.copy_within(at..*rlen, 0);
                *rlen -= at;
            },
            Io::Ws(ws) => loop {
                match Pin::new(&mut **ws).poll_next(cx) {
                    Poll::Pending => return Ok(false),
                    Poll::Ready(None) | Poll::Ready(Some(Ok(WsMessage::Close(_)))) => {
                        return Ok(true);
                    }
                    Poll::Ready(Some(Ok(WsMessage::Binary(b)))) if b.len() >= PREFIX_LEN => {
                        on_wire(b[0], &b[PREFIX_LEN..], &b);
                    }
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => return Err(io::Error::other(e)),
                }
            },
        }
    }

    /// Takes up to `max` frames, built by `build(i, buffer)` for i = 0, 1, ..., and writes as
    /// much as the socket accepts. Returns how many frames were taken. On TCP they are appended
    /// to one buffer and go out in as few writes as the socket allows; on WebSocket each is one
    /// binary message, queued in tungstenite's buffer and then flushed together. Once logged
    /// in, each frame is sealed into a record as it is taken.
    pub fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        max: u64,
        mut build: impl FnMut(u64, &mut Vec<u8>),
    ) -> io::Result<u64> {
        let mut taken = 0;
        let link = &mut self.link;
        let mut scratch = Vec::new();
        // Appends frame `i` to `out`, sealed if the link is up.
        let mut build = |i: u64, out: &mut Vec<u8>| -> io::Result<()> {
            match link {
                None => build(i, out),
                Some(link) => {
                    scratch.clear();
                    build(i, &mut scratch);
                    link.seal_into(&scratch, out).map_err(io::Error::other)?;
                }
            }
            Ok(())
        };
        match &mut self.io {
            Io::Tcp {
                stream, wbuf, wpos, ..
            } => {
                while taken < max {
                    build(taken, wbuf)?;
                    taken += 1;
                }
                while *wpos < wbuf.len() {
                    match Pin::new(&mut *stream).poll_write(cx, &wbuf[*wpos..]) {
                        Poll::Pending => break,
                        Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                        Poll::Ready(Ok(n)) => *wpos += n,
                        Poll::Ready(Err(e)) => return Err(e),
                    }
                }
                if *wpos == wbuf.len() {
                    wbuf.clear();
                    *wpos = 0;
                }
            }
            Io::Ws(ws) => {
                let mut ws = Pin::new(&mut **ws);
                while taken < max {
                    match ws.as_mut().poll_ready(cx) {
                        Poll::Pending => break,
                        Poll::Ready(r) => r.map_err(io::Error::other)?,
                    }
                    let mut frame = Vec::new();
                    build(taken, &mut frame)?;
                    ws.as_mut()
                        .start_send(WsMessage::Binary(Bytes::from(frame)))
                        .map_err(io::Error::other)?;
                    taken += 1;
                }
                if let Poll::Ready(r) = ws.as_mut().poll_flush(cx) {
                    r.map_err(io::Error::other)?;
                }
            }
        }
        Ok(taken)
    }
}
