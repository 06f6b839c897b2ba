//! The browser client's logic, tested in the browser (`cargo test --target
//! wasm32-unknown-unknown` runs them in headless Chromium) and natively (`cargo test`:
//! `unsupported = test` makes each one a plain test there), since none of it touches the DOM.
//!
//! The session tests play the server with the protocol crate itself: they issue real
//! challenges with `PendingChallenge`, check the client's answer, and seal messages with
//! `e2e::seal` as another client would, so what passes here talks to the real server.

use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use flexim_protocol::handshake::{PendingChallenge, parse_auth};
use flexim_protocol::status;
use flexim_protocol::{
    Command, Datum, HEADER, MAX_BODY, Message, PublicKey, Roster, SecretKey, Status, User, frame,
};
use flexim_web::policy::{
    self, BACKOFF_MAX_MS, Backoff, Dedupe, ImportError, PinCheck, check_pin, parse_identity_import,
};
use flexim_web::session::{Event, Lookup, PendingQueue, Request, Session, is_notice};
use flexim_web::state::{Contacts, Delivery, Direction, HISTORY_LIMIT};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

// ----- helpers: a pretend server -----

/// A deterministic random source that never repeats a nonce (a 64-bit counter per call).
fn counter() -> flexim_web::session::Random {
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

fn server_user(server: &SecretKey) -> User {
    User {
        aliases: vec!["flexim".into()],
        key: server.public_key(),
        last_seen: 0,
        online: None,
    }
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

/// The commands the session sent since the last call, decoded.
fn sent(session: &mut Session) -> Vec<Datum> {
    session.take_outgoing().iter().map(|f| decode(f)).collect()
}

/// Runs the whole handshake against `server` and returns the session's events up to and
/// including `LoggedIn`.
fn login(session: &mut Session, server: &SecretKey) -> Vec<Event> {
    assert_eq!(session.connect(), HEADER.to_vec());
    session.receive(&frame_of(server_user(server)));
    let out = sent(session);
    assert_eq!(out.len(), 1, "AUTH goes out right after the server's User");
    let Datum::Command(auth) = &out[0] else {
        panic!("expected AUTH, got {out:?}");
    };
    assert_eq!(auth.cmd, "AUTH");
    let (client, alias) = parse_auth(auth).expect("a well-formed AUTH");
    assert_eq!(client, *session.me());
    assert_eq!(
        alias, None,
        "the alias is registered with REGISTER, not in AUTH"
    );
    let mut rng = counter();
    let (pending, challenge) =
        PendingChallenge::issue(server, client, 1_700_000_000, 0, &mut rng).unwrap();
    session.receive(&frame_of(challenge));
    let out = sent(session);
    let Datum::AuthResponse(response) = &out[0] else {
        panic!("expected AuthResponse, got {out:?}");
    };
    assert_eq!(pending.verify(response, 1_700_000_001, 30), Ok(client));
    session.receive(&frame_of(user(&client, &[], true)));
    let events = session.take_events();
    assert!(
        events.iter().any(|e| matches!(e, Event::LoggedIn { .. })),
        "{events:?}"
    );
    assert!(session.is_ready());
    events
}

/// A session for `me`, logged in to `server`.
fn logged_in(me: &SecretKey, server: &SecretKey) -> Session {
    let mut session = Session::new(me.clone(), None, counter());
    login(&mut session, server);
    session
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
    counter()(&mut nonce);
    nonce[0] = text.len() as u8; // different texts, different nonces
    nonce[1] = date as u8;
    Message {
        to: to.to_hex(),
        from: sender.to_hex(),
        flags: flags.clone(),
        date,
        msg: e2e::seal(&k, &env, text, nonce).unwrap(),
        id: None,
    }
}

fn messages(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.text.as_str()),
            _ => None,
        })
        .collect()
}

// ----- unread counts -----

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
fn pin_check_detects_a_changed_server_key() {
    let s1 = key(1).public_key();
    let s2 = key(2).public_key();
    assert_eq!(check_pin(None, &s1), PinCheck::FirstUse);
    assert_eq!(check_pin(Some(&s1), &s1), PinCheck::Match);
    assert_eq!(check_pin(Some(&s1), &s2), PinCheck::Mismatch { pinned: s1 });
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
fn dedupe_remembers_a_bounded_window() {
    let mut d = Dedupe::new();
    assert!(d.insert("a".into()));
    assert!(!d.insert("a".into()), "a copy");
    assert!(d.contains("a"));
    for i in 0..policy::DEDUP_WINDOW {
        d.insert(format!("n{i}"));
    }
    assert_eq!(d.len(), policy::DEDUP_WINDOW);
    assert!(!d.contains("a"), "the oldest is forgotten first");
    let sender = key(1).public_key();
    let id = policy::message_id(&sender, 5, &"A".repeat(100));
    assert!(id.ends_with(&"A".repeat(44)) && !id.ends_with(&"A".repeat(45)));
}

#[wasm_bindgen_test(unsupported = test)]
fn notifications_for_flagged_messages_or_hidden_pages() {
    assert!(policy::should_notify(&["NOTIFY".into()], false));
    assert!(policy::should_notify(&[], true));
    assert!(!policy::should_notify(&["OTHER".into()], false));
}

// ----- answers and requests -----

#[wasm_bindgen_test(unsupported = test)]
fn pending_queue_is_first_in_first_out() {
    let mut q = PendingQueue::new();
    assert!(q.is_empty());
    q.push(Request::Roster);
    q.push(Request::Search { text: "bo".into() });
    q.push(Request::Ghost);
    assert_eq!(q.len(), 3);
    assert!(q.any(|r| matches!(r, Request::Search { .. })));
    assert_eq!(q.pop(), Some(Request::Roster));
    assert_eq!(q.pop(), Some(Request::Search { text: "bo".into() }));
    assert_eq!(q.take_all(), vec![Request::Ghost]);
    assert_eq!(q.pop(), None);
    for code in [10, -10, 5, 6, 7, 8, 9, -15, -17, -18] {
        assert!(is_notice(code), "{code}");
    }
    for code in [1, 2, 3, 4, -1, -7, -8, -9, -12, -13, -14, -16] {
        assert!(!is_notice(code), "{code}");
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn answers_go_to_their_requests_in_order_around_notices() {
    let server = key(1);
    let me = key(2);
    let bob = key(3).public_key();
    let mut s = logged_in(&me, &server);

    s.register("alice").unwrap();
    let hello = s.send_text(&bob, "hello", &[], 100).unwrap();
    s.search("bo").unwrap();
    s.get_user("carol", Lookup::Contact).unwrap();
    let again = s.send_text(&bob, "again", &[], 101).unwrap();
    let out = sent(&mut s);
    assert_eq!(out.len(), 5);
    let Datum::Message(m) = &out[1] else {
        panic!("expected the message second: {out:?}");
    };
    assert_eq!(m.to, bob.to_hex());
    assert_eq!(m.from, me.public_key().to_hex());
    assert!(m.flags.is_empty());
    assert_eq!(m.date, 100);
    assert_eq!(m.id.as_ref(), Some(&hello));
    assert_eq!(s.pending_len(), 5);

    // Answers, with unsolicited datums slipped in between that must not be taken for them.
    s.receive(&st(status::OK, "registered alice"));
    s.receive(&st(status::PRESENCE_ONLINE, &bob.to_hex()));
    s.receive(&frame_of(
        Status::new(status::STORED, "stored").with_id(Some(hello.clone())),
    ));
    s.receive(&st(status::DELIVERED_STORED, "delivered 2 stored messages"));
    s.receive(&frame_of(Roster {
        users: vec![user(&bob, &["bob"], true)],
    }));
    s.receive(&st(status::PRESENCE_OFFLINE, &bob.to_hex()));
    s.receive(&st(status::NO_SUCH_USER, "no such user"));
    s.receive(&frame_of(
        Status::new(status::SPOOF, "not you").with_id(Some(again.clone())),
    ));
    assert_eq!(s.pending_len(), 0);

    let events = s.take_events();
    let mut it = events.iter();
    assert!(matches!(it.next(), Some(Event::AliasRegistered { alias }) if alias == "alice"));
    assert!(matches!(it.next(), Some(Event::Presence { key, online: true }) if *key == bob));
    assert!(matches!(
        it.next(),
        Some(Event::Delivery { id, delivery: Delivery::Stored }) if *id == hello
    ));
    assert!(matches!(it.next(), Some(Event::Notice(t)) if t.contains("delivered 2")));
    assert!(matches!(
        it.next(),
        Some(Event::SearchResults { text, users }) if text == "bo" && users[0].key == bob
    ));
    assert!(matches!(
        it.next(),
        Some(Event::Presence { online: false, .. })
    ));
    assert!(matches!(
        it.next(),
        Some(Event::UserNotFound { query, purpose: Lookup::Contact, status: -8, .. }) if query == "carol"
    ));
    assert!(matches!(
        it.next(),
        Some(Event::Delivery { id, delivery: Delivery::Failed(reason) })
            if *id == again && reason.contains("spoof")
    ));
    assert!(it.next().is_none());
    assert!(
        s.outbox().is_empty(),
        "stored and refused: nothing to send again"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn alias_refusals_keep_their_code() {
    let server = key(1);
    let mut s = logged_in(&key(2), &server);
    s.register("bob").unwrap();
    s.register("1bad").unwrap();
    s.receive(&st(status::ALIAS_TAKEN, "alias taken"));
    s.receive(&st(status::BAD_ARGUMENT, "alias must start with a letter"));
    let events = s.take_events();
    assert!(matches!(
        &events[0],
        Event::AliasRefused { alias, status: -9, .. } if alias == "bob"
    ));
    assert!(matches!(
        &events[1],
        Event::AliasRefused { status: -12, reason, .. } if reason == "alias must start with a letter"
    ));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_garbled_answer_still_uses_up_its_request() {
    let server = key(1);
    let mut s = logged_in(&key(2), &server);
    s.roster().unwrap();
    s.register("alice").unwrap();
    // A Roster frame whose body is not a map.
    s.receive(&[4, 0, 1, 0xc0]);
    s.receive(&st(status::OK, "registered alice"));
    let events = s.take_events();
    assert!(matches!(&events[0], Event::Notice(t) if t.contains("roster")));
    assert!(matches!(&events[1], Event::AliasRegistered { .. }));
    // A frame that is not one frame at all is reported, not fatal.
    s.receive(&[6, 0, 9, 0x80]);
    assert!(s.is_ready());
}

#[wasm_bindgen_test(unsupported = test)]
fn session_exists_makes_this_tab_the_active_session() {
    let server = key(1);
    let mut s = logged_in(&key(2), &server);
    s.receive(&st(status::SESSION_EXISTS, "session exists"));
    let out = sent(&mut s);
    assert!(
        matches!(&out[..], [Datum::Command(Command { cmd, .. })] if cmd == "GHOST"),
        "{out:?}"
    );
    s.receive(&st(status::GHOSTED, "ghosted"));
    assert_eq!(s.pending_len(), 0);
    s.receive(&st(status::TAKEN_OVER, "taken over"));
    assert!(
        s.take_events()
            .iter()
            .any(|e| matches!(e, Event::Closing { status: -15, .. }))
    );
}

// ----- receiving -----

#[wasm_bindgen_test(unsupported = test)]
fn a_message_sealed_by_the_protocol_crate_opens_through_the_session() {
    let server = key(1);
    let me = key(2);
    let bob = key(3);
    let mut s = logged_in(&me, &server);
    let message = sealed(
        &bob,
        &me.public_key(),
        "HEY, LISTEN! ✓",
        1_539_890_190,
        &["NOTIFY"],
    );
    s.receive(&frame_of(message));
    let events = s.take_events();
    let [Event::Message(m)] = &events[..] else {
        panic!("expected one message, got {events:?}");
    };
    assert_eq!(m.from, bob.public_key());
    assert_eq!(m.text, "HEY, LISTEN! ✓");
    assert_eq!(m.flags, vec!["NOTIFY".to_string()]);
    assert_eq!(m.date, 1_539_890_190);
    assert!(s.take_outgoing().is_empty(), "a hex sender needs no lookup");
}

#[wasm_bindgen_test(unsupported = test)]
fn what_this_client_seals_the_peer_opens() {
    let server = key(1);
    let me = key(2);
    let bob = key(3);
    let mut s = logged_in(&me, &server);
    s.send_text(&bob.public_key(), "to bob", &[], 1234).unwrap();
    let out = sent(&mut s);
    let Datum::Message(m) = &out[0] else {
        panic!("{out:?}");
    };
    let k = ConversationKey::derive(&bob, &me.public_key()).unwrap();
    let env = Envelope {
        sender: &me.public_key(),
        recipient: &bob.public_key(),
        date: m.date,
        flags: &m.flags,
    };
    assert_eq!(e2e::open(&k, &env, &m.msg).unwrap(), "to bob");
    // And sealing refuses what the protocol refuses.
    assert!(s.send_text(&bob.public_key(), "", &[], 1).is_err());
    assert!(s.send_text(&PublicKey([0; 32]), "x", &[], 1).is_err());
    assert_eq!(s.outbox().len(), 1, "what could not be sealed is not kept");
}

#[wasm_bindgen_test(unsupported = test)]
fn copies_are_shown_once_and_forgeries_are_shown_as_errors() {
    let server = key(1);
    let me = key(2);
    let bob = key(3);
    let mut s = logged_in(&me, &server);
    let message = sealed(&bob, &me.public_key(), "once", 50, &[]);
    s.receive(&frame_of(message.clone()));
    s.receive(&frame_of(message.clone()));
    assert_eq!(messages(&s.take_events()), vec!["once"]);

    // Re-dated by the relay: the box no longer opens. Reported, never dropped.
    let mut redated = message.clone();
    redated.date = 51;
    s.receive(&frame_of(redated));
    let events = s.take_events();
    assert!(
        matches!(&events[..], [Event::Undecryptable { sender: Some(k), date: 51, .. }] if *k == bob.public_key()),
        "{events:?}"
    );
    // Not even base64.
    let mut garbage = message;
    garbage.msg = "!!!".into();
    s.receive(&frame_of(garbage));
    assert!(matches!(
        &s.take_events()[..],
        [Event::Undecryptable { .. }]
    ));
}

#[wasm_bindgen_test(unsupported = test)]
fn seen_ids_from_saved_history_suppress_redelivery_after_reload() {
    let server = key(1);
    let me = key(2);
    let bob = key(3);
    let message = sealed(&bob, &me.public_key(), "stored twice", 60, &[]);
    let mut s = logged_in(&me, &server);
    s.receive(&frame_of(message.clone()));
    let events = s.take_events();
    let [Event::Message(m)] = &events[..] else {
        panic!("{events:?}");
    };
    let mut contacts = Contacts::new();
    contacts.receive(&m.from, &m.text, m.date, m.id.clone());
    let saved = contacts.to_json();

    // A new page: the session starts from the saved history.
    let reloaded = Contacts::from_json(&saved).unwrap();
    let mut s2 = Session::new(me.clone(), None, counter());
    for id in reloaded.seen_ids() {
        s2.remember_seen(id);
    }
    login(&mut s2, &server);
    s2.receive(&frame_of(message));
    assert!(messages(&s2.take_events()).is_empty());
}

#[wasm_bindgen_test(unsupported = test)]
fn an_alias_sender_is_looked_up_and_order_is_kept() {
    let server = key(1);
    let me = key(2);
    let bob = key(3);
    let mut s = logged_in(&me, &server);
    let mut first = sealed(&bob, &me.public_key(), "first", 70, &[]);
    first.from = "Bob".into();
    let second = sealed(&bob, &me.public_key(), "second", 71, &[]);
    s.receive(&frame_of(first));
    s.receive(&frame_of(second));
    assert!(
        messages(&s.take_events()).is_empty(),
        "both wait for the lookup"
    );
    let out = sent(&mut s);
    assert!(
        matches!(&out[..], [Datum::Command(Command { cmd, payload })] if cmd == "GETUSER" && payload == &["Bob".to_string()]),
        "{out:?}"
    );
    s.receive(&frame_of(user(&bob.public_key(), &["bob"], true)));
    assert_eq!(messages(&s.take_events()), vec!["first", "second"]);

    // Known now: the next one opens without asking.
    let mut third = sealed(&bob, &me.public_key(), "third", 72, &[]);
    third.from = "BOB".into();
    s.receive(&frame_of(third));
    assert_eq!(messages(&s.take_events()), vec!["third"]);
    assert!(s.take_outgoing().is_empty());

    // An alias nobody has: the message is reported as unreadable.
    let mut unknown = sealed(&bob, &me.public_key(), "fourth", 73, &[]);
    unknown.from = "ghost".into();
    s.receive(&frame_of(unknown));
    s.receive(&st(status::NO_SUCH_USER, "no such user"));
    let events = s.take_events();
    assert!(
        matches!(&events[..], [Event::Undecryptable { from, sender: None, .. }] if from == "ghost"),
        "{events:?}"
    );
}

// ----- the handshake and the pin -----

#[wasm_bindgen_test(unsupported = test)]
fn a_changed_server_key_holds_the_login_until_accepted() {
    let old = key(1);
    let new = key(4);
    let me = key(2);
    let mut s = Session::new(me.clone(), Some(old.public_key()), counter());
    s.connect();
    s.receive(&frame_of(server_user(&new)));
    assert!(s.take_outgoing().is_empty(), "no AUTH to an unaccepted key");
    assert!(s.is_holding_server_key());
    let events = s.take_events();
    assert!(matches!(
        &events[..],
        [Event::ServerKey { key, check: PinCheck::Mismatch { pinned } }]
            if *key == new.public_key() && *pinned == old.public_key()
    ));

    s.accept_server_key();
    let out = sent(&mut s);
    assert!(matches!(&out[..], [Datum::Command(Command { cmd, .. })] if cmd == "AUTH"));
    assert!(!s.is_holding_server_key());

    // The next connection matches the newly accepted pin.
    s.disconnected();
    login(&mut s, &new);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_server_that_cannot_open_its_own_challenge_fails_the_login() {
    let real = key(1);
    let impostor = key(5);
    let me = key(2);
    let mut s = Session::new(me.clone(), None, counter());
    s.connect();
    // Announces the real server's key but seals the challenge with another key.
    s.receive(&frame_of(server_user(&real)));
    s.take_outgoing();
    let mut rng = counter();
    let (_, challenge) =
        PendingChallenge::issue(&impostor, me.public_key(), 1000, 0, &mut rng).unwrap();
    s.receive(&frame_of(challenge));
    assert!(s.take_outgoing().is_empty());
    assert!(
        s.take_events()
            .iter()
            .any(|e| matches!(e, Event::Failed(_)))
    );
    assert!(!s.is_ready());
}

// ----- delivery that loses nothing -----

/// A Status about the message `id`, as the server sends answers and receipts.
fn st_id(code: i8, payload: &str, id: &str) -> Vec<u8> {
    frame_of(Status::new(code, payload).with_id(Some(id.to_string())))
}

/// A Message from `from` to `to` carrying `id`.
fn sealed_with_id(from: &SecretKey, to: &PublicKey, text: &str, date: i64, id: &str) -> Message {
    Message {
        id: Some(id.to_string()),
        ..sealed(from, to, text, date, &[])
    }
}

/// Writes a line to `peer` and sends it, as the page does: returns the line and the id.
fn write(s: &mut Session, c: &mut Contacts, peer: &PublicKey, text: &str) -> (u64, String) {
    let line = c.send(peer, text, 1000);
    let id = s.send_text(peer, text, &[], 1000).unwrap();
    assert!(c.set_sent_id(peer, line, id.clone()));
    (line, id)
}

/// Applies the session's events to the conversations as the page does; returns them.
fn apply(s: &mut Session, c: &mut Contacts) -> Vec<Event> {
    let events = s.take_events();
    for event in &events {
        if let Event::Delivery { id, delivery } = event {
            c.set_delivery_by_id(id, delivery.clone());
        }
    }
    events
}

fn state(c: &Contacts, id: &str) -> Delivery {
    c.delivery_of(id).cloned().expect("the line is there")
}

/// The id lists of the ACK commands among `out`, and whether anything else was sent.
fn acks(out: &[Datum]) -> Vec<Vec<String>> {
    out.iter()
        .map(|d| match d {
            Datum::Command(Command { cmd, payload }) if cmd == "ACK" => payload.clone(),
            other => panic!("expected only ACKs, got {other:?}"),
        })
        .collect()
}

/// The ids of the Messages among `out`, in order.
fn message_ids(out: &[Datum]) -> Vec<String> {
    out.iter()
        .filter_map(|d| match d {
            Datum::Message(m) => m.id.clone(),
            _ => None,
        })
        .collect()
}

#[wasm_bindgen_test(unsupported = test)]
fn every_message_carries_a_fresh_random_id() {
    let server = key(1);
    let me = key(2);
    let bob = key(3).public_key();
    let mut s = logged_in(&me, &server);
    let ids: Vec<String> = (0..3)
        .map(|i| s.send_text(&bob, &format!("m{i}"), &[], 10).unwrap())
        .collect();
    let out = sent(&mut s);
    assert_eq!(message_ids(&out), ids, "the id returned is the id sent");
    for id in &ids {
        assert_eq!(id.len(), 32, "16 random bytes in hex: {id}");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "lowercase hex: {id}"
        );
        assert_eq!(status::validate_id(id), Ok(()));
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "every message has its own id");
    assert_eq!(
        s.outbox().ids().collect::<Vec<_>>(),
        ids,
        "kept until confirmed"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn receipts_move_a_message_forward_to_delivered_or_stored() {
    let server = key(1);
    let me = key(2);
    let bob = key(3).public_key();
    let mut s = logged_in(&me, &server);
    let mut c = Contacts::new();

    // Online recipient: 3 RELAYED, then 7 DELIVERED once Bob acknowledged it.
    let (_, online) = write(&mut s, &mut c, &bob, "to an online bob");
    assert_eq!(state(&c, &online), Delivery::Sending);
    assert_eq!(Delivery::Sending.label(), "sending…");
    s.receive(&st_id(status::RELAYED, "relayed", &online));
    apply(&mut s, &mut c);
    assert_eq!(state(&c, &online), Delivery::Relayed);
    assert_eq!(Delivery::Relayed.label(), "sent");
    assert!(s.outbox().contains(&online), "relayed is not confirmed yet");
    s.receive(&st_id(status::DELIVERED, "delivered", &online));
    apply(&mut s, &mut c);
    assert_eq!(state(&c, &online), Delivery::Delivered);
    assert_eq!(Delivery::Delivered.label(), "delivered ✓");
    assert!(s.outbox().is_empty(), "a receipt confirms it");

    // Offline recipient: 2 STORED confirms at once; 7 follows once Bob has logged in.
    let (_, offline) = write(&mut s, &mut c, &bob, "to an offline bob");
    s.receive(&st_id(status::STORED, "stored", &offline));
    apply(&mut s, &mut c);
    assert_eq!(state(&c, &offline), Delivery::Stored);
    assert_eq!(Delivery::Stored.label(), "stored");
    assert!(s.outbox().is_empty(), "stored is durable: confirmed");
    s.receive(&st_id(status::DELIVERED, "delivered", &offline));
    apply(&mut s, &mut c);
    assert_eq!(state(&c, &offline), Delivery::Delivered);

    // Relayed, but Bob's connection ended before he acknowledged: 8 STORED_LATER.
    let (_, later) = write(&mut s, &mut c, &bob, "bob drops");
    s.receive(&st_id(status::RELAYED, "relayed", &later));
    s.receive(&st_id(status::STORED_LATER, "stored later", &later));
    apply(&mut s, &mut c);
    assert_eq!(state(&c, &later), Delivery::Stored);
    assert!(s.outbox().is_empty());
    assert_eq!(s.pending_len(), 0, "receipts answer nothing");

    // Stored, but Bob never came back before the server's retention ran out: 9 EXPIRED.
    let (_, expired) = write(&mut s, &mut c, &bob, "bob never comes back");
    s.receive(&st_id(status::STORED, "stored", &expired));
    s.receive(&st_id(
        status::EXPIRED,
        "expired unread after 30 days",
        &expired,
    ));
    apply(&mut s, &mut c);
    assert_eq!(state(&c, &expired), Delivery::Expired);
    assert_eq!(Delivery::Expired.label(), "expired unread");
    assert!(
        !c.set_delivery_by_id(&expired, Delivery::Delivered),
        "final"
    );
    // Without an id, EXPIRED counts this user's own messages that expired: a notice.
    s.receive(&st(
        status::EXPIRED,
        "2 stored messages expired unread after 30 days",
    ));
    assert!(matches!(
        &s.take_events()[..],
        [Event::Notice(t)] if t.contains("2 stored messages expired")
    ));

    // The saved lines keep their states across a reload.
    let back = Contacts::from_json(&c.to_json()).unwrap();
    assert_eq!(state(&back, &online), Delivery::Delivered);
    assert_eq!(state(&back, &later), Delivery::Stored);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_refusal_fails_the_message_for_good_and_says_why() {
    let server = key(1);
    let me = key(2);
    let bob = key(3).public_key();
    let mut s = logged_in(&me, &server);
    let mut c = Contacts::new();
    let (_, id) = write(&mut s, &mut c, &bob, "into a full queue");
    s.receive(&st_id(status::QUEUE_FULL, "queue full", &id));
    apply(&mut s, &mut c);
    let failed = state(&c, &id);
    assert!(
        matches!(&failed, Delivery::Failed(reason) if reason.contains("queue is full")),
        "{failed:?}"
    );
    assert_eq!(failed.state(), "failed");
    assert!(
        failed
            .label()
            .starts_with("failed: the recipient's queue is full")
    );
    assert!(s.outbox().is_empty(), "a refusal is final");
    s.disconnected();
    login(&mut s, &server);
    assert!(s.take_outgoing().is_empty(), "nothing is sent again");
}

#[wasm_bindgen_test(unsupported = test)]
fn acks_follow_processing_and_copies_are_shown_once_but_acked() {
    let server = key(1);
    let me = key(2);
    let bob = key(3);
    let carol = key(4);
    let mut s = logged_in(&me, &server);
    let message = sealed_with_id(&bob, &me.public_key(), "only once", 50, "m-1");
    s.receive(&frame_of(message.clone()));
    assert_eq!(messages(&s.take_events()), vec!["only once"]);
    assert!(
        s.take_outgoing().is_empty(),
        "no ACK before the page has processed the message"
    );
    s.flush_acks();
    assert_eq!(acks(&sent(&mut s)), vec![vec!["m-1".to_string()]]);
    s.receive(&st(status::OK, "acknowledged 1"));
    assert!(s.take_events().is_empty());
    assert_eq!(
        s.pending_len(),
        0,
        "the ACK's answer is numbered like any other"
    );

    // Redelivered byte for byte (the ACK was lost), or sealed again with the same id: not
    // shown, but acknowledged again, or the server would deliver it forever.
    s.receive(&frame_of(message.clone()));
    let mut resealed = sealed_with_id(&bob, &me.public_key(), "only once!", 50, "m-1");
    resealed.date = 51;
    s.receive(&frame_of(resealed));
    assert!(
        messages(&s.take_events()).is_empty(),
        "copies are not shown"
    );
    s.flush_acks();
    assert_eq!(
        acks(&sent(&mut s)),
        vec![vec!["m-1".to_string()]],
        "one ACK per wake-up, each id once"
    );
    s.receive(&st(status::OK, "acknowledged 1"));

    // The same id from someone else is another message.
    s.receive(&frame_of(sealed_with_id(
        &carol,
        &me.public_key(),
        "carol's m-1",
        52,
        "m-1",
    )));
    // A box that never opens is reported once and acknowledged every time.
    let mut broken = sealed_with_id(&bob, &me.public_key(), "broken", 53, "bad-1");
    broken.msg = "!!!".into();
    s.receive(&frame_of(broken.clone()));
    s.receive(&frame_of(broken));
    // Without an id there is nothing to acknowledge.
    s.receive(&frame_of(sealed(&bob, &me.public_key(), "no id", 54, &[])));
    let events = s.take_events();
    assert_eq!(messages(&events), vec!["carol's m-1", "no id"]);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Undecryptable { .. }))
            .count(),
        1
    );
    s.flush_acks();
    assert_eq!(
        acks(&sent(&mut s)),
        vec![vec!["m-1".to_string(), "bad-1".to_string()]]
    );
    s.receive(&st(status::OK, "acknowledged 2"));

    // A refused ACK is reported; the copies that follow are recognised.
    s.receive(&frame_of(sealed_with_id(
        &bob,
        &me.public_key(),
        "x",
        55,
        "m-2",
    )));
    s.take_events();
    s.flush_acks();
    sent(&mut s);
    s.receive(&st(status::BAD_ARGUMENT, "bad id"));
    assert!(
        matches!(&s.take_events()[..], [Event::Notice(t)] if t.contains("acknowledgement")),
        "a refused ACK is reported"
    );

    // Processed but not acknowledged when the connection dropped: the server delivers it
    // again at the next login, where it is recognised and acknowledged.
    s.receive(&frame_of(sealed_with_id(
        &bob,
        &me.public_key(),
        "y",
        56,
        "m-3",
    )));
    assert_eq!(messages(&s.take_events()), vec!["y"]);
    s.disconnected();
    s.flush_acks();
    assert!(
        s.take_outgoing().is_empty(),
        "nothing goes out while disconnected"
    );
    login(&mut s, &server);
    s.flush_acks();
    assert!(s.take_outgoing().is_empty(), "the old ids were dropped");
    s.receive(&frame_of(sealed_with_id(
        &bob,
        &me.public_key(),
        "y",
        56,
        "m-3",
    )));
    assert!(messages(&s.take_events()).is_empty());
    s.flush_acks();
    assert_eq!(acks(&sent(&mut s)), vec![vec!["m-3".to_string()]]);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_message_waiting_for_its_sender_lookup_is_acked_once_opened() {
    let server = key(1);
    let me = key(2);
    let bob = key(3);
    let mut s = logged_in(&me, &server);
    let mut message = sealed_with_id(&bob, &me.public_key(), "from an alias", 60, "a-1");
    message.from = "bob".into();
    s.receive(&frame_of(message));
    sent(&mut s); // the GETUSER
    s.flush_acks();
    assert!(s.take_outgoing().is_empty(), "not processed yet");
    s.receive(&frame_of(user(&bob.public_key(), &["bob"], true)));
    assert_eq!(messages(&s.take_events()), vec!["from an alias"]);
    s.flush_acks();
    assert_eq!(acks(&sent(&mut s)), vec![vec!["a-1".to_string()]]);
    s.receive(&st(status::OK, "acknowledged 1"));

    // A lookup that failed for a passing reason: reported, but not acknowledged, so that the
    // server delivers it again at the next login, when it may open.
    let mut passing = sealed_with_id(&bob, &me.public_key(), "later", 61, "a-2");
    passing.from = "robert".into();
    s.receive(&frame_of(passing));
    sent(&mut s);
    s.receive(&st(status::INTERNAL, "storage failure"));
    assert!(matches!(
        &s.take_events()[..],
        [Event::Undecryptable { sender: None, .. }]
    ));
    s.flush_acks();
    assert!(s.take_outgoing().is_empty(), "not acknowledged");

    // Nobody has the alias: it never opens, so it is acknowledged.
    let mut never = sealed_with_id(&bob, &me.public_key(), "never", 62, "a-3");
    never.from = "nobody".into();
    s.receive(&frame_of(never));
    sent(&mut s);
    s.receive(&st(status::NO_SUCH_USER, "no such user"));
    assert!(matches!(
        &s.take_events()[..],
        [Event::Undecryptable { sender: None, .. }]
    ));
    s.flush_acks();
    assert_eq!(acks(&sent(&mut s)), vec![vec!["a-3".to_string()]]);
}

#[wasm_bindgen_test(unsupported = test)]
fn many_acks_are_split_into_bounded_batches() {
    let server = key(1);
    let me = key(2);
    let bob = key(3);
    let mut s = logged_in(&me, &server);
    let n = flexim_web::session::ACK_BATCH + 3;
    for i in 0..n {
        let id = format!("n{i}");
        s.receive(&frame_of(sealed_with_id(
            &bob,
            &me.public_key(),
            &format!("message {i}"),
            100 + i as i64,
            &id,
        )));
    }
    assert_eq!(messages(&s.take_events()).len(), n);
    s.flush_acks();
    let batches = acks(&sent(&mut s));
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![flexim_web::session::ACK_BATCH, 3]
    );
    assert_eq!(
        batches[1].last().map(String::as_str),
        Some(&*format!("n{}", n - 1))
    );
    assert_eq!(s.pending_len(), 2, "each ACK expects its answer");
}

#[wasm_bindgen_test(unsupported = test)]
fn unconfirmed_messages_are_sent_again_in_order_with_the_same_bytes() {
    let server = key(1);
    let me = key(2);
    let bob = key(3).public_key();
    let mut s = logged_in(&me, &server);
    let mut c = Contacts::new();
    let mut frames = std::collections::HashMap::new();
    let mut send = |s: &mut Session, c: &mut Contacts, text: &str| {
        let (_, id) = write(s, c, &bob, text);
        let out = s.take_outgoing();
        if let [frame] = &out[..] {
            frames.insert(id.clone(), frame.clone());
        }
        id
    };
    let stored = send(&mut s, &mut c, "stored");
    let relayed = send(&mut s, &mut c, "relayed");
    let refused = send(&mut s, &mut c, "refused");
    let delivered = send(&mut s, &mut c, "delivered");
    let relayed_again = send(&mut s, &mut c, "relayed again");
    let unanswered = send(&mut s, &mut c, "unanswered");
    s.receive(&st_id(status::STORED, "stored", &stored));
    s.receive(&st_id(status::RELAYED, "relayed", &relayed));
    s.receive(&st_id(status::QUEUE_FULL, "queue full", &refused));
    s.receive(&st_id(status::RELAYED, "relayed", &delivered));
    s.receive(&st_id(status::DELIVERED, "delivered", &delivered));
    s.receive(&st_id(status::RELAYED, "relayed", &relayed_again));
    apply(&mut s, &mut c);
    // Answers go to the messages in order: the last one is still unanswered.
    assert_eq!(state(&c, &relayed_again), Delivery::Relayed);
    assert_eq!(state(&c, &unanswered), Delivery::Sending);
    s.disconnected();

    // Written while offline: kept, sent after the older ones.
    let offline = send(&mut s, &mut c, "written offline");
    assert!(
        !frames.contains_key(&offline),
        "nothing goes out while offline"
    );
    let (_, offline_frame) = s
        .outbox()
        .iter()
        .map(|e| (e.id.clone(), e.frame.clone()))
        .find(|(id, _)| *id == offline)
        .unwrap();
    frames.insert(offline.clone(), offline_frame);

    login(&mut s, &server);
    s.register("alice").unwrap(); // what the page sends on login comes after
    let out = s.take_outgoing();
    let expected = [&relayed, &relayed_again, &unanswered, &offline];
    assert_eq!(out.len(), expected.len() + 1);
    for (frame, id) in out.iter().zip(expected) {
        assert_eq!(frame, &frames[id], "{id} is sent again byte for byte");
    }
    assert!(matches!(decode(&out[4]), Datum::Command(Command { cmd, .. }) if cmd == "REGISTER"));
    // Sent again, a relayed message stays relayed: it never moves backward.
    assert_eq!(state(&c, &relayed), Delivery::Relayed);
    assert_eq!(state(&c, &unanswered), Delivery::Sending);

    // The new connection's answers, in order.
    s.receive(&st_id(status::STORED, "stored", &relayed));
    s.receive(&st_id(status::RELAYED, "relayed", &relayed_again));
    s.receive(&st_id(status::RELAYED, "relayed", &unanswered));
    s.receive(&st_id(status::STORED_LATER, "stored later", &unanswered));
    s.receive(&st_id(status::STORED, "stored", &offline));
    s.receive(&st(status::OK, "registered alice"));
    apply(&mut s, &mut c);
    assert_eq!(state(&c, &stored), Delivery::Stored);
    assert_eq!(state(&c, &relayed), Delivery::Stored);
    assert!(matches!(state(&c, &refused), Delivery::Failed(_)));
    assert_eq!(state(&c, &delivered), Delivery::Delivered);
    assert_eq!(state(&c, &relayed_again), Delivery::Relayed);
    assert_eq!(state(&c, &unanswered), Delivery::Stored);
    assert_eq!(state(&c, &offline), Delivery::Stored);
    assert_eq!(
        s.outbox().ids().collect::<Vec<_>>(),
        vec![relayed_again.as_str()]
    );
    assert_eq!(s.pending_len(), 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_delivery_state_never_moves_backward() {
    use Delivery::*;
    let failed = || Failed("refused".into());
    let order = [Sending, Relayed, Stored, Delivered];
    for (i, from) in order.iter().enumerate() {
        for (j, to) in order.iter().enumerate() {
            assert_eq!(from.can_become(to), j > i, "{from:?} -> {to:?}");
        }
    }
    assert!(Sending.can_become(&failed()) && Relayed.can_become(&failed()));
    assert!(!Stored.can_become(&failed()) && !Delivered.can_become(&failed()));
    for to in order.iter().chain([&failed()]) {
        assert!(!failed().can_become(to), "failed is final");
    }
    assert!(
        Unconfirmed.can_become(&Delivered),
        "a receipt can still come"
    );

    // In the conversations: a late RELAYED (the answer to a copy sent again) changes nothing.
    let server = key(1);
    let me = key(2);
    let bob = key(3).public_key();
    let mut s = logged_in(&me, &server);
    let mut c = Contacts::new();
    let (line, id) = write(&mut s, &mut c, &bob, "x");
    assert!(c.set_delivery_by_id(&id, Delivered));
    assert!(!c.set_delivery_by_id(&id, Relayed));
    assert!(!c.set_delivery_by_id(&id, Stored));
    assert!(!c.set_delivery(&bob, line, failed()));
    assert_eq!(state(&c, &id), Delivered);
    s.receive(&st_id(status::DELIVERED, "delivered", &id));
    apply(&mut s, &mut c);

    // In the session: relayed, then the connection drops and the copy sent again is
    // overtaken by the receipt; the copy's answer is stale and reports nothing.
    let (_, id) = write(&mut s, &mut c, &bob, "y");
    s.receive(&st_id(status::RELAYED, "relayed", &id));
    apply(&mut s, &mut c);
    s.disconnected();
    login(&mut s, &server);
    assert_eq!(message_ids(&sent(&mut s)), vec![id.clone()]);
    s.receive(&st_id(status::DELIVERED, "delivered", &id));
    s.receive(&st_id(status::RELAYED, "relayed", &id));
    let events = apply(&mut s, &mut c);
    assert_eq!(
        events,
        vec![Event::Delivery {
            id: id.clone(),
            delivery: Delivered
        }]
    );
    assert_eq!(state(&c, &id), Delivered);
    assert_eq!(s.pending_len(), 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn the_outbox_and_the_seen_ids_survive_a_reload() {
    use flexim_web::outbox::SavedDelivery;
    let server = key(1);
    let me = key(2);
    let bob = key(3);
    let mut s = logged_in(&me, &server);
    assert!(!s.take_storage_changed());
    let stored = s.send_text(&bob.public_key(), "stored", &[], 70).unwrap();
    let waiting = s.send_text(&bob.public_key(), "waiting", &[], 71).unwrap();
    let original = s.take_outgoing();
    s.receive(&st_id(status::STORED, "stored", &stored));
    let incoming = sealed_with_id(&bob, &me.public_key(), "seen", 72, "b-1");
    s.receive(&frame_of(incoming.clone()));
    s.take_events();
    assert!(s.take_storage_changed(), "sent and seen: worth saving");
    assert!(!s.take_storage_changed());
    let json = s.saved().to_json(&me.public_key());

    // A new page.
    let (saved, dropped) = SavedDelivery::from_json(&json, &me.public_key()).unwrap();
    assert_eq!(dropped, 0);
    let mut s2 = Session::new(me.clone(), None, counter());
    s2.restore(saved);
    assert_eq!(
        s2.outbox().ids().collect::<Vec<_>>(),
        vec![waiting.as_str()]
    );
    login(&mut s2, &server);
    assert_eq!(
        s2.take_outgoing(),
        vec![original[1].clone()],
        "the same bytes"
    );
    s2.receive(&frame_of(incoming));
    assert!(
        messages(&s2.take_events()).is_empty(),
        "seen before the reload"
    );
    s2.flush_acks();
    assert_eq!(acks(&sent(&mut s2)), vec![vec!["b-1".to_string()]]);

    // Another identity's saved state is not this one's to send.
    let (other, _) = SavedDelivery::from_json(&json, &bob.public_key()).unwrap();
    assert!(other.outbox.is_empty() && other.seen.is_empty());
    // A damaged entry is dropped, not sent.
    let damaged = json.replacen("\"frame\":\"03", "\"frame\":\"06", 1);
    assert_ne!(damaged, json);
    let (saved, dropped) = SavedDelivery::from_json(&damaged, &me.public_key()).unwrap();
    assert_eq!((saved.outbox.len(), dropped), (0, 1));
    assert!(SavedDelivery::from_json("{", &me.public_key()).is_err());
    assert_eq!(flexim_web::outbox::unhex("0aFf"), Some(vec![10, 255]));
    assert_eq!(flexim_web::outbox::unhex("+f"), None);
    assert_eq!(flexim_web::outbox::unhex("abc"), None);
}
