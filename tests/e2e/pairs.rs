//! 1:1 conversations on MLS (docs/PROTOCOL.md §16.9), with the one client engine, a real
//! server process and real MLS: the first message makes the pair room, what the server stores
//! is an MLS message of it, and a thief who takes a user's keys after the user read a message
//! cannot open the copy it captured; a stranger's pair room waits in the requests box and a
//! block refuses it; two users writing first at once get one group; a member renews its leaf;
//! a server that rewrites a message's flags is seen.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flexim_client::protocol::conversation::{RoomId, pair_room};
use flexim_client::protocol::{Datum, Message, PublicKey, frame, status};
use flexim_client::{Client, ClientError, ConnectOptions, Endpoint, Event, Identity, Received};
use flexim_mls::ds::{self, Kind};
use flexim_mls::{Member, Received as Opened};
use flexim_server::store::{EmbeddedStore, Store};
use flexim_tests::{TestServer, WAIT, befriend, new_key};

/// A user of the test: its identity and its client, which writes 1:1 messages on MLS.
struct User {
    /// The key pair.
    id: Identity,
    /// The logged-in client.
    client: Client,
}

impl User {
    /// Logs in on `server` (TCP or a ws:// URL), with rooms saved earlier if any, and makes
    /// sure the server holds KeyPackages of it (others need one to make the pair room).
    async fn login(server: &str, id: Identity, rooms: Option<flexim_client::SavedRooms>) -> User {
        let options = ConnectOptions {
            rooms,
            pairs: true,
            ..Default::default()
        };
        let mut client = Client::connect_with(Endpoint::parse(server).unwrap(), &id, options)
            .await
            .unwrap();
        assert!(client.publish_key_packages().await.unwrap() >= 16);
        User { id, client }
    }

    fn key(&self) -> PublicKey {
        self.id.public_key()
    }

    /// The next message, acknowledged.
    async fn message(&mut self) -> Received {
        loop {
            let event = tokio::time::timeout(WAIT, self.client.next_event())
                .await
                .expect("a message comes")
                .unwrap();
            match event {
                Event::Message(m) => {
                    if let Some(id) = &m.id {
                        self.client.acknowledge(id);
                    }
                    return m;
                }
                Event::Closed => panic!("closed while waiting for a message"),
                _ => {}
            }
        }
    }

    /// Sends `text` to `to` and returns the server's Status, or the refusal's code.
    async fn send(&mut self, to: PublicKey, text: &str) -> i8 {
        match self.client.send_text(&to.to_hex(), text, &[]).await {
            Ok(s) => s.status,
            Err(ClientError::Server { status, .. }) => status,
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

/// The next three messages of `u`.
async fn three(u: &mut User) -> Vec<Received> {
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(u.message().await);
    }
    got
}

/// The Messages stored for `to` in the embedded store of a stopped server.
async fn stored_for(server: &TestServer, to: PublicKey) -> Vec<Message> {
    let store = EmbeddedStore::open(&server.data_dir().join("flexim.redb")).unwrap();
    let stored = store.peek(to, 0, 100).await.unwrap();
    stored
        .iter()
        .filter_map(|s| {
            let (kind, body) = frame::split_exact(&s.entry.frame, frame::MAX_BODY).ok()?;
            match Datum::decode(kind, body).ok()? {
                Datum::Message(m) => Some(m),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test]
async fn a_conversation_of_two_runs_on_mls_and_a_key_stolen_later_opens_nothing() {
    let mut server = TestServer::start();
    let tcp = server.tcp.to_string();
    let bob_secret = new_key();
    // Introduced, so that the kit's watcher sees when Bob is offline.
    server.introduce(&[&bob_secret]).await;
    let mut alice = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    let mut bob = User::login(&server.ws, Identity::from_secret(bob_secret), None).await;
    befriend(&mut alice.client, &mut bob.client).await;
    let (ka, kb) = (alice.key(), bob.key());
    let room = pair_room(&ka, &kb);

    // The first message makes the pair room; both directions then run in it.
    assert_eq!(alice.send(kb, "hello on mls").await, status::RELAYED);
    let got = bob.message().await;
    assert_eq!((got.text.as_str(), got.from), ("hello on mls", ka));
    assert!(got.forward_secret, "{got:?}");
    assert_eq!(bob.send(ka, "hi back").await, status::RELAYED);
    let back = alice.message().await;
    assert!(back.forward_secret && back.text == "hi back", "{back:?}");
    // A pair room is a conversation, not one of the rooms listed.
    assert!(alice.client.rooms().is_empty() && bob.client.rooms().is_empty());

    // Bob goes away; Alice writes; the server stores it for him.
    let bob_id = bob.id.clone();
    bob.client.ack(&[]).await.unwrap();
    let bob_saved = bob.client.saved_rooms().unwrap();
    drop(bob);
    server.until_offline(&kb).await;
    assert_eq!(alice.send(kb, "while you were away").await, status::STORED);
    drop(alice);

    // What the server holds is an MLS message of the pair room, not a static-key box.
    assert!(server.stop());
    let stored = stored_for(&server, kb).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].to, room.to_hex());
    let captured = BASE64.decode(&stored[0].msg).unwrap();
    let header = ds::header(&captured).unwrap();
    assert_eq!(
        (header.kind, header.group),
        (Kind::Application, room.0.to_vec())
    );
    let server = server.restart();

    // Bob reads it with the state he saved, and saves his state again.
    let mut bob = User::login(&server.ws, bob_id.clone(), Some(bob_saved.clone())).await;
    let got = bob.message().await;
    assert!(
        got.forward_secret && got.text == "while you were away",
        "{got:?}"
    );
    let bob_after = bob.client.saved_rooms().unwrap();
    // Acknowledged, so its plaintext is not kept in the state either.
    let text = b"while you were away";
    assert!(!bob_after.to_bytes().windows(text.len()).any(|w| w == text));

    // A thief who takes Bob's secret key and his rooms' state now cannot open the copy it
    // captured: MLS deleted the message's key once it was read. (From the state before, the
    // same copy opens: the capture is the real message.)
    let mut thief = Member::restore(bob_after.member_state()).unwrap();
    assert_eq!(thief.identity(), kb.0);
    assert!(thief.open(room.0, &captured).is_err());
    let mut earlier = Member::restore(bob_saved.member_state()).unwrap();
    match earlier.open(room.0, &captured).unwrap() {
        Opened::Application { plaintext, .. } => assert_eq!(plaintext, b"while you were away"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_strangers_pair_room_waits_in_the_requests_box_and_a_block_refuses_it() {
    let server = TestServer::start();
    let tcp = server.tcp.to_string();
    let mut bob = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    let mut mallory = User::login(&server.ws, Identity::from_secret(new_key()), None).await;
    let mut alice = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    befriend(&mut alice.client, &mut bob.client).await;
    let (kb, km) = (bob.key(), mallory.key());

    // The stranger's first message: Bob is asked, and the message is a request, on MLS.
    assert_eq!(mallory.send(kb, "hello stranger").await, status::RELAYED);
    let asked = loop {
        match tokio::time::timeout(WAIT, bob.client.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Requested { from, .. } => break from,
            Event::Invited { .. } => panic!("a pair room is no room invitation"),
            _ => {}
        }
    };
    assert_eq!(asked, km);
    let got = bob.message().await;
    assert!(
        got.request && got.forward_secret && got.text == "hello stranger",
        "{got:?}"
    );

    // The box holds a few: the claim of Bob's KeyPackage counted as one, the first message
    // as another, then three more, then -25.
    for n in 0..3 {
        assert_eq!(
            mallory.send(kb, &format!("more {n}")).await,
            status::RELAYED
        );
    }
    assert_eq!(mallory.send(kb, "one too many").await, status::NOT_ACCEPTED);

    // Bob blocks the stranger: the pair room's messages are refused as any message is.
    bob.client.block(&km.to_hex()).await.unwrap();
    assert_eq!(mallory.send(kb, "let me in").await, status::BLOCKED);

    // A contact is unaffected, on MLS too.
    assert_eq!(alice.send(kb, "still here").await, status::RELAYED);
    let got = loop {
        let m = bob.message().await;
        if m.from == alice.key() {
            break m;
        }
        assert_eq!(
            m.from, km,
            "only the stranger's earlier messages come between"
        );
    };
    assert!(got.forward_secret && !got.request && got.text == "still here");
}

#[tokio::test]
async fn two_users_writing_first_at_once_get_one_pair_room_and_every_message() {
    let server = TestServer::start();
    let tcp = server.tcp.to_string();
    let mut alice = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    let mut bob = User::login(&server.ws, Identity::from_secret(new_key()), None).await;
    befriend(&mut alice.client, &mut bob.client).await;
    let (ka, kb) = (alice.key(), bob.key());

    // Both write before either has a group: both send CREATEROOM, the server makes the room
    // once, and the one refused joins from the other's Welcome; the messages wait meanwhile.
    for n in 0..3 {
        alice
            .client
            .queue_text(&kb, &format!("a{n}"), &[])
            .await
            .unwrap();
        bob.client
            .queue_text(&ka, &format!("b{n}"), &[])
            .await
            .unwrap();
    }
    let (to_bob, to_alice) = tokio::join!(three(&mut bob), three(&mut alice));
    let texts = |ms: &[Received]| ms.iter().map(|m| m.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&to_bob), ["a0", "a1", "a2"]);
    assert_eq!(texts(&to_alice), ["b0", "b1", "b2"]);
    assert!(to_bob.iter().chain(&to_alice).all(|m| m.forward_secret));
    // One group: one Add was ordered (epoch 1), whoever's CREATEROOM came second.
    let list = alice
        .client
        .room_members(pair_room(&ka, &kb))
        .await
        .unwrap();
    assert_eq!((list.epoch, list.members.len()), (1, 2), "{list:?}");
}

#[tokio::test]
async fn a_member_of_a_pair_room_renews_its_leaf_after_a_hundred_messages() {
    let server = TestServer::start();
    let tcp = server.tcp.to_string();
    let mut alice = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    let mut bob = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    befriend(&mut alice.client, &mut bob.client).await;
    let (ka, kb) = (alice.key(), bob.key());
    let room: RoomId = pair_room(&ka, &kb);

    let epoch = |list: flexim_client::protocol::datum::RoomMemberList| list.epoch;
    let sent = flexim_client::session::UPDATE_AFTER_MESSAGES;
    for n in 0..sent {
        assert_eq!(alice.send(kb, &format!("m{n}")).await, status::RELAYED);
    }
    // The Add made epoch 1; the hundredth message's update, epoch 2.
    let mut at = 0;
    for _ in 0..50 {
        at = epoch(alice.client.room_members(room).await.unwrap());
        if at == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(at, 2, "the update was committed");
    for n in 0..sent {
        let m = bob.message().await;
        assert_eq!(m.text, format!("m{n}"));
    }
    // Both go on in the new epoch.
    assert_eq!(alice.send(kb, "after the update").await, status::RELAYED);
    assert_eq!(bob.message().await.text, "after the update");
    assert_eq!(bob.send(ka, "me too").await, status::RELAYED);
    assert_eq!(alice.message().await.text, "me too");
}

#[tokio::test]
async fn a_server_that_changes_a_pair_messages_flags_is_seen() {
    let mut server = TestServer::start();
    let tcp = server.tcp.to_string();
    let bob_secret = new_key();
    server.introduce(&[&bob_secret]).await;
    let mut alice = User::login(&tcp, Identity::from_secret(new_key()), None).await;
    let mut bob = User::login(&tcp, Identity::from_secret(bob_secret), None).await;
    befriend(&mut alice.client, &mut bob.client).await;
    let kb = bob.key();
    assert_eq!(alice.send(kb, "the group is made").await, status::RELAYED);
    assert_eq!(bob.message().await.text, "the group is made");
    let bob_id = bob.id.clone();
    bob.client.ack(&[]).await.unwrap();
    let bob_saved = bob.client.saved_rooms().unwrap();
    drop(bob);
    server.until_offline(&kb).await;
    // Alice sends a quiet message, then a loud one; both wait for Bob.
    let quiet = alice
        .client
        .send_text(&kb.to_hex(), "quiet", &[])
        .await
        .unwrap();
    assert_eq!(quiet.status, status::STORED);
    let notify = ["NOTIFY".to_string()];
    let loud = alice
        .client
        .send_text(&kb.to_hex(), "loud", &notify)
        .await
        .unwrap();
    assert_eq!(loud.status, status::STORED);
    drop(alice);

    // The operator, between the two runs, makes the quiet one ring: it rewrites its flags.
    assert!(server.stop());
    {
        let store = EmbeddedStore::open(&server.data_dir().join("flexim.redb")).unwrap();
        let stored = store.peek(kb, 0, 100).await.unwrap();
        let (seq, mut entry, mut m) = stored
            .into_iter()
            .find_map(|s| {
                let (kind, body) = frame::split_exact(&s.entry.frame, frame::MAX_BODY).ok()?;
                match Datum::decode(kind, body).ok()? {
                    Datum::Message(m) if m.flags.is_empty() => Some((s.seq, s.entry, m)),
                    _ => None,
                }
            })
            .expect("the quiet message is stored");
        m.flags = notify.to_vec();
        entry.frame = Datum::Message(m).to_frame().unwrap().into();
        store.remove(kb, vec![seq]).await.unwrap();
        store.enqueue(kb, vec![entry], None).await.unwrap();
    }
    let server = server.restart();

    // Bob is told the rewritten one did not open; the loud one opens with its flag.
    let mut bob = User::login(&server.ws, bob_id, Some(bob_saved)).await;
    let (mut refused, mut opened) = (None, None);
    while refused.is_none() || opened.is_none() {
        let event = tokio::time::timeout(WAIT, bob.client.next_event())
            .await
            .unwrap()
            .unwrap();
        match event {
            Event::Undecryptable { reason, .. } => refused = Some(reason),
            Event::Message(m) => {
                assert_eq!(m.text, "loud", "the rewritten message is not shown: {m:?}");
                assert_eq!(m.flags, notify);
                opened = Some(m);
            }
            Event::Closed => panic!("closed"),
            _ => {}
        }
    }
    assert!(refused.unwrap().contains("other flags"));
}
