//! What a held connection does until the end of the run: an idle one only reads (and throws
//! away presence notices); a chatter pair exchanges sealed messages with ids through the
//! client engine, which seals, opens, drops copies and acknowledges, as in a real client.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flexim_protocol::PublicKey;
use flexim_session::{Answer, Delivery, Engine, Event};
use flexim_testkit::{Conn, unix_now};
use tokio::sync::watch;

/// Where a worker's connections are in the run; every connection task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Opening and idle: connections only read (and throw away presence notices).
    Idle,
    /// The chatter pairs send.
    Chatter,
    /// The senders stop; the last messages, answers and receipts arrive.
    Drain,
    /// Every connection closes.
    Close,
}

/// What a connection does while held.
pub(super) enum Role {
    /// Nothing but reading.
    Idle,
    /// Sends messages to this peer at the chatter rate.
    Sender(PublicKey),
    /// Opens what arrives from this peer (which it accepted: docs/PROTOCOL.md §14), checks
    /// it, acknowledges it.
    Receiver(PublicKey),
}

/// The chatter's counts, shared by the connection tasks of one worker.
#[derive(Default)]
pub(super) struct Counters {
    /// Messages sent.
    pub(super) sent: AtomicU64,
    /// Messages answered as relayed or stored (3, 2, or the receipt 8).
    pub(super) answered: AtomicU64,
    /// Messages answered with an error.
    pub(super) refused: AtomicU64,
    /// Distinct messages received.
    pub(super) received: AtomicU64,
    /// Messages the application was given again (the engine drops copies: anything but 0 is
    /// a bug).
    pub(super) duplicated: AtomicU64,
    /// Messages that did not open or did not say when they were sent.
    pub(super) unreadable: AtomicU64,
    /// "delivered" receipts (7) the senders got.
    pub(super) receipts: AtomicU64,
    /// Connections the server closed before the end.
    pub(super) closed_early: AtomicU64,
}

impl Counters {
    /// A counter's value.
    pub(super) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether everything sent has arrived, been answered and been receipted.
    pub(super) fn settled(&self) -> bool {
        let sent = Self::get(&self.sent);
        Self::get(&self.received) >= sent
            && Self::get(&self.answered) + Self::get(&self.refused) >= sent
            && Self::get(&self.receipts) >= Self::get(&self.received)
    }
}

/// What every connection task of a worker shares.
pub(super) struct Shared {
    /// The chatter's counts.
    pub(super) counters: Counters,
    /// The worker's clock: messages carry their send time as microseconds since it.
    pub(super) epoch: Instant,
    /// Time between two messages of one pair.
    pub(super) period: Duration,
}

/// Holds one logged-in connection until the stage says close, doing its role; returns the
/// send-to-receive latencies a receiver saw, in milliseconds.
pub(super) async fn hold(
    conn: Conn,
    engine: Engine,
    role: Role,
    stage: watch::Receiver<Stage>,
    shared: Arc<Shared>,
) -> Vec<f32> {
    match role {
        Role::Idle => {
            // An idle connection needs no protocol state, only its socket.
            drop(engine);
            hold_idle(conn, stage, &shared).await;
            Vec::new()
        }
        role => chatter(conn, engine, role, stage, &shared).await,
    }
}

/// Reads and throws away until the end.
async fn hold_idle(mut conn: Conn, mut stage: watch::Receiver<Stage>, shared: &Shared) {
    loop {
        tokio::select! {
            changed = stage.changed() => {
                if changed.is_err() || *stage.borrow_and_update() == Stage::Close {
                    return;
                }
            }
            alive = conn.discard() => if !alive {
                Counters::inc(&shared.counters.closed_early);
                return;
            }
        }
    }
}

/// One end of a chatter pair, until the end.
async fn chatter(
    mut conn: Conn,
    mut engine: Engine,
    role: Role,
    mut stage: watch::Receiver<Stage>,
    shared: &Shared,
) -> Vec<f32> {
    let c = &shared.counters;
    let mut latencies = Vec::new();
    let mut seen = HashSet::new();
    let mut tick = tokio::time::interval(shared.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut now = *stage.borrow_and_update();
    if let Role::Receiver(peer) = &role
        && (engine.accept_request(&peer.to_hex()).is_err()
            || conn.send_transmits(&mut engine).await.is_err())
    {
        Counters::inc(&c.closed_early);
        return latencies;
    }
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
                let Role::Sender(peer) = &role else { unreachable!("only senders tick") };
                // The drain may have begun since this loop last looked: send nothing then.
                if *stage.borrow() != Stage::Chatter {
                    continue;
                }
                // Counted before it is written, so the drain (which waits until everything
                // counted has arrived) can never see the count before this message.
                Counters::inc(&c.sent);
                let text = shared.epoch.elapsed().as_micros().to_string();
                let sent = engine.send_text(peer, &text, &[], unix_now()).is_ok()
                    && conn.send_transmits(&mut engine).await.is_ok();
                if !sent {
                    Counters::inc(&c.closed_early);
                    break;
                }
            }
            frame = conn.next_frame() => {
                let Ok(Some(frame)) = frame else {
                    Counters::inc(&c.closed_early);
                    break;
                };
                engine.handle_bytes(&frame);
                while let Some(event) = engine.poll_event() {
                    count(event, &mut engine, shared, &mut seen, &mut latencies);
                }
                // Everything this read brought is processed: one ACK for it.
                engine.flush_acks();
                if conn.send_transmits(&mut engine).await.is_err() {
                    Counters::inc(&c.closed_early);
                    break;
                }
            }
        }
    }
    latencies
}

/// Counts one event of a chatter connection, and acknowledges a message.
fn count(
    event: Event,
    engine: &mut Engine,
    shared: &Shared,
    seen: &mut HashSet<String>,
    latencies: &mut Vec<f32>,
) {
    let c = &shared.counters;
    match event {
        Event::Answer {
            answer: Answer::Sent { result, .. },
            ..
        } => match result {
            Ok(_) => Counters::inc(&c.answered),
            Err(_) => Counters::inc(&c.refused),
        },
        Event::Receipt { delivery, .. } => match delivery {
            Delivery::Delivered => Counters::inc(&c.receipts),
            Delivery::Stored => Counters::inc(&c.answered),
            _ => {}
        },
        Event::Message(m) => {
            match m.text.parse::<u64>() {
                Ok(us) => latencies.push(
                    shared
                        .epoch
                        .elapsed()
                        .saturating_sub(Duration::from_micros(us))
                        .as_secs_f32()
                        * 1000.0,
                ),
                Err(_) => Counters::inc(&c.unreadable),
            }
            let id = m.id.unwrap_or_default();
            if seen.insert(id.clone()) {
                Counters::inc(&c.received);
            } else {
                Counters::inc(&c.duplicated);
            }
            engine.acknowledge(&id);
        }
        Event::Undecryptable { .. } => Counters::inc(&c.unreadable),
        _ => {}
    }
}
