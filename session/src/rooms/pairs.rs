//! 1:1 conversations on MLS (docs/PROTOCOL.md §16.9): a conversation of two is the pair room of
//! the two users, an MLS group of exactly them, so that it has forward secrecy and
//! post-compromise security like a room. The application still sees a conversation: it calls
//! [`Engine::send_text`] and gets [`Event::Message`], [`Answer::Sent`] and receipts, whatever
//! carries them.
//!
//! The first of the two to write makes the group: CREATEROOM ID PEER, one of the peer's
//! KeyPackages claimed, the Add committed with its Welcome. Messages written before the group
//! exists are held here (and saved with the rooms), then sealed once it does; the request the
//! driver was handed for each is answered by the answer to the message sent in the end. A peer
//! the server holds no KeyPackage for (`-29`) is written to with the static-key box instead
//! for the rest of the run.

use std::collections::BTreeSet;

use flexim_protocol::conversation::{RoomId, pair_room};
use flexim_protocol::e2e::{E2eError, MAX_PLAINTEXT};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Command, Datum, PublicKey};

use super::state::{Freshness, Held};
use super::{Op, RoomAction};
use crate::commands::Sending;
use crate::engine::{Engine, EngineError};
use crate::events::{Answer, Event, Incoming, Refusal, RoomIncoming};
use crate::outbox::{Addressee, new_id};
use crate::requests::{Request, RequestId};

/// Messages a member sends in a pair room before it commits an update of its own leaf.
pub const UPDATE_AFTER_MESSAGES: u32 = 100;
/// Seconds after which a member of a pair room commits an update of its own leaf, whatever it
/// sent: seven days.
pub const UPDATE_AFTER_SECS: i64 = 7 * 24 * 3600;

/// The authenticated data a pair room's message is sealed with: its flags, as msgpack.
pub(crate) fn flags_aad(flags: &[String]) -> Vec<u8> {
    rmp_serde::to_vec(flags).unwrap_or_default()
}

impl Engine {
    /// Whether 1:1 messages to `peer` go through its pair room.
    pub(crate) fn pairs_with(&self, peer: &PublicKey) -> bool {
        self.config.pairs && *peer != self.me && !self.pairs.boxed.contains(peer)
    }

    /// Whether this engine holds the pair group with `peer`, with `peer` in it.
    pub fn has_pair(&self, peer: &PublicKey) -> bool {
        let room = pair_room(&self.me, peer);
        self.rooms.member.as_ref().is_some_and(|m| {
            m.members(room.0)
                .is_ok_and(|ms| ms.iter().any(|(k, _)| *k == peer.0))
        })
    }

    /// [`Engine::send_text`] through the pair room of `peer`: sealed now if the group exists,
    /// else held until it does (and its making started).
    pub(crate) fn send_pair(
        &mut self,
        peer: PublicKey,
        text: &str,
        flags: &[String],
        date: i64,
    ) -> Result<Sending, EngineError> {
        if text.is_empty() || text.len() > MAX_PLAINTEXT {
            return Err(EngineError::Seal(E2eError::Length(text.len())));
        }
        self.rooms.now = date;
        let id = new_id(&mut *self.random);
        let mut held = Held {
            id: id.clone(),
            peer,
            text: text.to_string(),
            date,
            flags: flags.to_vec(),
            request: None,
        };
        if self.has_pair(&peer) {
            return self.seal_pair(peer, id, &held);
        }
        let request = self.is_ready().then(|| self.stand_in());
        held.request = request;
        self.pairs.held.push(held);
        self.rooms.changed = true;
        self.start_pair(peer);
        Ok(Sending { id, request })
    }

    /// A request id handed to the driver for an answer that another request will bring.
    fn stand_in(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    /// The request a driver waits on for the answer to `sent`: its stand-in, if it has one.
    pub(crate) fn stood_in(&mut self, sent: RequestId) -> RequestId {
        match self.pairs.stand_ins.iter().position(|(s, _)| *s == sent) {
            Some(i) => self.pairs.stand_ins.swap_remove(i).1,
            None => sent,
        }
    }

    /// Seals `text` in the pair room of `peer`, its flags bound as the authenticated data,
    /// and sends it like any room message; then commits an update of this member's leaf if
    /// one is due.
    fn seal_pair(
        &mut self,
        peer: PublicKey,
        id: String,
        held: &Held,
    ) -> Result<Sending, EngineError> {
        let room = pair_room(&self.me, &peer);
        let aad = flags_aad(&held.flags);
        let sealed = self
            .member()?
            .seal_with(room.0, held.text.as_bytes(), &aad)?;
        let sending = self.send_sealed(room, id, held.date, sealed, held.flags.clone())?;
        self.maybe_update(room, held.date);
        Ok(sending)
    }

    /// Counts a message sent in `room` and commits an update of this member's leaf once
    /// [`UPDATE_AFTER_MESSAGES`] were sent or [`UPDATE_AFTER_SECS`] passed since the last.
    fn maybe_update(&mut self, room: RoomId, now: i64) {
        let fresh = self.pairs.fresh.entry(room).or_default();
        if fresh.since == 0 {
            fresh.since = now;
        }
        fresh.sent += 1;
        let due = fresh.sent >= UPDATE_AFTER_MESSAGES || now - fresh.since >= UPDATE_AFTER_SECS;
        if due && !self.committing(room) && self.is_ready() {
            self.pairs.fresh.insert(
                room,
                Freshness {
                    sent: 0,
                    since: now,
                },
            );
            if let Err(e) = self.commit(room, Op::Update, None) {
                self.notice(format!("could not renew this user's keys in {room}: {e}"));
            }
        }
    }

    /// Whether a step of making or changing `room` waits for the server.
    fn committing(&self, room: RoomId) -> bool {
        self.rooms.waiting.iter().any(|w| w.room == room)
            || self.pending.any(|r| match r {
                Request::Room { room: r, .. }
                | Request::Claim { room: r, .. }
                | Request::Commit { room: r, .. } => *r == room,
                _ => false,
            })
    }

    /// Starts making the pair group with `peer` unless it is under way: CREATEROOM ID PEER (or,
    /// when the group was made here before and the peer is not in it yet, the claim of its
    /// KeyPackage).
    pub(crate) fn start_pair(&mut self, peer: PublicKey) {
        let room = pair_room(&self.me, &peer);
        if !self.is_ready() || self.committing(room) {
            return;
        }
        let made = self.rooms.member.as_ref().is_some_and(|m| m.is_in(room.0));
        let sent = if made {
            self.claim_pair(room, peer)
        } else {
            let created = self.member().and_then(|m| Ok(m.create(room.0)?));
            created.and_then(|()| {
                self.rooms.changed = true;
                let command = Command::new(cmd::CREATEROOM, &[&room.to_hex(), &peer.to_hex()]);
                let request = Request::Room {
                    room,
                    action: RoomAction::Create,
                };
                self.request(command, request)
            })
        };
        if let Err(e) = sent {
            self.fail_held(peer, Refusal::garbled(e.to_string()));
        }
    }

    /// KEYPACKAGE of `peer`, to add it to the pair room.
    fn claim_pair(&mut self, room: RoomId, peer: PublicKey) -> Result<RequestId, EngineError> {
        let request = Request::Claim { room, who: peer };
        self.request(Command::new(cmd::KEYPACKAGE, &[&peer.to_hex()]), request)
    }

    /// At login: the held messages' pair groups are made (or their messages sent, if the
    /// group came meanwhile).
    pub(crate) fn drive_pairs(&mut self) {
        let peers: BTreeSet<PublicKey> = self.pairs.held.iter().map(|h| h.peer).collect();
        for peer in peers {
            if self.has_pair(&peer) {
                self.flush_held(peer);
            } else {
                self.start_pair(peer);
            }
        }
    }

    /// The messages held for `peer`, taken out.
    fn take_held(&mut self, peer: PublicKey) -> Vec<Held> {
        let (mine, rest) = std::mem::take(&mut self.pairs.held)
            .into_iter()
            .partition(|h| h.peer == peer);
        self.pairs.held = rest;
        self.rooms.changed = true;
        mine
    }

    /// The pair group with `peer` exists: its held messages are sealed and sent, in order.
    pub(crate) fn flush_held(&mut self, peer: PublicKey) {
        for held in self.take_held(peer) {
            let sent = self.seal_pair(peer, held.id.clone(), &held);
            self.settle_held(held, sent);
        }
    }

    /// The server holds no KeyPackage of `peer`: its held messages go with the static-key box,
    /// as will the next ones of this run.
    fn box_held(&mut self, peer: PublicKey) {
        self.pairs.boxed.insert(peer);
        self.notice(format!(
            "{peer} has no KeyPackage on the server: messages to it use the static-key box, \
             which is not forward secret"
        ));
        for held in self.take_held(peer) {
            let sent = self
                .seal(
                    &peer,
                    &held.text,
                    &held.flags,
                    held.date,
                    Some(held.id.clone()),
                )
                .and_then(|m| Ok(Datum::Message(m).to_frame()?))
                .and_then(|frame| self.send_kept(held.id.clone(), Addressee::User(peer), frame));
            self.settle_held(held, sent);
        }
    }

    /// Ties a held message's sending to the request its driver was handed.
    fn settle_held(&mut self, held: Held, sent: Result<Sending, EngineError>) {
        match (sent, held.request) {
            (
                Ok(Sending {
                    request: Some(r), ..
                }),
                Some(stand_in),
            ) => {
                self.pairs.stand_ins.push((r, stand_in));
            }
            (Ok(_), _) => {}
            (Err(e), request) => {
                self.refuse_held(held.id, request, Refusal::garbled(e.to_string()))
            }
        }
    }

    /// The pair group with `peer` cannot be made: its held messages are refused with `why`.
    fn fail_held(&mut self, peer: PublicKey, why: Refusal) {
        for held in self.take_held(peer) {
            self.refuse_held(held.id, held.request, why.clone());
        }
    }

    /// Reports a held message refused for good.
    fn refuse_held(&mut self, id: String, request: Option<RequestId>, why: Refusal) {
        let request = request.unwrap_or_else(|| self.stand_in());
        let answer = Answer::Sent {
            id,
            delivery: None,
            result: Err(why),
            late: false,
        };
        self.emit(Event::Answer { request, answer });
    }

    /// The answer to a step of making a pair room, or to one of its commits.
    pub(crate) fn on_pair_answer(&mut self, request: Request, answer: Result<Datum, String>) {
        match request {
            Request::Room { room, .. } => {
                let Some(peer) = self.peer_of(room) else {
                    return;
                };
                match super::answers::status_of(answer) {
                    Ok(_) => {
                        if let Err(e) = self.claim_pair(room, peer) {
                            self.fail_held(peer, Refusal::garbled(e.to_string()));
                        }
                    }
                    // Made by the peer first, whose Welcome came ahead of this answer: the
                    // group joined from it is the pair's.
                    Err(r) if r.status == status::ALIAS_TAKEN && self.has_pair(&peer) => {}
                    Err(r) => {
                        self.forget_group(room);
                        // Made by the peer first: its Welcome brings the group (§16.9).
                        if r.status != status::ALIAS_TAKEN {
                            self.fail_held(peer, r);
                        }
                    }
                }
            }
            Request::Claim { room, who } => match super::answers::package_of(answer) {
                Ok(package) => {
                    if let Err(e) = self.commit(room, Op::Add { who, package }, None) {
                        self.fail_held(who, Refusal::garbled(e.to_string()));
                    }
                }
                Err(r) if r.status == status::NO_KEY_PACKAGE => self.box_held(who),
                Err(r) => self.fail_held(who, r),
            },
            Request::Commit {
                room, op, epoch, ..
            } => self.on_pair_commit(room, op, epoch, answer),
            _ => {}
        }
    }

    /// A pair room's commit answered: merged, then the held messages go; made again after a
    /// `-27`; a pair room the server does not have (made here by a run whose CREATEROOM never
    /// got through) is made again.
    fn on_pair_commit(&mut self, room: RoomId, op: Op, epoch: u64, answer: Result<Datum, String>) {
        let Some(peer) = self.peer_of(room) else {
            return;
        };
        let Some(member) = self.rooms.member.as_mut() else {
            return;
        };
        self.rooms.changed = true;
        match super::answers::status_of(answer) {
            Ok(_) => match member.confirm(room.0) {
                Ok(_) => self.flush_held(peer),
                Err(e) => self.fail_held(peer, Refusal::garbled(e.to_string())),
            },
            Err(r) if r.status == status::STALE_EPOCH => {
                let _ = member.abandon(room.0);
                let origin = None;
                (self.rooms.waiting).push(super::Waiting {
                    room,
                    op,
                    epoch,
                    origin,
                });
                self.retry_commits(room);
            }
            Err(r) if r.status == status::NO_SUCH_USER && matches!(op, Op::Add { .. }) => {
                self.forget_group(room);
                self.start_pair(peer);
            }
            Err(r) => {
                let _ = member.abandon(room.0);
                self.fail_held(peer, r);
            }
        }
    }

    /// Forgets the group of `room` here.
    fn forget_group(&mut self, room: RoomId) {
        if let Some(member) = self.rooms.member.as_mut() {
            let _ = member.forget(room.0);
        }
        self.rooms.changed = true;
    }

    /// The other user of the pair room `room`, if this user's pair room with anyone it knows
    /// of is `room`: the held messages' peers, the group's members.
    fn peer_of(&self, room: RoomId) -> Option<PublicKey> {
        let of = |k: &PublicKey| pair_room(&self.me, k) == room;
        self.pairs
            .held
            .iter()
            .map(|h| h.peer)
            .find(of)
            .or_else(|| {
                let members = self.rooms.member.as_ref()?.members(room.0).ok()?;
                members.into_iter().map(|(k, _)| PublicKey(k)).find(of)
            })
            .or_else(|| self.pairs.boxed.iter().copied().find(of))
    }

    /// A Welcome into the pair room of `from` joined: no invitation to show (the Request of
    /// the pair comes as a Request, §16.9), and the messages held for `from` go now.
    pub(crate) fn joined_pair(&mut self, from: PublicKey) {
        self.pairs.boxed.remove(&from);
        self.flush_held(from);
    }

    /// A message of a pair room that opened, reported as a message of the conversation. Its
    /// sender must be the pair's other user.
    pub(crate) fn pair_text(&mut self, r: RoomIncoming) {
        if pair_room(&self.me, &r.from) != r.room {
            return self.emit(Event::Undecryptable {
                sender: Some(r.from),
                from: r.from.to_hex(),
                date: r.date,
                reason: format!("a message of pair room {} from someone else", r.room),
            });
        }
        let from_text = r.from.to_hex();
        let name = self.sender_name(&r.from, &from_text);
        let request = self.strangers.contains(&r.from);
        self.emit(Event::Message(Incoming {
            from: r.from,
            from_text,
            name,
            to: self.me.to_hex(),
            date: r.date,
            flags: r.flags,
            text: r.text,
            id: r.id,
            request,
            key: r.key,
            forward_secret: true,
        }));
    }
}
