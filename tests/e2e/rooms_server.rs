//! The server as MLS delivery service (docs/PROTOCOL.md §16), against real server processes,
//! with real MLS made by `flexim_mls::Member` on the clients' side: KeyPackages checked and
//! handed out once, rooms created, listed and left, room messages refused to non-members,
//! one winner of a commit race, fan-out to online and offline members in one order, a removed
//! member cut off, and a room shared by two nodes on one Redis.

mod party;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flexim_mls::Received;
use flexim_protocol::Datum;
use flexim_protocol::status::{self, cmd};
use flexim_tests::{RedisServer, TestServer, new_key};
use party::{Party, add, hears_nothing, room_id, room_of};

#[tokio::test]
async fn rooms_key_packages_are_the_publishers_own_handed_out_once_and_not_drained_by_strangers() {
    let server = TestServer::start_with(&["--request-messages", "1", "--key-packages", "3"]);
    let (alice, bob, mallory) = (new_key(), new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let mut a = Party::login(server.tcp, alice).await;
    let mut b = Party::login(server.tcp, bob).await;
    let mut m = Party::login(server.tcp, mallory).await;

    // Bob's KeyPackages, published by Alice, are refused: none is kept.
    let bobs: Vec<String> = b
        .mls
        .key_packages(2)
        .unwrap()
        .iter()
        .map(|p| BASE64.encode(p))
        .collect();
    let s = a.status(cmd::KEYPACKAGES, &[&bobs[0], &bobs[1]]).await;
    assert_eq!(s.status, status::BAD_ARGUMENT, "{s:?}");
    assert!(s.payload.contains("KeyPackage 0"), "{s:?}");
    assert_eq!(a.status(cmd::KEYPACKAGES, &[]).await.payload, "0");
    let s = b.status(cmd::KEYPACKAGES, &[&bobs[0], "not base64!"]).await;
    assert_eq!(s.status, status::BAD_ARGUMENT, "{s:?}");
    assert!(s.payload.contains("KeyPackage 1"), "{s:?}");

    // Bob's own are kept up to the cap, oldest first.
    let s = b.status(cmd::KEYPACKAGES, &[&bobs[0], &bobs[1]]).await;
    assert_eq!((s.status, s.payload.as_str()), (status::KEY_PACKAGES, "2"));
    assert_eq!(b.publish(2).await.payload, "3", "the cap keeps the oldest");

    // A stranger's claim is a message into Bob's requests box: one, then -25.
    let s = m.claim(&b.pk()).await;
    assert_eq!(s.status, status::KEY_PACKAGE, "{s:?}");
    assert_eq!(s.payload, bobs[0], "the oldest first, byte for byte");
    assert_eq!(m.claim(&b.pk()).await.status, status::NOT_ACCEPTED);

    // A contact gets each of the rest once, then -29.
    assert_eq!(a.claim(&b.pk()).await.payload, bobs[1]);
    assert_eq!(a.claim(&b.pk()).await.status, status::KEY_PACKAGE);
    let s = a.claim(&b.pk()).await;
    assert_eq!(s.status, status::NO_KEY_PACKAGE, "{s:?}");
    assert_eq!(b.status(cmd::KEYPACKAGES, &[]).await.payload, "0");
    assert_eq!(
        a.claim(&new_key().public_key()).await.status,
        status::NO_SUCH_USER
    );
}

#[tokio::test]
async fn rooms_are_created_listed_and_left() {
    let server = TestServer::start_with(&["--max-rooms", "2"]);
    let (room, mut p) = room_of(&server, 2).await;
    let (a, rest) = p.split_first_mut().unwrap();
    let b = &mut rest[0];
    let hex = room.to_hex();
    assert_eq!(
        a.status(cmd::CREATEROOM, &[&hex]).await.status,
        status::ALIAS_TAKEN
    );
    assert_eq!(
        a.status(cmd::CREATEROOM, &["xyz"]).await.status,
        status::BAD_ARGUMENT
    );
    let alias = "abcdefabcdefabcdefabcdefabcdefab";
    assert_eq!(
        a.status(cmd::REGISTER, &[alias]).await.status,
        status::BAD_ARGUMENT
    );

    let list = b.members(room).await.unwrap();
    assert_eq!(list.members, vec![a.pk().to_hex(), b.pk().to_hex()]);
    assert_eq!((list.admins, list.epoch), (vec![a.pk().to_hex()], 1));

    // Bob's second room is his last.
    let second = room_id();
    assert_eq!(
        b.status(cmd::CREATEROOM, &[&second.to_hex()]).await.status,
        status::OK
    );
    let third = room_id();
    let s = b.status(cmd::CREATEROOM, &[&third.to_hex()]).await;
    assert_eq!(s.status, status::ROOM_LIMIT, "{s:?}");

    // Bob leaves: Alice is told, Bob is no member any more.
    assert_eq!(b.status(cmd::LEAVE, &[&hex]).await.status, status::OK);
    let part = loop {
        if let Datum::RoomMemberPart(p) = a.next().await {
            break p;
        }
    };
    assert_eq!(
        (part.room.as_str(), part.member.clone()),
        (hex.as_str(), b.pk().to_hex())
    );
    assert_eq!(part.by, Some(b.pk().to_hex()));
    assert_eq!(
        b.members(room).await.unwrap_err().status,
        status::NO_SUCH_USER
    );
    assert_eq!(
        b.status(cmd::LEAVE, &[&hex]).await.status,
        status::NO_SUCH_USER
    );
    assert_eq!(
        a.members(room).await.unwrap().members,
        vec![a.pk().to_hex()]
    );

    // The last member's LEAVE deletes the room; its id is free again.
    assert_eq!(a.status(cmd::LEAVE, &[&hex]).await.status, status::OK);
    assert_eq!(
        a.members(room).await.unwrap_err().status,
        status::NO_SUCH_USER
    );
    assert_eq!(b.status(cmd::CREATEROOM, &[&hex]).await.status, status::OK);
    assert_eq!(b.members(room).await.unwrap().admins, vec![b.pk().to_hex()]);
}

#[tokio::test]
async fn rooms_refuse_a_non_members_message_and_the_members_go_on() {
    let server = TestServer::start();
    let (room, mut p) = room_of(&server, 2).await;
    let mallory = new_key();
    server.introduce(&[&mallory]).await;
    let mut m = Party::login(server.tcp, mallory).await;
    // A real message of the room, replayed by someone who is not in it.
    let sealed = p[0].mls.seal(room.0, b"for members").unwrap();
    let s = m.send_room(room, &sealed, &[], &[], None).await;
    assert_eq!(s.status, status::NO_SUCH_USER, "{s:?}");
    // A member's message that is no MLS message of the room is refused too.
    let s = p[0].send_room(room, b"not mls", &[], &[], None).await;
    assert_eq!(s.status, status::BAD_ARGUMENT, "{s:?}");

    let sent = p[0].say(room, "hello room").await;
    assert_eq!(sent.status, status::RELAYED);
    let (_, got) = p[1].open(room).await;
    assert!(
        matches!(&got, Received::Application { plaintext, .. } if plaintext == b"hello room"),
        "Bob gets Alice's message and nothing of Mallory's: {got:?}"
    );
    // Bob acknowledged his copy: Alice gets its receipt, as for a 1:1 message.
    loop {
        if let Datum::Status(s) = p[0].conn.datum().await.unwrap()
            && s.status == status::DELIVERED
        {
            assert_eq!(s.id, sent.id, "{s:?}");
            break;
        }
    }
}

#[tokio::test]
async fn rooms_a_commit_race_has_one_winner_that_every_member_sees() {
    let server = TestServer::start();
    let (room, mut p) = room_of(&server, 4).await;
    // Dave leaves: his leaf stays in the group until a member commits its removal.
    let dave = p[3].pk();
    assert_eq!(
        p[3].status(cmd::LEAVE, &[&room.to_hex()]).await.status,
        status::OK
    );

    // Bob and Carol both commit Dave's removal at epoch 1, at once.
    let from_bob = p[1].mls.remove(room.0, &[dave.0]).unwrap();
    let from_carol = p[2].mls.remove(room.0, &[dave.0]).unwrap();
    let (left, right) = p.split_at_mut(2);
    let (bob, carol) = (&mut left[1], &mut right[0]);
    let departed = [dave];
    let (b, c) = tokio::join!(
        bob.send_room(room, &from_bob.message, &[], &departed, None),
        carol.send_room(room, &from_carol.message, &[], &departed, None)
    );
    let won = [b.status, c.status]
        .iter()
        .filter(|s| **s == status::RELAYED || **s == status::STORED)
        .count();
    assert_eq!(won, 1, "one winner: {b:?} {c:?}");
    let (winner, loser, commit, lost) = if b.status == status::STALE_EPOCH {
        (2, 1, from_carol.message, b)
    } else {
        (1, 2, from_bob.message, c)
    };
    assert_eq!(lost.status, status::STALE_EPOCH, "the other is told -27");
    assert_eq!(lost.payload, "2", "the payload is the room's epoch");
    p[winner].mls.confirm(room.0).unwrap();
    p[loser].mls.abandon(room.0).unwrap();

    // Alice and the loser both get the winner's commit, byte for byte, and nothing else.
    for i in [0, loser] {
        let (m, got) = p[i].open(room).await;
        assert_eq!(
            BASE64.decode(&m.msg).unwrap(),
            commit,
            "member {i} gets the winner's"
        );
        assert!(matches!(got, Received::Commit { epoch: 2, .. }), "{got:?}");
    }
    assert_eq!(p[0].members(room).await.unwrap().epoch, 2);
    // Everyone is at one epoch: a message from the loser opens for the others.
    assert_eq!(
        p[loser].say(room, "after the race").await.status,
        status::RELAYED
    );
    for i in [0, winner] {
        let (_, got) = p[i].open(room).await;
        assert!(matches!(got, Received::Application { .. }), "{got:?}");
    }
}

#[tokio::test]
async fn rooms_fan_out_to_online_and_offline_members_in_one_order_across_a_restart() {
    let server = TestServer::start();
    let (room, mut p) = room_of(&server, 3).await;
    let carol = p[2].pk();
    p[2].conn.shutdown().await.unwrap();
    server.until_offline(&carol).await;

    let mut sent = Vec::new();
    for i in 0..3 {
        let text = format!("alice {i}");
        let s = p[0].say(room, &text).await;
        assert_eq!(s.status, status::STORED, "Carol's copy is stored: {s:?}");
        assert!(s.payload.contains("1 relayed, 1 stored"), "{s:?}");
        sent.push(text);
        let (_, got) = p[1].open(room).await;
        assert!(matches!(got, Received::Application { .. }));
    }
    assert_eq!(p[1].say(room, "bob 0").await.status, status::STORED);
    sent.push("bob 0".into());
    let _ = p[0].open(room).await;

    let server = server.restart();
    p[2].reconnect(server.tcp).await;
    for text in &sent {
        let (_, got) = p[2].open(room).await;
        match got {
            Received::Application { plaintext, .. } => {
                assert_eq!(String::from_utf8(plaintext).unwrap(), *text, "in order")
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    // The room itself survived the restart: Carol writes, Bob (back too) reads it.
    p[1].reconnect(server.tcp).await;
    let s = p[2].say(room, "back").await;
    assert_eq!(s.status, status::STORED, "Alice is offline now: {s:?}");
    let (_, got) = p[1].open(room).await;
    assert!(matches!(got, Received::Application { .. }), "{got:?}");
}

#[tokio::test]
async fn rooms_a_removed_member_gets_its_removal_and_nothing_after() {
    let server = TestServer::start();
    let (room, mut p) = room_of(&server, 3).await;
    let carol = p[2].pk();
    let commit = p[0].mls.remove(room.0, &[carol.0]).unwrap();
    let s = p[0]
        .send_room(room, &commit.message, &[], &[carol], None)
        .await;
    assert_eq!(s.status, status::RELAYED, "{s:?}");
    p[0].mls.confirm(room.0).unwrap();
    for i in [1, 2] {
        let (m, got) = p[i].open(room).await;
        assert_eq!(BASE64.decode(&m.msg).unwrap(), commit.message);
        match got {
            Received::Commit { removed_me, .. } => assert_eq!(removed_me, i == 2),
            other => panic!("expected the commit, got {other:?}"),
        }
        let part = loop {
            if let Datum::RoomMemberPart(part) = p[i].next().await {
                break part;
            }
        };
        assert_eq!(part.member, carol.to_hex());
        assert_eq!(part.by, Some(p[0].pk().to_hex()));
    }
    assert_eq!(
        p[0].say(room, "without carol").await.status,
        status::RELAYED
    );
    let (_, got) = p[1].open(room).await;
    assert!(matches!(got, Received::Application { .. }));
    hears_nothing(&mut p[2]).await;
    let s = p[2].send_room(room, b"anything", &[], &[], None).await;
    assert_eq!(s.status, status::NO_SUCH_USER);
}

#[tokio::test]
async fn rooms_two_nodes_on_one_redis_share_a_room() {
    let redis = RedisServer::start();
    let one = TestServer::start_with(&["--store", &redis.url]);
    let two = TestServer::start_with(&["--store", &redis.url]);
    let (alice, bob, carol) = (new_key(), new_key(), new_key());
    one.introduce(&[&alice, &bob, &carol]).await;
    let mut a = Party::login(one.tcp, alice).await;
    let mut b = Party::login(two.tcp, bob).await;
    let mut c = Party::login(two.tcp, carol).await;
    for x in [&mut b, &mut c] {
        assert_eq!(x.publish(1).await.payload, "1");
    }
    let room = room_id();
    assert_eq!(
        a.status(cmd::CREATEROOM, &[&room.to_hex()]).await.status,
        status::OK
    );
    a.mls.create(room.0).unwrap();
    // Bob, on the other node, is invited through the shared store.
    add(&mut a, room, &mut [&mut b]).await;
    assert_eq!(b.say(room, "from node two").await.status, status::STORED);
    let (_, got) = a.open(room).await;
    assert!(matches!(got, Received::Application { .. }));

    // Carol is added on node one; node two's view of the room follows.
    add(&mut a, room, &mut [&mut c]).await;
    let (_, got) = b.open(room).await;
    assert!(matches!(got, Received::Commit { epoch: 2, .. }), "{got:?}");
    let s = c.say(room, "carol on two").await;
    assert_eq!(
        s.status,
        status::STORED,
        "Alice's copy crosses nodes in the store: {s:?}"
    );
    assert!(s.payload.contains("1 relayed, 1 stored"), "{s:?}");
    for x in [&mut a, &mut b] {
        let (_, got) = x.open(room).await;
        assert!(matches!(got, Received::Application { .. }), "{got:?}");
    }
    assert_eq!(b.members(room).await.unwrap().epoch, 2);
}

#[tokio::test]
async fn rooms_a_commit_reaches_a_full_queue_and_adds_are_held_to_consent_and_limits() {
    let server =
        TestServer::start_with(&["--max-offline-messages", "1", "--max-room-members", "4"]);
    let (room, mut p) = room_of(&server, 3).await;
    let (dave, erin, frank) = (new_key(), new_key(), new_key());
    server.introduce(&[&dave, &erin, &frank]).await;
    let mut others = Vec::new();
    for k in [dave, erin, frank] {
        let mut x = Party::login(server.tcp, k).await;
        assert_eq!(x.publish(1).await.payload, "1");
        others.push(x);
    }
    let carol = p[2].pk();
    p[2].conn.shutdown().await.unwrap();
    server.until_offline(&carol).await;

    // Carol's queue holds one message: the second is not kept for her.
    assert_eq!(p[0].say(room, "one").await.status, status::STORED);
    let s = p[0].say(room, "two").await;
    assert_eq!(s.status, status::RELAYED, "{s:?}");
    assert!(s.payload.contains("1 not kept: queue full"), "{s:?}");

    // Erin blocked Alice after Alice claimed her KeyPackage: the invitation is refused.
    let s = p[0].claim(&others[1].pk()).await;
    let erins = BASE64.decode(&s.payload).unwrap();
    let alice = p[0].pk().to_hex();
    assert_eq!(
        others[1].status(cmd::BLOCK, &[&alice]).await.status,
        status::OK
    );
    let commit = p[0].mls.add(room.0, &[(others[1].pk().0, erins)]).unwrap();
    let erin = [others[1].pk()];
    let s = p[0]
        .send_room(room, &commit.message, &erin, &[], commit.welcome.as_deref())
        .await;
    assert_eq!(s.status, status::BLOCKED, "{s:?}");
    p[0].mls.abandon(room.0).unwrap();

    // Dave's add is a commit: Carol's full queue still takes it.
    let (dave, rest) = others.split_first_mut().unwrap();
    let s = add(&mut p[0], room, &mut [dave]).await;
    assert_eq!(s.status, status::STORED, "Carol's copy is stored: {s:?}");
    assert!(!s.payload.contains("not kept"), "{s:?}");
    let _ = p[1].open(room).await;
    // Dave accepted the invitation: Alice, a stranger to him before, is accepted now, so his
    // presence shows to her.
    match p[0].command(cmd::GETUSER, &[&dave.pk().to_hex()]).await {
        Datum::User(u) => assert_eq!(u.online, Some(true), "{u:?}"),
        other => panic!("expected a User, got {other:?}"),
    }

    // A fifth member is beyond the room's limit.
    let frank = &mut rest[1];
    let s = p[0].claim(&frank.pk()).await;
    let franks = BASE64.decode(&s.payload).unwrap();
    let commit = p[0].mls.add(room.0, &[(frank.pk().0, franks)]).unwrap();
    let s = p[0]
        .send_room(
            room,
            &commit.message,
            &[frank.pk()],
            &[],
            commit.welcome.as_deref(),
        )
        .await;
    assert_eq!(s.status, status::ROOM_LIMIT, "{s:?}");

    p[2].reconnect(server.tcp).await;
    let (_, got) = p[2].open(room).await;
    assert!(matches!(got, Received::Application { .. }), "{got:?}");
    let (_, got) = p[2].open(room).await;
    assert!(
        matches!(got, Received::Commit { epoch: 2, .. }),
        "Carol gets the commit: {got:?}"
    );
}
