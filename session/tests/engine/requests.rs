//! Requests and answers: one answer per datum, in order, whatever notices come in between.

use flexim_protocol::status;
use flexim_protocol::{Datum, Roster, Status};
use flexim_session::{Answer, Delivery, Event, Lookup};

use crate::kit::*;

#[test]
fn answers_go_to_their_requests_in_order_around_notices() {
    let server = key(1);
    let me = key(2);
    let bob = key(3).public_key();
    let mut e = logged_in(&me, &server);

    let register = e.register("alice").unwrap();
    let hello = e.send_text(&bob, "hello", &[], 100).unwrap();
    let search = e.search("bo").unwrap();
    let lookup = e.get_user("carol", Lookup::Contact).unwrap();
    let again = e.send_text(&bob, "again", &[], 101).unwrap();
    let out = sent(&mut e);
    assert_eq!(out.len(), 5);
    let Datum::Message(m) = &out[1] else {
        panic!("expected the message second: {out:?}");
    };
    assert_eq!(
        (m.to.as_str(), m.from.as_str()),
        (bob.to_hex().as_str(), me.public_key().to_hex().as_str())
    );
    assert_eq!((m.date, m.id.as_ref()), (100, Some(&hello.id)));
    assert_eq!(e.pending_len(), 5);

    // Answers, with unsolicited datums slipped in between that must not be taken for them.
    e.handle_bytes(&st(status::OK, "registered alice"));
    e.handle_bytes(&st(status::PRESENCE_ONLINE, &bob.to_hex()));
    e.handle_bytes(&st_id(status::STORED, "stored", &hello.id));
    e.handle_bytes(&st(status::DELIVERED_STORED, "delivered 2 stored messages"));
    e.handle_bytes(&frame_of(Roster {
        users: vec![user(&bob, &["bob"], true)],
    }));
    e.handle_bytes(&st(status::PRESENCE_OFFLINE, &bob.to_hex()));
    e.handle_bytes(&st(status::NO_SUCH_USER, "no such user"));
    e.handle_bytes(&st_id(status::SPOOF, "not you", &again.id));
    assert_eq!(e.pending_len(), 0);

    let evs = events(&mut e);
    let mut it = evs.iter();
    assert!(
        matches!(it.next(), Some(Event::Answer { request, answer: Answer::Register { alias, result: Ok(_) } })
        if *request == register && alias == "alice")
    );
    assert!(matches!(it.next(), Some(Event::Presence { key, online: true }) if *key == bob));
    assert!(
        matches!(it.next(), Some(Event::Answer { request, answer: Answer::Sent { id, delivery: Some(Delivery::Stored), result: Ok(s), late: false } })
        if Some(*request) == hello.request && *id == hello.id && s.status == status::STORED)
    );
    assert!(matches!(it.next(), Some(Event::Notice(t)) if t.contains("delivered 2")));
    assert!(
        matches!(it.next(), Some(Event::Answer { request, answer: Answer::Search { text, result: Ok(users) } })
        if *request == search && text == "bo" && users[0].key == bob)
    );
    assert!(matches!(
        it.next(),
        Some(Event::Presence { online: false, .. })
    ));
    assert!(
        matches!(it.next(), Some(Event::Answer { request, answer: Answer::User { query, purpose: Lookup::Contact, result: Err(r) } })
        if *request == lookup && query == "carol" && r.status == -8)
    );
    assert!(
        matches!(it.next(), Some(Event::Answer { answer: Answer::Sent { id, delivery: Some(Delivery::Failed(reason)), result: Err(r), .. }, .. })
        if *id == again.id && reason.contains("spoof") && r.status == status::SPOOF)
    );
    assert!(it.next().is_none());
    assert!(
        e.outbox().is_empty(),
        "stored and refused: nothing to send again"
    );
    // What the search taught: bob's alias and presence (updated by the notice after it).
    assert_eq!(e.resolve_cached("Bob"), Some(bob));
    assert_eq!(e.cached_user(&bob).and_then(|u| u.online), Some(false));
}

#[test]
fn a_garbled_answer_still_uses_up_its_request() {
    let mut e = logged_in(&key(2), &key(1));
    let roster = e.roster().unwrap();
    let register = e.register("alice").unwrap();
    sent(&mut e);
    // A Roster frame whose body is not a map.
    e.handle_bytes(&[4, 0, 1, 0xc0]);
    e.handle_bytes(&st(status::OK, "registered alice"));
    let evs = events(&mut e);
    assert!(
        matches!(&evs[0], Event::Answer { request, answer: Answer::Roster(Err(r)) } if *request == roster && r.status == 0)
    );
    assert!(
        matches!(&evs[1], Event::Answer { request, answer: Answer::Register { result: Ok(_), .. } } if *request == register)
    );
    // A message that is not one frame at all is reported, not fatal.
    e.handle_bytes(&[6, 0, 9, 0x80]);
    assert!(matches!(events(&mut e).as_slice(), [Event::Notice(t)] if t.contains("garbled")));
    assert!(e.is_ready());
}

#[test]
fn an_answer_to_nothing_is_reported_and_shifts_nothing() {
    let mut e = logged_in(&key(2), &key(1));
    e.handle_bytes(&st(status::OK, "what?"));
    assert!(
        matches!(events(&mut e).as_slice(), [Event::Notice(t)] if t.contains("answer to nothing"))
    );
    let ghost = e.ghost().unwrap();
    e.handle_bytes(&st(status::GHOSTED, "ghosted"));
    assert!(
        matches!(events(&mut e).as_slice(), [Event::Answer { request, answer: Answer::Ghost(Ok(_)) }] if *request == ghost)
    );
}

#[test]
fn another_session_and_the_server_closing_are_reported_for_the_application_to_decide() {
    let mut e = logged_in(&key(2), &key(1));
    e.handle_bytes(&st(status::SESSION_EXISTS, "session exists"));
    // The engine does not take over by itself: a browser tab does, a listener may not.
    assert!(sent(&mut e).is_empty());
    assert!(matches!(events(&mut e).as_slice(), [Event::SessionExists(s)] if s.status == 5));
    for code in [status::TAKEN_OVER, status::SHUTTING_DOWN, status::TOO_SLOW] {
        e.handle_bytes(&st(code, "bye"));
        assert!(
            matches!(events(&mut e).as_slice(), [Event::Closing { status, reason }] if *status == code && reason.contains("bye"))
        );
    }
    e.disconnected();
    assert!(matches!(events(&mut e).as_slice(), [Event::Closed]));
    assert!(e.roster().is_err(), "no requests without a connection");
}

#[test]
fn requests_lost_with_a_connection_do_not_take_the_next_connections_answers() {
    let server = key(1);
    let mut e = logged_in(&key(2), &server);
    e.roster().unwrap();
    e.search("x").unwrap();
    e.disconnected();
    events(&mut e);
    login(&mut e, &server);
    let ghost = e.ghost().unwrap();
    e.handle_bytes(&frame_of(Status::new(status::GHOSTED, "ghosted")));
    assert!(
        matches!(events(&mut e).as_slice(), [Event::Answer { request, answer: Answer::Ghost(Ok(_)) }] if *request == ghost)
    );
}
