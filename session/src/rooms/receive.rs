//! Receiving in rooms: each room message opened by the room's MLS group in the order the
//! server gave (§16.4), commits merged, invitations joined, join and part notices reported.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flexim_mls::Received;
use flexim_protocol::conversation::{RoomId, pair_room};
use flexim_protocol::datum::{RoomMemberJoin, RoomMemberPart};
use flexim_protocol::{Message, PublicKey, Request as RequestDatum};

use super::Op;
use crate::dedupe::room_message_key;
use crate::engine::Engine;
use crate::events::{Event, RoomIncoming};

impl Engine {
    /// A Message whose `to` is a room. Copies are dropped before opening (MLS opens each
    /// message once); one that does not open is reported and acknowledged, since it never will.
    pub(crate) fn on_room_message(&mut self, room: RoomId, message: Message) {
        let key = room_message_key(&room, &message.msg);
        if !self.dedupe.insert(key.clone()) {
            if let Some(id) = &message.id
                && !self.unacked.contains(id)
            {
                self.queue_ack(id.clone());
            }
            return;
        }
        self.storage_changed = true;
        if let Some(kept) = self.rooms.opened.iter().find(|m| m.key == key).cloned() {
            // Opened by an earlier run that never acknowledged it: told again from the kept
            // plaintext, under the id it came with this time.
            if let Some(id) = &message.id {
                self.unacked.insert(id.clone());
            }
            let invited = self.rooms.invited.contains_key(&room);
            return self.report_room_text(RoomIncoming {
                id: message.id,
                invited,
                ..kept
            });
        }
        let opened = match STANDARD.decode(message.msg.as_bytes()) {
            Err(_) => Err("its body is not base64".to_string()),
            Ok(bytes) => match self.rooms.member.as_mut() {
                Some(member) if member.is_in(room.0) => {
                    member.open(room.0, &bytes).map_err(|e| e.to_string())
                }
                _ => Err(format!("this user is not in room {room}")),
            },
        };
        self.rooms.changed = true;
        match opened {
            Ok(Received::Application {
                sender,
                plaintext,
                aad,
            }) => self.room_text(room, message, (PublicKey(sender), plaintext, aad), key),
            Ok(Received::Commit {
                by,
                added,
                removed,
                removed_me,
                epoch,
            }) => {
                if let Some(id) = message.id {
                    self.queue_ack(id);
                }
                if room.is_pair() {
                    // The peer renewed its leaf (or, once, added this user): nothing to show.
                    return;
                }
                self.emit(Event::RoomChanged {
                    room,
                    by: PublicKey(by),
                    added: added.into_iter().map(PublicKey).collect(),
                    removed: removed.into_iter().map(PublicKey).collect(),
                    epoch,
                });
                if removed_me {
                    self.removed_from(room, PublicKey(by));
                } else {
                    self.retry_commits(room);
                }
            }
            Err(reason) => {
                if let Some(id) = message.id {
                    self.queue_ack(id);
                }
                self.emit(Event::Undecryptable {
                    sender: PublicKey::from_hex(&message.from),
                    from: message.from,
                    date: message.date,
                    reason: format!("a message of room {room} did not open: {reason}"),
                });
            }
        }
    }

    /// Reports a room message that opened. Its `from` must name the member MLS authenticated:
    /// the server checks `from` against the sender's login, MLS against the sender's leaf.
    fn room_text(
        &mut self,
        room: RoomId,
        message: Message,
        (sender, plaintext, aad): (PublicKey, Vec<u8>, Vec<u8>),
        key: String,
    ) {
        let claimed = PublicKey::from_hex(&message.from);
        let text = String::from_utf8(plaintext);
        // A pair room's flags are bound as the authenticated data; a room's carry none.
        let flags = if room.is_pair() {
            message.flags.clone()
        } else {
            Vec::new()
        };
        let bound = !room.is_pair() || aad == super::pairs::flags_aad(&flags);
        if claimed.is_some_and(|c| c != sender) || text.is_err() || !bound {
            if let Some(id) = message.id {
                self.queue_ack(id);
            }
            return self.emit(Event::Undecryptable {
                sender: Some(sender),
                from: message.from,
                date: message.date,
                reason: format!("a message of room {room} names another sender than it was sealed by, carries other flags than it was sealed with, or is not text"),
            });
        }
        if let Some(id) = &message.id {
            self.unacked.insert(id.clone());
        }
        let invited = self.rooms.invited.contains_key(&room);
        let incoming = RoomIncoming {
            room,
            from: sender,
            date: message.date,
            text: text.unwrap_or_default(),
            id: message.id,
            invited,
            sealed: message.msg,
            key,
            flags,
        };
        if incoming.id.is_some() {
            if self.rooms.opened.len() >= super::state::MAX_OPENED {
                self.rooms.opened.pop_front();
            }
            self.rooms.opened.push_back(incoming.clone());
        }
        self.report_room_text(incoming);
    }

    /// Reports a room message that opened: a pair room's as a message of the conversation.
    fn report_room_text(&mut self, incoming: RoomIncoming) {
        if incoming.room.is_pair() {
            self.pair_text(incoming);
        } else {
            self.emit(Event::RoomMessage(incoming));
        }
    }

    /// This user was removed from `room` by `by`: the group is over for it.
    fn removed_from(&mut self, room: RoomId, by: PublicKey) {
        if let Some(member) = self.rooms.member.as_mut() {
            let _ = member.forget(room.0);
        }
        self.rooms.invited.remove(&room);
        self.rooms.waiting.retain(|w| w.room != room);
        self.emit(Event::RemovedFromRoom { room, by });
    }

    /// A Request with a Welcome: an invitation to a room. The group is joined at once (so that
    /// the room's messages open as they come), and the room stays an invitation until the user
    /// accepts it ([`Engine::accept_invitation`]) or declines it ([`Engine::leave_room`]).
    pub(crate) fn on_invitation(&mut self, r: RequestDatum, welcome: String) {
        let from = PublicKey::from_hex(&r.from);
        let named = r.id.as_deref().and_then(RoomId::parse);
        let joined = STANDARD
            .decode(welcome.as_bytes())
            .map_err(|_| "its Welcome is not base64".to_string())
            .and_then(|w| {
                self.member()
                    .map_err(|e| e.to_string())?
                    .join(&w)
                    .map_err(|e| e.to_string())
            });
        self.rooms.changed = true;
        match (joined, from, named) {
            (Ok(room), Some(from), Some(named))
                if room == named.0 && named == pair_room(&self.me, &from) =>
            {
                self.joined_pair(from);
            }
            (Ok(room), Some(from), Some(named)) if room == named.0 && !named.is_pair() => {
                let room = RoomId(room);
                self.rooms.invited.insert(room, from);
                self.emit(Event::Invited { room, from });
            }
            (Ok(room), _, _) => {
                let _ = self.member().map(|m| m.forget(room));
                self.notice(format!(
                    "ignored an invitation from {:?} whose Welcome is for another room",
                    r.from
                ));
            }
            (Err(why), _, _) => self.notice(format!(
                "an invitation from {:?} could not be joined: {why}",
                r.from
            )),
        }
    }

    /// RoomMemberJoin: someone was added to a room.
    pub(crate) fn on_room_join(&mut self, j: RoomMemberJoin) {
        let _ = self.member_notice("RoomMemberJoin", &j.room, &j.member, j.by.as_deref(), true);
    }

    /// Reads a RoomMemberJoin or RoomMemberPart (`what` names it) and reports it as
    /// [`Event::RoomMember`]: its room, member and `by`, or `None` (and a notice) if garbled.
    fn member_notice(
        &mut self,
        what: &str,
        room: &str,
        member: &str,
        by: Option<&str>,
        joined: bool,
    ) -> Option<(RoomId, PublicKey, Option<PublicKey>)> {
        let (Some(id), Some(key)) = (RoomId::parse(room), PublicKey::from_hex(member)) else {
            self.notice(format!("ignored a garbled {what} for {room:?}"));
            return None;
        };
        if id.is_pair() {
            // A pair room's members are the conversation's two: nothing to show.
            return None;
        }
        let by = by.and_then(PublicKey::from_hex);
        self.emit(Event::RoomMember {
            room: id,
            member: key,
            joined,
            by,
        });
        Some((id, key, by))
    }

    /// RoomMemberPart: someone left a room or was removed. A member that left on its own is
    /// still a leaf of the group until someone commits its removal: this client does, so that
    /// the leaver's keys stop opening the room (any member may, §16.3; a race costs one `-27`).
    pub(crate) fn on_room_part(&mut self, p: RoomMemberPart) {
        let notice =
            self.member_notice("RoomMemberPart", &p.room, &p.member, p.by.as_deref(), false);
        let Some((room, member, by)) = notice else {
            return;
        };
        let left = by == Some(member) && member != self.me;
        let still_leaf = self
            .group_members(room)
            .is_ok_and(|m| m.iter().any(|(k, _)| *k == member));
        let already = self.pending.any(|r| matches!(r, crate::requests::Request::Commit { op: Op::Remove { who }, .. } if *who == member));
        if left && still_leaf && !already {
            let _ = self.commit(room, Op::Remove { who: member }, None);
        }
    }
}
