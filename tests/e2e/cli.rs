//! The `flexim` command: keygen, send, listen and chat, as a user runs them.

use flexim_tests::{Cli, TempDir, TestServer, flexim};

fn keygen(dir: &TempDir, name: &str) -> (String, String) {
    let path = dir.0.join(format!("{name}.key"));
    let path = path.to_str().unwrap().to_string();
    let (code, out, err) = flexim(&["keygen", "--out", &path]);
    assert_eq!(code, 0, "{err}");
    let public = out.trim().to_string();
    assert_eq!(public.len(), 64, "{out}");
    assert!(err.contains("fingerprint"), "{err}");
    (path, public)
}

#[test]
fn keygen_refuses_to_overwrite_a_key() {
    let dir = TempDir::new("cli-keygen");
    let (path, _) = keygen(&dir, "a");
    let before = std::fs::read(&path).unwrap();
    let (code, _, err) = flexim(&["keygen", "--out", &path]);
    assert_ne!(code, 0);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn send_and_listen_over_tcp_and_websocket() {
    let server = TestServer::start();
    let dir = TempDir::new("cli-send");
    let (alice, _) = keygen(&dir, "alice");
    let (bob, bob_pub) = keygen(&dir, "bob");
    let tcp = server.tcp.to_string();

    // Bob is offline: the message is stored, and `send` says so and succeeds.
    let (code, _, err) = flexim(&[
        "send",
        "--server",
        &tcp,
        "--key",
        &alice,
        "--alias",
        "alice",
        "--to",
        &bob_pub,
        "--flag",
        "NOTIFY",
        "hi bob, it's alice",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("stored"), "{err}");

    // Bob listens over WebSocket and gets it decrypted, as JSON.
    let (code, out, err) = flexim(&[
        "listen",
        "--server",
        &server.ws,
        "--key",
        &bob,
        "--json",
        "--count",
        "1",
        "--timeout",
        "10",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["msg"], "hi bob, it's alice");
    assert_eq!(v["flags"][0], "NOTIFY");
    assert_eq!(v["to"].as_str().unwrap().to_lowercase(), bob_pub);

    // An unknown alias: non-zero exit and the server's reason on stderr.
    let (code, _, err) = flexim(&[
        "send", "--server", &tcp, "--key", &alice, "--to", "nobody", "hello?",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no-such-user") || err.contains("nobody"),
        "{err}"
    );

    // Nothing arrives: with --count, the timeout is an error (exit 3).
    let (code, _, err) = flexim(&[
        "listen",
        "--server",
        &tcp,
        "--key",
        &bob,
        "--count",
        "1",
        "--timeout",
        "1",
    ]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn no_server_is_a_clear_error() {
    let dir = TempDir::new("cli-noserver");
    let (alice, _) = keygen(&dir, "alice");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (code, _, err) = flexim(&[
        "send", "--server", &addr, "--key", &alice, "--to", "bob", "hi",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot connect"), "{err}");
}

/// The README's walk-through: two terminals, one on TCP, one on WebSocket.
#[test]
fn two_chat_terminals_tcp_and_websocket_see_messages_and_fingerprints() {
    let server = TestServer::start();
    let dir = TempDir::new("cli-chat");
    let (alice_key, alice_pub) = keygen(&dir, "alice");
    let (bob_key, bob_pub) = keygen(&dir, "bob");
    let fp = |hex: &str| {
        flexim_protocol::PublicKey::from_hex(hex)
            .unwrap()
            .fingerprint()
    };
    let tcp = server.tcp.to_string();

    let mut alice = Cli::spawn(&[
        "chat", "--server", &tcp, "--key", &alice_key, "--alias", "alice",
    ]);
    assert!(alice.expect("you are").contains(&fp(&alice_pub)));
    assert!(alice.expect("server").contains(&fp(&server.key)));
    alice.expect("/help");

    let mut bob = Cli::spawn(&[
        "chat", "--server", &server.ws, "--key", &bob_key, "--alias", "bob", "--to", "alice",
    ]);
    assert!(bob.expect("you are").contains(&fp(&bob_pub)));
    assert!(bob.expect("talking to alice").contains(&fp(&alice_pub)));
    bob.expect("/help");

    bob.type_line("hello alice, this is bob on a websocket");
    assert!(alice.expect("new contact").contains(&fp(&bob_pub)));
    alice.expect("hello alice, this is bob on a websocket");

    alice.type_line("/to bob");
    assert!(alice.expect("talking to bob").contains(&fp(&bob_pub)));
    alice.type_line("hi bob, alice here over tcp");
    bob.expect("hi bob, alice here over tcp");

    alice.type_line("/quit");
    assert!(alice.child.wait().unwrap().success());
}
