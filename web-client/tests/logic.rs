//! The browser client's own logic, tested in the browser (`cargo test --target
//! wasm32-unknown-unknown` runs them in headless Chromium) and natively (`cargo test`:
//! `unsupported = test` makes each one a plain test there), since none of it touches the DOM.
//!
//! The protocol is the engine's and is tested in `flexim-session`; here the page's rules (the
//! conversations, the reconnect schedule, identity import) and the model that turns the
//! engine's events into page state and effects. The model tests drive a real engine against a
//! pretend server played by the protocol crate, as the page does, so what passes here works
//! with the real server.

use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use flexim_protocol::handshake::ServerHandshake;
use flexim_protocol::status;
use flexim_protocol::{
    Datum, HEADER, Link, MAX_BODY, Message, PublicKey, Roster, SecretKey, Status, User, frame,
};
use flexim_session::{Config, Delivery, Engine, Framing, Lookup, Random};
use flexim_web::model::{Conn, Context, Effect, Model};
use flexim_web::policy;
use flexim_web::policy::{BACKOFF_MAX_MS, Backoff, ImportError, parse_identity_import};
use flexim_web::state::{Contacts, Direction, HISTORY_LIMIT};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

// ----- helpers: a pretend server and the page's loop -----

/// A deterministic random source that never repeats a nonce (a 64-bit counter per call).
fn counter() -> Random {
    let mut n: u64 = 0;
    Box::new(move |buf: &mut [u8]| {
        n += 1;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = n.to_le_bytes()[i % 8] ^ (i as u8);
        }
    })
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes([seed; 32])
}

fn frame_of(datum: impl Into<Datum>) -> Vec<u8> {
    datum.into().to_frame().expect("test datums fit in a frame")
}

fn decode(bytes: &[u8]) -> Datum {
    let (kind, body) = frame::split_exact(bytes, MAX_BODY).expect("one whole frame");
    Datum::decode(kind, body).expect("a valid datum")
}

fn user(key: &PublicKey, aliases: &[&str], online: bool) -> User {
    User {
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        key: *key,
        last_seen: 0,
        online: Some(online),
    }
}

fn st(code: i8, payload: &str) -> Vec<u8> {
    frame_of(Status::new(code, payload))
}

fn st_id(code: i8, payload: &str, id: &str) -> Vec<u8> {
    frame_of(Status::new(code, payload).with_id(Some(id.to_string())))
}

/// A Message from `from` to `to`, sealed with the protocol crate as another client would.
fn sealed(from: &SecretKey, to: &PublicKey, text: &str, date: i64, flags: &[&str]) -> Message {
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let k = ConversationKey::derive(from, to).unwrap();
    let sender = from.public_key();
    let env = Envelope {
        sender: &sender,
        recipient: to,
        date,
        flags: &flags,
    };
    let mut nonce = [0u8; 24];
    nonce[0] = text.len() as u8; // different texts, different nonces
    nonce[1] = date as u8;
    Message {
        to: to.to_hex(),
        from: sender.to_hex(),
        flags: flags.clone(),
        date,
        msg: e2e::seal(&k, &env, text, nonce).unwrap(),
        id: None,
        ..Default::default()
    }
}

/// The page without its DOM: the engine and the model, and the effects the model asked for.
struct Page {
    /// The protocol.
    engine: Engine,
    /// The page's state.
    model: Model,
    /// What the server was sent, decoded.
    sent: Vec<Datum>,
    /// The effects that are the page's own (everything but requests to the engine).
    effects: Vec<Effect>,
    /// Whether the page is hidden.
    hidden: bool,
    /// The pretend server's end of the link, once a login brought it up.
    link: Option<Link>,
    /// The server's introduction as sent, for its end of the handshake.
    hello: Vec<u8>,
}

impl Page {
    fn new(me: &SecretKey, pinned: Option<PublicKey>, alias: Option<&str>) -> Page {
        let config = Config {
            pinned,
            alias: alias.map(str::to_string),
            framing: Framing::Messages,
            // These tests script the server for the page's own requests; rooms are the engine's.
            rooms: false,
            pairs: false,
        };
        let engine = Engine::new(me.clone(), config, counter());
        let model = Model::new(
            me.public_key(),
            Contacts::new(),
            alias.map(str::to_string),
            pinned,
        );
        Page {
            engine,
            model,
            sent: Vec::new(),
            effects: Vec::new(),
            hidden: false,
            link: None,
            hello: Vec::new(),
        }
    }

    /// What `app.rs` does after every socket event: transmits out, events through the model,
    /// the model's requests to the engine, until nothing is left; then, as `with_app` does
    /// after saving, the acknowledgements.
    fn pump(&mut self) {
        loop {
            while let Some(bytes) = self.engine.poll_transmit() {
                if bytes != HEADER {
                    let frame = self.opened(bytes);
                    self.sent.push(decode(&frame));
                }
            }
            let Some(event) = self.engine.poll_event() else {
                break;
            };
            let ctx = Context {
                now: 1_000,
                page_hidden: self.hidden,
                roster_pending: self.engine.roster_pending(),
                waiting: self.engine.outbox().len(),
            };
            for effect in self.model.apply(event, &ctx) {
                match effect {
                    Effect::AskRoster => drop(self.engine.roster()),
                    Effect::AskUser { query, purpose } => {
                        drop(self.engine.get_user(&query, purpose))
                    }
                    Effect::AskGhost => drop(self.engine.ghost()),
                    Effect::Acknowledge(id) => self.engine.acknowledge(&id),
                    other => self.effects.push(other),
                }
            }
        }
        self.engine.flush_acks();
        while let Some(bytes) = self.engine.poll_transmit() {
            let frame = self.opened(bytes);
            self.sent.push(decode(&frame));
        }
    }

    /// What the engine sent, opened with the pretend server's end of the link once it is up.
    fn opened(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        match &mut self.link {
            Some(link) => link.open(&bytes).expect("the engine's records open"),
            None => bytes,
        }
    }

    /// The server sends one frame: sealed once the link is up.
    fn receive(&mut self, bytes: &[u8]) {
        match &mut self.link {
            Some(link) => {
                let record = link.seal(bytes).unwrap();
                self.engine.handle_bytes(&record);
            }
            None => self.engine.handle_bytes(bytes),
        }
        self.pump();
    }

    fn take_sent(&mut self) -> Vec<Datum> {
        std::mem::take(&mut self.sent)
    }

    fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Plays the server's side of a login.
    fn log_in(&mut self, server: &SecretKey) {
        self.link = None;
        self.engine.connect();
        self.hello = frame_of(User {
            aliases: vec!["flexim".into()],
            key: server.public_key(),
            last_seen: 0,
            online: None,
        });
        self.receive(&self.hello.clone());
        if self.engine.is_holding_server_key() {
            return;
        }
        self.answer_challenge(server);
    }

    /// The rest of a login, from the AUTH the engine sent.
    fn answer_challenge(&mut self, server: &SecretKey) {
        let Some(Datum::Command(auth)) = self.take_sent().pop() else {
            panic!("no AUTH");
        };
        let (pending, challenge) =
            ServerHandshake::start(server, &self.hello, &auth, [7; 32], 5).unwrap();
        self.receive(&frame_of(challenge));
        let Some(Datum::AuthResponse(response)) = self.take_sent().pop() else {
            panic!("no AuthResponse");
        };
        let (client, link) = pending.finish(&response).unwrap();
        assert_eq!(client, self.engine.me().clone());
        self.link = Some(link);
        self.receive(&frame_of(user(&client, &[], true)));
    }

    /// Writes a line to `peer` and sends it, as the composer does: the line and the id.
    fn write(&mut self, peer: &PublicKey, text: &str) -> (u64, String) {
        let line = self.model.contacts.send(peer, text, 1000);
        let id = self.engine.send_text(peer, text, &[], 1000).unwrap().id;
        assert!(self.model.contacts.set_sent_id(peer, line, id.clone()));
        self.pump();
        (line, id)
    }

    fn state(&self, id: &str) -> Delivery {
        self.model
            .contacts
            .delivery_of(id)
            .cloned()
            .expect("the line is there")
    }
}

/// A page for `me`, logged in to `server`, its login traffic and effects taken.
fn logged_in(me: &SecretKey, server: &SecretKey) -> Page {
    let mut page = Page::new(me, None, None);
    page.log_in(server);
    assert_eq!(page.model.conn, Conn::Online);
    // The page asks for the roster at every login; answer it.
    assert!(
        page.take_sent()
            .iter()
            .any(|d| matches!(d, Datum::Command(c) if c.cmd == "ROSTER"))
    );
    page.receive(&frame_of(Roster { users: vec![] }));
    page.take_effects();
    page
}

/// The id lists of the ACK commands among `out`.
fn acks(out: &[Datum]) -> Vec<Vec<String>> {
    out.iter()
        .filter_map(|d| match d {
            Datum::Command(c) if c.cmd == "ACK" => Some(c.payload.clone()),
            _ => None,
        })
        .collect()
}

// ----- the page's own rules -----

#[wasm_bindgen_test(unsupported = test)]
fn unread_counts_only_what_the_user_is_not_looking_at() {
    let alice = key(1).public_key();
    let bob = key(2).public_key();
    let mut c = Contacts::new();
    c.receive(&alice, "one", 10, "a1".into());
    c.receive(&alice, "two", 11, "a2".into());
    assert_eq!(c.get(&alice).unwrap().unread, 2, "closed conversation");

    c.open(&alice, 12);
    assert_eq!(c.get(&alice).unwrap().unread, 0, "opening reads it");
    c.receive(&alice, "three", 13, "a3".into());
    assert_eq!(c.get(&alice).unwrap().unread, 0, "open and visible");

    c.receive(&bob, "hi", 14, "b1".into());
    assert_eq!(c.get(&bob).unwrap().unread, 1, "another conversation");

    c.set_visible(false);
    c.receive(&alice, "four", 15, "a4".into());
    c.receive_error(&alice, "does not open", 16);
    assert_eq!(
        c.get(&alice).unwrap().unread,
        2,
        "hidden tab, error lines count"
    );
    assert_eq!(c.total_unread(), 3);

    c.set_visible(true);
    assert_eq!(
        c.get(&alice).unwrap().unread,
        0,
        "back to the open conversation"
    );
    assert_eq!(c.get(&bob).unwrap().unread, 1, "others stay unread");
    assert_eq!(c.sorted()[0].key, alice, "most recent first");
}

#[wasm_bindgen_test(unsupported = test)]
fn history_is_bounded_and_deliveries_land_on_their_line() {
    let bob = key(2).public_key();
    let mut c = Contacts::new();
    let first = c.send(&bob, "first", 1);
    for i in 0..HISTORY_LIMIT as i64 + 10 {
        c.receive(&bob, "x", 2 + i, format!("id{i}"));
    }
    assert_eq!(c.get(&bob).unwrap().lines.len(), HISTORY_LIMIT);
    assert!(
        !c.set_delivery(&bob, first, Delivery::Stored),
        "trimmed away"
    );

    let line = c.send(&bob, "hello", 500);
    assert!(c.set_delivery(&bob, line, Delivery::Relayed));
    let last = c.get(&bob).unwrap().lines.last().unwrap();
    assert_eq!(last.dir, Direction::Out);
    assert_eq!(last.text, "hello");
    assert_eq!(last.delivery, Some(Delivery::Relayed));
}

#[wasm_bindgen_test(unsupported = test)]
fn contacts_survive_a_reload() {
    let bob = key(2).public_key();
    let carol = key(3).public_key();
    let mut c = Contacts::new();
    c.add(&bob, Some("bob"), 5);
    c.receive(&bob, "hi there\nsecond line", 6, "bob:6:abc".into());
    let waiting = c.send(&bob, "unanswered", 7);
    let done = c.send(&carol, "to carol", 8);
    c.set_delivery(&carol, done, Delivery::Failed("no-such-user (-8)".into()));
    c.set_online(&bob, true);

    let back = Contacts::from_json(&c.to_json()).unwrap();
    let b = back.get(&bob).unwrap();
    assert_eq!(b.name.as_deref(), Some("bob"));
    assert_eq!(b.unread, 1);
    assert!(!b.online, "presence is not saved: only the server knows it");
    assert_eq!(b.lines[0].text, "hi there\nsecond line");
    assert_eq!(
        b.lines[1].delivery,
        Some(Delivery::Sending),
        "the state is saved as it was"
    );
    assert_ne!(b.lines[1].id, 0, "lines get ids again");
    assert_eq!(
        back.get(&carol).unwrap().lines[0].delivery,
        Some(Delivery::Failed("no-such-user (-8)".into()))
    );
    assert_eq!(back.seen_ids().collect::<Vec<_>>(), vec!["bob:6:abc"]);
    let _ = waiting;
    // Without a saved copy in the outbox, a message that was never answered cannot be sent
    // again: it says so rather than "sending…" forever.
    let mut back = back;
    assert_eq!(back.settle_unsent(&Default::default()), 1);
    assert_eq!(
        back.get(&bob).unwrap().lines[1].delivery,
        Some(Delivery::Unconfirmed)
    );
    assert!(Contacts::from_json("not json").is_err());
    assert!(Contacts::from_json(r#"{"version":2,"contacts":[]}"#).is_err());
}

#[wasm_bindgen_test(unsupported = test)]
fn an_alias_that_moves_to_another_key_is_reported() {
    let bob = key(2).public_key();
    let mallory = key(9).public_key();
    let mut c = Contacts::new();
    assert!(c.add(&bob, Some("bob"), 1).created);
    let again = c.add(&bob, Some("Bob"), 2);
    assert!(!again.created);
    assert_eq!(again.alias_moved_from, None);
    assert_eq!(c.add(&mallory, Some("BOB"), 3).alias_moved_from, Some(bob));
    // Learning a name from the roster never overrides the user's own.
    c.learn_name(&bob, &["robert".into()]);
    assert_eq!(c.get(&bob).unwrap().name.as_deref(), Some("Bob"));
}

// ----- policy -----

#[wasm_bindgen_test(unsupported = test)]
fn backoff_doubles_from_half_a_second_to_thirty_and_resets() {
    let mut b = Backoff::new();
    let delays: Vec<u32> = (0..9).map(|_| b.next_delay_ms()).collect();
    assert_eq!(
        delays,
        [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    );
    assert_eq!(b.attempts(), 9);
    for _ in 0..100 {
        assert!(b.next_delay_ms() <= BACKOFF_MAX_MS);
    }
    b.reset();
    assert_eq!(b.next_delay_ms(), 500);
}

#[wasm_bindgen_test(unsupported = test)]
fn identity_import_accepts_64_hex_digits_only() {
    let secret = key(7);
    let hex = secret.to_hex();
    let ok = |text: &str| parse_identity_import(text).map(|s| s.public_key());
    assert_eq!(ok(&hex), Ok(secret.public_key()));
    assert_eq!(ok(&hex.to_uppercase()), Ok(secret.public_key()));
    let spaced = format!("  {}\n{}  ", &hex[..32], &hex[32..]);
    assert_eq!(
        ok(&spaced),
        Ok(secret.public_key()),
        "whitespace is ignored"
    );
    assert_eq!(ok(""), Err(ImportError::Empty));
    assert_eq!(ok("   \n"), Err(ImportError::Empty));
    assert_eq!(ok(&hex[..63]), Err(ImportError::Length(63)));
    assert_eq!(ok(&format!("{hex}00")), Err(ImportError::Length(66)));
    assert_eq!(ok(&format!("{}zz", &hex[..62])), Err(ImportError::NotHex));
    assert_eq!(ok(&format!("0x{}", &hex[..62])), Err(ImportError::NotHex));
    assert!(ImportError::Length(63).to_string().contains("64"));
}

#[wasm_bindgen_test(unsupported = test)]
fn notifications_for_flagged_messages_or_hidden_pages() {
    assert!(policy::should_notify(&["NOTIFY".into()], false));
    assert!(policy::should_notify(&[], true));
    assert!(!policy::should_notify(&["OTHER".into()], false));
}

// ----- answers and requests -----

// ----- the model -----

#[wasm_bindgen_test(unsupported = test)]
fn a_first_login_pins_the_server_and_asks_for_the_roster() {
    let server = key(1);
    let mut page = Page::new(&key(2), None, None);
    page.log_in(&server);
    let effects = page.take_effects();
    assert!(
        effects.contains(&Effect::StoreServerKey(server.public_key())),
        "{effects:?}"
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Log(t) if t.contains("logged in to flexim")))
    );
    assert_eq!(page.model.pinned, Some(server.public_key()));
    assert!(matches!(page.take_sent().as_slice(), [Datum::Command(c)] if c.cmd == "ROSTER"));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_changed_server_key_waits_for_the_user() {
    let (server, pinned) = (key(1), key(9).public_key());
    let mut page = Page::new(&key(2), Some(pinned), None);
    page.log_in(&server);
    assert_eq!(page.model.conn, Conn::AwaitingKey);
    assert_eq!(page.model.key_warning, Some((pinned, server.public_key())));
    assert!(
        page.take_sent().is_empty(),
        "nothing about this user goes out meanwhile"
    );
    // The user accepts: the login goes on and the new key is pinned.
    page.engine.accept_server_key();
    page.pump();
    page.answer_challenge(&server);
    assert_eq!(page.model.conn, Conn::Online);
    assert_eq!(page.model.key_warning, None);
    assert!(
        page.take_effects()
            .contains(&Effect::StoreServerKey(server.public_key()))
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_message_lands_in_its_conversation_and_is_acknowledged_after_the_save() {
    let (server, me, bob) = (key(1), key(2), key(3));
    let mut page = logged_in(&me, &server);
    let mut m = sealed(&bob, &me.public_key(), "hello", 50, &["NOTIFY"]);
    m.id = Some("m-1".into());
    page.receive(&frame_of(m.clone()));
    let contact = page
        .model
        .contacts
        .get(&bob.public_key())
        .expect("a new contact");
    assert_eq!(contact.lines[0].text, "hello");
    assert_eq!(contact.lines[0].dir, Direction::In);
    assert!(page.model.dirty, "worth saving");
    // A new correspondent is looked up for its alias; the flagged message notifies.
    let sent = page.take_sent();
    assert!(sent.iter().any(|d| matches!(d, Datum::Command(c) if c.cmd == "GETUSER" && c.payload == [bob.public_key().to_hex()])));
    assert_eq!(acks(&sent), [vec!["m-1".to_string()]]);
    assert!(
        page.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Notify { from, .. } if *from == bob.public_key()))
    );
    // The same message again (redelivered): not shown twice.
    page.receive(&st(status::OK, "alice"));
    page.receive(&frame_of(m));
    assert_eq!(
        page.model
            .contacts
            .get(&bob.public_key())
            .unwrap()
            .lines
            .len(),
        1
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn receipts_move_a_line_forward_to_delivered_stored_or_expired() {
    let (server, me) = (key(1), key(2));
    let bob = key(3).public_key();
    let mut page = logged_in(&me, &server);
    // Online recipient: 3 RELAYED, then 7 DELIVERED once Bob acknowledged it.
    let (_, online) = page.write(&bob, "to an online bob");
    assert_eq!(page.state(&online), Delivery::Sending);
    page.receive(&st_id(status::RELAYED, "relayed", &online));
    assert_eq!(page.state(&online), Delivery::Relayed);
    page.receive(&st_id(status::DELIVERED, "delivered", &online));
    assert_eq!(page.state(&online), Delivery::Delivered);
    // Offline recipient: 2 STORED; then several receipts in one (one ACK of Bob's).
    let (_, a) = page.write(&bob, "a");
    let (_, b) = page.write(&bob, "b");
    page.receive(&st_id(status::STORED, "stored", &a));
    page.receive(&st_id(status::STORED, "stored", &b));
    assert_eq!(
        (page.state(&a), page.state(&b)),
        (Delivery::Stored, Delivery::Stored)
    );
    page.receive(&frame_of(
        Status::new(status::DELIVERED, "delivered").with_ids(vec![a.clone(), b.clone()]),
    ));
    assert_eq!(
        (page.state(&a), page.state(&b)),
        (Delivery::Delivered, Delivery::Delivered)
    );
    // Relayed, then stored after all (8); stored, then expired unread (9).
    let (_, later) = page.write(&bob, "bob drops");
    page.receive(&st_id(status::RELAYED, "relayed", &later));
    page.receive(&st_id(status::STORED_LATER, "stored later", &later));
    assert_eq!(page.state(&later), Delivery::Stored);
    let (_, expired) = page.write(&bob, "bob never comes back");
    page.receive(&st_id(status::STORED, "stored", &expired));
    page.receive(&st_id(
        status::EXPIRED,
        "expired unread after 30 days",
        &expired,
    ));
    assert_eq!(page.state(&expired), Delivery::Expired);
    assert!(page.engine.outbox().is_empty());
    // The saved lines keep their states across a reload.
    let back = Contacts::from_json(&page.model.contacts.to_json()).unwrap();
    assert_eq!(back.delivery_of(&online), Some(&Delivery::Delivered));
    assert_eq!(back.delivery_of(&later), Some(&Delivery::Stored));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_refusal_fails_the_line_and_a_late_answer_moves_nothing_back() {
    let (server, me) = (key(1), key(2));
    let bob = key(3).public_key();
    let mut page = logged_in(&me, &server);
    let (_, full) = page.write(&bob, "into a full queue");
    page.receive(&st_id(status::QUEUE_FULL, "queue full", &full));
    let failed = page.state(&full);
    assert!(
        failed
            .label()
            .starts_with("failed: the recipient's queue is full"),
        "{failed:?}"
    );
    // Relayed, the connection drops, the copy sent again is overtaken by the receipt: the
    // copy's late RELAYED changes nothing.
    let (_, id) = page.write(&bob, "y");
    page.receive(&st_id(status::RELAYED, "relayed", &id));
    page.engine.disconnected();
    page.pump();
    page.log_in(&server);
    page.receive(&st_id(status::DELIVERED, "delivered", &id));
    page.receive(&st_id(status::RELAYED, "relayed", &id));
    assert_eq!(page.state(&id), Delivery::Delivered);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_relayed_line_that_the_server_did_not_keep_fails_and_is_saved_as_failed() {
    let (server, me) = (key(1), key(2));
    let bob = key(3).public_key();
    let mut page = logged_in(&me, &server);
    let (_, a) = page.write(&bob, "bob goes away");
    let (_, b) = page.write(&bob, "before reading these");
    page.receive(&st_id(status::RELAYED, "relayed", &a));
    page.receive(&st_id(status::RELAYED, "relayed", &b));
    // Bob's session ends before he reads them, and his queue has no room: one -24, unasked,
    // naming both. It answers nothing the page asked, so the page's next answer still fits.
    page.receive(&frame_of(
        Status::new(status::NOT_KEPT, "not kept for bob: their queue is full")
            .with_ids(vec![a.clone(), b.clone()]),
    ));
    for id in [&a, &b] {
        let failed = page.state(id);
        assert!(failed.label().starts_with("failed: not kept"), "{failed:?}");
        assert_eq!(failed.state(), "failed");
    }
    assert!(page.engine.outbox().is_empty(), "not sent again");
    let (_, c) = page.write(&bob, "later");
    page.receive(&st_id(status::STORED, "stored", &c));
    assert_eq!(page.state(&c), Delivery::Stored);
    // The saved lines keep the failure across a reload.
    let back = Contacts::from_json(&page.model.contacts.to_json()).unwrap();
    assert!(matches!(back.delivery_of(&a), Some(Delivery::Failed(_))));
}

#[wasm_bindgen_test(unsupported = test)]
fn another_session_makes_this_tab_take_over_and_a_takeover_pauses_it() {
    let mut page = logged_in(&key(2), &key(1));
    page.receive(&st(status::SESSION_EXISTS, "session exists"));
    assert!(matches!(page.take_sent().as_slice(), [Datum::Command(c)] if c.cmd == "GHOST"));
    page.receive(&st(status::GHOSTED, "ghosted"));
    assert!(
        page.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Log(t) if t.contains("active session")))
    );
    page.receive(&st(status::TAKEN_OVER, "taken over"));
    assert!(
        page.model.paused.is_some(),
        "reconnecting would only take it back"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn the_alias_is_saved_once_registered_and_forgotten_once_taken() {
    let server = key(1);
    let mut page = Page::new(&key(2), None, Some("alice"));
    page.log_in(&server);
    let sent = page.take_sent();
    assert!(
        sent.iter().any(
            |d| matches!(d, Datum::Command(c) if c.cmd == "REGISTER" && c.payload == ["alice"])
        )
    );
    page.take_effects();
    page.receive(&st(status::OK, "registered alice"));
    assert!(page.take_effects().contains(&Effect::AliasResult {
        text: "registered alice".into(),
        ok: true
    }));
    assert_eq!(page.model.my_aliases, ["alice"]);
    page.receive(&frame_of(Roster { users: vec![] }));
    // A new alias the user asks for, taken by someone else.
    page.engine.register("bob").unwrap();
    page.pump();
    page.receive(&st(
        status::ALIAS_TAKEN,
        "the alias bob belongs to someone else",
    ));
    assert!(
        page.take_effects().iter().any(
            |e| matches!(e, Effect::AliasResult { text, ok: false } if text.contains("taken"))
        )
    );
    assert_eq!(
        page.model.alias.as_deref(),
        Some("alice"),
        "the saved alias is kept"
    );
    // The saved alias refused at a later login (the server was reset and someone took it).
    page.engine.disconnected();
    page.log_in(&server);
    page.take_sent();
    page.take_effects();
    page.receive(&st(status::ALIAS_TAKEN, "taken"));
    assert!(page.take_effects().contains(&Effect::StoreAlias(None)));
    assert_eq!(page.model.alias, None);
    assert_eq!(
        page.engine.alias(),
        None,
        "not asked for at the next login either"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn presence_refreshes_the_roster_once_per_burst() {
    let (server, me) = (key(1), key(2));
    let (bob, carol) = (key(3).public_key(), key(4).public_key());
    let mut page = logged_in(&me, &server);
    page.receive(&st(status::PRESENCE_ONLINE, &bob.to_hex()));
    page.receive(&st(status::PRESENCE_ONLINE, &carol.to_hex()));
    let rosters = page
        .take_sent()
        .iter()
        .filter(|d| matches!(d, Datum::Command(c) if c.cmd == "ROSTER"))
        .count();
    assert_eq!(rosters, 1);
    page.receive(&frame_of(Roster {
        users: vec![
            user(&bob, &["bob"], true),
            user(&me.public_key(), &[], true),
        ],
    }));
    assert_eq!(page.model.roster.len(), 1, "without this user");
    assert!(
        page.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::ShowRoster(_)))
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn looking_up_a_contact_opens_the_conversation_or_says_why_not() {
    let (server, me) = (key(1), key(2));
    let bob = key(3).public_key();
    let mut page = logged_in(&me, &server);
    page.engine.get_user("Bob", Lookup::Contact).unwrap();
    page.pump();
    page.receive(&frame_of(user(&bob, &["bob"], true)));
    assert_eq!(page.model.contacts.open_key(), Some(&bob));
    assert_eq!(
        page.model.contacts.get(&bob).unwrap().name.as_deref(),
        Some("bob")
    );
    let effects = page.take_effects();
    assert!(
        effects.contains(&Effect::ClearContactInput) && effects.contains(&Effect::FocusComposer)
    );
    page.engine.get_user("nobody", Lookup::Contact).unwrap();
    page.pump();
    page.receive(&st(status::NO_SUCH_USER, "no user"));
    assert!(page.take_effects().contains(&Effect::ContactError(
        "Nobody is registered as “nobody”.".into()
    )));
}

#[wasm_bindgen_test(unsupported = test)]
fn what_the_page_saves_brings_back_the_outbox_and_the_seen_messages() {
    let (server, me, bob) = (key(1), key(2), key(3));
    let mut page = logged_in(&me, &server);
    let (_, waiting) = page.write(&bob.public_key(), "waiting");
    let mut m = sealed(&bob, &me.public_key(), "seen", 72, &[]);
    m.id = Some("b-1".into());
    page.receive(&frame_of(m.clone()));
    assert!(page.engine.take_storage_changed());
    let json = page.engine.saved().to_json(&me.public_key());
    let contacts = page.model.contacts.to_json();

    // A new page, as `app.rs` starts one: the contacts' seen keys and the saved delivery.
    let mut after = Page::new(&me, None, None);
    after.model.contacts = Contacts::from_json(&contacts).unwrap();
    for key in after
        .model
        .contacts
        .seen_ids()
        .map(str::to_string)
        .collect::<Vec<_>>()
    {
        after.engine.remember_seen(&key);
    }
    let (saved, _) = flexim_session::SavedDelivery::from_json(&json, &me.public_key()).unwrap();
    after.engine.restore(saved);
    after.log_in(&server);
    let resent: Vec<_> = after
        .take_sent()
        .into_iter()
        .filter_map(|d| match d {
            Datum::Message(m) => m.id,
            _ => None,
        })
        .collect();
    assert_eq!(resent, [waiting]);
    after.receive(&frame_of(m));
    let lines = after
        .model
        .contacts
        .get(&bob.public_key())
        .unwrap()
        .lines
        .len();
    assert_eq!(lines, 2, "the sent line and the received one, not the copy");
}

// ----- contacts' keys -----

#[wasm_bindgen_test(unsupported = test)]
fn a_contact_whose_key_changed_is_warned_about_and_blocked_until_trusted() {
    let (server, me) = (key(1), key(2));
    let (bob, mallory) = (key(3), key(9));
    let (old, new) = (bob.public_key(), mallory.public_key());
    // A first visit pins bob's key when the user starts a conversation with "bob"; the page
    // saves the pins in their text form, as `app.rs` does in localStorage.
    let mut first = logged_in(&me, &server);
    first.engine.get_user("bob", Lookup::Contact).unwrap();
    first.pump();
    first.receive(&frame_of(user(&old, &["bob"], true)));
    assert!(first.engine.take_pins_changed());
    let saved = first.engine.contact_pins().to_text();
    let contacts = first.model.contacts.to_json();

    // A later visit restores them; now the server names mallory's key for "bob".
    let mut page = logged_in(&me, &server);
    page.model.contacts = Contacts::from_json(&contacts).unwrap();
    let pins = flexim_session::ContactPins::from_text(&saved).unwrap();
    page.engine.restore_contact_pins(pins);
    page.engine.get_user("bob", Lookup::Contact).unwrap();
    page.pump();
    page.receive(&frame_of(user(&new, &["bob"], true)));
    let warning = page.model.warning_for("BOB").cloned().expect("a warning");
    assert_eq!((warning.pinned, warning.presented), (old, new));
    // No conversation opens under the alias, and the contact form says why.
    assert!(page.model.contacts.get(&new).is_none());
    assert!(page.take_effects().iter().any(|e| matches!(
        e,
        Effect::ContactError(text) if text.contains("different key")
    )));
    // Sending to bob's conversation, or to the new key, is blocked until the user decides.
    assert!(page.model.send_blocked(&old).is_some());
    assert!(page.model.send_blocked(&new).is_some());
    // A message from the new key is its own conversation, never named bob.
    page.receive(&frame_of(sealed(
        &mallory,
        &me.public_key(),
        "it's me",
        9,
        &[],
    )));
    page.receive(&frame_of(user(&new, &["bob"], true)));
    assert_eq!(page.model.contacts.get(&new).unwrap().name, None);
    assert_eq!(
        page.model.contacts.get(&old).unwrap().name.as_deref(),
        Some("bob")
    );

    // The user trusts the new key: the engine pins it, the alias moves to it.
    let accepted = page
        .engine
        .accept_contact_key("bob")
        .expect("a change to accept");
    assert_eq!(accepted, new);
    page.model.contact_key_accepted("bob", &accepted, 10);
    assert!(page.model.contact_warnings.is_empty());
    assert_eq!(
        page.model.contacts.get(&new).unwrap().name.as_deref(),
        Some("bob")
    );
    assert_eq!(page.model.contacts.get(&old).unwrap().name, None);
    assert_eq!(page.model.contacts.open_key(), Some(&new));
    assert!(page.model.send_blocked(&new).is_none());
    assert!(page.engine.take_pins_changed(), "the new pin is saved");
    assert!(page.engine.contact_pins().to_text().contains(&new.to_hex()));
}
