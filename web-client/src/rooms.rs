//! Rooms in the page's model (docs/PROTOCOL.md §16): what the engine's room events and answers
//! mean for the page, and the user's room actions that need no browser.
//!
//! The engine holds the MLS groups and is the truth about which rooms exist and who is in
//! them; the model holds only what the page shows and keeps across reloads
//! (`room_state.rs`). Like the rest of the model it touches no browser API, so its rules are
//! tested natively.

use flexim_protocol::conversation::RoomId;
use flexim_protocol::{PublicKey, status};
use flexim_session::{Answer, Delivery, Event, Lookup, RoomAction, RoomIncoming};

use crate::model::{Context, Effect, Model};
use crate::room_state::{Room, RoomLine, RoomLineKind};

impl Model {
    /// Brings a room in front of the user (closing the open conversation), and asks the server
    /// for its member list.
    pub fn open_room(&mut self, id: &RoomId, now: i64) -> Vec<Effect> {
        self.rooms.open(id, now);
        self.contacts.close();
        self.rooms_dirty = true;
        self.dirty = true;
        vec![Effect::AskMembers(*id), Effect::FocusComposer]
    }

    /// The user sent `text` in `room`: its outgoing line, which learns its id (or why it
    /// could not be sent) from [`Model::room_sent`].
    pub fn room_line_out(&mut self, room: &RoomId, text: &str, now: i64) -> u64 {
        self.rooms_dirty = true;
        let line = RoomLine {
            id: 0,
            kind: RoomLineKind::Out,
            from: None,
            text: text.to_string(),
            date: now,
            delivery: Some(Delivery::Sending),
            sent_id: None,
        };
        self.rooms.push(room, line)
    }

    /// What became of sending the outgoing line `line` of `room`: its message id, or why not.
    pub fn room_sent(&mut self, room: &RoomId, line: u64, result: Result<String, String>) {
        self.rooms_dirty = true;
        if let Some(l) =
            (self.rooms.get_mut(room)).and_then(|r| r.lines.iter_mut().find(|l| l.id == line))
        {
            match result {
                Ok(id) => l.sent_id = Some(id),
                Err(e) => l.delivery = Some(Delivery::Failed(e)),
            }
        }
    }

    /// The user asked to invite `query` (an alias or a key) into `room`: a key is invited at
    /// once, an alias is looked up first.
    pub fn invite_query(&mut self, room: &RoomId, query: &str) -> Vec<Effect> {
        let query = query.trim();
        if query.is_empty() {
            return vec![Effect::RoomError(
                "Type an alias or a key to invite.".into(),
            )];
        }
        if let Some(key) = PublicKey::from_hex(query) {
            return vec![
                Effect::RoomError(String::new()),
                self.invite_effect(room, key),
            ];
        }
        self.pending_invites.push((query.to_string(), *room));
        vec![
            Effect::RoomError(format!("looking up “{query}”…")),
            Effect::AskUser {
                query: query.to_string(),
                purpose: Lookup::Refresh,
            },
        ]
    }

    fn invite_effect(&mut self, room: &RoomId, key: PublicKey) -> Effect {
        if key == self.me {
            return Effect::RoomError("You are in this room already.".into());
        }
        Effect::Invite { room: *room, key }
    }

    /// A lookup's answer, if it was for an invitation (then it is consumed).
    pub(crate) fn invite_lookup(&mut self, answer: &Answer) -> Option<Vec<Effect>> {
        let Answer::User { query, result, .. } = answer else {
            return None;
        };
        let at = (self.pending_invites.iter()).position(|(q, _)| q.eq_ignore_ascii_case(query))?;
        let (_, room) = self.pending_invites.remove(at);
        Some(match result {
            Ok(user) => {
                self.contacts.learn_name(&user.key, &user.aliases);
                vec![
                    Effect::RoomError(String::new()),
                    self.invite_effect(&room, user.key),
                ]
            }
            Err(r) if r.status == status::NO_SUCH_USER => vec![Effect::RoomError(format!(
                "Nobody is registered as “{query}”."
            ))],
            Err(r) => vec![Effect::RoomError(format!(
                "Could not look up “{query}”: {r}"
            ))],
        })
    }

    /// What one of the engine's room events means for the page.
    pub(crate) fn on_room_event(&mut self, event: Event, ctx: &Context) -> Vec<Effect> {
        self.rooms_dirty = true;
        match event {
            Event::RoomMessage(m) => self.on_room_message(m, ctx),
            Event::Invited { room, from } => {
                let r = self.rooms.ensure(&room, ctx.now);
                r.invited = true;
                r.invited_by = Some(from.to_hex());
                r.last_activity = ctx.now;
                let name = self.name_of(&from);
                self.rooms
                    .note(&room, format!("{name} invited you to this room"), ctx.now);
                vec![Effect::Log(format!("{name} invited you to a room"))]
            }
            Event::RoomChanged {
                room,
                by,
                added,
                removed,
                ..
            } => {
                let by = self.name_or_you(&by);
                for k in added {
                    let who = self.name_or_you(&k);
                    self.rooms.note(&room, format!("{by} added {who}"), ctx.now);
                }
                for k in removed {
                    let who = self.name_or_you(&k);
                    self.rooms
                        .note(&room, format!("{by} removed {who}"), ctx.now);
                }
                self.members_refresh(&room)
            }
            Event::RemovedFromRoom { room, by } => {
                let text = format!("{} removed you from this room", self.name_or_you(&by));
                self.rooms.ensure(&room, ctx.now).removed = Some(text.clone());
                self.rooms.note(&room, text.clone(), ctx.now);
                vec![Effect::Log(text)]
            }
            Event::RoomMember {
                room,
                member,
                joined,
                by,
            } => {
                let who = self.name_or_you(&member);
                let text = match (joined, by) {
                    (true, _) => format!("{who} joined"),
                    (false, Some(b)) if b != member => {
                        format!("{who} was removed by {}", self.name_or_you(&b))
                    }
                    (false, _) => format!("{who} left"),
                };
                self.rooms.note(&room, text, ctx.now);
                self.members_refresh(&room)
            }
            _ => Vec::new(),
        }
    }

    fn on_room_message(&mut self, m: RoomIncoming, ctx: &Context) -> Vec<Effect> {
        let line = RoomLine {
            id: 0,
            kind: RoomLineKind::In,
            from: Some(m.from.to_hex()),
            text: m.text.clone(),
            date: if m.date > 0 { m.date } else { ctx.now },
            delivery: None,
            sent_id: None,
        };
        self.rooms.push(&m.room, line);
        crate::model::after_shown(&[], ctx, m.from, m.text, m.id)
    }

    /// The server's answer to a room request, or a room's member list.
    pub(crate) fn on_room_answer(&mut self, answer: Answer, ctx: &Context) -> Vec<Effect> {
        self.rooms_dirty = true;
        match answer {
            Answer::Room {
                room,
                action,
                result,
            } => self.on_room_action(room, action, result, ctx),
            Answer::RoomMembers {
                room,
                result: Ok(list),
            } => {
                let keys = |v: &[String]| v.iter().filter_map(|k| PublicKey::from_hex(k)).collect();
                let r = self.rooms.ensure(&room, ctx.now);
                r.listed = keys(&list.members);
                r.admins = keys(&list.admins);
                Vec::new()
            }
            Answer::RoomMembers { result: Err(r), .. } => vec![Effect::RoomError(format!(
                "the member list could not be loaded: {r}"
            ))],
            Answer::KeyPackages(Err(r)) => vec![Effect::Log(format!(
                "the keys others need to add you to rooms could not be published: {r}"
            ))],
            _ => Vec::new(),
        }
    }

    fn on_room_action(
        &mut self,
        room: RoomId,
        action: RoomAction,
        result: Result<flexim_protocol::Status, flexim_session::Refusal>,
        ctx: &Context,
    ) -> Vec<Effect> {
        let failed = |what: &str, r: flexim_session::Refusal| {
            let why = match r.status {
                status::NO_KEY_PACKAGE => {
                    "they have no key package left on the server; they publish more at their \
                     next login"
                        .to_string()
                }
                status::NOT_ADMIN => "only the room's admins may do that".to_string(),
                status::ROOM_LIMIT => format!("a limit was reached: {}", r.reason),
                _ => r.to_string(),
            };
            vec![Effect::RoomError(format!("{what} failed: {why}"))]
        };
        match (action, result) {
            (RoomAction::Create, Ok(_)) => {
                self.rooms
                    .note(&room, "You created this room".into(), ctx.now);
                vec![Effect::Log("the room is created".into())]
            }
            (RoomAction::Create, Err(r)) => {
                self.rooms.forget(&room);
                failed("Creating the room", r)
            }
            (RoomAction::Invite(who), Ok(_)) => {
                let name = self.name_of(&who);
                let mut e = vec![Effect::RoomError(String::new())];
                e.push(Effect::Log(format!("{name} is invited")));
                e.extend(self.members_refresh(&room));
                e
            }
            (RoomAction::Invite(who), Err(r)) => {
                failed(&format!("Inviting {}", self.name_of(&who)), r)
            }
            (RoomAction::Remove(who), Ok(_)) => {
                let mut e = vec![Effect::Log(format!("{} is removed", self.name_of(&who)))];
                e.extend(self.members_refresh(&room));
                e
            }
            (RoomAction::Remove(who), Err(r)) => {
                failed(&format!("Removing {}", self.name_of(&who)), r)
            }
            (RoomAction::Join, Ok(_)) => {
                let r = self.rooms.ensure(&room, ctx.now);
                r.invited = false;
                r.invited_by = None;
                self.rooms.note(&room, "You joined".into(), ctx.now);
                self.members_refresh(&room)
            }
            (RoomAction::Join, Err(r)) => failed("Joining", r),
            (RoomAction::Leave, Ok(_)) => {
                self.rooms.forget(&room);
                vec![Effect::Log("you left the room".into())]
            }
            (RoomAction::Leave, Err(r)) => failed("Leaving", r),
            // The engine's own renewal of its leaf in a pair room: reported to nobody.
            (RoomAction::Update, _) => Vec::new(),
        }
    }

    /// Asks for the member list again if the room is in front of the user.
    fn members_refresh(&self, room: &RoomId) -> Vec<Effect> {
        if self.rooms.open_id() == Some(*room) {
            vec![Effect::AskMembers(*room)]
        } else {
            Vec::new()
        }
    }

    /// "you" for this user, the name of anyone else.
    pub fn name_or_you(&self, key: &PublicKey) -> String {
        if *key == self.me {
            "you".into()
        } else {
            self.name_of(key)
        }
    }

    /// The name shown in the room list: the other members' names (from the encrypted group),
    /// or the room's title while nobody else is in it.
    pub fn room_label(&self, room: &Room, members: &[PublicKey]) -> String {
        let others: Vec<String> = (members.iter())
            .filter(|k| **k != self.me)
            .map(|k| self.name_of(k))
            .collect();
        if others.is_empty() {
            room.title()
        } else {
            format!("{}: {}", room.title(), others.join(", "))
        }
    }
}
