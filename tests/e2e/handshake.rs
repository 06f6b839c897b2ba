//! The login: the Noise XK handshake in the AUTH datums, run by hand against the real server
//! the way a client in another language would run it from docs/PROTOCOL.md §4.

use flexim_protocol::datum::{AuthResponse, Command};
use flexim_protocol::handshake::{ClientHandshake, ClientStep};
use flexim_protocol::link::RECORD;
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, Link, PublicKey, SecretKey, User};
use flexim_tests::{Conn, TestServer, message, new_key, random};

/// The server's introduction and its frame as it arrived.
async fn hello(raw: &mut Conn) -> (User, Vec<u8>) {
    let frame = raw.recv_frame().await.unwrap();
    match Datum::decode(frame[0], &frame[3..]).unwrap() {
        Datum::User(u) => (u, frame),
        other => panic!("expected the server's User datum, got {other:?}"),
    }
}

/// Runs the handshake as `key` on a fresh connection, by hand: the AUTH, the Auth and the
/// AuthResponse as they went, and the link.
async fn handshake(raw: &mut Conn, key: &SecretKey) -> (Command, Datum, AuthResponse, Link) {
    let (server, frame) = hello(raw).await;
    let mut hs = ClientHandshake::new(key.clone());
    let ClientStep::Send(Datum::Command(auth)) =
        hs.handle(Datum::User(server), &frame, &mut random).unwrap()
    else {
        panic!("AUTH first");
    };
    raw.send(&auth.clone().into()).await.unwrap();
    let challenge = raw.recv().await.unwrap();
    let ClientStep::Linked { send, link } = hs.handle(challenge.clone(), &[], &mut random).unwrap()
    else {
        panic!("message 3 next");
    };
    let Datum::AuthResponse(response) = send.clone() else {
        panic!("an AuthResponse");
    };
    raw.send(&send).await.unwrap();
    (auth, challenge, response, link)
}

#[tokio::test]
async fn a_login_by_hand_proves_the_key_and_reveals_it_only_encrypted() {
    let server = TestServer::start();
    let alice = new_key();
    // A first login, so that the server has a last_seen for Alice.
    drop(Conn::login_tcp(server.tcp, &alice).await.unwrap());
    let mut raw = Conn::tcp(server.tcp).await.unwrap();
    let (auth, challenge, _, link) = handshake(&mut raw, &alice).await;
    let hex = alice.public_key().to_hex();
    assert_eq!(auth.payload.len(), 1, "AUTH carries Noise message 1 only");
    assert!(!auth.payload[0].contains(&hex));
    let Datum::Auth(challenge) = challenge else {
        panic!("expected Auth, got {challenge:?}");
    };
    assert_eq!(
        challenge.last_seen, 0,
        "nothing about a user before the proof"
    );
    // The server's first record is Alice's own User datum, with what it knows of her.
    raw.adopt_link(Some(link));
    match raw.recv().await.unwrap() {
        Datum::User(u) => {
            assert_eq!(u.key, alice.public_key());
            assert_eq!(u.online, Some(true));
            assert!(u.last_seen > 0, "{u:?}");
        }
        other => panic!("expected our User datum, got {other:?}"),
    }
    raw.send(&Command::new(cmd::ROSTER, &[]).into())
        .await
        .unwrap();
    assert!(matches!(raw.datum().await.unwrap(), Datum::Roster(_)));
}

/// A recorded login replayed on a new connection: message 1 is accepted (XK's first message
/// carries no identity), but the recorded message 3 answers another ephemeral key, so the
/// replay fails and is closed. The real session is unaffected.
#[tokio::test]
async fn a_replayed_login_fails_and_the_real_one_goes_on() {
    let server = TestServer::start();
    let alice = new_key();
    let mut first = Conn::tcp(server.tcp).await.unwrap();
    let (auth, _, response, link) = handshake(&mut first, &alice).await;
    first.adopt_link(Some(link));
    assert!(matches!(first.recv().await.unwrap(), Datum::User(_)));

    let mut replay = Conn::tcp(server.tcp).await.unwrap();
    hello(&mut replay).await;
    replay.send(&auth.into()).await.unwrap();
    assert!(matches!(replay.recv().await.unwrap(), Datum::Auth(_)));
    replay.send(&response.into()).await.unwrap();
    let s = replay.status().await.unwrap();
    assert_eq!(s.status, status::AUTH_FAILED, "{s:?}");
    assert!(s.payload.contains("message 3"), "{s:?}");
    assert!(replay.closed().await);

    first
        .send(&Command::new(cmd::ROSTER, &[]).into())
        .await
        .unwrap();
    assert!(matches!(first.datum().await.unwrap(), Datum::Roster(_)));
}

/// Message 1 made for another server key (a client that pinned a different server, or a
/// relay that swapped the introduction) does not open at this server.
#[tokio::test]
async fn message_one_for_another_server_key_fails() {
    let server = TestServer::start();
    let mut raw = Conn::tcp(server.tcp).await.unwrap();
    let (mut intro, frame) = hello(&mut raw).await;
    intro.key = new_key().public_key();
    let mut hs = ClientHandshake::new(new_key());
    let ClientStep::Send(auth) = hs.handle(Datum::User(intro), &frame, &mut random).unwrap() else {
        panic!("AUTH first");
    };
    raw.send(&auth).await.unwrap();
    let s = raw.status().await.unwrap();
    assert_eq!(s.status, status::AUTH_FAILED, "{s:?}");
    assert!(raw.closed().await);
}

#[tokio::test]
async fn a_malformed_handshake_message_fails_and_is_closed() {
    let server = TestServer::start();
    let garbage = [
        "not base64!".to_string(),
        "AAAA".to_string(),
        "00".repeat(32),
    ];
    for bad in garbage {
        let mut raw = Conn::tcp(server.tcp).await.unwrap();
        raw.recv().await.unwrap();
        raw.send(&Command::new(cmd::AUTH, &[&bad]).into())
            .await
            .unwrap();
        let s = raw.status().await.unwrap();
        assert_eq!(s.status, status::AUTH_FAILED, "{bad}: {s:?}");
        assert!(s.payload.contains("message 1"), "{s:?}");
        assert!(raw.closed().await);
    }
}

/// One handshake per connection: a second AUTH where message 3 belongs ends the connection.
#[tokio::test]
async fn a_second_handshake_on_one_connection_is_refused() {
    let server = TestServer::start();
    let mut raw = Conn::tcp(server.tcp).await.unwrap();
    let (server_user, frame) = hello(&mut raw).await;
    let mut hs = ClientHandshake::new(new_key());
    let ClientStep::Send(auth) = hs
        .handle(Datum::User(server_user), &frame, &mut random)
        .unwrap()
    else {
        panic!("AUTH first");
    };
    raw.send(&auth).await.unwrap();
    assert!(matches!(raw.recv().await.unwrap(), Datum::Auth(_)));
    raw.send(&auth).await.unwrap();
    let s = raw.status().await.unwrap();
    assert_eq!(s.status, status::AUTH_FAILED, "{s:?}");
    assert!(raw.closed().await);
}

/// Nothing but the handshake is accepted before it completes, and nothing is routed; a link
/// record before the handshake ends the connection.
#[tokio::test]
async fn datums_before_the_handshake_get_an_error_and_are_not_routed() {
    let server = TestServer::start();
    let bob = new_key();
    let mut bob_conn = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let stranger = new_key();
    let mut raw = Conn::tcp(server.tcp).await.unwrap();
    raw.recv().await.unwrap();
    raw.send(&message(
        &stranger.public_key(),
        &bob.public_key().to_hex(),
        "hi",
    ))
    .await
    .unwrap();
    let s = raw.status().await.unwrap();
    assert_eq!(s.status, status::UNAUTHENTICATED, "{s:?}");
    raw.send(&Command::new(cmd::ROSTER, &[]).into())
        .await
        .unwrap();
    assert_eq!(raw.status().await.unwrap().status, status::UNAUTHENTICATED);
    raw.send_frame(RECORD, &[0; 40]).await.unwrap();
    assert_eq!(raw.status().await.unwrap().status, status::AUTH_FAILED);
    assert!(raw.closed().await);
    // Bob received nothing from it, and others still talk to him.
    let alice = new_key();
    let mut alice_conn = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    alice_conn
        .send(&message(
            &alice.public_key(),
            &bob.public_key().to_hex(),
            "first",
        ))
        .await
        .unwrap();
    assert_eq!(alice_conn.status().await.unwrap().status, status::RELAYED);
    assert_eq!(bob_conn.message().await.unwrap().msg, "first");
}

/// Keys that cannot be anyone's identity are refused as `to`: a low-order point, and a
/// second spelling of a real key (bit 255 set).
#[tokio::test]
async fn low_order_and_non_canonical_recipients_are_refused() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut twin = *bob.public_key().as_bytes();
    twin[31] |= 0x80;
    let one = {
        let mut k = [0u8; 32];
        k[0] = 1;
        k
    };
    for bad in [PublicKey([0; 32]), PublicKey(one), PublicKey(twin)] {
        a.send(&message(&alice.public_key(), &bad.to_hex(), "x"))
            .await
            .unwrap();
        let s = a.status().await.unwrap();
        assert_eq!(s.status, status::BAD_ARGUMENT, "{bad}: {s:?}");
        assert!(s.payload.contains("refused"), "{s:?}");
    }
    // Bob got none of it, and still gets what is meant for him.
    a.send(&message(
        &alice.public_key(),
        &bob.public_key().to_hex(),
        "ok",
    ))
    .await
    .unwrap();
    assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    assert_eq!(b.message().await.unwrap().msg, "ok");
}
