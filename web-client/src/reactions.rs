//! How the page reacts to what the session reports: messages into conversations, answers
//! into the page, presence into the contact list, notices into the activity log.

use flexim_protocol::User;
use flexim_protocol::status;

use crate::app::{App, Conn};
use crate::dom;
use crate::policy::{self, PinCheck};
use crate::session::{Event as SessionEvent, Lookup};
use crate::storage;

impl App {
    /// Updates the page for one event of the session.
    pub fn on_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::ServerKey { key, check } => {
                self.server_key = Some(key);
                match check {
                    PinCheck::Mismatch { pinned } => {
                        self.key_warning = Some((pinned, key));
                        self.conn = Conn::AwaitingKey;
                        self.ui
                            .log("the server presents a different key than the pinned one");
                    }
                    PinCheck::FirstUse => self
                        .ui
                        .log("first connection to this server: its key will be pinned"),
                    PinCheck::Match => {}
                }
            }
            SessionEvent::LoggedIn { me, server } => self.on_logged_in(me, server),
            SessionEvent::Message(incoming) => {
                let known = self.contacts.get(&incoming.from).is_some();
                self.contacts
                    .receive(&incoming.from, &incoming.text, incoming.date, incoming.id);
                self.dirty = true;
                if !known {
                    // A new correspondent: learn their alias for the contact list.
                    let _ = self
                        .session
                        .get_user(&incoming.from.to_hex(), Lookup::Refresh);
                }
                if policy::should_notify(&incoming.flags, dom::page_hidden()) {
                    self.notify(&incoming.from, &incoming.text);
                }
            }
            SessionEvent::Undecryptable {
                from,
                sender,
                date,
                reason,
            } => match sender {
                Some(key) => {
                    let date = if date > 0 { date } else { dom::now_secs() };
                    self.contacts.receive_error(&key, &reason, date);
                    self.dirty = true;
                }
                None => self.ui.log(&format!(
                    "a message from “{from}” arrived but could not be opened: {reason}"
                )),
            },
            SessionEvent::Presence { key, online } => {
                self.contacts.set_online(&key, online);
                // The roster is the truth about presence; one refresh covers a burst.
                if !self.session.roster_pending() {
                    let _ = self.session.roster();
                }
            }
            SessionEvent::AliasRegistered { alias } => {
                if self.alias.as_deref() != Some(alias.as_str()) {
                    if let Err(e) = self.store.set(storage::ALIAS, &alias) {
                        self.ui
                            .log(&format!("the alias could not be remembered: {e}"));
                    }
                    self.alias = Some(alias.clone());
                }
                if !self
                    .my_aliases
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&alias))
                {
                    self.my_aliases.push(alias.clone());
                }
                self.ui
                    .set_alias_result(&format!("registered {alias}"), true);
            }
            SessionEvent::AliasRefused {
                alias,
                status: code,
                reason,
            } => {
                let text = match code {
                    status::ALIAS_TAKEN => format!("“{alias}” is taken by someone else"),
                    status::BAD_ARGUMENT => format!("“{alias}” was refused: {reason}"),
                    _ => format!("could not register “{alias}”: {reason}"),
                };
                // An alias remembered from an earlier visit that is no longer this key's
                // to claim is forgotten, so that it is not asked for at every login.
                if self.alias.as_deref() == Some(alias.as_str())
                    && matches!(code, status::ALIAS_TAKEN | status::BAD_ARGUMENT)
                {
                    self.alias = None;
                    self.store.remove(storage::ALIAS);
                }
                self.ui.set_alias_result(&text, false);
            }
            SessionEvent::Roster(users) => {
                let me = *self.session.me();
                self.roster = users.into_iter().filter(|u| u.key != me).collect();
                for user in &self.roster {
                    self.contacts
                        .set_online(&user.key, user.online.unwrap_or(false));
                    self.contacts.learn_name(&user.key, &user.aliases);
                }
                self.dirty = true;
                self.ui.show_users(
                    &self.ui.roster,
                    &self.roster,
                    &me,
                    "Nobody else has used this server yet.",
                );
            }
            SessionEvent::SearchResults { text, users } => {
                self.search = users;
                self.ui.show_users(
                    &self.ui.search_results,
                    &self.search,
                    self.session.me(),
                    &format!("Nobody’s alias contains “{text}”."),
                );
            }
            SessionEvent::SearchFailed { reason, .. } => self
                .ui
                .show_list_note(&self.ui.search_results, &format!("Search failed: {reason}")),
            SessionEvent::UserFound {
                query,
                purpose,
                user,
            } => self.on_user_found(&query, purpose, &user),
            SessionEvent::UserNotFound {
                query,
                purpose,
                status: code,
                reason,
            } => {
                if purpose == Lookup::Contact {
                    let text = if code == status::NO_SUCH_USER {
                        format!("Nobody is registered as “{query}”.")
                    } else {
                        format!("Could not look up “{query}”: {reason}")
                    };
                    self.ui.set_contact_error(&text);
                }
            }
            SessionEvent::Delivery { id, delivery } => {
                // Late or repeated answers that would move a line backward change nothing.
                if self.contacts.set_delivery_by_id(&id, delivery) {
                    self.dirty = true;
                }
            }
            SessionEvent::Notice(text) => self.ui.log(&text),
            SessionEvent::Closing {
                status: code,
                reason,
            } => {
                self.ui
                    .log(&format!("the server is closing the connection: {reason}"));
                if code == status::TAKEN_OVER {
                    // Reconnecting would take the session back, and the other tab would take
                    // it back again: the user decides with the reconnect button instead.
                    self.paused = Some("this key is now in use in another tab or device".into());
                }
            }
            SessionEvent::Failed(reason) => {
                self.ui.log(&format!("the connection failed: {reason}"));
                self.on_closed(&reason);
            }
        }
    }

    fn on_logged_in(&mut self, me: User, server: User) {
        self.conn = Conn::Online;
        self.backoff.reset();
        self.key_warning = None;
        self.server_key = Some(server.key);
        if self.pinned != Some(server.key) {
            match self.store.set(storage::SERVER_KEY, &server.key.to_hex()) {
                Ok(()) => self.ui.log("the server's key is pinned"),
                Err(e) => self
                    .ui
                    .log(&format!("the server's key could not be pinned: {e}")),
            }
            self.pinned = Some(server.key);
        }
        for alias in &me.aliases {
            if !self
                .my_aliases
                .iter()
                .any(|a| a.eq_ignore_ascii_case(alias))
            {
                self.my_aliases.push(alias.clone());
            }
        }
        self.ui.log(&format!(
            "logged in to {}",
            server
                .aliases
                .first()
                .map(String::as_str)
                .unwrap_or("the server")
        ));
        // Registering again is harmless ("registered" again) and repairs an alias lost on a
        // server that was reset.
        if let Some(alias) = self.alias.clone() {
            let _ = self.session.register(&alias);
        }
        let _ = self.session.roster();
        // The session has already sent these again, before anything else.
        match self.session.outbox().len() {
            0 => {}
            1 => self.ui.log("sending 1 unconfirmed message again"),
            n => self
                .ui
                .log(&format!("sending {n} unconfirmed messages again")),
        }
    }

    fn on_user_found(&mut self, query: &str, purpose: Lookup, user: &User) {
        self.contacts
            .set_online(&user.key, user.online.unwrap_or(false));
        match purpose {
            Lookup::Contact => {
                // Name the contact with the alias as registered (its case), matching what
                // the user typed.
                let name = user
                    .aliases
                    .iter()
                    .find(|a| a.eq_ignore_ascii_case(query))
                    .map(String::as_str)
                    .unwrap_or(query);
                let added = self.contacts.add(&user.key, Some(name), dom::now_secs());
                self.contacts
                    .set_online(&user.key, user.online.unwrap_or(false));
                match added.alias_moved_from {
                    Some(old) => self.ui.set_contact_error(&format!(
                        "Warning: “{name}” now belongs to a different key than before (it was {}). \
                         Compare fingerprints with {name} before trusting this conversation.",
                        old.fingerprint()
                    )),
                    None => self.ui.set_contact_error(""),
                }
                self.ui.contact_input.set_value("");
                self.open_conversation(&user.key);
            }
            Lookup::Refresh | Lookup::Sender => {
                self.contacts.learn_name(&user.key, &user.aliases);
            }
        }
        self.dirty = true;
    }
}
