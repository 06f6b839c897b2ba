//! The fan-out itself: one sender (the room's admin) writing M room messages with ids, at most
//! W unreceipted ones at a time, and every other member a connection of its own that reads
//! its copies, acknowledges them in one ACK per read round (as clients do) and notes each
//! copy's latency from the moment it was sent.
//!
//! A receiver runs from before the room is formed: it must read the commits and the
//! invitation (and accept it, as a client does: an Acknowledge with the room's id) while the
//! room grows, or the server's queue to it would fill. It tells measured messages from commits
//! by their `date`, which for measured messages is the sequence number (far below any real
//! Unix time) and for commits the time they were made.
//!
//! Like `load/`, both ends poll their sockets by hand, one task per connection, and no message
//! is sealed while the load runs: the admin seals its M messages with MLS, and encodes their
//! frames, before the first is sent.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use flexim_client::protocol::datum::Acknowledge;
use flexim_client::protocol::{Datum, Status, status};
use flexim_testkit::Conn;

use crate::load::{Histogram, ID_LEN, ack_frame, message_fields, status_code};

/// Type byte of a Message frame.
const MESSAGE: u8 = 3;
/// Type byte of a Status frame.
const STATUS: u8 = 6;
/// Type byte of a Request frame (an invitation, here).
const REQUEST: u8 = 10;
/// Dates below this are sequence numbers of measured messages; commits carry real times.
const SEQ_LIMIT: i64 = 1_000_000_000;
/// Most ids in one ACK, as clients send them.
const ACK_BATCH: usize = 256;

/// What the sender and every receiver share.
pub struct Shared {
    /// Time zero of the latencies.
    pub epoch: Instant,
    /// When each measured message was sent, in nanoseconds since `epoch`.
    pub sent_at: Vec<AtomicU64>,
    /// Measured messages each receiver is to read: unknown (the largest number) until the room
    /// is formed, since a room that stops growing gets more messages per member.
    pub expect: AtomicU64,
    /// Invitations (Requests with a Welcome for this room) the receivers read.
    pub invited: AtomicUsize,
    /// Set once the sender has stopped: until then a receiver that has read everything keeps
    /// serving its connection, since its last ACK may still be in its buffer.
    pub finished: AtomicBool,
    /// The room, in hex.
    pub room: String,
    /// The sender's key, in hex.
    pub admin: String,
}

/// What one receiver saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Measured messages read in order.
    pub delivered: u64,
    /// Measured messages out of order (or repeated).
    pub out_of_order: u64,
    /// Messages of the wrong sender or room.
    pub misrouted: u64,
    /// Error answers (to its ACKs or its Acknowledge).
    pub refused: u64,
    /// Frames that could not be read.
    pub garbled: u64,
    /// Send-to-receive latencies of the measured messages.
    pub latency: Histogram,
    /// When it had read them all.
    pub finished: Option<Instant>,
}

/// A receiver's state while it runs.
struct Receiving {
    /// Its connection.
    conn: Conn,
    /// Shared with the sender.
    shared: Arc<Shared>,
    /// The next sequence number it expects.
    next: u64,
    /// Ids read and not acknowledged yet (every id here has 32 characters: the measured
    /// messages' and the commits').
    to_ack: Vec<[u8; ID_LEN]>,
    /// Frames to send besides ACKs (its acceptance of the invitation).
    out: Vec<Vec<u8>>,
    /// What it saw.
    seen: Seen,
    /// Whether it has read everything and only serves its connection until the sender stops.
    draining: bool,
}

impl Receiving {
    /// Handles one frame.
    fn on_frame(&mut self, kind: u8, body: &[u8], now: u64) {
        let seen = &mut self.seen;
        match kind {
            STATUS => match status_code(body) {
                Some(c) if c < 0 && c != i64::from(status::PRESENCE_OFFLINE) => seen.refused += 1,
                Some(_) => {}
                None => seen.garbled += 1,
            },
            MESSAGE => {
                let Some(m) = message_fields(body) else {
                    seen.garbled += 1;
                    return;
                };
                if m.from != self.shared.admin.as_bytes() || m.to != self.shared.room.as_bytes() {
                    seen.misrouted += 1;
                    return;
                }
                match m.id.and_then(|i| <[u8; ID_LEN]>::try_from(i).ok()) {
                    Some(id) => self.to_ack.push(id),
                    None => seen.garbled += 1,
                }
                if (0..SEQ_LIMIT).contains(&m.seq) {
                    let seq = m.seq as u64;
                    if seq == self.next {
                        self.next += 1;
                        seen.delivered += 1;
                        let at = self.shared.sent_at[seq as usize].load(Ordering::Relaxed);
                        seen.latency.record(now.saturating_sub(at));
                    } else {
                        seen.out_of_order += 1;
                    }
                }
            }
            REQUEST => match Datum::decode(kind, body) {
                Ok(Datum::Request(r)) if r.id.as_deref() == Some(&self.shared.room) => {
                    self.shared.invited.fetch_add(1, Ordering::Relaxed);
                    let accept = Datum::Acknowledge(Acknowledge {
                        id: self.shared.room.clone(),
                    });
                    self.out.extend(accept.to_frame().ok());
                }
                Ok(_) => {}
                Err(_) => seen.garbled += 1,
            },
            _ => {}
        }
    }

    /// One round: read everything available, then send the ACK and anything else due.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let now = self.shared.epoch.elapsed().as_nanos() as u64;
        let mut frames = Vec::new();
        let closed = self
            .conn
            .poll_frames(cx, |kind, body| frames.push((kind, body.to_vec())))?;
        for (kind, body) in frames {
            self.on_frame(kind, &body, now);
        }
        let mut batch: Vec<Vec<u8>> = std::mem::take(&mut self.out);
        for ids in std::mem::take(&mut self.to_ack).chunks(ACK_BATCH) {
            let mut frame = Vec::new();
            ack_frame(ids, &mut frame);
            batch.push(frame);
        }
        // On TCP every frame is taken at once (and written as the socket allows); with none,
        // this only flushes what an earlier round left.
        self.conn.poll_send(cx, batch.len() as u64, |i, out| {
            out.extend_from_slice(&batch[i as usize])
        })?;
        if closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed a receiver's connection",
            )));
        }
        let expect = self.shared.expect.load(Ordering::SeqCst);
        if !self.draining && self.seen.delivered + self.seen.out_of_order >= expect {
            self.seen.finished = Some(Instant::now());
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

/// Starts a receiver on `conn` that runs until it has read the measured messages.
pub fn spawn_receiver(
    conn: Conn,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<io::Result<Seen>> {
    tokio::spawn(async move {
        let mut r = Receiving {
            conn,
            shared,
            next: 0,
            to_ack: Vec::new(),
            out: Vec::new(),
            seen: Seen::default(),
            draining: false,
        };
        poll_fn(|cx| r.poll(cx)).await?;
        // A socket nobody polls writes nothing: keep flushing (and acknowledging anything
        // late) until the sender has its receipts, looking at the flag every few milliseconds.
        r.draining = true;
        while !r.shared.finished.load(Ordering::SeqCst) {
            let round = tokio::time::timeout(Duration::from_millis(5), poll_fn(|cx| r.poll(cx)));
            if let Ok(Err(e)) = round.await {
                return Err(e);
            }
        }
        Ok(r.seen)
    })
}

/// What the sender saw.
#[derive(Debug, Default)]
pub struct Sent {
    /// Messages sent.
    pub sent: u64,
    /// Answers `3` (every copy relayed) or `2` (some stored).
    pub answered: u64,
    /// Receipts (`7`) for measured messages, one per member and message.
    pub receipts: u64,
    /// Error answers.
    pub refused: u64,
    /// Frames that could not be read.
    pub garbled: u64,
    /// Send-to-receipt latencies.
    pub receipt_latency: Histogram,
    /// When the first message was sent.
    pub started: Option<Instant>,
}

/// The sender's state while it runs.
struct Sending<'a> {
    /// Its connection.
    conn: &'a mut Conn,
    /// The measured messages' frames, sealed in advance.
    frames: &'a [Vec<u8>],
    /// Shared with the receivers.
    shared: &'a Shared,
    /// Copies of each message (members but the sender).
    copies: u64,
    /// Messages that may be unreceipted at once.
    window: u64,
    /// What it saw.
    seen: Sent,
}

impl Sending<'_> {
    /// Handles a Status frame: an answer or a receipt.
    fn on_status(&mut self, body: &[u8], now: u64) {
        let Ok(Datum::Status(s)) = Datum::decode(STATUS, body) else {
            self.seen.garbled += 1;
            return;
        };
        match s.status {
            status::RELAYED | status::STORED => self.seen.answered += 1,
            status::DELIVERED => self.on_receipt(&s, now),
            c if c < 0 && c != status::PRESENCE_OFFLINE => {
                self.seen.refused += 1;
                if self.seen.refused == 1 {
                    eprintln!("rooms: a measured message was refused: {c} {}", s.payload);
                }
            }
            _ => {}
        }
    }

    /// Counts the receipts for measured messages (a commit's id starts with `c`).
    fn on_receipt(&mut self, s: &Status, now: u64) {
        for id in s.about().filter(|id| !id.starts_with('c')) {
            self.seen.receipts += 1;
            if let Some(at) = u64::from_str_radix(id, 16)
                .ok()
                .and_then(|seq| self.shared.sent_at.get(seq as usize))
            {
                let at = at.load(Ordering::Relaxed);
                self.seen.receipt_latency.record(now.saturating_sub(at));
            }
        }
    }

    /// Whether every message was answered and receipted by every member.
    fn done(&self) -> bool {
        let m = self.frames.len() as u64;
        self.seen.answered + self.seen.refused >= m && self.seen.receipts >= m * self.copies
    }

    /// One round: read answers and receipts, then send what the window allows.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let now = self.shared.epoch.elapsed().as_nanos() as u64;
            let mut statuses = Vec::new();
            let closed = self.conn.poll_frames(cx, |kind, body| {
                if kind == STATUS {
                    statuses.push(body.to_vec());
                }
            })?;
            for body in statuses {
                self.on_status(&body, now);
            }
            if closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if self.done() {
                return Poll::Ready(Ok(()));
            }
            let complete = self.seen.receipts / self.copies.max(1);
            let allowed = (complete + self.window).min(self.frames.len() as u64);
            let first = self.seen.sent;
            let n = allowed.saturating_sub(first);
            if n == 0 {
                // Flush what an earlier round left, then wait for receipts.
                self.conn.poll_send(cx, 0, |_, _| {})?;
                return Poll::Pending;
            }
            self.seen.started.get_or_insert_with(Instant::now);
            let (frames, shared) = (self.frames, self.shared);
            let taken = self.conn.poll_send(cx, n, |i, out| {
                let seq = first + i;
                shared.sent_at[seq as usize].store(now, Ordering::Relaxed);
                out.extend_from_slice(&frames[seq as usize]);
            })?;
            self.seen.sent += taken;
        }
    }
}

/// Sends `frames` on `conn` to a room of `copies + 1` members, at most `window` messages
/// unreceipted, until every one is answered and receipted.
pub async fn send(
    conn: &mut Conn,
    frames: &[Vec<u8>],
    shared: &Shared,
    copies: u64,
    window: u64,
) -> io::Result<Sent> {
    let mut s = Sending {
        conn,
        frames,
        shared,
        copies,
        window: window.max(1),
        seen: Sent::default(),
    };
    poll_fn(|cx| s.poll(cx)).await?;
    Ok(s.seen)
}
