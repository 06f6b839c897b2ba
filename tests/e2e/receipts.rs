//! Receipts (docs/PROTOCOL.md §8.1): one per sender for many messages (`Status.ids`), sent to
//! the sender's active session only, kept for an offline sender and counted apart from
//! messages at its next login; and an ACK counts ids, not copies.

use flexim_protocol::datum::{Command, Status};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, SecretKey};
use flexim_tests::{Conn, TestServer, message_with_id, new_key};

/// The next datum that is not a presence notice.
async fn next(raw: &mut Conn) -> Datum {
    loop {
        match raw.recv().await.unwrap() {
            Datum::Status(s) if s.status.abs() == 10 => continue,
            d => return d,
        }
    }
}

async fn next_status(raw: &mut Conn) -> Status {
    match next(raw).await {
        Datum::Status(s) => s,
        other => panic!("expected a Status, got {other:?}"),
    }
}

/// Sends ACK and returns its answer (messages and notices on the way are skipped).
async fn ack(raw: &mut Conn, ids: &[&str]) -> Status {
    raw.send(&Command::new(cmd::ACK, ids).into()).await.unwrap();
    loop {
        if let Datum::Status(s) = next(raw).await
            && s.status == status::OK
        {
            return s;
        }
    }
}

/// Reads messages until `n` have come; returns their ids.
async fn messages(raw: &mut Conn, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        if let Datum::Message(m) = next(raw).await {
            ids.push(m.id.unwrap());
        }
    }
    ids
}

fn hex(key: &SecretKey) -> String {
    key.public_key().to_hex()
}

/// Waits until the server has noticed that `key` is gone (GETUSER says offline).
async fn until_offline(server: &TestServer, key: &SecretKey) {
    let mut observer = Conn::login_tcp(server.tcp, &new_key()).await.unwrap();
    for _ in 0..200 {
        let who = hex(key);
        observer
            .send(&Command::new(cmd::GETUSER, &[who.as_str()]).into())
            .await
            .unwrap();
        if let Datum::User(u) = next(&mut observer).await
            && u.online == Some(false)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the server did not notice the dropped connection");
}

#[tokio::test]
async fn one_ack_of_many_messages_gives_one_receipt_per_sender_naming_all_their_ids() {
    let server = TestServer::start();
    let (alice, carol, bob) = (new_key(), new_key(), new_key());
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut c = Conn::login_tcp(server.tcp, &carol).await.unwrap();
    for i in 0..20 {
        let id = format!("a-{i}");
        a.send(&message_with_id(&alice.public_key(), &hex(&bob), "hi", &id))
            .await
            .unwrap();
        assert_eq!(next_status(&mut a).await.status, status::RELAYED);
    }
    c.send(&message_with_id(
        &carol.public_key(),
        &hex(&bob),
        "hi",
        "c-0",
    ))
    .await
    .unwrap();
    assert_eq!(next_status(&mut c).await.status, status::RELAYED);
    let got = messages(&mut b, 21).await;
    let got: Vec<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(ack(&mut b, &got).await.payload, "acknowledged 21 of 21");
    // Alice's twenty messages: one Status 7 with their ids in `ids`, in order.
    let receipt = next_status(&mut a).await;
    assert_eq!(receipt.status, status::DELIVERED);
    assert_eq!(receipt.id, None);
    let want: Vec<String> = (0..20).map(|i| format!("a-{i}")).collect();
    assert_eq!(receipt.ids, want);
    assert_eq!(receipt.payload, format!("delivered to {}", hex(&bob)));
    // Carol's one message: a receipt as it always looked, with `id`.
    let receipt = next_status(&mut c).await;
    assert_eq!((receipt.id.as_deref(), receipt.ids.len()), (Some("c-0"), 0));
}

#[tokio::test]
async fn an_ack_counts_ids_not_copies_and_forgets_every_copy() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    // Alice sends m-1, then again byte for byte (as after a reconnect, §8.1 sender rule 3):
    // the server keeps one copy per send, and Bob gets both.
    let m = message_with_id(&alice.public_key(), &hex(&bob), "twice", "m-1");
    for _ in 0..2 {
        a.send(&m).await.unwrap();
        assert_eq!(next_status(&mut a).await.status, status::RELAYED);
    }
    assert_eq!(messages(&mut b, 2).await, ["m-1", "m-1"]);
    assert_eq!(ack(&mut b, &["m-1"]).await.payload, "acknowledged 1 of 1");
    let receipt = next_status(&mut a).await;
    assert_eq!(
        (receipt.status, receipt.id.as_deref()),
        (status::DELIVERED, Some("m-1"))
    );
    // Both copies are forgotten: nothing comes back at Bob's next login, and no second
    // receipt reaches Alice.
    drop(b);
    until_offline(&server, &bob).await;
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    b.send(&Command::new(cmd::OFFLINES, &[]).into())
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut b).await.payload,
        "delivered 0 stored messages"
    );
    a.send(&Command::new(cmd::ROSTER, &[]).into())
        .await
        .unwrap();
    assert!(
        matches!(next(&mut a).await, Datum::Roster(_)),
        "no other receipt came"
    );
}

#[tokio::test]
async fn receipts_go_to_the_active_session_only() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut active = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut second = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    assert_eq!(
        next_status(&mut second).await.status,
        status::SESSION_EXISTS
    );
    // The second session may send: its answers come to it...
    second
        .send(&message_with_id(
            &alice.public_key(),
            &hex(&bob),
            "from 2",
            "s-1",
        ))
        .await
        .unwrap();
    assert_eq!(next_status(&mut second).await.status, status::RELAYED);
    messages(&mut b, 1).await;
    ack(&mut b, &["s-1"]).await;
    // ...but the receipt goes to the key's active session.
    let receipt = next_status(&mut active).await;
    assert_eq!(
        (receipt.status, receipt.id.as_deref()),
        (status::DELIVERED, Some("s-1"))
    );
    second
        .send(&Command::new(cmd::ROSTER, &[]).into())
        .await
        .unwrap();
    assert!(
        matches!(next(&mut second).await, Datum::Roster(_)),
        "the second session got no receipt"
    );
    // After GHOST the second session is the active one, and receipts come to it.
    second
        .send(&Command::new(cmd::GHOST, &[]).into())
        .await
        .unwrap();
    assert_eq!(next_status(&mut second).await.status, status::GHOSTED);
    second
        .send(&message_with_id(
            &alice.public_key(),
            &hex(&bob),
            "from 2",
            "s-2",
        ))
        .await
        .unwrap();
    assert_eq!(next_status(&mut second).await.status, status::RELAYED);
    messages(&mut b, 1).await;
    ack(&mut b, &["s-2"]).await;
    assert_eq!(next_status(&mut second).await.id.as_deref(), Some("s-2"));
}

#[tokio::test]
async fn receipts_kept_for_an_offline_sender_are_counted_apart_from_messages() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    for id in ["k-1", "k-2"] {
        a.send(&message_with_id(
            &alice.public_key(),
            &hex(&bob),
            "later",
            id,
        ))
        .await
        .unwrap();
        assert_eq!(next_status(&mut a).await.status, status::STORED);
    }
    drop(a);
    until_offline(&server, &alice).await;
    // Bob reads and acknowledges both while Alice is away: her receipt is kept for her.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    assert_eq!(messages(&mut b, 2).await, ["k-1", "k-2"]);
    assert_eq!(
        ack(&mut b, &["k-1", "k-2"]).await.payload,
        "acknowledged 2 of 2"
    );
    // Alice's next login: the receipt (one, naming both), then the notice, which counts it
    // apart from messages (there were none).
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let receipt = next_status(&mut a).await;
    assert_eq!(
        (receipt.status, receipt.ids.clone()),
        (
            status::DELIVERED,
            vec!["k-1".to_string(), "k-2".to_string()]
        )
    );
    let notice = next_status(&mut a).await;
    assert_eq!(
        (notice.status, notice.payload.as_str()),
        (
            status::DELIVERED_STORED,
            "delivered 0 stored messages and 1 stored receipt"
        )
    );
}
