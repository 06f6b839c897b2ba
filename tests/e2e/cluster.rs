//! Several server nodes on one real Redis: users on different nodes and transports chat, an
//! alias is unique across nodes, GHOST and presence cross nodes, a killed node's users get
//! everything at another node, and the nodes ride out a Redis restart.

use std::time::{Duration, Instant};

use flexim_client::{Client, Event, Identity};
use flexim_protocol::status;
use flexim_tests::{RedisServer, TestServer, WAIT, befriend, new_key};

/// A node of the cluster on `redis`.
fn node(redis: &RedisServer) -> TestServer {
    TestServer::start_with(&["--store", &redis.url])
}

/// The next message, skipping everything else.
async fn next_text(c: &mut Client) -> String {
    loop {
        let ev = tokio::time::timeout(WAIT, c.next_event())
            .await
            .expect("a message arrives")
            .unwrap();
        match ev {
            Event::Message(m) => {
                if let Some(id) = m.id.clone() {
                    c.ack(&[id]).await.unwrap();
                }
                return m.text;
            }
            Event::Closed => panic!("closed"),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn users_on_two_nodes_chat_both_ways_over_tcp_and_websocket() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    assert!(
        a.banner.iter().any(|l| l.starts_with("store: redis://")),
        "{:?}",
        a.banner
    );
    let (alice_id, bob_id) = (
        Identity::from_secret(new_key()),
        Identity::from_secret(new_key()),
    );
    let mut alice = Client::connect(&a.tcp.to_string(), &alice_id, Some("alice"))
        .await
        .unwrap();
    let mut bob = Client::connect(&b.ws, &bob_id, Some("bob")).await.unwrap();
    befriend(&mut alice, &mut bob).await;

    // Aliases are one namespace across nodes.
    let carol_id = Identity::from_secret(new_key());
    let mut carol = Client::connect(&b.tcp.to_string(), &carol_id, None)
        .await
        .unwrap();
    let taken = carol.register("ALICE").await.unwrap_err().to_string();
    assert!(
        taken.contains("alias-taken") || taken.contains("-9"),
        "{taken}"
    );

    // Presence crosses nodes: node A knows Bob (on B) is online.
    let roster = alice.roster().await.unwrap();
    let b_entry = roster
        .iter()
        .find(|u| u.key == bob_id.public_key())
        .unwrap();
    assert_eq!(b_entry.online, Some(true));

    let s = alice
        .send_text("bob", "hello from TCP on node A", &[])
        .await
        .unwrap();
    assert_eq!(
        s.status,
        status::STORED,
        "another node's user: through the shared queue"
    );
    assert_eq!(next_text(&mut bob).await, "hello from TCP on node A");
    bob.send_text("alice", "hello from WebSocket on node B", &[])
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut alice).await,
        "hello from WebSocket on node B"
    );

    // Bob's acknowledgement comes back to Alice across nodes as a receipt.
    let deadline = Instant::now() + WAIT;
    while !alice.outbox().is_empty() {
        assert!(Instant::now() < deadline, "no receipt reached node A");
        let _ = tokio::time::timeout(Duration::from_millis(200), alice.next_event()).await;
    }

    // GHOST across nodes: a second session of Alice's on node B takes over; the one on
    // node A is closed and messages come to node B.
    let mut alice2 = Client::connect(&b.tcp.to_string(), &alice_id, None)
        .await
        .unwrap();
    let ghosted = alice2.ghost().await.unwrap();
    assert_eq!(ghosted.status, status::GHOSTED);
    let closed = loop {
        match tokio::time::timeout(WAIT, alice.next_event()).await {
            Ok(Ok(Event::Closing { status: code, .. })) if code == status::TAKEN_OVER => {
                break true;
            }
            Ok(Ok(Event::Closed)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => continue,
            Err(_) => break false,
        }
    };
    assert!(closed, "the session on node A was closed");
    bob.send_text("alice", "to your new session", &[])
        .await
        .unwrap();
    assert_eq!(next_text(&mut alice2).await, "to your new session");
}

#[tokio::test]
async fn a_killed_nodes_users_get_everything_queued_at_another_node() {
    let redis = RedisServer::start();
    let (mut a, b) = (node(&redis), node(&redis));
    let (alice_id, bob_id) = (
        Identity::from_secret(new_key()),
        Identity::from_secret(new_key()),
    );
    let mut bob = Client::connect(&a.tcp.to_string(), &bob_id, None)
        .await
        .unwrap();
    let mut alice = Client::connect(&b.ws, &alice_id, None).await.unwrap();
    befriend(&mut alice, &mut bob).await;
    let to = bob_id.public_key().to_hex();
    alice.send_text(&to, "before the crash", &[]).await.unwrap();
    assert_eq!(next_text(&mut bob).await, "before the crash");

    // Node A dies with Bob on it; Alice keeps writing.
    a.kill();
    for i in 0..5 {
        let s = alice
            .send_text(&to, &format!("queued {i}"), &[])
            .await
            .unwrap();
        assert_eq!(s.status, status::STORED);
    }
    // Bob's client reconnects to node B. Until node A's heartbeat expires (3 s) his new
    // session waits; then it takes over and gets everything, in order.
    // His client carries what it has seen over to the new connection: node A may have died
    // before it removed the acknowledged message, which then comes again.
    let seen = bob.take_seen();
    drop(bob);
    let mut bob = Client::connect(&b.tcp.to_string(), &bob_id, None)
        .await
        .unwrap();
    bob.restore_seen(seen);
    for i in 0..5 {
        assert_eq!(next_text(&mut bob).await, format!("queued {i}"));
    }
}

#[tokio::test]
async fn the_nodes_recover_by_themselves_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let (alice_id, bob_id) = (
        Identity::from_secret(new_key()),
        Identity::from_secret(new_key()),
    );
    let mut alice = Client::connect(&a.tcp.to_string(), &alice_id, None)
        .await
        .unwrap();
    let mut bob = Client::connect(&b.ws, &bob_id, None).await.unwrap();
    let to = bob_id.public_key().to_hex();
    alice.send_text(&to, "before", &[]).await.unwrap();
    assert_eq!(next_text(&mut bob).await, "before");

    redis.restart();

    // The connections stayed up; as soon as the nodes are back on Redis, messages flow
    // again, and nothing stored before the restart was lost (Redis keeps its append-only
    // file).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match alice.send_text(&to, "after", &[]).await {
            Ok(s) if s.status == status::STORED => break,
            Ok(s) => panic!("unexpected answer {s:?}"),
            Err(e) => {
                assert!(Instant::now() < deadline, "node A did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(next_text(&mut bob).await, "after");
    // New logins work on both nodes.
    let carol_id = Identity::from_secret(new_key());
    let mut carol = Client::connect(&b.tcp.to_string(), &carol_id, None)
        .await
        .unwrap();
    carol
        .send_text(&alice_id.public_key().to_hex(), "hi alice", &[])
        .await
        .unwrap();
    assert_eq!(next_text(&mut alice).await, "hi alice");
}

#[tokio::test]
async fn a_node_warns_when_redis_would_not_keep_stored_messages() {
    let redis = RedisServer::start();
    redis
        .command(&["CONFIG", "SET", "appendfsync", "everysec"])
        .unwrap();
    let node = node(&redis);
    let logs = node.logs();
    assert!(
        logs.contains("warning:") && logs.contains("appendfsync"),
        "{logs}"
    );
    // With the durable settings there is nothing to warn about.
    redis
        .command(&["CONFIG", "SET", "appendfsync", "always"])
        .unwrap();
    let quiet = TestServer::start_with(&["--store", &redis.url]);
    assert!(!quiet.logs().contains("warning:"), "{}", quiet.logs());
}

#[tokio::test]
async fn presence_notices_cross_nodes() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let alice_id = Identity::from_secret(new_key());
    let mut alice = Client::connect(&a.tcp.to_string(), &alice_id, None)
        .await
        .unwrap();
    let bob_id = Identity::from_secret(new_key());
    let mut bob = Client::connect(&b.ws, &bob_id, None).await.unwrap();
    // Presence goes to contacts only: Bob accepts Alice; his logout and his next login on
    // node B reach her on node A.
    bob.accept_request(&alice_id.public_key().to_hex())
        .await
        .unwrap();
    drop(bob);
    let presence = |want: bool| {
        let key = bob_id.public_key();
        move |ev: &Event| matches!(ev, Event::Presence { key: k, online } if *k == key && *online == want)
    };
    let wait_for = async |c: &mut Client, pred: &dyn Fn(&Event) -> bool| loop {
        let ev = tokio::time::timeout(WAIT, c.next_event())
            .await
            .expect("a presence notice arrives")
            .unwrap();
        if pred(&ev) {
            return;
        }
    };
    wait_for(&mut alice, &presence(false)).await;
    let bob = Client::connect(&b.ws, &bob_id, None).await.unwrap();
    wait_for(&mut alice, &presence(true)).await;
    drop(bob);
    wait_for(&mut alice, &presence(false)).await;
}
