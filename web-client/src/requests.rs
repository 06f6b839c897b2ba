//! What each datum the client sends is for, so that its answer can be put to use.
//!
//! Once logged in, the server answers every datum the client sends with exactly one Status,
//! User or Roster, in order, and slips unsolicited datums in between. Each unsolicited Status
//! code is distinct from every answer code ([`is_notice`]), so a FIFO of requests
//! ([`PendingQueue`]) popped once per answer-like datum pairs every answer with its request.

use std::collections::VecDeque;

use flexim_protocol::Status;
use flexim_protocol::status;

/// Why a GETUSER was sent, which decides what its answer is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The user asked to start a conversation with this key or alias.
    Contact,
    /// A message arrived with an alias in `from`; its key is needed to open it.
    Sender,
    /// Only to learn the user's aliases and presence; a failure is not worth showing.
    Refresh,
}

/// What a sent datum was for, kept until its answer arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// REGISTER of this alias.
    Register {
        /// The alias asked for.
        alias: String,
    },
    /// ROSTER.
    Roster,
    /// SEARCH for this text.
    Search {
        /// The text searched for.
        text: String,
    },
    /// GETUSER of a key or alias.
    GetUser {
        /// The key or alias asked about, as sent.
        query: String,
        /// What the answer is for.
        purpose: Lookup,
    },
    /// A sealed Message. Its frame waits in the session's outbox until the message is
    /// confirmed, so that it can be sent again byte for byte after a reconnect.
    Message {
        /// The message's id.
        id: String,
    },
    /// GHOST.
    Ghost,
    /// ACK of messages this client received and processed.
    Ack {
        /// How many ids it carried.
        count: usize,
    },
}

/// The requests waiting for their answers, oldest first.
#[derive(Debug, Clone, Default)]
pub struct PendingQueue {
    /// The requests in the order they were sent.
    queue: VecDeque<Request>,
}

impl PendingQueue {
    /// An empty queue.
    pub fn new() -> Self {
        PendingQueue::default()
    }

    /// Records a sent request.
    pub fn push(&mut self, request: Request) {
        self.queue.push_back(request);
    }

    /// The request the next answer belongs to.
    pub fn pop(&mut self) -> Option<Request> {
        self.queue.pop_front()
    }

    /// How many requests are waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether a waiting request matches `pred` (to avoid asking the same thing twice).
    pub fn any(&self, pred: impl Fn(&Request) -> bool) -> bool {
        self.queue.iter().any(pred)
    }

    /// Empties the queue (the connection is gone, so no answer will come).
    pub fn take_all(&mut self) -> Vec<Request> {
        self.queue.drain(..).collect()
    }
}

/// The Status codes the server sends unasked, which never answer a request.
pub use flexim_protocol::status::is_notice;

/// A Status as people read it: `name (code): payload`.
pub(crate) fn describe(s: &Status) -> String {
    if s.payload.is_empty() {
        format!("{} ({})", status::name(s.status), s.status)
    } else {
        format!("{} ({}): {}", status::name(s.status), s.status, s.payload)
    }
}

/// Why the server refused a message, as the sender reads it next to the message: the common
/// refusals in words, with the code's name for reference; any other as [`describe`] has it.
pub(crate) fn refusal(s: &Status) -> String {
    let words = match s.status {
        status::QUEUE_FULL => "the recipient's queue is full",
        status::NO_SUCH_USER => "the server knows no such recipient",
        status::TOO_LARGE => "the message is too large",
        status::SPOOF => "the server does not accept this sender",
        status::INTERNAL => "the server could not store it",
        _ => return describe(s),
    };
    format!("{words} ({}, {})", status::name(s.status), s.status)
}
