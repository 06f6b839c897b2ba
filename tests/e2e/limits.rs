//! The connection limit (`--max-connections`, docs/PROTOCOL.md §11): a connection over it is
//! told Status -19 server-full right after its header and closed, on TCP and on WebSocket; the
//! connections already open go on as if nothing happened, and a freed place is taken again.

use flexim_protocol::status;
use flexim_protocol::{Datum, datum::Status};
use flexim_tests::{Conn, Got, TestServer, message, new_key};

/// Waits until the server has let a connection go (its place is free again): the next
/// connection is then accepted, and comes back with it.
async fn accepted(server: &TestServer) -> Conn {
    for _ in 0..200 {
        let mut raw = Conn::tcp(server.tcp).await.unwrap();
        if let Datum::User(_) = raw.recv().await.unwrap() {
            return raw;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the freed place was never taken again");
}

fn refusal(s: &Status) {
    assert_eq!(s.status, status::SERVER_FULL, "{s:?}");
    assert!(
        s.payload.contains("the server is full (3 connections)"),
        "{s:?}"
    );
}

#[tokio::test]
async fn a_connection_over_the_limit_is_told_the_server_is_full_and_the_others_go_on() {
    let server = TestServer::start_with(&["--max-connections", "3"]);
    let (alice, bob) = (new_key(), new_key());
    // Three places, taken over both transports: one TCP user, one WebSocket user, and a
    // connection that has only sent its header.
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_ws(&server.ws, &bob).await.unwrap();
    let mut third = Conn::tcp(server.tcp).await.unwrap();
    assert!(matches!(third.recv().await.unwrap(), Datum::User(_)));

    // A fourth over TCP: the Status, then the server closes (no User datum, no handshake).
    let mut refused = Conn::tcp(server.tcp).await.unwrap();
    match refused.recv().await.unwrap() {
        Datum::Status(s) => refusal(&s),
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert!(refused.closed().await, "the refused connection is closed");
    // A fourth over WebSocket: the same Status, then close code 1013 (try again later).
    let mut refused = Conn::ws(&server.ws).await.unwrap();
    match refused.next().await.unwrap() {
        Got::Datum(Datum::Status(s)) => refusal(&s),
        other => panic!("expected the refusal, got {other:?}"),
    }
    match refused.next().await.unwrap() {
        Got::Close(code, reason) => assert_eq!((code, reason.as_str()), (1013, "server full")),
        other => panic!("expected close 1013, got {other:?}"),
    }

    // The users already connected are not affected: they exchange messages both ways.
    let (a_key, b_key) = (alice.public_key(), bob.public_key());
    a.send(&message(&a_key, &b_key.to_hex(), "still here"))
        .await
        .unwrap();
    assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    let got = loop {
        match b.next().await.unwrap() {
            Got::Datum(Datum::Message(m)) => break m,
            Got::Datum(_) => continue,
            other => panic!("Bob's connection ended: {other:?}"),
        }
    };
    assert_eq!(got.msg, "still here");
    b.send(&message(&b_key, &a_key.to_hex(), "me too"))
        .await
        .unwrap();
    assert_eq!(a.message().await.unwrap().msg, "me too");

    // Plain HTTP is not counted (only FLEX connections are), and says how many were refused.
    let metrics = server.metrics().await.unwrap();
    assert_eq!(
        metrics.get("flexim_connections_refused_total"),
        Some(&2),
        "{metrics:?}"
    );

    // When a connection closes, its place is free for the next one.
    drop(third);
    let mut next = accepted(&server).await;
    // It gets as far as the handshake's second message: the server answers its AUTH.
    next.send(
        &flexim_protocol::datum::Command::new(
            flexim_protocol::status::cmd::AUTH,
            &[&"A".repeat(64)],
        )
        .into(),
    )
    .await
    .unwrap();
    let s = next.status().await.unwrap();
    assert_eq!(
        s.status,
        status::AUTH_FAILED,
        "{s:?}: it was served, not refused as full"
    );
}
