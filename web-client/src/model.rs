//! The page's model: what the engine's events mean for the page, as plain state and a list of
//! effects, with no DOM, no socket and no storage.
//!
//! [`Model::apply`] takes one [`Event`] and returns the [`Effect`]s the page must carry out (a
//! line in the activity log, an alias to save, a request to send, a notification). The effect
//! runner in `app.rs` does them; rendering reads the state. Because nothing here touches the
//! browser, the tests run every rule natively.

use flexim_protocol::keys::alias_key;
use flexim_protocol::status;
use flexim_protocol::{PublicKey, User};
use flexim_session::{Answer, Delivery, Event, Incoming, KeyChange, Lookup, PinCheck, Refusal};

use crate::policy;
use crate::state::Contacts;

/// Where the connection stands, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    /// Opening the socket, or in the handshake.
    Connecting,
    /// In the handshake, held until the user accepts a changed server key.
    AwaitingKey,
    /// Logged in.
    Online,
    /// Disconnected; reconnecting after this many milliseconds.
    Retrying(u32),
    /// Disconnected, not reconnecting by itself, for this reason.
    Stopped(String),
}

/// What [`Model::apply`] needs to know about the world besides the event.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Unix seconds now.
    pub now: i64,
    /// Whether the page is hidden (a background tab), which decides notifications.
    pub page_hidden: bool,
    /// Whether a ROSTER waits for its answer already, so a burst of presence notices asks once.
    pub roster_pending: bool,
    /// How many sent messages wait for a confirmation (the engine sends them again at login).
    pub waiting: usize,
}

/// Something the page must do because of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A line in the activity log.
    Log(String),
    /// The outcome of registering an alias, next to the alias form.
    AliasResult {
        /// What to say.
        text: String,
        /// Whether it went well.
        ok: bool,
    },
    /// A message under the new-conversation form (empty: clear it).
    ContactError(String),
    /// Empty the new-conversation input (the contact was added).
    ClearContactInput,
    /// Put the cursor in the composer (a conversation was opened).
    FocusComposer,
    /// Save the alias to claim at every login, or forget it.
    StoreAlias(Option<String>),
    /// Save the server key as the pin.
    StoreServerKey(PublicKey),
    /// Show [`Model::roster`], with this text when it is empty.
    ShowRoster(String),
    /// Show [`Model::search`], with this text when it is empty.
    ShowSearch(String),
    /// A note in place of the search results.
    SearchNote(String),
    /// A desktop notification for a message.
    Notify {
        /// The sender.
        from: PublicKey,
        /// The message.
        text: String,
    },
    /// Show [`Model::requests`].
    ShowRequests,
    /// Ask the server for the requests box.
    AskRequests,
    /// Ask this user to talk (a Request): the user started a conversation with them.
    AskToTalk(PublicKey),
    /// Ask the server for the roster.
    AskRoster,
    /// Ask the server for a room's member list (MEMBERS).
    AskMembers(flexim_protocol::conversation::RoomId),
    /// Invite this user into the room (claim a KeyPackage, then commit).
    Invite {
        /// The room.
        room: flexim_protocol::conversation::RoomId,
        /// Whom.
        key: PublicKey,
    },
    /// A message under the room's invite form (empty: clear it).
    RoomError(String),
    /// Look a user up.
    AskUser {
        /// The key or alias.
        query: String,
        /// Why.
        purpose: Lookup,
    },
    /// Take over from another session of this key (a tab the user looks at is the session
    /// they mean to use).
    AskGhost,
    /// The message with this id is processed (shown and, once saved, safe): acknowledge it.
    Acknowledge(String),
    /// The connection cannot go on: close it and reconnect later.
    Fail(String),
}

/// The page's state.
#[derive(Debug, Clone)]
pub struct Model {
    /// This user's key.
    pub me: PublicKey,
    /// Contacts and conversations.
    pub contacts: Contacts,
    /// The last ROSTER answer, without this user.
    pub roster: Vec<User>,
    /// The last SEARCH answer.
    pub search: Vec<User>,
    /// The strangers who asked to talk and are not answered yet, oldest first: shown apart
    /// from the conversations (`consent.rs`).
    pub requests: Vec<crate::state::Waiting>,
    /// This user's aliases, as of login and later registrations.
    pub my_aliases: Vec<String>,
    /// The alias saved to claim at every login.
    pub alias: Option<String>,
    /// The server key pinned in storage.
    pub pinned: Option<PublicKey>,
    /// The key the server presented on the latest connection.
    pub server_key: Option<PublicKey>,
    /// While set, the server presented `.1` although `.0` is pinned, and the user has not
    /// decided yet.
    pub key_warning: Option<(PublicKey, PublicKey)>,
    /// The contacts whose alias the server now names another key for than the pinned one,
    /// oldest first, until the user trusts the new key. Sending to them is blocked meanwhile
    /// ([`Model::send_blocked`]).
    pub contact_warnings: Vec<KeyChange>,
    /// The connection state.
    pub conn: Conn,
    /// Why reconnecting automatically is off (another tab took over), if it is.
    pub paused: Option<String>,
    /// Whether the contacts changed since they were last saved.
    pub dirty: bool,
    /// The rooms: their lines, unread counts and invitations (`rooms.rs`).
    pub rooms: crate::room_state::Rooms,
    /// Whether the rooms changed since they were last saved.
    pub rooms_dirty: bool,
    /// Invitations waiting for the lookup of the alias they name: (alias, room).
    pub pending_invites: Vec<(String, flexim_protocol::conversation::RoomId)>,
}

impl Model {
    /// The state at start-up.
    pub fn new(
        me: PublicKey,
        contacts: Contacts,
        alias: Option<String>,
        pinned: Option<PublicKey>,
    ) -> Model {
        Model {
            me,
            contacts,
            roster: Vec::new(),
            search: Vec::new(),
            requests: Vec::new(),
            my_aliases: alias.iter().cloned().collect(),
            alias,
            pinned,
            server_key: None,
            key_warning: None,
            contact_warnings: Vec::new(),
            conn: Conn::Connecting,
            paused: None,
            dirty: false,
            rooms: crate::room_state::Rooms::new(),
            rooms_dirty: false,
            pending_invites: Vec::new(),
        }
    }

    /// Brings a conversation in front of the user.
    pub fn open_conversation(&mut self, key: &PublicKey, now: i64) -> Effect {
        self.contacts.open(key, now);
        self.rooms.close();
        self.dirty = true;
        Effect::FocusComposer
    }

    /// What one event of the engine means for the page.
    pub fn apply(&mut self, event: Event, ctx: &Context) -> Vec<Effect> {
        match event {
            Event::ServerKey { key, check } => self.on_server_key(key, check),
            Event::LoggedIn { me, server } => self.on_logged_in(&me, &server, ctx.waiting),
            Event::ContactKeyChanged(change) => self.on_contact_key_changed(change),
            Event::LoginFailed(e) => {
                let reason = e.to_string();
                vec![
                    Effect::Log(format!("the connection failed: {reason}")),
                    Effect::Fail(reason),
                ]
            }
            Event::Message(m) => self.on_message(m, ctx),
            Event::Undecryptable {
                from,
                sender,
                date,
                reason,
            } => match sender {
                Some(key) => {
                    let date = if date > 0 { date } else { ctx.now };
                    self.contacts.receive_error(&key, &reason, date);
                    self.dirty = true;
                    Vec::new()
                }
                None => vec![Effect::Log(format!(
                    "a message from “{from}” arrived but could not be opened: {reason}"
                ))],
            },
            Event::Presence { key, online } => {
                self.contacts.set_online(&key, online);
                // The roster is the truth about presence; one refresh covers a burst.
                if ctx.roster_pending {
                    Vec::new()
                } else {
                    vec![Effect::AskRoster]
                }
            }
            Event::Answer { answer, .. } => self.on_answer(answer, ctx),
            Event::Receipt { id, delivery, .. } => self.on_delivery(&id, delivery),
            Event::SessionExists(_) => vec![
                Effect::Log("another session of this key was active; taking over".into()),
                Effect::AskGhost,
            ],
            Event::Notice(text) => vec![Effect::Log(text)],
            Event::Requested { from, .. } => self.on_requested(from),
            Event::Conversation(c) => self.on_conversation(c),
            Event::Closing {
                status: code,
                reason,
            } => self.on_closing(code, reason),
            Event::LinkBroken(e) => {
                let reason = format!(
                    "the encrypted link broke ({e}): someone on the network path may be tampering with the connection"
                );
                vec![Effect::Log(reason.clone()), Effect::Fail(reason)]
            }
            // The socket's own close event drives reconnecting.
            Event::Closed => Vec::new(),
            event @ (Event::RoomMessage(_)
            | Event::Invited { .. }
            | Event::RoomChanged { .. }
            | Event::RemovedFromRoom { .. }
            | Event::RoomMember { .. }) => self.on_room_event(event, ctx),
        }
    }

    fn on_server_key(&mut self, key: PublicKey, check: PinCheck) -> Vec<Effect> {
        self.server_key = Some(key);
        match check {
            PinCheck::Mismatch { pinned } => {
                self.key_warning = Some((pinned, key));
                self.conn = Conn::AwaitingKey;
                vec![Effect::Log(
                    "the server presents a different key than the pinned one".into(),
                )]
            }
            PinCheck::FirstUse => vec![Effect::Log(
                "first connection to this server: its key will be pinned".into(),
            )],
            PinCheck::Match => Vec::new(),
        }
    }

    fn on_logged_in(&mut self, me: &User, server: &User, waiting: usize) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.conn = Conn::Online;
        self.key_warning = None;
        self.server_key = Some(server.key);
        if self.pinned != Some(server.key) {
            self.pinned = Some(server.key);
            effects.push(Effect::StoreServerKey(server.key));
        }
        for alias in &me.aliases {
            self.add_my_alias(alias);
        }
        let name = server
            .aliases
            .first()
            .map(String::as_str)
            .unwrap_or("the server");
        effects.push(Effect::Log(format!("logged in to {name}")));
        effects.push(Effect::AskRoster);
        effects.push(Effect::AskRequests);
        // The engine has already sent these again, before anything else.
        match waiting {
            0 => {}
            1 => effects.push(Effect::Log("sending 1 unconfirmed message again".into())),
            n => effects.push(Effect::Log(format!(
                "sending {n} unconfirmed messages again"
            ))),
        }
        effects
    }

    fn on_message(&mut self, m: Incoming, ctx: &Context) -> Vec<Effect> {
        let mut effects = Vec::new();
        let known = self.contacts.get(&m.from).is_some();
        let line = self.contacts.receive(&m.from, &m.text, m.date, m.key);
        if !m.forward_secret {
            self.contacts.set_not_forward_secret(&m.from, line);
        }
        self.dirty = true;
        if m.request {
            effects.extend(self.add_request(m.from));
        }
        if !known {
            // A new correspondent: learn their alias for the contact list.
            effects.push(Effect::AskUser {
                query: m.from.to_hex(),
                purpose: Lookup::Refresh,
            });
        }
        effects.extend(after_shown(&m.flags, ctx, m.from, m.text, m.id));
        effects
    }

    fn on_answer(&mut self, answer: Answer, ctx: &Context) -> Vec<Effect> {
        if let Some(effects) = self.invite_lookup(&answer) {
            return effects;
        }
        match answer {
            Answer::Register { alias, result } => self.on_register(alias, result),
            Answer::Roster(Ok(users)) => self.on_roster(users),
            Answer::Roster(Err(r)) => {
                vec![Effect::Log(format!("the roster could not be loaded: {r}"))]
            }
            Answer::Search { text, result } => match result {
                Ok(users) => {
                    self.search = users;
                    vec![Effect::ShowSearch(format!(
                        "Nobody’s alias contains “{text}”."
                    ))]
                }
                Err(r) => vec![Effect::SearchNote(format!("Search failed: {r}"))],
            },
            Answer::User {
                query,
                purpose,
                result: Ok(user),
            } => self.on_user_found(&query, purpose, &user, ctx),
            Answer::User {
                query,
                purpose: Lookup::Contact,
                result: Err(r),
            } => vec![Effect::ContactError(if r.status == status::NO_SUCH_USER {
                format!("Nobody is registered as “{query}”.")
            } else {
                format!("Could not look up “{query}”: {r}")
            })],
            Answer::User { .. } => Vec::new(),
            room @ (Answer::Room { .. } | Answer::RoomMembers { .. } | Answer::KeyPackages(_)) => {
                self.on_room_answer(room, ctx)
            }
            Answer::Sent {
                delivery: None,
                result,
                ..
            } => vec![Effect::Log(format!(
                "the server's answer to a message made no sense ({}); it will be sent again \
                 after reconnecting",
                result.err().map(|r| r.to_string()).unwrap_or_default()
            ))],
            Answer::Sent {
                id,
                delivery: Some(delivery),
                ..
            } => self.on_delivery(&id, delivery),
            Answer::Ghost(Ok(_)) => vec![Effect::Log("this tab is now your active session".into())],
            Answer::Ghost(Err(r)) => {
                vec![Effect::Log(format!("could not take over the session: {r}"))]
            }
            Answer::Ack {
                count,
                result: Err(r),
            } => vec![Effect::Log(format!(
                "the server did not take the acknowledgement of {count} messages ({r}); it will \
                 deliver them again, and they will not be shown twice"
            ))],
            Answer::Ack { .. } | Answer::Offlines(_) => Vec::new(),
            Answer::Consent {
                action,
                who,
                result,
            } => self.on_consent(action, &who, result),
            Answer::Requests(result) => self.on_requests(result),
        }
    }

    fn on_register(
        &mut self,
        alias: String,
        result: Result<flexim_protocol::Status, Refusal>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        match result {
            Ok(_) => {
                if self.alias.as_deref() != Some(alias.as_str()) {
                    self.alias = Some(alias.clone());
                    effects.push(Effect::StoreAlias(Some(alias.clone())));
                }
                self.add_my_alias(&alias);
                effects.push(Effect::AliasResult {
                    text: format!("registered {alias}"),
                    ok: true,
                });
            }
            Err(r) => {
                let text = match r.status {
                    status::ALIAS_TAKEN => format!("“{alias}” is taken by someone else"),
                    status::BAD_ARGUMENT => format!("“{alias}” was refused: {}", r.reason),
                    _ => format!("could not register “{alias}”: {}", r.reason),
                };
                // An alias remembered from an earlier visit that is no longer this key's to
                // claim is forgotten, so that it is not asked for at every login (the engine
                // forgets it too).
                if self.alias.as_deref() == Some(alias.as_str())
                    && matches!(r.status, status::ALIAS_TAKEN | status::BAD_ARGUMENT)
                {
                    self.alias = None;
                    effects.push(Effect::StoreAlias(None));
                }
                effects.push(Effect::AliasResult { text, ok: false });
            }
        }
        effects
    }

    fn on_roster(&mut self, users: Vec<User>) -> Vec<Effect> {
        self.roster = users.into_iter().filter(|u| u.key != self.me).collect();
        for user in &self.roster {
            self.contacts
                .set_online(&user.key, user.online.unwrap_or(false));
            self.contacts.learn_name(&user.key, &user.aliases);
        }
        self.dirty = true;
        vec![Effect::ShowRoster(
            "Nobody else has used this server yet.".into(),
        )]
    }

    fn on_user_found(
        &mut self,
        query: &str,
        purpose: Lookup,
        user: &User,
        ctx: &Context,
    ) -> Vec<Effect> {
        self.contacts
            .set_online(&user.key, user.online.unwrap_or(false));
        self.dirty = true;
        let shown = self.learn_request_name(user);
        if purpose != Lookup::Contact {
            self.contacts.learn_name(&user.key, &user.aliases);
            return shown;
        }
        // The engine reported the change just before this answer: the key it names is not the
        // one the user knows by this alias, so no conversation opens under it.
        if self.warning_for(query).is_some() {
            return vec![Effect::ContactError(format!(
                "“{query}” now has a different key than the one you know: see the warning at                  the top. No conversation was opened."
            ))];
        }
        // Name the contact with the alias as registered (its case), matching what the user
        // typed.
        let name = user
            .aliases
            .iter()
            .find(|a| a.eq_ignore_ascii_case(query))
            .map(String::as_str)
            .unwrap_or(query);
        let added = self.contacts.add(&user.key, Some(name), ctx.now);
        let warning = match added.alias_moved_from {
            Some(old) => format!(
                "Warning: “{name}” now belongs to a different key than before (it was {}). \
                 Compare fingerprints with {name} before trusting this conversation.",
                old.fingerprint()
            ),
            None => String::new(),
        };
        // Starting a conversation asks to talk (and accepts the user, if they were waiting).
        let mut effects = vec![
            Effect::ContactError(warning),
            Effect::ClearContactInput,
            Effect::AskToTalk(user.key),
        ];
        if self.is_request(&user.key) {
            effects.extend(self.answer_request(&user.key));
        }
        effects.push(self.open_conversation(&user.key, ctx.now));
        effects
    }

    fn on_contact_key_changed(&mut self, change: KeyChange) -> Vec<Effect> {
        let text = format!(
            "the server says “{}” now has another key than the one pinned for it; sending to \
             it is blocked until you decide",
            change.alias
        );
        self.forget_warning(&change.alias);
        self.contact_warnings.push(change);
        vec![Effect::Log(text)]
    }

    /// Drops the warning about `alias` (any case): the user decided, or the engine has no
    /// change waiting for it any more (the server named the pinned key again).
    pub fn forget_warning(&mut self, alias: &str) {
        let name = alias_key(alias);
        self.contact_warnings
            .retain(|w| alias_key(&w.alias) != name);
    }

    /// The warning about `alias` (any case), if one waits for the user.
    pub fn warning_for(&self, alias: &str) -> Option<&KeyChange> {
        let name = alias_key(alias);
        self.contact_warnings
            .iter()
            .find(|w| alias_key(&w.alias) == name)
    }

    /// Why nothing may be sent to `peer` now, if so: a key change waits for the user's decision
    /// about the alias `peer` is known by, or about the alias the server now names `peer` for.
    pub fn send_blocked(&self, peer: &PublicKey) -> Option<&KeyChange> {
        let name = self.contacts.get(peer).and_then(|c| c.name.as_deref());
        self.contact_warnings.iter().find(|w| {
            w.pinned == *peer
                || w.presented == *peer
                || name.is_some_and(|n| alias_key(n) == alias_key(&w.alias))
        })
    }

    /// The user trusted `key`, the new key of `alias` (the engine has pinned it): the warning
    /// goes, the alias names that key's conversation (and no longer the old key's), which
    /// opens.
    pub fn contact_key_accepted(&mut self, alias: &str, key: &PublicKey, now: i64) -> Vec<Effect> {
        self.forget_warning(alias);
        self.contacts.forget_name(alias);
        self.contacts.add(key, Some(alias), now);
        vec![
            Effect::Log(format!("you trusted the new key of “{alias}”")),
            self.open_conversation(key, now),
        ]
    }

    fn on_delivery(&mut self, id: &str, delivery: Delivery) -> Vec<Effect> {
        // Late or repeated answers that would move a line backward change nothing.
        if self.contacts.set_delivery_by_id(id, delivery.clone()) {
            self.dirty = true;
        } else if self.rooms.set_delivery_by_id(id, delivery) {
            self.rooms_dirty = true;
        }
        Vec::new()
    }

    fn on_closing(&mut self, code: i8, reason: String) -> Vec<Effect> {
        if code == status::TAKEN_OVER {
            // Reconnecting would take the session back, and the other tab would take it back
            // again: the user decides with the reconnect button instead.
            self.paused = Some("this key is now in use in another tab or device".into());
        }
        vec![Effect::Log(format!(
            "the server is closing the connection: {reason}"
        ))]
    }

    /// Adds an alias to this user's list, once (aliases compare without case).
    fn add_my_alias(&mut self, alias: &str) {
        if !self
            .my_aliases
            .iter()
            .any(|a| a.eq_ignore_ascii_case(alias))
        {
            self.my_aliases.push(alias.to_string());
        }
    }
}

/// What follows a message (of a conversation or a room) put on the page: a notification when
/// the page is hidden and the flags allow one, and its acknowledgement, which goes out once
/// the page has saved it: on the page and in storage, it is processed.
pub(crate) fn after_shown(
    flags: &[String],
    ctx: &Context,
    from: PublicKey,
    text: String,
    id: Option<String>,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    if policy::should_notify(flags, ctx.page_hidden) {
        effects.push(Effect::Notify { from, text });
    }
    if let Some(id) = id {
        effects.push(Effect::Acknowledge(id));
    }
    effects
}
