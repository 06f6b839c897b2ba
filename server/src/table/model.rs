//! The table under random interleavings (proptest), driven the way the relay and the sessions
//! drive it, with a tiny store beside it: logins, logouts, GHOST, messages to online and
//! offline keys with and without ids, store writes that become durable and complete in the
//! order they were started (possibly much later), sessions writing their queues (or not: full
//! queues), acknowledging what they got, and catching up with the store by cursor in batches,
//! step by step, as `session/stored.rs` does.
//!
//! After every step and at the end it checks:
//! - **no loss**: every routed message with an id is acknowledged (the table said so), or
//!   still held: in the table's memory, in a running write, or in the store;
//! - **no duplicate beyond at-least-once**: a session is never given the same message twice
//!   (copies come only to a new session: after a login or GHOST), and only its key's messages;
//! - **per-sender order**: the first copies of one sender's messages with ids reach the
//!   recipient in the order they were sent, across stored and live delivery, sessions and
//!   GHOST; and each session is given each sender's messages (with ids or without) in order;
//! - **one order per key**: each session is given its key's messages, whoever sent them, in
//!   the order they were routed (what a room's fan-out relies on);
//! - and at the end, once every write has completed and every session has caught up, read
//!   and acknowledged, that every message for a key with a session was acknowledged.
//!
//! The last tests break one rule of the table on purpose and show that the checks notice.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use flexim_protocol::PublicKey;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

use super::fake::Fake;
use super::*;

/// Users in a run.
const KEYS: u8 = 3;
/// Frames a session's queue takes: small, so that slow readers happen.
const CAPACITY: usize = 3;
/// Stored entries a session reads per batch.
const BATCH: usize = 2;
/// Most sessions of one key at once.
const SESSIONS_PER_KEY: usize = 2;

/// One step of a run. Session numbers pick among the sessions still connected.
#[derive(Debug, Clone)]
enum Action {
    /// A new session of this key logs in.
    Login(u8),
    /// A session's connection ends.
    Logout(u8),
    /// A session sends GHOST.
    Ghost(u8),
    /// A message from one key to another (or itself), with an id or without.
    Route { from: u8, to: u8, with_id: bool },
    /// The oldest running write becomes durable (visible in the store, answered).
    Commit,
    /// The oldest durable write's future completes (the table hears of it).
    Finish,
    /// A session's writer takes everything queued for it.
    Drain(u8),
    /// A session acknowledges up to this many of the messages it got, after leaving out the
    /// first few (ACKs need not name the oldest).
    Ack(u8, u8, u8),
    /// A session's next step of catching up with the store: start, read a batch, or note it.
    CatchUp(u8),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => (0..KEYS).prop_map(Action::Login),
        1 => any::<u8>().prop_map(Action::Logout),
        1 => any::<u8>().prop_map(Action::Ghost),
        6 => (0..KEYS, 0..KEYS, any::<bool>())
            .prop_map(|(from, to, with_id)| Action::Route { from, to, with_id }),
        3 => Just(Action::Commit),
        3 => Just(Action::Finish),
        3 => any::<u8>().prop_map(Action::Drain),
        2 => (any::<u8>(), 1..6u8, 0..3u8).prop_map(|(s, n, skip)| Action::Ack(s, n, skip)),
        4 => any::<u8>().prop_map(Action::CatchUp),
    ]
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    proptest::collection::vec(action(), 1..120)
}

fn key(n: u8) -> PublicKey {
    PublicKey([n + 1; 32])
}

/// A routed message.
struct Msg {
    /// Its sender.
    from: PublicKey,
    /// Its recipient.
    to: PublicKey,
    /// Its id (unique per message in a run), if it has one.
    id: Option<String>,
}

/// Where a session is in catching up with the store.
enum Stage {
    /// Not catching up.
    Idle,
    /// Reading the next batch from its cursor; the mark it looks from (see `Table::go_live`).
    Reading(u64),
    /// Written a batch: it still has to note it (track the ones with ids, remove the rest).
    Noting(u64, Vec<(u64, usize)>),
}

/// A session of the run.
struct Sess {
    /// Its key.
    key: PublicKey,
    /// Its id in the table.
    id: SessionId,
    /// Its queue.
    fake: Fake,
    /// Still connected.
    alive: bool,
    /// Told to close by the table (it ends at the latest when the run settles).
    closing: bool,
    /// Where its reading of the store stands.
    stage: Stage,
    /// The store's sequence number it reads from next.
    cursor: u64,
    /// The messages it was given, in order.
    got: Vec<usize>,
}

/// One stored entry: its message.
#[derive(Clone, Copy)]
struct Kept {
    /// The message.
    n: usize,
}

/// The table, its callers and the store.
struct World {
    table: Table<Fake>,
    sessions: Vec<Sess>,
    msgs: Vec<Msg>,
    /// Writes started, oldest first, and whether each is durable yet.
    writes: VecDeque<(Write, bool)>,
    /// The store: per key, entries by sequence number.
    store: HashMap<PublicKey, BTreeMap<u64, Kept>>,
    next_seq: u64,
    /// Messages the table said were acknowledged.
    acked: HashSet<usize>,
    /// Per (recipient, sender): the last message with an id first delivered.
    first: HashMap<(PublicKey, PublicKey), usize>,
    /// Per (session, sender): the last message the session was given.
    in_session: HashMap<(usize, PublicKey), usize>,
    /// The latest message each session was given, of any sender: routing order is one order
    /// per key.
    routed_order: HashMap<usize, usize>,
    /// Messages delivered at least once.
    delivered: HashSet<usize>,
}

/// The message a frame of the run carries.
fn number(frame: &Bytes) -> usize {
    std::str::from_utf8(frame).unwrap().parse().unwrap()
}

impl World {
    fn new(breakage: Option<Breakage>) -> World {
        let table = Table::new(Bounds {
            max_unacked: 4,
            // Frames here are decimal numbers: a few of them reach this before the count does.
            max_unacked_bytes: 7,
        });
        World {
            table: match breakage {
                Some(b) => table.broken(b),
                None => table,
            },
            sessions: Vec::new(),
            msgs: Vec::new(),
            writes: VecDeque::new(),
            store: HashMap::new(),
            next_seq: 1,
            acked: HashSet::new(),
            first: HashMap::new(),
            in_session: HashMap::new(),
            routed_order: HashMap::new(),
            delivered: HashSet::new(),
        }
    }

    /// The index of the `pick`th connected session.
    fn pick(&self, pick: u8) -> Option<usize> {
        let alive: Vec<usize> = (0..self.sessions.len())
            .filter(|i| self.sessions[*i].alive)
            .collect();
        (!alive.is_empty()).then(|| alive[pick as usize % alive.len()])
    }

    fn step(&mut self, action: &Action) -> Result<(), String> {
        match *action {
            Action::Login(k) => self.login(key(k)),
            Action::Logout(p) => {
                if let Some(s) = self.pick(p) {
                    self.logout(s);
                }
            }
            Action::Ghost(p) => {
                if let Some(s) = self.pick(p) {
                    self.ghost(s);
                }
            }
            Action::Route { from, to, with_id } => self.route(key(from), key(to), with_id),
            Action::Commit => self.commit(),
            Action::Finish => self.finish(),
            Action::Drain(p) => {
                if let Some(s) = self.pick(p) {
                    self.drain(s)?;
                }
            }
            Action::Ack(p, n, skip) => {
                if let Some(s) = self.pick(p) {
                    self.ack(s, n as usize, skip as usize)?;
                }
            }
            Action::CatchUp(p) => {
                if let Some(s) = self.pick(p) {
                    self.catch_up(s)?;
                }
            }
        }
        if !self.table.counts_agree() {
            return Err("the count of messages held in memory drifted".into());
        }
        self.check_nothing_lost()
    }

    fn login(&mut self, key: PublicKey) {
        let here = self
            .sessions
            .iter()
            .filter(|s| s.alive && s.key == key)
            .count();
        if here >= SESSIONS_PER_KEY {
            return;
        }
        let id = self.sessions.len() as SessionId + 1;
        let fake = Fake::new(self.sessions.len(), CAPACITY);
        self.table.join(key, id, fake.clone(), false);
        self.sessions.push(Sess {
            key,
            id,
            fake,
            alive: true,
            closing: false,
            stage: Stage::Idle,
            cursor: 0,
            got: Vec::new(),
        });
    }

    fn logout(&mut self, s: usize) {
        let sess = &mut self.sessions[s];
        sess.alive = false;
        sess.fake.close();
        let left = self.table.leave(sess.key, sess.id);
        self.start(left.write);
    }

    fn ghost(&mut self, s: usize) {
        let (key, id) = (self.sessions[s].key, self.sessions[s].id);
        if self.table.ghost_check(key, id) == GhostCheck::Unknown {
            return;
        }
        if let Some(g) = self.table.ghost(key, id) {
            self.start(g.write);
            if let Some(close) = g.close {
                self.sessions[close.outlet.n].closing = true;
            }
        }
    }

    fn route(&mut self, from: PublicKey, to: PublicKey, with_id: bool) {
        let n = self.msgs.len();
        let id = with_id.then(|| format!("id-{n}"));
        self.msgs.push(Msg {
            from,
            to,
            id: id.clone(),
        });
        let frame = Bytes::from(n.to_string());
        match self.table.route(from, to, id.map(Id::from), frame) {
            Routed::Relayed(_) => {}
            Routed::Store(to_store) => {
                let ToStore {
                    demoted,
                    write,
                    close,
                } = *to_store;
                self.start(demoted);
                self.start(Some(write));
                if let Some(close) = close {
                    self.sessions[close.outlet.n].closing = true;
                }
            }
        }
    }

    /// Hands a decided write to the store, in the order decided.
    fn start(&mut self, write: Option<Write>) {
        if let Some(w) = write {
            self.writes.push_back((w, false));
        }
    }

    fn commit(&mut self) {
        let Some((w, done)) = self.writes.iter_mut().find(|(_, done)| !*done) else {
            return;
        };
        *done = true;
        let queue = self.store.entry(w.to).or_default();
        for e in &w.entries {
            queue.insert(
                self.next_seq,
                Kept {
                    n: number(&e.frame),
                },
            );
            self.next_seq += 1;
        }
    }

    fn finish(&mut self) {
        if self.writes.front().is_some_and(|(_, done)| *done) {
            let (w, _) = self.writes.pop_front().expect("checked");
            // A wake-up only tells the session to catch up, which the run does when it likes.
            let _ = self.table.store_finished(w.to);
        }
    }

    /// Session `s` is given message `n`: the duplicate, routing and order checks.
    fn deliver(&mut self, s: usize, n: usize) -> Result<(), String> {
        let sess = &mut self.sessions[s];
        let m = &self.msgs[n];
        if m.to != sess.key {
            return Err(format!("message {n} for another key reached session {s}"));
        }
        if sess.got.contains(&n) {
            return Err(format!("session {s} was given message {n} twice"));
        }
        sess.got.push(n);
        if let Some(last) = self.in_session.insert((s, m.from), n)
            && last > n
        {
            return Err(format!(
                "session {s} was given message {n} after message {last}"
            ));
        }
        // Whoever sent them: a room's fan-out relies on each key getting its messages in the
        // order they were routed (docs/PROTOCOL.md §16.4, "one order").
        if let Some(last) = self.routed_order.insert(s, n)
            && last > n
        {
            return Err(format!(
                "session {s} was given message {n} after message {last}, routed later"
            ));
        }
        if self.delivered.insert(n)
            && m.id.is_some()
            && let Some(last) = self.first.insert((m.to, m.from), n)
            && last > n
        {
            return Err(format!(
                "message {n} first reached its recipient after message {last} of the same sender"
            ));
        }
        Ok(())
    }

    fn drain(&mut self, s: usize) -> Result<(), String> {
        // The session writes its queue only between catch-up steps (one task does both).
        if !matches!(self.sessions[s].stage, Stage::Idle) {
            return Ok(());
        }
        for frame in self.sessions[s].fake.drain() {
            self.deliver(s, number(&frame))?;
        }
        Ok(())
    }

    fn ack(&mut self, s: usize, most: usize, skip: usize) -> Result<(), String> {
        let sess = &self.sessions[s];
        if !matches!(sess.stage, Stage::Idle) {
            return Ok(());
        }
        let ids: Vec<String> = sess
            .got
            .iter()
            .filter(|n| !self.acked.contains(n))
            .filter_map(|n| self.msgs[*n].id.clone())
            .skip(skip)
            .take(most)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let acked = self.table.ack(sess.key, sess.id, &ids);
        let key = sess.key;
        let named: usize = acked
            .receipts
            .iter()
            .flat_map(|r| &r.senders)
            .map(|(_, i)| i.len())
            .sum();
        if named != acked.matched {
            return Err(format!(
                "{} acknowledged but {named} receipts",
                acked.matched
            ));
        }
        for (_, ids) in acked.receipts.iter().flat_map(|r| &r.senders) {
            for id in ids {
                let n: usize = id.as_str()["id-".len()..].parse().unwrap();
                self.acked.insert(n);
            }
        }
        if let Some(queue) = self.store.get_mut(&key) {
            for seq in acked.remove {
                queue.remove(&seq);
            }
        }
        Ok(())
    }

    fn catch_up(&mut self, s: usize) -> Result<(), String> {
        let (key, id) = (self.sessions[s].key, self.sessions[s].id);
        match std::mem::replace(&mut self.sessions[s].stage, Stage::Idle) {
            Stage::Idle => {
                if let Some(mark) = self.table.catch_up(key, id) {
                    self.sessions[s].stage = Stage::Reading(mark);
                }
            }
            Stage::Reading(mark) => {
                let cursor = self.sessions[s].cursor;
                let batch: Vec<(u64, usize)> = self
                    .store
                    .get(&key)
                    .map(|q| {
                        q.range(cursor..)
                            .take(BATCH)
                            .map(|(seq, k)| (*seq, k.n))
                            .collect()
                    })
                    .unwrap_or_default();
                let Some((last, _)) = batch.last() else {
                    // Nothing new: live, or look again, or stop (a running write's end wakes
                    // the session, which the run may do whenever it likes).
                    if let GoLive::Again(mark) = self.table.go_live(key, id, mark) {
                        self.sessions[s].stage = Stage::Reading(mark);
                    }
                    return Ok(());
                };
                // A session closed or taken over while it read writes nothing of it.
                if self.table.catch_up(key, id).is_some() {
                    self.sessions[s].cursor = last + 1;
                    for (_, n) in &batch {
                        self.deliver(s, *n)?;
                    }
                    self.sessions[s].stage = Stage::Noting(mark, batch);
                }
            }
            Stage::Noting(mark, batch) => {
                let mut tracked = Vec::new();
                for (seq, n) in batch {
                    let m = &self.msgs[n];
                    match &m.id {
                        Some(i) => tracked.push(Unacked {
                            id: Id::from(i.clone()),
                            sender: m.from,
                            held: Held::Stored(seq),
                        }),
                        None => {
                            self.store.get_mut(&key).map(|q| q.remove(&seq));
                        }
                    }
                }
                self.table.track(key, id, tracked);
                self.sessions[s].stage = Stage::Reading(mark);
            }
        }
        Ok(())
    }

    /// Every message with an id is acknowledged or still held somewhere.
    fn check_nothing_lost(&self) -> Result<(), String> {
        let held: HashSet<String> = self
            .table
            .held()
            .into_iter()
            .map(|(_, _, id)| id.as_str().to_string())
            .collect();
        let stored: HashSet<usize> = self
            .store
            .values()
            .flat_map(|q| q.values().map(|k| k.n))
            .collect();
        let writing: HashSet<usize> = self
            .writes
            .iter()
            .flat_map(|(w, _)| w.entries.iter().map(|e| number(&e.frame)))
            .collect();
        for (n, m) in self.msgs.iter().enumerate() {
            let Some(id) = &m.id else { continue };
            if !(self.acked.contains(&n)
                || held.contains(id)
                || stored.contains(&n)
                || writing.contains(&n))
            {
                return Err(format!("message {n} ({id}) was lost"));
            }
        }
        Ok(())
    }

    /// Lets the run come to rest: every write completes, sessions told to close end, and
    /// every remaining session writes its queue, catches up and acknowledges, until nothing
    /// changes. Then every message for a key with a session must be acknowledged.
    fn settle(&mut self) -> Result<(), String> {
        for s in 0..self.sessions.len() {
            if self.sessions[s].alive && self.sessions[s].closing {
                self.logout(s);
            }
        }
        for _ in 0..50 {
            while !self.writes.is_empty() {
                self.commit();
                self.finish();
            }
            let before = (self.acked.len(), self.delivered.len());
            for s in 0..self.sessions.len() {
                if !self.sessions[s].alive {
                    continue;
                }
                self.drain(s)?;
                self.catch_up(s)?;
                while !matches!(self.sessions[s].stage, Stage::Idle) {
                    self.catch_up(s)?;
                }
                self.drain(s)?;
                self.ack(s, usize::MAX, 0)?;
            }
            self.check_nothing_lost()?;
            if self.writes.is_empty() && before == (self.acked.len(), self.delivered.len()) {
                break;
            }
        }
        for (n, m) in self.msgs.iter().enumerate() {
            let online = self.sessions.iter().any(|s| s.alive && s.key == m.to);
            if m.id.is_some() && online && !self.acked.contains(&n) {
                return Err(format!("message {n} never reached its online recipient"));
            }
        }
        Ok(())
    }
}

/// Runs `actions` on a table (with `breakage`, if any) and checks every property.
fn run(actions: &[Action], breakage: Option<Breakage>) -> Result<(), String> {
    let mut world = World::new(breakage);
    for a in actions {
        world.step(a)?;
    }
    world.settle()
}

proptest! {
    #![proptest_config(Config { cases: 1500, failure_persistence: None, ..Config::default() })]

    #[test]
    fn no_loss_no_duplicate_within_a_session_and_per_sender_order(actions in actions()) {
        if let Err(why) = run(&actions, None) {
            prop_assert!(false, "{why}");
        }
    }
}

/// Whether the properties find a counterexample against a table with `breakage` (a fixed
/// seed, so the test is the same every time).
fn finds_a_counterexample(breakage: Breakage) -> Option<String> {
    let config = Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    match runner.run(&actions(), |a| {
        run(&a, Some(breakage)).map_err(TestCaseError::fail)
    }) {
        Err(TestError::Fail(why, actions)) => Some(format!("{why}, after {actions:?}")),
        _ => None,
    }
}

#[test]
fn the_properties_catch_a_table_that_goes_live_while_a_write_runs() {
    let found = finds_a_counterexample(Breakage::LiveWhileWriting);
    assert!(found.is_some(), "going live during a write went unnoticed");
    println!("{}", found.unwrap());
}

#[test]
fn the_properties_catch_a_table_that_forgets_what_a_leaving_session_held() {
    let found = finds_a_counterexample(Breakage::DropUnackedOnLeave);
    assert!(
        found.is_some(),
        "dropping unacknowledged messages went unnoticed"
    );
    println!("{}", found.unwrap());
}
