//! Sending: fresh ids, the outbox of frames, receipts, and sending again after a reconnect.

use flexim_protocol::status::{self, validate_id};
use flexim_protocol::{Datum, Status};
use flexim_session::{Answer, Delivery, Event, Outbox, Outgoing, SavedDelivery, is_final};

use crate::kit::*;

/// The deliveries the events report, answers and receipts alike, in order.
fn deliveries(evs: &[Event]) -> Vec<(String, Delivery)> {
    evs.iter()
        .filter_map(|ev| match ev {
            Event::Answer {
                answer:
                    Answer::Sent {
                        id,
                        delivery: Some(d),
                        ..
                    },
                ..
            }
            | Event::Receipt {
                id, delivery: d, ..
            } => Some((id.clone(), d.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn every_message_carries_a_fresh_random_id_and_waits_as_its_frame() {
    let mut e = logged_in(&key(2), &key(1));
    let bob = key(3).public_key();
    let a = e.send_text(&bob, "one", &[], 1).unwrap();
    let b = e.send_text(&bob, "two", &[], 1).unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(validate_id(&a.id), Ok(()));
    assert_eq!(a.id.len(), 32);
    let out = sent(&mut e);
    assert_eq!(message_ids(&out), [a.id.clone(), b.id.clone()]);
    // The outbox keeps exactly the frames that went out.
    let frames: Vec<&Vec<u8>> = e.outbox().iter().map(|o| &o.frame).collect();
    assert_eq!(frames.len(), 2);
    assert_eq!(decode(frames[0]), out[0]);
    assert_eq!(
        e.outbox().ids().collect::<Vec<_>>(),
        [a.id.as_str(), b.id.as_str()]
    );
}

#[test]
fn receipts_move_messages_forward_and_one_receipt_may_name_many() {
    let mut e = logged_in(&key(2), &key(1));
    let bob = key(3).public_key();
    let ids: Vec<String> = (0..4)
        .map(|i| e.send_text(&bob, &format!("m{i}"), &[], 1).unwrap().id)
        .collect();
    sent(&mut e);
    for id in &ids {
        e.handle_bytes(&st_id(status::RELAYED, "relayed", id));
    }
    assert_eq!(e.outbox().len(), 4, "relayed is not confirmed");
    // One receipt for three of them, as the server sends for one ACK of several messages.
    let many = Status::new(status::DELIVERED, "delivered to bob").with_ids(ids[..3].to_vec());
    e.handle_bytes(&frame_of(many));
    e.handle_bytes(&st_id(status::STORED_LATER, "stored for bob", &ids[3]));
    let evs = events(&mut e);
    let got = deliveries(&evs);
    assert_eq!(
        got[..4].iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        vec![Delivery::Relayed; 4]
    );
    assert_eq!(
        got[4..],
        [
            (ids[0].clone(), Delivery::Delivered),
            (ids[1].clone(), Delivery::Delivered),
            (ids[2].clone(), Delivery::Delivered),
            (ids[3].clone(), Delivery::Stored),
        ]
    );
    // Each receipt event names its own message.
    assert!(evs.iter().any(|ev| matches!(ev, Event::Receipt { id, status, .. } if *id == ids[1] && status.id.as_deref() == Some(ids[1].as_str()))));
    assert!(e.outbox().is_empty());
    // A receipt confirming a message confirmed before still reports it (stored, then read).
    e.handle_bytes(&st_id(status::DELIVERED, "delivered", &ids[3]));
    assert_eq!(
        deliveries(&events(&mut e)),
        [(ids[3].clone(), Delivery::Delivered)]
    );
}

#[test]
fn expired_is_final_and_a_stray_expiry_notice_is_told() {
    // Decided once for both clients (docs/PROTOCOL.md §8.2): a message the server deleted
    // unread is not sent again.
    assert!(is_final(status::EXPIRED));
    let mut e = logged_in(&key(2), &key(1));
    let id = e
        .send_text(&key(3).public_key(), "late", &[], 1)
        .unwrap()
        .id;
    sent(&mut e);
    e.handle_bytes(&st_id(status::EXPIRED, "expired unread after 30 days", &id));
    assert_eq!(deliveries(&events(&mut e)), [(id, Delivery::Expired)]);
    assert!(e.outbox().is_empty());
    // Without an id it is the count of this user's own messages that expired.
    e.handle_bytes(&st(
        status::EXPIRED,
        "3 stored messages expired unread after 30 days",
    ));
    assert!(matches!(events(&mut e).as_slice(), [Event::Notice(t)] if t.starts_with("3 stored")));
}

#[test]
fn a_refusal_fails_the_message_for_good_and_says_why() {
    let mut e = logged_in(&key(2), &key(1));
    let id = e.send_text(&key(3).public_key(), "hi", &[], 1).unwrap().id;
    sent(&mut e);
    e.handle_bytes(&st_id(
        status::QUEUE_FULL,
        "bob has 10000 messages waiting",
        &id,
    ));
    let got = deliveries(&events(&mut e));
    assert!(
        matches!(&got[..], [(i, Delivery::Failed(why))] if *i == id && why.contains("queue is full"))
    );
    assert!(e.outbox().is_empty());
    e.disconnected();
    login(&mut e, &key(1));
    assert!(
        message_ids(&sent(&mut e)).is_empty(),
        "a refused message is not sent again"
    );
}

#[test]
fn a_garbled_answer_keeps_the_message_for_the_next_connection() {
    let mut e = logged_in(&key(2), &key(1));
    let id = e.send_text(&key(3).public_key(), "hi", &[], 1).unwrap().id;
    sent(&mut e);
    e.handle_bytes(&[6, 0, 1, 0xc0]);
    assert!(matches!(
        events(&mut e).as_slice(),
        [Event::Answer {
            answer: Answer::Sent {
                delivery: None,
                result: Err(_),
                ..
            },
            ..
        }]
    ));
    assert!(e.outbox().contains(&id));
}

#[test]
fn unconfirmed_messages_are_sent_again_in_order_with_the_same_bytes_before_anything_new() {
    let server = key(1);
    let bob = key(3).public_key();
    let mut e = logged_in(&key(2), &server);
    let first = e.send_text(&bob, "first", &[], 1).unwrap().id;
    let second = e.send_text(&bob, "second", &[], 2).unwrap().id;
    let third = e.send_text(&bob, "third", &[], 3).unwrap().id;
    let bytes: Vec<Vec<u8>> = e.outbox().iter().map(|o| o.frame.clone()).collect();
    sent(&mut e);
    e.handle_bytes(&st_id(status::RELAYED, "relayed", &first));
    e.handle_bytes(&st_id(status::STORED, "stored", &second));
    // The connection drops before the third is answered.
    e.disconnected();
    // Written while offline: it waits behind the others.
    let fourth = e.send_text(&bob, "fourth", &[], 4).unwrap();
    assert_eq!(
        fourth.request, None,
        "nothing goes out without a connection"
    );
    login(&mut e, &server);
    let out = sent(&mut e);
    assert_eq!(
        message_ids(&out),
        [first.clone(), third.clone(), fourth.id.clone()]
    );
    // Byte for byte: the same id and the same nonce, so the recipient recognises a copy.
    assert_eq!(Datum::decode(bytes[0][0], &bytes[0][3..]).unwrap(), out[0]);
    assert_eq!(Datum::decode(bytes[2][0], &bytes[2][3..]).unwrap(), out[1]);
    // A receipt that overtakes the answer to the copy confirms it; the late answer adds nothing.
    e.handle_bytes(&st_id(status::DELIVERED, "delivered", &first));
    e.handle_bytes(&st_id(status::RELAYED, "relayed", &first));
    let evs = events(&mut e);
    assert!(evs.iter().any(|ev| matches!(ev, Event::Answer { answer: Answer::Sent { id, late: true, .. }, .. } if *id == first)));
    assert!(!e.outbox().contains(&first));
}

#[test]
fn an_outbox_moves_to_another_engine_and_goes_out_there_at_once() {
    // The shape of the native client's tests: a connection is lost, its unconfirmed messages
    // are taken and sent on a new connection before anything new.
    let server = key(1);
    let bob = key(3).public_key();
    let mut old = logged_in(&key(2), &server);
    let a = old.send_text(&bob, "a", &[], 1).unwrap().id;
    let b = old.send_text(&bob, "b", &[], 2).unwrap().id;
    sent(&mut old);
    old.disconnected();
    let unconfirmed = old.take_outbox();
    assert!(old.outbox().is_empty());
    let mut new = logged_in(&key(2), &server);
    let sent_again = new.resend(unconfirmed.clone());
    assert_eq!(
        sent_again
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        [a.clone(), b.clone()]
    );
    let out = sent(&mut new);
    assert_eq!(message_ids(&out), [a.clone(), b.clone()]);
    new.handle_bytes(&st_id(status::RELAYED, "relayed", &a));
    new.handle_bytes(&st_id(status::RELAYED, "relayed", &b));
    // Resending the same entries again (a message the recipient already has) is harmless: it
    // goes out once more and keeps its first place.
    new.resend(unconfirmed);
    assert_eq!(message_ids(&sent(&mut new)), [a, b]);
    assert_eq!(new.outbox().len(), 2);
    // A sealed message from elsewhere can join an outbox too.
    let message = new
        .seal(
            &bob,
            "sealed by hand",
            &[],
            9,
            Some("0123456789abcdef0123456789abcdef".into()),
        )
        .unwrap();
    let entry = Outgoing::from_message(&message).unwrap().unwrap();
    let mut by_hand = Outbox::new();
    assert!(by_hand.push(entry.clone()));
    assert!(!by_hand.push(entry), "an id waits once");
}

#[test]
fn the_outbox_and_the_seen_messages_survive_a_restart() {
    let server = key(1);
    let me = key(2);
    let (bob, carol) = (key(3), key(4));
    let mut e = logged_in(&me, &server);
    let waiting = e
        .send_text(&bob.public_key(), "unconfirmed", &[], 1)
        .unwrap()
        .id;
    sent(&mut e);
    e.handle_bytes(&frame_of(sealed(
        &carol,
        &me.public_key(),
        "seen before",
        7,
        Some("c1"),
    )));
    assert_eq!(texts(&events(&mut e)), ["seen before"]);
    assert!(e.take_storage_changed());
    let json = e.saved().to_json(&me.public_key());

    let (saved, dropped) = SavedDelivery::from_json(&json, &me.public_key()).unwrap();
    assert_eq!(dropped, 0);
    let mut after = engine(&me);
    after.restore(saved);
    login(&mut after, &server);
    assert_eq!(message_ids(&sent(&mut after)), [waiting]);
    after.handle_bytes(&frame_of(sealed(
        &carol,
        &me.public_key(),
        "seen before",
        7,
        Some("c1"),
    )));
    assert!(
        texts(&events(&mut after)).is_empty(),
        "shown before the restart"
    );
    // Saved for another identity, or damaged: nothing, or nothing unsound, comes back.
    let (other, _) = SavedDelivery::from_json(&json, &bob.public_key()).unwrap();
    assert!(other.outbox.is_empty() && other.seen.is_empty());
    let damaged = json.replace("\"frame\":\"03", "\"frame\":\"04");
    let (_, dropped) = SavedDelivery::from_json(&damaged, &me.public_key()).unwrap();
    assert_eq!(dropped, 1);
    assert!(SavedDelivery::from_json("{\"version\":2,\"me\":\"\"}", &me.public_key()).is_err());
}

#[test]
fn a_delivery_state_never_moves_backward() {
    use Delivery::*;
    assert!(Sending.can_become(&Relayed));
    assert!(Relayed.can_become(&Stored));
    assert!(Stored.can_become(&Delivered));
    assert!(!Stored.can_become(&Relayed));
    assert!(!Delivered.can_become(&Stored));
    assert!(!Delivered.can_become(&Failed("x".into())));
    assert!(
        !Stored.can_become(&Failed("x".into())),
        "a stored message cannot fail"
    );
    assert!(Relayed.can_become(&Failed("x".into())));
    assert!(Stored.can_become(&Expired));
    assert!(!Expired.can_become(&Delivered));
    assert_eq!(
        Delivery::from_status(&Status::new(status::STORED_LATER, "")),
        Stored
    );
    assert_eq!(
        Delivery::from_status(&Status::new(42, "a future success")),
        Relayed
    );
}

#[test]
fn not_kept_is_a_final_failed_receipt_for_every_message_it_names() {
    // The server relayed two messages (`3`), then their recipient went away before reading
    // them and its queue had no room: it tells the sender with one `-24` naming both, unasked.
    assert!(status::is_notice(status::NOT_KEPT) && is_final(status::NOT_KEPT));
    let mut e = logged_in(&key(2), &key(1));
    let bob = key(3).public_key();
    let ids: Vec<String> = (0..3)
        .map(|i| e.send_text(&bob, &format!("m{i}"), &[], 1).unwrap().id)
        .collect();
    sent(&mut e);
    for id in &ids[..2] {
        e.handle_bytes(&st_id(status::RELAYED, "relayed", id));
    }
    // The notice comes while the third message's answer is still awaited: it is not that
    // answer, which still comes and is matched to the third message.
    let notice = Status::new(status::NOT_KEPT, "not kept for bob: their queue is full")
        .with_ids(ids[..2].to_vec());
    e.handle_bytes(&frame_of(notice));
    e.handle_bytes(&st_id(status::STORED, "stored", &ids[2]));
    let got = deliveries(&events(&mut e));
    assert_eq!(got.len(), 5, "{got:?}");
    for (i, id) in ids[..2].iter().enumerate() {
        assert_eq!(got[i], (id.clone(), Delivery::Relayed));
        match &got[2 + i] {
            (got_id, Delivery::Failed(why)) if got_id == id => {
                assert!(why.contains("no room to store it"), "{why}");
                assert!(why.contains("not-kept"), "{why}");
            }
            other => panic!("expected {id} failed, got {other:?}"),
        }
    }
    assert_eq!(got[4], (ids[2].clone(), Delivery::Stored));
    // Settled: nothing is sent again at the next login.
    assert!(e.outbox().is_empty());
    e.disconnected();
    login(&mut e, &key(1));
    assert!(message_ids(&sent(&mut e)).is_empty());
    // A relayed message may fail; a stored one stays stored whatever comes later.
    assert!(Delivery::Relayed.can_become(&Delivery::Failed("not kept".into())));
    assert!(!Delivery::Stored.can_become(&Delivery::Failed("not kept".into())));
}
