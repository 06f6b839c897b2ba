//! The engine's room state, apart from the operations on it (`mod.rs`), so that the engine
//! holds it without depending on them.

use std::collections::{BTreeMap, VecDeque};

use flexim_mls::Member;
use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;

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
