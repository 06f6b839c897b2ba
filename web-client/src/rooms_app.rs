//! The controller's part for rooms: restoring and saving them, the user's room actions, the
//! room effects, and what the room list and panel show (computed here because it reads both
//! the model and the engine, which holds the encrypted groups).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flexim_protocol::PublicKey;
use flexim_protocol::conversation::RoomId;
use flexim_session::{Engine, SavedRooms};
use wasm_bindgen::JsCast;
use web_sys::KeyboardEvent;

use crate::app::{App, on_id as on, on_submit, with_app};
use crate::dom;
use crate::model::Model;
use crate::room_state::Rooms;
use crate::rooms_ui::{MemberItem, RoomItem, RoomPanel};
use crate::storage;

impl App {
    /// Gives the engine the groups an earlier visit saved, and the model the rooms' lines;
    /// then lists exactly the rooms the engine is in. Unreadable state is set aside, not
    /// overwritten, and the user is told.
    pub(crate) fn restore_rooms(&mut self, notes: &mut Vec<String>) {
        if let Some(text) = self.store.get(storage::ROOMS_STATE) {
            let restored = STANDARD
                .decode(text.trim())
                .map_err(|e| e.to_string())
                .and_then(|b| SavedRooms::from_bytes(&b).map_err(|e| e.to_string()))
                .and_then(|s| self.engine.restore_rooms(&s).map_err(|e| e.to_string()));
            if let Err(e) = restored {
                let _ = self.store.set(storage::ROOMS_STATE_BACKUP, &text);
                notes.push(format!(
                    "the saved rooms could not be read ({e}); they were moved to {} and this \
                     browser is in no room now",
                    storage::ROOMS_STATE_BACKUP
                ));
            }
        }
        if let Some(json) = self.store.get(storage::ROOMS) {
            match Rooms::from_json(&json) {
                Ok(rooms) => self.model.rooms = rooms,
                Err(e) => notes.push(format!("the rooms' messages could not be read: {e}")),
            }
        }
        self.model.rooms.set_visible(!dom::page_hidden());
        let held = self.engine.rooms();
        self.model.rooms.sync_with(&held, crate::os::now_secs());
        // Lines whose message has no saved copy to send again can only be reported as such.
        let waiting: std::collections::HashSet<&str> = self.engine.outbox().ids().collect();
        self.model.rooms_dirty |= self.model.rooms.settle_unsent(&waiting) > 0;
    }

    /// Saves the groups when the engine changed them, and the rooms' lines when they changed:
    /// the groups first, since a line acknowledged but whose group state is lost could not be
    /// read again, while the reverse only shows a line twice.
    pub(crate) fn save_rooms(&mut self) {
        if self.engine.take_rooms_changed() {
            let saved = self
                .engine
                .saved_rooms()
                .map(|s| STANDARD.encode(s.to_bytes()));
            let stored = saved
                .map_err(|e| e.to_string())
                .and_then(|text| self.store.set(storage::ROOMS_STATE, &text));
            if let Err(e) = stored {
                self.ui.log(&format!(
                    "the rooms could not be saved ({e}): after a reload this browser may not \
                     read them"
                ));
            }
        }
        if std::mem::take(&mut self.model.rooms_dirty)
            && let Err(e) = self.store.set(storage::ROOMS, &self.model.rooms.to_json())
        {
            self.ui
                .log(&format!("the rooms' messages could not be saved: {e}"));
        }
    }

    /// Brings the room list and the open room up to date.
    pub(crate) fn render_rooms(&mut self) {
        let open = self.model.rooms.open_id();
        let items = (self.model.rooms.sorted().into_iter())
            .map(|r| {
                let members = (r.room_id())
                    .and_then(|id| self.engine.group_members(id).ok())
                    .map(|m| m.into_iter().map(|(k, _)| k).collect::<Vec<_>>())
                    .unwrap_or_default();
                RoomItem {
                    id: r.id.clone(),
                    label: self.model.room_label(r, &members),
                    unread: r.unread,
                    invited: r.invited,
                    open: r.room_id() == open,
                }
            })
            .collect();
        self.rooms_ui.sync_list(items);
        let panel = open.and_then(|id| room_panel(&self.model, &self.engine, id));
        self.rooms_ui.sync_panel(panel);
    }

    /// `#room-create`: a new room with this user as its only member and admin.
    pub(crate) fn on_room_create(&mut self) {
        match self.engine.create_room() {
            Ok((room, _)) => {
                let now = crate::os::now_secs();
                self.model.rooms.ensure(&room, now);
                let effects = self.model.open_room(&room, now);
                for e in effects {
                    self.run(e);
                }
                self.ui.log("creating a room…");
            }
            Err(e) => self.ui.log(&format!("could not create a room: {e}")),
        }
        self.pump();
    }

    /// A room in `#rooms` was picked.
    pub(crate) fn open_room(&mut self, room: RoomId) {
        for e in self.model.open_room(&room, crate::os::now_secs()) {
            self.run(e);
        }
        self.pump();
    }

    /// `#room-invite-form`.
    pub(crate) fn on_room_invite(&mut self) {
        let Some(room) = self.model.rooms.open_id() else {
            return;
        };
        let query = self.rooms_ui.invite_input.value();
        let effects = self.model.invite_query(&room, &query);
        if !effects.is_empty() {
            self.rooms_ui.invite_input.set_value("");
        }
        for e in effects {
            self.run(e);
        }
        self.pump();
    }

    /// `#room-composer-form`: seals the text for the room's members and sends it; offline, the
    /// engine keeps it and sends it at the next login (the line shows "sending…" meanwhile).
    pub(crate) fn on_room_send(&mut self) {
        let text = self.rooms_ui.composer.value();
        let Some(room) = self.model.rooms.open_id() else {
            return;
        };
        if text.trim().is_empty() {
            return;
        }
        let now = crate::os::now_secs();
        let line = self.model.room_line_out(&room, &text, now);
        self.rooms_ui.composer.set_value("");
        let result = match self.engine.send_room(room, &text, now) {
            Ok(sending) => Ok(sending.id),
            Err(e) => Err(format!("not sent: {e}")),
        };
        self.model.room_sent(&room, line, result);
        self.pump();
    }

    /// `#room-leave` and `#room-decline`: LEAVE; the room goes once the server agrees.
    pub(crate) fn on_room_leave(&mut self) {
        if let Some(room) = self.model.rooms.open_id() {
            match self.engine.leave_room(room) {
                Ok(_) => self.ui.log("leaving the room…"),
                Err(e) => self.rooms_ui.set_error(&format!("Could not leave: {e}")),
            }
            self.pump();
        }
    }

    /// `#room-block`: declines the invitation of the open room and blocks whoever sent it, so
    /// that nothing more of theirs (messages, invitations) reaches this user.
    pub(crate) fn on_room_block(&mut self) {
        let Some(room) = self.model.rooms.open_id() else {
            return;
        };
        let inviter = (self.model.rooms.get(&room))
            .and_then(|r| r.invited_by.as_deref())
            .and_then(PublicKey::from_hex);
        if let Some(who) = inviter {
            match self.engine.block(&who.to_hex()) {
                Ok(_) => {
                    for e in self.model.answer_request(&who) {
                        self.run(e);
                    }
                }
                Err(e) => {
                    self.rooms_ui.set_error(&format!("Could not block: {e}"));
                    return;
                }
            }
        }
        self.on_room_leave();
    }

    /// `#room-accept`: accepts the invitation of the open room.
    pub(crate) fn on_room_accept(&mut self) {
        if let Some(room) = self.model.rooms.open_id() {
            if let Err(e) = self.engine.accept_invitation(room) {
                self.rooms_ui.set_error(&format!("Could not accept: {e}"));
            }
            self.pump();
        }
    }

    /// A member's Remove button.
    pub(crate) fn on_room_remove(&mut self, who: PublicKey) {
        if let Some(room) = self.model.rooms.open_id() {
            match self.engine.remove_member(room, &who, crate::os::now_secs()) {
                Ok(_) => self
                    .rooms_ui
                    .set_error(&format!("removing {}…", self.model.name_of(&who))),
                Err(e) => self.rooms_ui.set_error(&format!("Could not remove: {e}")),
            }
            self.pump();
        }
    }

    /// Carries out the effects that concern rooms.
    pub(crate) fn run_room_effect(&mut self, effect: crate::model::Effect) {
        use crate::model::Effect;
        match effect {
            Effect::AskMembers(room) => {
                let _ = self.engine.room_members(room);
            }
            Effect::Invite { room, key } => {
                match self.engine.invite(room, &key, crate::os::now_secs()) {
                    Ok(_) => self
                        .rooms_ui
                        .set_error(&format!("inviting {}…", self.model.name_of(&key))),
                    Err(e) => self.rooms_ui.set_error(&format!("Could not invite: {e}")),
                }
            }
            Effect::RoomError(text) => self.rooms_ui.set_error(&text),
            _ => {}
        }
    }
}

/// What the panel shows of room `id`.
fn room_panel<'a>(model: &'a Model, engine: &Engine, id: RoomId) -> Option<RoomPanel<'a>> {
    let room = model.rooms.get(&id)?;
    let me = *engine.me();
    let group: Vec<PublicKey> = (engine.group_members(id).ok())
        .map(|m| m.into_iter().map(|(k, _)| k).collect())
        .unwrap_or_default();
    let i_admin = room.admins.contains(&me);
    let mut keys = group.clone();
    keys.extend(room.listed.iter().filter(|k| !group.contains(k)));
    let members = (keys.iter())
        .map(|k| MemberItem {
            key: k.to_hex(),
            name: model.name_of(k),
            fingerprint: k.fingerprint(),
            admin: room.admins.contains(k),
            me: *k == me,
            // The server's list is only compared once it has come.
            in_group: group.contains(k) || room.listed.is_empty(),
            removable: i_admin && *k != me && room.removed.is_none(),
        })
        .collect();
    let senders: HashMap<u64, String> = (room.lines.iter())
        .filter_map(|l| Some((l.id, model.name_of(&l.sender()?))))
        .collect();
    let safety = match engine.safety_number(id) {
        Ok(n) => n,
        Err(_) => "none: this browser is not in the room's group".into(),
    };
    let invitation = room.invited.then(|| {
        let by = (room.invited_by.as_deref())
            .and_then(PublicKey::from_hex)
            .map(|k| model.name_of(&k))
            .unwrap_or_else(|| "someone".into());
        format!("{by} invited you to this room. You see what is said; accept to take part.")
    });
    let label = model.room_label(room, &group);
    Some(RoomPanel {
        id: room.id.clone(),
        title: label,
        safety,
        invitation,
        removed: room.removed.clone(),
        members,
        lines: &room.lines,
        senders,
    })
}

impl App {
    /// Connects the rooms' controls to the controller.
    pub(crate) fn bind_rooms() {
        on_click("room-create", App::on_room_create);
        on_click("room-leave", App::on_room_leave);
        on_click("room-decline", App::on_room_leave);
        on_click("room-block", App::on_room_block);
        on_click("room-accept", App::on_room_accept);
        on_submit("room-invite-form", App::on_room_invite);
        on_submit("room-composer-form", App::on_room_send);
        on("room-composer", "keydown", |e| {
            let Some(k) = e.dyn_ref::<KeyboardEvent>() else {
                return;
            };
            if k.key() == "Enter" && !k.shift_key() && !k.is_composing() {
                e.prevent_default();
                with_app(App::on_room_send);
            }
        });
        let pick = |e: &web_sys::Event| {
            dom::closest(e, "li.room")
                .and_then(|li| li.get_attribute("data-room"))
                .and_then(|id| RoomId::parse(&id))
        };
        on("rooms", "click", move |e| {
            if let Some(room) = pick(&e) {
                with_app(|app| app.open_room(room));
            }
        });
        on("rooms", "keydown", move |e| {
            let activate = e
                .dyn_ref::<KeyboardEvent>()
                .is_some_and(|k| k.key() == "Enter" || k.key() == " ");
            if activate && let Some(room) = pick(&e) {
                e.prevent_default();
                with_app(|app| app.open_room(room));
            }
        });
        on("room-members", "click", |e| {
            let who = dom::closest(&e, "button.room-remove")
                .and_then(|b| b.get_attribute("data-key"))
                .and_then(|k| PublicKey::from_hex(&k));
            if let Some(who) = who {
                with_app(|app| app.on_room_remove(who));
            }
        });
    }
}

fn on_click(id: &str, action: fn(&mut App)) {
    on(id, "click", move |_| with_app(action));
}
