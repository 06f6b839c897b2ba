//! The flood: several keys sending sealed messages with ids as fast as the server answers
//! them, round robin to the legitimate recipients (strangers filling a victim's connection and,
//! while it is away, its queue) and to sink keys that logged in once and never come back
//! (whose queues fill up to the server's limit, after which every message is refused).
//!
//! Each flood key is a real client (the same library as the legitimate ones), over TCP or
//! WebSocket in turn, keeping a window of messages unanswered, as a pipelining client does. It
//! tolerates everything: refusals are counted, and a connection the server ends is logged in
//! again after a short pause.

use std::sync::Arc;

use flexim_client::Identity;
use flexim_client::protocol::PublicKey;
use tokio::sync::watch;

use super::Stage;
use super::abuser::{self, PAUSE, abusing};
use super::tally::{Tally, count_event};

/// What the flood does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Flood keys (each its own connection).
    pub keys: usize,
    /// Messages each keeps unanswered.
    pub window: usize,
    /// Plaintext bytes per message.
    pub size: usize,
    /// Whom it writes to, in turn: the legitimate recipients and the sinks.
    pub targets: Vec<PublicKey>,
    /// The server's TCP address; even-numbered keys use it.
    pub tcp: String,
    /// The server's WebSocket URL; odd-numbered keys use it.
    pub ws: String,
}

/// Runs the flood while the stage is the abuse, counting into `tally`.
pub async fn run(plan: Plan, stage: watch::Receiver<Stage>, tally: Arc<Tally>) {
    let tasks: Vec<_> = (0..plan.keys)
        .map(|i| {
            let addr = if i.is_multiple_of(2) {
                &plan.tcp
            } else {
                &plan.ws
            };
            let key = Flooder {
                addr: addr.clone(),
                plan: plan.clone(),
                first_target: i,
            };
            tokio::spawn(key.run(stage.clone(), tally.clone()))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// One flood key.
struct Flooder {
    /// Where it connects.
    addr: String,
    /// The flood's settings.
    plan: Plan,
    /// Which target it starts with, so that the keys do not all hit the same one at once.
    first_target: usize,
}

impl Flooder {
    async fn run(self, mut stage: watch::Receiver<Stage>, tally: Arc<Tally>) {
        let Ok(me) = Identity::generate() else { return };
        let text = "f".repeat(self.plan.size.max(1));
        let mut next = self.first_target;
        while abusing(&stage) {
            let Some(mut client) = abuser::connect(&self.addr, &me, &mut stage, &tally).await
            else {
                return;
            };
            loop {
                // A client hands out queued events without waiting: give the runtime its
                // turn now and then, so that one flood key does not keep a thread to itself.
                tokio::task::coop::consume_budget().await;
                if !abusing(&stage) {
                    return;
                }
                // Fill the window: as many messages unanswered as it allows.
                let mut wrote = true;
                while wrote && client.engine().pending_len() < self.plan.window {
                    let to = &self.plan.targets[next % self.plan.targets.len()];
                    next += 1;
                    wrote = client.queue_text(to, &text, &[]).await.is_ok();
                    tally.add(if wrote {
                        "messages sent"
                    } else {
                        "write failed"
                    });
                }
                let ended = tokio::select! {
                    event = client.next_event() => count_event(&tally, &event),
                    _ = stage.changed() => false,
                };
                if ended || !wrote {
                    break;
                }
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
}
