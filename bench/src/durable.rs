//! Durable throughput: messages to offline recipients, each answered "stored" only after the
//! server's commit is on disk, then delivered, acknowledged, and receipted.
//!
//! P senders each write M messages to their own offline recipient, keeping up to W unanswered
//! (pipelined, as a real client does after a reconnect). Then the recipients log in, take
//! everything and acknowledge it in batches, while the senders collect their "delivered"
//! receipts. Every message is sealed end to end and carries an id; nothing is faked.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use flexim_client::protocol::status::{self, cmd};
use flexim_client::protocol::{Command, Datum};
use flexim_client::{Client, Identity};
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
    /// Ids per ACK.
    pub ack_batch: usize,
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

/// Phase 1 for one sender: returns the ids answered "stored", the refusals and latencies.
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
            let m = Datum::Message(c.seal_message(to, &text, &[])?);
            frame_bytes = m.to_frame()?.len();
            c.send_datum(&m).await?;
            inflight.push_back(Instant::now());
            sent += 1;
        }
        match c.recv_datum().await? {
            Some(Datum::Status(s)) if s.id.is_some() && !status::is_notice(s.status) => {
                if let Some(t) = inflight.pop_front() {
                    latencies.push(t.elapsed());
                }
                match (s.status, s.id) {
                    (status::STORED, Some(id)) => stored.push(id),
                    _ => refused += 1,
                }
            }
            Some(_) => {}
            None => bail!("the server closed the connection"),
        }
    }
    Ok((stored, refused, latencies, frame_bytes))
}

/// Phase 2 for one recipient: takes `expected` messages, acknowledging in batches; returns
/// the ids received (first copies) and the number of repeats.
async fn drain(
    c: &mut Client,
    expected: usize,
    batch: usize,
) -> anyhow::Result<(HashSet<String>, usize)> {
    let mut got = HashSet::with_capacity(expected);
    let mut repeats = 0;
    let mut to_ack: Vec<String> = Vec::with_capacity(batch);
    let (mut acks_sent, mut acks_answered) = (0usize, 0usize);
    loop {
        if to_ack.len() >= batch || (got.len() >= expected && !to_ack.is_empty()) {
            let ids: Vec<&str> = to_ack.iter().map(String::as_str).collect();
            c.send_datum(&Command::new(cmd::ACK, &ids).into()).await?;
            acks_sent += 1;
            to_ack.clear();
        }
        if got.len() >= expected && acks_answered == acks_sent {
            return Ok((got, repeats));
        }
        match c.recv_datum().await? {
            Some(Datum::Message(m)) => {
                let id = m.id.unwrap_or_default();
                if !got.insert(id.clone()) {
                    repeats += 1;
                }
                to_ack.push(id);
            }
            Some(Datum::Status(s)) if s.status == status::OK => acks_answered += 1,
            Some(Datum::Status(s)) if status::is_error(s.status) => {
                bail!("the server refused an ACK: {}", s.payload)
            }
            Some(_) => {}
            None => bail!("the server closed the connection"),
        }
    }
}

/// Waits for `n` "delivered" receipts.
async fn receipts(c: &mut Client, n: usize) -> anyhow::Result<usize> {
    let mut got = 0;
    while got < n {
        match c.recv_datum().await? {
            // One receipt may name several messages (`ids`).
            Some(Datum::Status(s)) if s.status == status::DELIVERED => got += s.about().count(),
            Some(_) => {}
            None => bail!("the server closed the connection"),
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
        let (sender, _) = connect(tcp).await?;
        let recipient = Identity::generate()?;
        pairs.push((sender, recipient));
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
            let (got, repeats) =
                tokio::time::timeout(load.timeout, drain(&mut c, expected, load.ack_batch))
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
