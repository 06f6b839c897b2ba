//! The bounds of the offline store from outside (docs/PROTOCOL.md §11): one sender's share of
//! a recipient's queue (`-21`), the store's byte budget over every queue (`-22`), messages a
//! connection held unacknowledged that find no room when it ends (`-24` to their senders),
//! and the counts behind them across a crash. Each test also shows that users the bound is
//! not about go on as before, and that the operator sees which bound fired in `/metrics`.

use flexim_protocol::datum::Status;
use flexim_protocol::{Datum, PublicKey, SecretKey, status};
use flexim_tests::{Conn, Options, TestServer, message_with_id, new_key};

/// A Status's code and the ids it is about, for comparing.
fn about(s: &Status) -> (i8, Vec<String>) {
    (s.status, s.about().map(str::to_string).collect())
}

/// Sends a message with `id` from `from` to `to` and returns its answer.
async fn send(conn: &mut Conn, from: &SecretKey, to: &PublicKey, body: &str, id: &str) -> Status {
    let m = message_with_id(&from.public_key(), &to.to_hex(), body, id);
    conn.send(&m).await.unwrap();
    let s = conn.status().await.unwrap();
    assert_eq!(
        s.id.as_deref(),
        Some(id),
        "the answer names its message: {s:?}"
    );
    s
}

/// The next `n` messages on `conn`, as (id, body), skipping every Status on the way.
async fn messages(conn: &mut Conn, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        match conn.datum().await.unwrap() {
            Datum::Message(m) => got.push((m.id.unwrap_or_default(), m.msg)),
            // Notices: a stranger's Request comes before its first message.
            Datum::Status(_) | Datum::Request(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

/// The two receipts a sender gets when some of its held messages were kept and some not, as
/// (code, ids) in code order, and the text of the `-24`.
async fn receipts(conn: &mut Conn) -> (Vec<(i8, Vec<String>)>, String) {
    let (mut got, mut text) = (Vec::new(), String::new());
    for _ in 0..2 {
        let s = conn.status().await.unwrap();
        if s.status == status::NOT_KEPT {
            text = s.payload.clone();
        }
        got.push(about(&s));
    }
    got.sort();
    (got, text)
}

/// Two users online at once exchange a message each way, relayed: a bound on the store does
/// not touch them.
async fn online_pair_still_talks(server: &TestServer) {
    let (carol, dave) = (new_key(), new_key());
    let mut d = Conn::login_tcp(server.tcp, &dave).await.unwrap();
    let mut c = Conn::login_tcp(server.tcp, &carol).await.unwrap();
    let s = send(&mut c, &carol, &dave.public_key(), "live", "live-1").await;
    assert_eq!(s.status, status::RELAYED, "{s:?}");
    assert_eq!(messages(&mut d, 1).await[0].1, "live");
    let s = send(&mut d, &dave, &carol.public_key(), "back", "live-2").await;
    assert_eq!(s.status, status::RELAYED, "{s:?}");
    assert_eq!(messages(&mut c, 1).await[0].1, "back");
}

/// A refusal counter of `/metrics`.
async fn refusals(server: &TestServer, name: &str) -> u64 {
    let metrics = server.metrics().await.unwrap();
    let key = format!("flexim_refusals_total{{status=\"{name}\"}}");
    metrics.get(&key).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_contact_gets_only_its_share_of_a_queue_and_a_friend_still_has_room() {
    // The share is not given: a quarter of the queue's eight, rounded up, is two.
    let server = TestServer::start_with(&["--max-offline-messages", "8"]);
    // Bob accepted them all: the share bounds a contact that floods (a stranger's requests
    // box holds far less, `consent.rs`).
    let (mallory, friend, bob, erin) = (new_key(), new_key(), new_key(), new_key());
    server.introduce(&[&bob, &erin, &mallory, &friend]).await;
    let b_key = bob.public_key();
    let mut m = Conn::login_tcp(server.tcp, &mallory).await.unwrap();
    for id in ["junk-1", "junk-2"] {
        assert_eq!(
            send(&mut m, &mallory, &b_key, "junk", id).await.status,
            status::STORED
        );
    }
    for id in ["junk-3", "junk-4"] {
        let s = send(&mut m, &mallory, &b_key, "junk", id).await;
        assert_eq!(s.status, status::SHARE_FULL, "{s:?}");
        assert!(
            s.payload.contains("you have 2 messages")
                && s.payload.contains("one sender may have 2 messages"),
            "the answer names how many wait and the limit: {}",
            s.payload
        );
    }
    // Bob's friend, another key, still stores; so does the stranger, for someone else.
    let mut f = Conn::login_tcp(server.tcp, &friend).await.unwrap();
    for id in ["friend-1", "friend-2"] {
        assert_eq!(
            send(&mut f, &friend, &b_key, "hi bob", id).await.status,
            status::STORED
        );
    }
    let s = send(&mut m, &mallory, &erin.public_key(), "junk", "other-1").await;
    assert_eq!(s.status, status::STORED, "a share is of one queue: {s:?}");
    online_pair_still_talks(&server).await;
    // At his login Bob gets every message that was stored, in each sender's order.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut ids: Vec<String> = messages(&mut b, 4).await.into_iter().map(|m| m.0).collect();
    ids.sort();
    assert_eq!(ids, ["friend-1", "friend-2", "junk-1", "junk-2"]);
    assert_eq!(
        b.status().await.unwrap().payload,
        "delivered 4 stored messages"
    );
    assert_eq!(refusals(&server, "share-full").await, 2);
}

#[tokio::test]
async fn past_the_store_budget_nothing_is_stored_until_room_is_freed_and_online_users_talk_on() {
    let (alice, bob, erin) = (new_key(), new_key(), new_key());
    let (a_key, b_key) = (alice.public_key(), bob.public_key());
    // The budget holds exactly three of these messages: each entry counts 41 bytes, its id
    // and its frame as sent.
    let frame = message_with_id(&a_key, &b_key.to_hex(), "x".repeat(500).as_str(), "b-0")
        .to_frame()
        .unwrap();
    let size = 41 + 3 + frame.len();
    let budget = (3 * size).to_string();
    // Given by its environment variable, as an operator's unit file would.
    let server = TestServer::launch(Options {
        env: vec![("FLEXIM_MAX_STORE_BYTES".into(), budget.clone())],
        ..Options::default()
    })
    .unwrap();
    server.introduce(&[&bob, &erin, &alice]).await;
    let body = "x".repeat(500);
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    for id in ["b-0", "b-1", "b-2"] {
        assert_eq!(
            send(&mut a, &alice, &b_key, &body, id).await.status,
            status::STORED
        );
    }
    let s = send(&mut a, &alice, &b_key, &body, "b-3").await;
    assert_eq!(s.status, status::STORE_FULL, "{s:?}");
    assert!(
        s.payload.contains("the server's store is full")
            && s.payload.contains(&format!("its budget is {budget}")),
        "{}",
        s.payload
    );
    // The budget is the whole store's: a message for another offline user is refused too.
    let s = send(&mut a, &alice, &erin.public_key(), "hi", "e-0").await;
    assert_eq!(s.status, status::STORE_FULL, "{s:?}");
    online_pair_still_talks(&server).await;
    // Bob's stored messages are delivered, and his acknowledgement frees room.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let got: Vec<String> = messages(&mut b, 3).await.into_iter().map(|m| m.0).collect();
    assert_eq!(got, ["b-0", "b-1", "b-2"]);
    assert_eq!(
        b.ack(&["b-0", "b-1", "b-2"]).await.unwrap().payload,
        "acknowledged 3 of 3"
    );
    assert_eq!(
        about(&a.status().await.unwrap()),
        (
            status::DELIVERED,
            vec!["b-0".into(), "b-1".into(), "b-2".into()]
        )
    );
    drop(b);
    server.until_offline(&b_key).await;
    let s = send(&mut a, &alice, &b_key, &body, "b-3").await;
    assert_eq!(s.status, status::STORED, "room again once delivered: {s:?}");
    let s = send(&mut a, &alice, &erin.public_key(), "hi", "e-0").await;
    assert_eq!(s.status, status::STORED, "{s:?}");
    assert_eq!(refusals(&server, "store-full").await, 2);
}

#[tokio::test]
async fn held_messages_that_do_not_fit_at_disconnect_are_not_kept_and_their_senders_told() {
    // Bob's queue takes three; each sender may have all three.
    let server = TestServer::start_with(&[
        "--max-offline-messages",
        "3",
        "--max-offline-per-sender",
        "3",
    ]);
    let (alice, carol, bob) = (new_key(), new_key(), new_key());
    let b_key = bob.public_key();
    server.introduce(&[&bob, &alice, &carol]).await;
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut c = Conn::login_tcp(server.tcp, &carol).await.unwrap();
    // Five messages relayed to Bob, in this order, who reads them and acknowledges none.
    let order = [(0, "a-0"), (1, "c-0"), (0, "a-1"), (1, "c-1"), (0, "a-2")];
    for (who, id) in order {
        let (conn, key) = if who == 0 {
            (&mut a, &alice)
        } else {
            (&mut c, &carol)
        };
        assert_eq!(
            send(conn, key, &b_key, id, id).await.status,
            status::RELAYED
        );
    }
    assert_eq!(messages(&mut b, 5).await.len(), 5);
    drop(b);
    // The first three fit his queue and are stored (8); the last two do not, and their
    // senders, told 3 before, now hear that the server did not keep them (-24).
    let (from_alice, _) = receipts(&mut a).await;
    assert_eq!(
        from_alice,
        [
            (status::NOT_KEPT, vec!["a-2".to_string()]),
            (
                status::STORED_LATER,
                vec!["a-0".to_string(), "a-1".to_string()]
            ),
        ]
    );
    let (from_carol, not_kept_text) = receipts(&mut c).await;
    assert_eq!(
        from_carol,
        [
            (status::NOT_KEPT, vec!["c-1".to_string()]),
            (status::STORED_LATER, vec!["c-0".to_string()]),
        ]
    );
    assert!(
        not_kept_text.contains(&format!("not kept for {b_key}"))
            && not_kept_text.contains("their queue is full (3 messages"),
        "{not_kept_text}"
    );
    online_pair_still_talks(&server).await;
    // At his next login Bob gets what was kept, in order, and his queue held no more than
    // its limit.
    server.until_offline(&b_key).await;
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let got: Vec<String> = messages(&mut b, 3).await.into_iter().map(|m| m.0).collect();
    assert_eq!(got, ["a-0", "c-0", "a-1"]);
    assert_eq!(
        b.status().await.unwrap().payload,
        "delivered 3 stored messages"
    );
    assert_eq!(
        refusals(&server, "not-kept").await,
        2,
        "one notice per sender"
    );
}

#[tokio::test]
async fn a_senders_share_is_still_used_up_after_a_crash_and_restart() {
    let server = TestServer::start_with(&["--max-offline-per-sender", "2"]);
    let (mallory, friend, bob) = (new_key(), new_key(), new_key());
    server.introduce(&[&bob, &mallory, &friend]).await;
    let b_key = bob.public_key();
    let mut m = Conn::login_tcp(server.tcp, &mallory).await.unwrap();
    for id in ["junk-1", "junk-2"] {
        assert_eq!(
            send(&mut m, &mallory, &b_key, "junk", id).await.status,
            status::STORED
        );
    }
    drop(m);
    // SIGKILL: nothing is written at exit, so what counts is what each commit wrote.
    let server = server.crash_and_restart();
    let mut m = Conn::login_tcp(server.tcp, &mallory).await.unwrap();
    let s = send(&mut m, &mallory, &b_key, "junk", "junk-3").await;
    assert_eq!(s.status, status::SHARE_FULL, "the count survived: {s:?}");
    assert!(s.payload.contains("you have 2 messages"), "{}", s.payload);
    let mut f = Conn::login_tcp(server.tcp, &friend).await.unwrap();
    let s = send(&mut f, &friend, &b_key, "hi bob", "friend-1").await;
    assert_eq!(s.status, status::STORED, "{s:?}");
    online_pair_still_talks(&server).await;
    // Bob reads and acknowledges the stranger's messages: its share is free again, and that
    // too is durable.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut ids: Vec<String> = messages(&mut b, 3).await.into_iter().map(|m| m.0).collect();
    ids.sort();
    assert_eq!(ids, ["friend-1", "junk-1", "junk-2"]);
    assert_eq!(
        b.ack(&["junk-1", "junk-2", "friend-1"])
            .await
            .unwrap()
            .payload,
        "acknowledged 3 of 3"
    );
    drop(b);
    // The observer this waits with logs in, and its login is a store write called after the
    // ACK's removal: once it is done, so is the removal (writes take effect in call order).
    server.until_offline(&b_key).await;
    drop(m);
    let server = server.crash_and_restart();
    let mut m = Conn::login_tcp(server.tcp, &mallory).await.unwrap();
    for id in ["junk-4", "junk-5"] {
        assert_eq!(
            send(&mut m, &mallory, &b_key, "junk", id).await.status,
            status::STORED
        );
    }
    let s = send(&mut m, &mallory, &b_key, "junk", "junk-6").await;
    assert_eq!(s.status, status::SHARE_FULL, "{s:?}");
}
