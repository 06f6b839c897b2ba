//! The page: finding its elements and bringing them up to date with the state.
//!
//! `static/index.html` holds the layout with every element the page needs; this module
//! fills it in. Lists are updated in place, keyed by contact key or line id, rather than
//! rebuilt: an element the user (or a test driver) is about to click stays the same element
//! while presence or unread counts change around it.
//!
//! User-supplied text (messages, aliases, server explanations) only ever enters the page
//! through `textContent`, never as HTML.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use flexim_protocol::{PublicKey, User};
use web_sys::{Element, HtmlButtonElement, HtmlInputElement, HtmlTextAreaElement};

use crate::dom::{self, by_id, element, set_attr, set_class, set_hidden, set_text, text_element};
use crate::state::{Contact, Contacts, Direction, Line, short_fingerprint};

/// How many notices the activity log keeps.
const LOG_LIMIT: usize = 30;

/// What the connection indicator shows.
pub(crate) enum ConnView<'a> {
    /// Opening the socket or in the handshake.
    Connecting,
    /// Connected, but waiting for the user to accept a changed server key.
    AwaitingKey,
    /// Logged in.
    Online,
    /// Disconnected; the next attempt comes after this many milliseconds.
    Retrying(u32),
    /// Disconnected and not retrying on its own, for this reason.
    Stopped(&'a str),
}

/// One contact's list item and the parts of it that change.
struct ContactItem {
    /// The `li.contact`.
    li: Element,
    /// The `.contact-name`.
    name: Element,
    /// The short fingerprint under the name.
    key: Element,
    /// The `.unread` badge.
    unread: Element,
}

/// One conversation line on screen.
struct LineItem {
    /// The `.message`.
    root: Element,
    /// The `.delivery` of an outgoing line.
    delivery: Option<Element>,
}

/// The page's elements, and what is currently shown in the lists.
pub(crate) struct Ui {
    /// `#conn-state`.
    conn_state: Element,
    /// `#reconnect-button`.
    pub(crate) reconnect_button: HtmlButtonElement,
    /// `#notify-button`.
    pub(crate) notify_button: HtmlButtonElement,
    /// Where the server-key warning goes when there is one.
    banner_slot: Element,
    /// `#my-fingerprint`.
    my_fingerprint: Element,
    /// `#my-key`.
    my_key: Element,
    /// `#my-aliases`.
    my_aliases: Element,
    /// `#server-fingerprint`.
    server_fingerprint: Element,
    /// `#alias-input`.
    pub(crate) alias_input: HtmlInputElement,
    /// `#alias-result`.
    alias_result: Element,
    /// `#contact-input`.
    pub(crate) contact_input: HtmlInputElement,
    /// `#contact-error`.
    contact_error: Element,
    /// `#search-input`.
    pub(crate) search_input: HtmlInputElement,
    /// `#search-results`.
    pub(crate) search_results: Element,
    /// `#contacts`.
    pub(crate) contacts: Element,
    /// The hint shown while there are no contacts.
    contacts_empty: Element,
    /// `#roster`.
    pub(crate) roster: Element,
    /// `#requests`.
    pub(crate) requests: Element,
    /// `#requests-empty`.
    pub(crate) requests_empty: Element,
    /// `#conversation`.
    conversation: Element,
    /// `#conversation-name`.
    conversation_name: Element,
    /// `#conversation-presence`.
    conversation_presence: Element,
    /// `#contact-fingerprint`.
    contact_fingerprint: Element,
    /// `#messages`.
    messages: Element,
    /// `#composer`.
    pub(crate) composer: HtmlTextAreaElement,
    /// `#export-button`.
    pub(crate) export_button: HtmlButtonElement,
    /// `#export-output`.
    export_output: HtmlTextAreaElement,
    /// `#export-warning`.
    export_warning: Element,
    /// `#import-input`.
    pub(crate) import_input: HtmlInputElement,
    /// `#import-error`.
    import_error: Element,
    /// `#log`.
    log: Element,
    /// The contact list items, by key.
    contact_items: HashMap<PublicKey, ContactItem>,
    /// The conversation shown in `#messages`, if any.
    shown: Option<PublicKey>,
    /// The lines shown in `#messages`, by line id.
    line_items: HashMap<u64, LineItem>,
}

impl Ui {
    /// Finds every element the page needs; fails naming the first one missing.
    pub(crate) fn find() -> Result<Ui, String> {
        Ok(Ui {
            conn_state: by_id("conn-state")?,
            reconnect_button: by_id("reconnect-button")?,
            notify_button: by_id("notify-button")?,
            banner_slot: by_id("banner-slot")?,
            my_fingerprint: by_id("my-fingerprint")?,
            my_key: by_id("my-key")?,
            my_aliases: by_id("my-aliases")?,
            server_fingerprint: by_id("server-fingerprint")?,
            alias_input: by_id("alias-input")?,
            alias_result: by_id("alias-result")?,
            contact_input: by_id("contact-input")?,
            contact_error: by_id("contact-error")?,
            search_input: by_id("search-input")?,
            search_results: by_id("search-results")?,
            contacts: by_id("contacts")?,
            contacts_empty: by_id("contacts-empty")?,
            roster: by_id("roster")?,
            requests: by_id("requests")?,
            requests_empty: by_id("requests-empty")?,
            conversation: by_id("conversation")?,
            conversation_name: by_id("conversation-name")?,
            conversation_presence: by_id("conversation-presence")?,
            contact_fingerprint: by_id("contact-fingerprint")?,
            messages: by_id("messages")?,
            composer: by_id("composer")?,
            export_button: by_id("export-button")?,
            export_output: by_id("export-output")?,
            export_warning: by_id("export-warning")?,
            import_input: by_id("import-input")?,
            import_error: by_id("import-error")?,
            log: by_id("log")?,
            contact_items: HashMap::new(),
            shown: None,
            line_items: HashMap::new(),
        })
    }

    /// Shows the connection state: `data-state` for machines, a sentence for people.
    pub(crate) fn set_conn(&self, view: ConnView<'_>) {
        let (state, text) = match view {
            ConnView::Connecting => ("connecting", "connecting…".to_string()),
            ConnView::AwaitingKey => (
                "connecting",
                "connected, waiting for you to accept the server's new key".to_string(),
            ),
            ConnView::Online => ("online", "online".to_string()),
            ConnView::Retrying(ms) => (
                "offline",
                format!("offline, reconnecting in {:.1} s", f64::from(ms) / 1000.0),
            ),
            ConnView::Stopped(reason) => ("offline", format!("offline: {reason}")),
        };
        set_attr(&self.conn_state, "data-state", state);
        set_text(&self.conn_state, &text);
        set_hidden(&self.reconnect_button, state != "offline");
    }

    /// Shows this user's key and fingerprint.
    pub(crate) fn set_me(&self, key: &PublicKey) {
        set_text(&self.my_fingerprint, &key.fingerprint());
        set_text(&self.my_key, &key.to_hex());
    }

    /// Shows this user's registered aliases.
    pub(crate) fn set_my_aliases(&self, aliases: &[String]) {
        let text = if aliases.is_empty() {
            "none yet".to_string()
        } else {
            aliases.join(", ")
        };
        set_text(&self.my_aliases, &text);
    }

    /// Shows the server's fingerprint (or that it is not known yet).
    pub(crate) fn set_server(&self, key: Option<&PublicKey>) {
        match key {
            Some(k) => set_text(&self.server_fingerprint, &k.fingerprint()),
            None => set_text(&self.server_fingerprint, "not connected yet"),
        }
    }

    /// Shows the warning about a changed server key, or removes it. The warning exists in
    /// the page only while there is something to warn about.
    pub(crate) fn set_key_warning(&self, warning: Option<(&PublicKey, &PublicKey)>) {
        let existing = dom::document().and_then(|d| d.get_element_by_id("server-warning"));
        match (warning, existing) {
            (None, Some(el)) => el.remove(),
            (Some((pinned, presented)), None) => {
                if let Some(banner) = build_key_warning(pinned, presented) {
                    let _ = self.banner_slot.append_child(&banner);
                }
            }
            _ => {}
        }
    }

    /// Shows a warning, with a button to trust the new key, for every contact whose key
    /// changed, and removes the warnings the user decided.
    pub(crate) fn set_contact_warnings(&self, warnings: &[flexim_session::KeyChange]) {
        crate::banners::sync_contact_warnings(&self.banner_slot, warnings);
    }

    /// Shows the outcome of an alias registration.
    pub(crate) fn set_alias_result(&self, text: &str, ok: bool) {
        set_text(&self.alias_result, text);
        set_class(&self.alias_result, "error", !ok);
        set_class(&self.alias_result, "ok", ok);
    }

    /// Shows (or clears, with "") a problem starting a conversation.
    pub(crate) fn set_contact_error(&self, text: &str) {
        set_text(&self.contact_error, text);
    }

    /// Shows (or clears) a problem importing a key.
    pub(crate) fn set_import_error(&self, text: &str) {
        set_text(&self.import_error, text);
    }

    /// Shows the secret key for export, or hides it again.
    pub(crate) fn show_export(&self, secret: Option<&str>) {
        let text = secret.unwrap_or("");
        // Both the value and the text content: the value is what the box shows, the text
        // content what copies and automation read when the box was never edited.
        self.export_output.set_value(text);
        self.export_output.set_text_content(Some(text));
        set_hidden(&self.export_output, secret.is_none());
        set_hidden(&self.export_warning, secret.is_none());
        set_text(
            &self.export_button,
            if secret.is_some() {
                "Hide secret key"
            } else {
                "Show secret key"
            },
        );
    }

    /// Sets the notification button's label and whether it can be clicked.
    pub(crate) fn set_notify(&self, label: &str, enabled: bool) {
        set_text(&self.notify_button, label);
        self.notify_button.set_disabled(!enabled);
    }

    /// Adds a line to the activity log (newest first, bounded).
    pub(crate) fn log(&self, text: &str) {
        let Some(li) = element("li", "") else {
            return;
        };
        let time = dom::format_time(crate::os::now_secs());
        li.set_text_content(Some(&format!("{time} {text}")));
        let _ = self.log.insert_before(&li, self.log.first_child().as_ref());
        while self.log.child_element_count() as usize > LOG_LIMIT {
            match self.log.last_element_child() {
                Some(last) => last.remove(),
                None => break,
            }
        }
    }

    /// Puts the unread total in the page title, where a background tab shows it.
    pub(crate) fn set_title(&self, unread: u32) {
        if let Some(d) = dom::document() {
            let title = if unread > 0 {
                format!("({unread}) flexim")
            } else {
                "flexim".to_string()
            };
            if d.title() != title {
                d.set_title(&title);
            }
        }
    }

    /// Brings `#contacts` up to date: one `li.contact` per contact, most recent first, but
    /// for the strangers in `waiting` (shown in `#requests` instead).
    pub(crate) fn sync_contacts(&mut self, contacts: &Contacts, waiting: &[PublicKey]) {
        let mut sorted = contacts.sorted();
        sorted.retain(|c| !waiting.contains(&c.key));
        let open = contacts.open_key();
        let keep: HashSet<PublicKey> = sorted.iter().map(|c| c.key).collect();
        self.contact_items.retain(|key, item| {
            let keep = keep.contains(key);
            if !keep {
                item.li.remove();
            }
            keep
        });
        for (index, contact) in sorted.iter().enumerate() {
            let item = match self.contact_items.entry(contact.key) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => match build_contact_item(&contact.key) {
                    Some(item) => e.insert(item),
                    None => continue,
                },
            };
            update_contact_item(item, contact, open == Some(&contact.key));
            // Move the item only when it is out of place, so that clicks in flight land.
            let current = self.contacts.children().item(index as u32);
            if current.as_ref() != Some(&item.li) {
                let _ = self
                    .contacts
                    .insert_before(&item.li, current.as_ref().map(|e| e.as_ref()));
            }
        }
        set_hidden(&self.contacts_empty, !sorted.is_empty());
    }

    /// Brings the conversation panel up to date with the open conversation.
    pub(crate) fn sync_conversation(&mut self, contacts: &Contacts) {
        let open = contacts.open_key().and_then(|k| contacts.get(k));
        if self.shown != open.map(|c| c.key) {
            self.messages.set_text_content(None);
            self.line_items.clear();
            self.shown = open.map(|c| c.key);
        }
        let Some(contact) = open else {
            set_attr(&self.conversation, "data-key", "");
            set_text(&self.conversation_name, "No conversation open");
            set_text(&self.conversation_presence, "");
            set_text(&self.contact_fingerprint, "");
            if self.messages.child_element_count() == 0
                && let Some(hint) = text_element(
                    "p",
                    "placeholder",
                    "Pick a conversation, or start one with an alias or a key.",
                )
            {
                let _ = self.messages.append_child(&hint);
            }
            return;
        };
        set_attr(&self.conversation, "data-key", &contact.key.to_hex());
        set_text(&self.conversation_name, &contact.display_name());
        set_text(
            &self.conversation_presence,
            if contact.online { "online" } else { "offline" },
        );
        set_class(&self.conversation_presence, "online", contact.online);
        set_text(&self.contact_fingerprint, &contact.key.fingerprint());

        let ids: HashSet<u64> = contact.lines.iter().map(|l| l.id).collect();
        self.line_items.retain(|id, item| {
            let keep = ids.contains(id);
            if !keep {
                item.root.remove();
            }
            keep
        });
        if contact.lines.is_empty() && self.messages.child_element_count() == 0 {
            if let Some(hint) = text_element(
                "p",
                "placeholder",
                "No messages yet. Messages are end-to-end encrypted: compare the fingerprint \
                 above with your contact's to be sure who you are writing to.",
            ) {
                let _ = self.messages.append_child(&hint);
            }
            return;
        }
        let mut added = false;
        for line in &contact.lines {
            match self.line_items.get(&line.id) {
                Some(item) => update_delivery(item, line),
                None => {
                    if let Some(item) = build_line(line) {
                        if !added {
                            // The first real line replaces the "no messages yet" hint.
                            remove_placeholders(&self.messages);
                        }
                        let _ = self.messages.append_child(&item.root);
                        self.line_items.insert(line.id, item);
                        added = true;
                    }
                }
            }
        }
        if added {
            self.messages.set_scroll_top(self.messages.scroll_height());
        }
    }

    /// Fills a list of users (`#search-results` or `#roster`): one `li` per user with
    /// `data-key`, or a single note when there is nobody to show.
    pub(crate) fn show_users(&self, list: &Element, users: &[User], me: &PublicKey, empty: &str) {
        list.set_text_content(None);
        if users.is_empty() {
            if let Some(li) = text_element("li", "note", empty) {
                add(list, &li);
            }
            return;
        }
        for user in users {
            if let Some(li) = build_user_item(user, me) {
                add(list, &li);
            }
        }
    }

    /// Shows a note (an error, "searching…") in place of a user list.
    pub(crate) fn show_list_note(&self, list: &Element, text: &str) {
        list.set_text_content(None);
        if let Some(li) = text_element("li", "note", text) {
            add(list, &li);
        }
    }

    /// Moves the keyboard to the composer (and, on a phone, the conversation into view).
    pub(crate) fn focus_composer(&self) {
        if dom::is_narrow() {
            self.conversation.scroll_into_view();
        } else {
            let _ = self.composer.focus();
        }
    }
}

/// The list item for a contact, empty until [`update_contact_item`] fills it.
fn build_contact_item(key: &PublicKey) -> Option<ContactItem> {
    let li = element("li", "contact")?;
    li.set_attribute("data-key", &key.to_hex()).ok()?;
    // Focusable and announced as a button, so the list works from the keyboard too.
    li.set_attribute("tabindex", "0").ok()?;
    li.set_attribute("role", "button").ok()?;
    let presence = element("span", "presence")?;
    presence.set_attribute("aria-hidden", "true").ok()?;
    let text = element("span", "contact-text")?;
    let name = element("span", "contact-name")?;
    let key_el = element("span", "contact-key")?;
    add(&text, &name);
    add(&text, &key_el);
    let unread = element("span", "unread")?;
    add(&li, &presence);
    add(&li, &text);
    add(&li, &unread);
    Some(ContactItem {
        li,
        name,
        key: key_el,
        unread,
    })
}

fn update_contact_item(item: &ContactItem, contact: &Contact, open: bool) {
    set_attr(
        &item.li,
        "data-online",
        if contact.online { "true" } else { "false" },
    );
    set_class(&item.li, "active", open);
    set_text(&item.name, &contact.display_name());
    set_text(&item.key, &short_fingerprint(&contact.key));
    set_hidden(&item.key, contact.name.is_none());
    set_text(&item.unread, &contact.unread.to_string());
    set_hidden(&item.unread, contact.unread == 0);
    let label = format!(
        "{}, {}{}",
        contact.display_name(),
        if contact.online { "online" } else { "offline" },
        match contact.unread {
            0 => String::new(),
            n => format!(", {n} unread"),
        }
    );
    set_attr(&item.li, "aria-label", &label);
}

/// A line of the conversation: `.message` with `.text`, and `.delivery` when outgoing.
fn build_line(line: &Line) -> Option<LineItem> {
    let class = match line.dir {
        Direction::In => "message in",
        Direction::Out => "message out",
        Direction::Error => "message error",
    };
    let root = element("div", class)?;
    root.set_attribute("data-line", &line.id.to_string()).ok()?;
    let text = match line.dir {
        Direction::Error => format!("A message arrived but could not be opened: {}", line.text),
        _ => line.text.clone(),
    };
    add(&root, &text_element("div", "text", &text)?);
    let meta = element("div", "meta")?;
    add(
        &meta,
        &text_element("time", "", &dom::format_time(line.date))?,
    );
    if line.not_forward_secret {
        let weak = text_element("span", "weak", "not forward secret")?;
        weak.set_attribute(
            "title",
            "sealed with the sender's long-term key, not in your MLS conversation: \
             whoever later steals either key can read it",
        )
        .ok()?;
        add(&meta, &weak);
    }
    let delivery = match line.dir {
        Direction::Out => {
            let d = element("span", "delivery")?;
            add(&meta, &d);
            Some(d)
        }
        _ => None,
    };
    add(&root, &meta);
    let item = LineItem { root, delivery };
    update_delivery(&item, line);
    Some(item)
}

/// Shows an outgoing line's delivery state: `data-state` (sending, relayed, stored, delivered,
/// expired, unconfirmed or failed) for styles and machines, a short label for people.
fn update_delivery(item: &LineItem, line: &Line) {
    let (Some(el), Some(delivery)) = (&item.delivery, &line.delivery) else {
        return;
    };
    set_attr(el, "data-state", delivery.state());
    set_text(el, &delivery.label());
}

/// A user in a search result or the roster.
fn build_user_item(user: &User, me: &PublicKey) -> Option<Element> {
    let li = element("li", "user")?;
    li.set_attribute("data-key", &user.key.to_hex()).ok()?;
    let online = user.online.unwrap_or(false);
    li.set_attribute("data-online", if online { "true" } else { "false" })
        .ok()?;
    li.set_attribute("tabindex", "0").ok()?;
    li.set_attribute("role", "button").ok()?;
    let presence = element("span", "presence")?;
    presence.set_attribute("aria-hidden", "true").ok()?;
    let mut name = if user.aliases.is_empty() {
        "(no alias)".to_string()
    } else {
        user.aliases.join(", ")
    };
    if user.key == *me {
        name.push_str(" (you)");
    }
    let text = element("span", "contact-text")?;
    add(&text, &text_element("span", "user-name", &name)?);
    add(
        &text,
        &text_element("span", "contact-key", &short_fingerprint(&user.key))?,
    );
    add(&li, &presence);
    add(&li, &text);
    Some(li)
}

/// The banner shown while the server presents another key than the pinned one.
fn build_key_warning(pinned: &PublicKey, presented: &PublicKey) -> Option<Element> {
    let banner = element("div", "banner warning")?;
    banner.set_id("server-warning");
    banner.set_attribute("role", "alert").ok()?;
    add(
        &banner,
        &text_element("strong", "", "The server's key has changed.")?,
    );
    add(
        &banner,
        &text_element(
            "p",
            "",
            "This happens when the server was reinstalled, or when someone is intercepting the \
         connection. This page will not log in until you accept the new key. Check the new \
         fingerprint with the server's operator first.",
        )?,
    );
    add(
        &banner,
        &text_element("p", "fp", &format!("Pinned: {}", pinned.fingerprint()))?,
    );
    add(
        &banner,
        &text_element("p", "fp", &format!("Now:    {}", presented.fingerprint()))?,
    );
    let button = element("button", "danger")?;
    button.set_id("accept-server-key");
    button.set_attribute("type", "button").ok()?;
    button.set_text_content(Some("Trust the new key"));
    add(&banner, &button);
    Some(banner)
}

/// Appends `child` to `parent`. Appending a fresh element cannot fail in practice, and a
/// missing piece of text is no reason to stop rendering the rest.
pub(crate) fn add(parent: &Element, child: &Element) {
    let _ = parent.append_child(child);
}

/// Removes the `.placeholder` hints from a container.
fn remove_placeholders(container: &Element) {
    if let Ok(found) = container.query_selector_all(".placeholder") {
        for i in 0..found.length() {
            if let Some(node) = found.get(i)
                && let Some(parent) = node.parent_node()
            {
                let _ = parent.remove_child(&node);
            }
        }
    }
}

/// The key in a list item's `data-key`.
pub(crate) fn item_key(item: &Element) -> Option<PublicKey> {
    PublicKey::from_hex(&item.get_attribute("data-key")?)
}
