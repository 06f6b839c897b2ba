//! The delivery contract (docs/PROTOCOL.md, section 10): message ids, ACK, receipts,
//! redelivery of everything unacknowledged, per-sender order and full queues.
//!
//! These tests speak the protocol by hand (no client library), so each shows exactly what the
//! server answers; `crash.rs` runs the same contract through the client library under SIGKILL.

use flexim_protocol::datum::{Command, Status};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, SecretKey};
use flexim_tests::{Conn, TestServer, message, message_with_id, new_key};

/// The ids a receipt names (`id`, or several in `ids`), for compact assertions.
fn about(s: &Status) -> (i8, Vec<&str>) {
    (s.status, s.about().collect())
}

/// `(code, id)` of a Status, for compact assertions.
fn code_id(s: &Status) -> (i8, Option<&str>) {
    (s.status, s.id.as_deref())
}

/// Logs `key` in again after its previous connection was dropped, once the server has
/// noticed: otherwise the new login would find the old session still registered and be only
/// a secondary one (Status 5).
async fn relogin(server: &TestServer, key: &SecretKey) -> Conn {
    server.until_offline(&key.public_key()).await;
    Conn::login_tcp(server.tcp, key).await.unwrap()
}

#[tokio::test]
async fn receipts_follow_a_message_from_relayed_to_delivered() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let (a_key, b_hex) = (alice.public_key(), bob.public_key().to_hex());
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let sent = message_with_id(&a_key, &b_hex, "hi", "m-1");
    a.send(&sent).await.unwrap();
    let answer = a.status().await.unwrap();
    assert_eq!(
        code_id(&answer),
        (status::RELAYED, Some("m-1")),
        "{answer:?}"
    );

    // Bob gets the sender's bytes, id included.
    let got = loop {
        let f = b.recv_frame().await.unwrap();
        if f[0] == 3 {
            break f;
        }
    };
    assert_eq!(got, sent.to_frame().unwrap());
    let acked = b.ack(&["m-1"]).await.unwrap();
    assert_eq!(
        (acked.status, acked.payload.as_str()),
        (status::OK, "acknowledged 1 of 1")
    );
    let receipt = a.status().await.unwrap();
    assert_eq!(code_id(&receipt), (status::DELIVERED, Some("m-1")));

    // Acknowledged means forgotten: a new login of Bob's gets nothing again.
    drop(b);
    let mut b = relogin(&server, &bob).await;
    b.send(&Command::new(cmd::OFFLINES, &[]).into())
        .await
        .unwrap();
    assert_eq!(
        b.status().await.unwrap().payload,
        "delivered 0 stored messages"
    );
}

#[tokio::test]
async fn a_cut_connection_gets_everything_unacknowledged_again_in_order() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let (a_key, b_hex) = (alice.public_key(), bob.public_key().to_hex());
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let ids = ["r-0", "r-1", "r-2"];
    for (i, id) in ids.iter().enumerate() {
        let m = message_with_id(&a_key, &b_hex, &format!("live {i}"), id);
        a.send(&m).await.unwrap();
        assert_eq!(
            code_id(&a.status().await.unwrap()),
            (status::RELAYED, Some(*id))
        );
    }
    // Bob's client reads all three, acknowledges only the first, and its connection is cut.
    for i in 0..3 {
        assert_eq!(b.message().await.unwrap().msg, format!("live {i}"));
    }
    assert_eq!(
        b.ack(&["r-0"]).await.unwrap().payload,
        "acknowledged 1 of 1"
    );
    assert_eq!(
        code_id(&a.status().await.unwrap()),
        (status::DELIVERED, Some("r-0"))
    );
    drop(b);
    // The two it never acknowledged were held only in memory; now they are durable, and
    // Alice is told so by one Status 8 naming both, in order.
    let stored_later = a.status().await.unwrap();
    assert_eq!(
        about(&stored_later),
        (status::STORED_LATER, vec!["r-1", "r-2"])
    );
    assert!(
        stored_later.payload.contains("when they log in"),
        "Bob has no other session: {stored_later:?}"
    );
    // A message sent while Bob is away queues behind them.
    let later = message_with_id(&a_key, &b_hex, "while away", "r-3");
    a.send(&later).await.unwrap();
    assert_eq!(
        code_id(&a.status().await.unwrap()),
        (status::STORED, Some("r-3"))
    );

    let mut b = relogin(&server, &bob).await;
    let mut texts = Vec::new();
    for _ in 0..3 {
        let m = b.message().await.unwrap();
        texts.push((m.msg, m.id.unwrap()));
    }
    assert_eq!(
        texts,
        [
            ("live 1".to_string(), "r-1".to_string()),
            ("live 2".to_string(), "r-2".to_string()),
            ("while away".to_string(), "r-3".to_string()),
        ],
        "exactly the unacknowledged messages, in the sender's order"
    );
    assert_eq!(b.status().await.unwrap().status, status::DELIVERED_STORED);
    // Not acknowledged yet, so a cut now brings them all once more.
    drop(b);
    let mut b = relogin(&server, &bob).await;
    for want in ["r-1", "r-2", "r-3"] {
        assert_eq!(b.message().await.unwrap().id.as_deref(), Some(want));
    }
    assert_eq!(b.status().await.unwrap().status, status::DELIVERED_STORED);
    assert_eq!(
        b.ack(&["r-1", "r-2", "r-3"]).await.unwrap().payload,
        "acknowledged 3 of 3"
    );
    // One ACK of three messages from one sender: one receipt naming the three.
    assert_eq!(
        about(&a.status().await.unwrap()),
        (status::DELIVERED, vec!["r-1", "r-2", "r-3"])
    );
    drop(b);
    let mut b = relogin(&server, &bob).await;
    b.send(&Command::new(cmd::OFFLINES, &[]).into())
        .await
        .unwrap();
    assert_eq!(
        b.status().await.unwrap().payload,
        "delivered 0 stored messages",
        "acknowledged messages are gone"
    );
}

#[tokio::test]
async fn a_cut_in_the_middle_of_stored_delivery_loses_nothing() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let (a_key, b_hex) = (alice.public_key(), bob.public_key().to_hex());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    // More than one delivery batch (256), sent without waiting for answers: many messages
    // share each commit, and the answers still come in order.
    const N: usize = 300;
    for i in 0..N {
        let m = message_with_id(&a_key, &b_hex, &format!("{i}"), &format!("s-{i}"));
        a.send(&m).await.unwrap();
    }
    for i in 0..N {
        let s = a.status().await.unwrap();
        assert_eq!(
            code_id(&s),
            (status::STORED, Some(format!("s-{i}").as_str()))
        );
    }
    // Bob takes 100, acknowledges the first 50 and is cut off mid-delivery.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    for i in 0..100 {
        assert_eq!(b.message().await.unwrap().msg, format!("{i}"));
    }
    let first: Vec<String> = (0..50).map(|i| format!("s-{i}")).collect();
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    b.send(&Command::new(cmd::ACK, &first).into())
        .await
        .unwrap();
    // The rest of the delivery is still coming; wait for the ACK's answer among it, so the
    // cut comes after the server took the acknowledgement.
    loop {
        match b.datum().await.unwrap() {
            Datum::Status(s) if s.status == status::OK => {
                assert_eq!(s.payload, "acknowledged 50 of 50");
                break;
            }
            _ => continue,
        }
    }
    drop(b);

    let mut b = relogin(&server, &bob).await;
    for i in 50..N {
        let m = b.message().await.unwrap();
        assert_eq!(
            (m.msg.as_str(), m.id.as_deref()),
            (format!("{i}").as_str(), Some(format!("s-{i}").as_str())),
            "every unacknowledged message, once, in order"
        );
    }
    let s = b.status().await.unwrap();
    assert_eq!(
        (s.status, s.payload.as_str()),
        (status::DELIVERED_STORED, "delivered 250 stored messages")
    );
}

#[tokio::test]
async fn a_full_queue_refuses_with_the_id_and_keeps_what_it_has() {
    // One sender may fill the whole queue here (its share is the queue's limit), so that the
    // queue's own limit is what refuses.
    let server = TestServer::start_with(&[
        "--max-offline-messages",
        "3",
        "--max-offline-per-sender",
        "3",
    ]);
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let (a_key, b_hex) = (alice.public_key(), bob.public_key().to_hex());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    for i in 0..5 {
        let m = message_with_id(&a_key, &b_hex, &format!("q{i}"), &format!("q-{i}"));
        a.send(&m).await.unwrap();
    }
    let answers: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(a.status().await.unwrap());
        }
        v
    };
    let codes: Vec<_> = answers.iter().map(code_id).collect();
    assert_eq!(
        codes,
        [
            (status::STORED, Some("q-0")),
            (status::STORED, Some("q-1")),
            (status::STORED, Some("q-2")),
            (status::QUEUE_FULL, Some("q-3")),
            (status::QUEUE_FULL, Some("q-4")),
        ]
    );
    assert!(
        answers[3].payload.contains("3 messages"),
        "the answer says why: {:?}",
        answers[3].payload
    );
    // Nothing already stored was lost; acknowledging makes room again.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    for i in 0..3 {
        assert_eq!(b.message().await.unwrap().msg, format!("q{i}"));
    }
    assert_eq!(b.status().await.unwrap().status, status::DELIVERED_STORED);
    assert_eq!(
        b.ack(&["q-0", "q-1", "q-2"]).await.unwrap().payload,
        "acknowledged 3 of 3"
    );
    drop(b);
    // The receipt for the acknowledged messages (one, naming all three) comes first, then
    // the retry is stored.
    assert_eq!(
        about(&a.status().await.unwrap()),
        (status::DELIVERED, vec!["q-0", "q-1", "q-2"])
    );
    server.until_offline(&bob.public_key()).await;
    let retry = message_with_id(&a_key, &b_hex, "q3", "q-3");
    a.send(&retry).await.unwrap();
    assert_eq!(
        code_id(&a.status().await.unwrap()),
        (status::STORED, Some("q-3"))
    );
}

#[tokio::test]
async fn bad_ids_and_acks_get_clear_errors_and_route_nothing() {
    let server = TestServer::start();
    let (alice, bob, carol) = (new_key(), new_key(), new_key());
    let (a_key, b_key, c_key) = (alice.public_key(), bob.public_key(), carol.public_key());
    let (a_hex, b_hex, c_hex) = (a_key.to_hex(), b_key.to_hex(), c_key.to_hex());
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut c = Conn::login_tcp(server.tcp, &carol).await.unwrap();
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let long = "x".repeat(65);
    for bad in ["", "has space", "ümlaut", long.as_str()] {
        let m = message_with_id(&a_key, &b_hex, "never", bad);
        a.send(&m).await.unwrap();
        let s = a.status().await.unwrap();
        assert_eq!(s.status, status::BAD_ARGUMENT, "{bad:?}: {s:?}");
        assert!(s.payload.contains("bad message id"), "{s:?}");
        // Only a well-formed id names the answer: a malformed one cannot be repeated back.
        assert_eq!(s.id, None, "{s:?}");
    }
    // A forged `from` with an id is refused with the id, so the sender knows which one.
    let mut spoof = message_with_id(&b_key, &c_hex, "forged", "f-1");
    if let Datum::Message(m) = &mut spoof {
        m.from = b_hex.clone();
    }
    a.send(&spoof).await.unwrap();
    assert_eq!(
        code_id(&a.status().await.unwrap()),
        (status::SPOOF, Some("f-1"))
    );
    // ACK without ids, with a malformed id, and for an id nobody sent.
    b.send(&Command::new(cmd::ACK, &[]).into()).await.unwrap();
    assert_eq!(b.status().await.unwrap().status, status::BAD_ARGUMENT);
    assert_eq!(
        b.ack(&["ok", "not ok"]).await.unwrap().status,
        status::BAD_ARGUMENT
    );
    assert_eq!(
        b.ack(&["nobody-sent-this"]).await.unwrap().payload,
        "acknowledged 0 of 1"
    );
    // Carol cannot acknowledge Bob's messages: the ACK is scoped to the session's own key.
    let m = message_with_id(&a_key, &b_hex, "for bob", "b-1");
    a.send(&m).await.unwrap();
    assert_eq!(
        code_id(&a.status().await.unwrap()),
        (status::RELAYED, Some("b-1"))
    );
    assert_eq!(
        c.ack(&["b-1"]).await.unwrap().payload,
        "acknowledged 0 of 1"
    );
    // Bob received nothing but the one valid message, and everyone still works.
    let got = b.message().await.unwrap();
    assert_eq!(
        (got.msg.as_str(), got.id.as_deref()),
        ("for bob", Some("b-1"))
    );
    assert_eq!(
        b.ack(&["b-1"]).await.unwrap().payload,
        "acknowledged 1 of 1"
    );
    assert_eq!(
        code_id(&a.status().await.unwrap()),
        (status::DELIVERED, Some("b-1"))
    );
    c.send(&message(&c_key, &a_hex, "still fine"))
        .await
        .unwrap();
    assert_eq!(c.status().await.unwrap().status, status::RELAYED);
    assert_eq!(a.message().await.unwrap().msg, "still fine");
}

#[tokio::test]
async fn ghost_hands_over_unacknowledged_messages_before_new_ones() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    let (a_key, b_hex) = (alice.public_key(), bob.public_key().to_hex());
    let mut old = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let m1 = message_with_id(&a_key, &b_hex, "one", "g-1");
    a.send(&m1).await.unwrap();
    assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    assert_eq!(old.message().await.unwrap().msg, "one");
    let mut a_statuses = Vec::new();
    // A second session of Bob's takes over without the first having acknowledged.
    let mut new = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    assert_eq!(new.status().await.unwrap().status, status::SESSION_EXISTS);
    new.send(&Command::new(cmd::GHOST, &[]).into())
        .await
        .unwrap();
    assert_eq!(new.status().await.unwrap().status, status::GHOSTED);
    let m2 = message_with_id(&a_key, &b_hex, "two", "g-2");
    a.send(&m2).await.unwrap();
    // The new session gets the old one's unacknowledged message first, then the new one.
    assert_eq!(new.message().await.unwrap().msg, "one");
    let mut rest = Vec::new();
    while rest.is_empty() {
        match new.datum().await.unwrap() {
            Datum::Message(m) => rest.push(m.msg),
            Datum::Status(s) if s.status == status::DELIVERED_STORED => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rest, ["two"]);
    assert_eq!(
        new.ack(&["g-1", "g-2"]).await.unwrap().payload,
        "acknowledged 2 of 2"
    );
    let mut receipts = Vec::new();
    // (The 8 may come before or after the 7s: it is sent once its write has ended, and Bob's
    // new session may read the stored copy a moment before that.)
    while receipts.len() < 2
        || !a_statuses
            .iter()
            .any(|s: &Status| s.status == status::STORED_LATER)
    {
        let s = a.status().await.unwrap();
        if s.status == status::DELIVERED {
            receipts.extend(s.about().map(str::to_string));
        }
        a_statuses.push(s);
    }
    // Receipts say which message; their order among themselves is not promised.
    receipts.sort();
    assert_eq!(receipts, ["g-1", "g-2"]);
    // g-1 was held in memory when the new session took over: it was stored and Alice told
    // so, with a text that says where it went (Bob is online, not waiting for a login).
    let stored_later = a_statuses
        .iter()
        .find(|s| s.status == status::STORED_LATER)
        .expect("an 8 for g-1");
    assert_eq!(about(stored_later).1, ["g-1"]);
    assert!(
        stored_later
            .payload
            .contains("newer session (GHOST) gets it now"),
        "{stored_later:?}"
    );
}

#[tokio::test]
async fn a_login_during_a_stream_keeps_the_senders_order() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let (a_key, b_hex) = (alice.public_key(), bob.public_key().to_hex());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    // Few enough that the answers fit in the socket buffers while Alice is not reading yet.
    const N: usize = 600;
    let b_hex2 = b_hex.clone();
    let sender = tokio::spawn(async move {
        let b_hex = b_hex2;
        for i in 0..N {
            let m = message_with_id(&a_key, &b_hex, &format!("{i}"), &format!("o-{i}"));
            a.send(&m).await.unwrap();
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut codes = Vec::new();
        for _ in 0..N {
            codes.push(a.status().await.unwrap().status);
        }
        codes
    });
    // Bob logs in while the stream is running: some messages are stored, some still being
    // committed, the rest come live. He must see them in the order they were sent.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut next_expected = 0usize;
    while next_expected < N {
        match b.datum().await.unwrap() {
            Datum::Message(m) => {
                assert_eq!(m.msg, format!("{next_expected}"), "out of order");
                next_expected += 1;
            }
            Datum::Status(s) if s.status == status::DELIVERED_STORED => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let codes = sender.await.unwrap();
    assert!(
        codes
            .iter()
            .all(|c| *c == status::STORED || *c == status::RELAYED),
        "{codes:?}"
    );
}

#[tokio::test]
async fn stored_messages_expire_after_the_retention_and_both_sides_are_told() {
    let server = TestServer::start_with(&["--retention", "2s"]);
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let (a_key, b_hex) = (alice.public_key(), bob.public_key().to_hex());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    a.send(&message_with_id(&a_key, &b_hex, "too late", "e-1"))
        .await
        .unwrap();
    assert_eq!(
        code_id(&a.status().await.unwrap()),
        (status::STORED, Some("e-1"))
    );
    // Bob stays away past the retention: Alice learns her message was deleted unread.
    let s = a.status().await.unwrap();
    assert_eq!(code_id(&s), (status::EXPIRED, Some("e-1")), "{s:?}");
    assert!(
        s.payload.contains("expired unread after 2 seconds"),
        "{s:?}"
    );
    // Bob is told how many he lost, and gets nothing else.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let s = b.status().await.unwrap();
    assert_eq!(
        (s.status, s.payload.as_str()),
        (
            status::EXPIRED,
            "1 stored message expired unread after 2 seconds"
        )
    );
    assert_eq!(b.status().await.unwrap().status, status::DELIVERED_STORED);
    b.send(&Command::new(cmd::OFFLINES, &[]).into())
        .await
        .unwrap();
    assert_eq!(
        b.status().await.unwrap().payload,
        "delivered 0 stored messages"
    );
    assert!(server.logs().contains("deleted expired stored messages"));
}

#[tokio::test]
async fn a_session_that_never_acknowledges_is_a_slow_reader_and_loses_nothing() {
    let server = TestServer::start_with(&["--max-unacked", "3"]);
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let (a_key, b_hex) = (alice.public_key(), bob.public_key().to_hex());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();

    // A backlog larger than the limit is fine: stored messages do not count against it.
    for i in 0..5 {
        a.send(&message_with_id(
            &a_key,
            &b_hex,
            &format!("old {i}"),
            &format!("k-{i}"),
        ))
        .await
        .unwrap();
        assert_eq!(a.status().await.unwrap().status, status::STORED);
    }
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    for i in 0..5 {
        assert_eq!(b.message().await.unwrap().msg, format!("old {i}"));
    }
    assert_eq!(b.status().await.unwrap().status, status::DELIVERED_STORED);

    // Held in memory and never acknowledged: three are allowed, the fourth makes Bob a slow
    // reader. What he held is stored (Alice gets 8s), the fourth is stored too.
    for i in 0..4 {
        a.send(&message_with_id(
            &a_key,
            &b_hex,
            &format!("new {i}"),
            &format!("n-{i}"),
        ))
        .await
        .unwrap();
    }
    // One 8 names the three that were held; every other answer names one message.
    let mut answers = Vec::new();
    while answers.len() < 7 {
        let s = a.status().await.unwrap();
        if s.status == status::STORED_LATER {
            assert_eq!(about(&s).1, ["n-0", "n-1", "n-2"], "one 8 for all three");
            assert!(s.payload.contains("did not read fast enough"), "{s:?}");
        }
        answers.extend(s.about().map(|id| (s.status, id.to_string())));
    }
    answers.sort_by_key(|(code, id)| (id.clone(), *code));
    assert_eq!(
        answers,
        [
            (status::RELAYED, "n-0".to_string()),
            (status::STORED_LATER, "n-0".to_string()),
            (status::RELAYED, "n-1".to_string()),
            (status::STORED_LATER, "n-1".to_string()),
            (status::RELAYED, "n-2".to_string()),
            (status::STORED_LATER, "n-2".to_string()),
            (status::STORED, "n-3".to_string()),
        ]
    );
    let mut seen = Vec::new();
    let kicked = loop {
        match b.datum().await.unwrap() {
            Datum::Message(m) => seen.push(m.msg),
            Datum::Status(s) => break s,
            other => panic!("unexpected {other:?}"),
        }
    };
    // The kick may overtake the queued messages: he sees some of them, in order, or none.
    let all = ["new 0", "new 1", "new 2"].map(String::from);
    assert!(all.starts_with(&seen), "{seen:?}");
    assert_eq!(kicked.status, status::TOO_SLOW, "{kicked:?}");
    assert!(b.closed().await);
    // At his next login Bob gets everything he never acknowledged, in order.
    let mut b = relogin(&server, &bob).await;
    let mut all = Vec::new();
    while all.len() < 9 {
        all.push(b.message().await.unwrap().msg);
    }
    assert_eq!(
        all,
        [
            "old 0", "old 1", "old 2", "old 3", "old 4", "new 0", "new 1", "new 2", "new 3"
        ]
    );
}

#[tokio::test]
async fn the_byte_limit_of_a_queue_refuses_with_the_id() {
    // Room for one of these messages, not two; the sender's share is the whole queue.
    let server = TestServer::start_with(&[
        "--max-offline-bytes",
        "1000",
        "--max-offline-per-sender-bytes",
        "1000",
    ]);
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let (a_key, b_hex) = (alice.public_key(), bob.public_key().to_hex());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let body = "x".repeat(600);
    for (id, want) in [("y-1", status::STORED), ("y-2", status::QUEUE_FULL)] {
        a.send(&message_with_id(&a_key, &b_hex, &body, id))
            .await
            .unwrap();
        let s = a.status().await.unwrap();
        assert_eq!(code_id(&s), (want, Some(id)), "{s:?}");
    }
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    assert_eq!(b.message().await.unwrap().id.as_deref(), Some("y-1"));
    assert_eq!(b.status().await.unwrap().status, status::DELIVERED_STORED);
}
