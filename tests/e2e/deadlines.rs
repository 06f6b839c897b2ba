//! Time limits (docs/PROTOCOL.md §11). On every write (`--write-timeout`): a client that logs
//! in and then stops reading is disconnected once its buffers are full and one write has
//! waited the deadline; what it did not acknowledge is stored (its sender told `8`) and
//! delivered when it reads again; another user chats on, unaffected. Before the login
//! (`--header-timeout`, `--auth-timeout`): a connection that stays silent is let go.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Command, Datum, PublicKey};
use flexim_tests::{Conn, TestServer, message_with_id, new_key};

/// Whether the server says `key` is online, asked by `observer`.
async fn online(observer: &mut Conn, key: &PublicKey) -> bool {
    let who = key.to_hex();
    observer
        .send(&Command::new(cmd::GETUSER, &[who.as_str()]).into())
        .await
        .unwrap();
    matches!(observer.datum().await.unwrap(), Datum::User(u) if u.online == Some(true))
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_disconnected_within_the_write_deadline() {
    // Without byte bounds in the way, so that the write deadline is what ends the session
    // (with the defaults, the bytes it holds unacknowledged end it sooner: memory.rs).
    let server = TestServer::start_with(&[
        "--write-timeout",
        "1",
        "--max-unacked-bytes",
        "1000000000",
        "--outbound-bytes",
        "1000000000",
    ]);
    let (sender, stalled, bystander) = (new_key(), new_key(), new_key());
    server.introduce(&[&sender, &stalled]).await;
    let mut s = Conn::login_tcp(server.tcp, &sender).await.unwrap();
    let mut b = Conn::login_tcp(server.tcp, &bystander).await.unwrap();
    // The stalled client logs in and never reads again.
    let stalled_conn = Conn::login_tcp(server.tcp, &stalled).await.unwrap();
    let to = stalled.public_key().to_hex();
    // 400 messages of 40 KB: 16 MB, more than the sockets' buffers on both sides hold.
    let body = "x".repeat(40_000);
    let ids: Vec<String> = (0..400).map(|i| format!("big-{i}")).collect();
    let started = Instant::now();
    for id in &ids {
        s.send(&message_with_id(&sender.public_key(), &to, &body, id))
            .await
            .unwrap();
    }
    // Every message is answered (relayed while the session lived, stored after), and once the
    // stalled session is gone the ones it held unacknowledged are receipted `8`.
    let (mut answered, mut later) = (0, HashSet::new());
    while answered < ids.len() || later.is_empty() {
        let st = s.status().await.unwrap();
        match st.status {
            status::RELAYED | status::STORED => answered += 1,
            status::STORED_LATER => later.extend(st.about().map(str::to_string)),
            other => panic!("unexpected answer {other}: {st:?}"),
        }
    }
    // The kit's watcher, whom introduced keys accept: presence is shown only to contacts.
    let mut observer = Conn::login_tcp(server.tcp, &flexim_tests::watcher())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while online(&mut observer, &stalled.public_key()).await {
        assert!(
            Instant::now() < deadline,
            "the stalled reader is still connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = server.metrics().await.unwrap();
    assert_eq!(
        metrics.get("flexim_disconnects_total{reason=\"write-timeout\"}"),
        Some(&1),
        "{metrics:?}"
    );
    eprintln!(
        "stalled reader gone {:?} after the flood began; {} receipted 8",
        started.elapsed(),
        later.len()
    );
    // The bystander was never held up.
    b.send(&message_with_id(
        &bystander.public_key(),
        &sender.public_key().to_hex(),
        "still here",
        "b-1",
    ))
    .await
    .unwrap();
    assert_eq!(b.status().await.unwrap().status, status::RELAYED);
    assert_eq!(s.message().await.unwrap().msg, "still here");
    drop(stalled_conn);
    // Nothing was lost: reading again, the client gets every message it did not acknowledge.
    let mut back = Conn::login_tcp(server.tcp, &stalled).await.unwrap();
    let mut got = HashSet::new();
    loop {
        match back.recv().await.unwrap() {
            Datum::Message(m) => drop(got.insert(m.id.unwrap())),
            Datum::Status(st) if st.status == status::DELIVERED_STORED => break,
            _ => {}
        }
    }
    assert_eq!(got, ids.iter().cloned().collect::<HashSet<_>>());
}

/// How long until the server closes `conn` (reads until the end), at most 10 s.
async fn closed_within(conn: &mut Conn) -> (Duration, Vec<Datum>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(flexim_tests::Got::Datum(d)) = conn.next().await {
            got.push(d);
        }
    });
    read.await.expect("the silent connection was never closed");
    (started.elapsed(), got)
}

#[tokio::test]
async fn connections_that_stay_silent_before_the_login_are_let_go_and_others_are_not() {
    let server = TestServer::start_with(&["--header-timeout", "1", "--auth-timeout", "2"]);
    let (alice, bob) = (new_key(), new_key());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_ws(&server.ws, &bob).await.unwrap();
    // No header: reset after a second, on TCP and on WebSocket.
    let mut tcp = Conn::open_tcp(server.tcp, None, 4096).await.unwrap();
    let mut ws = Conn::open_ws(&server.ws, None, true).await.unwrap();
    // The header, then nothing: the server's User datum, then -6 once two seconds are up.
    let mut quiet = Conn::tcp(server.tcp).await.unwrap();
    let ((t_tcp, _), (t_ws, _), (t_quiet, quiet_got)) = tokio::join!(
        closed_within(&mut tcp),
        closed_within(&mut ws),
        closed_within(&mut quiet)
    );
    for (what, took, from) in [
        ("no header (TCP)", t_tcp, 900),
        ("no header (WebSocket)", t_ws, 900),
        ("no login", t_quiet, 1900),
    ] {
        assert!(
            took >= Duration::from_millis(from),
            "{what}: closed after {took:?}"
        );
    }
    assert!(
        matches!(quiet_got.as_slice(), [Datum::User(_), Datum::Status(s)]
            if s.status == status::AUTH_FAILED && s.payload.contains("timed out")),
        "{quiet_got:?}"
    );
    // The users who logged in were not cut by either deadline.
    let to = bob.public_key().to_hex();
    a.send(&message_with_id(
        &alice.public_key(),
        &to,
        "still here",
        "late-1",
    ))
    .await
    .unwrap();
    assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    assert_eq!(b.message().await.unwrap().msg, "still here");
}
