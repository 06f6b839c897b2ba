//! Rooms in the page's model (docs/PROTOCOL.md §16): a room's lines, unread counts,
//! invitations and removals; inviting by alias through a lookup; delivery states from the
//! server's answers and receipts; and the saved form. Runs natively and in headless Chromium,
//! like `logic.rs`.

use flexim_protocol::conversation::RoomId;
use flexim_protocol::{PublicKey, SecretKey, Status, User, status};
use flexim_session::{
    Answer, Delivery, Event, Lookup, Refusal, RequestId, RoomAction, RoomIncoming,
};
use flexim_web::model::{Context, Effect, Model};
use flexim_web::room_state::{RoomLineKind, Rooms};
use flexim_web::state::Contacts;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn key(seed: u8) -> PublicKey {
    SecretKey::from_bytes([seed; 32]).public_key()
}

fn ctx() -> Context {
    Context {
        now: 1_700_000_000,
        page_hidden: false,
        roster_pending: false,
        waiting: 0,
    }
}

const ROOM: RoomId = RoomId([7; 16]);

fn said(from: PublicKey, text: &str, id: &str) -> Event {
    Event::RoomMessage(RoomIncoming {
        room: ROOM,
        from,
        date: 1_700_000_001,
        text: text.into(),
        id: Some(id.into()),
        invited: false,
        sealed: String::new(),
        key: format!("k-{id}"),
        flags: vec![],
    })
}

fn answer(answer: Answer) -> Event {
    Event::Answer {
        request: RequestId(1),
        answer,
    }
}

fn refused(code: i8) -> Refusal {
    Refusal {
        status: code,
        reason: "no".into(),
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_room_message_is_a_line_unread_until_the_room_is_opened_and_acknowledged_once_shown() {
    let (me, bob) = (key(1), key(2));
    let mut m = Model::new(me, Contacts::new(), None, None);
    let effects = m.apply(said(bob, "hello room", "m1"), &ctx());
    assert!(
        effects.contains(&Effect::Acknowledge("m1".into())),
        "{effects:?}"
    );
    let room = m.rooms.get(&ROOM).expect("the room is listed");
    assert_eq!(room.lines.len(), 1);
    assert_eq!(room.lines[0].kind, RoomLineKind::In);
    assert_eq!(room.lines[0].sender(), Some(bob));
    assert_eq!(room.unread, 1);
    assert_eq!(m.rooms.total_unread(), 1);
    assert!(
        m.rooms_dirty,
        "the line must be saved before it is acknowledged"
    );
    // Opening it reads it, asks for the member list, and closes the open conversation.
    m.open_conversation(&bob, 1);
    let effects = m.open_room(&ROOM, 2);
    assert!(effects.contains(&Effect::AskMembers(ROOM)), "{effects:?}");
    assert_eq!(m.contacts.open_key(), None);
    assert_eq!(m.rooms.total_unread(), 0);
    // While it is open, a new line is read at once; opening a conversation closes the room.
    m.apply(said(bob, "again", "m2"), &ctx());
    assert_eq!(m.rooms.total_unread(), 0);
    m.open_conversation(&bob, 3);
    assert_eq!(m.rooms.open_id(), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn membership_changes_are_notes_and_a_removal_keeps_the_room_readable() {
    let (me, alice, carol) = (key(1), key(2), key(3));
    let mut m = Model::new(me, Contacts::new(), None, None);
    m.apply(
        Event::Invited {
            room: ROOM,
            from: alice,
        },
        &ctx(),
    );
    let room = m.rooms.get(&ROOM).unwrap();
    assert!(room.invited);
    assert_eq!(room.invited_by, Some(alice.to_hex()));
    // Accepted: no longer an invitation.
    m.apply(
        answer(Answer::Room {
            room: ROOM,
            action: RoomAction::Join,
            result: Ok(Status::new(status::OK, "ok")),
        }),
        &ctx(),
    );
    assert!(!m.rooms.get(&ROOM).unwrap().invited);
    m.apply(
        Event::RoomChanged {
            room: ROOM,
            by: alice,
            added: vec![carol],
            removed: vec![],
            epoch: 3,
        },
        &ctx(),
    );
    m.apply(
        Event::RoomMember {
            room: ROOM,
            member: carol,
            joined: false,
            by: Some(carol),
        },
        &ctx(),
    );
    let notes: Vec<String> = (m.rooms.get(&ROOM).unwrap().lines.iter())
        .filter(|l| l.kind == RoomLineKind::Note)
        .map(|l| l.text.clone())
        .collect();
    let (a, c) = (m.name_of(&alice), m.name_of(&carol));
    assert!(notes.contains(&format!("{a} added {c}")), "{notes:?}");
    assert!(notes.contains(&format!("{c} left")), "{notes:?}");
    assert_eq!(m.rooms.total_unread(), 0, "notes are not unread messages");
    m.apply(
        Event::RemovedFromRoom {
            room: ROOM,
            by: alice,
        },
        &ctx(),
    );
    let removed = m.rooms.get(&ROOM).unwrap().removed.clone();
    assert_eq!(removed, Some(format!("{a} removed you from this room")));
    // The engine forgot the group, but the page keeps what was said.
    m.rooms.sync_with(&[], 0);
    assert!(m.rooms.get(&ROOM).is_some());
}

#[wasm_bindgen_test(unsupported = test)]
fn an_invitation_by_alias_is_looked_up_first_and_a_key_is_invited_at_once() {
    let (me, bob) = (key(1), key(2));
    let mut m = Model::new(me, Contacts::new(), None, None);
    let effects = m.invite_query(&ROOM, " Bob ");
    assert!(
        effects.contains(&Effect::AskUser {
            query: "Bob".into(),
            purpose: Lookup::Refresh
        }),
        "{effects:?}"
    );
    // Another lookup's answer is not taken for the invitation's.
    let other = User {
        aliases: vec!["dave".into()],
        key: key(4),
        last_seen: 0,
        online: None,
    };
    let effects = m.apply(
        answer(Answer::User {
            query: "dave".into(),
            purpose: Lookup::Refresh,
            result: Ok(other),
        }),
        &ctx(),
    );
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Invite { .. })),
        "{effects:?}"
    );
    let user = User {
        aliases: vec!["bob".into()],
        key: bob,
        last_seen: 0,
        online: None,
    };
    let effects = m.apply(
        answer(Answer::User {
            query: "bob".into(),
            purpose: Lookup::Refresh,
            result: Ok(user),
        }),
        &ctx(),
    );
    assert!(
        effects.contains(&Effect::Invite {
            room: ROOM,
            key: bob
        }),
        "{effects:?}"
    );
    // An unknown alias is said so; a key needs no lookup; one's own key is refused.
    m.invite_query(&ROOM, "nobody");
    let effects = m.apply(
        answer(Answer::User {
            query: "nobody".into(),
            purpose: Lookup::Refresh,
            result: Err(refused(status::NO_SUCH_USER)),
        }),
        &ctx(),
    );
    assert_eq!(
        effects,
        vec![Effect::RoomError(
            "Nobody is registered as “nobody”.".into()
        )]
    );
    let effects = m.invite_query(&ROOM, &bob.to_hex());
    assert!(
        effects.contains(&Effect::Invite {
            room: ROOM,
            key: bob
        }),
        "{effects:?}"
    );
    let effects = m.invite_query(&ROOM, &me.to_hex());
    assert!(
        matches!(&effects[..], [_, Effect::RoomError(t)] if t.contains("already")),
        "{effects:?}"
    );
    // The server's refusal says why in words.
    let effects = m.apply(
        answer(Answer::Room {
            room: ROOM,
            action: RoomAction::Invite(bob),
            result: Err(refused(status::NO_KEY_PACKAGE)),
        }),
        &ctx(),
    );
    assert!(
        matches!(&effects[..], [Effect::RoomError(t)] if t.contains("no key package left")),
        "{effects:?}"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_sent_line_moves_forward_with_the_answer_and_the_members_receipts() {
    let me = key(1);
    let mut m = Model::new(me, Contacts::new(), None, None);
    let line = m.room_line_out(&ROOM, "hi all", 5);
    m.room_sent(&ROOM, line, Ok("r1".into()));
    let state = |m: &Model| m.rooms.get(&ROOM).unwrap().lines[0].delivery.clone();
    assert_eq!(state(&m), Some(Delivery::Sending));
    m.apply(
        answer(Answer::Sent {
            id: "r1".into(),
            delivery: Some(Delivery::Relayed),
            result: Ok(Status::new(status::RELAYED, "relayed")),
            late: false,
        }),
        &ctx(),
    );
    assert_eq!(state(&m), Some(Delivery::Relayed));
    for _ in 0..2 {
        m.apply(
            Event::Receipt {
                id: "r1".into(),
                delivery: Delivery::Delivered,
                status: Status::new(status::DELIVERED, "delivered"),
            },
            &ctx(),
        );
    }
    assert_eq!(state(&m), Some(Delivery::Delivered));
    // A line that could not be sent says why.
    let line = m.room_line_out(&ROOM, "offline", 6);
    m.room_sent(&ROOM, line, Err("not sent: not connected".into()));
    let last = m.rooms.get(&ROOM).unwrap().lines[1].delivery.clone();
    assert_eq!(
        last,
        Some(Delivery::Failed("not sent: not connected".into()))
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn the_saved_rooms_come_back_and_only_the_engines_rooms_are_listed() {
    let (me, bob) = (key(1), key(2));
    let mut m = Model::new(me, Contacts::new(), None, None);
    m.apply(said(bob, "kept", "m1"), &ctx());
    let gone = RoomId([9; 16]);
    m.rooms.note(&gone, "You created this room".into(), 1);
    let mut back = Rooms::from_json(&m.rooms.to_json()).unwrap();
    let room = back.get(&ROOM).unwrap();
    assert_eq!(room.lines[0].text, "kept");
    assert_eq!(room.unread, 1);
    assert!(back.get(&gone).is_some());
    // The engine is in ROOM only (and was invited to a third): the page follows it.
    let third = RoomId([3; 16]);
    back.sync_with(&[(ROOM, false), (third, true)], 10);
    assert!(back.get(&gone).is_none());
    assert!(back.get(&third).unwrap().invited);
    assert!(Rooms::from_json("not json").is_err());
    // Leaving forgets the room.
    m.open_room(&ROOM, 1);
    m.apply(
        answer(Answer::Room {
            room: ROOM,
            action: RoomAction::Leave,
            result: Ok(Status::new(status::OK, "left")),
        }),
        &ctx(),
    );
    assert!(m.rooms.get(&ROOM).is_none());
    assert_eq!(m.rooms.open_id(), None);
}
