//! Receipts (docs/PROTOCOL.md §8.1): one per sender for many messages (`Status.ids`), sent to
//! the sender's active session only, kept for an offline sender and counted apart from
//! messages at its next login; and an ACK counts ids, not copies.

use flexim_protocol::datum::Command;
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Datum, SecretKey};
use flexim_tests::{Conn, TestServer, message_with_id, new_key};

/// Reads messages until `n` have come; returns their ids.
async fn messages(raw: &mut Conn, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        if let Datum::Message(m) = raw.datum().await.unwrap() {
            ids.push(m.id.unwrap());
        }
    }
    ids
}

fn hex(key: &SecretKey) -> String {
    key.public_key().to_hex()
}

#[tokio::test]
async fn one_ack_of_many_messages_gives_one_receipt_per_sender_naming_all_their_ids() {
    let server = TestServer::start();
    let (alice, carol, bob) = (new_key(), new_key(), new_key());
    server.introduce(&[&alice, &carol, &bob]).await;
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut c = Conn::login_tcp(server.tcp, &carol).await.unwrap();
    for i in 0..20 {
        let id = format!("a-{i}");
        a.send(&message_with_id(&alice.public_key(), &hex(&bob), "hi", &id))
            .await
            .unwrap();
        assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    }
    c.send(&message_with_id(
        &carol.public_key(),
        &hex(&bob),
        "hi",
        "c-0",
    ))
    .await
    .unwrap();
    assert_eq!(c.status().await.unwrap().status, status::RELAYED);
    let got = messages(&mut b, 21).await;
    let got: Vec<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(b.ack(&got).await.unwrap().payload, "acknowledged 21 of 21");
    // Alice's twenty messages: one Status 7 with their ids in `ids`, in order.
    let receipt = a.status().await.unwrap();
    assert_eq!(receipt.status, status::DELIVERED);
    assert_eq!(receipt.id, None);
    let want: Vec<String> = (0..20).map(|i| format!("a-{i}")).collect();
    assert_eq!(receipt.ids, want);
    assert_eq!(receipt.payload, format!("delivered to {}", hex(&bob)));
    // Carol's one message: a receipt as it always looked, with `id`.
    let receipt = c.status().await.unwrap();
    assert_eq!((receipt.id.as_deref(), receipt.ids.len()), (Some("c-0"), 0));
}

#[tokio::test]
async fn an_ack_counts_ids_not_copies_and_forgets_every_copy() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    // Alice sends m-1, then again byte for byte (as after a reconnect, §8.1 sender rule 3):
    // the server keeps one copy per send, and Bob gets both.
    let m = message_with_id(&alice.public_key(), &hex(&bob), "twice", "m-1");
    for _ in 0..2 {
        a.send(&m).await.unwrap();
        assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    }
    assert_eq!(messages(&mut b, 2).await, ["m-1", "m-1"]);
    assert_eq!(
        b.ack(&["m-1"]).await.unwrap().payload,
        "acknowledged 1 of 1"
    );
    let receipt = a.status().await.unwrap();
    assert_eq!(
        (receipt.status, receipt.id.as_deref()),
        (status::DELIVERED, Some("m-1"))
    );
    // Both copies are forgotten: nothing comes back at Bob's next login, and no second
    // receipt reaches Alice.
    drop(b);
    server.until_offline(&bob.public_key()).await;
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    b.send(&Command::new(cmd::OFFLINES, &[]).into())
        .await
        .unwrap();
    assert_eq!(
        b.status().await.unwrap().payload,
        "delivered 0 stored messages"
    );
    a.send(&Command::new(cmd::ROSTER, &[]).into())
        .await
        .unwrap();
    assert!(
        matches!(a.datum().await.unwrap(), Datum::Roster(_)),
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
        second.status().await.unwrap().status,
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
    assert_eq!(second.status().await.unwrap().status, status::RELAYED);
    messages(&mut b, 1).await;
    b.ack(&["s-1"]).await.unwrap();
    // ...but the receipt goes to the key's active session.
    let receipt = active.status().await.unwrap();
    assert_eq!(
        (receipt.status, receipt.id.as_deref()),
        (status::DELIVERED, Some("s-1"))
    );
    second
        .send(&Command::new(cmd::ROSTER, &[]).into())
        .await
        .unwrap();
    assert!(
        matches!(second.datum().await.unwrap(), Datum::Roster(_)),
        "the second session got no receipt"
    );
    // After GHOST the second session is the active one, and receipts come to it.
    second
        .send(&Command::new(cmd::GHOST, &[]).into())
        .await
        .unwrap();
    assert_eq!(second.status().await.unwrap().status, status::GHOSTED);
    second
        .send(&message_with_id(
            &alice.public_key(),
            &hex(&bob),
            "from 2",
            "s-2",
        ))
        .await
        .unwrap();
    assert_eq!(second.status().await.unwrap().status, status::RELAYED);
    messages(&mut b, 1).await;
    b.ack(&["s-2"]).await.unwrap();
    assert_eq!(second.status().await.unwrap().id.as_deref(), Some("s-2"));
}

#[tokio::test]
async fn receipts_kept_for_an_offline_sender_are_counted_apart_from_messages() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
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
        assert_eq!(a.status().await.unwrap().status, status::STORED);
    }
    drop(a);
    server.until_offline(&alice.public_key()).await;
    // Bob reads and acknowledges both while Alice is away: her receipt is kept for her.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    assert_eq!(messages(&mut b, 2).await, ["k-1", "k-2"]);
    assert_eq!(
        b.ack(&["k-1", "k-2"]).await.unwrap().payload,
        "acknowledged 2 of 2"
    );
    // Alice's next login: the receipt (one, naming both), then the notice, which counts it
    // apart from messages (there were none).
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let receipt = a.status().await.unwrap();
    assert_eq!(
        (receipt.status, receipt.ids.clone()),
        (
            status::DELIVERED,
            vec!["k-1".to_string(), "k-2".to_string()]
        )
    );
    let notice = a.status().await.unwrap();
    assert_eq!(
        (notice.status, notice.payload.as_str()),
        (
            status::DELIVERED_STORED,
            "delivered 0 stored messages and 1 stored receipt"
        )
    );
}
