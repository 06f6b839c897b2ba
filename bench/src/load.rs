//! The load of `relay`: P sender/receiver pairs, each sender writing M pre-built frames to its
//! receiver with at most W on their way, over raw TCP or WebSocket. The same code drives the
//! flexim server and the byte forwarder (`forwarder.rs`), so the two figures compare systems,
//! not load generators.
//!
//! The generator must be much cheaper per message than what it measures, because it shares the
//! machine's two cores with it. So nothing is sealed or encoded per message: each pair seals
//! ONE message at the start ([`Template`]) and sends its bytes again and again, with a
//! per-message sequence number patched in place into the `date` field (a fixed-width msgpack
//! int64; the relay never opens the box, so the stale seal does not matter). Each pair is one
//! task that owns both of its sockets and polls them by hand: it reads everything available,
//! then writes every frame its window allows in one buffer (one `write` per batch, not per
//! frame), so there is no cross-task signalling and syscalls are shared by many messages. The
//! receiver reads the fields it checks (`from`, `to`, `date`) with a small msgpack walker
//! instead of decoding the datum, and latencies go into a fixed-size histogram, with one
//! clock read per batch rather than per message.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use flexim_client::RawConnection;
use flexim_client::protocol::frame::PREFIX_LEN;
use flexim_client::protocol::status;
use flexim_client::protocol::{Datum, Message};
use futures_util::{Sink, Stream};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::stats::Latency;

/// Type byte of a Message frame.
const MESSAGE: u8 = 3;
/// Type byte of a Status frame.
const STATUS: u8 = 6;

/// What every pair does.
#[derive(Debug, Clone)]
pub struct Load {
    /// Messages each sender sends.
    pub messages: u64,
    /// Messages a pair may have on their way: sent, not yet received by its receiver.
    pub window: u64,
    /// Messages per second each sender may send (pacing), or `None` for as fast as the window
    /// allows.
    pub rate_per_pair: Option<f64>,
    /// Bound on the run.
    pub timeout: Duration,
}

/// A sealed Message frame whose `date` field can be overwritten in place.
#[derive(Debug, Clone)]
pub struct Template {
    /// The whole frame (prefix and body), with the sentinel in `date`.
    frame: Vec<u8>,
    /// Offset in `frame` of the 8 big-endian bytes of `date`.
    seq_at: usize,
}

/// The `date` the template is encoded with: negative and below -2^31, so msgpack writes it as
/// an int64 (marker 0xd3 and 8 bytes) and any sequence number written over it later keeps the
/// frame's length; its bytes are distinctive enough to be found exactly once.
const SENTINEL: i64 = -0x0123_4567_89ab_cdef;

impl Template {
    /// The frame of `message` (sealed once by the client library) without an id, so that the
    /// server takes its plain relay path: no ACK, no receipts.
    pub fn new(message: &Message) -> anyhow::Result<Template> {
        let mut m = message.clone();
        m.id = None;
        m.date = SENTINEL;
        let frame = Datum::Message(m).to_frame()?;
        let mut pattern = vec![0xd3];
        pattern.extend_from_slice(&SENTINEL.to_be_bytes());
        let mut found = frame
            .windows(pattern.len())
            .enumerate()
            .filter(|(_, w)| *w == pattern.as_slice())
            .map(|(i, _)| i + 1);
        let Some(seq_at) = found.next() else {
            bail!("the encoded message has no int64 date to patch");
        };
        if found.next().is_some() {
            bail!("the date sentinel occurs twice in the encoded message");
        }
        Ok(Template { frame, seq_at })
    }

    /// Length of every frame built from this template.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Appends the frame for sequence number `seq` to `out`.
    pub fn write(&self, seq: u64, out: &mut Vec<u8>) {
        let at = out.len() + self.seq_at;
        out.extend_from_slice(&self.frame);
        out[at..at + 8].copy_from_slice(&(seq as i64).to_be_bytes());
    }
}

/// A msgpack value as far as the receiver cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A string's bytes.
    Str(&'a [u8]),
    /// Any integer that fits in an i64.
    Int(i64),
    /// Anything else (skipped).
    Other,
}

/// A cursor over msgpack bytes.
struct Reader<'a> {
    /// The bytes.
    b: &'a [u8],
    /// Where the next value starts.
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    /// A big-endian unsigned number of `n` bytes (1, 2, 4 or 8).
    fn uint(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    }

    /// The next value; nested arrays and maps are skipped whole (depth-limited).
    fn value(&mut self, depth: u32) -> Option<Value<'a>> {
        if depth > 8 {
            return None;
        }
        let m = *self.b.get(self.at)?;
        self.at += 1;
        Some(match m {
            0x00..=0x7f => Value::Int(i64::from(m)),
            0xe0..=0xff => Value::Int(i64::from(m as i8)),
            0xa0..=0xbf => Value::Str(self.take(usize::from(m & 0x1f))?),
            0xd9..=0xdb => {
                let n = self.uint(1 << (m - 0xd9))? as usize;
                Value::Str(self.take(n)?)
            }
            0xcc..=0xcf => Value::Int(i64::try_from(self.uint(1 << (m - 0xcc))?).ok()?),
            0xd0 => Value::Int(i64::from(self.uint(1)? as u8 as i8)),
            0xd1 => Value::Int(i64::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Int(i64::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Int(self.uint(8)? as i64),
            0xc0 | 0xc2 | 0xc3 => Value::Other,
            0xca => self.take(4).map(|_| Value::Other)?,
            0xcb => self.take(8).map(|_| Value::Other)?,
            0xc4..=0xc6 => {
                let n = self.uint(1 << (m - 0xc4))? as usize;
                self.take(n).map(|_| Value::Other)?
            }
            0x90..=0x9f | 0xdc | 0xdd | 0x80..=0x8f | 0xde | 0xdf => {
                let (n, per) = match m {
                    0x90..=0x9f => (u64::from(m & 0x0f), 1),
                    0x80..=0x8f => (u64::from(m & 0x0f), 2),
                    0xdc => (self.uint(2)?, 1),
                    0xdd => (self.uint(4)?, 1),
                    0xde => (self.uint(2)?, 2),
                    _ => (self.uint(4)?, 2),
                };
                for _ in 0..n * per {
                    self.value(depth + 1)?;
                }
                Value::Other
            }
            // Ext types (and the unused 0xc1) never occur in FLEX datums.
            _ => return None,
        })
    }
}

/// Calls `f` with each key and value of the msgpack map `body`; `None` if it is not one.
pub fn map_fields<'a>(body: &'a [u8], mut f: impl FnMut(&'a [u8], Value<'a>)) -> Option<()> {
    let mut r = Reader { b: body, at: 0 };
    let m = *body.first()?;
    r.at = 1;
    let n = match m {
        0x80..=0x8f => u64::from(m & 0x0f),
        0xde => r.uint(2)?,
        0xdf => r.uint(4)?,
        _ => return None,
    };
    for _ in 0..n {
        let Value::Str(key) = r.value(0)? else {
            return None;
        };
        f(key, r.value(0)?);
    }
    (r.at == body.len()).then_some(())
}

/// The fields of a Message body the receiver checks: `from`, `to` and `date` (the sequence
/// number).
pub fn message_fields(body: &[u8]) -> Option<(&[u8], &[u8], i64)> {
    let (mut from, mut to, mut date) = (None, None, None);
    map_fields(body, |k, v| match (k, v) {
        (b"from", Value::Str(s)) => from = Some(s),
        (b"to", Value::Str(s)) => to = Some(s),
        (b"date", Value::Int(d)) => date = Some(d),
        _ => {}
    })?;
    Some((from?, to?, date?))
}

/// The code of a Status body.
pub fn status_code(body: &[u8]) -> Option<i64> {
    let mut code = None;
    map_fields(body, |k, v| {
        if let (b"status", Value::Int(c)) = (k, v) {
            code = Some(c);
        }
    })?;
    code
}

/// Latencies in nanoseconds, log-linear buckets with 64 steps per power of two (within 1.6%),
/// in a fixed amount of memory however many messages there are.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Samples per bucket.
    counts: Vec<u64>,
    /// Samples in total.
    n: u64,
    /// The largest sample, exactly.
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 128 + 57 * 64],
            n: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// The bucket of `v`: exact below 128, else the power of two and the next 6 bits.
    fn index(v: u64) -> usize {
        if v < 128 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let sub = (v >> (e - 6)) & 63;
        128 + (e as usize - 7) * 64 + sub as usize
    }

    /// The smallest value of bucket `i`, and its width.
    fn bounds(i: usize) -> (u64, u64) {
        if i < 128 {
            return (i as u64, 1);
        }
        let (e, sub) = ((i - 128) / 64 + 7, ((i - 128) % 64) as u64);
        ((64 + sub) << (e - 6), 1 << (e - 6))
    }

    /// Adds one sample.
    pub fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.n += 1;
        self.max = self.max.max(nanos);
    }

    /// Adds all of `other`'s samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (the middle of its bucket), in nanoseconds.
    fn quantile(&self, q: f64) -> u64 {
        let rank = ((self.n as f64 * q).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = Self::bounds(i);
                return low.saturating_add(width / 2).min(self.max);
            }
        }
        self.max
    }

    /// p50, p99 and max in milliseconds; all zero without samples.
    pub fn latency(&self) -> Latency {
        if self.n == 0 {
            return Latency::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Latency {
            p50_ms: ms(self.quantile(0.50)),
            p99_ms: ms(self.quantile(0.99)),
            max_ms: ms(self.max),
        }
    }
}

/// One end's socket, past any handshake.
pub enum Conn {
    /// Raw TCP: FLEX frames back to back.
    Tcp {
        /// The socket.
        stream: TcpStream,
        /// Read buffer; bytes `..rlen` are read and not yet parsed.
        rbuf: Vec<u8>,
        /// See `rbuf`.
        rlen: usize,
        /// Frames to write; bytes `wpos..` are not written yet.
        wbuf: Vec<u8>,
        /// See `wbuf`.
        wpos: usize,
    },
    /// WebSocket: one frame per binary message.
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// Size of a TCP read buffer: many frames per read, and always room for the largest frame.
const READ_BUF: usize = 256 * 1024;

impl Conn {
    /// A raw TCP connection whose first bytes (already read) are `read`.
    pub fn tcp(stream: TcpStream, read: &[u8]) -> Conn {
        let mut rbuf = vec![0; READ_BUF.max(read.len() * 2)];
        rbuf[..read.len()].copy_from_slice(read);
        Conn::Tcp {
            stream,
            rlen: read.len(),
            rbuf,
            wbuf: Vec::with_capacity(64 * 1024),
            wpos: 0,
        }
    }

    /// A logged-in client's connection.
    pub fn from_raw(raw: RawConnection) -> Conn {
        match raw {
            RawConnection::Tcp { stream, read } => Conn::tcp(stream, &read),
            RawConnection::WebSocket(ws) => Conn::Ws(ws),
        }
    }

    /// Reads whatever is available and calls `on_frame(type, body)` for each complete frame.
    /// Returns `Ok(true)` when the peer closed the connection, `Ok(false)` once reading would
    /// block (the waker is registered then).
    fn poll_frames(
        &mut self,
        cx: &mut Context<'_>,
        mut on_frame: impl FnMut(u8, &[u8]),
    ) -> io::Result<bool> {
        match self {
            Conn::Tcp {
                stream, rbuf, rlen, ..
            } => loop {
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
                    on_frame(rbuf[at], &rbuf[at + PREFIX_LEN..end]);
                    at = end;
                }
                rbuf.copy_within(at..*rlen, 0);
                *rlen -= at;
            },
            Conn::Ws(ws) => loop {
                match Pin::new(&mut **ws).poll_next(cx) {
                    Poll::Pending => return Ok(false),
                    Poll::Ready(None) | Poll::Ready(Some(Ok(WsMessage::Close(_)))) => {
                        return Ok(true);
                    }
                    Poll::Ready(Some(Ok(WsMessage::Binary(b)))) if b.len() >= PREFIX_LEN => {
                        on_frame(b[0], &b[PREFIX_LEN..]);
                    }
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => return Err(io::Error::other(e)),
                }
            },
        }
    }

    /// Takes up to `max` frames, built by `build(i, buffer)` for i = 0, 1, ..., and writes as
    /// much as the socket accepts. Returns how many frames were taken. On TCP they are
    /// appended to one buffer and go out in as few writes as the socket allows; on WebSocket
    /// each is one binary message, queued in tungstenite's buffer and then flushed together.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        max: u64,
        mut build: impl FnMut(u64, &mut Vec<u8>),
    ) -> io::Result<u64> {
        let mut taken = 0;
        match self {
            Conn::Tcp {
                stream, wbuf, wpos, ..
            } => {
                while taken < max {
                    build(taken, wbuf);
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
            Conn::Ws(ws) => {
                let mut ws = Pin::new(&mut **ws);
                while taken < max {
                    match ws.as_mut().poll_ready(cx) {
                        Poll::Pending => break,
                        Poll::Ready(r) => r.map_err(io::Error::other)?,
                    }
                    let mut frame = Vec::new();
                    build(taken, &mut frame);
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

/// One pair's connections and what its receiver expects.
pub struct Pair {
    /// The sender's connection.
    pub sender: Conn,
    /// The receiver's connection.
    pub receiver: Conn,
    /// The frame the sender sends, sealed once.
    pub template: Template,
    /// The `from` every frame must carry (the sender's key in hex).
    pub from: String,
    /// The `to` every frame must carry (the receiver's key in hex).
    pub to: String,
    /// Whether the far end answers every Message with Status RELAYED (the flexim server does;
    /// the byte forwarder does not).
    pub answers: bool,
}

/// One pair's counts.
#[derive(Debug, Default, Clone)]
pub struct PairStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages received in order from the right sender.
    pub delivered: u64,
    /// Messages received with the wrong `from` or `to`, or on the sender's connection.
    pub misrouted: u64,
    /// Messages received from the right sender with an unexpected sequence number.
    pub out_of_order: u64,
    /// Status RELAYED answers the sender read.
    pub relayed: u64,
    /// Error Status answers the sender read (a refused message).
    pub refused: u64,
    /// Frames neither end could parse.
    pub garbled: u64,
    /// Whether the pair was still running when the time ran out.
    pub timed_out: bool,
    /// Send-to-receive latencies.
    pub latency: Histogram,
}

/// A pair being driven.
struct Run {
    /// The connections and expectations.
    pair: Pair,
    /// The counts.
    stats: PairStats,
    /// Messages the receiver has read (in order or not): the window is `sent - received`.
    received: u64,
    /// The next sequence number the receiver expects.
    expected: u64,
    /// When each message in flight was sent, in nanoseconds since `epoch`, by `seq % window`.
    sent_at: Vec<u64>,
    /// Time zero of the run.
    epoch: Instant,
    /// Wakes the pair when pacing allows its next message.
    pacer: Pin<Box<tokio::time::Sleep>>,
    /// What to do.
    load: Load,
}

impl Run {
    /// Whether every message was accounted for (and answered, when answers come).
    fn done(&self) -> bool {
        let s = &self.stats;
        let m = self.load.messages;
        self.received + s.refused >= m && (!self.pair.answers || s.relayed + s.refused >= m)
    }

    /// One round: read both ends, then send what the window and the pacing allow.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Run {
                pair,
                stats,
                received,
                expected,
                sent_at,
                epoch,
                ..
            } = self;
            let now = epoch.elapsed().as_nanos() as u64;
            let window = sent_at.len() as u64;
            let closed = pair.receiver.poll_frames(cx, |kind, body| {
                if kind != MESSAGE {
                    // Presence notices and the like; an error Status would end the session
                    // and show as a closed connection.
                    return;
                }
                let Some((from, to, seq)) = message_fields(body) else {
                    stats.garbled += 1;
                    return;
                };
                if from != pair.from.as_bytes() || to != pair.to.as_bytes() {
                    stats.misrouted += 1;
                    return;
                }
                *received += 1;
                if seq as u64 == *expected {
                    *expected += 1;
                    stats.delivered += 1;
                    stats
                        .latency
                        .record(now.saturating_sub(sent_at[(seq as u64 % window) as usize]));
                } else {
                    stats.out_of_order += 1;
                    *expected = (seq as u64).saturating_add(1);
                }
            })?;
            if closed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the receiver's connection was closed",
                )));
            }
            let closed = pair.sender.poll_frames(cx, |kind, body| match kind {
                STATUS => match status_code(body) {
                    Some(c) if c == i64::from(status::RELAYED) => stats.relayed += 1,
                    Some(c) if c < 0 && c != -10 => stats.refused += 1,
                    Some(_) => {}
                    None => stats.garbled += 1,
                },
                MESSAGE => stats.misrouted += 1,
                _ => {}
            })?;
            if closed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the sender's connection was closed",
                )));
            }
            if self.done() {
                return Poll::Ready(Ok(()));
            }
            // What may go now: the window, the count, and the pacing.
            let mut allowed = (self.received + window).min(self.load.messages);
            let mut paced = false;
            if let Some(rate) = self.load.rate_per_pair {
                let due = (now as f64 / 1e9 * rate).floor() as u64 + 1;
                if due < allowed {
                    allowed = due;
                    paced = true;
                }
            }
            let first = self.stats.sent;
            let n = allowed.saturating_sub(first);
            let (template, sent_at) = (&self.pair.template, &mut self.sent_at);
            let taken = self.pair.sender.poll_send(cx, n, |i, out| {
                let seq = first + i;
                sent_at[(seq % window) as usize] = now;
                template.write(seq, out);
            })?;
            self.stats.sent += taken;
            if !paced {
                return Poll::Pending;
            }
            // Sleep until the next millisecond's worth of messages is due (at least one), so
            // that a paced sender writes about once per millisecond, like a client flushing on
            // a 1 ms timer (tokio's timer resolution) rather than once per message; if that
            // time is already past, go round again.
            let rate = self.load.rate_per_pair.unwrap_or(1.0);
            let quantum = (rate / 1000.0).ceil().max(1.0);
            let next = self.epoch
                + Duration::from_secs_f64((self.stats.sent as f64 + quantum - 1.0) / rate);
            self.pacer.as_mut().reset(next.into());
            if self.pacer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// The figures of one system under the load.
#[derive(Debug, Serialize, Clone)]
pub struct Outcome {
    /// Messages sent.
    pub sent: u64,
    /// Messages received in order from the right sender.
    pub delivered: u64,
    /// Messages sent and never received.
    pub lost: u64,
    /// Messages not even sent (a pair stopped early or the time ran out).
    pub unsent: u64,
    /// Messages at the wrong receiver.
    pub misrouted: u64,
    /// Messages received out of order.
    pub out_of_order: u64,
    /// Status RELAYED answers read by the senders (0 for the forwarder).
    pub relayed: u64,
    /// Messages the server refused with an error Status.
    pub refused: u64,
    /// Frames that could not be parsed.
    pub garbled: u64,
    /// Pairs that did not finish in time.
    pub timed_out_pairs: usize,
    /// Pairs that failed with an I/O error (the first error is printed).
    pub failed_pairs: usize,
    /// From the first send until the last pair finished, in seconds.
    pub elapsed_s: f64,
    /// Delivered messages per second.
    pub msgs_per_sec: f64,
    /// Send-to-receive latency.
    pub latency: Latency,
}

impl Outcome {
    /// Nothing lost, misrouted, out of order, refused or garbled, every pair finished, and
    /// every message answered when answers are due.
    pub fn correct(&self, answers: bool) -> bool {
        self.lost == 0
            && self.unsent == 0
            && self.misrouted == 0
            && self.out_of_order == 0
            && self.refused == 0
            && self.garbled == 0
            && self.timed_out_pairs == 0
            && self.failed_pairs == 0
            && (!answers || self.relayed == self.sent)
    }
}

/// Drives every pair at once until each is done or the time runs out.
pub async fn run(pairs: Vec<Pair>, load: &Load) -> anyhow::Result<Outcome> {
    let total = pairs.len() as u64 * load.messages;
    let epoch = Instant::now();
    let deadline = tokio::time::Instant::from_std(epoch + load.timeout);
    let mut tasks = Vec::new();
    for pair in pairs {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let window = load.window.max(1) as usize;
            let mut run = Run {
                pair,
                stats: PairStats::default(),
                received: 0,
                expected: 0,
                sent_at: vec![0; window],
                epoch,
                pacer: Box::pin(tokio::time::sleep_until(deadline)),
                load,
            };
            let result = tokio::time::timeout_at(deadline, poll_fn(|cx| run.poll(cx))).await;
            let finished = Instant::now();
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return (run.stats, finished, Some(e)),
                Err(_) => run.stats.timed_out = true,
            }
            (run.stats, finished, None)
        }));
    }
    let mut sum = PairStats::default();
    let (mut timed_out, mut failed, mut last) = (0, 0, epoch);
    for task in tasks {
        let (s, finished, error) = task.await.context("a pair's task panicked")?;
        if let Some(e) = error {
            if failed == 0 {
                eprintln!("error: a pair failed: {e}");
            }
            failed += 1;
        }
        timed_out += usize::from(s.timed_out);
        last = last.max(finished);
        sum.sent += s.sent;
        sum.delivered += s.delivered;
        sum.misrouted += s.misrouted;
        sum.out_of_order += s.out_of_order;
        sum.relayed += s.relayed;
        sum.refused += s.refused;
        sum.garbled += s.garbled;
        sum.latency.merge(&s.latency);
    }
    let elapsed = last - epoch;
    Ok(Outcome {
        sent: sum.sent,
        delivered: sum.delivered,
        // Sent and never received: in flight when the time ran out, or dropped.
        lost: sum.sent - (sum.delivered + sum.out_of_order).min(sum.sent),
        unsent: total - sum.sent.min(total),
        misrouted: sum.misrouted,
        out_of_order: sum.out_of_order,
        relayed: sum.relayed,
        refused: sum.refused,
        garbled: sum.garbled,
        timed_out_pairs: timed_out,
        failed_pairs: failed,
        elapsed_s: elapsed.as_secs_f64(),
        msgs_per_sec: crate::stats::rate(sum.delivered as usize, elapsed),
        latency: sum.latency.latency(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Message as the client library seals it, with a small date and an id.
    fn message() -> Message {
        Message {
            to: "a".repeat(64),
            from: "b".repeat(64),
            flags: vec![],
            date: 1_700_000_000,
            msg: "x".repeat(300),
            id: Some("0123456789abcdef0123456789abcdef".into()),
        }
    }

    #[test]
    fn patched_frames_decode_with_their_sequence_number() {
        let t = Template::new(&message()).unwrap();
        let mut out = Vec::new();
        for seq in [0u64, 1, 255, 1 << 40] {
            out.clear();
            t.write(seq, &mut out);
            assert_eq!(out.len(), t.len());
            // The library's own decoder agrees: the frame is a valid Message without an id.
            let (kind, body) = flexim_client::protocol::frame::split_exact(&out, 65535).unwrap();
            let Datum::Message(m) = Datum::decode(kind, body).unwrap() else {
                panic!("not a Message");
            };
            assert_eq!((m.date, m.id), (seq as i64, None));
            // And so does the receiver's walker.
            let (from, to, date) = message_fields(body).unwrap();
            assert_eq!(
                (from, to, date),
                (m.from.as_bytes(), m.to.as_bytes(), seq as i64)
            );
        }
    }

    #[test]
    fn status_codes_and_malformed_bodies() {
        let s = Datum::Status(flexim_client::protocol::Status::new(-10, "k")).to_frame();
        assert_eq!(status_code(&s.unwrap()[PREFIX_LEN..]), Some(-10));
        let s = Datum::Status(flexim_client::protocol::Status::new(3, "")).to_frame();
        assert_eq!(status_code(&s.unwrap()[PREFIX_LEN..]), Some(3));
        // Not a map, a cut-off string, trailing bytes.
        assert_eq!(message_fields(&[0x93, 1, 2, 3]), None);
        assert_eq!(message_fields(&[0x81, 0xa4, b'f', b'r']), None);
        assert_eq!(map_fields(&[0x80, 0x00], |_, _| {}), None);
    }

    #[test]
    fn histogram_percentiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let l = h.latency();
        assert!((l.p50_ms - 50.0).abs() / 50.0 < 0.02, "{l:?}");
        assert!((l.p99_ms - 99.0).abs() / 99.0 < 0.02, "{l:?}");
        assert_eq!(l.max_ms, 100.0);
        for v in [0, 1, 127, 128, 129, 255, 256, 1 << 40, u64::MAX] {
            let (low, width) = Histogram::bounds(Histogram::index(v));
            assert!(low <= v && v - low < width, "{v}");
        }
    }
}
