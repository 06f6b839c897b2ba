//! The answers to room requests: a claimed KeyPackage becomes a commit, a commit the server
//! ordered is merged, a stale one is dropped and made again once the room has moved on.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flexim_protocol::conversation::RoomId;
use flexim_protocol::status;
use flexim_protocol::{Datum, PublicKey, Status};

use super::{KEY_PACKAGE_LOW, Op, RoomAction, Waiting};
use crate::engine::Engine;
use crate::events::{Answer, Event, Refusal};
use crate::requests::{Request, RequestId};

/// A Status answer, or why not.
pub(crate) fn status_of(answer: Result<Datum, String>) -> Result<Status, Refusal> {
    match answer {
        Ok(Datum::Status(s)) if !status::is_error(s.status) => Ok(s),
        Ok(Datum::Status(s)) => Err(Refusal::of(&s)),
        Ok(other) => Err(Refusal::garbled(format!(
            "unexpected {} answer",
            other.kind().name()
        ))),
        Err(reason) => Err(Refusal::garbled(reason)),
    }
}

/// The action a commit of `op` carries out, for its answer.
fn action_of(op: &Op) -> RoomAction {
    match op {
        Op::Add { who, .. } => RoomAction::Invite(*who),
        Op::Remove { who } => RoomAction::Remove(*who),
        Op::Update => RoomAction::Update,
    }
}

/// The KeyPackage a KEYPACKAGE answer hands out, or why not (`-29`: none left).
pub(crate) fn package_of(answer: Result<Datum, String>) -> Result<Vec<u8>, Refusal> {
    match answer {
        Ok(Datum::Status(s)) if s.status == status::KEY_PACKAGE => STANDARD
            .decode(s.payload.as_bytes())
            .map_err(|_| Refusal::garbled("a KeyPackage that is not base64")),
        other => Err(status_of(other)
            .err()
            .unwrap_or_else(|| Refusal::garbled("an answer to KEYPACKAGE without a KeyPackage"))),
    }
}

impl Engine {
    /// Puts the answer to a room request to use; `None` when it is the engine's own business
    /// (or the user's answer is still owed, after a stale commit).
    pub(crate) fn on_room_answer(
        &mut self,
        id: RequestId,
        request: Request,
        answer: Result<Datum, String>,
    ) -> Option<(RequestId, Answer)> {
        // A pair room is the engine's own business: the conversation is what is reported.
        if let Request::Room { room, .. }
        | Request::Claim { room, .. }
        | Request::Commit { room, .. } = &request
            && room.is_pair()
        {
            self.on_pair_answer(request, answer);
            return None;
        }
        match request {
            Request::Room { room, action } => {
                let result = status_of(answer);
                self.room_done(room, &action, &result);
                Some((
                    id,
                    Answer::Room {
                        room,
                        action,
                        result,
                    },
                ))
            }
            Request::Claim { room, who } => self.on_claimed(id, room, who, answer),
            Request::Commit {
                room,
                op,
                epoch,
                origin,
            } => self.on_committed(room, op, epoch, origin, answer),
            Request::Members { room } => {
                let result = match answer {
                    Ok(Datum::RoomMemberList(list)) => Ok(list),
                    other => Err(status_of(other).err().unwrap_or_else(|| {
                        Refusal::garbled("a Status where a RoomMemberList was due")
                    })),
                };
                Some((id, Answer::RoomMembers { room, result }))
            }
            Request::KeyPackages { published } => {
                let result = self.on_key_packages(published, answer);
                Some((id, Answer::KeyPackages(result)))
            }
            _ => None,
        }
    }

    /// What a successful CREATEROOM, LEAVE or Acknowledge changes here.
    fn room_done(&mut self, room: RoomId, action: &RoomAction, result: &Result<Status, Refusal>) {
        match (action, result) {
            // The server did not make the room: the group made for it is of no use.
            (RoomAction::Create, Err(_)) | (RoomAction::Leave, Ok(_)) => {
                if let Some(member) = self.rooms.member.as_mut() {
                    let _ = member.forget(room.0);
                }
                self.rooms.invited.remove(&room);
                self.rooms.waiting.retain(|w| w.room != room);
                self.rooms.changed = true;
            }
            (RoomAction::Join, Ok(_)) => {
                self.rooms.invited.remove(&room);
                self.rooms.changed = true;
            }
            _ => {}
        }
    }

    /// KEYPACKAGE's answer: the package to commit the addition with, or why the user cannot be
    /// added (`-29`: it has none left).
    fn on_claimed(
        &mut self,
        id: RequestId,
        room: RoomId,
        who: PublicKey,
        answer: Result<Datum, String>,
    ) -> Option<(RequestId, Answer)> {
        let action = RoomAction::Invite(who);
        let result = package_of(answer).and_then(|package| {
            self.commit(room, Op::Add { who, package }, Some(id))
                .map_err(|e| Refusal::garbled(e.to_string()))
        });
        match result {
            // The answer comes with the commit's.
            Ok(_) => None,
            Err(refusal) => Some((
                id,
                Answer::Room {
                    room,
                    action,
                    result: Err(refusal),
                },
            )),
        }
    }

    /// A commit's answer: merged once the server ordered it; made again later if another
    /// commit came first (`-27`); dropped for good otherwise.
    fn on_committed(
        &mut self,
        room: RoomId,
        op: Op,
        epoch: u64,
        origin: Option<RequestId>,
        answer: Result<Datum, String>,
    ) -> Option<(RequestId, Answer)> {
        let result = status_of(answer);
        let member = self.rooms.member.as_mut()?;
        self.rooms.changed = true;
        let result = match result {
            Ok(s) => match member.confirm(room.0) {
                Ok(new_epoch) => {
                    let (added, removed) = match &op {
                        Op::Add { who, .. } => (vec![*who], vec![]),
                        Op::Remove { who } => (vec![], vec![*who]),
                        Op::Update => (vec![], vec![]),
                    };
                    let by = self.me;
                    self.emit(Event::RoomChanged {
                        room,
                        by,
                        added,
                        removed,
                        epoch: new_epoch,
                    });
                    Ok(s)
                }
                Err(e) => Err(Refusal::garbled(e.to_string())),
            },
            Err(r) if r.status == status::STALE_EPOCH => {
                // The commit that came first may have arrived already (then the group has
                // moved on and the pending commit is gone) or may still come.
                let _ = member.abandon(room.0);
                self.rooms.waiting.push(Waiting {
                    room,
                    op,
                    epoch,
                    origin,
                });
                self.retry_commits(room);
                return None;
            }
            Err(r) => {
                let _ = member.abandon(room.0);
                Err(r)
            }
        };
        let action = action_of(&op);
        origin.map(|id| {
            (
                id,
                Answer::Room {
                    room,
                    action,
                    result,
                },
            )
        })
    }

    /// Commits again what waited for `room`'s epoch to move, if it has; a change that someone
    /// else's commit already made is done.
    pub(crate) fn retry_commits(&mut self, room: RoomId) {
        let Some(member) = self.rooms.member.as_ref() else {
            return;
        };
        let Ok(now) = member.epoch(room.0) else {
            return;
        };
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rooms.waiting)
            .into_iter()
            .partition(|w| w.room == room && now > w.epoch);
        self.rooms.waiting = later;
        let members: Vec<PublicKey> = self
            .group_members(room)
            .map(|m| m.into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default();
        for w in ready {
            let done = match &w.op {
                Op::Add { who, .. } => members.contains(who),
                Op::Remove { who } => !members.contains(who),
                Op::Update => false,
            };
            let result = if done {
                Ok(Status::new(status::OK, "done by another member's commit"))
            } else {
                match self.commit(room, w.op.clone(), w.origin) {
                    // Its answer settles it.
                    Ok(_) => continue,
                    Err(e) => Err(Refusal::garbled(e.to_string())),
                }
            };
            if let Some(id) = w.origin {
                let answer = Answer::Room {
                    room,
                    action: action_of(&w.op),
                    result,
                };
                self.emit(Event::Answer {
                    request: id,
                    answer,
                });
            }
        }
    }

    /// KEYPACKAGES' answer: with fewer than [`KEY_PACKAGE_LOW`] on the server after a count,
    /// publish a batch. Returns how many the server holds, or why it refused.
    fn on_key_packages(
        &mut self,
        published: usize,
        answer: Result<Datum, String>,
    ) -> Result<usize, Refusal> {
        let held = match answer {
            Ok(Datum::Status(s)) if s.status == status::KEY_PACKAGES => {
                s.payload.trim().parse::<usize>().map_err(|_| {
                    Refusal::garbled(format!(
                        "a KeyPackage count that is no number: {:?}",
                        s.payload
                    ))
                })?
            }
            other => {
                let refusal = status_of(other)
                    .err()
                    .unwrap_or_else(|| Refusal::garbled("no KeyPackage count"));
                self.notice(format!(
                    "the server did not take this user's KeyPackages: {refusal}"
                ));
                return Err(refusal);
            }
        };
        if published == 0
            && held < KEY_PACKAGE_LOW
            && let Err(e) = self.publish_key_packages()
        {
            self.notice(format!("could not publish KeyPackages: {e}"));
        }
        Ok(held)
    }
}
