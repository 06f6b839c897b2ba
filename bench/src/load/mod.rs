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
//!
//! In ids mode (the path real clients take) each message also carries a unique id, patched
//! in place like the sequence number; each receiver acknowledges the ids it read in one ACK
//! per read round (at most 256 ids each), and each sender counts the receipts (`7`, naming
//! one message in `id` or several in `ids`).

mod frames;
mod histogram;

pub use frames::{ID_LEN, Template, ack_frame, message_fields, status_code};
pub use histogram::Histogram;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use flexim_client::protocol::status;
use serde::Serialize;

use crate::stats::Latency;
use frames::{ACK_BATCH, status_fields};

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

/// One end's socket, past any handshake: the kit's framed connection, polled by hand.
pub use flexim_testkit::Conn;

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
    /// Error Status answers the sender read (a refused message), or the receiver (a refused
    /// ACK).
    pub refused: u64,
    /// Frames neither end could parse.
    pub garbled: u64,
    /// Messages named by the receipts (`7`) the sender read, in ids mode.
    pub receipts: u64,
    /// ACKs the receiver sent, in ids mode.
    pub acks: u64,
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
    /// Ids the receiver read and has not acknowledged yet (ids mode).
    to_ack: Vec<[u8; ID_LEN]>,
    /// Time zero of the run.
    epoch: Instant,
    /// Wakes the pair when pacing allows its next message.
    pacer: Pin<Box<tokio::time::Sleep>>,
    /// What to do.
    load: Load,
}

/// A connection the far end closed, as the error that ends the pair.
fn closed(which: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the {which}'s connection was closed"),
    )
}

impl Run {
    /// Whether every message was accounted for (and answered, when answers come; and
    /// receipted, in ids mode).
    fn done(&self) -> bool {
        let s = &self.stats;
        let m = self.load.messages;
        let ids = self.pair.template.has_ids();
        self.received + s.refused >= m
            && (!self.pair.answers || s.relayed + s.refused >= m)
            && (!ids || !self.pair.answers || s.receipts + s.refused >= m)
    }

    /// One round: read both ends, acknowledge what was read, then send what the window and
    /// the pacing allow.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let now = self.epoch.elapsed().as_nanos() as u64;
            self.read_receiver(cx, now)?;
            self.acknowledge(cx)?;
            self.read_sender(cx)?;
            if self.done() {
                return Poll::Ready(Ok(()));
            }
            if !self.send(cx, now)? {
                return Poll::Pending;
            }
        }
    }

    /// Reads what reached the receiver: checks each message, notes its latency and its id.
    fn read_receiver(&mut self, cx: &mut Context<'_>, now: u64) -> io::Result<()> {
        let Run {
            pair,
            stats,
            received,
            expected,
            sent_at,
            to_ack,
            ..
        } = self;
        let window = sent_at.len() as u64;
        let ids = pair.template.has_ids() && pair.answers;
        let closed_now = pair.receiver.poll_frames(cx, |kind, body| {
            if kind == STATUS {
                // The answers to its ACKs (and presence notices); an error is a refusal.
                match status_code(body) {
                    Some(c) if c < 0 && c != -10 => stats.refused += 1,
                    Some(_) => {}
                    None => stats.garbled += 1,
                }
                return;
            }
            if kind != MESSAGE {
                return;
            }
            let Some(m) = message_fields(body) else {
                stats.garbled += 1;
                return;
            };
            if m.from != pair.from.as_bytes() || m.to != pair.to.as_bytes() {
                stats.misrouted += 1;
                return;
            }
            if ids {
                match m.id.and_then(|i| <[u8; ID_LEN]>::try_from(i).ok()) {
                    Some(id) => to_ack.push(id),
                    None => stats.garbled += 1,
                }
            }
            *received += 1;
            let seq = m.seq as u64;
            if seq == *expected {
                *expected += 1;
                stats.delivered += 1;
                let at = sent_at[(seq % window) as usize];
                stats.latency.record(now.saturating_sub(at));
            } else {
                stats.out_of_order += 1;
                *expected = seq.saturating_add(1);
            }
        })?;
        if closed_now {
            return Err(closed("receiver"));
        }
        Ok(())
    }

    /// Sends one ACK per round for the ids the receiver read, at most [`ACK_BATCH`] each.
    fn acknowledge(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.to_ack.is_empty() {
            return Ok(());
        }
        let ids = std::mem::take(&mut self.to_ack);
        let chunks: Vec<&[[u8; ID_LEN]]> = ids.chunks(ACK_BATCH).collect();
        let n = chunks.len() as u64;
        let taken = self.pair.receiver.poll_send(cx, n, |i, out| {
            ack_frame(chunks[i as usize], out);
        })?;
        self.stats.acks += taken;
        // A WebSocket that takes no more now keeps the rest for the next round.
        self.to_ack = chunks[taken as usize..].concat();
        Ok(())
    }

    /// Reads what reached the sender: answers and receipts.
    fn read_sender(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let stats = &mut self.stats;
        let closed_now = self.pair.sender.poll_frames(cx, |kind, body| match kind {
            STATUS => match status_fields(body) {
                Some((c, _)) if c == i64::from(status::RELAYED) => stats.relayed += 1,
                Some((c, n)) if c == i64::from(status::DELIVERED) => stats.receipts += n,
                Some((c, _)) if c < 0 && c != -10 => stats.refused += 1,
                Some(_) => {}
                None => stats.garbled += 1,
            },
            MESSAGE => stats.misrouted += 1,
            _ => {}
        })?;
        if closed_now {
            return Err(closed("sender"));
        }
        Ok(())
    }

    /// Sends what the window, the count and the pacing allow. Returns whether to go round
    /// again at once (paced, and the next messages are due already).
    fn send(&mut self, cx: &mut Context<'_>, now: u64) -> io::Result<bool> {
        let window = self.sent_at.len() as u64;
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
            return Ok(false);
        }
        // Sleep until the next millisecond's worth of messages is due (at least one), so
        // that a paced sender writes about once per millisecond, like a client flushing on
        // a 1 ms timer (tokio's timer resolution) rather than once per message; if that
        // time is already past, go round again.
        let rate = self.load.rate_per_pair.unwrap_or(1.0);
        let quantum = (rate / 1000.0).ceil().max(1.0);
        let next =
            self.epoch + Duration::from_secs_f64((self.stats.sent as f64 + quantum - 1.0) / rate);
        self.pacer.as_mut().reset(next.into());
        Ok(self.pacer.as_mut().poll(cx).is_ready())
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
    /// Messages named by the receipts (`7`) the senders read; in ids mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<u64>,
    /// ACKs the receivers sent; in ids mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acks: Option<u64>,
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
    /// Nothing lost, misrouted, out of order, refused or garbled, every pair finished, every
    /// message answered when answers are due, and in ids mode every message receipted once.
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
            && (!answers || self.receipts.is_none_or(|r| r == self.sent))
    }
}

/// Drives one pair until it is done or `deadline`; its counts, when it finished, and the
/// error that stopped it, if one did.
async fn drive(
    pair: Pair,
    load: Load,
    epoch: Instant,
    deadline: tokio::time::Instant,
) -> (PairStats, Instant, Option<io::Error>) {
    let window = load.window.max(1) as usize;
    let mut run = Run {
        pair,
        stats: PairStats::default(),
        received: 0,
        expected: 0,
        sent_at: vec![0; window],
        to_ack: Vec::new(),
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
}

/// Drives every pair at once until each is done or the time runs out.
pub async fn run(pairs: Vec<Pair>, load: &Load) -> anyhow::Result<Outcome> {
    let total = pairs.len() as u64 * load.messages;
    let ids = pairs
        .first()
        .is_some_and(|p| p.template.has_ids() && p.answers);
    let epoch = Instant::now();
    let deadline = tokio::time::Instant::from_std(epoch + load.timeout);
    let tasks: Vec<_> = pairs
        .into_iter()
        .map(|pair| tokio::spawn(drive(pair, load.clone(), epoch, deadline)))
        .collect();
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
        sum.receipts += s.receipts;
        sum.acks += s.acks;
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
        receipts: ids.then_some(sum.receipts),
        acks: ids.then_some(sum.acks),
        timed_out_pairs: timed_out,
        failed_pairs: failed,
        elapsed_s: elapsed.as_secs_f64(),
        msgs_per_sec: crate::stats::rate(sum.delivered as usize, elapsed),
        latency: sum.latency.latency(),
    })
}

#[cfg(test)]
mod tests {
    use super::frames::{ack_frame, map_fields};
    use super::*;
    use flexim_client::protocol::frame::PREFIX_LEN;
    use flexim_client::protocol::{Datum, Message};

    /// A Message as the client library seals it, with a small date and an id.
    fn message() -> Message {
        Message {
            to: "a".repeat(64),
            from: "b".repeat(64),
            flags: vec![],
            date: 1_700_000_000,
            msg: "x".repeat(300),
            id: Some("0123456789abcdef0123456789abcdef".into()),
            ..Default::default()
        }
    }

    #[test]
    fn patched_frames_decode_with_their_sequence_number() {
        let t = Template::new(&message(), false).unwrap();
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
            let f = message_fields(body).unwrap();
            assert_eq!(
                (f.from, f.to, f.seq, f.id),
                (m.from.as_bytes(), m.to.as_bytes(), seq as i64, None)
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
    fn in_ids_mode_each_frame_carries_its_own_id() {
        let t = Template::new(&message(), true).unwrap();
        let mut out = Vec::new();
        for seq in [0u64, 1, 0xabc, u64::MAX] {
            out.clear();
            t.write(seq, &mut out);
            assert_eq!(out.len(), t.len());
            let (kind, body) = flexim_client::protocol::frame::split_exact(&out, 65535).unwrap();
            let Datum::Message(m) = Datum::decode(kind, body).unwrap() else {
                panic!("not a Message");
            };
            let want = format!("{seq:032x}");
            assert_eq!((m.date, m.id.as_deref()), (seq as i64, Some(want.as_str())));
            assert!(flexim_client::protocol::status::validate_id(&want).is_ok());
            assert_eq!(message_fields(body).unwrap().id, Some(want.as_bytes()));
        }
    }

    #[test]
    fn acks_and_receipts_are_what_the_protocol_says() {
        for n in [1usize, 15, 16, 256] {
            let ids: Vec<[u8; 32]> = (0..n)
                .map(|i| format!("{i:032x}").into_bytes().try_into().unwrap())
                .collect();
            let mut out = vec![9, 9];
            ack_frame(&ids, &mut out);
            let (kind, body) =
                flexim_client::protocol::frame::split_exact(&out[2..], 65535).unwrap();
            let Datum::Command(c) = Datum::decode(kind, body).unwrap() else {
                panic!("not a Command");
            };
            assert_eq!(c.cmd, "ACK");
            let want: Vec<String> = (0..n).map(|i| format!("{i:032x}")).collect();
            assert_eq!(c.payload, want);
        }
        let one = flexim_client::protocol::Status::new(7, "d").with_ids(vec!["a".into()]);
        let many = flexim_client::protocol::Status::new(7, "d")
            .with_ids((0..20).map(|i| format!("{i}")).collect());
        for (s, n) in [(one, 1), (many, 20)] {
            let f = Datum::Status(s).to_frame().unwrap();
            assert_eq!(super::frames::status_fields(&f[PREFIX_LEN..]), Some((7, n)));
        }
    }
}
