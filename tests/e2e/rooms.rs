//! Rooms end to end (docs/PROTOCOL.md §16), with the one client engine on both transports and
//! real MLS: a three-member room across TCP and WebSocket that every member sees in one order,
//! an offline member catching up, removal and what it does to the removed member's keys, a
//! KeyPackage shortage, and two members racing to commit.

use std::time::Duration;

use flexim_client::protocol::conversation::RoomId;
use flexim_client::protocol::{PublicKey, status};
use flexim_client::{Client, ClientError, ConnectOptions, Endpoint, Event, Identity, RoomIncoming};
use flexim_tests::{TestServer, WAIT, befriend, new_key};

/// A user of the test: its identity and its client.
struct User {
    /// The key pair.
    id: Identity,
    /// The logged-in client.
    client: Client,
}

impl User {
    /// Logs in on `server` (TCP or a ws:// URL), with rooms saved earlier if any.
    async fn login(server: &str, id: Identity, rooms: Option<flexim_client::SavedRooms>) -> User {
        let options = ConnectOptions {
            rooms,
            ..Default::default()
        };
        let client = Client::connect_with(Endpoint::parse(server).unwrap(), &id, options)
            .await
            .unwrap();
        User { id, client }
    }

    fn key(&self) -> PublicKey {
        self.id.public_key()
    }

    /// Waits for the first event `pick` takes, leaving nothing else unread that matters here.
    async fn wait<T>(&mut self, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        loop {
            let event = tokio::time::timeout(WAIT, self.client.next_event())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap();
            if let Event::RoomMessage(m) = &event
                && let Some(id) = &m.id
            {
                self.client.acknowledge(id);
            }
            if matches!(event, Event::Closed) {
                panic!("closed while waiting for {what}");
            }
            if let Some(t) = pick(event) {
                return t;
            }
        }
    }

    /// The next room message.
    async fn room_message(&mut self) -> RoomIncoming {
        self.wait("a room message", |e| match e {
            Event::RoomMessage(m) => Some(m),
            _ => None,
        })
        .await
    }

    /// Waits for an invitation and accepts it.
    async fn accept_invitation(&mut self) -> RoomId {
        let room = self
            .wait("an invitation", |e| match e {
                Event::Invited { room, .. } => Some(room),
                _ => None,
            })
            .await;
        let s = self.client.accept_invitation(room).await.unwrap();
        assert_eq!(s.status, status::OK, "{s:?}");
        room
    }

    /// Reads events for a while, returning the room messages among them (none expected, by the
    /// callers that use it to show that nothing comes).
    async fn quiet_for(&mut self, d: Duration) -> Vec<RoomIncoming> {
        let mut got = Vec::new();
        let until = tokio::time::Instant::now() + d;
        while let Ok(event) = tokio::time::timeout_at(until, self.client.next_event()).await {
            match event.unwrap() {
                Event::RoomMessage(m) => got.push(m),
                Event::Closed => break,
                _ => {}
            }
        }
        got
    }
}

/// Alice's room with Bob (on WebSocket) and Carol, every invitation accepted.
async fn three_members(server: &TestServer) -> (User, User, User, RoomId) {
    let tcp = server.tcp.to_string();
    let mut alice = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    let mut bob = User::login(&server.ws, Identity::from_secret(new_key()), None).await;
    let mut carol = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    befriend(&mut alice.client, &mut bob.client).await;
    befriend(&mut alice.client, &mut carol.client).await;
    for u in [&mut bob, &mut carol] {
        assert!(u.client.publish_key_packages().await.unwrap() >= 16);
    }
    let room = alice.client.create_room().await.unwrap();
    let s = alice
        .client
        .invite(room, &bob.key().to_hex())
        .await
        .unwrap();
    assert!(!status::is_error(s.status), "{s:?}");
    assert_eq!(bob.accept_invitation().await, room);
    alice
        .client
        .invite(room, &carol.key().to_hex())
        .await
        .unwrap();
    assert_eq!(carol.accept_invitation().await, room);
    // Bob learns of Carol from Alice's commit, through the room.
    let added = bob
        .wait("Carol's addition", |e| match e {
            Event::RoomChanged { added, .. } => Some(added),
            _ => None,
        })
        .await;
    assert_eq!(added, vec![carol.key()]);
    (alice, bob, carol, room)
}

/// Whether two members saw the messages they both received in the same order.
fn same_order(a: &[String], b: &[String]) {
    let common_a: Vec<&String> = a.iter().filter(|m| b.contains(m)).collect();
    let common_b: Vec<&String> = b.iter().filter(|m| a.contains(m)).collect();
    assert_eq!(
        common_a, common_b,
        "two members saw the room in different orders"
    );
}

#[tokio::test]
async fn three_members_on_tcp_and_websocket_see_one_order() {
    let server = TestServer::start();
    let (mut alice, mut bob, mut carol, room) = three_members(&server).await;
    let safety = alice.client.safety_number(room).unwrap();
    assert_eq!(safety, bob.client.safety_number(room).unwrap());
    assert_eq!(safety, carol.client.safety_number(room).unwrap());
    let list = carol.client.room_members(room).await.unwrap();
    assert_eq!(list.members.len(), 3);
    assert_eq!(list.admins, vec![alice.key().to_hex()]);

    // Everyone writes at once, several times: the server puts them in one order.
    for round in 0..3 {
        let texts = [
            format!("alice {round}"),
            format!("bob {round}"),
            format!("carol {round}"),
        ];
        let (a, b, c) = tokio::join!(
            alice.client.send_room(room, &texts[0]),
            bob.client.send_room(room, &texts[1]),
            carol.client.send_room(room, &texts[2]),
        );
        for answer in [a, b, c] {
            let s = answer.unwrap();
            assert!(
                matches!(s.status, status::RELAYED | status::STORED),
                "{s:?}"
            );
        }
    }
    let mut seen = Vec::new();
    for u in [&mut alice, &mut bob, &mut carol] {
        let mut texts = Vec::new();
        let me = u.key();
        for _ in 0..6 {
            let m = u.room_message().await;
            assert_eq!(m.room, room);
            assert_ne!(m.from, me, "a member's own message came back to it");
            texts.push(m.text);
        }
        seen.push(texts);
    }
    same_order(&seen[0], &seen[1]);
    same_order(&seen[1], &seen[2]);
    same_order(&seen[0], &seen[2]);
}

#[tokio::test]
async fn an_offline_member_catches_up_in_order_and_a_removed_one_reads_nothing_after() {
    let server = TestServer::start();
    let (mut alice, mut bob, carol, room) = three_members(&server).await;

    // Carol goes away, keeping her rooms' state as the CLI keeps it in a file.
    let carol_rooms = carol.client.saved_rooms().unwrap();
    let carol_id = carol.id.clone();
    let mut carol = carol;
    let _ = carol.client.close().await;
    drop(carol);
    for n in 0..3 {
        // Stored for Carol, or relayed to her connection if the server has not seen it end
        // yet (then stored when it does): either way she gets them at her next login.
        let s = alice
            .client
            .send_room(room, &format!("while away {n}"))
            .await
            .unwrap();
        assert!(
            matches!(s.status, status::STORED | status::RELAYED),
            "{s:?}"
        );
    }
    bob.client.send_room(room, "bob too").await.unwrap();
    let bob_saw: Vec<String> = [
        bob.room_message().await.text,
        bob.room_message().await.text,
        bob.room_message().await.text,
    ]
    .into();
    let mut carol = User::login(&server.tcp.to_string(), carol_id, Some(carol_rooms)).await;
    let mut carol_saw = Vec::new();
    for _ in 0..4 {
        carol_saw.push(carol.room_message().await.text);
    }
    assert_eq!(
        &carol_saw[..3],
        &bob_saw[..],
        "the offline member caught up in the room's order"
    );
    assert_eq!(carol_saw[3], "bob too");

    // Bob is removed. He keeps a copy of his keys from before, as an attacker would.
    let bob_before = bob.client.saved_rooms().unwrap();
    let s = alice
        .client
        .remove_member(room, &bob.key().to_hex())
        .await
        .unwrap();
    assert!(!status::is_error(s.status), "{s:?}");
    let by = bob
        .wait("the removal", |e| match e {
            Event::RemovedFromRoom { by, .. } => Some(by),
            _ => None,
        })
        .await;
    assert_eq!(by, alice.key());
    alice
        .client
        .send_room(room, "bob must not read this")
        .await
        .unwrap();
    let after = carol
        .wait("the message after the removal", |e| match e {
            Event::RoomMessage(m) if m.text == "bob must not read this" => Some(m),
            _ => None,
        })
        .await;
    assert!(
        bob.quiet_for(Duration::from_millis(500)).await.is_empty(),
        "the server sent the removed member a later message"
    );
    // Even with the ciphertext (from a server that kept sending, or a capture of Carol's
    // copy) and every key he held before the removal, Bob cannot open it.
    let mut old = flexim_mls::Member::restore(bob_before.member_state()).unwrap();
    let bytes = base64_decode(&after.sealed);
    assert!(
        old.open(room.0, &bytes).is_err(),
        "a removed member opened a later message"
    );
    // And a message sent to the room by the removed member is refused.
    let refused = bob.client.send_room(room, "still here?").await;
    assert!(
        refused.is_err(),
        "a removed member could still send: {refused:?}"
    );
}

/// A program that ends before acknowledging a room message it opened (a CLI run that only
/// sent, a page closed too soon) gets the message again at its next login, and MLS cannot open
/// a message twice: the engine keeps the plaintext, saved with the rooms, until it is
/// acknowledged, and reports the copy from it.
#[tokio::test]
async fn a_room_message_opened_but_not_acknowledged_comes_again_after_a_restart() {
    let server = TestServer::start();
    let (mut alice, bob, carol, room) = three_members(&server).await;
    drop(carol);
    let bob_id = bob.id.clone();
    let mut bob = bob;
    alice.client.send_room(room, "read me twice").await.unwrap();
    let first = loop {
        let event = tokio::time::timeout(WAIT, bob.client.next_event())
            .await
            .expect("the message reaches Bob")
            .unwrap();
        if let Event::RoomMessage(m) = event {
            break m;
        }
    };
    assert_eq!(first.text, "read me twice");
    // Not acknowledged: Bob's program ends with the group's state as it is now (the message's
    // key used and deleted).
    let saved = bob.client.saved_rooms().unwrap();
    let _ = bob.client.close().await;
    drop(bob);
    let mut bob = User::login(&server.ws, bob_id.clone(), Some(saved)).await;
    let again = bob.room_message().await;
    assert_eq!(
        again.text, "read me twice",
        "the copy was reported from the kept text"
    );
    assert_eq!(again.from, alice.key());
    assert_eq!(again.id, first.id);
    // Acknowledged this time (room_message does): the kept text goes, and a later restart
    // gets nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let saved = bob.client.saved_rooms().unwrap();
    let _ = bob.client.close().await;
    drop(bob);
    let mut bob = User::login(&server.ws, bob_id, Some(saved)).await;
    assert!(bob.quiet_for(Duration::from_millis(500)).await.is_empty());
}

/// A room message written while the connection is down waits in the outbox, sealed, and goes
/// out at the next login before anything new; the members get it once. The room moved on an
/// epoch meanwhile (a member left and another committed the removal): sealed at the older
/// epoch, it still opens.
#[tokio::test]
async fn a_room_message_written_offline_goes_out_at_the_next_login() {
    let server = TestServer::start();
    let (mut alice, mut bob, mut carol, room) = three_members(&server).await;
    alice.client.close().await.unwrap();
    let offline = alice.client.send_room(room, "written offline").await;
    assert!(matches!(offline, Err(ClientError::Closed)), "{offline:?}");
    assert_eq!(alice.client.outbox().len(), 1, "kept for the next login");
    carol.client.leave_room(room).await.unwrap();
    let removed = bob
        .wait("Carol's removal", |e| match e {
            Event::RoomChanged { removed, .. } if !removed.is_empty() => Some(removed),
            _ => None,
        })
        .await;
    assert_eq!(removed, vec![carol.key()]);
    alice.client.reconnect().await.unwrap();
    let m = bob.room_message().await;
    assert_eq!((m.text.as_str(), m.from), ("written offline", alice.key()));
    // Bob's acknowledgement goes out while he reads on (and nothing comes twice); its receipt
    // confirms Alice's message, which leaves her outbox.
    assert!(
        bob.quiet_for(Duration::from_millis(300)).await.is_empty(),
        "a copy was shown twice"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while !alice.client.outbox().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never confirmed");
        let _ = tokio::time::timeout(Duration::from_millis(100), alice.client.next_event()).await;
    }
    alice.client.send_room(room, "after").await.unwrap();
    assert_eq!(bob.room_message().await.text, "after");
    assert!(
        bob.quiet_for(Duration::from_millis(300)).await.is_empty(),
        "a copy was shown twice"
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn running_out_of_key_packages_refuses_the_invitation_and_nothing_else() {
    let server = TestServer::start_with(&["--key-packages", "2"]);
    let tcp = server.tcp.to_string();
    let mut alice = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    let mut bob = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    befriend(&mut alice.client, &mut bob.client).await;
    assert_eq!(
        bob.client.publish_key_packages().await.unwrap(),
        2,
        "the server keeps 2"
    );
    let mut rooms = Vec::new();
    for _ in 0..3 {
        rooms.push(alice.client.create_room().await.unwrap());
    }
    alice
        .client
        .invite(rooms[0], &bob.key().to_hex())
        .await
        .unwrap();
    alice
        .client
        .invite(rooms[1], &bob.key().to_hex())
        .await
        .unwrap();
    match alice.client.invite(rooms[2], &bob.key().to_hex()).await {
        Err(ClientError::Server { status, .. }) => assert_eq!(status, status::NO_KEY_PACKAGE),
        other => panic!("expected -29, got {other:?}"),
    }
    // The room is fine: Bob, once he publishes again, is added; the other rooms work.
    assert!(bob.client.publish_key_packages().await.unwrap() >= 1);
    alice
        .client
        .invite(rooms[2], &bob.key().to_hex())
        .await
        .unwrap();
    for _ in 0..3 {
        bob.accept_invitation().await;
    }
    for room in &rooms {
        alice.client.send_room(*room, "hello").await.unwrap();
        let m = bob.room_message().await;
        assert_eq!(m.text, "hello");
    }
}

#[tokio::test]
async fn two_members_racing_to_commit_are_put_in_one_order() {
    let server = TestServer::start();
    let (mut alice, mut bob, mut carol, room) = three_members(&server).await;
    // Carol leaves: Alice's and Bob's clients both commit her removal at once (any member may
    // remove one who left). The server takes one and refuses the other as stale.
    carol.client.leave_room(room).await.unwrap();
    drop(carol);
    let mut epochs = Vec::new();
    for u in [&mut alice, &mut bob] {
        let (removed, epoch) = u
            .wait("Carol's removal", |e| match e {
                Event::RoomChanged { removed, epoch, .. } if !removed.is_empty() => {
                    Some((removed, epoch))
                }
                _ => None,
            })
            .await;
        assert_eq!(removed.len(), 1);
        epochs.push(epoch);
    }
    assert_eq!(
        epochs[0], epochs[1],
        "both members are at the same epoch after the race"
    );
    // Nobody committed twice, and the room goes on.
    assert!(alice.client.group_members(room).unwrap().len() == 2);
    alice
        .client
        .send_room(room, "after the race")
        .await
        .unwrap();
    let m = bob.room_message().await;
    assert_eq!(m.text, "after the race");
    let list = bob.client.room_members(room).await.unwrap();
    assert_eq!(list.epoch, epochs[0]);
}

/// Runs `flexim ARGS... --server S --key K` and returns (exit code, stdout, stderr).
fn cli(action: &[&str], server: &str, key: &str) -> (i32, String, String) {
    let mut args = vec![action[0], "--server", server, "--key", key];
    args.extend_from_slice(&action[1..]);
    flexim_tests::flexim(&args)
}

#[test]
fn the_cli_holds_a_room_across_runs() {
    let server = TestServer::start();
    let dir = flexim_tests::TempDir::new("cli-rooms");
    let keygen = |name: &str| {
        let path = dir
            .0
            .join(format!("{name}.key"))
            .to_str()
            .unwrap()
            .to_string();
        let (code, out, err) = flexim_tests::flexim(&["keygen", "--out", &path]);
        assert_eq!(code, 0, "{err}");
        (path, out.trim().to_string())
    };
    let (alice, alice_pub) = keygen("alice");
    let (bob, bob_pub) = keygen("bob");
    let tcp = server.tcp.to_string();
    // Contacts first (consent), which also logs both in once and publishes Bob's KeyPackages.
    let (code, _, err) = cli(&["requests", "--accept", &bob_pub], &tcp, &alice);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["requests", "--accept", &alice_pub], &server.ws, &bob);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = cli(&["room", "create"], &tcp, &alice);
    assert_eq!(code, 0, "{err}");
    let room = out.trim().to_string();
    assert!(RoomId::parse(&room).is_some(), "{out}");
    let (code, out, err) = cli(&["room", "invite", &room[..6], &bob_pub], &tcp, &alice);
    assert_eq!(code, 0, "{out}{err}");

    // Bob hears of the invitation in one run and accepts it in the next: the Welcome he
    // joined with is kept in bob.key.rooms in between.
    let (code, _, err) = cli(&["listen", "--timeout", "1"], &server.ws, &bob);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("invited you to room"), "{err}");
    assert!(std::path::Path::new(&format!("{bob}.rooms")).exists());
    let (code, out, err) = cli(&["room", "list"], &server.ws, &bob);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&room) && out.contains("invitation"), "{out}");
    let (code, _, err) = cli(&["room", "accept", &room], &server.ws, &bob);
    assert_eq!(code, 0, "{err}");

    let (code, _, err) = cli(&["room", "say", &room, "hello", "bob"], &tcp, &alice);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(
        &["listen", "--json", "--count", "1", "--timeout", "10"],
        &server.ws,
        &bob,
    );
    assert_eq!(code, 0, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["room"], room.as_str());
    assert_eq!(line["msg"], "hello bob");
    assert_eq!(line["from"], alice_pub.as_str());

    // Both see the same members and the same safety number.
    let (_, alice_view, _) = cli(&["room", "members", &room], &tcp, &alice);
    let (_, bob_view, _) = cli(&["room", "members", &room], &server.ws, &bob);
    let safety = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("safety number"))
            .map(str::to_string)
    };
    assert!(safety(&alice_view).is_some(), "{alice_view}");
    assert_eq!(safety(&alice_view), safety(&bob_view));
    assert!(
        alice_view.contains(&bob_pub) && alice_view.contains("(admin)"),
        "{alice_view}"
    );
    assert!(!alice_view.contains("NOT IN"), "{alice_view}");

    // Removal, by the admin; Bob's next run is told, and his sends are refused.
    let (code, _, err) = cli(&["room", "remove", &room, &bob_pub], &tcp, &alice);
    assert_eq!(code, 0, "{err}");
    let (_, _, err) = cli(&["listen", "--timeout", "1"], &server.ws, &bob);
    assert!(err.contains("removed you from room"), "{err}");
    let (code, _, err) = cli(&["room", "say", &room, "still here?"], &server.ws, &bob);
    assert_ne!(code, 0, "a removed member could still send: {err}");
}
