//! The `flexim` command: keygen, send, listen and chat, as a user runs them.

use std::process::Stdio;

use flexim_tests::{Cli, TempDir, TestServer, WAIT, bin_dir, flexim};

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
    server.introduce_blocking(&[flexim_client::Identity::load(&bob).unwrap().secret()]);
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

/// `listen --count N` acknowledges only the messages it printed: the rest stay on the server
/// for the next run instead of being lost with the process.
#[test]
fn listen_count_leaves_the_rest_on_the_server() {
    let server = TestServer::start();
    let dir = TempDir::new("cli-count");
    let (alice, _) = keygen(&dir, "alice");
    let (bob, bob_pub) = keygen(&dir, "bob");
    server.introduce_blocking(&[flexim_client::Identity::load(&bob).unwrap().secret()]);
    let tcp = server.tcp.to_string();
    for text in ["one", "two", "three"] {
        let (code, _, err) = flexim(&[
            "send", "--server", &tcp, "--key", &alice, "--to", &bob_pub, text,
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("stored"), "{err}");
    }
    let listen = |count: &str, timeout: &str| {
        flexim(&[
            "listen",
            "--server",
            &tcp,
            "--key",
            &bob,
            "--json",
            "--count",
            count,
            "--timeout",
            timeout,
        ])
    };
    let lines = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };

    // All three are delivered at login, but only the first is printed and acknowledged.
    let (code, out, err) = listen("1", "10");
    assert_eq!(code, 0, "{err}");
    let first = lines(&out);
    assert_eq!(first.len(), 1, "{out}");
    assert_eq!(first[0]["msg"], "one");
    let first_id = first[0]["id"]
        .as_str()
        .expect("messages carry an id")
        .to_string();
    assert_eq!(first_id.len(), 32, "{first_id}");

    // The next run gets the other two, in order, and not the first again.
    let (code, out, err) = listen("2", "10");
    assert_eq!(code, 0, "{err}");
    let rest = lines(&out);
    let texts: Vec<_> = rest.iter().map(|v| v["msg"].as_str().unwrap()).collect();
    assert_eq!(texts, ["two", "three"], "{out}");
    assert!(rest.iter().all(|v| v["id"] != first_id.as_str()));
    assert_ne!(rest[0]["id"], rest[1]["id"]);

    // Everything was acknowledged: nothing is left.
    let (code, out, err) = listen("1", "1");
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.is_empty(), "{out}");
}

/// `send` to a recipient that is online waits for its client's acknowledgement.
#[test]
fn send_to_a_listening_recipient_reports_delivered() {
    let server = TestServer::start();
    let dir = TempDir::new("cli-delivered");
    let (alice, _) = keygen(&dir, "alice");
    let (bob, bob_pub) = keygen(&dir, "bob");
    // Bob has logged in before (messages go only to keys that have), so the first message is
    // stored or relayed, whether or not his listener is up yet.
    server.introduce_blocking(&[flexim_client::Identity::load(&bob).unwrap().secret()]);
    let tcp = server.tcp.to_string();
    let send = |text: &str| {
        flexim(&[
            "send", "--server", &tcp, "--key", &alice, "--to", &bob_pub, text,
        ])
    };

    let mut listener = Cli::spawn(&["listen", "--server", &server.ws, "--key", &bob]);
    // A first message shows that bob's listener is logged in (stored or relayed, it arrives).
    let (code, _, err) = send("are you there?");
    assert_eq!(code, 0, "{err}");
    listener.expect("are you there?");

    let (code, _, err) = send("good, then this one is delivered");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("delivered"), "{err}");
    listener.expect("good, then this one is delivered");

    // With nobody listening, the message is stored and `send` does not wait.
    drop(listener);
    let started = std::time::Instant::now();
    let (code, _, err) = send("later");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("stored"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
}

/// `send` whose connection ends before the online recipient acknowledged the message logs in
/// again and sends the same message (same id) again; the recipient shows it once.
#[test]
fn send_sends_again_after_a_restart_and_the_message_arrives_once() {
    let server = TestServer::start();
    let dir = TempDir::new("cli-resend");
    let (alice, _) = keygen(&dir, "alice");
    let (bob, bob_pub) = keygen(&dir, "bob");
    let tcp = server.tcp.to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Bob is online, but his client never acknowledges: the message stays merely relayed.
    let bob_id = flexim_client::Identity::load(&bob).unwrap();
    let mut bob_client = runtime
        .block_on(flexim_client::Client::connect(&tcp, &bob_id, None))
        .unwrap();
    let send = std::process::Command::new(bin_dir().join("flexim"))
        .args(["send", "--server", &tcp, "--key", &alice, "--to", &bob_pub])
        .args(["--wait", "30", "across a restart"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = runtime.block_on(async {
        loop {
            let event = tokio::time::timeout(WAIT, bob_client.next_event())
                .await
                .expect("the message reaches bob")
                .unwrap();
            if let flexim_client::Event::Message(m) = event {
                break m;
            }
        }
    });
    assert_eq!(first.text, "across a restart");
    assert!(first.forward_secret, "the CLI writes on MLS");
    // Bob's next program is the CLI: it gets the state of Bob's groups (the pair room the
    // message came in, whose keys opened it once), as `flexim` itself would have saved it.
    let saved = bob_client.saved_rooms().unwrap().to_bytes();
    std::fs::write(format!("{bob}.rooms"), saved).unwrap();

    // The server goes away while `send` waits for bob's acknowledgement.
    let server = server.restart_on_same_ports();
    drop(bob_client);
    let out = send.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("logging in again"), "{err}");
    assert!(err.contains("stored"), "{err}");

    // Bob's next run shows it once, with the id it had the first time.
    let (code, out, err) = flexim(&[
        "listen",
        "--server",
        &server.tcp.to_string(),
        "--key",
        &bob,
        "--json",
        "--count",
        "2",
        "--timeout",
        "3",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["msg"], "across a restart");
    assert_eq!(lines[0]["id"].as_str(), first.id.as_deref());
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

/// The HTTP port given where the FLEX port belongs: the client says what answered instead of
/// failing with a framing error or hanging, and so does the WebSocket URL of a path that is
/// not the WebSocket.
#[test]
fn the_wrong_port_is_a_clear_error() {
    let server = TestServer::start();
    let dir = TempDir::new("cli-wrongport");
    let (alice, _) = keygen(&dir, "alice");
    let http = server
        .http
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (code, _, err) = flexim(&[
        "send", "--server", &http, "--key", &alice, "--to", "bob", "hi",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("does not answer like a flexim server"),
        "{err}"
    );
    let wrong_path = format!("ws://{http}/not-ws");
    let (code, _, err) = flexim(&[
        "send",
        "--server",
        &wrong_path,
        "--key",
        &alice,
        "--to",
        "bob",
        "hi",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("WebSocket upgrade"), "{err}");
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
    // Alice's chat acknowledged the message it showed, and bob's chat says so.
    bob.expect("(relayed)");
    bob.expect("(delivered to alice: hello alice");

    alice.type_line("/to bob");
    assert!(alice.expect("talking to bob").contains(&fp(&bob_pub)));
    alice.type_line("hi bob, alice here over tcp");
    bob.expect("hi bob, alice here over tcp");

    alice.type_line("/quit");
    assert!(alice.child.wait().unwrap().success());
}
