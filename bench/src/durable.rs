//! Durable throughput: messages to offline recipients, each answered "stored" only after the
//! server's commit is on disk, then delivered, acknowledged, and receipted.
//!
//! P senders each write M messages to their own offline recipient, keeping up to W unanswered
//! (pipelined, as a real client does after a reconnect). Then the recipients log in, take
//! everything and acknowledge it as the client library does (one ACK per wake-up), while the senders collect their "delivered"
//! receipts. Every message is sealed end to end and carries an id; nothing is faked.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use flexim_client::protocol::status;
use flexim_client::{Answer, Client, Delivery, Event, Identity};
use serde::Serialize;

use crate::stats::{Latency, rate};

/// What to run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Sender/recipient pairs.
    pub pairs: usize,
    /// Messages per sender.
    pub messages: usize,
    /// Unanswered messages each sender may have.
    pub window: usize,
    /// Plaintext bytes per message.
    pub size: usize,
    /// Bound on each phase.
    pub timeout: Duration,
}

/// The figures.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Sender/recipient pairs.
    pub pairs: usize,
    /// Messages per sender.
    pub messages_per_sender: usize,
    /// Window per sender.
    pub window: usize,
    /// Plaintext bytes per message.
    pub size: usize,
    /// Bytes of one framed message on the wire (and on disk).
    pub frame_bytes: usize,
    /// Messages answered "stored" (2).
    pub stored: usize,
    /// Messages answered with anything else.
    pub refused: usize,
    /// Stored messages per second (first send to last "stored").
    pub stored_per_sec: f64,
    /// Send-to-"stored" latency.
    pub stored_latency: Latency,
    /// Store writes during the store phase (from `/metrics`; 0 if unknown).
    pub store_writes: u64,
    /// Store commits, each one disk sync, during the store phase (0 if unknown).
    pub store_commits: u64,
    /// Messages delivered to the recipients (first copies).
    pub delivered: usize,
    /// Stored messages that never arrived.
    pub lost: usize,
    /// Copies of a message that arrived again.
    pub duplicated: usize,
    /// Delivered and acknowledged messages per second (login to last ACK answer).
    pub drained_per_sec: f64,
    /// "delivered" receipts (7) the senders got.
    pub receipts: usize,
}

async fn connect(addr: &str) -> anyhow::Result<(Client, Identity)> {
    let me = Identity::generate()?;
    let c = Client::connect(addr, &me, None)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok((c, me))
}

/// Phase 1 for one sender: returns the ids answered "stored", the refusals, the latencies and
/// the size of one framed message.
async fn store_phase(
    c: &mut Client,
    to: &flexim_client::protocol::PublicKey,
    load: &Load,
) -> anyhow::Result<(Vec<String>, usize, Vec<Duration>, usize)> {
    let text = "x".repeat(load.size);
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(load.window);
    let (mut sent, mut stored, mut refused) = (0, Vec::new(), 0);
    let mut latencies = Vec::with_capacity(load.messages);
    let mut frame_bytes = 0;
    while stored.len() + refused < load.messages {
        while sent < load.messages && inflight.len() < load.window {
            let id = c.queue_text(to, &text, &[]).await?;
            frame_bytes = c.outbox().get(&id).map_or(0, |o| o.frame.len());
            inflight.push_back(Instant::now());
            sent += 1;
        }
        match c.next_event().await? {
            Event::Answer {
                answer: Answer::Sent { id, result, .. },
                ..
            } => {
                if let Some(t) = inflight.pop_front() {
                    latencies.push(t.elapsed());
                }
                match result {
                    Ok(s) if s.status == status::STORED => stored.push(id),
                    _ => refused += 1,
                }
            }
            Event::Closed => bail!("the server closed the connection"),
            _ => {}
        }
    }
    Ok((stored, refused, latencies, frame_bytes))
}

/// Phase 2 for one recipient: takes `expected` messages, acknowledging each once it is
/// processed (the client sends everything processed in one wake-up in one ACK); returns the
/// ids received and the number of copies the application saw (the engine drops copies, so
/// anything but 0 is a bug).
async fn drain(c: &mut Client, expected: usize) -> anyhow::Result<(HashSet<String>, usize)> {
    let mut got = HashSet::with_capacity(expected);
    let mut repeats = 0;
    while got.len() < expected || c.acks_pending() {
        match c.next_event().await? {
            Event::Message(m) => {
                let id = m.id.unwrap_or_default();
                if !got.insert(id.clone()) {
                    repeats += 1;
                }
                c.acknowledge(&id);
            }
            Event::Answer {
                answer:
                    Answer::Ack {
                        result: Err(refusal),
                        ..
                    },
                ..
            } => bail!("the server refused an ACK: {refusal}"),
            Event::Closed => bail!("the server closed the connection"),
            _ => {}
        }
    }
    Ok((got, repeats))
}

/// Waits for `n` "delivered" receipts.
async fn receipts(c: &mut Client, n: usize) -> anyhow::Result<usize> {
    let mut got = 0;
    while got < n {
        match c.next_event().await? {
            Event::Receipt {
                delivery: Delivery::Delivered,
                ..
            } => got += 1,
            Event::Closed => bail!("the server closed the connection"),
            _ => {}
        }
    }
    Ok(got)
}

/// Runs the load against the server at `tcp`; `metrics` reads the server's counters.
pub async fn run<F, Fut>(tcp: &str, load: &Load, metrics: F) -> anyhow::Result<Report>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<std::collections::HashMap<String, u64>>>,
{
    // Log everyone in first: the handshakes are not what this measures.
    let mut pairs = Vec::with_capacity(load.pairs);
    for _ in 0..load.pairs {
        let (mut sender, _) = connect(tcp).await?;
        // Messages go only to keys that have logged in once: each recipient does, and leaves;
        // the load starts once the server has seen it go (its messages are then stored).
        let (mut recipient, identity) = connect(tcp).await?;
        // The recipient accepted the sender (docs/PROTOCOL.md §14), which also lets the
        // sender see it go offline below.
        let sender_hex = sender.identity().public_key().to_hex();
        recipient.accept_request(&sender_hex).await?;
        recipient.close().await?;
        let hex = identity.public_key().to_hex();
        while sender.get_user(&hex).await?.online == Some(true) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pairs.push((sender, identity));
    }
    let before = metrics().await.unwrap_or_default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (mut sender, recipient) in pairs {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let to = recipient.public_key();
            let result = tokio::time::timeout(load.timeout, store_phase(&mut sender, &to, &load))
                .await
                .context("the store phase timed out")??;
            Ok::<_, anyhow::Error>((sender, recipient, result))
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await??);
    }
    let store_elapsed = start.elapsed();
    let after = metrics().await.unwrap_or_default();
    let delta = |name: &str| after.get(name).unwrap_or(&0) - before.get(name).unwrap_or(&0);

    let mut latencies = Vec::new();
    let (mut stored_total, mut refused, mut frame_bytes) = (0, 0, 0);
    let drain_start = Instant::now();
    let mut tasks = Vec::new();
    for (mut sender, recipient, (stored, r, lat, fb)) in done {
        stored_total += stored.len();
        refused += r;
        frame_bytes = fb;
        latencies.extend(lat);
        let load = load.clone();
        let tcp = tcp.to_string();
        tasks.push(tokio::spawn(async move {
            let expected = stored.len();
            let receipts = tokio::spawn(async move {
                let n = tokio::time::timeout(load.timeout, receipts(&mut sender, expected)).await;
                n.context("waiting for receipts timed out")?
            });
            let mut c = Client::connect(&tcp, &recipient, None).await?;
            let (got, repeats) = tokio::time::timeout(load.timeout, drain(&mut c, expected))
                .await
                .context("the drain phase timed out")??;
            let lost = stored.iter().filter(|id| !got.contains(*id)).count();
            let receipts = receipts.await??;
            Ok::<_, anyhow::Error>((got.len(), lost, repeats, receipts))
        }));
    }
    let (mut delivered, mut lost, mut duplicated, mut receipts_total) = (0, 0, 0, 0);
    for t in tasks {
        let (d, l, r, rc) = t.await??;
        delivered += d;
        lost += l;
        duplicated += r;
        receipts_total += rc;
    }
    let drain_elapsed = drain_start.elapsed();
    Ok(Report {
        pairs: load.pairs,
        messages_per_sender: load.messages,
        window: load.window,
        size: load.size,
        frame_bytes,
        stored: stored_total,
        refused,
        stored_per_sec: rate(stored_total, store_elapsed),
        stored_latency: Latency::of(&mut latencies),
        store_writes: delta("flexim_store_writes_total"),
        store_commits: delta("flexim_store_commits_total"),
        delivered,
        lost,
        duplicated,
        drained_per_sec: rate(delivered, drain_elapsed),
        receipts: receipts_total,
    })
}

impl Report {
    /// Nothing lost, duplicated or refused.
    pub fn correct(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.refused == 0 && self.receipts == self.stored
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let per_commit = if self.store_commits > 0 {
            format!(
                "{} writes in {} commits: {:.1} messages per disk sync",
                self.store_writes,
                self.store_commits,
                self.store_writes as f64 / self.store_commits as f64
            )
        } else {
            "commits unknown (no /metrics)".to_string()
        };
        format!(
            "durable: {} senders x {} messages of {} B text ({} B frames), window {}\n\
             stored:  {} in total, {:.0} msg/s; send-to-stored latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
             store:   {per_commit}\n\
             drain:   {} delivered and acknowledged, {:.0} msg/s; {} receipts; lost {}, duplicated {}, refused {}",
            self.pairs,
            self.messages_per_sender,
            self.size,
            self.frame_bytes,
            self.window,
            self.stored,
            self.stored_per_sec,
            self.stored_latency.p50_ms,
            self.stored_latency.p99_ms,
            self.stored_latency.max_ms,
            self.delivered,
            self.drained_per_sec,
            self.receipts,
            self.lost,
            self.duplicated,
            self.refused,
        )
    }
}
