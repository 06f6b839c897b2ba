//! Rooms (docs/PROTOCOL.md §16): the server as MLS delivery service. The store keeps each
//! room's record and decides every change ([`crate::store::rooms`]); this layer caches the
//! records, puts each room's messages in one order, fans them out through the same routing as
//! a 1:1 message ([`Relay::route_as`], so every copy has its own live-or-stored path, ACK and
//! receipt), answers the sender once, and sends the invitations and the notices of members
//! joining and parting.
//!
//! **One order.** A room's messages are fanned out one at a time under the room's `order` lock:
//! while it is held, every copy is handed to [`Relay::route_as`], which decides synchronously
//! (a live session's queue, or a store write started in call order) under the recipient's
//! shard. The table delivers one key's frames in the order they were routed, whoever sent
//! them (a session goes live only once no store write for its key is running or decided), so
//! each member gets the room's messages in the order they were fanned out. A commit holds the
//! lock across its compare-and-set in the store, so nothing of the room is fanned out between
//! its acceptance and its copies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flexim_protocol::conversation::{RoomId, pair_room};
use flexim_protocol::datum::{Request, RoomMemberJoin, RoomMemberPart, Status};
use flexim_protocol::frame::PREFIX_LEN;
use flexim_protocol::{Datum, PublicKey, status};
use tokio::sync::oneshot;

use super::{Answer, Relay};
use crate::cluster::Signal;
use crate::frames::{self, Id};
use crate::store::{Refused, Room, RoomChange, RoomLimits};
use crate::table::Admit;

/// Most rooms whose slot (cached record and order lock) is kept; beyond it the slots nobody
/// is using are dropped (their records are read again when needed).
const SLOTS: usize = 1 << 16;

/// The rooms this node has seen: per room, its order lock and its cached record.
#[derive(Default)]
pub(crate) struct Rooms {
    /// The slots by room id.
    slots: Mutex<HashMap<RoomId, Arc<Slot>>>,
}

/// One room's lock and cache.
#[derive(Default)]
struct Slot {
    /// Held while a message of the room is checked and fanned out (and, for a commit, while
    /// the store applies it): what puts the room's messages in one order.
    order: tokio::sync::Mutex<()>,
    /// The record as last read or written here.
    cached: Mutex<Cached>,
}

/// A cached record and the count of invalidations, so that a read that began before an
/// invalidation is not cached after it.
#[derive(Default)]
struct Cached {
    /// The record, if known (a room that does not exist is not cached).
    record: Option<Arc<Room>>,
    /// Bumped by every invalidation.
    generation: u64,
}

impl Rooms {
    /// The slot of `id`, made if new.
    fn slot(&self, id: RoomId) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("rooms lock");
        if let Some(slot) = slots.get(&id) {
            return slot.clone();
        }
        if slots.len() >= SLOTS {
            // A slot someone holds must stay: a second slot for its room would be a second
            // order lock.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots.entry(id).or_default().clone()
    }

    /// Forgets the cached record of `id` (another node changed the room).
    pub(crate) fn forget(&self, id: &RoomId) {
        let slot = self.slots.lock().expect("rooms lock").get(id).cloned();
        if let Some(slot) = slot {
            slot.forget();
        }
    }

    /// Forgets every cached record (signals from other nodes may have been missed).
    pub(crate) fn forget_all(&self) {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .expect("rooms lock")
            .values()
            .cloned()
            .collect();
        for slot in slots {
            slot.forget();
        }
    }
}

impl Slot {
    fn forget(&self) {
        let mut c = self.cached.lock().expect("room cache lock");
        c.record = None;
        c.generation += 1;
    }

    /// Caches `record` as the room's now (written by this node).
    fn keep(&self, record: Option<Room>) {
        let mut c = self.cached.lock().expect("room cache lock");
        c.record = record.map(Arc::new);
        c.generation += 1;
    }
}

/// A room message, as the session checked it (docs/PROTOCOL.md §16.4 steps 2 and 3).
pub(crate) struct RoomMessage {
    /// The room.
    pub(crate) room: RoomId,
    /// The epoch in its clear header.
    pub(crate) epoch: u64,
    /// For a commit, the membership it changes; `None` for an application message.
    pub(crate) commit: Option<Changes>,
}

/// What a commit changes.
pub(crate) struct Changes {
    /// Users it adds (each has logged in).
    pub(crate) add: Vec<PublicKey>,
    /// Keys it removes.
    pub(crate) remove: Vec<PublicKey>,
    /// The Welcome for the added users, base64, as sent.
    pub(crate) welcome: Option<String>,
}

/// What a room message's copies are: its frame as received, and its id.
struct Copy {
    /// The Message's id, if it has one: each copy is acknowledged by it.
    id: Option<Id>,
    /// The frame, forwarded byte for byte.
    frame: Bytes,
}

/// `-8` for a room that does not exist or a sender that is not a member: the same words.
fn not_member(room: RoomId) -> Status {
    Status::new(
        status::NO_SUCH_USER,
        format!("no room {room}, or you are not a member of it"),
    )
}

/// A storage failure, in words.
fn failure(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "a room could not be read or changed");
    Status::new(status::INTERNAL, "storage failure: nothing changed")
}

/// The Status a refused change is answered with.
pub(crate) fn refusal(room: RoomId, refused: Refused) -> Status {
    let code = match &refused {
        Refused::Exists => status::ALIAS_TAKEN,
        Refused::NotMember => return not_member(room),
        // The payload is the room's epoch alone, in decimal (docs/PROTOCOL.md §16.4).
        Refused::Stale { epoch } => return Status::new(status::STALE_EPOCH, epoch.to_string()),
        Refused::NotAdmin => status::NOT_ADMIN,
        Refused::Bad(_) => status::BAD_ARGUMENT,
        Refused::RoomFull { .. } | Refused::TooManyRooms { .. } | Refused::Pair(_) => {
            status::ROOM_LIMIT
        }
    };
    Status::new(code, refused.to_string())
}

/// The code of a Status frame (the answers [`Relay::route_as`] gives are Status frames).
fn code_of(frame: &[u8]) -> i8 {
    match frame.get(PREFIX_LEN..).map(|b| Datum::decode(frame[0], b)) {
        Some(Ok(Datum::Status(s))) => s.status,
        _ => status::INTERNAL,
    }
}

/// The one answer to a room message from the answers to its copies: `2` when any copy was
/// stored, else `3`; the text counts them, and those not kept.
fn one_answer(codes: &[i8], id: Option<&Id>) -> Bytes {
    let relayed = codes.iter().filter(|c| **c == status::RELAYED).count();
    let stored = codes.iter().filter(|c| **c == status::STORED).count();
    let lost: Vec<i8> = codes
        .iter()
        .copied()
        .filter(|c| *c != status::RELAYED && *c != status::STORED)
        .collect();
    let mut text = format!("{relayed} relayed, {stored} stored");
    if let Some(first) = lost.first() {
        let why = match *first {
            status::QUEUE_FULL => "queue full",
            status::SHARE_FULL => "share full",
            status::STORE_FULL => "store full",
            _ => "storage failure",
        };
        text.push_str(&format!(", {} not kept: {why}", lost.len()));
    }
    let code = if stored > 0 {
        status::STORED
    } else {
        status::RELAYED
    };
    let id = id.map(|i| i.as_str().to_string());
    frames::status(Status::new(code, text).with_id(id))
}

impl Relay {
    /// The limits of rooms.
    fn room_limits(&self) -> RoomLimits {
        RoomLimits {
            members: self.live().max_room_members,
            rooms: self.live().max_rooms,
        }
    }

    /// The record of `id`: the cached one, unless `fresh` or none is cached; a record read is
    /// cached unless the room changed meanwhile.
    async fn record(
        &self,
        slot: &Slot,
        id: RoomId,
        fresh: bool,
    ) -> Result<Option<Arc<Room>>, Status> {
        let generation = {
            let c = slot.cached.lock().expect("room cache lock");
            match &c.record {
                Some(r) if !fresh => return Ok(Some(r.clone())),
                _ => c.generation,
            }
        };
        let read = self.store.room(id).await.map_err(failure)?.map(Arc::new);
        let mut c = slot.cached.lock().expect("room cache lock");
        if c.generation == generation {
            c.record = read.clone();
        }
        Ok(read)
    }

    /// The record of `id` if `key` is a member of it.
    pub(crate) async fn room_of_member(
        &self,
        key: PublicKey,
        id: RoomId,
    ) -> Result<Arc<Room>, Status> {
        let slot = self.rooms.slot(id);
        self.member_record(&slot, id, key, 0).await
    }

    /// The record of `id` if `key` is a member of it, read again from the store when the
    /// cached one says it is not (it may have joined through another node whose signal has
    /// not come yet) or is older than `epoch` (another node moved the room on).
    async fn member_record(
        &self,
        slot: &Slot,
        id: RoomId,
        key: PublicKey,
        epoch: u64,
    ) -> Result<Arc<Room>, Status> {
        let cached = self.record(slot, id, false).await?;
        if let Some(r) = cached.filter(|r| r.has(&key) && r.epoch >= epoch) {
            return Ok(r);
        }
        let room = self.record(slot, id, true).await?;
        room.filter(|r| r.has(&key)).ok_or_else(|| not_member(id))
    }

    /// Records a change made here: cached, and forgotten by the other nodes.
    fn changed(&self, slot: &Slot, id: RoomId, after: Option<Room>) {
        slot.keep(after);
        if let Some(cluster) = &self.cluster {
            cluster.send(None, Signal::Room(id));
        }
    }

    /// CREATEROOM, of an ordinary room or (with `peer`) of the pair room of `key` and `peer`
    /// (§16.9): the id must be of the kind asked for, so that nobody can take a pair's id.
    pub(crate) async fn create_room(
        &self,
        key: PublicKey,
        id: RoomId,
        peer: Option<PublicKey>,
    ) -> Status {
        match peer {
            Some(peer) if pair_room(&key, &peer) != id => {
                let text = format!(
                    "{id} is not the pair room of you and {peer}: it is {}; nothing was created",
                    pair_room(&key, &peer)
                );
                return Status::new(status::BAD_ARGUMENT, text);
            }
            Some(peer) if peer == key => {
                return Status::new(
                    status::BAD_ARGUMENT,
                    "a conversation of two needs another user; nothing was created",
                );
            }
            None if id.is_pair() => {
                let text = "a room id with the top bit set is a pair room's: send \
                            CREATEROOM ID PEER for one, or clear the bit; nothing was created";
                return Status::new(status::BAD_ARGUMENT, text);
            }
            _ => {}
        }
        let change = RoomChange::Create {
            creator: key,
            peer,
            limits: self.room_limits(),
        };
        let slot = self.rooms.slot(id);
        let _order = slot.order.lock().await;
        match self.store.change_room(id, change).await {
            Ok(Ok(changed)) => {
                self.changed(&slot, id, changed.after);
                Status::new(status::OK, format!("created room {id}"))
            }
            Ok(Err(refused)) => refusal(id, refused),
            Err(e) => failure(e),
        }
    }

    /// LEAVE: the remaining members are told (RoomMemberPart, `by` the leaver).
    pub(crate) async fn leave_room(self: &Arc<Self>, key: PublicKey, id: RoomId) -> Status {
        let slot = self.rooms.slot(id);
        let _order = slot.order.lock().await;
        match self
            .store
            .change_room(id, RoomChange::Leave { member: key })
            .await
        {
            Ok(Ok(changed)) => {
                if let Some(after) = &changed.after {
                    let part = part(id, key, key);
                    for m in &after.members {
                        self.room_notice(m.key, part.clone());
                    }
                }
                self.changed(&slot, id, changed.after);
                Status::new(status::OK, format!("left room {id}"))
            }
            Ok(Err(refused)) => refusal(id, refused),
            Err(e) => {
                slot.forget();
                failure(e)
            }
        }
    }

    /// An Acknowledge naming a room `key` was invited to: the adder is accepted (§14.2).
    /// `None` when `id` names no room `key` is a member of (it may name a 1:1 request).
    pub(crate) async fn acknowledge_room(&self, key: PublicKey, id: &str) -> Option<Status> {
        let room = RoomId::parse(id)?;
        let record = self.room_of_member(key, room).await.ok()?;
        let by = record.members.iter().find(|m| m.key == key)?.by;
        if by != key
            && let Err(refused) = self.accept(key, by).await
        {
            return Some(refused);
        }
        Some(Status::new(status::OK, format!("joined room {room}")))
    }

    /// The invitation of `to` into a room by `adder`, admitted as a Message from `adder`
    /// would be (§14.3): `-26` if `to` blocked the adder, `-25` if its box is full; from a
    /// stranger it counts as one of its messages in the box.
    /// A pair room's invitation (§16.9) is the Request of the pair: it counts no message.
    async fn admit_invitation(
        &self,
        adder: PublicKey,
        to: PublicKey,
        pair: bool,
    ) -> Result<(), Status> {
        self.accept(adder, to).await?;
        self.admit(adder, to, !pair).await.map(|_| ())
    }

    /// A room message from `sender`, checked by the session (§16.4 steps 2 and 3): the rest of
    /// the checks, the commit's change in the store, the fan-out and the one answer.
    pub(crate) async fn room_message(
        self: &Arc<Self>,
        sender: PublicKey,
        m: RoomMessage,
        id: Option<Id>,
        frame: Bytes,
    ) -> Result<Answer, Status> {
        let slot = self.rooms.slot(m.room);
        let _order = slot.order.lock().await;
        let room = self.member_record(&slot, m.room, sender, m.epoch).await?;
        let Some(changes) = m.commit else {
            if m.epoch > room.epoch {
                let text = format!(
                    "the message is of epoch {}, and the room is at {}; nothing was forwarded",
                    m.epoch, room.epoch
                );
                return Err(Status::new(status::BAD_ARGUMENT, text));
            }
            let answers = self.fan_out(sender, &room, id.clone(), frame, Admit::Message);
            return Ok(combine(answers, id));
        };
        let copy = Copy { id, frame };
        self.commit(&slot, sender, &room, (m.room, m.epoch, changes), copy)
            .await
    }

    /// A commit: checked against the rule on the record first (so a refused commit touches no
    /// consent), its added users admitted, then applied by the store's compare-and-set, and
    /// fanned out to the members before it (the removed ones included), then the notices.
    async fn commit(
        self: &Arc<Self>,
        slot: &Slot,
        sender: PublicKey,
        room: &Room,
        (id, epoch, changes): (RoomId, u64, Changes),
        copy: Copy,
    ) -> Result<Answer, Status> {
        let change = RoomChange::Commit {
            author: sender,
            epoch,
            add: changes.add.clone(),
            remove: changes.remove.clone(),
            limits: self.room_limits(),
        };
        // Counts of rooms are the store's to check; here only the record's rules.
        let zeros = vec![0; changes.add.len()];
        crate::store::rooms::decide(Some(room), &change, &zeros).map_err(|r| refusal(id, r))?;
        for to in &changes.add {
            self.admit_invitation(sender, *to, room.is_pair()).await?;
        }
        let changed = match self.store.change_room(id, change).await {
            Ok(Ok(changed)) => changed,
            Ok(Err(refused)) => {
                // The store's record is newer than the one checked: read it next time.
                slot.forget();
                return Err(refusal(id, refused));
            }
            Err(e) => {
                // The change may have been made (a reply lost on the way): read it next time.
                slot.forget();
                return Err(failure(e));
            }
        };
        let before = changed.before.unwrap_or_else(|| room.clone());
        let after = changed.after.clone();
        self.changed(slot, id, changed.after);
        let answers = self.fan_out(sender, &before, copy.id.clone(), copy.frame, Admit::Room);
        if let Some(after) = &after {
            self.commit_notices(sender, id, &before, after, &changes);
        }
        Ok(combine(answers, copy.id))
    }

    /// Hands a copy of `frame` to every member of `room` but `sender`, in the room's order:
    /// each through the same routing as a 1:1 message.
    fn fan_out(
        self: &Arc<Self>,
        sender: PublicKey,
        room: &Room,
        id: Option<Id>,
        frame: Bytes,
        admit: Admit,
    ) -> Vec<Answer> {
        room.members
            .iter()
            .filter(|m| m.key != sender)
            .map(|m| self.route_as(sender, m.key, id.clone(), frame.clone(), admit))
            .collect()
    }

    /// The notices of an accepted commit (§16.3): each added user its invitation (a Request
    /// with the Welcome), then every member after the change but the author a RoomMemberJoin
    /// per added user and a RoomMemberPart per removed member, and each removed member its
    /// own RoomMemberPart.
    fn commit_notices(
        self: &Arc<Self>,
        author: PublicKey,
        id: RoomId,
        before: &Room,
        after: &Room,
        changes: &Changes,
    ) {
        for to in &changes.add {
            let invitation = Request {
                to: vec![to.to_hex()],
                from: author.to_hex(),
                options: vec!["room".into()],
                id: Some(id.to_hex()),
                welcome: changes.welcome.clone(),
            };
            self.room_notice(*to, frames::frame(invitation));
        }
        let parted: Vec<PublicKey> = changes
            .remove
            .iter()
            .copied()
            .filter(|k| before.has(k) && !after.has(k))
            .collect();
        let mut notices: Vec<Bytes> = changes
            .add
            .iter()
            .map(|k| {
                frames::frame(RoomMemberJoin {
                    room: id.to_hex(),
                    member: k.to_hex(),
                    by: Some(author.to_hex()),
                })
            })
            .collect();
        notices.extend(parted.iter().map(|k| part(id, *k, author)));
        for m in after.members.iter().filter(|m| m.key != author) {
            for n in &notices {
                self.room_notice(m.key, n.clone());
            }
        }
        for k in parted {
            self.room_notice(k, part(id, k, author));
        }
    }

    /// Sends a room's notice to `to`: to its live session, or into the store outside every
    /// bound (also for a session on another node, which the store write wakes), in order with
    /// the room's messages.
    fn room_notice(self: &Arc<Self>, to: PublicKey, frame: Bytes) {
        let started = {
            let mut table = self.lock(&to);
            table.room_notice(to, frame).map(|w| self.start(w))
        };
        if let Some(started) = started {
            self.carry(started, None);
        }
    }
}

/// A RoomMemberPart of `member` from `room`, by `by`.
fn part(room: RoomId, member: PublicKey, by: PublicKey) -> Bytes {
    frames::frame(RoomMemberPart {
        room: room.to_hex(),
        member: member.to_hex(),
        by: Some(by.to_hex()),
    })
}

/// The one answer of a fan-out: now if every copy was answered at once, else once the store
/// has answered every stored copy (durably).
fn combine(answers: Vec<Answer>, id: Option<Id>) -> Answer {
    let mut now = Vec::with_capacity(answers.len());
    let mut later = Vec::new();
    for a in answers {
        match a {
            Answer::Frame(f) => now.push(code_of(&f)),
            Answer::Later(rx) => later.push(rx),
        }
    }
    if later.is_empty() {
        return Answer::Frame(one_answer(&now, id.as_ref()));
    }
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        for rx in later {
            now.push(rx.await.map_or(status::INTERNAL, |f| code_of(&f)));
        }
        let _ = tx.send(one_answer(&now, id.as_ref()));
    });
    Answer::Later(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of the one answer of a fan-out.
    fn text(codes: &[i8]) -> (i8, String) {
        let frame = one_answer(codes, None);
        match Datum::decode(frame[0], &frame[PREFIX_LEN..]).unwrap() {
            Datum::Status(s) => (s.status, s.payload),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_answer_counts_every_copy() {
        assert_eq!(text(&[]), (status::RELAYED, "0 relayed, 0 stored".into()));
        assert_eq!(
            text(&[status::RELAYED, status::STORED]),
            (status::STORED, "1 relayed, 1 stored".into())
        );
        assert_eq!(
            text(&[status::RELAYED, status::QUEUE_FULL, status::INTERNAL]),
            (
                status::RELAYED,
                "1 relayed, 0 stored, 2 not kept: queue full".into()
            )
        );
    }

    #[test]
    fn refusals_have_their_codes_and_a_stale_epoch_says_the_rooms() {
        let room = RoomId([1; 16]);
        let stale = refusal(room, Refused::Stale { epoch: 7 });
        assert_eq!(
            (stale.status, stale.payload.as_str()),
            (status::STALE_EPOCH, "7")
        );
        assert_eq!(refusal(room, Refused::NotAdmin).status, status::NOT_ADMIN);
        assert_eq!(
            refusal(room, Refused::NotMember).status,
            status::NO_SUCH_USER
        );
        assert_eq!(refusal(room, Refused::Exists).status, status::ALIAS_TAKEN);
        let full = Refused::RoomFull { members: 5, max: 4 };
        assert_eq!(refusal(room, full).status, status::ROOM_LIMIT);
    }
}
