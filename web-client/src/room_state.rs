//! The rooms as the page keeps them (docs/PROTOCOL.md §16): each room's lines, unread count
//! and invitation state, and their saved form. Plain data with the rules that change it, like
//! `state.rs`; what the engine's events mean for it is in `rooms.rs`.

use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use flexim_session::Delivery;
use serde::{Deserialize, Serialize};

/// How many lines each room keeps, as a conversation does ([`crate::state::HISTORY_LIMIT`]).
pub const ROOM_HISTORY_LIMIT: usize = crate::state::HISTORY_LIMIT;

/// What kind of line of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomLineKind {
    /// A member's message.
    In,
    /// This user's message.
    Out,
    /// What happened in the room (someone joined, left, was added or removed), written by the
    /// page so that the user sees membership change where the messages are.
    Note,
}

/// One line of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLine {
    /// Unique in this page's lifetime, to update the line on screen. Not saved.
    #[serde(skip)]
    pub id: u64,
    /// Its kind.
    pub kind: RoomLineKind,
    /// For an incoming line, the sender's key (64 hex digits), as MLS authenticated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The text.
    pub text: String,
    /// Unix seconds.
    pub date: i64,
    /// For an outgoing line, what the server said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// For an outgoing line, the id it was sent with (answers and receipts carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_id: Option<String>,
}

impl RoomLine {
    /// The sender of an incoming line.
    pub fn sender(&self) -> Option<PublicKey> {
        self.from.as_deref().and_then(PublicKey::from_hex)
    }
}

/// A room as the page knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Its id, 32 hex digits.
    pub id: String,
    /// Whether it is an invitation this user has not accepted yet.
    #[serde(default)]
    pub invited: bool,
    /// Who invited this user (64 hex digits), while it is an invitation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invited_by: Option<String>,
    /// Set once this user was removed: why, shown instead of the composer. The room stays
    /// listed so that what was said remains readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    /// Lines that arrived while the room was not in front of the user.
    #[serde(default)]
    pub unread: u32,
    /// Unix seconds of the latest line, to list the most recent rooms first.
    #[serde(default)]
    pub last_activity: i64,
    /// The lines, oldest first, at most [`ROOM_HISTORY_LIMIT`].
    #[serde(default)]
    pub lines: Vec<RoomLine>,
    /// The admins, as the server's latest member list names them. Not saved: asked again.
    #[serde(skip)]
    pub admins: Vec<PublicKey>,
    /// The members, as the server's latest member list names them (to compare with the
    /// encrypted group). Not saved: asked again.
    #[serde(skip)]
    pub listed: Vec<PublicKey>,
}

impl Room {
    /// The room's id.
    pub fn room_id(&self) -> Option<RoomId> {
        RoomId::parse(&self.id)
    }

    /// The name shown for a room, which has no name of its own: "Room " and the start of
    /// its id.
    pub fn title(&self) -> String {
        format!("Room {}", &self.id[..8.min(self.id.len())])
    }
}

/// The rooms and which one is open.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    /// The rooms, in no order (see [`Rooms::sorted`]).
    list: Vec<Room>,
    /// The room in front of the user, if a room is (rather than a conversation).
    open: Option<RoomId>,
    /// Whether the page is visible, for unread counting.
    visible: bool,
    /// The next line number.
    next_line: u64,
}

impl Rooms {
    /// No rooms.
    pub fn new() -> Rooms {
        Rooms {
            visible: true,
            ..Rooms::default()
        }
    }

    /// The room `id`, if known.
    pub fn get(&self, id: &RoomId) -> Option<&Room> {
        let hex = id.to_hex();
        self.list.iter().find(|r| r.id == hex)
    }

    /// The room `id`, to change, if known.
    pub fn get_mut(&mut self, id: &RoomId) -> Option<&mut Room> {
        let hex = id.to_hex();
        self.list.iter_mut().find(|r| r.id == hex)
    }

    /// The room `id`, created empty if unknown.
    pub fn ensure(&mut self, id: &RoomId, now: i64) -> &mut Room {
        let hex = id.to_hex();
        let index = match self.list.iter().position(|r| r.id == hex) {
            Some(i) => i,
            None => {
                self.list.push(Room {
                    id: hex,
                    invited: false,
                    invited_by: None,
                    removed: None,
                    unread: 0,
                    last_activity: now,
                    lines: Vec::new(),
                    admins: Vec::new(),
                    listed: Vec::new(),
                });
                self.list.len() - 1
            }
        };
        &mut self.list[index]
    }

    /// Forgets a room (this user left it).
    pub fn forget(&mut self, id: &RoomId) {
        let hex = id.to_hex();
        self.list.retain(|r| r.id != hex);
        if self.open == Some(*id) {
            self.open = None;
        }
    }

    /// The rooms, most recent first.
    pub fn sorted(&self) -> Vec<&Room> {
        let mut v: Vec<&Room> = self.list.iter().collect();
        v.sort_by(|a, b| b.last_activity.cmp(&a.last_activity).then(a.id.cmp(&b.id)));
        v
    }

    /// The open room.
    pub fn open_id(&self) -> Option<RoomId> {
        self.open
    }

    /// Brings a room in front of the user; its unread count goes back to zero.
    pub fn open(&mut self, id: &RoomId, now: i64) {
        self.ensure(id, now).unread = 0;
        self.open = Some(*id);
    }

    /// No room is in front of the user any more (a conversation is).
    pub fn close(&mut self) {
        self.open = None;
    }

    /// Records whether the page is visible; the open room is read again when it becomes so.
    pub fn set_visible(&mut self, visible: bool) {
        self.visible = visible;
        if visible && let Some(id) = self.open {
            self.ensure(&id, 0).unread = 0;
        }
    }

    /// Adds a line to a room, counting it unread unless the user looks at the room now.
    pub fn push(&mut self, id: &RoomId, mut line: RoomLine) -> u64 {
        self.next_line += 1;
        line.id = self.next_line;
        let read_now = self.visible && self.open == Some(*id);
        let room = self.ensure(id, line.date);
        if line.kind == RoomLineKind::In && !read_now {
            room.unread += 1;
        }
        room.last_activity = room.last_activity.max(line.date);
        room.lines.push(line);
        let extra = room.lines.len().saturating_sub(ROOM_HISTORY_LIMIT);
        room.lines.drain(..extra);
        self.next_line
    }

    /// A note in a room: what happened there.
    pub fn note(&mut self, id: &RoomId, text: String, date: i64) {
        let line = RoomLine {
            id: 0,
            kind: RoomLineKind::Note,
            from: None,
            text,
            date,
            delivery: None,
            sent_id: None,
        };
        self.push(id, line);
    }

    /// Records what became of the outgoing room message sent with `id`, if that moves it
    /// forward (a room message gets one receipt per member: the first `7` shows it delivered).
    pub fn set_delivery_by_id(&mut self, id: &str, delivery: Delivery) -> bool {
        let Some(line) = (self.list.iter_mut())
            .flat_map(|r| r.lines.iter_mut())
            .find(|l| l.kind == RoomLineKind::Out && l.sent_id.as_deref() == Some(id))
        else {
            return false;
        };
        let forward = (line.delivery.as_ref()).is_none_or(|current| current.can_become(&delivery));
        if forward {
            line.delivery = Some(delivery);
        }
        forward
    }

    /// After a reload: outgoing lines still waiting for their first answer whose message is not
    /// among `waiting` (the restored outbox) can no longer be sent again, so they become
    /// [`Delivery::Unconfirmed`]. Returns how many did.
    pub fn settle_unsent(&mut self, waiting: &std::collections::HashSet<&str>) -> usize {
        let mut settled = 0;
        for line in self.list.iter_mut().flat_map(|r| r.lines.iter_mut()) {
            let lost = line.delivery == Some(Delivery::Sending)
                && (line.sent_id.as_deref()).is_none_or(|id| !waiting.contains(id));
            if lost {
                line.delivery = Some(Delivery::Unconfirmed);
                settled += 1;
            }
        }
        settled
    }

    /// The total of the rooms' unread counts, for the page's title.
    pub fn total_unread(&self) -> u32 {
        self.list.iter().map(|r| r.unread).sum()
    }

    /// The saved form, for `localStorage`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.list).unwrap_or_else(|_| "[]".into())
    }

    /// Reads the saved form; lines are numbered afresh.
    pub fn from_json(json: &str) -> Result<Rooms, String> {
        let list: Vec<Room> = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut rooms = Rooms::new();
        for mut room in list {
            if RoomId::parse(&room.id).is_none() {
                continue;
            }
            for line in &mut room.lines {
                rooms.next_line += 1;
                line.id = rooms.next_line;
            }
            rooms.list.push(room);
        }
        Ok(rooms)
    }

    /// Makes the page's rooms what the engine holds (its groups are the truth): rooms the
    /// engine is in are listed, with their invitation state; rooms it is not in any more,
    /// and that show no removal, are dropped.
    pub fn sync_with(&mut self, engine_rooms: &[(RoomId, bool)], now: i64) {
        for (id, invited) in engine_rooms {
            self.ensure(id, now).invited = *invited;
        }
        let held: Vec<String> = engine_rooms.iter().map(|(id, _)| id.to_hex()).collect();
        self.list
            .retain(|r| r.removed.is_some() || held.contains(&r.id));
        if let Some(open) = self.open
            && self.get(&open).is_none()
        {
            self.open = None;
        }
    }
}
