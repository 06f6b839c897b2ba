//! AUTH: only the holder of a key's secret gets in, once per challenge.

use flexim_protocol::datum::{AuthResponse, Command};
use flexim_protocol::handshake::answer;
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, PublicKey};
use flexim_tests::{Conn, TestServer, message, new_key};

fn server_key(d: Datum) -> PublicKey {
    match d {
        Datum::User(u) => u.key,
        other => panic!("expected the server's User datum, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_key_logs_in_and_gets_its_user_datum() {
    let server = TestServer::start();
    let alice = new_key();
    let mut raw = Conn::tcp(server.tcp).await.unwrap();
    let skey = server_key(raw.recv().await.unwrap());
    assert_eq!(skey.to_hex(), server.key);
    raw.send(&Command::new(cmd::AUTH, &[&alice.public_key().to_hex().to_uppercase()]).into())
        .await
        .unwrap();
    let Datum::Auth(auth) = raw.recv().await.unwrap() else {
        panic!("expected Auth")
    };
    assert_eq!(auth.last_seen, 0, "a new key was never seen");
    let resp = answer(&alice, &skey, &auth, [7; 24]).unwrap();
    raw.send(&resp.into()).await.unwrap();
    match raw.recv().await.unwrap() {
        Datum::User(u) => {
            assert_eq!(u.key, alice.public_key());
            assert_eq!(u.online, Some(true));
        }
        other => panic!("expected our User datum, got {other:?}"),
    }
}

/// Someone who knows only Alice's public key cannot answer Alice's challenge: Mallory's best
/// is a well-formed answer made with her own key, and the server refuses it and hangs up.
#[tokio::test]
async fn a_wrong_key_fails_auth_and_is_closed() {
    let server = TestServer::start();
    let (alice, mallory) = (new_key(), new_key());
    let mut raw = Conn::tcp(server.tcp).await.unwrap();
    let skey = server_key(raw.recv().await.unwrap());
    raw.send(&Command::new(cmd::AUTH, &[&alice.public_key().to_hex()]).into())
        .await
        .unwrap();
    let Datum::Auth(auth) = raw.recv().await.unwrap() else {
        panic!("expected Auth")
    };
    // Mallory cannot open the challenge with her key...
    assert!(answer(&mallory, &skey, &auth, [1; 24]).is_err());
    // ...so she answers a challenge issued to her own key, on Alice's connection.
    let mut own = Conn::tcp(server.tcp).await.unwrap();
    own.recv().await.unwrap();
    own.send(&Command::new(cmd::AUTH, &[&mallory.public_key().to_hex()]).into())
        .await
        .unwrap();
    let Datum::Auth(her_auth) = own.recv().await.unwrap() else {
        panic!("expected Auth")
    };
    let forged = answer(&mallory, &skey, &her_auth, [1; 24]).unwrap();
    raw.send(&forged.into()).await.unwrap();
    let s = raw.status().await.unwrap();
    assert_eq!(s.status, status::AUTH_FAILED, "{s:?}");
    assert!(s.payload.contains("authentication failed"), "{s:?}");
    assert!(raw.closed().await);
}

/// A correct answer from an earlier login does not open a later one.
#[tokio::test]
async fn a_replayed_response_fails_auth() {
    let server = TestServer::start();
    let alice = new_key();
    let mut first = Conn::tcp(server.tcp).await.unwrap();
    let skey = server_key(first.recv().await.unwrap());
    first
        .send(&Command::new(cmd::AUTH, &[&alice.public_key().to_hex()]).into())
        .await
        .unwrap();
    let Datum::Auth(auth) = first.recv().await.unwrap() else {
        panic!("expected Auth")
    };
    let recorded = answer(&alice, &skey, &auth, [3; 24]).unwrap();
    first.send(&recorded.clone().into()).await.unwrap();
    assert!(matches!(first.recv().await.unwrap(), Datum::User(_)));

    // An eavesdropper replays the recorded answer on a new connection.
    let mut replay = Conn::tcp(server.tcp).await.unwrap();
    replay.recv().await.unwrap();
    replay
        .send(&Command::new(cmd::AUTH, &[&alice.public_key().to_hex()]).into())
        .await
        .unwrap();
    assert!(matches!(replay.recv().await.unwrap(), Datum::Auth(_)));
    replay.send(&recorded.into()).await.unwrap();
    let s = replay.status().await.unwrap();
    assert_eq!(s.status, status::AUTH_FAILED, "{s:?}");
    assert!(replay.closed().await);

    // The real Alice is unaffected.
    first
        .send(&Command::new(cmd::ROSTER, &[]).into())
        .await
        .unwrap();
    assert!(matches!(first.recv().await.unwrap(), Datum::Roster(_)));
}

/// Sending the server's own challenge back fails: the two directions use different keys.
#[tokio::test]
async fn a_reflected_challenge_fails_auth() {
    let server = TestServer::start();
    let alice = new_key();
    let mut raw = Conn::tcp(server.tcp).await.unwrap();
    raw.recv().await.unwrap();
    raw.send(&Command::new(cmd::AUTH, &[&alice.public_key().to_hex()]).into())
        .await
        .unwrap();
    let Datum::Auth(auth) = raw.recv().await.unwrap() else {
        panic!("expected Auth")
    };
    raw.send(
        &AuthResponse {
            challenge: auth.challenge,
        }
        .into(),
    )
    .await
    .unwrap();
    let s = raw.status().await.unwrap();
    assert_eq!(s.status, status::AUTH_FAILED, "{s:?}");
    assert!(raw.closed().await);
}

#[tokio::test]
async fn a_malformed_or_weak_key_fails_auth() {
    let server = TestServer::start();
    for bad in ["not-a-key".to_string(), "00".repeat(32)] {
        let mut raw = Conn::tcp(server.tcp).await.unwrap();
        raw.recv().await.unwrap();
        raw.send(&Command::new(cmd::AUTH, &[&bad]).into())
            .await
            .unwrap();
        let s = raw.status().await.unwrap();
        assert_eq!(s.status, status::AUTH_FAILED, "{bad}: {s:?}");
        assert!(raw.closed().await);
    }
}

/// Nothing but AUTH is accepted before AUTH succeeds, and nothing is routed.
#[tokio::test]
async fn datums_before_auth_get_an_error_and_are_not_routed() {
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
    // The connection is still usable for AUTH; Bob received nothing from it.
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
