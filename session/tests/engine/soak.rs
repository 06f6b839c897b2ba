//! The shape of the crash test (`tests/e2e/crash.rs`), played deterministically: a sender and a
//! recipient engine against a pretend relay that stores, relays, loses what only its memory held
//! when it "crashes", and drops connections, in thousands of seeded interleavings. Whatever the
//! interleaving, the recipient's application gets every message exactly once, in the sender's
//! order, and the sender's outbox ends empty.
//!
//! The relay follows docs/PROTOCOL.md §8.1 in the simplest way that keeps its promises: a
//! message for an online recipient is relayed and held in memory until acknowledged (moved to
//! the store, with a `8`, when the recipient leaves); one for an offline recipient is stored
//! (`2`); an ACK forgets every copy of the id and sends `7`; stored messages and receipts for an
//! offline sender survive a crash, everything else does not.

use std::collections::VecDeque;

use flexim_protocol::status;
use flexim_protocol::{Command, Datum, MAX_BODY, Message, SecretKey, Status, frame};
use flexim_session::{Config, Engine, Event, Framing, Seen};

use crate::kit::*;

/// A tiny deterministic generator (xorshift), so every run plays the same interleavings.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One client: its engine (if connected) and the frames on the wire each way.
struct Side {
    /// The key.
    key: SecretKey,
    /// The engine of the current connection, if any.
    engine: Option<Client>,
    /// Frames the client sent that the relay has not read yet.
    up: VecDeque<Vec<u8>>,
    /// Frames the relay sent that the client has not read yet.
    down: VecDeque<Vec<u8>>,
}

impl Side {
    fn new(seed: u8) -> Side {
        Side {
            key: key(seed),
            engine: None,
            up: VecDeque::new(),
            down: VecDeque::new(),
        }
    }

    /// Moves what the engine wants to send onto the wire.
    fn pump(&mut self) {
        if let Some(e) = &mut self.engine {
            while let Some(bytes) = e.poll_transmit() {
                self.up.push_back(bytes);
            }
        }
    }
}

/// The pretend relay's state, and both clients.
struct World {
    /// The relay's durable queue for the recipient: (frame, id).
    stored: Vec<(Vec<u8>, String)>,
    /// Messages relayed to the recipient's connection and not acknowledged: memory only.
    held: Vec<(Vec<u8>, String)>,
    /// Receipts for the sender kept while it is offline (durable).
    receipts: Vec<Vec<u8>>,
    /// The sender.
    sender: Side,
    /// The recipient.
    recipient: Side,
    /// What the sender's application wrote, in order.
    written: Vec<String>,
    /// What the recipient's application was given, in order.
    got: Vec<String>,
    /// What the recipient's engine remembers across its connections.
    seen: Seen,
    /// The sender's unconfirmed messages between two engines (when it does not keep one).
    outbox: flexim_session::Outbox,
    /// Engines made so far: each gets its own random sequence.
    engines: u64,
}

fn status_frame(code: i8, id: &str) -> Vec<u8> {
    frame_of(Status::new(code, "").with_id(Some(id.to_string())))
}

impl World {
    /// A new engine for the key `key(seed)`, with a random sequence of its own.
    fn new_engine(&mut self, seed: u8) -> Client {
        self.engines += 1;
        let config = Config {
            pinned: None,
            alias: None,
            framing: Framing::Messages,
            rooms: true,
            pairs: false,
        };
        Client::new(Engine::new(
            key(seed),
            config,
            counter_from(self.engines << 40),
        ))
    }

    /// The relay reads one frame from the sender.
    fn read_sender(&mut self, bytes: Vec<u8>) {
        let (kind, body) = frame::split_exact(&bytes, MAX_BODY).unwrap();
        let Ok(Datum::Message(Message { id: Some(id), .. })) = Datum::decode(kind, body) else {
            return; // ACK answers and the like: the sender sends only messages here.
        };
        if self.recipient.engine.as_ref().is_some_and(|e| e.is_ready()) {
            self.recipient.down.push_back(bytes.clone());
            self.held.push((bytes, id.clone()));
            self.sender
                .down
                .push_back(status_frame(status::RELAYED, &id));
        } else {
            self.stored.push((bytes, id.clone()));
            self.sender
                .down
                .push_back(status_frame(status::STORED, &id));
        }
    }

    /// The relay reads one frame from the recipient: an ACK.
    fn read_recipient(&mut self, bytes: Vec<u8>) {
        let (kind, body) = frame::split_exact(&bytes, MAX_BODY).unwrap();
        let Ok(Datum::Command(Command { cmd, payload })) = Datum::decode(kind, body) else {
            return;
        };
        assert_eq!(cmd, "ACK");
        for id in &payload {
            let before = self.stored.len() + self.held.len();
            self.stored.retain(|(_, i)| i != id);
            self.held.retain(|(_, i)| i != id);
            if self.stored.len() + self.held.len() < before {
                self.receipt(status_frame(status::DELIVERED, id));
            }
        }
        self.recipient
            .down
            .push_back(frame_of(Status::new(status::OK, "acknowledged")));
    }

    /// A receipt to the sender, or kept for its next login.
    fn receipt(&mut self, bytes: Vec<u8>) {
        if self.sender.engine.as_ref().is_some_and(|e| e.is_ready()) {
            self.sender.down.push_back(bytes);
        } else {
            self.receipts.push(bytes);
        }
    }

    /// The recipient's connection ends: what it held unacknowledged is stored (with a `8`).
    fn recipient_leaves(&mut self) {
        if let Some(e) = self.recipient.engine.take() {
            self.seen = e.seen();
        }
        self.recipient.up.clear();
        self.recipient.down.clear();
        for (bytes, id) in std::mem::take(&mut self.held) {
            self.stored.push((bytes, id.clone()));
            self.receipt(status_frame(status::STORED_LATER, &id));
        }
    }

    /// The sender's connection ends; a sender that keeps no engine takes its outbox along.
    fn sender_leaves(&mut self, keep: bool) {
        self.sender.up.clear();
        self.sender.down.clear();
        match &mut self.sender.engine {
            Some(e) if keep => e.disconnected(),
            Some(e) => {
                self.outbox = e.take_outbox();
                self.sender.engine = None;
            }
            None => {}
        }
    }

    /// The relay dies: memory and wires are gone, the store survives.
    fn crash(&mut self, keep: bool) {
        self.held.clear();
        self.recipient_leaves();
        self.sender_leaves(keep);
    }

    /// The recipient logs in with a new engine that carries the memory of the last one, and
    /// gets what is stored.
    fn recipient_arrives(&mut self, server: &SecretKey) {
        let mut e = self.new_engine(3);
        login(&mut e, server);
        e.restore_seen(std::mem::take(&mut self.seen));
        self.recipient.engine = Some(e);
        for (bytes, _) in &self.stored {
            self.recipient.down.push_back(bytes.clone());
        }
    }

    /// The sender logs in (a new engine given the old outbox, or the same engine), then gets
    /// the receipts kept for it.
    fn sender_arrives(&mut self, server: &SecretKey) {
        let mut e = match self.sender.engine.take() {
            Some(e) => e,
            None => self.new_engine(2),
        };
        login(&mut e, server);
        e.resend(std::mem::take(&mut self.outbox));
        self.sender.engine = Some(e);
        self.sender.pump();
        for r in std::mem::take(&mut self.receipts) {
            self.sender.down.push_back(r);
        }
    }

    /// The recipient's application takes what its engine reports (in one wake-up), records
    /// the messages and acknowledges them.
    fn recipient_wakes(&mut self) {
        let Some(e) = &mut self.recipient.engine else {
            return;
        };
        while let Some(ev) = e.poll_event() {
            if let Event::Message(m) = ev {
                self.got.push(m.text);
                if let Some(id) = m.id {
                    e.acknowledge(&id);
                }
            }
        }
        e.flush_acks();
        self.recipient.pump();
    }

    /// One step of the schedule.
    fn step(&mut self, rng: &mut Rng, server: &SecretKey, keep: bool, total: usize) {
        let choice = rng.below(12);
        match choice {
            0 | 1 if self.written.len() < total => {
                if let Some(e) = &mut self.sender.engine {
                    let text = format!("m{}", self.written.len());
                    e.send_text(&self.recipient.key.public_key(), &text, &[], 1)
                        .unwrap();
                    self.written.push(text);
                    self.sender.pump();
                }
            }
            2 | 3 => {
                if let Some(f) = self.sender.up.pop_front() {
                    self.read_sender(f);
                }
            }
            4 => {
                if let (Some(f), Some(e)) = (self.sender.down.pop_front(), &mut self.sender.engine)
                {
                    e.handle_bytes(&f);
                    while e.poll_event().is_some() {}
                    self.sender.pump();
                }
            }
            5 | 6 => {
                if let (Some(f), Some(e)) =
                    (self.recipient.down.pop_front(), &mut self.recipient.engine)
                {
                    e.handle_bytes(&f);
                }
            }
            7 => self.recipient_wakes(),
            8 => {
                if let Some(f) = self.recipient.up.pop_front() {
                    self.read_recipient(f);
                }
            }
            9 => match self.recipient.engine {
                Some(_) => self.recipient_leaves(),
                None => self.recipient_arrives(server),
            },
            10 => match self.sender.engine.as_ref().is_some_and(|e| e.is_ready()) {
                true => self.sender_leaves(keep),
                false => self.sender_arrives(server),
            },
            _ if rng.below(4) == 0 => self.crash(keep),
            _ => {}
        }
    }

    /// Everyone online, every wire drained, until nothing moves.
    fn settle(&mut self, server: &SecretKey) {
        if self.recipient.engine.is_none() {
            self.recipient_arrives(server);
        }
        if !self.sender.engine.as_ref().is_some_and(|e| e.is_ready()) {
            self.sender_arrives(server);
        }
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(f) = self.sender.up.pop_front() {
                self.read_sender(f);
                moved = true;
            }
            while let Some(f) = self.recipient.down.pop_front() {
                self.recipient.engine.as_mut().unwrap().handle_bytes(&f);
                moved = true;
            }
            self.recipient_wakes();
            while let Some(f) = self.recipient.up.pop_front() {
                self.read_recipient(f);
                moved = true;
            }
            while let Some(f) = self.sender.down.pop_front() {
                let e = self.sender.engine.as_mut().unwrap();
                e.handle_bytes(&f);
                while e.poll_event().is_some() {}
                moved = true;
            }
            self.sender.pump();
            if !moved {
                return;
            }
        }
        panic!("the world never settles");
    }
}

#[test]
fn every_message_arrives_once_in_order_across_crashes_reconnects_and_lazy_readers() {
    let server = key(1);
    for seed in 1..=300u64 {
        // Half the runs keep one sender engine across connections (the command line's
        // `send`), half move the outbox to a new one each time (the library's `resend`).
        let keep = seed % 2 == 0;
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut world = World {
            stored: Vec::new(),
            held: Vec::new(),
            receipts: Vec::new(),
            sender: Side::new(2),
            recipient: Side::new(3),
            written: Vec::new(),
            got: Vec::new(),
            seen: Seen::default(),
            outbox: flexim_session::Outbox::new(),
            engines: 0,
        };
        world.sender_arrives(&server);
        let total = 30;
        for _ in 0..400 {
            world.step(&mut rng, &server, keep, total);
        }
        world.settle(&server);
        assert_eq!(
            world.got, world.written,
            "seed {seed}: every message once, in order"
        );
        let left = world.sender.engine.as_ref().unwrap().outbox().len();
        assert_eq!(left, 0, "seed {seed}: every message confirmed");
    }
}
