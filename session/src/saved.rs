//! What an application keeps of the engine: the outbox and the de-duplication memory, saved
//! so that a restart loses nothing and handed from one engine to the next, and whether they
//! changed since they were last saved. It is apart from `engine.rs`, which keeps the
//! connection's life and the dispatch of what the server sends.

use crate::dedupe::Dedupe;
use crate::engine::Engine;
use crate::events::Event;
use crate::outbox::{Outbox, SavedDelivery};

impl Engine {
    /// What the application saves so that a restart loses nothing: the outbox and the most
    /// recent de-duplication keys.
    pub fn saved(&self) -> SavedDelivery {
        SavedDelivery::of(&self.outbox, &self.dedupe)
    }

    /// Takes back what [`Engine::saved`] gave: the waiting messages go out at the next login
    /// (before any sent since), and the seen messages are not reported again.
    pub fn restore(&mut self, saved: SavedDelivery) {
        for key in saved.seen {
            self.dedupe.insert(key);
        }
        let mut outbox = saved.outbox;
        for entry in self.outbox.iter() {
            outbox.push(entry.clone());
        }
        self.outbox = outbox;
    }

    /// Remembers a message as reported already (a de-duplication key from the application's
    /// saved history, [`crate::Incoming::key`]), so that a copy delivered later is not reported.
    pub fn remember_seen(&mut self, key: &str) {
        self.dedupe.insert(key.to_string());
    }

    /// The de-duplication memory, for an engine of the same identity on the next connection
    /// ([`Engine::restore_seen`]): the messages the application was given. Messages still
    /// waiting in the event queue are left out, since their application never saw them; the
    /// server delivers them again (they were not acknowledged) and they are reported then.
    pub fn seen(&self) -> Dedupe {
        let mut seen = self.dedupe.clone();
        for event in &self.events {
            if let Event::Message(m) = event {
                seen.remove(&m.key);
            }
        }
        seen
    }

    /// Continues the de-duplication of an earlier engine: a message it reported is not reported
    /// again, and its copies are acknowledged, since its application has had it. That includes
    /// copies already waiting in the event queue (delivered during the login, before this
    /// call): they are taken out and acknowledged.
    pub fn restore_seen(&mut self, seen: Dedupe) {
        for key in seen.recent() {
            self.dedupe.insert(key.to_string());
        }
        let mut copies = Vec::new();
        self.events.retain(|event| match event {
            Event::Message(m) if seen.contains(&m.key) => {
                copies.extend(m.id.clone());
                false
            }
            _ => true,
        });
        for id in copies {
            self.unacked.remove(&id);
            self.queue_ack(id);
        }
    }

    /// Whether what [`Engine::saved`] returns changed since the last call.
    pub fn take_storage_changed(&mut self) -> bool {
        std::mem::take(&mut self.storage_changed)
    }

    /// The messages sent and not yet confirmed, oldest first.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Takes the unconfirmed messages out of the engine (for another engine's
    /// [`Engine::resend`]).
    pub fn take_outbox(&mut self) -> Outbox {
        self.storage_changed = true;
        std::mem::take(&mut self.outbox)
    }
}
