//! Bad input gets a clear answer and never hurts anyone else.

use std::time::Duration;

use flexim_protocol::status;
use flexim_protocol::{Datum, PublicKey};
use flexim_tests::{Conn, Got, TestServer, message, new_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Alice and Bob chat on one server while a test abuses it; `check` proves they still can.
struct Bystanders {
    alice: Conn,
    bob: Conn,
    bob_key: PublicKey,
    alice_key: PublicKey,
    n: usize,
}

impl Bystanders {
    async fn new(server: &TestServer) -> Bystanders {
        let (a, b) = (new_key(), new_key());
        Bystanders {
            alice: Conn::login_tcp(server.tcp, &a).await.unwrap(),
            bob: Conn::login_tcp(server.tcp, &b).await.unwrap(),
            alice_key: a.public_key(),
            bob_key: b.public_key(),
            n: 0,
        }
    }

    async fn check(&mut self) {
        self.n += 1;
        let body = format!("still here {}", self.n);
        self.alice
            .send(&message(&self.alice_key, &self.bob_key.to_hex(), &body))
            .await
            .unwrap();
        assert_eq!(self.alice.status().await.unwrap().status, status::RELAYED);
        assert_eq!(self.bob.message().await.unwrap().msg, body);
    }
}

async fn expect_reset(mut s: TcpStream) {
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the server answers a bad header within 10 s");
    match r {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("expected a TCP reset, read {n} bytes"),
    }
}

#[tokio::test]
async fn a_wrong_header_gets_a_reset_and_no_reply() {
    let server = TestServer::start();
    let mut by = Bystanders::new(&server).await;
    for bad in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"\x00FLEX", b"\xa4FLEY"] {
        let mut s = TcpStream::connect(server.tcp).await.unwrap();
        s.write_all(bad).await.unwrap();
        expect_reset(s).await;
    }
    by.check().await;
}

#[tokio::test]
async fn no_header_within_the_timeout_gets_a_reset() {
    let server = TestServer::start();
    let mut s = TcpStream::connect(server.tcp).await.unwrap();
    s.write_all(b"\xa4FL").await.unwrap();
    expect_reset(s).await;
}

#[tokio::test]
async fn malformed_datums_get_status_errors_and_the_connection_stays_up() {
    let server = TestServer::start();
    let mut by = Bystanders::new(&server).await;
    let mallory = new_key();
    let mut m = Conn::login_tcp(server.tcp, &mallory).await.unwrap();

    // A datum over the body limit (48 KiB), in a record of its own: refused, the rest goes on.
    let mut huge = vec![3u8];
    huge.extend_from_slice(&50_000u16.to_be_bytes());
    huge.extend(std::iter::repeat_n(0x41, 50_000));
    m.send_sealed(&huge).await.unwrap();
    let s = m.status().await.unwrap();
    assert_eq!(s.status, status::TOO_LARGE, "{s:?}");
    assert!(s.payload.contains("50000"), "{s:?}");
    by.check().await;

    // A body that is msgpack but not a map (a positional array).
    let arr = rmp_serde::to_vec(&("a", "b", Vec::<String>::new(), 1, "m")).unwrap();
    m.send_frame(3, &arr).await.unwrap();
    let s = m.status().await.unwrap();
    assert_eq!(s.status, status::MALFORMED, "{s:?}");
    assert!(s.payload.contains("map"), "{s:?}");
    by.check().await;

    // Not msgpack at all.
    m.send_frame(2, &[0xc1, 0xc1]).await.unwrap();
    assert_eq!(m.status().await.unwrap().status, status::MALFORMED);

    // An unknown datum type.
    m.send_frame(42, &[0x80]).await.unwrap();
    let s = m.status().await.unwrap();
    assert_eq!(s.status, status::UNKNOWN_DATUM, "{s:?}");
    assert!(s.payload.contains("42"), "{s:?}");
    by.check().await;

    // Fields of the wrong type: `to` is an integer.
    #[derive(serde::Serialize)]
    struct WrongTypes {
        to: i32,
        from: String,
        flags: Vec<String>,
        date: i64,
        msg: String,
    }
    let body = rmp_serde::to_vec_named(&WrongTypes {
        to: 5,
        from: mallory.public_key().to_hex(),
        flags: vec![],
        date: 1,
        msg: "m".into(),
    })
    .unwrap();
    m.send_frame(3, &body).await.unwrap();
    let s = m.status().await.unwrap();
    assert_eq!(s.status, status::MALFORMED, "{s:?}");
    assert!(s.payload.contains("Message"), "{s:?}");
    by.check().await;

    // A datum clients may not send.
    m.send(&Datum::Status(flexim_protocol::Status::new(1, "hi")))
        .await
        .unwrap();
    assert_eq!(m.status().await.unwrap().status, status::UNSUPPORTED);

    // After all that, Mallory's connection still works.
    m.send(&message(
        &mallory.public_key(),
        &by.bob_key.to_hex(),
        "ok now",
    ))
    .await
    .unwrap();
    assert_eq!(m.status().await.unwrap().status, status::RELAYED);
    assert_eq!(by.bob.message().await.unwrap().msg, "ok now");
    let _ = &by.alice_key;
}

#[tokio::test]
async fn a_truncated_frame_at_end_of_input_gets_a_status() {
    let server = TestServer::start();
    let mut by = Bystanders::new(&server).await;
    let mut m = Conn::login_tcp(server.tcp, &new_key()).await.unwrap();
    m.send_bytes(&[3, 0, 100, 0x85, 1, 2]).await.unwrap();
    m.shutdown().await.unwrap();
    let s = m.status().await.unwrap();
    assert_eq!(s.status, status::TRUNCATED, "{s:?}");
    assert!(m.closed().await);
    by.check().await;
}

#[tokio::test]
async fn websocket_frames_get_the_same_answers() {
    let server = TestServer::start();
    let mut by = Bystanders::new(&server).await;
    let mut w = Conn::login_ws(&server.ws, &new_key()).await.unwrap();

    // A message shorter than its length prefix says.
    // (Each in a record of its own: the link is whole, the datum inside is not.)
    w.send_sealed(&[3, 0, 100, 0x85]).await.unwrap();
    assert_eq!(w.status().await.unwrap().status, status::TRUNCATED);
    // Bytes after the frame.
    w.send_sealed(&[6, 0, 1, 0x80, 0x80]).await.unwrap();
    assert_eq!(w.status().await.unwrap().status, status::TRUNCATED);
    w.send_sealed(&[42, 0, 1, 0x80]).await.unwrap();
    assert_eq!(w.status().await.unwrap().status, status::UNKNOWN_DATUM);
    w.send_sealed(&[3, 0, 1, 0x91]).await.unwrap();
    assert_eq!(w.status().await.unwrap().status, status::MALFORMED);
    by.check().await;

    // A text message is a protocol error: close code 1002.
    w.send_text("hello").await.unwrap();
    match w.next().await.unwrap() {
        Got::Close(code, _) => assert_eq!(code, 1002),
        other => panic!("expected a close, got {other:?}"),
    }
    by.check().await;
}

#[tokio::test]
async fn a_websocket_with_a_bad_header_is_closed_with_a_protocol_error() {
    let server = TestServer::start();
    let mut w = Conn::ws_with(&server.ws, b"\xa4FLEY").await.unwrap();
    match w.next().await.unwrap() {
        Got::Close(code, reason) => {
            assert_eq!(code, 1002);
            assert!(reason.contains("header"), "{reason}");
        }
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn an_oversized_websocket_frame_gets_too_large_and_the_socket_stays_up() {
    let server = TestServer::start();
    let mut by = Bystanders::new(&server).await;
    let mut w = Conn::login_ws(&server.ws, &new_key()).await.unwrap();
    let mut huge = vec![3u8];
    huge.extend_from_slice(&50_000u16.to_be_bytes());
    huge.extend(std::iter::repeat_n(0x41, 50_000));
    w.send_sealed(&huge).await.unwrap();
    let s = w.status().await.unwrap();
    assert_eq!(s.status, status::TOO_LARGE, "{s:?}");
    w.send(&Datum::Command(flexim_protocol::Command::new(
        "ROSTER",
        &[],
    )))
    .await
    .unwrap();
    let got = w.next().await.unwrap();
    assert!(matches!(got, Got::Datum(Datum::Roster(_))), "{got:?}");
    // A message no frame could fill is refused by the WebSocket layer: close 1009.
    w.send_bytes(&vec![0u8; 70_000]).await.unwrap();
    match w.next().await.unwrap() {
        Got::Close(code, _) => assert_eq!(code, 1009),
        other => panic!("expected a close, got {other:?}"),
    }
    by.check().await;
}

#[tokio::test]
async fn websocket_subprotocols_and_compression_are_declined() {
    let server = TestServer::start();
    let host = server
        .http
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut s = TcpStream::connect(host).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: flex, chat\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
         Origin: http://{host}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "the server closed during the upgrade: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "upgraded: {head}");
    assert!(
        !head.contains("sec-websocket-protocol"),
        "no subprotocol: {head}"
    );
    assert!(
        !head.contains("sec-websocket-extensions"),
        "no compression: {head}"
    );
}

#[tokio::test]
async fn a_websocket_that_sends_no_header_is_closed_with_a_protocol_error_after_5_seconds() {
    let server = TestServer::start();
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws.as_str())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    use futures_util::StreamExt;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(c)))) => break c,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let waited = started.elapsed();
    let close = close.expect("a close code");
    assert_eq!(u16::from(close.code), 1002, "{close:?}");
    assert!(close.reason.contains("FLEX header"), "{close:?}");
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

/// A record that does not authenticate (here the largest the framing allows, of garbage) is
/// not answered: nothing from the connection can be trusted after it, so the server closes it.
/// Others are unaffected.
#[tokio::test]
async fn a_garbage_record_closes_the_connection_without_an_answer() {
    let server = TestServer::start();
    let mut by = Bystanders::new(&server).await;
    for ws in [false, true] {
        let mut c = match ws {
            false => Conn::login_tcp(server.tcp, &new_key()).await.unwrap(),
            true => Conn::login_ws(&server.ws, &new_key()).await.unwrap(),
        };
        let mut record = vec![flexim_protocol::link::RECORD, 0xff, 0xff];
        record.extend(std::iter::repeat_n(0x41, 65535));
        c.send_bytes(&record).await.unwrap();
        let got = c.next_wire().await.unwrap();
        assert!(got.is_err(), "no answer, only the end: {got:?}");
    }
    by.check().await;
}
