//! Routing by key and alias, the `from` rule, commands, presence and GHOST.

use flexim_protocol::Datum;
use flexim_protocol::datum::Command;
use flexim_protocol::status::{self, cmd};
use flexim_tests::{Conn, TestServer, message, new_key};

#[tokio::test]
async fn a_spoofed_from_is_refused_and_not_forwarded() {
    let server = TestServer::start();
    let (alice, bob, carol) = (new_key(), new_key(), new_key());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    // Alice claims to be Carol.
    a.send(&message(
        &carol.public_key(),
        &bob.public_key().to_hex(),
        "spoofed",
    ))
    .await
    .unwrap();
    let s = a.status().await.unwrap();
    assert_eq!(s.status, status::SPOOF, "{s:?}");
    // ...or uses an alias that is not hers.
    let mut forged = message(
        &alice.public_key(),
        &bob.public_key().to_hex(),
        "spoofed too",
    );
    if let Datum::Message(m) = &mut forged {
        m.from = "carol".into();
    }
    a.send(&forged).await.unwrap();
    assert_eq!(a.status().await.unwrap().status, status::SPOOF);
    // Bob's next message is the honest one: the spoofs were never forwarded.
    a.send(&message(
        &alice.public_key(),
        &bob.public_key().to_hex(),
        "honest",
    ))
    .await
    .unwrap();
    assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    assert_eq!(b.message().await.unwrap().msg, "honest");
}

#[tokio::test]
async fn a_forwarded_message_is_the_senders_bytes() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    // A message with an extension key the server does not know, to an upper-case key.
    #[derive(serde::Serialize)]
    struct Extended {
        to: String,
        from: String,
        flags: Vec<String>,
        date: i64,
        msg: String,
        id: String,
    }
    let body = rmp_serde::to_vec_named(&Extended {
        to: bob.public_key().to_hex().to_uppercase(),
        from: alice.public_key().to_hex().to_uppercase(),
        flags: vec!["NOTIFY".into()],
        date: 1_539_890_190,
        msg: "HEY, LISTEN!".into(),
        id: "m-1".into(),
    })
    .unwrap();
    a.send_frame(3, &body).await.unwrap();
    assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    let got = loop {
        let f = b.recv_frame().await.unwrap();
        if f[0] == 3 {
            break f;
        }
    };
    assert_eq!(got[3..], body[..]);
}

#[tokio::test]
async fn aliases_route_are_unique_and_first_come() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    a.send(&Command::new(cmd::REGISTER, &["Alice"]).into())
        .await
        .unwrap();
    let s = a.status().await.unwrap();
    assert_eq!(s.status, status::OK, "{s:?}");
    b.send(&Command::new(cmd::REGISTER, &["ALICE"]).into())
        .await
        .unwrap();
    let s = b.status().await.unwrap();
    assert_eq!(s.status, status::ALIAS_TAKEN, "{s:?}");
    b.send(&Command::new(cmd::REGISTER, &["9lives"]).into())
        .await
        .unwrap();
    assert_eq!(b.status().await.unwrap().status, status::BAD_ARGUMENT);
    // Bob writes to "alice"; Alice writes from her alias.
    b.send(&message(&bob.public_key(), "alice", "to your alias"))
        .await
        .unwrap();
    assert_eq!(b.status().await.unwrap().status, status::RELAYED);
    assert_eq!(a.message().await.unwrap().msg, "to your alias");
    let mut from_alias = message(
        &alice.public_key(),
        &bob.public_key().to_hex(),
        "from my alias",
    );
    if let Datum::Message(m) = &mut from_alias {
        m.from = "alice".into();
    }
    a.send(&from_alias).await.unwrap();
    assert_eq!(a.status().await.unwrap().status, status::RELAYED);
    assert_eq!(b.message().await.unwrap().from, "alice");
    // An alias nobody has.
    b.send(&message(&bob.public_key(), "nobody", "hello?"))
        .await
        .unwrap();
    assert_eq!(b.status().await.unwrap().status, status::NO_SUCH_USER);
}

#[tokio::test]
async fn commands_answer_roster_getuser_search_and_unknown() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    a.send(&Command::new(cmd::REGISTER, &["alice"]).into())
        .await
        .unwrap();
    a.status().await.unwrap();
    // SEARCH finds only users who chose to be found.
    a.send(&Command::new(cmd::DISCOVERABLE, &["on"]).into())
        .await
        .unwrap();
    assert_eq!(a.status().await.unwrap().status, status::OK);
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    b.send(&Command::new(cmd::ROSTER, &[]).into())
        .await
        .unwrap();
    let Datum::Roster(r) = b.recv().await.unwrap() else {
        panic!("expected a Roster")
    };
    let entry = r
        .users
        .iter()
        .find(|u| u.key == alice.public_key())
        .unwrap();
    assert_eq!(entry.online, Some(true));
    assert_eq!(entry.aliases, ["alice"]);
    b.send(&Command::new(cmd::GETUSER, &["ALICE"]).into())
        .await
        .unwrap();
    let Datum::User(u) = b.recv().await.unwrap() else {
        panic!("expected a User")
    };
    assert_eq!(u.key, alice.public_key());
    b.send(&Command::new(cmd::SEARCH, &["lic"]).into())
        .await
        .unwrap();
    let Datum::Roster(r) = b.recv().await.unwrap() else {
        panic!("expected a Roster")
    };
    assert_eq!(r.users.len(), 1);
    b.send(&Command::new(cmd::GETUSER, &["zed"]).into())
        .await
        .unwrap();
    assert_eq!(b.status().await.unwrap().status, status::NO_SUCH_USER);
    b.send(&Command::new("DANCE", &[]).into()).await.unwrap();
    let s = b.status().await.unwrap();
    assert_eq!(s.status, status::UNKNOWN_COMMAND, "{s:?}");
    b.send(&Command::new(cmd::OFFLINES, &[]).into())
        .await
        .unwrap();
    let s = b.status().await.unwrap();
    assert_eq!(
        (s.status, s.payload.as_str()),
        (status::OK, "delivered 0 stored messages")
    );
}

#[tokio::test]
async fn presence_reaches_others_and_last_seen_is_kept() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let bob_hex = bob.public_key().to_hex();
    let presence = |d: Datum| match d {
        Datum::Status(s) => (s.status, s.payload),
        other => panic!("expected presence, got {other:?}"),
    };
    assert_eq!(
        presence(a.recv().await.unwrap()),
        (status::PRESENCE_ONLINE, bob_hex.clone())
    );
    drop(b);
    assert_eq!(
        presence(a.recv().await.unwrap()),
        (status::PRESENCE_OFFLINE, bob_hex.clone())
    );
    a.send(&Command::new(cmd::GETUSER, &[&bob_hex]).into())
        .await
        .unwrap();
    let Datum::User(u) = a.recv().await.unwrap() else {
        panic!("expected a User")
    };
    assert_eq!(u.online, Some(false));
    assert!(u.last_seen > 1_700_000_000, "{u:?}");
}

#[tokio::test]
async fn ghost_moves_delivery_to_the_newer_session() {
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    let mut old = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_tcp(server.tcp, &bob).await.unwrap();
    let mut new = Conn::login_ws(&server.ws, &alice).await.unwrap();
    assert_eq!(new.status().await.unwrap().status, status::SESSION_EXISTS);
    b.send(&message(
        &bob.public_key(),
        &alice.public_key().to_hex(),
        "to the old one",
    ))
    .await
    .unwrap();
    assert_eq!(b.status().await.unwrap().status, status::RELAYED);
    assert_eq!(old.message().await.unwrap().msg, "to the old one");
    new.send(&Datum::Command(Command::new(cmd::GHOST, &[])))
        .await
        .unwrap();
    assert_eq!(new.status().await.unwrap().status, status::GHOSTED);
    assert_eq!(old.status().await.unwrap().status, status::TAKEN_OVER);
    assert!(old.closed().await);
    b.send(&message(
        &bob.public_key(),
        &alice.public_key().to_hex(),
        "to the new one",
    ))
    .await
    .unwrap();
    assert_eq!(b.status().await.unwrap().status, status::RELAYED);
    loop {
        match new.next().await.unwrap() {
            flexim_tests::Got::Datum(Datum::Message(m)) => {
                assert_eq!(m.msg, "to the new one");
                break;
            }
            flexim_tests::Got::Datum(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

/// Unix seconds now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn last_seen_of_an_online_user_is_its_latest_login_and_of_an_offline_one_its_logout() {
    let server = TestServer::start();
    let (alice, observer) = (new_key(), new_key());
    server.introduce(&[&alice, &observer]).await;
    let mut o = Conn::login_tcp(server.tcp, &observer).await.unwrap();
    let alice_hex = alice.public_key().to_hex();
    let before = now();
    let a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let after = now();
    let online = get_user(&mut o, &alice_hex).await;
    assert_eq!(online.online, Some(true));
    assert!(
        (before..=after).contains(&online.last_seen),
        "online: the time its session began, {before}..={after}: {online:?}"
    );
    // Two seconds later she leaves: once the -10 notice is out, last_seen is her logout.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let left = now();
    drop(a);
    loop {
        match o.recv().await.unwrap() {
            Datum::Status(s) if s.status == status::PRESENCE_OFFLINE && s.payload == alice_hex => {
                break;
            }
            _ => continue,
        }
    }
    let offline = get_user(&mut o, &alice_hex).await;
    assert_eq!(offline.online, Some(false));
    assert!(
        offline.last_seen >= left,
        "offline: its logout: {offline:?}"
    );
}

/// GETUSER, skipping presence notices.
async fn get_user(o: &mut Conn, who: &str) -> flexim_protocol::datum::User {
    o.send(&Command::new(cmd::GETUSER, &[who]).into())
        .await
        .unwrap();
    loop {
        match o.recv().await.unwrap() {
            Datum::User(u) => return u,
            Datum::Status(s) if s.status.abs() == 10 => continue,
            other => panic!("expected a User, got {other:?}"),
        }
    }
}
