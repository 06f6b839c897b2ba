//! The legitimate traffic: pairs of real clients (the `flexim-client` library over the engine:
//! real handshakes, every message sealed end to end and carrying an id) chatting at a steady
//! pace through both phases, each recipient checking what it got against the ledger.
//!
//! They behave as a careful real client does: a sender keeps a bounded number of messages on
//! their way (sent, not yet received), writes again later what the server refused, and after a
//! disconnect logs in again with backoff; the engine then sends what was not confirmed again,
//! byte for byte, and the recipient gets what was stored for it at its login. Nothing here
//! crashes on an error Status: each is counted, by phase, and retried.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use flexim_client::protocol::PublicKey;
use flexim_client::{Answer, Client, Event, Identity};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::Stage;
use super::ledger::{Got, Ledger};
use super::rules;
use super::tally::Tally;

/// How often a client tries its first login before the run gives up (the server was just
/// started and is idle then, so failures mean something is wrong).
const FIRST_LOGIN_TRIES: u32 = 10;

/// What every legitimate task shares.
pub struct Shared {
    /// The book of messages written, confirmed and received.
    pub ledger: Arc<Ledger>,
    /// What the legitimate clients got, per stage.
    pub tallies: Arc<StageTallies>,
    /// Time between two messages of one pair: the steady pace of the legitimate load.
    pub period: Duration,
    /// Messages a pair may have on their way (written, not received): beyond it, messages
    /// that fall due wait to be written until earlier ones arrive, so that a server that
    /// does not keep up is not buried under ever more of them.
    pub window: u64,
}

/// What the legitimate clients got, one tally per stage, so that phase B's refusals and
/// reconnects are not mixed with the baseline's.
#[derive(Debug, Default)]
pub struct StageTallies {
    /// During phase A.
    pub baseline: Tally,
    /// During phase B.
    pub abuse: Tally,
    /// After phase B, while the last messages arrive.
    pub drain: Tally,
}

impl StageTallies {
    /// The tally of `stage` (the drain's for the close).
    pub fn at(&self, stage: Stage) -> &Tally {
        match stage {
            Stage::Baseline => &self.baseline,
            Stage::Abuse => &self.abuse,
            Stage::Drain | Stage::Close => &self.drain,
        }
    }
}

/// A refused message waiting to be written again.
struct Retry {
    /// Its sequence number.
    seq: u64,
    /// Not before this.
    due: Instant,
}

/// What a sender or recipient does after an event.
enum Next {
    /// Go on reading.
    Go,
    /// Another session of this key is the active one: take over (GHOST), since receipts and
    /// messages go only to the active session.
    Ghost,
    /// The connection ended: log in again.
    Reconnect,
}

/// Gives the runtime its turn when this task has run long enough. A client hands out the
/// events it has queued without waiting, so a task with many (a recipient given a burst of a
/// flood) would otherwise keep a worker thread to itself, and the other clients' timers and
/// reads would wait: latency made by this tool, not by the server.
async fn yield_now_and_then() {
    tokio::task::coop::consume_budget().await;
}

/// Logs `identity` in at `addr` (`HOST:PORT` or a `ws://` URL), trying a few times.
pub async fn log_in(addr: &str, identity: &Identity) -> anyhow::Result<Client> {
    let mut last = None;
    for attempt in 0..FIRST_LOGIN_TRIES {
        match Client::connect(addr, identity, None).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(rules::reconnect_delay(attempt)).await;
    }
    Err(last.expect("at least one attempt")).with_context(|| format!("logging in at {addr}"))
}

/// Logs in again after the connection ended, with backoff, until it works or the run closes;
/// false if it closed first.
async fn reconnect(
    client: &mut Client,
    stage: &mut watch::Receiver<Stage>,
    t: &StageTallies,
) -> bool {
    t.at(*stage.borrow()).add("disconnected");
    let mut attempt = 0;
    loop {
        let now = *stage.borrow();
        if now == Stage::Close {
            return false;
        }
        match client.reconnect().await {
            Ok(()) => {
                t.at(now).add("logged in again");
                return true;
            }
            Err(_) => t.at(now).add("failed logins"),
        }
        tokio::select! {
            _ = tokio::time::sleep(rules::reconnect_delay(attempt)) => {}
            changed = stage.changed() => if changed.is_err() { return false; },
        }
        attempt += 1;
    }
}

/// Takes over as the key's active session; false if the connection ended meanwhile.
async fn ghost(client: &mut Client, tally: &Tally) -> bool {
    tally.add("session exists, took over");
    match client.ghost().await {
        Ok(_) => true,
        Err(e) => !e.is_connection_lost(),
    }
}

/// When a pair's messages fall due: one every period from the start, whether or not its
/// sender kept up. A sender writes every message that is due as soon as its window allows, so
/// that the load is the same steady pace in both phases however late this tool's own tasks
/// run (two busy cores delay timers), and a sender that was disconnected writes what fell due
/// meanwhile once it is back, as a real client sends what its user typed while offline.
struct Pace {
    /// When the first message fell due.
    start: Instant,
    /// Time between two messages.
    period: Duration,
    /// Messages begun so far.
    begun: u64,
}

impl Pace {
    /// Messages due and not begun yet.
    fn owed(&self) -> u64 {
        let due = (self.start.elapsed().as_secs_f64() / self.period.as_secs_f64()) as u64 + 1;
        due.saturating_sub(self.begun)
    }
}

/// One pair's sender, until the run closes: the messages that fall due while the phases run
/// (as the window allows), refused ones again after their backoff, until everything it wrote
/// is confirmed after the phases.
pub async fn send(
    mut client: Client,
    pair: usize,
    peer: PublicKey,
    sh: Arc<Shared>,
    mut stage: watch::Receiver<Stage>,
) {
    let mut retries = VecDeque::new();
    let mut attempts: HashMap<u64, u32> = HashMap::new();
    let mut pace = Pace {
        start: Instant::now(),
        period: sh.period,
        begun: 0,
    };
    // The tick only wakes the sender; what it writes is decided by the pace.
    let mut tick = tokio::time::interval(sh.period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        yield_now_and_then().await;
        let now = *stage.borrow_and_update();
        // Done once nothing waits to be written again or confirmed, and every event is read:
        // one receipt confirms many messages at once (the outbox empties), but they come out
        // as one event each, and the ledger hears of each only from its event.
        let done = retries.is_empty() && client.outbox().is_empty() && !client.has_queued_events();
        if now == Stage::Close || (now == Stage::Drain && done) {
            return;
        }
        let tally = sh.tallies.at(now);
        let next = tokio::select! {
            _ = tick.tick() => {
                let mut w = Writer { client: &mut client, pair, peer: &peer, sh: &sh };
                w.write_due(&stage, &mut pace, &mut retries).await
            }
            event = client.next_event() => match event {
                Ok(e) => on_sender_event(e, pair, &sh.ledger, tally, &mut retries, &mut attempts),
                Err(_) => Next::Reconnect,
            },
            changed = stage.changed() => match changed {
                Ok(()) => Next::Go,
                Err(_) => return,
            },
        };
        let alive = match next {
            Next::Go => true,
            Next::Ghost => ghost(&mut client, tally).await,
            Next::Reconnect => false,
        };
        if !alive && !reconnect(&mut client, &mut stage, &sh.tallies).await {
            return;
        }
    }
}

/// A sender's client while it writes.
struct Writer<'a> {
    /// The sender's client.
    client: &'a mut Client,
    /// Its pair.
    pair: usize,
    /// The pair's recipient.
    peer: &'a PublicKey,
    /// The ledger and the load's settings.
    sh: &'a Shared,
}

impl Writer<'_> {
    /// Writes what is due: refused messages whose backoff is over first, then, while the
    /// phases run, the messages the pace owes, as far as the window allows.
    async fn write_due(
        &mut self,
        stage: &watch::Receiver<Stage>,
        pace: &mut Pace,
        retries: &mut VecDeque<Retry>,
    ) -> Next {
        let ledger = &self.sh.ledger;
        while let Some(i) = retries.iter().position(|r| r.due <= Instant::now()) {
            let Some(r) = retries.remove(i) else { break };
            if ledger.needs_retry(self.pair, r.seq) && !self.write(r.seq, retries).await {
                return Next::Reconnect;
            }
        }
        // The stage is looked at before every new message, not once per wake-up: a burst
        // after a stall must not run past the end of the phases.
        let phases =
            |s: &watch::Receiver<Stage>| matches!(*s.borrow(), Stage::Baseline | Stage::Abuse);
        while phases(stage) && pace.owed() > 0 && ledger.outstanding(self.pair) < self.sh.window {
            pace.begun += 1;
            let seq = ledger.begin(self.pair);
            if !self.write(seq, retries).await {
                return Next::Reconnect;
            }
        }
        Next::Go
    }

    /// Writes message `seq`; false if the connection failed (the message is in the outbox
    /// then, or back among the retries).
    async fn write(&mut self, seq: u64, retries: &mut VecDeque<Retry>) -> bool {
        let (ledger, pair) = (&self.sh.ledger, self.pair);
        match self
            .client
            .queue_text(self.peer, &ledger.text(pair, seq), &[])
            .await
        {
            Ok(id) => {
                ledger.bind(pair, seq, &id);
                true
            }
            Err(_) => {
                // The engine put the message in its outbox before the write failed, to send
                // it again at the next login: bind it by the id the outbox holds. A message
                // that never got there (it could not be sealed) is tried again later.
                let fresh: Vec<String> = self
                    .client
                    .outbox()
                    .ids()
                    .filter(|id| !ledger.knows(pair, id))
                    .map(str::to_string)
                    .collect();
                if fresh.is_empty() {
                    let due = Instant::now() + rules::retry_delay(0);
                    retries.push_back(Retry { seq, due });
                }
                for id in fresh {
                    ledger.bind(pair, seq, &id);
                }
                false
            }
        }
    }
}

/// What a sender does with one event: confirmations go to the ledger, refusals are counted and
/// scheduled to be written again.
fn on_sender_event(
    event: Event,
    pair: usize,
    ledger: &Ledger,
    tally: &Tally,
    retries: &mut VecDeque<Retry>,
    attempts: &mut HashMap<u64, u32>,
) -> Next {
    match event {
        Event::Answer {
            answer: Answer::Sent { id, result, .. },
            ..
        } => match result {
            Ok(s) => ledger.told(pair, &id, s.status, rules::answer_confirms(s.status)),
            Err(r) if r.status != 0 => {
                ledger.told(pair, &id, r.status, false);
                tally.status("refused", r.status);
                if let Some(seq) = ledger.refuse(pair, &id) {
                    let n = attempts.entry(seq).or_insert(0);
                    let due = Instant::now() + rules::retry_delay(*n);
                    *n += 1;
                    retries.push_back(Retry { seq, due });
                }
            }
            // An answer that does not decode leaves the message in the outbox: the engine
            // sends it again at the next login.
            Err(_) => tally.add("garbled answers"),
        },
        Event::Receipt {
            id,
            delivery,
            status,
        } => {
            let confirms = rules::confirms(&delivery);
            ledger.told(pair, &id, status.status, confirms);
            if !confirms {
                tally.status("receipt", status.status);
            }
        }
        Event::SessionExists(_) => return Next::Ghost,
        Event::Closing { status, .. } => tally.status("closed by the server with", status),
        Event::Closed => return Next::Reconnect,
        _ => {}
    }
    Next::Go
}

/// One pair's recipient, until the run closes: takes every message, checks the pair's against
/// the ledger, acknowledges everything (strangers' messages too, or they would come back at
/// every login), and logs in again whenever its connection ends.
pub async fn receive(
    mut client: Client,
    pair: usize,
    sender: PublicKey,
    sh: Arc<Shared>,
    mut stage: watch::Receiver<Stage>,
) {
    loop {
        yield_now_and_then().await;
        let now = *stage.borrow_and_update();
        if now == Stage::Close {
            return;
        }
        let tally = sh.tallies.at(now);
        let next = tokio::select! {
            event = client.next_event() => match event {
                Ok(e) => on_recipient_event(e, &mut client, pair, &sender, &sh.ledger, tally),
                Err(_) => Next::Reconnect,
            },
            changed = stage.changed() => match changed {
                Ok(()) => Next::Go,
                Err(_) => return,
            },
        };
        let alive = match next {
            Next::Go => true,
            Next::Ghost => ghost(&mut client, tally).await,
            Next::Reconnect => false,
        };
        if !alive && !reconnect(&mut client, &mut stage, &sh.tallies).await {
            return;
        }
    }
}

/// What a recipient does with one event.
fn on_recipient_event(
    event: Event,
    client: &mut Client,
    pair: usize,
    sender: &PublicKey,
    ledger: &Ledger,
    tally: &Tally,
) -> Next {
    match event {
        Event::Message(m) => {
            let id = m.id.clone().unwrap_or_default();
            if m.from != *sender {
                tally.add("messages from strangers");
            } else {
                match ledger.receive(pair, &m.text, &id) {
                    Got::Fresh => {}
                    Got::Copy => tally.add("copies given to the application"),
                    Got::Garbled => tally.add("garbled messages"),
                }
            }
            // Processed (counted): the server may forget it, and its sender gets `7`.
            if m.id.is_some() {
                client.acknowledge(&id);
            }
        }
        Event::Undecryptable { .. } => tally.add("messages that did not open"),
        Event::Answer {
            answer: Answer::Ack { result: Err(r), .. },
            ..
        } => tally.status("ACK refused", r.status),
        Event::SessionExists(_) => return Next::Ghost,
        Event::Closing { status, .. } => tally.status("closed by the server with", status),
        Event::Closed => return Next::Reconnect,
        _ => {}
    }
    Next::Go
}
