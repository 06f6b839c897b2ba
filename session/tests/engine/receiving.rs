//! Receiving: opening, senders named by alias, copies, and acknowledgements.

use flexim_protocol::status;
use flexim_protocol::{Datum, Message};
use flexim_session::{ACK_BATCH, Event};

use crate::kit::*;

/// Delivers `m` to `e` as the server would.
fn deliver(e: &mut Client, m: &Message) {
    e.handle_bytes(&frame_of(m.clone()));
}

/// Acknowledges everything reported in `evs` and returns the ACKs that went out.
fn process(e: &mut Client, evs: &[Event]) -> Vec<Vec<String>> {
    for ev in evs {
        if let Event::Message(m) = ev
            && let Some(id) = &m.id
        {
            e.acknowledge(id);
        }
    }
    e.flush_acks();
    acks(&sent(e))
}

#[test]
fn a_message_sealed_by_the_protocol_crate_opens_with_every_field() {
    let (server, me, bob) = (key(1), key(2), key(3));
    let mut e = logged_in(&me, &server);
    let m = sealed(
        &bob,
        &me.public_key(),
        "hello there",
        1_700_000_000,
        Some("b1"),
    );
    deliver(&mut e, &m);
    let evs = events(&mut e);
    let [Event::Message(got)] = evs.as_slice() else {
        panic!("{evs:?}");
    };
    assert_eq!(got.from, bob.public_key());
    assert_eq!(got.from_text, bob.public_key().to_hex());
    assert_eq!(got.to, me.public_key().to_hex());
    assert_eq!(
        (got.date, got.text.as_str(), got.id.as_deref()),
        (1_700_000_000, "hello there", Some("b1"))
    );
    assert!(got.key.starts_with(&bob.public_key().to_hex()));
}

#[test]
fn what_one_engine_seals_another_opens() {
    let server = key(1);
    let (alice, bob) = (key(2), key(3));
    let mut a = logged_in(&alice, &server);
    let mut b = logged_in(&bob, &server);
    let flags = vec!["NOTIFY".to_string()];
    a.send_text(&bob.public_key(), "über 🎉", &flags, 42)
        .unwrap();
    for frame in std::iter::from_fn(|| a.poll_transmit()) {
        b.handle_bytes(&frame);
    }
    let evs = events(&mut b);
    assert!(
        matches!(evs.as_slice(), [Event::Message(m)] if m.text == "über 🎉" && m.flags == flags && m.from == alice.public_key())
    );
}

#[test]
fn copies_are_reported_once_and_forgeries_as_errors() {
    let (server, me, bob) = (key(1), key(2), key(3));
    let mut e = logged_in(&me, &server);
    let m = sealed(&bob, &me.public_key(), "once", 5, None);
    deliver(&mut e, &m);
    deliver(&mut e, &m);
    assert_eq!(texts(&events(&mut e)), ["once"]);
    // The relay re-dated it: the box does not open, and it is said so.
    let mut redated = sealed(&bob, &me.public_key(), "twice", 5, None);
    redated.date = 6;
    deliver(&mut e, &redated);
    let evs = events(&mut e);
    assert!(
        matches!(evs.as_slice(), [Event::Undecryptable { sender: Some(s), date: 6, .. }] if *s == bob.public_key())
    );
    // A message sealed for someone else does not open here either.
    let elsewhere = sealed(&bob, &key(7).public_key(), "not yours", 8, None);
    deliver(&mut e, &elsewhere);
    assert!(matches!(
        events(&mut e).as_slice(),
        [Event::Undecryptable { .. }]
    ));
}

#[test]
fn an_id_outside_the_seal_can_neither_suppress_nor_double_a_message() {
    // Decided once for both clients (docs/PROTOCOL.md §8.2): copies are recognised by the
    // sealed box, not by the id, which nothing authenticates.
    let (server, me, bob) = (key(1), key(2), key(3));
    let mut e = logged_in(&me, &server);
    let first = sealed(&bob, &me.public_key(), "first", 5, Some("aaa"));
    deliver(&mut e, &first);
    // Someone on the path renames a new message's id to one already seen: still reported.
    let renamed = sealed(&bob, &me.public_key(), "second", 6, Some("aaa"));
    deliver(&mut e, &renamed);
    assert_eq!(texts(&events(&mut e)), ["first", "second"]);
    // And the same box under another id is the same message: not reported twice.
    let mut relabelled = first.clone();
    relabelled.id = Some("bbb".into());
    deliver(&mut e, &relabelled);
    assert!(texts(&events(&mut e)).is_empty());
}

#[test]
fn acks_follow_processing_and_copies_of_processed_messages_are_acked_again() {
    let (server, me, bob) = (key(1), key(2), key(3));
    let mut e = logged_in(&me, &server);
    let m = sealed(&bob, &me.public_key(), "hi", 5, Some("m1"));
    deliver(&mut e, &m);
    let evs = events(&mut e);
    // Nothing is acknowledged before the application says it processed the message.
    e.flush_acks();
    assert!(acks(&sent(&mut e)).is_empty());
    // A copy meanwhile is dropped, and not acknowledged either: the application has not
    // processed the first one yet, and its own ACK of the id covers the copy.
    deliver(&mut e, &m);
    assert!(events(&mut e).is_empty());
    e.flush_acks();
    assert!(acks(&sent(&mut e)).is_empty());
    assert_eq!(process(&mut e, &evs), [vec!["m1".to_string()]]);
    // Once processed, a copy (the server redelivers until it sees the ACK) is acknowledged by
    // the engine itself, or it would come back at every login.
    deliver(&mut e, &m);
    assert!(events(&mut e).is_empty());
    e.flush_acks();
    assert_eq!(acks(&sent(&mut e)), [vec!["m1".to_string()]]);
}

#[test]
fn the_seen_messages_carry_across_reconnects_and_engines() {
    let (server, me, bob) = (key(1), key(2), key(3));
    let mut e = logged_in(&me, &server);
    let m = sealed(&bob, &me.public_key(), "hi", 5, Some("m1"));
    deliver(&mut e, &m);
    let evs = events(&mut e);
    process(&mut e, &evs);
    // The same engine on a new connection: the server redelivers what it did not see acked.
    e.disconnected();
    login(&mut e, &server);
    deliver(&mut e, &m);
    assert!(texts(&events(&mut e)).is_empty());
    e.flush_acks();
    assert_eq!(acks(&sent(&mut e)), [vec!["m1".to_string()]]);
    // Another engine of the same identity, given the memory of the first.
    let mut next = logged_in(&me, &server);
    next.restore_seen(e.seen());
    deliver(&mut next, &m);
    assert!(texts(&events(&mut next)).is_empty());
    next.flush_acks();
    assert_eq!(acks(&sent(&mut next)), [vec!["m1".to_string()]]);
    // And keys an application kept with its history work the same.
    let mut fresh = logged_in(&me, &server);
    let other = sealed(&bob, &me.public_key(), "kept", 9, None);
    deliver(&mut fresh, &other);
    let Some(Event::Message(kept)) = events(&mut fresh).pop() else {
        panic!("not reported");
    };
    let mut reloaded = logged_in(&me, &server);
    reloaded.remember_seen(&kept.key);
    deliver(&mut reloaded, &other);
    assert!(texts(&events(&mut reloaded)).is_empty());
}

#[test]
fn a_sender_named_by_alias_is_looked_up_and_the_order_is_kept() {
    let (server, me, bob, carol) = (key(1), key(2), key(3), key(4));
    let mut e = logged_in(&me, &server);
    let mut from_alias = sealed(&bob, &me.public_key(), "first, by alias", 5, Some("b1"));
    from_alias.from = "Bob".into();
    let by_key = sealed(&carol, &me.public_key(), "second, by key", 6, None);
    deliver(&mut e, &from_alias);
    deliver(&mut e, &by_key);
    // The second waits for the first's lookup.
    assert!(texts(&events(&mut e)).is_empty());
    let out = sent(&mut e);
    assert!(
        matches!(out.as_slice(), [Datum::Command(c)] if c.cmd == "GETUSER" && c.payload == ["Bob"])
    );
    e.handle_bytes(&frame_of(user(&bob.public_key(), &["bob"], true)));
    let evs = events(&mut e);
    assert_eq!(texts(&evs), ["first, by alias", "second, by key"]);
    // The lookup is the engine's own: no answer event for it.
    assert!(!evs.iter().any(|ev| matches!(ev, Event::Answer { .. })));
    assert!(
        matches!(&evs[0], Event::Message(m) if m.from_text == "Bob" && m.from == bob.public_key())
    );
    // Learnt: the next message from that alias needs no lookup.
    let mut again = sealed(&bob, &me.public_key(), "third", 7, None);
    again.from = "bob".into();
    deliver(&mut e, &again);
    assert!(sent(&mut e).is_empty());
    assert_eq!(texts(&events(&mut e)), ["third"]);
    assert_eq!(e.resolve_cached("BOB"), Some(bob.public_key()));
}

#[test]
fn a_message_that_will_never_open_is_acked_and_reported_once() {
    let (server, me, bob) = (key(1), key(2), key(3));
    let mut e = logged_in(&me, &server);
    let mut nobody = sealed(&bob, &me.public_key(), "from nobody", 5, Some("n1"));
    nobody.from = "nobody".into();
    deliver(&mut e, &nobody);
    sent(&mut e);
    e.handle_bytes(&st(status::NO_SUCH_USER, "no user \"nobody\""));
    let evs = events(&mut e);
    assert!(
        matches!(evs.as_slice(), [Event::Undecryptable { from, sender: None, .. }] if from == "nobody")
    );
    e.flush_acks();
    assert_eq!(acks(&sent(&mut e)), [vec!["n1".to_string()]]);
    e.handle_bytes(&st(status::OK, "acknowledged 0 of 1"));
    events(&mut e);
    // Redelivered (the ACK came too late): asked again, acknowledged again, not reported again.
    deliver(&mut e, &nobody);
    sent(&mut e);
    e.handle_bytes(&st(status::NO_SUCH_USER, "no user \"nobody\""));
    assert!(events(&mut e).is_empty());
    e.flush_acks();
    assert_eq!(acks(&sent(&mut e)), [vec!["n1".to_string()]]);
    e.handle_bytes(&st(status::OK, "acknowledged 1 of 1"));
    events(&mut e);
    // A lookup that failed for a reason that may pass is not acknowledged: it comes again.
    let mut later = sealed(&bob, &me.public_key(), "try later", 6, Some("n2"));
    later.from = "someone".into();
    deliver(&mut e, &later);
    sent(&mut e);
    e.handle_bytes(&st(status::INTERNAL, "storage failure"));
    assert!(matches!(
        events(&mut e).as_slice(),
        [Event::Undecryptable { .. }]
    ));
    e.flush_acks();
    assert!(acks(&sent(&mut e)).is_empty());
}

#[test]
fn a_lookup_lost_with_the_connection_is_asked_again_after_the_next_login() {
    let (server, me, bob) = (key(1), key(2), key(3));
    let mut e = logged_in(&me, &server);
    let mut m = sealed(&bob, &me.public_key(), "patience", 5, None);
    m.from = "bob".into();
    deliver(&mut e, &m);
    sent(&mut e);
    e.disconnected();
    events(&mut e);
    login(&mut e, &server);
    assert!(matches!(sent(&mut e).as_slice(), [Datum::Command(c)] if c.cmd == "GETUSER"));
    e.handle_bytes(&frame_of(user(&bob.public_key(), &["bob"], true)));
    assert_eq!(texts(&events(&mut e)), ["patience"]);
}

#[test]
fn many_acks_are_split_into_bounded_batches() {
    let (server, me, bob) = (key(1), key(2), key(3));
    let mut e = logged_in(&me, &server);
    let n = ACK_BATCH * 2 + 3;
    for i in 0..n {
        let m = sealed(
            &bob,
            &me.public_key(),
            &format!("m{i}"),
            i as i64,
            Some(&format!("id{i}")),
        );
        deliver(&mut e, &m);
    }
    let evs = events(&mut e);
    assert_eq!(texts(&evs).len(), n);
    let batches = process(&mut e, &evs);
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        [ACK_BATCH, ACK_BATCH, 3]
    );
    assert_eq!(batches[0][0], "id0");
    // Nothing is sent without a connection; the copies are acknowledged after the next login.
    e.acknowledge("id0");
    e.disconnected();
    assert!(e.flush_acks().is_empty());
}

#[test]
fn only_messages_handed_to_the_application_count_as_seen() {
    // The shape of a native client that connects, gets messages during the login, and only
    // then restores the memory of its previous connection; and of one that leaves with
    // messages still queued.
    let (server, me, bob) = (key(1), key(2), key(3));
    let old = sealed(&bob, &me.public_key(), "seen last time", 5, Some("o1"));
    let new = sealed(&bob, &me.public_key(), "new", 6, Some("n1"));
    let mut first = logged_in(&me, &server);
    deliver(&mut first, &old);
    assert_eq!(texts(&events(&mut first)), ["seen last time"]);
    // This one is queued but never handed out before the connection goes.
    deliver(&mut first, &new);
    let seen = first.seen();

    let mut second = logged_in(&me, &server);
    // The server redelivers both during the login, before the memory is restored.
    deliver(&mut second, &old);
    deliver(&mut second, &new);
    second.restore_seen(seen);
    // The copy of what the application had is dropped and acknowledged; the message it never
    // got is reported now.
    assert_eq!(texts(&events(&mut second)), ["new"]);
    second.flush_acks();
    assert_eq!(acks(&sent(&mut second)), [vec!["o1".to_string()]]);
}
