//! Offline delivery: stored durably, delivered at login, surviving a restart.

use flexim_protocol::Datum;
use flexim_protocol::datum::Command;
use flexim_protocol::status::{self, cmd};
use flexim_tests::{Conn, TestServer, message, new_key};

#[tokio::test]
async fn an_offline_message_survives_a_restart_and_arrives_at_login() {
    let server = TestServer::start();
    let key_before = server.key.clone();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    // Bob registers an alias, then leaves.
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    b.send(&Command::new(cmd::REGISTER, &["bob"]).into())
        .await
        .unwrap();
    assert_eq!(b.status().await.unwrap().status, status::OK);
    drop(b);
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let first = message(
        &alice.public_key(),
        &bob.public_key().to_hex(),
        "first, by key",
    );
    let second = message(&alice.public_key(), "BOB", "second, by alias");
    for m in [&first, &second] {
        a.send(m).await.unwrap();
        let s = a.status().await.unwrap();
        assert_eq!(s.status, status::STORED, "{s:?}");
    }
    drop(a);

    let server = server.restart();
    assert_eq!(server.key, key_before, "the server key persists");
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let got1 = b.recv_frame().await.unwrap();
    let got2 = b.recv_frame().await.unwrap();
    assert_eq!(got1, first.to_frame().unwrap(), "byte-for-byte, in order");
    assert_eq!(got2, second.to_frame().unwrap());
    let s = b.status().await.unwrap();
    assert_eq!(
        (s.status, s.payload.as_str()),
        (status::DELIVERED_STORED, "delivered 2 stored messages")
    );
    // Delivered messages are gone from the store; the alias survived the restart too.
    b.send(&Command::new(cmd::OFFLINES, &[]).into())
        .await
        .unwrap();
    assert_eq!(
        b.status().await.unwrap().payload,
        "delivered 0 stored messages"
    );
    b.send(&Command::new(cmd::GETUSER, &["bob"]).into())
        .await
        .unwrap();
    assert!(matches!(b.recv().await.unwrap(), Datum::User(u) if u.key == bob.public_key()));
}

#[tokio::test]
async fn a_full_queue_refuses_with_a_status_and_keeps_what_it_has() {
    // The sender's share is the whole queue, so that the queue's own limit is what refuses.
    let server = TestServer::start_with(&[
        "--max-offline-messages",
        "2",
        "--max-offline-per-sender",
        "2",
    ]);
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let to = bob.public_key().to_hex();
    for (i, want) in [status::STORED, status::STORED, status::QUEUE_FULL]
        .into_iter()
        .enumerate()
    {
        a.send(&message(&alice.public_key(), &to, &format!("m{i}")))
            .await
            .unwrap();
        let s = a.status().await.unwrap();
        assert_eq!(s.status, want, "{s:?}");
    }
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    assert_eq!(b.message().await.unwrap().msg, "m0");
    assert_eq!(b.message().await.unwrap().msg, "m1");
}
