//! The link against an attacker on the path (docs/PROTOCOL.md §4.3, §13): a relay that passes a
//! real login through and then takes the connection over gets nothing done, and a passive
//! capture of a whole session shows no key, alias or `to`/`from` after the handshake. Both
//! transports, real server, real sockets.

use std::collections::HashSet;
use std::net::SocketAddr;

use flexim_protocol::link::RECORD;
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Command, Datum, SecretKey};
use flexim_tests::{Conn, OnPath, SMALL_READS, TestServer, message_with_id, new_key};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Ws,
}

/// The server's address for the transport (the relay connects there).
fn upstream(server: &TestServer, t: Transport) -> SocketAddr {
    match t {
        Transport::Tcp => server.tcp,
        Transport::Ws => server.http_addr().parse().unwrap(),
    }
}

/// Logs `key` in through a fresh relay.
async fn through(server: &TestServer, t: Transport, key: &SecretKey) -> (OnPath, Conn) {
    let path = OnPath::start(upstream(server, t)).await.unwrap();
    let conn = match t {
        Transport::Tcp => Conn::login_tcp(path.addr, key).await.unwrap(),
        Transport::Ws => Conn::login_ws(&format!("ws://{}/ws", path.addr), key)
            .await
            .unwrap(),
    };
    (path, conn)
}

/// The attacker's connection: the server's side of a hijacked login.
async fn hijack(path: &mut OnPath, t: Transport) -> Conn {
    let stream = path.hijack().await.unwrap();
    match t {
        Transport::Tcp => Conn::tcp_from(stream, &[], SMALL_READS),
        Transport::Ws => {
            Conn::from_ws(WebSocketStream::from_raw_socket(stream, Role::Client, None).await)
        }
    }
}

/// A frame of a command.
fn command(name: &str, args: &[&str]) -> Vec<u8> {
    Datum::Command(Command::new(name, args)).to_frame().unwrap()
}

/// What an attacker sends after the takeover, made from the victim's connection (to seal
/// records the victim would have sent) and the ids of the victim's stored messages.
type Attack = fn(&mut Conn, &[&str]) -> Vec<Vec<u8>>;

/// Reads the stored messages `ids` on `conn` (not acknowledged), up to the notice that says
/// they were all delivered.
async fn read_messages(conn: &mut Conn, ids: &[String]) {
    let mut got = HashSet::new();
    loop {
        match conn.recv().await.unwrap() {
            Datum::Message(m) => drop(got.insert(m.id.unwrap())),
            Datum::Status(s) if s.status == status::DELIVERED_STORED => break,
            _ => {}
        }
    }
    assert_eq!(got, ids.iter().cloned().collect());
}

async fn an_on_path_relay_gets_nothing_done(t: Transport) {
    let server = TestServer::start();
    let (victim, bob) = (new_key(), new_key());
    server.introduce(&[&victim]).await;
    let vhex = victim.public_key().to_hex();
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut ids: Vec<String> = (0..3).map(|i| format!("stored-{i}")).collect();
    for id in &ids {
        b.send(&message_with_id(&bob.public_key(), &vhex, "x", id))
            .await
            .unwrap();
        assert_eq!(b.status().await.unwrap().status, status::STORED);
    }
    let acked: Vec<&str> = ids.iter().map(String::as_str).collect();
    // Each attack on a login of its own: the victim logs in through the relay and reads its
    // stored messages (without acknowledging them yet), then the relay cuts the victim off.
    let attacks: [(&str, Attack); 5] = [
        ("a clear REGISTER", |_, _| {
            vec![command(cmd::REGISTER, &["takeover"])]
        }),
        ("a clear ACK of the stored messages", |_, ids| {
            vec![command(cmd::ACK, ids)]
        }),
        ("the victim's record replayed", |v, _| {
            vec![v.seal_only(&command(cmd::ROSTER, &[])).unwrap(); 2]
        }),
        ("the victim's records reordered", |v, ids| {
            let first = v.seal_only(&command(cmd::ROSTER, &[])).unwrap();
            let second = v.seal_only(&command(cmd::ACK, ids)).unwrap();
            vec![second, first]
        }),
        ("the victim's ACK record altered", |v, ids| {
            let mut r = v.seal_only(&command(cmd::ACK, ids)).unwrap();
            let last = r.len() - 20;
            r[last] ^= 0x01;
            vec![r]
        }),
    ];
    for (what, attack) in attacks {
        let (mut path, mut v) = through(&server, t, &victim).await;
        read_messages(&mut v, &ids).await;
        let records = attack(&mut v, &acked);
        let mut attacker = hijack(&mut path, t).await;
        // A replay needs the genuine record to have gone through first.
        let skip = usize::from(what.contains("replayed"));
        if skip == 1 {
            attacker.send_bytes(&records[0]).await.unwrap();
            assert!(
                matches!(attacker.next_wire().await.unwrap(), Ok(f) if f[0] == RECORD),
                "the genuine record is answered, sealed"
            );
        }
        for r in &records[skip..] {
            let _ = attacker.send_bytes(r).await;
        }
        assert!(
            attacker.closed().await,
            "{t:?}: {what} did not close the connection"
        );
        server.until_offline(&victim.public_key()).await;
    }
    // GHOST: the victim is online directly, the relayed login is the second session.
    let mut direct = Conn::login_tcp(server.tcp, &victim).await.unwrap();
    read_messages(&mut direct, &ids).await;
    let (mut path, mut relayed) = through(&server, t, &victim).await;
    let s = relayed.status().await.unwrap();
    assert_eq!(s.status, status::SESSION_EXISTS, "{s:?}");
    let mut attacker = hijack(&mut path, t).await;
    let _ = attacker.send_bytes(&command(cmd::GHOST, &[])).await;
    assert!(
        attacker.closed().await,
        "{t:?}: a clear GHOST did not close"
    );
    // The direct session is still the one messages go to.
    ids.push("after".into());
    b.send(&message_with_id(&bob.public_key(), &vhex, "y", "after"))
        .await
        .unwrap();
    assert_eq!(b.status().await.unwrap().status, status::RELAYED);
    let m = direct.message().await.unwrap();
    assert_eq!(m.id.as_deref(), Some("after"));
    // Nothing was acknowledged by the attacker: the first receipt Bob gets comes from the
    // victim's own ACK, and names every message.
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let answer = direct.ack(&all).await.unwrap();
    assert_eq!(answer.status, status::OK, "{answer:?}");
    let mut receipted = HashSet::new();
    while receipted.len() < ids.len() {
        let s = b.status().await.unwrap();
        assert_eq!(s.status, status::DELIVERED, "{s:?}");
        receipted.extend(s.about().map(str::to_string));
    }
    assert_eq!(receipted, ids.iter().cloned().collect());
    // The operator sees every one of the attacks as a broken link.
    let metrics = server.metrics().await.unwrap();
    assert_eq!(
        metrics.get("flexim_disconnects_total{reason=\"link-broken\"}"),
        Some(&6),
        "{metrics:?}"
    );
    // And no alias was taken on the victim's key.
    b.send(&Command::new(cmd::GETUSER, &["takeover"]).into())
        .await
        .unwrap();
    let s = b.status().await.unwrap();
    assert_eq!(s.status, status::NO_SUCH_USER, "{s:?}");
}

#[tokio::test]
async fn an_on_path_relay_gets_nothing_done_over_tcp() {
    an_on_path_relay_gets_nothing_done(Transport::Tcp).await;
}

#[tokio::test]
async fn an_on_path_relay_gets_nothing_done_over_websocket() {
    an_on_path_relay_gets_nothing_done(Transport::Ws).await;
}

/// The frames of a captured TCP direction, from `skip` on (the header of the upstream side).
fn tcp_frames(bytes: &[u8], skip: usize) -> Vec<Vec<u8>> {
    let mut at = skip;
    let mut out = Vec::new();
    while at + 3 <= bytes.len() {
        let len = usize::from(u16::from_be_bytes([bytes[at + 1], bytes[at + 2]]));
        out.push(bytes[at..at + 3 + len].to_vec());
        at += 3 + len;
    }
    assert_eq!(at, bytes.len(), "the capture is whole frames");
    out
}

/// The binary messages of a captured WebSocket direction (after the HTTP upgrade), unmasked:
/// what the peer's WebSocket layer hands the protocol.
fn ws_messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let start = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut at = start;
    let mut out = Vec::new();
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let masked = bytes[at + 1] & 0x80 != 0;
        let mut len = usize::from(bytes[at + 1] & 0x7f);
        at += 2;
        if len == 126 {
            len = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
            at += 2;
        } else if len == 127 {
            len = u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            at += 8;
        }
        let mask = if masked {
            let m = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
            at += 4;
            m
        } else {
            [0; 4]
        };
        let payload: Vec<u8> = bytes[at..at + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        at += len;
        if opcode == 2 {
            out.push(payload);
        }
    }
    out
}

async fn a_passive_capture_shows_nothing_about_the_users(t: Transport) {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    b.send(&Command::new(cmd::REGISTER, &["bob-hidden-alias"]).into())
        .await
        .unwrap();
    assert_eq!(b.status().await.unwrap().status, status::OK);
    let (path, mut a) = through(&server, t, &alice).await;
    // A whole session: an alias, a lookup, the roster, a message each way, presence.
    a.send(&Command::new(cmd::REGISTER, &["alice-hidden-alias"]).into())
        .await
        .unwrap();
    assert_eq!(a.status().await.unwrap().status, status::OK);
    a.send(&Command::new(cmd::GETUSER, &["bob-hidden-alias"]).into())
        .await
        .unwrap();
    assert!(matches!(a.datum().await.unwrap(), Datum::User(u) if u.key == bob.public_key()));
    a.send(&Command::new(cmd::ROSTER, &[]).into())
        .await
        .unwrap();
    assert!(matches!(a.datum().await.unwrap(), Datum::Roster(_)));
    a.send(&message_with_id(
        &alice.public_key(),
        "bob-hidden-alias",
        "hi",
        "m1",
    ))
    .await
    .unwrap();
    assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    assert_eq!(b.message().await.unwrap().from, alice.public_key().to_hex());
    b.send(&message_with_id(
        &bob.public_key(),
        "alice-hidden-alias",
        "yo",
        "m2",
    ))
    .await
    .unwrap();
    assert_eq!(a.message().await.unwrap().id.as_deref(), Some("m2"));
    drop(b);
    server.until_offline(&bob.public_key()).await;
    let capture = path.capture();
    // After the handshake (the server's introduction, AUTH, Auth, AuthResponse) every frame
    // in both directions is a record.
    let (up, down) = match t {
        Transport::Tcp => (tcp_frames(&capture.up, 5), tcp_frames(&capture.down, 0)),
        Transport::Ws => (
            ws_messages(&capture.up)[1..].to_vec(),
            ws_messages(&capture.down),
        ),
    };
    assert!(
        up.len() > 5 && down.len() > 8,
        "{} up, {} down",
        up.len(),
        down.len()
    );
    assert!(
        up[2..].iter().all(|f| f[0] == RECORD),
        "{t:?}: a clear frame went up"
    );
    assert!(
        down[2..].iter().all(|f| f[0] == RECORD),
        "{t:?}: a clear frame came down"
    );
    // And no byte of either user's key, in any form, nor either alias, is anywhere in it.
    let secrets: Vec<(String, Vec<u8>)> = [&alice, &bob]
        .iter()
        .flat_map(|k| {
            let p = k.public_key();
            [
                ("a raw key".to_string(), p.as_bytes().to_vec()),
                ("a hex key".to_string(), p.to_hex().into_bytes()),
                (
                    "an upper-case hex key".into(),
                    p.to_hex().to_uppercase().into_bytes(),
                ),
            ]
        })
        .chain(
            ["alice-hidden-alias", "bob-hidden-alias"]
                .map(|a| ("an alias".into(), a.as_bytes().to_vec())),
        )
        .collect();
    for (what, needle) in &secrets {
        for (dir, bytes) in [("up", &capture.up), ("down", &capture.down)] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == &needle[..]),
                "{t:?}: {what} is visible {dir}"
            );
        }
    }
}

#[tokio::test]
async fn a_passive_capture_shows_nothing_about_the_users_over_tcp() {
    a_passive_capture_shows_nothing_about_the_users(Transport::Tcp).await;
}

#[tokio::test]
async fn a_passive_capture_shows_nothing_about_the_users_over_websocket() {
    a_passive_capture_shows_nothing_about_the_users(Transport::Ws).await;
}
