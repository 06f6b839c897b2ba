//! The delivery invariants of ARCHITECTURE.md, one test each, on the table alone.

use bytes::Bytes;
use flexim_protocol::datum::Status;
use flexim_protocol::{Datum, PublicKey, status};

use super::fake::Fake;
use super::*;

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn table() -> Table<Fake> {
    Table::new(Bounds {
        max_unacked: 4,
        max_unacked_bytes: usize::MAX,
    })
}

fn id(s: &str) -> Option<Id> {
    Some(Id::from(s.to_string()))
}

/// A message frame the tests can tell apart (the table never reads it).
fn msg(n: u32) -> Bytes {
    Bytes::from(format!("message {n}"))
}

fn status_of(frame: &Bytes) -> Status {
    let (kind, body) = flexim_protocol::frame::split_exact(frame, 65535).unwrap();
    match Datum::decode(kind, body).unwrap() {
        Datum::Status(s) => s,
        other => panic!("not a Status: {other:?}"),
    }
}

/// Routes and expects the message to be relayed; returns the answer.
fn relayed(t: &mut Table<Fake>, from: PublicKey, to: PublicKey, i: Option<Id>, n: u32) -> Status {
    match t.route(from, to, i, msg(n)) {
        Routed::Relayed(answer) => status_of(&answer),
        other => panic!("expected relayed, got {other:?}"),
    }
}

/// Routes and expects the message to go to the store; returns the decision's parts.
fn stored(
    t: &mut Table<Fake>,
    from: PublicKey,
    to: PublicKey,
    i: Option<Id>,
    n: u32,
) -> (Option<Write>, Write, Option<Close<Fake>>) {
    match t.route(from, to, i, msg(n)) {
        Routed::Store(to_store) => {
            let ToStore {
                demoted,
                write,
                close,
            } = *to_store;
            (demoted, write, close)
        }
        other => panic!("expected stored, got {other:?}"),
    }
}

/// Session `id` looks at the store, finds nothing, and goes live.
fn live(t: &mut Table<Fake>, key: PublicKey, id: SessionId) {
    let mark = t.catch_up(key, id).expect("may catch up");
    assert_eq!(t.go_live(key, id, mark), GoLive::Live);
}

fn frames_of(w: &Write) -> Vec<Bytes> {
    w.entries.iter().map(|e| e.frame.clone()).collect()
}

fn ids_of(r: &Receipts) -> Vec<(PublicKey, Vec<String>)> {
    r.senders
        .iter()
        .map(|(s, ids)| (*s, ids.iter().map(|i| i.as_str().to_string()).collect()))
        .collect()
}

#[test]
fn a_session_goes_live_only_when_no_write_for_its_key_runs() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    // A message for offline Bob is being written.
    let (_, write, _) = stored(&mut t, alice, bob, id("m-1"), 1);
    assert_eq!(
        write.admit,
        Admit::Message,
        "a new message obeys every bound"
    );
    let b = Fake::new(1, 8);
    assert!(t.join(bob, 1, b.clone(), false));
    // Bob's session looks at the store while the write runs: it finds nothing yet, and may
    // not go live, or the message on its way to the store would come after newer ones.
    let mark = t.catch_up(bob, 1).unwrap();
    assert_eq!(t.go_live(bob, 1, mark), GoLive::Wait);
    assert!(!t.is_live(&bob));
    // The write ends: Bob's session is told to look again; it reads the message, then finds
    // nothing more and goes live.
    assert!(matches!(t.store_finished(bob), Finished::Wake(f) if f.n == 1));
    assert_eq!(t.go_live(bob, 1, mark), GoLive::Live);
    relayed(&mut t, alice, bob, id("m-2"), 2);
    assert_eq!(b.drain(), [msg(2)]);
}

#[test]
fn a_write_decided_during_a_look_sends_the_session_to_look_again() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    t.join(bob, 1, Fake::new(1, 8), false);
    let mark = t.catch_up(bob, 1).unwrap();
    // While the session reads (and finds nothing), a message is stored and its write ends:
    // the session did not see it, so it looks again from a new mark.
    stored(&mut t, alice, bob, id("m-1"), 1);
    t.store_finished(bob);
    let GoLive::Again(again) = t.go_live(bob, 1, mark) else {
        panic!("not live: the message is unread");
    };
    assert_eq!(t.go_live(bob, 1, again), GoLive::Live);
}

#[test]
fn per_sender_order_holds_across_stored_and_live_delivery() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    let b = Fake::new(1, 8);
    t.join(bob, 1, b.clone(), false);
    // Bob is online but not caught up: new messages queue in the store behind the old ones,
    // each write decided (and so started) in the order of the messages.
    let (_, w1, _) = stored(&mut t, alice, bob, id("m-1"), 1);
    let (_, w2, _) = stored(&mut t, alice, bob, None, 2);
    assert_eq!([frames_of(&w1), frames_of(&w2)].concat(), [msg(1), msg(2)]);
    let mark = t.catch_up(bob, 1).unwrap();
    assert_eq!(t.go_live(bob, 1, mark), GoLive::Wait);
    let (_, w3, _) = stored(&mut t, alice, bob, id("m-3"), 3);
    assert_eq!(
        frames_of(&w3),
        [msg(3)],
        "not live yet: stored behind the others"
    );
    for _ in 0..3 {
        t.store_finished(bob);
    }
    assert!(
        b.drain().is_empty(),
        "nothing came live before the stored ones were read"
    );
    let GoLive::Again(mark) = t.go_live(bob, 1, mark) else {
        panic!("m-3 was decided after the look began");
    };
    assert_eq!(t.go_live(bob, 1, mark), GoLive::Live);
    relayed(&mut t, alice, bob, id("m-4"), 4);
    assert_eq!(b.drain(), [msg(4)]);
}

#[test]
fn stored_is_decided_here_and_answered_only_after_the_write() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    // The answer to a stored message is what follows its write, never a frame now.
    let (demoted, write, close) = stored(&mut t, alice, bob, id("m-1"), 1);
    assert!(demoted.is_none() && close.is_none());
    assert!(matches!(&write.then, Then::Answer(Some(i)) if i.as_str() == "m-1"));
    assert_eq!(write.entries[0].id.as_deref(), Some("m-1"));
    assert_eq!(write.entries[0].at, 0, "the time is the caller's to set");
    assert!(t.is_writing(&bob));
    t.store_finished(bob);
    assert!(!t.is_writing(&bob));
}

#[test]
fn a_relayed_message_is_answered_with_its_id_and_held_until_acknowledged() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    let b = Fake::new(1, 8);
    t.join(bob, 1, b.clone(), false);
    live(&mut t, bob, 1);
    let answer = relayed(&mut t, alice, bob, id("m-1"), 1);
    assert_eq!(
        (answer.status, answer.id.as_deref()),
        (status::RELAYED, Some("m-1"))
    );
    assert_eq!(answer.payload, format!("relayed to {bob}"));
    assert!(relayed(&mut t, alice, bob, None, 2).id.is_none());
    assert_eq!(t.held().len(), 1, "only the message with an id is held");
    assert_eq!(b.drain(), [msg(1), msg(2)], "the same bytes, in order");
}

#[test]
fn a_full_queue_turns_a_relay_into_demote_and_store() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    let b = Fake::new(1, 2);
    t.join(bob, 1, b.clone(), false);
    live(&mut t, bob, 1);
    relayed(&mut t, alice, bob, id("m-1"), 1);
    relayed(&mut t, alice, bob, None, 2);
    // The queue is full: the third message is stored, behind what Bob held only in memory
    // (the message with an id; the other one was never promised), and Bob is closed.
    let (demoted, write, close) = stored(&mut t, alice, bob, id("m-3"), 3);
    let demoted = demoted.expect("what Bob held goes to the store first");
    assert_eq!(frames_of(&demoted), [msg(1)]);
    assert_eq!(
        demoted.admit,
        Admit::Held,
        "accepted already: stored as far as the bounds allow, each sender told what was not"
    );
    let Then::StoredLater(receipts) = &demoted.then else {
        panic!("the senders are told once it is durable");
    };
    assert_eq!(receipts.why, Some(Why::SlowReader));
    assert_eq!(ids_of(receipts), [(alice, vec!["m-1".to_string()])]);
    assert_eq!(frames_of(&write), [msg(3)]);
    assert_eq!(
        write.admit,
        Admit::Message,
        "the new message is held to every bound, after what Bob held"
    );
    let close = close.expect("the slow reader is closed");
    assert_eq!((close.outlet.n, close.code), (1, status::TOO_SLOW));
    assert!(t.held().is_empty());
    // It never catches up again, and nothing is relayed to it any more.
    assert_eq!(t.catch_up(bob, 1), None);
    stored(&mut t, alice, bob, None, 4);
    assert!(matches!(t.store_finished(bob), Finished::Nothing));
}

#[test]
fn too_many_unacknowledged_messages_make_a_slow_reader() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    let b = Fake::new(1, 100);
    t.join(bob, 1, b.clone(), false);
    live(&mut t, bob, 1);
    for n in 0..4 {
        relayed(&mut t, alice, bob, id(&format!("m-{n}")), n);
    }
    // Without an id a message costs no memory after it is queued: still relayed.
    relayed(&mut t, alice, bob, None, 10);
    let (demoted, _, close) = stored(&mut t, alice, bob, id("m-4"), 4);
    assert_eq!(demoted.expect("held ones stored").entries.len(), 4);
    assert!(close.unwrap().text.contains("not acknowledged"));
}

#[test]
fn too_many_unacknowledged_bytes_make_a_slow_reader_and_an_ack_frees_them() {
    let (alice, bob) = (key(1), key(2));
    // Room for two of the test's frames ("message N", 9 bytes) but not three.
    let mut t = Table::new(Bounds {
        max_unacked: 100,
        max_unacked_bytes: 20,
    });
    let b = Fake::new(1, 100);
    t.join(bob, 1, b.clone(), false);
    live(&mut t, bob, 1);
    relayed(&mut t, alice, bob, id("m-1"), 1);
    relayed(&mut t, alice, bob, id("m-2"), 2);
    // An acknowledgement gives the bytes back: two more fit.
    assert_eq!(t.ack(bob, 1, &["m-1", "m-2"]).matched, 2);
    assert!(t.counts_agree());
    relayed(&mut t, alice, bob, id("m-3"), 3);
    relayed(&mut t, alice, bob, id("m-4"), 4);
    assert!(t.counts_agree());
    let (demoted, _, close) = stored(&mut t, alice, bob, id("m-5"), 5);
    assert_eq!(
        frames_of(&demoted.expect("held ones stored")),
        [msg(3), msg(4)]
    );
    assert!(close.unwrap().text.contains("not acknowledged"));
    assert!(t.counts_agree());
}

#[test]
fn what_a_leaving_primary_held_goes_to_the_store_and_the_next_session_takes_over() {
    let (alice, carol, bob) = (key(1), key(3), key(2));
    let mut t = table();
    let (b1, b2) = (Fake::new(1, 8), Fake::new(2, 8));
    assert!(t.join(bob, 1, b1.clone(), false));
    assert!(!t.join(bob, 2, b2.clone(), false), "a second session waits");
    live(&mut t, bob, 1);
    assert_eq!(t.catch_up(bob, 2), None, "only the primary catches up");
    relayed(&mut t, alice, bob, id("a-1"), 1);
    relayed(&mut t, carol, bob, id("c-1"), 2);
    relayed(&mut t, alice, bob, id("a-2"), 3);
    let left = t.leave(bob, 1);
    assert!(!left.offline && left.held_here);
    assert_eq!(left.wake.map(|f| f.n), Some(2));
    let write = left.write.expect("held messages are stored");
    assert_eq!(frames_of(&write), [msg(1), msg(2), msg(3)]);
    let Then::StoredLater(r) = &write.then else {
        panic!("8 follows the write");
    };
    assert_eq!(r.why, Some(Why::NextSession));
    assert_eq!(
        ids_of(r),
        [
            (alice, vec!["a-1".to_string(), "a-2".to_string()]),
            (carol, vec!["c-1".to_string()])
        ],
        "one receipt per sender, naming all of its messages"
    );
    // The new primary is not live until it has caught up (the write still runs).
    let mark = t.catch_up(bob, 2).unwrap();
    assert_eq!(t.go_live(bob, 2, mark), GoLive::Wait);
    let left = t.leave(bob, 2);
    assert!(left.offline && left.write.is_none());
    assert!(!t.is_online(&bob));
}

#[test]
fn ghost_stores_what_the_old_primary_held_and_closes_it() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    let (old, new) = (Fake::new(1, 8), Fake::new(2, 8));
    t.join(bob, 1, old.clone(), false);
    t.join(bob, 2, new.clone(), false);
    live(&mut t, bob, 1);
    relayed(&mut t, alice, bob, id("g-1"), 1);
    assert_eq!(t.ghost_check(bob, 2), GhostCheck::Here);
    let g = t.ghost(bob, 2).unwrap();
    let write = g
        .write
        .expect("the old primary's unacknowledged message is stored");
    assert_eq!(frames_of(&write), [msg(1)]);
    assert!(matches!(&write.then, Then::StoredLater(r) if r.why == Some(Why::Ghost)));
    let close = g.close.expect("the old primary is closed");
    assert_eq!((close.outlet.n, close.code), (1, status::TAKEN_OVER));
    // New messages queue behind it until the new primary has read the store.
    let (_, w, _) = stored(&mut t, alice, bob, id("g-2"), 2);
    assert_eq!(frames_of(&w), [msg(2)]);
    let mark = t.catch_up(bob, 2).unwrap();
    assert_eq!(t.go_live(bob, 2, mark), GoLive::Wait);
    assert_eq!(
        t.catch_up(bob, 1),
        None,
        "the old primary reads the store no more"
    );
    // The old one acknowledges nothing any more; GHOST again by the primary only wakes it.
    assert_eq!(t.ack(bob, 1, &["g-1"]).matched, 0);
    assert!(t.ghost(bob, 2).unwrap().wake.is_some());
    assert_eq!(t.ghost_check(bob, 9), GhostCheck::Unknown);
}

#[test]
fn an_ack_counts_ids_not_copies_and_makes_one_receipt_per_sender() {
    let (alice, carol, bob) = (key(1), key(3), key(2));
    let mut t = table();
    t.join(bob, 1, Fake::new(1, 16), false);
    live(&mut t, bob, 1);
    // Alice sent m-1 twice (a resend after a reconnect): Bob holds two copies.
    relayed(&mut t, alice, bob, id("m-1"), 1);
    relayed(&mut t, alice, bob, id("m-1"), 2);
    relayed(&mut t, carol, bob, id("c-1"), 3);
    relayed(&mut t, alice, bob, id("m-2"), 4);
    t.track(
        bob,
        1,
        vec![Unacked {
            id: Id::from("s-1".to_string()),
            sender: alice,
            held: Held::Stored(7),
        }],
    );
    let acked = t.ack(bob, 1, &["m-1", "m-2", "c-1", "s-1", "m-1", "nobody"]);
    assert_eq!(acked.matched, 4, "each distinct pending id once");
    assert_eq!(acked.remove, [7], "the stored one leaves the store");
    let r = acked.receipts.unwrap();
    assert_eq!(r.why, None);
    assert_eq!(
        ids_of(&r),
        [
            (
                alice,
                vec!["m-1".to_string(), "m-2".to_string(), "s-1".to_string()]
            ),
            (carol, vec!["c-1".to_string()])
        ]
    );
    assert!(t.held().is_empty());
    // Acknowledged means forgotten: nothing goes to the store when Bob leaves.
    assert!(t.leave(bob, 1).write.is_none());
}

#[test]
fn a_stored_message_tracked_for_a_session_that_is_no_longer_primary_is_ignored() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    t.join(bob, 1, Fake::new(1, 8), false);
    t.join(bob, 2, Fake::new(2, 8), false);
    t.ghost(bob, 2);
    let delivered = vec![Unacked {
        id: Id::from("s-1".to_string()),
        sender: alice,
        held: Held::Stored(3),
    }];
    t.track(bob, 1, delivered);
    assert_eq!(t.ack(bob, 2, &["s-1"]).matched, 0);
}

#[test]
fn a_closed_queue_turns_a_relay_into_store_and_the_session_catches_up_no_more() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    let b = Fake::new(1, 8);
    t.join(bob, 1, b.clone(), false);
    live(&mut t, bob, 1);
    relayed(&mut t, alice, bob, id("m-1"), 1);
    b.close();
    let (demoted, write, close) = stored(&mut t, alice, bob, id("m-2"), 2);
    assert!(close.is_none(), "a session that is gone is not told");
    let demoted = demoted.unwrap();
    assert!(matches!(&demoted.then, Then::StoredLater(r) if r.why == Some(Why::Offline)));
    assert_eq!(
        [frames_of(&demoted), frames_of(&write)].concat(),
        [msg(1), msg(2)]
    );
    assert_eq!(t.catch_up(bob, 1), None);
}

#[test]
fn receipts_go_to_the_active_session_or_the_store() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    let a = Fake::new(1, 1);
    t.join(alice, 1, a.clone(), false);
    assert!(matches!(
        t.receipt(alice, msg(1), false),
        ReceiptRoute::Sent
    ));
    // Its queue is full: kept in the store for it, as for an offline sender.
    let ReceiptRoute::Store(w) = t.receipt(alice, msg(2), false) else {
        panic!("stored");
    };
    assert!(w.admit == Admit::Receipt && matches!(w.then, Then::Nothing));
    assert!(matches!(
        t.receipt(bob, msg(3), false),
        ReceiptRoute::Store(_)
    ));
    // With several nodes, a sender with no session here may be on another node.
    assert!(matches!(
        t.receipt(bob, msg(4), true),
        ReceiptRoute::AskCluster(_)
    ));
    assert_eq!(a.drain(), [msg(1)]);
}

#[test]
fn a_notice_reaches_every_session_of_its_key_only() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    let (a, b1, b2) = (Fake::new(1, 8), Fake::new(2, 8), Fake::new(3, 8));
    t.join(alice, 1, a.clone(), false);
    t.join(bob, 2, b1.clone(), false);
    t.join(bob, 3, b2.clone(), false);
    t.notify(&bob, &msg(0));
    t.notify(&key(3), &msg(1));
    assert_eq!((a.len(), b1.len(), b2.len()), (0, 1, 1));
}

#[test]
fn with_several_nodes_a_key_is_active_only_once_claimed() {
    let (alice, bob) = (key(1), key(2));
    let mut t = table();
    let b = Fake::new(1, 8);
    assert!(t.join(bob, 1, b.clone(), true));
    assert_eq!(t.catch_up(bob, 1), None, "held elsewhere until claimed");
    assert!(matches!(t.store_finished(bob), Finished::WakeElsewhere));
    assert!(t.claimed(bob, 1));
    live(&mut t, bob, 1);
    relayed(&mut t, alice, bob, id("x-1"), 1);
    // Another node takes the key over: what Bob held here is stored, and Bob is closed.
    let (close, write) = t.taken_elsewhere(bob).unwrap();
    assert_eq!(close.code, status::TAKEN_OVER);
    assert_eq!(frames_of(&write.unwrap()), [msg(1)]);
    let mut waiting = Vec::new();
    t.waiting(&[], &mut waiting);
    assert!(
        waiting.is_empty(),
        "a closing session does not claim the key back"
    );
}
