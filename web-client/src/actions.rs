//! What the user can do on the page: each method runs on one control's event, through
//! `app::with_app`, which re-renders afterwards.

use flexim_protocol::keys::validate_alias;
use flexim_protocol::{PublicKey, SecretKey};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Notification, NotificationOptions, NotificationPermission};

use crate::app::{App, new_engine, with_app};
use crate::dom;
use crate::model::Conn;
use crate::policy;
use crate::storage;
use flexim_session::Lookup;

/// The longest notification body: enough to recognise a message, short enough for every
/// notification system.
const NOTIFICATION_CHARS: usize = 160;

/// Whether this browser has the Notification API at all (some mobile browsers do not, and
/// calling into a missing API would throw).
fn notifications_supported() -> bool {
    dom::window().is_some_and(|w| {
        js_sys::Reflect::has(&w, &JsValue::from_str("Notification")).unwrap_or(false)
    })
}

impl App {
    /// `#alias-button`: REGISTER the alias typed in `#alias-input`.
    pub(crate) fn on_register(&mut self) {
        let alias = self.ui.alias_input.value().trim().to_string();
        if alias.is_empty() {
            self.ui.set_alias_result("Type an alias first.", false);
            return;
        }
        // The server checks the alias rules and says why it refuses, so its reason is
        // what the user sees; checking here too would only risk disagreeing with it.
        match self.engine.register(&alias) {
            Ok(_) => self
                .ui
                .set_alias_result(&format!("registering {alias}…"), true),
            Err(e) => self
                .ui
                .set_alias_result(&format!("Cannot register now: {e}."), false),
        }
        self.pump();
    }

    /// `#contact-add`: starts a conversation with the key or alias in `#contact-input`.
    pub(crate) fn on_add_contact(&mut self) {
        let input = self.ui.contact_input.value().trim().to_string();
        if input.is_empty() {
            self.ui
                .set_contact_error("Type an alias or a key (64 hexadecimal digits).");
            return;
        }
        if let Some(key) = PublicKey::from_hex(&input) {
            // A low-order key would make the conversation key predictable to anyone.
            if self.secret.diffie_hellman(&key).is_none() {
                self.ui.set_contact_error(
                    "This key cannot be used: it would make the encryption predictable.",
                );
                return;
            }
            self.model.contacts.add(&key, None, crate::os::now_secs());
            self.ui.set_contact_error("");
            self.ui.contact_input.set_value("");
            self.open_conversation(&key);
            // A key needs no lookup to talk to; asking only fills in its alias and presence.
            let _ = self.engine.get_user(&key.to_hex(), Lookup::Refresh);
        } else if validate_alias(&input).is_ok() {
            match self.engine.get_user(&input, Lookup::Contact) {
                Ok(_) => self.ui.set_contact_error(""),
                Err(e) => self.ui.set_contact_error(&format!(
                    "Cannot look up “{input}”: {e}. Try again once online."
                )),
            }
        } else {
            self.ui.set_contact_error(&format!(
                "“{input}” is neither a key (64 hexadecimal digits) nor an alias \
                 (a letter, then letters, digits, '_', '-' or '.')."
            ));
        }
        self.pump();
    }

    /// `#search-button`: SEARCH for the text in `#search-input`.
    pub(crate) fn on_search(&mut self) {
        let text = self.ui.search_input.value().trim().to_string();
        if text.is_empty() {
            self.ui
                .show_list_note(&self.ui.search_results, "Type part of an alias first.");
            return;
        }
        match self.engine.search(&text) {
            Ok(_) => self
                .ui
                .show_list_note(&self.ui.search_results, "Searching…"),
            Err(e) => self
                .ui
                .show_list_note(&self.ui.search_results, &format!("Cannot search: {e}.")),
        }
        self.pump();
    }

    /// A button of a request in `#requests`: accepts, declines or blocks that stranger, who
    /// leaves the box at once (the server's answer is logged).
    pub(crate) fn on_request_action(
        &mut self,
        key: PublicKey,
        action: crate::requests_ui::RequestAction,
    ) {
        use crate::requests_ui::RequestAction;
        let hex = key.to_hex();
        let sent = match action {
            RequestAction::Accept => self.engine.accept_request(&hex),
            RequestAction::Decline => self.engine.decline(&hex),
            RequestAction::Block => self.engine.block(&hex),
        };
        if let Err(e) = sent {
            self.ui
                .log(&format!("not connected: try again once online ({e})"));
            return;
        }
        for effect in self.model.answer_request(&key) {
            self.run(effect);
        }
        if action == RequestAction::Accept {
            self.open_conversation(&key);
        } else {
            self.pump();
        }
    }

    /// A click on a search result or a roster entry: opens that user's conversation.
    pub(crate) fn open_user(&mut self, key: PublicKey) {
        let user = self
            .model
            .search
            .iter()
            .chain(self.model.roster.iter())
            .find(|u| u.key == key)
            .cloned();
        let contacts = &mut self.model.contacts;
        contacts.add(&key, None, crate::os::now_secs());
        if let Some(user) = user {
            contacts.learn_name(&key, &user.aliases);
            contacts.set_online(&key, user.online.unwrap_or(false));
        }
        self.open_conversation(&key);
    }

    /// `#send-button` or Enter in `#composer`: sends the composer's text to the open
    /// conversation.
    pub(crate) fn on_send(&mut self) {
        let text = self.ui.composer.value();
        if text.trim().is_empty() {
            return;
        }
        let Some(peer) = self.model.contacts.open_key().copied() else {
            self.ui
                .log("open a conversation first: pick a contact or start one with an alias");
            return;
        };
        // A contact whose key changed gets nothing until the user decides; the text stays in
        // the composer.
        if let Some(change) = self.model.send_blocked(&peer) {
            let alias = change.alias.clone();
            self.ui.log(&format!(
                "not sent: the key of “{alias}” changed; trust the new key (at the top) once \
                 you have compared its fingerprint, or start a conversation by key"
            ));
            return;
        }
        let now = crate::os::now_secs();
        let line = self.model.contacts.send(&peer, &text, now);
        self.ui.composer.set_value("");
        // Offline it is shown as "sending…" and goes out at the next login.
        self.send_line(&peer, line, &text, now);
        self.pump();
    }

    /// `#accept-server-key`: trusts the server's new key and lets the login go on.
    pub(crate) fn on_accept_server_key(&mut self) {
        let Some((_, presented)) = self.model.key_warning.take() else {
            return;
        };
        if let Err(e) = self.store.set(storage::SERVER_KEY, &presented.to_hex()) {
            self.ui.log(&format!("the new key could not be saved: {e}"));
        }
        self.model.pinned = Some(presented);
        self.ui.log("you accepted the server's new key");
        if self.engine.is_holding_server_key() {
            self.engine.accept_server_key();
            self.model.conn = Conn::Connecting;
            self.pump();
        } else {
            // The connection that showed the key is gone (the server does not wait more than
            // 30 seconds for a login): start a new one with the new pin.
            self.engine.set_pinned(Some(presented));
            self.reconnect_now();
        }
    }

    /// `.trust-contact-key` in a contact's warning: the user trusts the new key of `alias`;
    /// the engine pins it, and the model opens its conversation under the alias.
    pub(crate) fn on_trust_contact(&mut self, alias: &str) {
        let now = crate::os::now_secs();
        let effects = match self.engine.accept_contact_key(alias) {
            Some(key) => self.model.contact_key_accepted(alias, &key, now),
            None => {
                // The engine has nothing waiting (the page kept a stale warning): drop it.
                self.model.forget_warning(alias);
                Vec::new()
            }
        };
        for effect in effects {
            self.run(effect);
        }
        self.pump();
    }

    /// `#export-button`: shows the secret key (or hides it again).
    pub(crate) fn on_export_toggle(&mut self) {
        self.export_shown = !self.export_shown;
        let hex = self.secret.to_hex();
        self.ui
            .show_export(self.export_shown.then_some(hex.as_str()));
    }

    /// `#import-button`: replaces the identity with the pasted secret key, after asking.
    pub(crate) fn on_import(&mut self) {
        let secret = match policy::parse_identity_import(&self.ui.import_input.value()) {
            Ok(secret) => secret,
            Err(e) => {
                self.ui.set_import_error(&format!("{e}."));
                return;
            }
        };
        if secret.public_key() == *self.engine.me() {
            self.ui.set_import_error("This is already your key.");
            return;
        }
        let confirmed = dom::window()
            .and_then(|w| {
                w.confirm_with_message(
                    "Replace your identity with the imported key?\n\n\
                     The current key is deleted from this browser: export it first if you \
                     may need it again. Your contacts stay, but the conversation history on \
                     this device is cleared.",
                )
                .ok()
            })
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        if let Err(e) = self.store.set(storage::IDENTITY, &secret.to_hex()) {
            self.ui
                .set_import_error(&format!("The key could not be saved: {e}."));
            return;
        }
        self.switch_identity(secret);
    }

    /// Starts over as another user: new session, no alias, no history, new connection.
    fn switch_identity(&mut self, secret: SecretKey) {
        // The contacts' keys are the server's directory as this browser learnt it, whoever
        // the user is: the new identity keeps them.
        let pins = self.engine.contact_pins().clone();
        self.engine = new_engine(&secret, self.model.pinned, None);
        self.engine.restore_contact_pins(pins);
        self.engine.take_pins_changed();
        self.model.me = secret.public_key();
        self.secret = secret;
        self.model.alias = None;
        self.store.remove(storage::ALIAS);
        self.model.my_aliases.clear();
        self.model.contacts.clear_history();
        self.model.dirty = true;
        // Anything waiting to be sent was sealed by the old key, and went with the old session.
        self.store.remove(storage::DELIVERY);
        // The rooms' groups are the old key's leaves: the new identity is in none of them.
        self.store.remove(storage::ROOMS_STATE);
        self.store.remove(storage::ROOMS);
        self.model.rooms = crate::room_state::Rooms::new();
        self.export_shown = false;
        self.ui.show_export(None);
        self.ui.set_me(self.engine.me());
        self.ui.import_input.set_value("");
        self.ui.set_import_error("");
        self.ui.set_alias_result("", true);
        self.ui
            .log("your identity was replaced by the imported key");
        self.reconnect_now();
    }

    /// Shows the notification button according to the browser's permission.
    pub(crate) fn update_notify_button(&self) {
        if !notifications_supported() {
            self.ui
                .set_notify("Notifications unavailable in this browser", false);
            return;
        }
        let label = match Notification::permission() {
            NotificationPermission::Granted => "Notifications on",
            NotificationPermission::Denied => "Notifications blocked",
            _ => "Enable notifications",
        };
        self.ui.set_notify(label, true);
    }

    /// `#notify-button`: asks for permission to show desktop notifications.
    pub(crate) fn on_notify_click(&mut self) {
        if !notifications_supported() {
            return;
        }
        match Notification::permission() {
            NotificationPermission::Granted => self
                .ui
                .log("notifications are on: for messages flagged NOTIFY and while this tab is hidden"),
            NotificationPermission::Denied => self.ui.log(
                "notifications are blocked for this site; allow them in the browser's site settings",
            ),
            _ => match Notification::request_permission() {
                Ok(promise) => {
                    let done = Closure::<dyn FnMut(JsValue)>::new(|_| {
                        with_app(|app| app.update_notify_button())
                    });
                    let _ = promise.then(&done);
                    // The promise settles once; the small closure is left to it.
                    done.forget();
                }
                Err(_) => self.ui.log("the browser refused to ask for notifications"),
            },
        }
    }

    /// Shows a desktop notification for a message from `from`, if allowed.
    pub(crate) fn notify(&self, from: &PublicKey, text: &str) {
        if !notifications_supported()
            || Notification::permission() != NotificationPermission::Granted
        {
            return;
        }
        let name = self
            .model
            .contacts
            .get(from)
            .map(|c| c.display_name())
            .unwrap_or_else(|| crate::state::short_fingerprint(from));
        let body: String = text.chars().take(NOTIFICATION_CHARS).collect();
        let options = NotificationOptions::new();
        options.set_body(&body);
        // One notification per contact: a newer message replaces the older one.
        options.set_tag(&from.to_hex());
        match Notification::new_with_options(&format!("{name} (flexim)"), &options) {
            Ok(notification) => {
                let key = *from;
                let on_click = Closure::once_into_js(move || {
                    if let Some(w) = dom::window() {
                        let _ = w.focus();
                    }
                    with_app(|app| app.open_conversation(&key));
                });
                notification.set_onclick(Some(on_click.unchecked_ref()));
            }
            Err(_) => self.ui.log("the browser refused to show a notification"),
        }
    }
}
