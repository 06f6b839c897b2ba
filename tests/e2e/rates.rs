//! The per-address and per-key limits (docs/PROTOCOL.md §11), each driven from outside by an
//! abuser on its own loopback address (127.0.0.2 and up) while another user, on 127.0.0.1,
//! logs in, sends and receives as if nothing happened.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use flexim_protocol::datum::Command;
use flexim_protocol::{Datum, HEADER, SecretKey, status};
use flexim_tests::{Conn, TestServer, message_with_id, new_key};

/// An address of the loopback network other than 127.0.0.1.
fn addr(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A TCP connection from `source` that has sent the header; returns the server's first datum.
async fn knock(server: &TestServer, source: IpAddr) -> (Conn, Datum) {
    let mut c = Conn::open_tcp(server.tcp, Some(source), 4096)
        .await
        .unwrap();
    c.send_bytes(&HEADER).await.unwrap();
    let first = c.recv().await.unwrap();
    (c, first)
}

/// Logs in as `key` over TCP from `source`.
async fn login_from(server: &TestServer, source: IpAddr, key: &SecretKey) -> anyhow::Result<Conn> {
    let mut c = Conn::open_tcp(server.tcp, Some(source), 4096).await?;
    c.login(key).await?;
    Ok(c)
}

/// Alice on 127.0.0.1 writes to Bob, who reads it: the bystanders' round trip.
async fn bystanders_chat(server: &TestServer, alice: &SecretKey, bob: &SecretKey, n: usize) {
    let mut a = Conn::login_tcp(server.tcp, alice).await.unwrap();
    let mut b = Conn::login_tcp(server.tcp, bob).await.unwrap();
    let to = bob.public_key().to_hex();
    for i in 0..n {
        let id = format!("ok-{i}");
        a.send(&message_with_id(&alice.public_key(), &to, "hello", &id))
            .await
            .unwrap();
        assert_eq!(a.status().await.unwrap().status, status::RELAYED);
        assert_eq!(b.message().await.unwrap().id.as_deref(), Some(id.as_str()));
    }
}

/// One counter of `/metrics`, 0 when absent.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let m = server.metrics().await.unwrap();
    m.get(name).copied().unwrap_or(0)
}

#[tokio::test]
async fn an_address_over_its_connection_limit_is_refused_and_other_addresses_are_not() {
    let server = TestServer::start_with(&["--max-connections-per-address", "3"]);
    let (alice, bob) = (new_key(), new_key());
    let mut held = Vec::new();
    for _ in 0..3 {
        let (c, first) = knock(&server, addr(2)).await;
        assert!(matches!(first, Datum::User(_)), "{first:?}");
        held.push(c);
    }
    let (_, first) = knock(&server, addr(2)).await;
    let Datum::Status(s) = first else {
        panic!("expected the refusal, got {first:?}")
    };
    assert_eq!(s.status, status::ADDRESS_FULL, "{s:?}");
    assert!(s.payload.contains("3 connections open"), "{s:?}");
    // The same address over WebSocket is counted alike.
    let mut ws = Conn::open_ws(&server.ws, Some(addr(2)), true)
        .await
        .unwrap();
    ws.send_bytes(&HEADER).await.unwrap();
    assert!(
        matches!(ws.recv().await.unwrap(), Datum::Status(s) if s.status == status::ADDRESS_FULL)
    );
    // Everybody else is unaffected, and a place freed is a place again.
    bystanders_chat(&server, &alice, &bob, 3).await;
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        let (c, first) = knock(&server, addr(2)).await;
        if matches!(first, Datum::User(_)) {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the freed place was never given again");
    let limit = "flexim_limit_hits_total{limit=\"max-connections-per-address\"}";
    assert!(metric(&server, limit).await >= 2);
    assert!(metric(&server, "flexim_refusals_total{status=\"address-full\"}").await >= 2);
}

#[tokio::test]
async fn an_address_that_opens_connections_too_fast_is_refused_until_its_rate_allows() {
    let server = TestServer::start_with(&["--connection-rate", "2/5"]);
    let (alice, bob) = (new_key(), new_key());
    for _ in 0..5 {
        let (_, first) = knock(&server, addr(3)).await;
        assert!(matches!(first, Datum::User(_)), "{first:?}");
    }
    let (_, first) = knock(&server, addr(3)).await;
    let Datum::Status(s) = first else {
        panic!("expected the refusal, got {first:?}")
    };
    assert_eq!(s.status, status::ADDRESS_FULL, "{s:?}");
    assert!(s.payload.contains("faster than"), "{s:?}");
    bystanders_chat(&server, &alice, &bob, 3).await;
    // Two a second: after a second's wait the address may connect again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, first) = knock(&server, addr(3)).await;
    assert!(matches!(first, Datum::User(_)), "{first:?}");
    let limit = "flexim_limit_hits_total{limit=\"connection-rate\"}";
    assert!(metric(&server, limit).await >= 1);
}

#[tokio::test]
async fn an_address_that_mints_keys_is_refused_new_ones_but_keeps_its_old_ones() {
    let server = TestServer::start_with(&["--new-key-rate", "0.01/3"]);
    let (alice, bob) = (new_key(), new_key());
    let minted: Vec<SecretKey> = (0..3).map(|_| new_key()).collect();
    for k in &minted {
        drop(login_from(&server, addr(4), k).await.unwrap());
    }
    let refused = login_from(&server, addr(4), &new_key()).await.err();
    let why = format!("{:#}", refused.expect("a fourth new key is refused"));
    assert!(
        why.contains("rate-limited") && why.contains("new keys"),
        "{why}"
    );
    // A key this address used before still logs in from it, and new keys from other
    // addresses are welcome.
    let mut back = login_from(&server, addr(4), &minted[0]).await.unwrap();
    back.send(&message_with_id(
        &minted[0].public_key(),
        &minted[1].public_key().to_hex(),
        "still me",
        "old-1",
    ))
    .await
    .unwrap();
    assert_eq!(back.status().await.unwrap().status, status::STORED);
    bystanders_chat(&server, &alice, &bob, 3).await;
    let limit = "flexim_limit_hits_total{limit=\"new-key-rate\"}";
    assert_eq!(metric(&server, limit).await, 1);
}

#[tokio::test]
async fn a_flooding_sender_is_slowed_to_its_rate_loses_nothing_and_others_go_first() {
    let server = TestServer::start_with(&["--message-rate", "20/10"]);
    let (mallory, alice, bob) = (new_key(), new_key(), new_key());
    server.introduce(&[&mallory, &alice, &bob]).await;
    let mut m = Conn::login_tcp(server.tcp, &mallory).await.unwrap();
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let to = bob.public_key().to_hex();
    let started = Instant::now();
    // Mallory writes 70 messages at once; his rate lets 10 through at once and 20 a second.
    for i in 0..70 {
        let id = format!("flood-{i}");
        m.send(&message_with_id(&mallory.public_key(), &to, "x", &id))
            .await
            .unwrap();
    }
    // Meanwhile Alice's message goes through at once.
    a.send(&message_with_id(&alice.public_key(), &to, "hi", "alice-1"))
        .await
        .unwrap();
    assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    let mut answered = 0;
    while answered < 70 {
        let s = m.status().await.unwrap();
        assert_eq!(s.status, status::RELAYED, "{s:?}");
        answered += 1;
    }
    // 60 messages past the burst at 20 a second: at least three seconds, whatever the machine.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "the flood took {took:?}"
    );
    // Nothing was lost: Bob has every one of them, and Alice's came before the last of them.
    let mut ids = Vec::new();
    while ids.len() < 71 {
        ids.push(b.message().await.unwrap().id.unwrap());
    }
    let alice_at = ids.iter().position(|i| i == "alice-1").unwrap();
    assert!(alice_at < 70, "Alice waited for the whole flood");
    assert_eq!(ids.iter().filter(|i| i.starts_with("flood-")).count(), 70);
    let limit = "flexim_limit_hits_total{limit=\"message-rate\"}";
    assert!(metric(&server, limit).await >= 1);
}

/// A command datum.
fn command(name: &str, args: &[&str]) -> Datum {
    Datum::Command(Command {
        cmd: name.to_string(),
        payload: args.iter().map(|a| a.to_string()).collect(),
    })
}

#[tokio::test]
async fn rosters_and_commands_over_their_rates_are_refused_for_that_key_only() {
    let server = TestServer::start_with(&["--lookup-rate", "0.01/3", "--command-rate", "0.01/8"]);
    let (mallory, alice, bob) = (new_key(), new_key(), new_key());
    let mut m = Conn::login_tcp(server.tcp, &mallory).await.unwrap();
    for _ in 0..3 {
        m.send(&command("ROSTER", &[])).await.unwrap();
        assert!(matches!(m.recv().await.unwrap(), Datum::Roster(_)));
    }
    m.send(&command("ROSTER", &[])).await.unwrap();
    let s = m.status().await.unwrap();
    assert_eq!(s.status, status::RATE_LIMITED, "{s:?}");
    assert!(s.payload.contains("ROSTER and SEARCH"), "{s:?}");
    m.send(&command("SEARCH", &["a"])).await.unwrap();
    assert_eq!(m.status().await.unwrap().status, status::RATE_LIMITED);
    // Other commands have their own, wider rate; ACK is never counted.
    let me = mallory.public_key().to_hex();
    let mut answers = Vec::new();
    for _ in 0..5 {
        m.send(&command("GETUSER", &[&me])).await.unwrap();
        answers.push(m.recv().await.unwrap());
    }
    assert!(
        answers.iter().take(3).all(|d| matches!(d, Datum::User(_))),
        "{answers:?}"
    );
    assert!(
        matches!(&answers[3], Datum::Status(s) if s.status == status::RATE_LIMITED && s.payload.contains("commands")),
        "{answers:?}"
    );
    for _ in 0..20 {
        m.send(&command("ACK", &["nothing-1"])).await.unwrap();
        assert_eq!(m.status().await.unwrap().status, status::OK);
    }
    // Another user's ROSTER is answered, and messages are not commands.
    let mut carol = Conn::login_tcp(server.tcp, &new_key()).await.unwrap();
    carol.send(&command("ROSTER", &[])).await.unwrap();
    assert!(matches!(carol.recv().await.unwrap(), Datum::Roster(_)));
    bystanders_chat(&server, &alice, &bob, 3).await;
    let limit = "flexim_limit_hits_total{limit=\"lookup-rate\"}";
    assert_eq!(metric(&server, limit).await, 2);
    let limit = "flexim_limit_hits_total{limit=\"command-rate\"}";
    assert_eq!(metric(&server, limit).await, 2);
}
