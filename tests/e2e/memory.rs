//! The memory a client that stops reading can pin (docs/PROTOCOL.md §11): what it holds
//! unacknowledged is bounded in bytes, its outbound queue is bounded in bytes, and all queues
//! together have a budget that sheds the slowest reader while the others go on. In each case
//! the reader is disconnected with `-18`, nothing is lost (it gets everything at its next
//! login), and the bytes it held are given back.

use std::collections::HashSet;
use std::time::Duration;

use flexim_protocol::{Datum, SecretKey, status};
use flexim_tests::{Conn, TestServer, message, message_with_id, new_key};

/// 40 KB of text: large messages are how a few of them pin a lot of memory.
fn big() -> String {
    "x".repeat(40_000)
}

/// A counter or gauge of `/metrics`, 0 when absent.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let m = server.metrics().await.unwrap();
    m.get(name).copied().unwrap_or(0)
}

/// The server's resident memory in KiB, for the figures the test prints.
fn rss_kib(server: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid().unwrap()));
    status
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until `/metrics` says no bytes are queued for any session.
async fn queues_empty(server: &TestServer) {
    for _ in 0..200 {
        if metric(server, "flexim_queued_bytes").await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("queued bytes never went back to 0");
}

/// Logs in `stalled`, which never reads again, and returns its connection (kept open).
async fn stalled(server: &TestServer, key: &SecretKey) -> Conn {
    Conn::login_tcp(server.tcp, key).await.unwrap()
}

/// Logs `key` in again and reads everything stored for it; returns the ids it got.
async fn catch_up(server: &TestServer, key: &SecretKey) -> HashSet<String> {
    server.until_offline(&key.public_key()).await;
    let mut back = Conn::login_tcp(server.tcp, key).await.unwrap();
    let mut got = HashSet::new();
    loop {
        match back.recv().await.unwrap() {
            Datum::Message(m) => drop(got.insert(m.id.unwrap_or_default())),
            Datum::Status(st) if st.status == status::DELIVERED_STORED => return got,
            _ => {}
        }
    }
}

/// A pair of other users exchanging messages: they must not notice any of this.
async fn others_chat(server: &TestServer, n: usize) {
    let (alice, bob) = (new_key(), new_key());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    for i in 0..n {
        let id = format!("fine-{i}");
        let m = message_with_id(&alice.public_key(), &bob.public_key().to_hex(), "hi", &id);
        a.send(&m).await.unwrap();
        assert_eq!(a.status().await.unwrap().status, status::RELAYED);
        assert_eq!(b.message().await.unwrap().id.as_deref(), Some(id.as_str()));
    }
}

#[tokio::test]
async fn what_a_reader_holds_unacknowledged_is_bounded_in_bytes() {
    let server = TestServer::start_with(&["--max-unacked-bytes", "1000000"]);
    let (sender, reader) = (new_key(), new_key());
    server.introduce(&[&sender, &reader]).await;
    let mut s = Conn::login_tcp(server.tcp, &sender).await.unwrap();
    let held = stalled(&server, &reader).await;
    let to = reader.public_key().to_hex();
    let ids: Vec<String> = (0..60).map(|i| format!("big-{i}")).collect();
    for id in &ids {
        let m = message_with_id(&sender.public_key(), &to, &big(), id);
        s.send(&m).await.unwrap();
    }
    let (mut relayed, mut stored, mut later) = (0, 0, HashSet::new());
    while relayed + stored < ids.len() || later.is_empty() {
        let st = s.status().await.unwrap();
        match st.status {
            status::RELAYED => relayed += 1,
            status::STORED => stored += 1,
            status::STORED_LATER => later.extend(st.about().map(str::to_string)),
            other => panic!("unexpected answer {other}: {st:?}"),
        }
    }
    // A megabyte holds 24 of these frames: the 25th found the bound, the rest were stored.
    assert!(relayed <= 25, "{relayed} relayed past a 1 MB bound");
    assert_eq!(
        later.len(),
        relayed,
        "every held message is stored, and its sender told"
    );
    others_chat(&server, 3).await;
    drop(held);
    assert_eq!(
        catch_up(&server, &reader).await,
        ids.iter().cloned().collect()
    );
    assert!(metric(&server, "flexim_refusals_total{status=\"too-slow\"}").await >= 1);
}

#[tokio::test]
async fn a_reader_whose_queue_fills_in_bytes_is_let_go_and_its_memory_returns() {
    // The sender's share of the reader's queue is raised: what is stored once the reader is
    // let go is not what this test is about (tests/e2e/queues.rs is).
    let server = TestServer::start_with(&[
        "--outbound-bytes",
        "1000000",
        "--write-timeout",
        "2",
        "--max-offline-per-sender-bytes",
        "100000000",
    ]);
    let (sender, reader) = (new_key(), new_key());
    server.introduce(&[&sender, &reader]).await;
    let mut s = Conn::login_tcp(server.tcp, &sender).await.unwrap();
    let held = stalled(&server, &reader).await;
    let before = rss_kib(&server);
    let to = reader.public_key().to_hex();
    // Without ids nothing is held for acknowledgement: only the queue and the sockets' buffers
    // (several megabytes on loopback) stand between the sender and the reader.
    let n = 600;
    for _ in 0..n {
        s.send(&message(&sender.public_key(), &to, &big()))
            .await
            .unwrap();
    }
    let mut answered = 0;
    while answered < n {
        let st = s.status().await.unwrap();
        assert!(
            matches!(st.status, status::RELAYED | status::STORED),
            "{st:?}"
        );
        answered += 1;
    }
    others_chat(&server, 3).await;
    queues_empty(&server).await;
    let limit = "flexim_limit_hits_total{limit=\"outbound-queue\"}";
    assert!(metric(&server, limit).await >= 1);
    eprintln!(
        "server memory: {before} KiB before the flood, {} KiB once the reader was let go",
        rss_kib(&server)
    );
    drop(held);
}

#[tokio::test]
async fn over_the_servers_budget_the_slowest_reader_is_shed_and_others_go_on() {
    // Each queue may hold 2 MiB (the default), all of them together 1 MB: one reader that
    // stops reading passes the budget alone.
    let server = TestServer::start_with(&[
        "--queued-bytes-budget",
        "1000000",
        "--write-timeout",
        "3",
        "--max-offline-per-sender-bytes",
        "100000000",
    ]);
    let (sender, reader) = (new_key(), new_key());
    server.introduce(&[&sender, &reader]).await;
    let mut s = Conn::login_tcp(server.tcp, &sender).await.unwrap();
    let held = stalled(&server, &reader).await;
    let to = reader.public_key().to_hex();
    let n = 600;
    for _ in 0..n {
        s.send(&message(&sender.public_key(), &to, &big()))
            .await
            .unwrap();
    }
    let mut stored = 0;
    for _ in 0..n {
        let st = s.status().await.unwrap();
        if st.status == status::STORED {
            stored += 1;
        }
    }
    assert!(stored > 0, "the reader was never shed");
    // A pair that keeps up is written to all the same (its queue stays near empty, so the
    // budget never sheds it: peer.rs tests that rule on its own).
    let queued = metric(&server, "flexim_queued_bytes").await;
    others_chat(&server, 5).await;
    eprintln!("{queued} bytes queued while the others chatted; {stored} of {n} stored");
    let limit = "flexim_limit_hits_total{limit=\"queued-bytes-budget\"}";
    assert!(metric(&server, limit).await >= 1);
    queues_empty(&server).await;
    drop(held);
}
