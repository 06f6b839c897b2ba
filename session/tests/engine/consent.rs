//! Consent in the engine (docs/PROTOCOL.md §14): a stranger's Request makes its messages
//! requests until this user answers; the consent requests go out as the datums and commands
//! the protocol names, and their answers come back as [`Answer::Consent`].

use flexim_protocol::conversation::pair_id;
use flexim_protocol::datum::{Connection, Request};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, Roster};
use flexim_session::{Answer, Consent, Event};

use crate::kit::*;

#[test]
fn a_strangers_messages_are_requests_until_accepted() {
    let (server, me, stranger) = (key(1), key(2), key(3));
    let mut e = logged_in(&me, &server);
    let (mk, sk) = (me.public_key(), stranger.public_key());
    let id = pair_id(&mk, &sk);
    e.handle_bytes(&frame_of(Request {
        to: vec![mk.to_hex()],
        from: sk.to_hex(),
        options: vec![],
        id: Some(id.clone()),
        ..Default::default()
    }));
    let m = sealed(&stranger, &mk, "hi, it's me", 1_700_000_000, Some("s1"));
    e.handle_bytes(&frame_of(m));
    let evs = events(&mut e);
    assert!(
        matches!(&evs[0], Event::Requested { from, conversation } if *from == sk && *conversation == id),
        "{evs:?}"
    );
    let Event::Message(got) = &evs[1] else {
        panic!("{evs:?}")
    };
    assert!(
        got.request,
        "a message from a stranger who asked is a request"
    );
    assert!(e.is_stranger(&sk));

    // Accepting sends an Acknowledge naming the stranger, and its answer is reported.
    let request = e.accept_request(&sk.to_hex()).unwrap();
    let out = sent(&mut e);
    assert!(
        matches!(out.as_slice(), [Datum::Acknowledge(a)] if a.id == sk.to_hex()),
        "{out:?}"
    );
    e.handle_bytes(&st(status::OK, "accepted"));
    e.handle_bytes(&frame_of(Connection {
        id: id.clone(),
        users: vec![mk.to_hex(), sk.to_hex()],
        last_active: 1,
        pending: vec![],
    }));
    let evs = events(&mut e);
    assert!(
        matches!(&evs[0], Event::Answer { request: r, answer: Answer::Consent { action: Consent::Accept, result: Ok(_), .. } } if *r == request),
        "{evs:?}"
    );
    assert!(
        matches!(&evs[1], Event::Conversation(c) if c.id == id && c.pending.is_empty() && c.members.len() == 2),
        "{evs:?}"
    );
    let m = sealed(&stranger, &mk, "thanks", 1_700_000_001, Some("s2"));
    e.handle_bytes(&frame_of(m));
    let evs = events(&mut e);
    assert!(
        matches!(evs.as_slice(), [Event::Message(m)] if !m.request),
        "{evs:?}"
    );
}

#[test]
fn consent_requests_go_out_as_the_protocol_names_them_and_refusals_come_back() {
    let (server, me, other) = (key(1), key(2), key(3));
    let mut e = logged_in(&me, &server);
    let hex = other.public_key().to_hex();
    e.ask_to_talk("bob").unwrap();
    e.block(&hex).unwrap();
    e.unblock(&hex).unwrap();
    e.decline(&hex).unwrap();
    e.set_discoverable(true).unwrap();
    let requests = e.requests().unwrap();
    let out = sent(&mut e);
    let Datum::Request(r) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (r.to.as_slice(), r.from.as_str()),
        (&["bob".to_string()][..], me.public_key().to_hex().as_str())
    );
    let names: Vec<(String, Vec<String>)> = out[1..]
        .iter()
        .map(|d| match d {
            Datum::Command(c) => (c.cmd.clone(), c.payload.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            (cmd::BLOCK.to_string(), vec![hex.clone()]),
            (cmd::UNBLOCK.to_string(), vec![hex.clone()]),
            (cmd::DECLINE.to_string(), vec![hex.clone()]),
            (cmd::DISCOVERABLE.to_string(), vec!["on".to_string()]),
            (cmd::REQUESTS.to_string(), vec![]),
        ]
    );
    // The answers, in order: the Request is refused (blocked), the rest go through.
    e.handle_bytes(&st(status::BLOCKED, "bob has blocked you"));
    for _ in 0..4 {
        e.handle_bytes(&st(status::OK, "done"));
    }
    e.handle_bytes(&frame_of(Roster {
        users: vec![user(&other.public_key(), &["carol"], false)],
    }));
    let evs = events(&mut e);
    assert!(
        matches!(&evs[0], Event::Answer { answer: Answer::Consent { action: Consent::Ask, result: Err(r), .. }, .. } if r.status == status::BLOCKED),
        "{evs:?}"
    );
    assert!(
        matches!(evs.last(), Some(Event::Answer { request: r, answer: Answer::Requests(Ok(users)) }) if *r == requests && users.len() == 1),
        "{evs:?}"
    );
}
