//! The rooms on the page: `#rooms` (the list, in the navigation) and `#room` (the open room:
//! its lines, members with their fingerprints, safety number, invite form and composer), shown
//! in place of `#conversation` while a room is open.
//!
//! What to show is computed by the controller (`rooms_app.rs`) from the model and the engine;
//! this only puts it on the page. As in `ui.rs`, lines are updated in place by line id, and a
//! list is rebuilt only when what it shows changed, so that an element about to be clicked
//! stays the same element. Text enters the page only as `textContent`.

use std::collections::HashMap;

use web_sys::{Element, HtmlInputElement, HtmlTextAreaElement};

use crate::dom::{self, by_id, element, set_attr, set_hidden, set_text, text_element};
use crate::room_state::{RoomLine, RoomLineKind};
use crate::ui::add;

/// A room in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomItem {
    /// Its id, 32 hex digits (`data-room`).
    pub(crate) id: String,
    /// What the list shows.
    pub(crate) label: String,
    /// Lines not read yet.
    pub(crate) unread: u32,
    /// Whether it is an invitation not accepted yet.
    pub(crate) invited: bool,
    /// Whether it is the open room.
    pub(crate) open: bool,
}

/// A member of the open room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberItem {
    /// The key, 64 hex digits (`data-key`).
    pub(crate) key: String,
    /// The name shown.
    pub(crate) name: String,
    /// The whole fingerprint, to compare out of band.
    pub(crate) fingerprint: String,
    /// Whether the server lists it as an admin.
    pub(crate) admin: bool,
    /// Whether it is this user.
    pub(crate) me: bool,
    /// Whether it is in the encrypted group (false: the server lists someone the group does
    /// not have, or the reverse; either is shown, never hidden).
    pub(crate) in_group: bool,
    /// Whether this user may remove it (this user is an admin, and it is someone else).
    pub(crate) removable: bool,
}

/// The open room, as the panel shows it.
pub(crate) struct RoomPanel<'a> {
    /// Its id, 32 hex digits.
    pub(crate) id: String,
    /// The title.
    pub(crate) title: String,
    /// The safety number, or why there is none.
    pub(crate) safety: String,
    /// While an invitation: who invited.
    pub(crate) invitation: Option<String>,
    /// Once removed: why nothing can be sent any more.
    pub(crate) removed: Option<String>,
    /// The members.
    pub(crate) members: Vec<MemberItem>,
    /// The lines, oldest first.
    pub(crate) lines: &'a [RoomLine],
    /// The name of each incoming line's sender, by line id.
    pub(crate) senders: HashMap<u64, String>,
}

/// One line on screen.
struct LineItem {
    /// The `.message`.
    root: Element,
    /// The `.delivery` of an outgoing line.
    delivery: Option<Element>,
}

/// The rooms' elements, and what they show now.
pub(crate) struct RoomsUi {
    /// `#rooms`.
    list: Element,
    /// `#rooms-empty`.
    list_empty: Element,
    /// `#conversation`, hidden while a room is open.
    conversation: Element,
    /// `#room`.
    panel: Element,
    /// `#room-name`.
    name: Element,
    /// `#room-safety`.
    safety: Element,
    /// `#room-invitation`, and its text.
    invitation: (Element, Element),
    /// `#room-members`.
    members: Element,
    /// `#room-error`.
    error: Element,
    /// `#room-messages`.
    messages: Element,
    /// `#room-removed`.
    removed: Element,
    /// `#room-composer-form`, hidden once removed.
    composer_form: Element,
    /// `#room-composer`.
    pub(crate) composer: HtmlTextAreaElement,
    /// `#room-invite-input`.
    pub(crate) invite_input: HtmlInputElement,
    /// What `#rooms` shows.
    shown_list: Option<Vec<RoomItem>>,
    /// What `#room-members` shows.
    shown_members: Option<Vec<MemberItem>>,
    /// The room whose lines `#room-messages` shows.
    shown_room: Option<String>,
    /// Those lines, by line id.
    lines: HashMap<u64, LineItem>,
}

impl RoomsUi {
    /// Finds the rooms' elements; fails naming the first one missing.
    pub(crate) fn find() -> Result<RoomsUi, String> {
        Ok(RoomsUi {
            list: by_id("rooms")?,
            list_empty: by_id("rooms-empty")?,
            conversation: by_id("conversation")?,
            panel: by_id("room")?,
            name: by_id("room-name")?,
            safety: by_id("room-safety")?,
            invitation: (by_id("room-invitation")?, by_id("room-invitation-text")?),
            members: by_id("room-members")?,
            error: by_id("room-error")?,
            messages: by_id("room-messages")?,
            removed: by_id("room-removed")?,
            composer_form: by_id("room-composer-form")?,
            composer: by_id("room-composer")?,
            invite_input: by_id("room-invite-input")?,
            shown_list: None,
            shown_members: None,
            shown_room: None,
            lines: HashMap::new(),
        })
    }

    /// Shows a message under the invite form (empty: clears it).
    pub(crate) fn set_error(&self, text: &str) {
        set_text(&self.error, text);
    }

    /// Puts the cursor in the room's composer.
    pub(crate) fn focus_composer(&self) {
        let _ = self.composer.focus();
    }

    /// Brings `#rooms` up to date.
    pub(crate) fn sync_list(&mut self, items: Vec<RoomItem>) {
        set_hidden(&self.list_empty, !items.is_empty());
        if self.shown_list.as_ref() == Some(&items) {
            return;
        }
        self.list.set_text_content(None);
        for item in &items {
            if let Some(li) = build_room_item(item) {
                let _ = self.list.append_child(&li);
            }
        }
        self.shown_list = Some(items);
    }

    /// Shows the open room in place of the conversation, or hides the panel.
    pub(crate) fn sync_panel(&mut self, panel: Option<RoomPanel<'_>>) {
        set_hidden(&self.conversation, panel.is_some());
        set_hidden(&self.panel, panel.is_none());
        let Some(p) = panel else {
            set_attr(&self.panel, "data-room", "");
            return;
        };
        if self.shown_room.as_deref() != Some(p.id.as_str()) {
            self.messages.set_text_content(None);
            self.lines.clear();
            self.shown_members = None;
            self.shown_room = Some(p.id.clone());
            self.set_error("");
        }
        set_attr(&self.panel, "data-room", &p.id);
        set_text(&self.name, &p.title);
        set_text(&self.safety, &p.safety);
        set_hidden(&self.invitation.0, p.invitation.is_none());
        set_text(&self.invitation.1, p.invitation.as_deref().unwrap_or(""));
        set_hidden(&self.removed, p.removed.is_none());
        set_text(&self.removed, p.removed.as_deref().unwrap_or(""));
        set_hidden(&self.composer_form, p.removed.is_some());
        if self.shown_members.as_ref() != Some(&p.members) {
            self.members.set_text_content(None);
            for m in &p.members {
                if let Some(li) = build_member(m) {
                    let _ = self.members.append_child(&li);
                }
            }
            self.shown_members = Some(p.members.clone());
        }
        self.sync_lines(p.lines, &p.senders);
    }

    fn sync_lines(&mut self, lines: &[RoomLine], senders: &HashMap<u64, String>) {
        let ids: std::collections::HashSet<u64> = lines.iter().map(|l| l.id).collect();
        self.lines.retain(|id, item| {
            let keep = ids.contains(id);
            if !keep {
                item.root.remove();
            }
            keep
        });
        let mut added = false;
        for line in lines {
            match self.lines.get(&line.id) {
                Some(item) => update_delivery(item, line),
                None => {
                    let sender = senders.get(&line.id).map(String::as_str);
                    if let Some(item) = build_line(line, sender) {
                        let _ = self.messages.append_child(&item.root);
                        self.lines.insert(line.id, item);
                        added = true;
                    }
                }
            }
        }
        if added {
            self.messages.set_scroll_top(self.messages.scroll_height());
        }
    }
}

fn build_room_item(item: &RoomItem) -> Option<Element> {
    let li = element("li", if item.open { "room active" } else { "room" })?;
    li.set_attribute("data-room", &item.id).ok()?;
    li.set_attribute("data-invited", if item.invited { "true" } else { "false" })
        .ok()?;
    li.set_attribute("tabindex", "0").ok()?;
    let text = element("span", "contact-text")?;
    add(&text, &text_element("span", "contact-name", &item.label)?);
    add(&li, &text);
    if item.invited {
        add(&li, &text_element("span", "room-tag", "invitation")?);
    }
    if item.unread > 0 {
        add(
            &li,
            &text_element("span", "unread", &item.unread.to_string())?,
        );
    }
    Some(li)
}

fn build_member(m: &MemberItem) -> Option<Element> {
    let li = element("li", "room-member")?;
    li.set_attribute("data-key", &m.key).ok()?;
    li.set_attribute("data-in-group", if m.in_group { "true" } else { "false" })
        .ok()?;
    let text = element("span", "room-member-text")?;
    let mut name = m.name.clone();
    if m.me {
        name.push_str(" (you)");
    }
    if m.admin {
        name.push_str(" · admin");
    }
    add(&text, &text_element("span", "user-name", &name)?);
    add(
        &text,
        &text_element("code", "fingerprint member-fingerprint", &m.fingerprint)?,
    );
    if !m.in_group {
        let warning = "listed by the server but not in the encrypted group: do not trust this \
                       room until it is gone";
        add(&text, &text_element("span", "warning", warning)?);
    }
    add(&li, &text);
    if m.removable {
        let b = text_element("button", "small room-remove", "Remove")?;
        b.set_attribute("type", "button").ok()?;
        b.set_attribute("data-key", &m.key).ok()?;
        add(&li, &b);
    }
    Some(li)
}

/// A line of the room: `.message` (`in`, `out` or `note`) with `.sender` on incoming lines
/// and `.delivery` on outgoing ones.
fn build_line(line: &RoomLine, sender: Option<&str>) -> Option<LineItem> {
    let class = match line.kind {
        RoomLineKind::In => "message in",
        RoomLineKind::Out => "message out",
        RoomLineKind::Note => "message note",
    };
    let root = element("div", class)?;
    root.set_attribute("data-line", &line.id.to_string()).ok()?;
    if let Some(from) = &line.from {
        root.set_attribute("data-from", from).ok()?;
    }
    if let (RoomLineKind::In, Some(name)) = (line.kind, sender) {
        add(&root, &text_element("div", "sender", name)?);
    }
    add(&root, &text_element("div", "text", &line.text)?);
    let meta = element("div", "meta")?;
    add(
        &meta,
        &text_element("time", "", &dom::format_time(line.date))?,
    );
    let delivery = match line.kind {
        RoomLineKind::Out => {
            let d = element("span", "delivery")?;
            add(&meta, &d);
            Some(d)
        }
        _ => None,
    };
    if line.kind != RoomLineKind::Note {
        add(&root, &meta);
    }
    let item = LineItem { root, delivery };
    update_delivery(&item, line);
    Some(item)
}

fn update_delivery(item: &LineItem, line: &RoomLine) {
    let (Some(el), Some(delivery)) = (&item.delivery, &line.delivery) else {
        return;
    };
    set_attr(el, "data-state", delivery.state());
    set_text(el, &delivery.label());
}
