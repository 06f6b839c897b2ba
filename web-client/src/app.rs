//! The controller: one [`App`] per page, holding the engine, the model, the socket and
//! the page, and reacting to the socket, the timers and the user.
//!
//! Browser callbacks cannot borrow Rust state, so the `App` lives in a thread-local cell and
//! every callback goes through [`with_app`], which also re-renders once the callback is done.
//! This file covers start-up, rendering and the connection's life; the engine's events go
//! through the pure [`Model`] (`model.rs`), whose effects `effects.rs` carries out, and
//! `actions.rs` handles the user's.

use std::cell::RefCell;
use std::collections::HashSet;

use flexim_protocol::{PublicKey, SecretKey};
use flexim_session::{Config, ContactPins, Delivery, Engine, Framing, SavedDelivery};
use wasm_bindgen::JsCast;
use web_sys::{Event, EventTarget, KeyboardEvent};

use crate::dom::{self, listen};
use crate::model::{Conn, Context, Model};
use crate::net::{Socket, SocketEvent, ws_url};
use crate::os;
use crate::policy::{self, Backoff};
use crate::state::Contacts;
use crate::storage::{self, Store};
use crate::ui::{ConnView, Ui, item_key};

thread_local! {
    /// The page's controller, set once at start-up.
    static APP: RefCell<Option<App>> = const { RefCell::new(None) };
}

/// Runs `f` on the page's controller, then brings the page up to date, saves what changed, and
/// only then acknowledges the messages that arrived: a message acknowledged is one the server
/// forgets, so it must be on the page and in storage first.
///
/// Browser events never nest inside one another here (nothing the handlers call dispatches
/// events synchronously), so the borrow always succeeds; if it ever did not, dropping the
/// event is safer than a panic, which would kill the whole module.
pub(crate) fn with_app(f: impl FnOnce(&mut App)) {
    APP.with(|cell| match cell.try_borrow_mut() {
        Ok(mut guard) => {
            if let Some(app) = guard.as_mut() {
                f(app);
                app.render();
                app.flush_acks();
            }
        }
        Err(_) => dom::log_error("flexim: an event arrived during another one and was dropped"),
    });
}

/// The reason shown while the page is in the back/forward cache.
const SUSPENDED: &str = "the page was left";

/// The page's state and everything it talks to.
pub(crate) struct App {
    /// The page's elements.
    pub(crate) ui: Ui,
    /// The rooms' elements.
    pub(crate) rooms_ui: crate::rooms_ui::RoomsUi,
    /// `localStorage`.
    pub(crate) store: Store,
    /// This user's secret key.
    pub(crate) secret: SecretKey,
    /// The protocol for this identity (shared with the native client).
    pub(crate) engine: Engine,
    /// What the page shows: contacts, conversations, the connection's state.
    pub(crate) model: Model,
    /// The reconnect schedule.
    pub(crate) backoff: Backoff,
    /// The current socket.
    socket: Option<Socket>,
    /// The previous socket, closed and silent, kept until the next one is retired: it may be
    /// the socket whose handler is running right now.
    retired: Option<Socket>,
    /// Numbers connections, so that a late event from an old socket is recognised.
    generation: u64,
    /// The pending reconnect timer.
    timer: Option<i32>,
    /// Whether the secret key is shown for export.
    pub(crate) export_shown: bool,
}

/// Starts the page: run by `lib.rs` when the module loads.
pub(crate) fn start() {
    std::panic::set_hook(Box::new(|info| {
        dom::log_error(&format!("flexim stopped: {info}"));
    }));
    let app = match App::new() {
        Ok(app) => app,
        Err(e) => {
            show_fatal(&e);
            return;
        }
    };
    APP.with(|cell| *cell.borrow_mut() = Some(app));
    bind();
    with_app(|app| {
        app.ui.set_me(app.engine.me());
        app.ui.set_my_aliases(&app.model.my_aliases);
        app.ui.show_export(None);
        app.update_notify_button();
        app.connect();
    });
}

/// Replaces the connection indicator with a message when the page cannot start at all.
fn show_fatal(text: &str) {
    dom::log_error(text);
    if let Some(el) = dom::document().and_then(|d| d.get_element_by_id("conn-state")) {
        let _ = el.set_attribute("data-state", "offline");
        el.set_text_content(Some(&format!("cannot start: {text}")));
    }
}

/// Loads the identity from storage, or makes one on the first visit.
fn load_identity(store: &Store, notes: &mut Vec<String>) -> Result<SecretKey, String> {
    if let Some(saved) = store.get(storage::IDENTITY) {
        match policy::parse_identity_import(&saved) {
            Ok(secret) => return Ok(secret),
            Err(e) => {
                // Keep the damaged value where a person can still find it.
                let _ = store.set(storage::IDENTITY_BACKUP, &saved);
                notes.push(format!(
                    "the saved key was unreadable ({e}); it was moved to {} and a new key was made",
                    storage::IDENTITY_BACKUP
                ));
            }
        }
    }
    let mut bytes = [0u8; 32];
    os::fill(&mut bytes)?;
    let secret = SecretKey::from_bytes(bytes);
    match store.set(storage::IDENTITY, &secret.to_hex()) {
        Ok(()) => notes.push("a new key was made for you and saved in this browser".into()),
        Err(e) => notes.push(format!(
            "your new key could not be saved ({e}): it lasts only until this page is closed"
        )),
    }
    Ok(secret)
}

impl App {
    fn new() -> Result<App, String> {
        let ui = Ui::find()?;
        let rooms_ui = crate::rooms_ui::RoomsUi::find()?;
        let store = Store::open();
        let mut notes = Vec::new();
        if !store.available() {
            notes.push(
                "this browser does not let the page store anything: your key and conversations \
                 last only until the page is closed"
                    .to_string(),
            );
        }
        let secret = load_identity(&store, &mut notes)?;
        let pinned = store
            .get(storage::SERVER_KEY)
            .and_then(|h| PublicKey::from_hex(&h));
        let mut contacts = match store.get(storage::CONTACTS) {
            Some(json) => Contacts::from_json(&json).unwrap_or_else(|e| {
                notes.push(format!("the saved conversations could not be read: {e}"));
                Contacts::new()
            }),
            None => Contacts::new(),
        };
        contacts.set_visible(!dom::page_hidden());
        let alias = store.get(storage::ALIAS).filter(|a| !a.is_empty());
        let engine = new_engine(&secret, pinned, alias.clone());
        let me = *engine.me();
        let mut app = App {
            ui,
            rooms_ui,
            store,
            secret,
            engine,
            model: Model::new(me, contacts, alias, pinned),
            backoff: Backoff::new(),
            socket: None,
            retired: None,
            generation: 0,
            timer: None,
            export_shown: false,
        };
        app.restore_delivery(&mut notes);
        app.restore_contact_pins(&mut notes);
        app.restore_rooms(&mut notes);
        for note in &notes {
            app.ui.log(note);
        }
        Ok(app)
    }

    /// Gives the engine what an earlier visit left: the messages seen (so that copies are not
    /// shown again) and the messages still to be confirmed (sent again at the next login).
    fn restore_delivery(&mut self, notes: &mut Vec<String>) {
        for key in self.model.contacts.seen_ids() {
            self.engine.remember_seen(key);
        }
        if let Some(json) = self.store.get(storage::DELIVERY) {
            match SavedDelivery::from_json(&json, self.engine.me()) {
                Ok((saved, dropped)) => {
                    if dropped > 0 {
                        notes.push(format!(
                            "{dropped} saved messages waiting to be sent were damaged and dropped"
                        ));
                    }
                    self.engine.restore(saved);
                }
                Err(e) => notes.push(format!(
                    "the messages waiting to be sent could not be read ({e}); \
                     they are marked unconfirmed"
                )),
            }
        }
        // Lines whose message has no saved copy to send again can only be reported as such.
        let waiting: HashSet<&str> = self.engine.outbox().ids().collect();
        self.model.dirty |= self.model.contacts.settle_unsent(&waiting) > 0;
    }

    /// Gives the engine the contacts' keys pinned on earlier visits. Unreadable pins are set
    /// aside (not overwritten) and the user is told that changes of those keys go unnoticed.
    fn restore_contact_pins(&mut self, notes: &mut Vec<String>) {
        let Some(text) = self.store.get(storage::CONTACT_PINS) else {
            return;
        };
        match ContactPins::from_text(&text) {
            Ok(pins) => self.engine.restore_contact_pins(pins),
            Err(e) => {
                let _ = self.store.set(storage::CONTACT_PINS_BACKUP, &text);
                notes.push(format!(
                    "the saved keys of your contacts were unreadable ({e}); they were moved to \
                     {} and are learnt again, so a change of those keys goes unnoticed once",
                    storage::CONTACT_PINS_BACKUP
                ));
            }
        }
    }

    /// Brings the page up to date and saves what changed.
    pub(crate) fn render(&mut self) {
        let m = &self.model;
        let view = match &m.conn {
            Conn::Connecting => ConnView::Connecting,
            Conn::AwaitingKey => ConnView::AwaitingKey,
            Conn::Online => ConnView::Online,
            Conn::Retrying(ms) => ConnView::Retrying(*ms),
            Conn::Stopped(reason) => ConnView::Stopped(reason),
        };
        self.ui.set_conn(view);
        self.ui
            .set_key_warning(m.key_warning.as_ref().map(|(p, n)| (p, n)));
        self.ui.set_contact_warnings(&m.contact_warnings);
        self.ui
            .set_server(m.server_key.as_ref().or(m.pinned.as_ref()));
        self.ui.set_my_aliases(&m.my_aliases);
        let waiting: Vec<PublicKey> = m.requests.iter().map(|w| w.key).collect();
        self.ui.sync_contacts(&m.contacts, &waiting);
        self.ui.sync_conversation(&m.contacts);
        self.ui
            .set_title(m.contacts.total_unread() + m.rooms.total_unread());
        self.render_rooms();
        // The conversations first: a line saved without its outbox entry is reported as
        // unconfirmed after a crash, whereas an entry without its line would be sent unseen.
        if self.model.dirty {
            self.model.dirty = false;
            if let Err(e) = self
                .store
                .set(storage::CONTACTS, &self.model.contacts.to_json())
            {
                self.ui
                    .log(&format!("the conversations could not be saved: {e}"));
            }
        }
        if self.engine.take_pins_changed() {
            let text = self.engine.contact_pins().to_text();
            if let Err(e) = self.store.set(storage::CONTACT_PINS, &text) {
                self.ui.log(&format!(
                    "the keys of your contacts could not be saved: {e}"
                ));
            }
        }
        self.save_rooms();
        if self.engine.take_storage_changed() {
            let json = self.engine.saved().to_json(self.engine.me());
            if let Err(e) = self.store.set(storage::DELIVERY, &json) {
                self.ui.log(&format!(
                    "the messages waiting to be sent could not be saved: {e}"
                ));
            }
        }
    }

    /// Acknowledges the messages processed since the last wake-up (see [`with_app`]): they
    /// are on the page and in storage now.
    pub(crate) fn flush_acks(&mut self) {
        self.engine.flush_acks();
        self.send_transmits();
    }

    // ----- the connection -----

    /// Opens a new connection, dropping the current one if any.
    pub(crate) fn connect(&mut self) {
        if let Some(id) = self.timer.take() {
            dom::clear_timeout(id);
        }
        self.drop_socket();
        self.generation += 1;
        self.model.conn = Conn::Connecting;
        match ws_url().and_then(|url| Socket::connect(&url, self.generation, on_socket)) {
            Ok(socket) => self.socket = Some(socket),
            Err(e) => {
                self.ui.log(&e);
                self.schedule_reconnect();
            }
        }
    }

    /// Reconnects now rather than when the timer says (the user asked, or the network is
    /// back). Also lifts a pause after a takeover: the user wants this tab back.
    pub(crate) fn reconnect_now(&mut self) {
        self.model.paused = None;
        self.backoff.reset();
        self.connect();
    }

    /// Closes the connection while the page is put away (see `bind`), without reconnecting.
    pub(crate) fn suspend(&mut self) {
        if let Some(id) = self.timer.take() {
            dom::clear_timeout(id);
        }
        self.drop_socket();
        self.generation += 1;
        self.model.conn = Conn::Stopped(SUSPENDED.into());
    }

    /// Whether the connection was closed by [`App::suspend`].
    pub(crate) fn is_suspended(&self) -> bool {
        self.model.conn == Conn::Stopped(SUSPENDED.into())
    }

    /// Silences and retires the current socket, and tells the engine the connection is
    /// gone.
    fn drop_socket(&mut self) {
        if let Some(socket) = self.socket.take() {
            socket.shut();
            self.retired = Some(socket);
            self.engine.disconnected();
        }
    }

    fn schedule_reconnect(&mut self) {
        if let Some(reason) = &self.model.paused {
            self.model.conn = Conn::Stopped(reason.clone());
            return;
        }
        let delay = self.backoff.next_delay_ms();
        self.model.conn = Conn::Retrying(delay);
        let generation = self.generation;
        self.timer = dom::set_timeout(delay, move || {
            with_app(|app| {
                // A connection made meanwhile (by the user) makes this timer moot.
                if app.generation == generation {
                    app.timer = None;
                    app.connect();
                }
            })
        });
    }

    /// The connection ended (closed by either side, or failed).
    pub(crate) fn on_closed(&mut self, reason: &str) {
        self.drop_socket();
        // Events of the closed socket still queued in the browser must not count.
        self.generation += 1;
        if self.model.conn == Conn::Online {
            self.ui.log(&format!("disconnected: {reason}"));
        }
        self.schedule_reconnect();
    }

    fn on_socket(&mut self, generation: u64, event: SocketEvent) {
        if generation != self.generation {
            return;
        }
        match event {
            SocketEvent::Open => {
                // The header is the engine's first transmit.
                self.engine.connect();
                self.send_transmits();
            }
            SocketEvent::Binary(bytes) => {
                self.engine.handle_bytes(&bytes);
                self.pump();
            }
            SocketEvent::Text => self
                .ui
                .log("the server sent a text message, which the protocol never uses; ignored"),
            SocketEvent::Closed { code, reason } => {
                let reason = match (code, reason.is_empty()) {
                    (1006, _) => "the connection dropped".to_string(),
                    (_, true) => format!("closed (code {code})"),
                    (_, false) => format!("closed (code {code}): {reason}"),
                };
                self.on_closed(&reason);
            }
        }
    }

    /// Writes what the engine queued, one WebSocket message each.
    pub(crate) fn send_transmits(&mut self) {
        while let Some(bytes) = self.engine.poll_transmit() {
            if let Some(socket) = &self.socket
                && let Err(e) = socket.send(&bytes)
            {
                self.ui.log(&e);
            }
        }
    }

    /// Sends what the engine queued and applies its events to the model, carrying out their
    /// effects, until both are done.
    pub(crate) fn pump(&mut self) {
        loop {
            self.send_transmits();
            let Some(event) = self.engine.poll_event() else {
                break;
            };
            let ctx = Context {
                now: os::now_secs(),
                page_hidden: dom::page_hidden(),
                roster_pending: self.engine.roster_pending(),
                waiting: self.engine.outbox().len(),
            };
            for effect in self.model.apply(event, &ctx) {
                self.run(effect);
            }
        }
        // A change the engine no longer holds (the server named the pinned key again) is no
        // longer a warning: the engine is the one that knows.
        let ended: Vec<String> = (self.model.contact_warnings.iter())
            .filter(|w| self.engine.key_change(&w.alias) != Some(*w))
            .map(|w| w.alias.clone())
            .collect();
        for alias in ended {
            self.model.forget_warning(&alias);
        }
    }

    /// Brings a conversation in front of the user.
    pub(crate) fn open_conversation(&mut self, key: &PublicKey) {
        let focus = self.model.open_conversation(key, os::now_secs());
        self.run(focus);
    }

    /// Seals and sends the outgoing `line` holding `text`, written at `date`. Offline, the
    /// engine keeps it and sends it at the next login; either way the line learns the
    /// message's id, which the server's answers and receipts carry.
    pub(crate) fn send_line(&mut self, peer: &PublicKey, line: u64, text: &str, date: i64) {
        let contacts = &mut self.model.contacts;
        match self.engine.send_text(peer, text, &[], date) {
            Ok(sending) => {
                contacts.set_sent_id(peer, line, sending.id);
            }
            Err(e) => {
                contacts.set_delivery(peer, line, Delivery::Failed(e.to_string()));
            }
        }
        self.model.dirty = true;
    }
}

/// An engine for `secret` over WebSocket, pinned and claiming `alias` as saved.
pub(crate) fn new_engine(
    secret: &SecretKey,
    pinned: Option<PublicKey>,
    alias: Option<String>,
) -> Engine {
    let config = Config {
        pinned,
        alias,
        framing: Framing::Messages,
        rooms: true,
        pairs: true,
    };
    Engine::new(secret.clone(), config, os::random())
}

/// Receives every socket event (see [`crate::net::Deliver`]).
fn on_socket(generation: u64, event: SocketEvent) {
    with_app(|app| app.on_socket(generation, event));
}

/// Listens on the element with `id`, if the page has it.
pub(crate) fn on_id(id: &str, event: &str, handler: impl FnMut(Event) + 'static) {
    match dom::by_id::<EventTarget>(id) {
        Ok(target) => listen(&target, event, handler),
        Err(e) => dom::log_error(&e),
    }
}

/// A form's submit, without the page reload a form would do by itself.
pub(crate) fn on_submit(id: &str, action: fn(&mut App)) {
    on_id(id, "submit", move |e| {
        e.prevent_default();
        with_app(action);
    });
}

/// A click on a list item with a `data-key`, or Enter or Space on it (the items are
/// focusable), opens that user's conversation.
fn on_list_pick(id: &str, selector: &'static str, action: fn(&mut App, PublicKey)) {
    let pick = move |e: &Event| dom::closest(e, selector).and_then(|li| item_key(&li));
    on_id(id, "click", move |e| {
        if let Some(key) = pick(&e) {
            with_app(|app| action(app, key));
        }
    });
    on_id(id, "keydown", move |e| {
        let activate = e
            .dyn_ref::<KeyboardEvent>()
            .is_some_and(|k| k.key() == "Enter" || k.key() == " ");
        if activate && let Some(key) = pick(&e) {
            e.prevent_default();
            with_app(|app| action(app, key));
        }
    });
}

/// Connects the page's controls to the controller.
fn bind() {
    on_submit("alias-form", App::on_register);
    on_submit("contact-form", App::on_add_contact);
    on_submit("search-form", App::on_search);
    on_submit("composer-form", App::on_send);
    on_submit("import-form", App::on_import);
    App::bind_rooms();
    on_id("composer", "keydown", |e| {
        let Some(k) = e.dyn_ref::<KeyboardEvent>() else {
            return;
        };
        // Enter sends and Shift+Enter makes a new line; while an input method is composing
        // (Chinese, Japanese, ...), Enter belongs to it.
        if k.key() == "Enter" && !k.shift_key() && !k.is_composing() {
            e.prevent_default();
            with_app(App::on_send);
        }
    });
    on_list_pick("contacts", "li.contact", |app, key| {
        app.open_conversation(&key)
    });
    on_list_pick("search-results", "li[data-key]", App::open_user);
    on_list_pick("roster", "li[data-key]", App::open_user);
    on_id("requests", "click", |e| {
        let button = dom::closest(&e, "button[data-key]");
        if let Some(b) = button {
            let action = crate::requests_ui::RequestAction::of_class(&b.class_name());
            if let (Some(action), Some(key)) = (action, item_key(&b)) {
                with_app(|app| app.on_request_action(key, action));
            }
        } else if let Some(key) = dom::closest(&e, "li.request").and_then(|li| item_key(&li)) {
            with_app(|app| app.open_conversation(&key));
        }
    });
    on_id("banner-slot", "click", |e| {
        if dom::closest(&e, "#accept-server-key").is_some() {
            with_app(App::on_accept_server_key);
        } else if let Some(alias) = dom::closest(&e, ".trust-contact-key")
            .and_then(|button| button.get_attribute("data-alias"))
        {
            with_app(|app| app.on_trust_contact(&alias));
        }
    });
    on_id("export-button", "click", |_| {
        with_app(App::on_export_toggle)
    });
    on_id("notify-button", "click", |_| with_app(App::on_notify_click));
    on_id("reconnect-button", "click", |_| {
        with_app(App::reconnect_now)
    });
    if let Some(document) = dom::document() {
        listen(&document, "visibilitychange", |_| {
            with_app(|app| {
                app.model.contacts.set_visible(!dom::page_hidden());
                app.model.rooms.set_visible(!dom::page_hidden());
            })
        });
    }
    if let Some(window) = dom::window() {
        // A page left for another keeps running in the back/forward cache with its socket
        // open, so the server would think the user is still here (and keep relaying to a
        // page nobody sees instead of storing). Closing on `pagehide` and reconnecting on
        // `pageshow` is the browser's recommended pattern.
        listen(&window, "pagehide", |_| with_app(App::suspend));
        listen(&window, "pageshow", |_| {
            with_app(|app| {
                if app.is_suspended() {
                    app.reconnect_now();
                }
            })
        });
        // The browser knows when the network comes back; waiting out a 30-second backoff
        // then would only keep the user offline for nothing.
        listen(&window, "online", |_| {
            with_app(|app| {
                if matches!(app.model.conn, Conn::Retrying(_)) {
                    app.reconnect_now();
                }
            })
        });
    }
}
