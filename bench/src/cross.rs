//! Cross-node throughput and latency: senders on one node, their online recipients on
//! another, both nodes on one Redis. Every message is sealed, carries an id, is acknowledged
//! by its recipient, and its "delivered" receipt travels back to the sender's node.
//!
//! Each sender keeps at most W messages that its recipient has not received yet (an
//! end-to-end window), so the figures measure the whole path: sender's node, Redis (commit,
//! then a wake-up on the recipient node's channel), recipient's node, recipient.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use flexim_client::protocol::PublicKey;
use flexim_client::{Answer, Client, Delivery, Event, Identity};
use serde::Serialize;
use tokio::sync::{Mutex, Notify};

use crate::stats::{Latency, rate};

/// What to run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Sender/recipient pairs.
    pub pairs: usize,
    /// Messages per sender.
    pub messages: usize,
    /// Messages a sender may have on their way (sent, not yet received).
    pub window: usize,
    /// Plaintext bytes per message.
    pub size: usize,
    /// Bound on the run.
    pub timeout: Duration,
}

/// The figures.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Whether sender and recipient were on different nodes.
    pub cross_node: bool,
    /// Pairs.
    pub pairs: usize,
    /// Messages per sender.
    pub messages_per_sender: usize,
    /// Window per sender.
    pub window: usize,
    /// Messages received (first copies).
    pub delivered: usize,
    /// Received messages per second.
    pub delivered_per_sec: f64,
    /// Send-to-receive latency.
    pub latency: Latency,
    /// "delivered" receipts the senders got.
    pub receipts: usize,
    /// Messages never received.
    pub lost: usize,
    /// Copies received again.
    pub duplicated: usize,
}

/// What a pair shares: send times by id, and how many the recipient has.
#[derive(Default)]
struct Pair {
    /// When each message in flight was sent.
    sent_at: Mutex<HashMap<String, Instant>>,
    /// Messages the recipient has received.
    received: AtomicUsize,
    /// Wakes the sender when its window opens.
    progress: Notify,
}

async fn sender(
    mut c: Client,
    to: PublicKey,
    pair: Arc<Pair>,
    load: Load,
) -> anyhow::Result<usize> {
    let text = "x".repeat(load.size);
    let (mut sent, mut receipts) = (0usize, 0usize);
    loop {
        while sent < load.messages && sent - pair.received.load(Ordering::Acquire) < load.window {
            let id = c.queue_text(&to, &text, &[]).await?;
            pair.sent_at.lock().await.insert(id, Instant::now());
            sent += 1;
        }
        if sent == load.messages && receipts == load.messages {
            return Ok(receipts);
        }
        tokio::select! {
            event = c.next_event() => match event? {
                Event::Receipt { delivery: Delivery::Delivered, .. } => receipts += 1,
                Event::Answer { answer: Answer::Sent { result: Err(refusal), .. }, .. } => {
                    bail!("the server refused a message: {refusal}")
                }
                Event::Closed => bail!("the server closed the sender's connection"),
                _ => {}
            },
            _ = pair.progress.notified() => {}
        }
    }
}

async fn recipient(
    mut c: Client,
    pair: Arc<Pair>,
    load: Load,
) -> anyhow::Result<(usize, usize, Vec<Duration>)> {
    let mut got = HashSet::with_capacity(load.messages);
    let (mut repeats, mut latencies) = (0, Vec::with_capacity(load.messages));
    while got.len() < load.messages || c.acks_pending() {
        match c.next_event().await? {
            Event::Message(m) => {
                let id = m.id.unwrap_or_default();
                if got.insert(id.clone()) {
                    if let Some(t) = pair.sent_at.lock().await.remove(&id) {
                        latencies.push(t.elapsed());
                    }
                    pair.received.fetch_add(1, Ordering::Release);
                    pair.progress.notify_one();
                } else {
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
            } => {
                bail!("the server refused an ACK: {refusal}")
            }
            Event::Closed => bail!("the server closed the recipient's connection"),
            _ => {}
        }
    }
    Ok((got.len(), repeats, latencies))
}

/// Runs the load: senders log in at `from`, recipients at `to` (the same address for the
/// single-node comparison).
pub async fn run(from: &str, to: &str, load: &Load) -> anyhow::Result<Report> {
    let mut tasks = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..load.pairs {
        let (s_id, r_id) = (Identity::generate()?, Identity::generate()?);
        let s = Client::connect(from, &s_id, None)
            .await
            .with_context(|| format!("connecting to {from}"))?;
        let mut r = Client::connect(to, &r_id, None)
            .await
            .with_context(|| format!("connecting to {to}"))?;
        // The pair are contacts (docs/PROTOCOL.md §14): the recipient accepted the sender.
        r.accept_request(&s_id.public_key().to_hex()).await?;
        starts.push((s, r, r_id.public_key()));
    }
    let start = Instant::now();
    for (s, r, to_key) in starts {
        let pair = Arc::new(Pair::default());
        let (l1, l2) = (load.clone(), load.clone());
        let p = pair.clone();
        let send = tokio::spawn(async move { sender(s, to_key, p, l1).await });
        let recv = tokio::spawn(async move { recipient(r, pair, l2).await });
        tasks.push((send, recv));
    }
    let (mut delivered, mut duplicated, mut receipts) = (0, 0, 0);
    let mut latencies = Vec::new();
    for (send, recv) in tasks {
        let (d, dup, lat) = tokio::time::timeout(load.timeout, recv)
            .await
            .context("the run timed out")???;
        receipts += tokio::time::timeout(load.timeout, send)
            .await
            .context("waiting for receipts timed out")???;
        delivered += d;
        duplicated += dup;
        latencies.extend(lat);
    }
    let elapsed = start.elapsed();
    Ok(Report {
        cross_node: from != to,
        pairs: load.pairs,
        messages_per_sender: load.messages,
        window: load.window,
        delivered,
        delivered_per_sec: rate(delivered, elapsed),
        latency: Latency::of(&mut latencies),
        receipts,
        lost: load.pairs * load.messages - delivered,
        duplicated,
    })
}

impl Report {
    /// Nothing lost or duplicated, a receipt for every message.
    pub fn correct(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.receipts == self.delivered
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} pairs x {} messages, window {}\n\
             delivered {} ({:.0} msg/s); send-to-receive latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
             receipts {}; lost {}, duplicated {}",
            if self.cross_node {
                "cross-node (senders on node A, recipients on node B, one Redis)"
            } else {
                "same node (senders and recipients on node A, Redis store)"
            },
            self.pairs,
            self.messages_per_sender,
            self.window,
            self.delivered,
            self.delivered_per_sec,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.receipts,
            self.lost,
            self.duplicated,
        )
    }
}
