//! Rooms as the store keeps them (docs/PROTOCOL.md §16.3): one [`Room`] record per room id
//! (its members in the order they joined, its admins, its epoch), an index of each user's
//! rooms (for `--max-rooms`), and the one rule ([`decide`]) every change goes through.
//!
//! Both engines apply a change the same way, by [`change`]: read the record and the counts the
//! rule needs, decide, then write the result as a compare-and-set that succeeds only if the
//! record and those counts are still what was read (the embedded writer checks it in its
//! transaction, the Redis `ROOM_SET` script atomically). A set that lost a race is decided
//! again from a fresh read. So the rule exists once, in Rust, and two commits at one epoch
//! (on one node or two) get one success and one [`Refused::Stale`].

use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, StoreError};

/// How many times a change is decided again after losing its compare-and-set to another
/// write of the same room (or of an added user's rooms) before the store gives up. Each loss
/// means another change went through, so this is reached only under a storm of changes.
const TRIES: usize = 64;

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMember {
    /// The member's key.
    pub key: PublicKey,
    /// Who added it (the creator: itself). An Acknowledge of the room's id accepts this user
    /// (§14.2), as accepting a 1:1 request accepts the requester.
    pub by: PublicKey,
}

/// A room's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// The members, in the order they joined: the fan-out's recipients, and the order in
    /// which a new admin is chosen.
    pub members: Vec<RoomMember>,
    /// The members who may add and remove others; never empty while the room has members.
    pub admins: Vec<PublicKey>,
    /// The MLS epoch the room is at: a commit must be made in it, and moves it on by one.
    pub epoch: u64,
    /// For a pair room (§16.9), its two users, creator first: nobody else can ever be added,
    /// neither removes the other, and it counts in nobody's `--max-rooms` (a user has one per
    /// contact). Empty for an ordinary room; left out of the record then, so that the records
    /// written before pair rooms existed read and compare the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pair: Vec<PublicKey>,
}

impl Room {
    /// Whether `key` is a member.
    pub fn has(&self, key: &PublicKey) -> bool {
        self.members.iter().any(|m| m.key == *key)
    }

    /// Whether this is a pair room (§16.9).
    pub fn is_pair(&self) -> bool {
        !self.pair.is_empty()
    }

    /// For a pair room, the user of the two who is not `key`.
    pub fn peer_of(&self, key: &PublicKey) -> Option<PublicKey> {
        self.pair.iter().copied().find(|k| k != key)
    }

    /// Whether `key` is an admin.
    pub fn is_admin(&self, key: &PublicKey) -> bool {
        self.admins.contains(key)
    }

    /// The record as engines keep it (msgpack). Deterministic, so that a compare-and-set can
    /// compare the bytes.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a room record serializes")
    }

    /// A record [`Room::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Room, StoreError> {
        rmp_serde::from_slice(bytes).map_err(|e| StoreError::Engine(format!("a damaged room: {e}")))
    }

    /// Removes `key` from the members and admins; when no admin is left, the longest-standing
    /// member becomes one (§16.3).
    fn drop_member(&mut self, key: &PublicKey) {
        self.members.retain(|m| m.key != *key);
        self.admins.retain(|a| a != key);
        if self.admins.is_empty()
            && let Some(first) = self.members.first()
        {
            self.admins.push(first.key);
        }
    }
}

/// The limits a change is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Most members of one room (`--max-room-members`).
    pub members: u32,
    /// Most rooms one user is a member of (`--max-rooms`).
    pub rooms: u32,
}

/// A change to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomChange {
    /// CREATEROOM: a new room with `creator` as its one member and admin, at epoch 0; with
    /// `peer`, the pair room of the two (§16.9), whose admins both are.
    Create {
        /// Who creates it.
        creator: PublicKey,
        /// The other user of a pair room (the relay checked the id is theirs).
        peer: Option<PublicKey>,
        /// The bounds (only `rooms` applies, and not to a pair room).
        limits: RoomLimits,
    },
    /// A commit accepted at `epoch`, adding and removing members.
    Commit {
        /// Who sent the commit.
        author: PublicKey,
        /// The epoch the commit was made in (its clear header).
        epoch: u64,
        /// The users it adds.
        add: Vec<PublicKey>,
        /// The keys it removes (members, or keys that left already).
        remove: Vec<PublicKey>,
        /// The bounds.
        limits: RoomLimits,
    },
    /// LEAVE: `member` is no longer one.
    Leave {
        /// Who leaves.
        member: PublicKey,
    },
}

impl RoomChange {
    /// The users whose count of rooms the rule reads: those who would join.
    pub fn counted(&self) -> Vec<PublicKey> {
        match self {
            RoomChange::Create { peer: Some(_), .. } => Vec::new(),
            RoomChange::Create { creator, .. } => vec![*creator],
            RoomChange::Commit { add, .. } => add.clone(),
            RoomChange::Leave { .. } => Vec::new(),
        }
    }
}

/// Why a change was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// CREATEROOM of an id that a room has.
    #[error("a room has that id")]
    Exists,
    /// No such room, or the author (or leaver) is not a member: the same words (§16.3).
    #[error("no such room, or you are not a member")]
    NotMember,
    /// A commit made in another epoch than the room's: another commit came first.
    #[error("the room is at epoch {epoch}")]
    Stale {
        /// The room's epoch.
        epoch: u64,
    },
    /// Only an admin may do this.
    #[error("only an admin may add or remove members")]
    NotAdmin,
    /// A commit names a key wrongly: an added member, a key both added and removed, a
    /// removal of the author itself.
    #[error("{0}")]
    Bad(String),
    /// A commit of a pair room adds someone else than its peer, or removes a member.
    #[error("{0}")]
    Pair(String),
    /// The room would have more members than it may.
    #[error("the room would have {members} members; it may have {max}")]
    RoomFull {
        /// Members it would have.
        members: usize,
        /// Most it may have.
        max: u32,
    },
    /// A user who would join is in as many rooms as one may be.
    #[error("{key} is in {rooms} rooms, as many as one user may be")]
    TooManyRooms {
        /// The user.
        key: PublicKey,
        /// Rooms it is in.
        rooms: u32,
    },
}

/// What a change decided: the record after it (`None`: the room is gone), and whose index of
/// rooms gains or loses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The record after the change.
    pub after: Option<Room>,
    /// Users who became members.
    pub joined: Vec<PublicKey>,
    /// Users who stopped being members.
    pub parted: Vec<PublicKey>,
}

/// The one rule of rooms: the record after `change`, given the record before it and the
/// count of rooms of each of [`RoomChange::counted`] (in that order).
pub fn decide(
    before: Option<&Room>,
    change: &RoomChange,
    rooms: &[u32],
) -> Result<Decided, Refused> {
    let too_many = |limits: &RoomLimits, keys: &[PublicKey]| {
        keys.iter()
            .zip(rooms)
            .find(|(_, n)| **n >= limits.rooms)
            .map(|(key, n)| Refused::TooManyRooms {
                key: *key,
                rooms: *n,
            })
    };
    match change {
        RoomChange::Create {
            creator,
            peer,
            limits,
        } => {
            if before.is_some() {
                return Err(Refused::Exists);
            }
            let pair = match peer {
                Some(p) => vec![*creator, *p],
                None => Vec::new(),
            };
            if pair.is_empty()
                && let Some(refused) = too_many(limits, &[*creator])
            {
                return Err(refused);
            }
            // A pair room is in nobody's index of rooms: it counts against no limit.
            let joined = if pair.is_empty() {
                vec![*creator]
            } else {
                Vec::new()
            };
            let room = Room {
                members: vec![RoomMember {
                    key: *creator,
                    by: *creator,
                }],
                admins: if pair.is_empty() {
                    vec![*creator]
                } else {
                    pair.clone()
                },
                epoch: 0,
                pair,
            };
            Ok(Decided {
                after: Some(room),
                joined,
                parted: Vec::new(),
            })
        }
        RoomChange::Leave { member } => {
            let room = before.filter(|r| r.has(member)).ok_or(Refused::NotMember)?;
            let mut after = room.clone();
            after.drop_member(member);
            if room.is_pair() {
                // Both stay admins of a pair room: either may add the other back.
                after.admins = room.pair.clone();
            }
            Ok(Decided {
                after: (!after.members.is_empty()).then_some(after),
                joined: Vec::new(),
                parted: if room.is_pair() {
                    Vec::new()
                } else {
                    vec![*member]
                },
            })
        }
        RoomChange::Commit {
            author,
            epoch,
            add,
            remove,
            limits,
        } => {
            let room = before.filter(|r| r.has(author)).ok_or(Refused::NotMember)?;
            if *epoch != room.epoch {
                return Err(Refused::Stale { epoch: room.epoch });
            }
            if room.is_pair() {
                return pair_commit(room, *author, add, remove);
            }
            commit(room, *author, add, remove, limits, too_many(limits, add))
        }
    }
}

/// The membership rules of a pair room's commit (§16.9): it may add the peer (once), and
/// remove only a key that is no longer a member (a leaf left behind); it counts against no
/// limit, and changes nobody's index of rooms.
fn pair_commit(
    room: &Room,
    author: PublicKey,
    add: &[PublicKey],
    remove: &[PublicKey],
) -> Result<Decided, Refused> {
    for key in add {
        if !room.pair.contains(key) {
            return Err(Refused::Pair(format!(
                "{key} is not of this conversation of two; nobody else can be added"
            )));
        }
        if room.has(key) {
            return Err(Refused::Bad(format!("{key} is a member already")));
        }
    }
    if add.len() > 1 {
        return Err(Refused::Bad("a key is named twice".into()));
    }
    if let Some(key) = remove.iter().find(|k| room.has(k) || **k == author) {
        return Err(Refused::Pair(format!(
            "{key} cannot be removed from a conversation of two: decline or block instead"
        )));
    }
    Ok(Decided {
        after: Some(moved_on(room, author, add, &[])),
        joined: Vec::new(),
        parted: Vec::new(),
    })
}

/// `room` after a commit by `author` that adds `add` and takes out `parted`: at the next epoch.
fn moved_on(room: &Room, author: PublicKey, add: &[PublicKey], parted: &[PublicKey]) -> Room {
    let mut after = room.clone();
    for key in parted {
        after.drop_member(key);
    }
    after.members.extend(add.iter().map(|key| RoomMember {
        key: *key,
        by: author,
    }));
    after.epoch += 1;
    after
}

/// The membership rules of a commit (§16.3), once the author is a member at the room's epoch.
fn commit(
    room: &Room,
    author: PublicKey,
    add: &[PublicKey],
    remove: &[PublicKey],
    limits: &RoomLimits,
    too_many: Option<Refused>,
) -> Result<Decided, Refused> {
    let admin = room.is_admin(&author);
    if !add.is_empty() && !admin {
        return Err(Refused::NotAdmin);
    }
    for (i, key) in add.iter().enumerate() {
        if room.has(key) {
            return Err(Refused::Bad(format!("{key} is a member already")));
        }
        if add[..i].contains(key) || remove.contains(key) {
            return Err(Refused::Bad(format!("{key} is named twice")));
        }
    }
    let mut parted = Vec::new();
    for key in remove {
        if *key == author {
            return Err(Refused::Bad(
                "a member cannot remove itself: it sends LEAVE".into(),
            ));
        }
        // A key that is no longer a member (it left) may be removed by anyone: its leaf is
        // still in the group, and any member cleans it up.
        if room.has(key) {
            if !admin {
                return Err(Refused::NotAdmin);
            }
            if !parted.contains(key) {
                parted.push(*key);
            }
        }
    }
    let members = room.members.len() - parted.len() + add.len();
    if !add.is_empty() && members > limits.members as usize {
        return Err(Refused::RoomFull {
            members,
            max: limits.members,
        });
    }
    if let Some(refused) = too_many {
        return Err(refused);
    }
    Ok(Decided {
        after: Some(moved_on(room, author, add, &parted)),
        joined: add.to_vec(),
        parted,
    })
}

/// What a change did: the record before and after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomChanged {
    /// The record before (`None` for a room just created).
    pub before: Option<Room>,
    /// The record after (`None` once its last member left).
    pub after: Option<Room>,
}

/// The outcome of [`crate::store::Store::change_room`]: done, or refused by the rule.
pub type RoomOutcome = Result<RoomChanged, Refused>;

/// What an engine read for a change: the record's bytes as stored, and the counts of rooms of
/// [`RoomChange::counted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The record as stored, `None` when there is no room.
    pub record: Option<Vec<u8>>,
    /// The room count of each counted user, in order.
    pub rooms: Vec<u32>,
}

/// A compare-and-set of a room: write `after` and the index changes only if the record is
/// still `expected` and each counted user still has its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSet {
    /// The room.
    pub id: RoomId,
    /// The record as read (`None`: there was none).
    pub expected: Option<Vec<u8>>,
    /// The record to write (`None`: delete it).
    pub after: Option<Vec<u8>>,
    /// Each counted user with the count read.
    pub counts: Vec<(PublicKey, u32)>,
    /// Users whose index gains the room.
    pub joined: Vec<PublicKey>,
    /// Users whose index loses it.
    pub parted: Vec<PublicKey>,
}

/// What an engine provides for [`change`]: a read, and a compare-and-set.
pub(crate) trait RoomEngine: Send + Sync + 'static {
    /// Reads the record of `id` and the room counts of `users`.
    fn snapshot(
        &self,
        id: RoomId,
        users: Vec<PublicKey>,
    ) -> BoxFuture<'static, Result<Snapshot, StoreError>>;

    /// Applies `set` if nothing it read changed; says whether it did.
    fn set(&self, set: RoomSet) -> BoxFuture<'static, Result<bool, StoreError>>;
}

/// Applies `change` to room `id` through `engine`: read, [`decide`], compare-and-set, again
/// from a fresh read while another write came between.
pub(crate) async fn change(
    engine: impl RoomEngine,
    id: RoomId,
    change: RoomChange,
) -> Result<RoomOutcome, StoreError> {
    let counted = change.counted();
    for _ in 0..TRIES {
        let snap = engine.snapshot(id, counted.clone()).await?;
        let before = snap.record.as_deref().map(Room::decode).transpose()?;
        let decided = match decide(before.as_ref(), &change, &snap.rooms) {
            Ok(d) => d,
            Err(refused) => return Ok(Err(refused)),
        };
        let set = RoomSet {
            id,
            expected: snap.record,
            after: decided.after.as_ref().map(Room::encode),
            counts: counted.iter().copied().zip(snap.rooms).collect(),
            joined: decided.joined,
            parted: decided.parted,
        };
        if engine.set(set).await? {
            return Ok(Ok(RoomChanged {
                before,
                after: decided.after,
            }));
        }
    }
    Err(StoreError::Engine(format!(
        "room {id} changed {TRIES} times while a change was decided; try again"
    )))
}

#[cfg(test)]
mod tests;
