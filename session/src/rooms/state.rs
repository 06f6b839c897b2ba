//! The engine's room state, apart from the operations on it (`mod.rs`, `pairs.rs`), so that
//! the engine holds it without depending on them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use flexim_mls::Member;
use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use serde::{Deserialize, Serialize};

use crate::events::RoomIncoming;
use crate::requests::{Op, RequestId};

/// A commit the server refused as stale, waiting for the room's epoch to move on.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    /// The room.
    pub(crate) room: RoomId,
    /// What to commit again.
    pub(crate) op: Op,
    /// The epoch the refused commit was made in: once the group is past it, commit again.
    pub(crate) epoch: u64,
    /// The request the user made, whose answer is still owed; `None` for the engine's own.
    pub(crate) origin: Option<RequestId>,
}

/// The engine's rooms: the MLS member, the invitations not yet answered, the commits waiting
/// for a retry.
#[derive(Default)]
pub(crate) struct Rooms {
    /// The MLS state, made at first use (it draws a signing key).
    pub(crate) member: Option<Member>,
    /// Rooms this user was invited to and has not accepted, with who invited it: their
    /// messages are reported as invitations ([`crate::RoomIncoming::invited`]).
    pub(crate) invited: BTreeMap<RoomId, PublicKey>,
    /// Commits to make again once their room's epoch moves.
    pub(crate) waiting: Vec<Waiting>,
    /// The latest date (Unix seconds) the driver gave, used for the commits the engine makes
    /// on its own (it has no clock).
    pub(crate) now: i64,
    /// Whether the state changed since the driver last saved it.
    pub(crate) changed: bool,
    /// Room messages opened but not acknowledged yet, oldest first, at most [`MAX_OPENED`]:
    /// MLS opens a message once (its key is deleted for forward secrecy), so a copy the server
    /// delivers again because the application never acknowledged the first (a program that
    /// ended first, a page closed) is reported from here instead of being lost. Saved with
    /// the rooms, so kept like the groups' secrets.
    pub(crate) opened: VecDeque<RoomIncoming>,
}

/// How many opened, unacknowledged room messages are kept ([`Rooms::opened`]); beyond it the
/// oldest is dropped, and a copy of it delivered later is reported as not opening.
pub const MAX_OPENED: usize = 1_000;

/// A message written to a peer before the pair group with it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    /// The message's id, handed to the driver when it was written.
    pub(crate) id: String,
    /// The peer.
    pub(crate) peer: PublicKey,
    /// The plaintext, sealed once the group exists.
    pub(crate) text: String,
    /// The date it was written.
    pub(crate) date: i64,
    /// Its flags (such as `NOTIFY`).
    #[serde(default)]
    pub(crate) flags: Vec<String>,
    /// The request handed to the driver for its answer (none when written offline, or after a
    /// restart, as the driver that waited for it is gone).
    #[serde(skip)]
    pub(crate) request: Option<RequestId>,
}

/// Per pair room, what decides its next update of this member's leaf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Freshness {
    /// Messages sent since the last update (or since joining).
    pub(crate) sent: u32,
    /// When the last update (or joining) was (Unix seconds); 0 before the first message.
    pub(crate) since: i64,
}

/// The engine's state of its pair rooms, apart from the groups themselves.
#[derive(Debug, Default)]
pub(crate) struct Pairs {
    /// Messages waiting for their pair group, oldest first.
    pub(crate) held: Vec<Held>,
    /// Peers the server had no KeyPackage for on this run: written to with the box.
    pub(crate) boxed: BTreeSet<PublicKey>,
    /// For a held message finally sent, the request its answer comes as (the one sent) and the
    /// one the driver was handed.
    pub(crate) stand_ins: Vec<(RequestId, RequestId)>,
    /// When each pair room's next update is due.
    pub(crate) fresh: BTreeMap<RoomId, Freshness>,
}
