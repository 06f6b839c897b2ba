//! TLS at the HTTP listener: the CLI over `wss://` with a private CA (and refused without
//! it), certificate files that cannot be used, the deadlines of the TLS handshake and of
//! request heads, and the TLS settings from the environment.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flexim_tests::certs::TestCerts;
use flexim_tests::{Cli, Options, TempDir, TestServer, bin_dir, flexim, http_request, tls_connect};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A server whose HTTP listener speaks TLS with `certs`, with more flags.
fn tls_server(certs: &TestCerts, args: &[&str]) -> TestServer {
    TestServer::launch(Options {
        tls: Some(certs.tls.clone()),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    })
    .expect("a TLS server starts")
}

fn keygen(dir: &TempDir, name: &str) -> (String, String) {
    let path = dir.0.join(format!("{name}.key")).display().to_string();
    let (code, out, err) = flexim(&["keygen", "--out", &path]);
    assert_eq!(code, 0, "{err}");
    (path, out.trim().to_string())
}

#[test]
fn the_banner_says_https_and_wss_with_tls() {
    let certs = TestCerts::new();
    let server = tls_server(&certs, &[]);
    assert!(
        server.ws.starts_with("wss://127.0.0.1:"),
        "{:?}",
        server.banner
    );
    assert!(server.ws.ends_with("/ws"), "{:?}", server.banner);
    assert!(
        server.http.starts_with("https://127.0.0.1:"),
        "{:?}",
        server.banner
    );
    let plain = TestServer::start();
    assert!(plain.ws.starts_with("ws://") && plain.http.starts_with("http://"));
}

#[test]
fn the_cli_chats_over_wss_with_a_private_ca() {
    let certs = TestCerts::new();
    let server = tls_server(&certs, &[]);
    let ca = certs.tls.ca.display().to_string();
    let dir = TempDir::new("cli-wss");
    let (alice, alice_pub) = keygen(&dir, "alice");
    let (bob, bob_pub) = keygen(&dir, "bob");
    // Bob has logged in before (messages go only to keys that have), so Alice's first message
    // is stored or relayed whether or not his listener is up yet.
    server.introduce_blocking(&[flexim_client::Identity::load(&bob).unwrap().secret()]);

    // Bob listens over wss, trusting the CA by flag.
    let mut listener = Cli::spawn(&[
        "listen", "--server", &server.ws, "--ca", &ca, "--key", &bob, "--json",
    ]);
    // Alice sends over wss, trusting the CA by the environment. The first message shows
    // that Bob is logged in (stored or relayed, it reaches him); the second is delivered.
    let send = |text: &str| {
        let out = Command::new(bin_dir().join("flexim"))
            .args(["send", "--server", &server.ws, "--key", &alice])
            .args(["--to", &bob_pub, text])
            .env("FLEXIM_CA", &ca)
            .stdin(Stdio::null())
            .output()
            .expect("flexim runs");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err
    };
    send("are you there, over tls?");
    let line = listener.expect("are you there, over tls?");
    let seen: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(seen["from"].as_str().unwrap().to_lowercase(), alice_pub);
    let err = send("then this one is delivered");
    assert!(err.contains("delivered"), "{err}");
    listener.expect("then this one is delivered");
}

#[test]
fn wss_without_the_ca_is_refused_with_a_certificate_error() {
    let certs = TestCerts::new();
    let server = tls_server(&certs, &[]);
    let dir = TempDir::new("cli-untrusted");
    let (alice, _) = keygen(&dir, "alice");
    let (_, bob_pub) = keygen(&dir, "bob");
    let send = |extra: &[&str], server: &str| {
        let mut args = vec!["send", "--server", server, "--key", &alice];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--to", &bob_pub, "hi"]);
        flexim(&args)
    };

    // The public roots do not know the test's CA: refused, with a hint at --ca.
    let (code, _, err) = send(&[], &server.ws);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("certificate is not trusted"), "{err}");
    assert!(err.contains("--ca FILE"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Another CA is no better, and no hint is given, since --ca was.
    let other = TestCerts::new();
    let other_ca = other.tls.ca.display().to_string();
    let (code, _, err) = send(&["--ca", &other_ca], &server.ws);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("certificate is not trusted"), "{err}");
    assert!(!err.contains("--ca FILE"), "{err}");

    // A CA file that holds no certificate, and a CA for a server without TLS, are refused
    // before anything is sent.
    let key = certs.tls.key.display().to_string();
    let (code, _, err) = send(&["--ca", &key], &server.ws);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no certificate in the file"), "{err}");
    let plain = server.tcp.to_string();
    let ca = certs.tls.ca.display().to_string();
    let (code, _, err) = send(&["--ca", &ca], &plain);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("uses no TLS"), "{err}");
}

/// Runs `flexim-server` with `args` until it exits (it should: the arguments are bad).
fn server_fails(args: &[&str]) -> String {
    let dir = TempDir::new("bad-tls");
    let out = Command::new(bin_dir().join("flexim-server"))
        .args(["--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data"])
        .arg(dir.0.join("d"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(!dir.0.join("d").exists(), "{args:?}: nothing is created");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unusable_certificate_files_are_one_line_errors() {
    let certs = TestCerts::new();
    let (cert, key) = (
        certs.tls.cert.display().to_string(),
        certs.tls.key.display().to_string(),
    );
    let garbage = certs.dir.0.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let garbage = garbage.display().to_string();
    let stranger = certs.dir.0.join("stranger.pem");
    std::fs::write(
        &stranger,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let stranger = stranger.display().to_string();
    let missing = certs.dir.0.join("missing.pem").display().to_string();
    for (cert, key, says) in [
        (
            &garbage,
            &key,
            format!("cannot use the TLS certificate {garbage}: not valid PEM"),
        ),
        (
            &key,
            &key,
            format!("cannot use the TLS certificate {key}: no certificate in the file"),
        ),
        (
            &cert,
            &missing,
            format!("cannot use the TLS key {missing}: No such file"),
        ),
        (
            &cert,
            &cert,
            format!("cannot use the TLS key {cert}: no private key in the file"),
        ),
        (
            &cert,
            &stranger,
            format!("cannot use the TLS certificate {cert} with the key {stranger}"),
        ),
    ] {
        let err = server_fails(&["--tls-cert", cert, "--tls-key", key]);
        assert!(err.contains(&says), "expected {says:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // One of the two alone is a usage error that names the other.
    let err = server_fails(&["--tls-cert", &cert]);
    assert!(err.contains("--tls-key"), "{err}");
}

/// How long until the server closes `stream` (it sends nothing first); at most 5 seconds.
async fn closed_after(mut stream: impl AsyncRead + Unpin) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let read = async {
        while let Ok(n) = stream.read(&mut buf).await
            && n > 0
        {}
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the server closes the connection");
    started.elapsed()
}

/// Asserts that the server closed a connection after the 1-second deadline, not before it
/// and not much later.
fn around_the_deadline(what: &str, took: Duration) {
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{what}: closed after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_and_request_heads_have_a_deadline() {
    let certs = TestCerts::new();
    let tls = tls_server(&certs, &["--http-timeout", "1"]);
    let plain = TestServer::start_with(&["--http-timeout", "1"]);
    let (tls_addr, plain_addr) = (tls.http_addr(), plain.http_addr());
    let ca = certs.tls.ca.clone();
    let connect = |addr: String| async move { TcpStream::connect(addr).await.unwrap() };
    let half_head = b"GET / HTTP/1.1\r\nHost: x\r\n";

    let no_hello = async { closed_after(connect(tls_addr.clone()).await).await };
    let silent_after_tls = async {
        let tls = tls_connect(connect(tls_addr.clone()).await, &tls_addr, &ca).await;
        closed_after(tls.unwrap()).await
    };
    let half_head_tls = async {
        let mut tls = tls_connect(connect(tls_addr.clone()).await, &tls_addr, &ca)
            .await
            .unwrap();
        tls.write_all(half_head).await.unwrap();
        closed_after(tls).await
    };
    let silent_plain = async { closed_after(connect(plain_addr.clone()).await).await };
    let half_head_plain = async {
        let mut tcp = connect(plain_addr.clone()).await;
        tcp.write_all(half_head).await.unwrap();
        closed_after(tcp).await
    };
    let idle_keep_alive = async {
        let mut tcp = connect(plain_addr.clone()).await;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {plain_addr}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = [0u8; 17];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200 OK\r\n");
        closed_after(tcp).await
    };
    let (a, b, c, d, e, f) = tokio::join!(
        no_hello,
        silent_after_tls,
        half_head_tls,
        silent_plain,
        half_head_plain,
        idle_keep_alive
    );
    around_the_deadline("no ClientHello", a);
    around_the_deadline("silent after the TLS handshake", b);
    around_the_deadline("half a request head over TLS", c);
    around_the_deadline("silent plain connection", d);
    around_the_deadline("half a request head", e);
    around_the_deadline("an idle kept-alive connection", f);

    // An upgraded WebSocket is not cut by the deadline: after twice the deadline it still
    // answers a ping.
    let tcp = connect(tls_addr.clone()).await;
    let stream = tls_connect(tcp, &tls_addr, &ca).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(&tls.ws, stream)
        .await
        .unwrap();
    ws.send(Message::binary(flexim_protocol::HEADER.to_vec()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(p))) => return p,
                Some(Ok(_)) => continue,
                other => panic!("the WebSocket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a pong");
    assert_eq!(&pong[..], b"still there?");
}

#[tokio::test]
async fn tls_origins_and_the_admin_listener_come_from_the_environment() {
    let certs = TestCerts::new();
    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    let server = TestServer::launch(Options {
        env: vec![
            env("FLEXIM_TLS_CERT", &certs.tls.cert.display().to_string()),
            env("FLEXIM_TLS_KEY", &certs.tls.key.display().to_string()),
            env("FLEXIM_ADMIN", "127.0.0.1:0"),
            env(
                "FLEXIM_ALLOWED_ORIGINS",
                "https://a.example.org,https://b.example.org:8443",
            ),
            env("FLEXIM_HTTP_TIMEOUT", "7"),
        ],
        ..Options::default()
    })
    .unwrap();
    assert!(server.ws.starts_with("wss://"), "{:?}", server.banner);
    assert!(server.admin.is_some(), "{:?}", server.banner);
    let ca = Some(certs.tls.ca.as_path());
    let upgrade = |origin: &'static str| {
        let base = server.http.clone();
        async move {
            let headers = [
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Origin", origin),
            ];
            http_request(&base, "/ws", &headers, ca)
                .await
                .unwrap()
                .status
        }
    };
    assert_eq!(upgrade("https://a.example.org").await, 101);
    assert_eq!(upgrade("https://b.example.org:8443").await, 101);
    assert_eq!(upgrade("https://c.example.org").await, 403);

    // --help names every new setting with its variable.
    let out = Command::new(bin_dir().join("flexim-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--tls-cert",
        "FLEXIM_TLS_CERT",
        "--tls-key",
        "FLEXIM_TLS_KEY",
        "--admin",
        "FLEXIM_ADMIN",
        "--allowed-origin",
        "FLEXIM_ALLOWED_ORIGINS",
        "--http-timeout",
        "FLEXIM_HTTP_TIMEOUT",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

/// A renewed certificate, written over the files in place, is served from the next
/// connection on after SIGHUP, with the server up all along and a connection made before it
/// still served; a pair that cannot be used is logged and the certificate in use stays.
#[tokio::test]
async fn sighup_serves_a_renewed_certificate_and_keeps_the_old_one_if_the_new_is_unusable() {
    let old = TestCerts::new();
    let server = tls_server(&old, &[]);
    let get = |ca: &std::path::Path| {
        let (base, ca) = (server.http.clone(), ca.to_path_buf());
        async move { http_request(&base, "/healthz", &[], Some(&ca)).await }
    };
    assert_eq!(get(&old.tls.ca).await.unwrap().status, 200);
    let addr = server.http_addr();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let mut before = tls_connect(tcp, &addr, &old.tls.ca).await.unwrap();

    // The renewal: another CA's certificate and key, over the same files.
    let new = TestCerts::new();
    std::fs::copy(&new.tls.cert, &old.tls.cert).unwrap();
    std::fs::copy(&new.tls.key, &old.tls.key).unwrap();
    server.hang_up();
    server
        .until_logged("reloaded the TLS certificate on SIGHUP")
        .await;
    assert_eq!(get(&new.tls.ca).await.unwrap().status, 200);
    let refused = get(&old.tls.ca).await;
    assert!(refused.is_err(), "the old CA still verifies: {refused:?}");

    // A half-written renewal: a key that is not the certificate's. Logged; the certificate
    // in use stays.
    let stranger = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(&old.tls.key, stranger).unwrap();
    server.hang_up();
    server
        .until_logged("the TLS certificate was not reloaded, the one in use stays")
        .await;
    assert_eq!(get(&new.tls.ca).await.unwrap().status, 200);

    // The connection made before the renewal is still served.
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    before.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    before.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
