//! Trust on first use with real processes: the `flexim` CLI pins each server's key in
//! `known_servers` and each contact's key in `contacts` (next to the key file), refuses a
//! server whose key changed before it says who it is, and refuses a contact whose alias moved
//! to another key until the user accepts the new key.

use std::path::Path;

use flexim_client::{Client, ClientError, Identity};
use flexim_protocol::e2e::{self, ConversationKey, Envelope};
use flexim_protocol::status::{self, cmd};
use flexim_protocol::{Command, Datum, Message, PublicKey};
use flexim_tests::{Cli, Conn, TempDir, TestServer, flexim, new_key, random};

/// A new key file `NAME.key` in `dir`: its path and public key.
fn keygen(dir: &TempDir, name: &str) -> (String, PublicKey) {
    let path = dir.0.join(format!("{name}.key"));
    let path = path.to_str().unwrap().to_string();
    let (code, out, err) = flexim(&["keygen", "--out", &path]);
    assert_eq!(code, 0, "{err}");
    (path, PublicKey::from_hex(out.trim()).expect("a key"))
}

/// The server's key, as its banner printed it.
fn server_key(server: &TestServer) -> PublicKey {
    PublicKey::from_hex(&server.key).expect("the banner's key")
}

/// A file's permission bits.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `flexim send` from `key` to `to`, with extra flags before the text.
fn send(server: &TestServer, key: &str, to: &str, text: &str, extra: &[&str]) -> (i32, String) {
    let tcp = server.tcp.to_string();
    let mut args = vec![
        "send", "--server", &tcp, "--key", key, "--to", to, "--wait", "0",
    ];
    args.extend_from_slice(extra);
    args.push(text);
    let (code, _, err) = flexim(&args);
    (code, err)
}

/// Whether the server knows `key` (it authenticated once): asked by an observer of its own.
async fn server_knows(server: &TestServer, key: &PublicKey) -> bool {
    let mut observer = Conn::login_tcp(server.tcp, &new_key()).await.unwrap();
    let who = key.to_hex();
    observer
        .send(&Command::new(cmd::GETUSER, &[who.as_str()]).into())
        .await
        .unwrap();
    match observer.datum().await.unwrap() {
        Datum::User(u) => u.key == *key,
        Datum::Status(s) if s.status == status::NO_SUCH_USER => false,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn the_cli_pins_the_server_key_and_refuses_a_changed_one_before_logging_in() {
    let server = TestServer::start();
    let dir = TempDir::new("pins-server");
    let (alice, alice_key) = keygen(&dir, "alice");
    let (bob_file, bob) = keygen(&dir, "bob");
    server
        .introduce(&[Identity::load(&bob_file).unwrap().secret()])
        .await;
    let bob = bob.to_hex();
    let (old, addr) = (server_key(&server), server.tcp.to_string());
    let known = dir.0.join("known_servers");

    // The first connection pins the key, says so, and writes a private file.
    let (code, err) = send(&server, &alice, &bob, "first", &[]);
    assert_eq!(code, 0, "{err}");
    let said = format!(
        "pinned server key {} for {addr} in {}",
        old.fingerprint(),
        known.display()
    );
    assert!(err.contains(&said), "{err}");
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(
        text.contains(&format!("\n{addr} {}\n", old.to_hex())),
        "{text}"
    );
    assert_eq!(mode(&known), 0o600);
    // The same key again: silent.
    let (code, err) = send(&server, &alice, &bob, "second", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("pinned"), "{err}");

    // Another server at the address (a fresh data directory: a new key). Nothing about alice
    // may reach it: not `send`, not `listen`.
    let server = server.reinstall_on_same_ports(false);
    let new = server_key(&server);
    assert_ne!(new, old);
    let (code, err) = send(&server, &alice, &bob, "third", &[]);
    assert_ne!(code, 0);
    for needle in [
        format!("the server at {addr} presents key {}", new.fingerprint()),
        format!(
            "you pinned {} for it on first use in {}",
            old.fingerprint(),
            known.display()
        ),
        "remove line".to_string(),
        format!("--server-key {}", new.to_hex()),
        "someone may be in the middle".to_string(),
        "nothing about you was sent".to_string(),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in {err}");
    }
    let (code, _, err) = flexim(&[
        "listen",
        "--server",
        &addr,
        "--key",
        &alice,
        "--timeout",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("presents key"), "{err}");
    let counters = server.metrics().await.unwrap();
    assert!(counters["flexim_connections_total"] >= 2, "{counters:?}");
    assert_eq!(counters["flexim_logins_total"], 0, "{counters:?}");
    assert_eq!(counters["flexim_auth_failures_total"], 0, "{counters:?}");
    assert!(
        !server_knows(&server, &alice_key).await,
        "no AUTH from alice"
    );
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        text,
        "the pin stays"
    );

    // A wrong --server-key is refused too; the right one overrides the file and is pinned.
    let wrong = new_key().public_key().to_hex();
    let (code, err) = send(&server, &alice, &bob, "fourth", &["--server-key", &wrong]);
    assert_ne!(code, 0);
    assert!(err.contains("not the key given with --server-key"), "{err}");
    // The reinstalled server knows nobody yet: bob logs in once, so that he can be written to.
    server
        .introduce(&[Identity::load(&bob_file).unwrap().secret()])
        .await;
    let (code, err) = send(
        &server,
        &alice,
        &bob,
        "fifth",
        &["--server-key", &new.to_hex()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("pinned server key {}", new.fingerprint())),
        "{err}"
    );
    assert!(
        err.contains(&format!("replacing {}", old.fingerprint())),
        "{err}"
    );
    assert!(server_knows(&server, &alice_key).await);
    let (code, err) = send(&server, &alice, &bob, "sixth", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("pinned"), "{err}");
    assert_eq!(mode(&known), 0o600);
}

/// A server where `bob` was bob's alias, then re-installed with the same server key and a
/// fresh store, where another key (kept in a directory of its own) took the alias; alice has
/// sent to bob before, so bob's first key is pinned in her contacts file.
struct Moved {
    /// The server.
    server: TestServer,
    /// Alice's directory (her key, known_servers, contacts).
    dir: TempDir,
    /// The other key's directory.
    _other_dir: TempDir,
    /// Alice's key file.
    alice: String,
    /// Bob's first key.
    old: PublicKey,
    /// The key that has the alias now, and its key file.
    new: (String, PublicKey),
}

fn moved_alias() -> Moved {
    let server = TestServer::start();
    let dir = TempDir::new("pins-contact");
    let other_dir = TempDir::new("pins-other");
    let (alice, _) = keygen(&dir, "alice");
    let (bob, old) = keygen(&dir, "bob");
    let tcp = server.tcp.to_string();
    let claim = |key: &str| {
        let args = [
            "listen",
            "--server",
            &tcp,
            "--key",
            key,
            "--alias",
            "bob",
            "--timeout",
            "0.2",
        ];
        let (code, _, err) = flexim(&args);
        assert_eq!(code, 0, "{err}");
    };
    claim(&bob);
    let (code, err) = send(&server, &alice, "bob", "to the first bob", &[]);
    assert_eq!(code, 0, "{err}");
    let contacts = dir.0.join("contacts");
    let text = std::fs::read_to_string(&contacts).unwrap();
    let line = format!("\n{} bob {}\n", server_key(&server).to_hex(), old.to_hex());
    assert!(text.contains(&line), "{text}");
    assert_eq!(mode(&contacts), 0o600);

    let server = server.reinstall_on_same_ports(true);
    let (other, new) = keygen(&other_dir, "other");
    claim(&other);
    Moved {
        server,
        dir,
        _other_dir: other_dir,
        alice,
        old,
        new: (other, new),
    }
}

#[tokio::test]
async fn a_contact_whose_alias_moved_is_refused_until_trusted() {
    let m = moved_alias();
    let tcp = m.server.tcp.to_string();
    let contacts = m.dir.0.join("contacts");
    let before = std::fs::read_to_string(&contacts).unwrap();
    let new_hex = m.new.1.to_hex();

    let (code, err) = send(&m.server, &m.alice, "bob", "secret", &[]);
    assert_ne!(code, 0);
    for needle in [
        "refusing to send to bob".to_string(),
        m.new.1.fingerprint(),
        m.old.fingerprint(),
        contacts.display().to_string(),
        format!("flexim trust --server {tcp} --key {}", m.alice),
        format!("--new-key {new_hex} bob"),
        "nothing was sent".to_string(),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in {err}");
    }
    let counters = m.server.metrics().await.unwrap();
    let sent = counters["flexim_messages_stored_total"] + counters["flexim_messages_relayed_total"];
    assert_eq!(sent, 0, "nothing was sealed to the new key: {counters:?}");

    // Accepting a key other than the one the server names changes nothing.
    let trust = |new_key: &str| {
        flexim(&[
            "trust",
            "--server",
            &tcp,
            "--key",
            &m.alice,
            "--new-key",
            new_key,
            "bob",
        ])
    };
    let (code, _, err) = trust(&new_key().public_key().to_hex());
    assert_ne!(code, 0);
    assert!(err.contains("not the one you gave"), "{err}");
    assert_eq!(std::fs::read_to_string(&contacts).unwrap(), before);

    // The explicit confirmation of the key the server names: pinned, and the next send goes.
    let (code, out, err) = trust(&new_hex);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), new_hex);
    assert!(err.contains("is now pinned to"), "{err}");
    let after = std::fs::read_to_string(&contacts).unwrap();
    assert!(after.contains(&format!(" bob {new_hex}\n")), "{after}");
    assert_eq!(mode(&contacts), 0o600);
    let (code, err) = send(&m.server, &m.alice, "bob", "to the new bob", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("stored"), "{err}");
    let (code, out, err) = flexim(&[
        "listen",
        "--server",
        &tcp,
        "--key",
        &m.new.0,
        "--count",
        "1",
        "--timeout",
        "10",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("to the new bob"), "{out}");
}

#[test]
fn chat_refuses_a_moved_alias_and_trust_in_the_chat_accepts_it() {
    let m = moved_alias();
    let tcp = m.server.tcp.to_string();
    let mut chat = Cli::spawn(&["chat", "--server", &tcp, "--key", &m.alice, "--to", "bob"]);
    let refused = chat.expect("error: refusing");
    assert!(
        refused.contains("the server says bob now has the key"),
        "{refused}"
    );
    chat.expect(&m.new.1.fingerprint());
    chat.expect(&m.old.fingerprint());
    chat.expect("/trust bob");
    chat.type_line("/msg bob still refused");
    chat.expect("error: refusing");
    chat.type_line("/trust bob");
    chat.expect(&format!("bob is now pinned to {}", m.new.1.fingerprint()));
    chat.type_line("/msg bob now it goes");
    chat.expect("(stored to bob)");
    chat.type_line("/quit");
    assert!(chat.child.wait().unwrap().success());
    let contacts = std::fs::read_to_string(m.dir.0.join("contacts")).unwrap();
    assert!(
        contacts.contains(&format!(" bob {}\n", m.new.1.to_hex())),
        "{contacts}"
    );
}

#[tokio::test]
async fn a_reconnection_refuses_a_server_with_another_key() {
    // Without a pin given, the first login's key is the one every reconnection insists on:
    // a client whose connection dropped does not log in to whatever answers at the address.
    let server = TestServer::start();
    let me = Identity::from_secret(new_key());
    let mut client = Client::connect(&server.tcp.to_string(), &me, None)
        .await
        .unwrap();
    let server = server.reinstall_on_same_ports(false);
    match client.reconnect().await {
        Err(ClientError::ServerKeyMismatch { pinned, got, .. }) => {
            assert_eq!(got, server_key(&server));
            assert_ne!(pinned, got);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!server_knows(&server, &me.public_key()).await, "no AUTH");
}

#[tokio::test]
async fn listen_does_not_show_a_message_under_an_alias_pinned_to_another_key() {
    let m = moved_alias();
    let tcp = m.server.tcp.to_string();
    let alice_id = Identity::load(&m.alice).unwrap();
    m.server.introduce(&[alice_id.secret()]).await;
    let alice = alice_id.public_key();
    // The key that took "bob" writes to alice as "bob", which the server allows (the alias is
    // its own now); the box opens, since it is sealed by that key.
    let other = Identity::load(&m.new.0).unwrap();
    let mut conn = Conn::login_tcp(m.server.tcp, other.secret()).await.unwrap();
    let key = ConversationKey::derive(other.secret(), &alice).unwrap();
    let (date, mut nonce) = (flexim_tests::unix_now(), [0u8; 24]);
    random(&mut nonce);
    let envelope = Envelope {
        sender: &m.new.1,
        recipient: &alice,
        date,
        flags: &[],
    };
    let message = Message {
        to: alice.to_hex(),
        from: "bob".into(),
        flags: vec![],
        date,
        msg: e2e::seal(&key, &envelope, "it is me, bob", nonce).unwrap(),
        id: Some("00112233445566778899aabbccddeeff".into()),
        ..Default::default()
    };
    conn.send(&Datum::Message(message)).await.unwrap();
    assert_eq!(conn.status().await.unwrap().status, status::STORED);

    let (code, out, err) = flexim(&[
        "listen",
        "--server",
        &tcp,
        "--key",
        &m.alice,
        "--count",
        "1",
        "--timeout",
        "10",
    ]);
    assert_eq!(code, 0, "{err}");
    // Shown with the key that sent it, not as bob (and as a request: alice never accepted that
    // key); the change is reported with both keys.
    assert!(
        out.contains(&format!(
            "] {} (request) (not forward secret): it is me, bob",
            m.new.1.to_hex()
        )),
        "{out}"
    );
    assert!(!out.contains("] bob"), "{out}");
    assert!(
        err.contains("warning: the server says bob now has the key"),
        "{err}"
    );
    assert!(
        err.contains(&m.new.1.fingerprint()) && err.contains(&m.old.fingerprint()),
        "{err}"
    );
    assert!(err.contains("--new-key"), "{err}");
}
