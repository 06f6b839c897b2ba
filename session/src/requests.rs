//! What each datum the client sends is for, so that its answer can be put to use.
//!
//! Once logged in, the server answers every datum the client sends with exactly one Status,
//! User or Roster, in order, and slips unsolicited datums in between. Each unsolicited Status
//! code is distinct from every answer code ([`flexim_protocol::status::is_notice`]), so a FIFO
//! of requests ([`PendingQueue`]) popped once per answer-like datum pairs every answer with its
//! request.

use std::collections::VecDeque;

use flexim_protocol::PublicKey;

/// Names one request, so that a driver that waits for an answer (the native client's
/// `request(..).await`) can recognise it among the events. Numbers only grow, across
/// connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Why a GETUSER was sent, which decides what its answer is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The user asked to talk to this key or alias.
    Contact,
    /// A message arrived with an alias in `from`; its key is needed to open it. Internal: its
    /// answer is used by the engine and reported as no event.
    Sender,
    /// Only to learn the user's aliases and presence.
    Refresh,
}

/// Why a message's sender could not be resolved to a key.
#[derive(Debug, Clone)]
pub(crate) struct Unresolved {
    /// What went wrong, for the user.
    pub(crate) reason: String,
    /// Whether it is final (nobody has the alias) rather than a failure that may pass (the
    /// server's storage failed, the answer was garbled).
    pub(crate) for_good: bool,
}

/// What a sent datum was for, kept until its answer arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
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
    /// A sealed Message. Its frame waits in the outbox until the message is confirmed, so that
    /// it can be sent again byte for byte after a reconnect.
    Message {
        /// The message's id.
        id: String,
    },
    /// GHOST.
    Ghost,
    /// OFFLINES.
    Offlines,
    /// A Request, an Acknowledge, or a command of the requests box or of being found.
    Consent {
        /// Which.
        action: Consent,
        /// Whom it concerns (a key or an alias), or the argument.
        who: String,
    },
    /// REQUESTS.
    Requests,
    /// ACK of messages this client received and processed.
    Ack {
        /// How many ids it carried.
        count: usize,
    },
    /// CREATEROOM, LEAVE, or the Acknowledge of an invitation (docs/PROTOCOL.md §16).
    Room {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
        /// Which.
        action: RoomAction,
    },
    /// KEYPACKAGE of a user to add to a room.
    Claim {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
        /// The user.
        who: flexim_protocol::PublicKey,
    },
    /// A commit sent to a room, merged once the server accepts it.
    Commit {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
        /// What it changes (kept to make it again after a `-27`).
        op: Op,
        /// The epoch it was made in.
        epoch: u64,
        /// The user's request whose answer this commit settles, if it is not the engine's own.
        origin: Option<RequestId>,
    },
    /// MEMBERS.
    Members {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
    },
    /// KEYPACKAGES: counting this user's KeyPackages on the server, or publishing more.
    KeyPackages {
        /// How many it published (0: only counting).
        published: usize,
    },
}

/// The requests waiting for their answers, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct PendingQueue {
    /// The requests in the order they were sent.
    queue: VecDeque<(RequestId, Request)>,
}

impl PendingQueue {
    /// Records a sent request.
    pub(crate) fn push(&mut self, id: RequestId, request: Request) {
        self.queue.push_back((id, request));
    }

    /// The request the next answer belongs to.
    pub(crate) fn pop(&mut self) -> Option<(RequestId, Request)> {
        self.queue.pop_front()
    }

    /// How many requests are waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether a waiting request matches `pred` (to avoid asking the same thing twice).
    pub(crate) fn any(&self, pred: impl Fn(&Request) -> bool) -> bool {
        self.queue.iter().any(|(_, r)| pred(r))
    }

    /// Empties the queue (the connection is gone, so no answer will come).
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }
}

/// What a consent request asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// A Request: asked to talk.
    Ask,
    /// An Acknowledge: accepted a request.
    Accept,
    /// DECLINE.
    Decline,
    /// BLOCK.
    Block,
    /// UNBLOCK.
    Unblock,
    /// DISCOVERABLE on or off.
    Discoverable,
}

impl Consent {
    /// The command's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Consent::Ask => "Request",
            Consent::Accept => "Acknowledge",
            Consent::Decline => flexim_protocol::status::cmd::DECLINE,
            Consent::Block => flexim_protocol::status::cmd::BLOCK,
            Consent::Unblock => flexim_protocol::status::cmd::UNBLOCK,
            Consent::Discoverable => flexim_protocol::status::cmd::DISCOVERABLE,
        }
    }
}

/// What a room request did, for its answer ([`crate::Answer::Room`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAction {
    /// CREATEROOM.
    Create,
    /// Adding a user: its KeyPackage claimed, then the commit.
    Invite(PublicKey),
    /// Removing a member: the commit.
    Remove(PublicKey),
    /// Accepting an invitation: the Acknowledge.
    Join,
    /// LEAVE (also declining an invitation).
    Leave,
    /// A commit renewing this member's own leaf (the engine's own, in a pair room).
    Update,
}

/// A change of membership this user committed or will commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Add `who`, with the KeyPackage the server handed out for it.
    Add {
        /// Who.
        who: PublicKey,
        /// Its KeyPackage (unused until a commit of it is accepted, so kept for a retry).
        package: Vec<u8>,
    },
    /// Remove `who`.
    Remove {
        /// Who.
        who: PublicKey,
    },
    /// Renew this member's own leaf: a commit that changes nobody (§16.9).
    Update,
}
