//! Consent (docs/PROTOCOL.md §14), played from outside by the people it protects against: a
//! stranger who keeps writing, one who was blocked, many throwaway keys filling a requests box,
//! a stranger watching for presence or browsing the directory. Each test shows the attack fail
//! while a contact of the victim goes on as before.

use std::time::Duration;

use flexim_protocol::conversation::pair_id;
use flexim_protocol::datum::{Acknowledge, Request};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Command, Datum, PublicKey, SecretKey};
use flexim_tests::{Conn, RedisServer, TestServer, flexim, message_with_id, new_key};

/// The next datum that is not a presence notice, a Status or a Request as asked.
async fn answer(c: &mut Conn) -> flexim_protocol::datum::Status {
    loop {
        match c.datum().await.unwrap() {
            Datum::Status(s) if !status::is_notice(s.status) => return s,
            _ => continue,
        }
    }
}

/// Sends a sealed-looking Message with an id and returns its answer.
async fn write(c: &mut Conn, from: &SecretKey, to: &PublicKey, id: &str) -> (i8, String) {
    let m = message_with_id(&from.public_key(), &to.to_hex(), "hello", id);
    c.send(&m).await.unwrap();
    let s = answer(c).await;
    assert_eq!(
        s.id.as_deref(),
        Some(id),
        "the answer names its message: {s:?}"
    );
    (s.status, s.payload)
}

/// Sends a command and returns its first answer that is not a notice (messages on the way
/// are skipped too).
async fn command(c: &mut Conn, name: &str, args: &[&str]) -> Datum {
    c.send(&Command::new(name, args).into()).await.unwrap();
    loop {
        match c.datum().await.unwrap() {
            Datum::Status(s) if status::is_notice(s.status) => continue,
            Datum::Request(_) | Datum::Connection(_) | Datum::Message(_) => continue,
            d => return d,
        }
    }
}

/// The users a Roster answer lists (but the kit's watcher, whom introduced keys accept).
fn listed(d: Datum) -> Vec<PublicKey> {
    let watcher = flexim_tests::watcher().public_key();
    match d {
        Datum::Roster(r) => r
            .users
            .into_iter()
            .map(|u| u.key)
            .filter(|k| *k != watcher)
            .collect(),
        other => panic!("expected a Roster, got {other:?}"),
    }
}

/// The next Message with this id, skipping everything else (notices, answers, and what was
/// left unacknowledged before).
async fn until_message(c: &mut Conn, id: &str) {
    loop {
        if let Datum::Message(m) = c.datum().await.unwrap()
            && m.id.as_deref() == Some(id)
        {
            return;
        }
    }
}

/// Two contacts of each other exchange a message both ways, relayed: whatever the stranger
/// did, the victim's conversations are untouched. `v` is the victim's active session.
async fn contacts_still_talk(
    server: &TestServer,
    v: &mut Conn,
    victim: &SecretKey,
    friend: &SecretKey,
) {
    let mut f = Conn::login_tcp(server.tcp, friend).await.unwrap();
    let (code, _) = write(&mut f, friend, &victim.public_key(), "friend-1").await;
    // Stored when it comes while the victim's session still writes out what waited for it
    // (the order of its queue comes first); either way it arrives now.
    assert!(matches!(code, status::RELAYED | status::STORED), "{code}");
    until_message(v, "friend-1").await;
    let (code, _) = write(v, victim, &friend.public_key(), "friend-2").await;
    assert_eq!(code, status::RELAYED);
    until_message(&mut f, "friend-2").await;
}

#[tokio::test]
async fn a_strangers_messages_are_capped_until_accepted_and_then_flow() {
    let server = TestServer::start_with(&["--request-messages", "3"]);
    let (victim, stranger, friend) = (new_key(), new_key(), new_key());
    server.introduce(&[&victim, &friend]).await;
    let vk = victim.public_key();
    let mut v = Conn::login_tcp(server.tcp, &victim).await.unwrap();
    let mut s = Conn::login_tcp(server.tcp, &stranger).await.unwrap();
    // Three go into the victim's requests box; the victim first hears who asks.
    for i in 0..3 {
        let (code, _) = write(&mut s, &stranger, &vk, &format!("box-{i}")).await;
        assert_eq!(code, status::RELAYED);
    }
    let id = match v.recv().await.unwrap() {
        Datum::Request(r) => {
            assert_eq!(r.from, stranger.public_key().to_hex());
            assert_eq!(r.to, [vk.to_hex()]);
            r.id.expect("the server names the conversation")
        }
        other => panic!("expected the stranger's Request first, got {other:?}"),
    };
    assert_eq!(id, pair_id(&vk, &stranger.public_key()));
    for i in 0..3 {
        assert_eq!(v.message().await.unwrap().id, Some(format!("box-{i}")));
    }
    // The fourth is refused, clearly, and nothing reaches the victim.
    let (code, text) = write(&mut s, &stranger, &vk, "box-3").await;
    assert_eq!(code, status::NOT_ACCEPTED, "{text}");
    assert!(text.contains("requests box"), "{text}");
    let listed_now = listed(command(&mut v, cmd::REQUESTS, &[]).await);
    assert_eq!(listed_now, [stranger.public_key()]);
    // The victim's contacts are not held to any of it.
    contacts_still_talk(&server, &mut v, &victim, &friend).await;

    // The victim accepts by the conversation's id; the stranger hears of it.
    v.send(&Datum::Acknowledge(Acknowledge { id: id.clone() }))
        .await
        .unwrap();
    assert_eq!(answer(&mut v).await.status, status::OK);
    let told = loop {
        match s.datum().await.unwrap() {
            Datum::Connection(c) => break c,
            _ => continue,
        }
    };
    assert_eq!(told.id, id);
    assert!(told.pending.is_empty(), "both accepted: {told:?}");
    for i in 4..10 {
        let (code, _) = write(&mut s, &stranger, &vk, &format!("box-{i}")).await;
        assert_eq!(code, status::RELAYED, "accepted: no cap any more");
    }
    assert!(listed(command(&mut v, cmd::REQUESTS, &[]).await).is_empty());
}

#[tokio::test]
async fn a_blocked_sender_is_refused_online_and_offline_and_unblock_undoes_it() {
    let server = TestServer::start();
    let (victim, pest, friend) = (new_key(), new_key(), new_key());
    server.introduce(&[&victim, &friend]).await;
    let vk = victim.public_key();
    let mut p = Conn::login_tcp(server.tcp, &pest).await.unwrap();
    {
        let mut v = Conn::login_tcp(server.tcp, &victim).await.unwrap();
        let (code, _) = write(&mut p, &pest, &vk, "p-0").await;
        assert_eq!(code, status::RELAYED);
        let d = command(&mut v, cmd::BLOCK, &[&pest.public_key().to_hex()]).await;
        assert!(
            matches!(&d, Datum::Status(s) if s.status == status::OK),
            "{d:?}"
        );
        let (code, text) = write(&mut p, &pest, &vk, "p-1").await;
        assert_eq!(code, status::BLOCKED, "{text}");
        // Nothing more arrived: the next thing the victim reads is its own answer.
        v.send(&Command::new(cmd::ROSTER, &[]).into())
            .await
            .unwrap();
        let d = v.datum().await.unwrap();
        assert!(matches!(d, Datum::Roster(_)), "{d:?}");
    }
    server.until_offline(&vk).await;
    // Offline too: nothing is stored for the victim.
    let (code, _) = write(&mut p, &pest, &vk, "p-2").await;
    assert_eq!(code, status::BLOCKED);
    // A Request gets the same answer.
    p.send(&Datum::Request(Request {
        to: vec![vk.to_hex()],
        from: pest.public_key().to_hex(),
        options: vec![],
        id: None,
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(answer(&mut p).await.status, status::BLOCKED);
    let mut v = Conn::login_tcp(server.tcp, &victim).await.unwrap();
    contacts_still_talk(&server, &mut v, &victim, &friend).await;
    let d = command(&mut v, cmd::UNBLOCK, &[&pest.public_key().to_hex()]).await;
    assert!(
        matches!(&d, Datum::Status(s) if s.status == status::OK),
        "{d:?}"
    );
    let (code, _) = write(&mut p, &pest, &vk, "p-3").await;
    assert_eq!(
        code,
        status::RELAYED,
        "a stranger again, with a requests box"
    );
    // p-0 (never acknowledged) comes again; p-1 and p-2 were never kept.
    loop {
        if let Datum::Message(m) = v.datum().await.unwrap() {
            let id = m.id.unwrap_or_default();
            assert!(id == "p-0" || id == "p-3", "{id}");
            if id == "p-3" {
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_declined_request_is_refused_like_a_full_box() {
    let server = TestServer::start();
    let (victim, stranger) = (new_key(), new_key());
    server.introduce(&[&victim]).await;
    let vk = victim.public_key();
    let mut v = Conn::login_tcp(server.tcp, &victim).await.unwrap();
    let mut s = Conn::login_tcp(server.tcp, &stranger).await.unwrap();
    assert_eq!(
        write(&mut s, &stranger, &vk, "d-0").await.0,
        status::RELAYED
    );
    let d = command(&mut v, cmd::DECLINE, &[&stranger.public_key().to_hex()]).await;
    assert!(
        matches!(&d, Datum::Status(s) if s.status == status::OK),
        "{d:?}"
    );
    let (code, text) = write(&mut s, &stranger, &vk, "d-1").await;
    assert_eq!(code, status::NOT_ACCEPTED, "{text}");
    assert!(listed(command(&mut v, cmd::REQUESTS, &[]).await).is_empty());
    // The victim thinks again and accepts: the stranger is told, and writes.
    let sk = stranger.public_key().to_hex();
    v.send(&Datum::Acknowledge(Acknowledge { id: sk }))
        .await
        .unwrap();
    assert_eq!(answer(&mut v).await.status, status::OK);
    loop {
        if let Datum::Connection(c) = s.datum().await.unwrap() {
            assert!(c.pending.is_empty(), "{c:?}");
            break;
        }
    }
    assert_eq!(
        write(&mut s, &stranger, &vk, "d-2").await.0,
        status::RELAYED
    );
}

#[tokio::test]
async fn throwaway_keys_fill_only_the_requests_box_and_contacts_still_get_through() {
    let server = TestServer::start_with(&["--max-requests", "4", "--new-key-rate", "0"]);
    let (victim, friend) = (new_key(), new_key());
    server.introduce(&[&victim, &friend]).await;
    let vk = victim.public_key();
    let mut refused = 0;
    for i in 0..10 {
        let sybil = new_key();
        let mut c = Conn::login_tcp(server.tcp, &sybil).await.unwrap();
        let (code, text) = write(&mut c, &sybil, &vk, &format!("sybil-{i}")).await;
        match code {
            status::STORED => {}
            status::NOT_ACCEPTED => {
                assert!(text.contains("requests box is full"), "{text}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert_eq!(refused, 6, "four strangers fit the box");
    let mut v = Conn::login_tcp(server.tcp, &victim).await.unwrap();
    contacts_still_talk(&server, &mut v, &victim, &friend).await;
    assert_eq!(listed(command(&mut v, cmd::REQUESTS, &[]).await).len(), 4);
}

#[tokio::test]
async fn a_stranger_learns_no_presence_and_the_directory_is_not_public() {
    let server = TestServer::start();
    let (alice, bob, watcher) = (new_key(), new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let mut w = Conn::login_tcp(server.tcp, &watcher).await.unwrap();
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    // Bob, Alice's contact, is told she came online; the stranger is not.
    loop {
        match b.recv().await.unwrap() {
            Datum::Status(s) if s.status == status::PRESENCE_ONLINE => {
                assert_eq!(s.payload, alice.public_key().to_hex());
                break;
            }
            _ => continue,
        }
    }
    let hex = alice.public_key().to_hex();
    match command(&mut w, cmd::GETUSER, &[&hex]).await {
        Datum::User(u) => {
            assert_eq!(u.online, None, "presence only for contacts: {u:?}");
            assert_eq!(u.last_seen, 0, "nor when she was last seen");
        }
        other => panic!("expected a User, got {other:?}"),
    }
    // ROSTER is one's contacts: empty for the stranger, Alice for Bob.
    assert!(listed(command(&mut w, cmd::ROSTER, &[]).await).is_empty());
    assert_eq!(
        listed(command(&mut b, cmd::ROSTER, &[]).await),
        [alice.public_key()]
    );
    // SEARCH finds only who chose to be found.
    let mut a = a;
    assert!(matches!(
        command(&mut a, cmd::REGISTER, &["alice_consent"]).await,
        Datum::Status(s) if s.status == status::OK
    ));
    assert!(listed(command(&mut w, cmd::SEARCH, &["consent"]).await).is_empty());
    assert!(matches!(
        command(&mut a, cmd::DISCOVERABLE, &["on"]).await,
        Datum::Status(s) if s.status == status::OK
    ));
    assert_eq!(
        listed(command(&mut w, cmd::SEARCH, &["consent"]).await),
        [alice.public_key()]
    );
    // Her logout reaches Bob, and nothing about her ever reached the stranger.
    drop(a);
    loop {
        match b.recv().await.unwrap() {
            Datum::Status(s) if s.status == status::PRESENCE_OFFLINE => break,
            _ => continue,
        }
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), w.recv()).await;
    assert!(quiet.is_err(), "the stranger got {quiet:?}");
}

#[tokio::test]
async fn a_request_asks_the_user_at_its_next_login_and_the_acceptance_comes_back() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&bob]).await;
    let (ak, bk) = (alice.public_key(), bob.public_key());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    a.send(&Datum::Request(Request {
        to: vec![bk.to_hex()],
        from: ak.to_hex(),
        options: vec![],
        id: None,
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(answer(&mut a).await.status, status::OK);
    let Datum::Connection(c) = a.datum().await.unwrap() else {
        panic!("a Connection follows the answer")
    };
    assert_eq!(c.id, pair_id(&ak, &bk));
    assert_eq!(c.pending, [bk.to_hex()], "Bob has not accepted yet");
    // Mistakes are answered: a forged `from`, several users, an unknown id.
    let forged = Request {
        to: vec![bk.to_hex()],
        from: bk.to_hex(),
        options: vec![],
        id: None,
        ..Default::default()
    };
    a.send(&Datum::Request(forged)).await.unwrap();
    assert_eq!(answer(&mut a).await.status, status::SPOOF);
    let many = Request {
        to: vec![bk.to_hex(), new_key().public_key().to_hex()],
        from: ak.to_hex(),
        options: vec![],
        id: None,
        ..Default::default()
    };
    a.send(&Datum::Request(many)).await.unwrap();
    assert_eq!(answer(&mut a).await.status, status::UNSUPPORTED);
    a.send(&Datum::Acknowledge(Acknowledge {
        id: "nonsense".into(),
    }))
    .await
    .unwrap();
    assert_eq!(answer(&mut a).await.status, status::NO_SUCH_USER);

    // Bob was offline: the Request waits for his login, and survives a restart.
    let server = server.crash_and_restart();
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let id = loop {
        match b.datum().await.unwrap() {
            Datum::Request(r) => break r.id.unwrap(),
            _ => continue,
        }
    };
    b.send(&Datum::Acknowledge(Acknowledge { id }))
        .await
        .unwrap();
    assert_eq!(answer(&mut b).await.status, status::OK);
    let Datum::Connection(c) = b.datum().await.unwrap() else {
        panic!("a Connection follows the answer")
    };
    assert!(c.pending.is_empty(), "both accepted: {c:?}");
    // Alice was away meanwhile: the acceptance is kept for her.
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    loop {
        if let Datum::Connection(c) = a.datum().await.unwrap() {
            assert!(c.pending.is_empty());
            break;
        }
    }
    assert_eq!(listed(command(&mut b, cmd::ROSTER, &[]).await), [ak]);
}

/// `flexim SUBCOMMAND -s ADDR -k KEY ARGS...`.
fn cli(sub: &str, addr: &str, key: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![sub, "-s", addr, "-k", key];
    all.extend_from_slice(args);
    flexim(&all)
}

#[test]
fn the_cli_shows_requests_and_answers_them() {
    // Alice's box holds three: Bob's claim of her KeyPackage for their pair room counts as one
    // (PROTOCOL §16.9), and two messages.
    let server = TestServer::start_with(&["--request-messages", "3"]);
    let dir = flexim_tests::TempDir::new("consent-cli");
    let key = |name: &str| {
        let path = dir.0.join(name).to_string_lossy().into_owned();
        let (code, out, err) = flexim(&["keygen", "--out", &path]);
        assert_eq!(code, 0, "{err}");
        (path, out.trim().to_string())
    };
    let (alice, alice_hex) = key("alice.key");
    let (bob, bob_hex) = key("bob.key");
    let addr = server.tcp.to_string();
    let (code, out, err) = cli("requests", &addr, &alice, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no requests are waiting"), "{out}");
    // Bob writes to Alice twice (the claim and two fill her box), and the third is refused.
    let send = |n: usize| {
        let text = format!("hi {n}");
        cli(
            "send",
            &addr,
            &bob,
            &["--to", &alice_hex, "--wait", "0", &text],
        )
    };
    for n in 0..2 {
        let (code, _, err) = send(n);
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = send(2);
    assert_ne!(code, 0);
    assert!(err.contains("not-accepted"), "{err}");
    let (code, out, err) = cli("requests", &addr, &alice, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&bob_hex), "{out}");
    let (code, out, err) = cli("requests", &addr, &alice, &["--accept", &bob_hex]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accepted"), "{out}");
    assert!(out.contains("no requests are waiting"), "{out}");
    let (code, _, err) = send(3);
    assert_eq!(code, 0, "accepted: {err}");
    let (code, out, err) = cli("requests", &addr, &alice, &["--block", &bob_hex]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("blocked"), "{out}");
    let (code, _, err) = send(4);
    assert_ne!(code, 0);
    assert!(err.contains("blocked"), "{err}");
}

#[tokio::test]
async fn on_two_nodes_a_block_applies_at_once_on_the_other_node() {
    let redis = RedisServer::start();
    let a = TestServer::start_with(&["--store", &redis.url]);
    let b = TestServer::start_with(&["--store", &redis.url]);
    let (victim, pest) = (new_key(), new_key());
    let vk = victim.public_key();
    let mut v = Conn::login_tcp(b.tcp, &victim).await.unwrap();
    let mut p = Conn::login_tcp(a.tcp, &pest).await.unwrap();
    // The victim accepted the pest once; node A has that cached after the first message.
    v.befriend(&pest.public_key()).await.unwrap();
    for i in 0..3 {
        let (code, _) = write(&mut p, &pest, &vk, &format!("n-{i}")).await;
        // Relayed, or stored for node B to deliver.
        assert!(matches!(code, status::RELAYED | status::STORED), "{code}");
    }
    let d = command(&mut v, cmd::BLOCK, &[&pest.public_key().to_hex()]).await;
    assert!(
        matches!(&d, Datum::Status(s) if s.status == status::OK),
        "{d:?}"
    );
    // Node A hears of the block (its cached acceptance is dropped) within moments.
    let mut code = status::RELAYED;
    for i in 0..50 {
        code = write(&mut p, &pest, &vk, &format!("after-{i}")).await.0;
        if code == status::BLOCKED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, status::BLOCKED);
}

/// A stranger's claim of a KeyPackage is admitted as a Message (so nobody drains another's
/// KeyPackages), but one that gets nothing, because the user has none, counts nothing: a
/// stranger whose client tries the pair room first and then writes with the box still gets
/// the whole requests box.
#[tokio::test]
async fn a_claim_that_gets_no_key_package_counts_nothing_in_the_requests_box() {
    let server = TestServer::start_with(&["--request-messages", "2"]);
    let (victim, pest) = (new_key(), new_key());
    let vk = victim.public_key();
    let _v = Conn::login_tcp(server.tcp, &victim).await.unwrap();
    let mut p = Conn::login_tcp(server.tcp, &pest).await.unwrap();
    for _ in 0..5 {
        let d = command(&mut p, cmd::KEYPACKAGE, &[&vk.to_hex()]).await;
        assert!(
            matches!(&d, Datum::Status(s) if s.status == status::NO_KEY_PACKAGE),
            "{d:?}"
        );
    }
    for i in 0..2 {
        let (code, _) = write(&mut p, &pest, &vk, &format!("box-{i}")).await;
        assert!(matches!(code, status::RELAYED | status::STORED), "{code}");
    }
    let (code, text) = write(&mut p, &pest, &vk, "box-2").await;
    assert_eq!(code, status::NOT_ACCEPTED, "{text}");
    // With the box full, the claim still gets -29: there is nothing to drain.
    let d = command(&mut p, cmd::KEYPACKAGE, &[&vk.to_hex()]).await;
    assert!(
        matches!(&d, Datum::Status(s) if s.status == status::NO_KEY_PACKAGE),
        "{d:?}"
    );
}
